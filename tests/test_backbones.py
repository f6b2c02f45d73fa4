"""Pretrained diffusers autoencoders as backbones: tiny randomly initialised AutoencoderKL and
AutoencoderTiny configs saved with save_pretrained, loaded through a local folder (the Hub path is
in test_hub.py). Real weights are never downloaded. What every model kind shares (the interface,
the checkpoint round trip, the transforms and the DataLoader helpers) is in test_contract.py; this
file tests what is particular to the diffusers wrapper."""

from __future__ import annotations

import copy
import json
import pickle
import sys
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

diffusers = pytest.importorskip("diffusers")

from conftest import tiny_kl, tiny_taesd  # noqa: E402

from vae_augment import CheckpointError, VAEAugment, augment_batch, load_vae  # noqa: E402
from vae_augment.checkpoint import DIFFUSERS_WEIGHTS  # noqa: E402
from vae_augment.models.diffusers_vae import DiffusersVAE, require_diffusers  # noqa: E402
from vae_augment.augment import latent_shape  # noqa: E402

MAKERS = {"kl": tiny_kl, "tiny": tiny_taesd}


@pytest.fixture(scope="module", params=list(MAKERS))
def saved(request, tmp_path_factory):
    """(kind, folder, the diffusers model) for each autoencoder kind, saved with save_pretrained."""
    model = MAKERS[request.param]()
    folder = tmp_path_factory.mktemp(request.param)
    model.save_pretrained(folder)
    return request.param, folder, model.eval()


@pytest.fixture(scope="module")
def loaded(saved):
    return load_vae(str(saved[1]))


def rgb(n=2, size=(30, 45), seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, *size, generator=g)


# ------------------------------------------------------------------ loading
def test_load_vae_reads_a_diffusers_folder_exactly(saved, loaded):
    kind, folder, model = saved
    assert isinstance(loaded, DiffusersVAE)
    assert loaded.kind == type(model).__name__ and loaded.deterministic == (kind == "tiny")
    assert loaded.downscale == (4 if kind == "kl" else 8)
    assert loaded.name_or_path == str(folder)
    theirs = model.state_dict()
    ours = {k.removeprefix("autoencoder."): v for k, v in loaded.state_dict().items() if k.startswith("autoencoder.")}
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert loaded.dtype == torch.float32 and loaded.device.type == "cpu"


def test_encode_gives_scaled_latents_of_the_documented_shape(saved, loaded):
    kind, _, model = saved
    x = loaded.to_model(rgb(size=(30, 45)))
    f = loaded.downscale
    assert x.shape[-2:] == (-(-30 // f) * f, -(-45 // f) * f)  # padded up to a multiple of the downscale factor
    posterior = loaded.encode(x)
    assert posterior.mean.shape == (2, 4, *latent_shape(loaded, (30, 45))[1:])
    with torch.no_grad():
        if kind == "kl":
            expected = model.encode(x * 2 - 1).latent_dist.mean * model.config.scaling_factor
            assert float(posterior.std.max()) > 0
        else:
            expected = model.encode(x * 2 - 1).latents
            assert float(posterior.std.max()) < 1e-6  # deterministic
    torch.testing.assert_close(posterior.mean, expected)
    with torch.no_grad():
        decoded = (model.decode(posterior.mean / model.config.scaling_factor).sample + 1) / 2
    torch.testing.assert_close(loaded.decode(posterior.mean), decoded.clamp(0, 1))


def test_pickle_only_diffusers_folder_is_refused_unread(tmp_path, monkeypatch):
    folder = tmp_path / "vae"
    tiny_kl().save_pretrained(folder)
    (folder / DIFFUSERS_WEIGHTS).unlink()
    torch.save({}, folder / "diffusion_pytorch_model.bin")

    def no_unpickling(*args, **kwargs):
        raise AssertionError("a pickle file was loaded")

    monkeypatch.setattr(torch, "load", no_unpickling)
    monkeypatch.setattr(pickle, "load", no_unpickling)
    with pytest.raises(CheckpointError, match=r"offers only pickle weights \(diffusion_pytorch_model.bin\); .*only from safetensors"):
        load_vae(str(folder))


def test_other_diffusers_models_are_refused_with_the_reason(tmp_path):
    folder = tmp_path / "unet"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel", "_diffusers_version": "0.30.0"}))
    with pytest.raises(CheckpointError, match=r"holds a diffusers UNet2DModel; vae-augment uses diffusers AutoencoderKL and AutoencoderTiny"):
        load_vae(str(folder))


def test_missing_diffusers_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "diffusers", None)
    with pytest.raises(ImportError, match=r"pip install 'vae-augment\[diffusers\]'"):
        require_diffusers()


def test_a_diffusers_model_can_be_given_directly_and_is_left_as_it_was():
    model = tiny_kl().train()
    augment = VAEAugment(model)
    assert isinstance(augment.vae, DiffusersVAE) and augment.vae.autoencoder is not model
    augment(rgb(1, size=(16, 16)))
    assert model.training and all(p.requires_grad for p in model.parameters()), "the caller's model keeps its mode"
    assert isinstance(load_vae(tiny_taesd()), DiffusersVAE)
    with pytest.raises(TypeError, match="must be a diffusers AutoencoderKL or AutoencoderTiny, got Linear"):
        DiffusersVAE(torch.nn.Linear(2, 2))


# ------------------------------------------------------------------ augmentation: what is particular to the wrapper
def test_strength_is_in_units_of_the_calibrated_data_spread(saved):
    """After `calibrate`, strength 1 in data mode moves each latent channel by that channel's spread over the images."""
    vae = load_vae(str(saved[1]))
    images = [rgb(4, size=(32, 32), seed=s) for s in range(2)]
    vae.calibrate(images)
    assert not torch.allclose(vae.latent_scale, torch.ones_like(vae.latent_scale))  # random latents are not unit-scaled
    x = images[0]
    mean = vae.encode(vae.to_model(x)).mean
    noise = torch.randn(4, *latent_shape(vae, (32, 32)), generator=torch.Generator().manual_seed(0))
    seen = []
    vae_decode = vae.decode
    vae.decode = lambda z: seen.append(z) or vae_decode(z)
    augment_batch(vae, x, noise, "data", 1.0)
    moved = (seen[0] - mean).transpose(0, 1).flatten(1)  # [C, N]
    torch.testing.assert_close(moved.std(1), vae.latent_scale.flatten(), rtol=0.15, atol=0)


def test_latent_statistics_start_on_the_autoencoders_device():
    # a model already moved (e.g. to CUDA) and then wrapped: its statistics must be there too, or the
    # prior mode and the app's latent explorer mix devices ("meta" stands in for CUDA here)
    wrapped = DiffusersVAE(tiny_kl().to("meta"))
    assert wrapped.latent_scale.device.type == wrapped.latent_loc.device.type == "meta"


def test_large_images_are_bounded_and_residual_keeps_full_resolution(saved):
    vae = load_vae(str(saved[1]), max_pixels=16 * 16)
    x = rgb(1, size=(64, 96))
    assert vae.working_size(64, 96) == (13, 19)
    assert latent_shape(vae, (64, 96))[1:] == tuple(-(-s // vae.downscale) for s in (13, 19))
    seen = []
    encode = vae.autoencoder.encode
    vae.autoencoder.encode = lambda v, *a, **k: seen.append(tuple(v.shape[-2:])) or encode(v, *a, **k)
    out = VAEAugment(vae)(x)
    assert out.shape == x.shape
    padded = tuple(-(-s // vae.downscale) * vae.downscale for s in (13, 19))
    assert seen == [padded], "the autoencoder ran at the bounded size, padded, not at 64x96"
    residual = VAEAugment(vae, residual=True, generator=torch.Generator().manual_seed(0))(x)
    # the change is computed at 13x19 and upscaled: smooth, so the original's pixel-level detail survives
    detail = x - torch.nn.functional.avg_pool2d(x, 3, 1, 1)
    kept = residual - torch.nn.functional.avg_pool2d(residual, 3, 1, 1)
    assert float((kept - detail).abs().mean()) < 0.25 * float(detail.abs().mean())


def test_tiling_uses_diffusers_tiled_path(saved, monkeypatch):
    vae = DiffusersVAE(MAKERS[saved[0]]().eval(), tiling=True)
    assert vae.autoencoder.use_tiling and vae.max_pixels is None
    calls = []
    tiled = vae.autoencoder._tiled_encode
    monkeypatch.setattr(vae.autoencoder, "_tiled_encode", lambda x: calls.append(x.shape) or tiled(x))
    vae.autoencoder.tile_sample_min_size = 32
    x = rgb(1, size=(64, 64))
    assert VAEAugment(vae)(x).shape == x.shape
    assert calls, "diffusers' tiled encoder ran"


def test_float16_overflow_falls_back_to_float32(saved):
    model = MAKERS[saved[0]]().eval()
    reference = DiffusersVAE(copy.deepcopy(model).half().float())  # the same float16-rounded weights, run in float32
    for decoder in (model.decoder, reference.autoencoder.decoder):  # activations beyond float16's range (max 65504)
        first_conv = next(m for m in decoder.modules() if isinstance(m, torch.nn.Conv2d))
        first_conv.register_forward_hook(lambda module, inputs, output: output * 1e5)
    vae = DiffusersVAE(model, dtype=torch.float16)
    assert vae.dtype == torch.float16
    z = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(0)) * 3
    with pytest.warns(RuntimeWarning, match="overflowed in float16 .* running it in float32 from now on"):
        out = vae.decode(z)
    assert vae.dtype == torch.float32 and bool(torch.isfinite(out).all())
    torch.testing.assert_close(out, reference.decode(z), atol=1e-3, rtol=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        vae.decode(z)  # no second warning: it stays in float32
    vae.autoencoder.requires_grad_(True)  # the float32 parameters are ordinary tensors, not inference tensors


def test_float16_overflow_in_the_encoder_inside_the_transform(saved):
    model = MAKERS[saved[0]]().eval()
    first_conv = next(m for m in model.encoder.modules() if isinstance(m, torch.nn.Conv2d))
    first_conv.register_forward_hook(lambda module, inputs, output: output * 1e5)
    vae = DiffusersVAE(model, dtype=torch.float16)
    with pytest.warns(RuntimeWarning, match="overflowed in float16"):
        out = VAEAugment(vae)(rgb(1, size=(16, 16)))  # under inference mode
    assert bool(torch.isfinite(out).all()) and vae.dtype == torch.float32
    vae.autoencoder.requires_grad_(True)


# ------------------------------------------------------------------ the rest of the library on it
def test_app_helpers_work_on_a_backbone(loaded):
    from vae_augment.app import support as app_support

    x = rgb(1, size=(30, 45))[0]
    view = app_support.anomaly_view(loaded, x)
    assert view["reconstruction"].shape == x.shape and view["percentile"] is None and view["score"] > 0
    assert view["score"] == pytest.approx(loaded.anomaly_score(x.unsqueeze(0)).item(), rel=1e-5)
    torch.testing.assert_close(view["reconstruction"], loaded.reconstruct(x.unsqueeze(0))[0])
    result = app_support.augment(loaded, x, n=2, mode="data", strength=0.5, residual=False, seed=0)
    assert result["variants"].shape == (2, *x.shape)
    assert app_support.interpolate(loaded, x, rgb(1, size=(30, 45), seed=1)[0], steps=3, method="slerp").shape == (3, *x.shape)
    traversal, dims, _, _ = app_support.explore(loaded, x, n_dims=2, steps=3, span=1.0)
    assert traversal.shape == (2, 3, *x.shape) and len(set(dims)) == 2
    assert app_support.sample(loaded, 2, 1.0, 0).shape[:2] == (2, 3)
    assert "any size" in app_support.describe(loaded, "tiny")


def test_an_interrupted_save_leaves_the_previous_backbone_files(saved, tmp_path, monkeypatch):
    vae = load_vae(str(saved[1]))
    folder = tmp_path / "calibrated"
    vae.save_pretrained(folder)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    with torch.no_grad():
        for parameter in vae.autoencoder.parameters():
            parameter.add_(1.0)
    vae.latent_scale.mul_(2)

    def fail(*args, **kwargs):
        raise KeyboardInterrupt

    import vae_augment.atomic

    with monkeypatch.context() as patch:  # diffusers has written its files when the statistics fail
        patch.setattr(vae_augment.atomic, "atomic_write_json", fail)
        with pytest.raises(KeyboardInterrupt):
            vae.save_pretrained(folder)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    vae.save_pretrained(folder)  # and a save that finishes replaces them all
    after = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert set(after) == set(before) and all(after[name] != before[name] for name in (DIFFUSERS_WEIGHTS, "vae_augment.json"))


def test_cli_on_a_backbone_folder(saved, tmp_path, capsys):
    from vae_augment.cli import main

    folder = str(saved[1])
    assert main(["eval", "--checkpoint", folder, "--data", "MNIST", "--root", str(tmp_path)]) == 2
    assert "which has no ELBO" in capsys.readouterr().err
    images = tmp_path / "photos" / "cats"
    images.mkdir(parents=True)
    for i, shape in enumerate([(20, 28, 3), (33, 17, 3)]):  # photos of different sizes keep their own
        Image.fromarray(np.random.default_rng(i).integers(0, 256, shape, dtype=np.uint8)).save(images / f"c{i}.png")
    assert main(["generate", "--checkpoint", folder, "--data", str(tmp_path / "photos"), "--per-image", "2",
                 "--out", str(tmp_path / "out"), "--quiet"]) == 0
    written = sorted((tmp_path / "out" / "cats").glob("*.png"))
    assert [p.name for p in written] == ["c0_0.png", "c0_1.png", "c1_0.png", "c1_1.png"]
    assert Image.open(written[0]).size == (28, 20) and Image.open(written[0]).mode == "RGB"
    assert Image.open(written[2]).size == (17, 33)
    assert main(["preview", "--checkpoint", folder, "--out", str(tmp_path / "preview.png")]) == 0


def test_pipeline_folders_need_the_vae_subfolder(tmp_path):
    pipeline = tmp_path / "pipeline"
    tiny_taesd().save_pretrained(pipeline / "vae")
    (pipeline / "model_index.json").write_text("{}")
    with pytest.raises(CheckpointError, match=r"is a diffusers pipeline; load its autoencoder with load_vae\('.*', subfolder='vae'\)"):
        load_vae(str(pipeline))
    vae = load_vae(str(pipeline), subfolder="vae", max_pixels=4096)
    assert isinstance(vae, DiffusersVAE) and vae.max_pixels == 4096
    from vae_augment import VAE
    with pytest.raises(CheckpointError, match="holds a diffusers AutoencoderTiny, not a vae-augment VAE; load it with vae_augment.load_vae"):
        VAE.from_pretrained(pipeline / "vae")


def test_push_refuses_a_diffusers_folder(saved):
    from vae_augment import hub

    with pytest.raises(ValueError, match="is a diffusers autoencoder, not a vae-augment checkpoint; share it with diffusers' own push_to_hub"):
        hub.push(saved[1], "org/name")


def test_gray_images_and_explicit_dtypes(saved):
    vae = load_vae(str(saved[1]))
    gray = torch.rand(2, 1, 24, 24)
    assert vae.reconstruct(gray).shape == (2, 3, 24, 24)  # converted to the model's RGB
    vae.to(torch.float64)
    assert vae.dtype == torch.float64 and not vae.auto_dtype and vae.latent_scale.dtype == torch.float32
    out = VAEAugment(vae)(gray)
    assert out.dtype == torch.float32 and out.shape == gray.shape


def test_max_batch_splits_the_autoencoder_calls(saved):
    whole = load_vae(str(saved[1]), max_batch=8)
    split = load_vae(str(saved[1]), max_batch=2)
    calls = []
    decode = split.autoencoder.decode
    split.autoencoder.decode = lambda z, *a, **k: calls.append(z.shape[0]) or decode(z, *a, **k)
    x, noise = rgb(5, size=(16, 16)), torch.randn(5, *latent_shape(whole, (16, 16)))
    torch.testing.assert_close(augment_batch(split, x, noise, "data", 0.5), augment_batch(whole, x, noise, "data", 0.5),
                               atol=1e-5, rtol=0)
    assert calls == [2, 2, 1]


def test_prior_mode_blends_towards_the_calibrated_data_statistics(loaded):
    vae = copy.deepcopy(loaded)
    vae.latent_loc.fill_(0.5)
    vae.latent_scale.fill_(2.0)
    x, noise = rgb(2, size=(16, 16)), torch.randn(2, *latent_shape(vae, (16, 16)))
    expected = vae.from_model(vae.decode(0.5 + 2.0 * noise), (16, 16))
    torch.testing.assert_close(augment_batch(vae, x, noise, "prior", 1.0), expected, atol=1e-5, rtol=0)


def test_explicit_dtype_changes_stick_and_device_moves_keep_the_statistics_float32(saved):
    vae = load_vae(str(saved[1]))
    assert vae.auto_dtype and vae.dtype == torch.float32
    vae.cpu()  # a move without a dtype keeps the automatic choice (float32 off CUDA)
    assert vae.auto_dtype and vae.dtype == torch.float32
    torch.nn.Sequential(vae).half()  # through a parent module too
    assert not vae.auto_dtype and vae.dtype == torch.float16 and vae.latent_scale.dtype == torch.float32


def test_workers_differ_by_epoch_and_seeded_runs_repeat(loaded):
    from torch.utils.data import DataLoader

    from vae_augment import worker_init_fn

    augment = VAEAugment(loaded, strength=0.5, generator=torch.Generator().manual_seed(0))

    class Photos(torch.utils.data.Dataset):
        def __len__(self):
            return 8

        def __getitem__(self, i):
            return augment(rgb(1, size=(16, 24), seed=i)[0]), i

    def epochs(seed):
        torch.manual_seed(seed)
        loader = DataLoader(Photos(), batch_size=2, num_workers=2, worker_init_fn=worker_init_fn)
        return [torch.cat([b for b, _ in loader]) for _ in range(2)]

    first, repeat = epochs(0), epochs(0)
    assert all(torch.equal(a, b) for a, b in zip(first, repeat)), "same seed, same run"
    assert not torch.equal(first[0], first[1]), "epochs differ"
