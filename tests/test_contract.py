"""The contract every model kind keeps: the `Autoencoder` interface, the checkpoint round trip, and
every transform and DataLoader helper on top of it, run on each kind the loader knows.

The kinds are the conv `VAE` (tiny, gray) and `DiffusersVAE` around a tiny diffusers AutoencoderKL
(random weights, a Gaussian posterior, downscale 4) and AutoencoderTiny (deterministic latents,
downscale 8), each built once per module; the conv VAE and the AutoencoderTiny get a few training
steps so that their outputs depend on their inputs. Images are ``SIZE`` = 18x26: not the conv VAE's
28x28 and not a multiple of either downscale factor, so every kind resizes or pads and crops back.
Behaviour specific to one kind (the ELBO, float16 fallback, tiling, ...) and DataLoader workers are
tested in test_model.py, test_backbones.py and test_transforms.py.
"""

from __future__ import annotations

import copy
import pickle
import re

import numpy as np
import PIL.Image
import pytest
import torch
from conftest import TINY, make_images, tiny_kl, tiny_taesd
from torch.utils.data import DataLoader
from torchvision import tv_tensors
from torchvision.transforms import v2

from vae_augment import VAE, AugmentCollate, Autoencoder, DiagonalGaussian, LatentMix, PosteriorCache, VAEAugment, augment_batch, load_vae
from vae_augment.augment import PRECISIONS
from vae_augment.checkpoint import read_config
from vae_augment.loader import MODEL_KINDS
from vae_augment.latent import MODES

SIZE = (18, 26)
KINDS = ("conv", "kl", "tiny")
EXPECTED = {  # what each kind declares
    "conv": {"kind": "VAE", "channels": 1, "deterministic": False},
    "kl": {"kind": "AutoencoderKL", "channels": 3, "deterministic": False},
    "tiny": {"kind": "AutoencoderTiny", "channels": 3, "deterministic": True},
}


def fit(parameters, loss, steps: int) -> None:
    """A few Adam steps: the output of an untrained tiny decoder barely depends on the latent (the conv VAE's),
    or its latents barely on the image (the AutoencoderTiny's), so a changed image would prove little."""
    optimizer = torch.optim.Adam(parameters, lr=1e-2)
    with torch.enable_grad():
        for _ in range(steps):
            optimizer.zero_grad()
            loss().backward()
            optimizer.step()


def build(kind: str) -> Autoencoder:
    """A tiny model of ``kind`` (under a second to build) with latent statistics that are not the defaults (0 and 1)."""
    if kind == "conv":
        torch.manual_seed(0)
        model = VAE(channels=1, image_size=28, **TINY)
        data = make_images(64, 1, 28)
        fit(model.parameters(), lambda: model.loss(data)["loss"], steps=60)
    else:
        from vae_augment import DiffusersVAE

        autoencoder = tiny_kl() if kind == "kl" else tiny_taesd()
        if kind == "tiny":
            data = make_images(16, 3, (24, 32)) * 2 - 1
            fit(autoencoder.parameters(), lambda: (autoencoder.decode(autoencoder.encode(data).latents).sample - data).square().mean(),
                steps=20)
        model = DiffusersVAE(autoencoder)
    n = model.latent_loc.numel()
    model.latent_loc.copy_(torch.linspace(-0.2, 0.2, n).view_as(model.latent_loc))
    model.latent_scale.copy_(torch.linspace(0.5, 1.5, n).view_as(model.latent_scale))
    return model.eval()


@pytest.fixture(scope="module", params=KINDS)
def kind(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def model(kind) -> Autoencoder:
    """The shared model of this kind; tests that change it work on a copy."""
    return build(kind)


@pytest.fixture(scope="module")
def folder(model, kind, tmp_path_factory) -> str:
    """The model saved with save_pretrained."""
    path = tmp_path_factory.mktemp(f"{kind}-checkpoint")
    model.save_pretrained(path)
    return str(path)


@pytest.fixture(autouse=True)
def _no_grad():
    """The contract is about outputs; gradients through the models are tested in test_model.py."""
    with torch.no_grad():
        yield


def images(model, n: int, size=SIZE, seed: int = 0) -> torch.Tensor:
    """``[n, C, H, W]`` float images in [0, 1] in the model's channels (a bright rectangle on a dark background)."""
    return make_images(n, model.channels, size, seed=seed)


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def close(actual, expected, atol=1e-5):
    torch.testing.assert_close(actual, expected, atol=atol, rtol=0)


# ------------------------------------------------------------------ what a kind declares
def test_declared_attributes(model, kind):
    assert isinstance(model, Autoencoder)
    for name, value in EXPECTED[kind].items():
        assert getattr(model, name) == value, name
    assert isinstance(model.deterministic, bool) and isinstance(model.has_elbo, bool)
    assert isinstance(model.score_unit, str) and model.score_unit.strip()
    assert isinstance(model.usage_unit, str) and model.usage_unit.strip()
    assert isinstance(model.precisions, tuple) and set(model.precisions) <= set(PRECISIONS)
    assert isinstance(model.modes, tuple) and "data" in model.modes and set(model.modes) <= set(MODES)
    assert isinstance(model.size_multiple, int) and model.size_multiple >= 1
    assert len(model.sample_size) == 2 and all(isinstance(s, int) and s > 0 for s in model.sample_size)
    description = model.describe()
    assert isinstance(description, str) and description.strip()
    # set on the instance by Autoencoder.__init__, not inherited defaults or properties
    assert {"metrics", "name_or_path", "load_options", "latent_bank"} <= vars(model).keys()
    assert model.metrics == {} and model.name_or_path is None and model.load_options == {} and model.latent_bank is None
    buffers = dict(model.named_buffers())
    assert buffers["latent_loc"] is model.latent_loc and buffers["latent_scale"] is model.latent_scale
    assert model.latent_loc.dtype == model.latent_scale.dtype == torch.float32
    assert model.device == torch.device("cpu") and model.dtype == torch.float32


def test_latent_shape(model):
    shape = model.latent_shape(*SIZE)
    assert isinstance(shape, tuple) and shape and all(isinstance(s, int) and s > 0 for s in shape)
    assert model.latent_loc.ndim == model.latent_scale.ndim == len(shape)  # broadcastable against one latent
    assert model.latent_loc.shape[0] == shape[0]
    try:
        own = model.latent_shape()
    except ValueError as err:  # latents that depend on the image size need one
        assert "size" in str(err)
        assert model.latent_shape(64, 48) != shape
    else:
        assert own == shape == model.latent_shape(64, 48)


# ------------------------------------------------------------------ encode, decode, model space
def test_encode_returns_a_diagonal_gaussian_of_the_latent_shape(model):
    x = images(model, 3)
    x_m = model.to_model(x)
    posterior = model.encode(x_m)
    assert isinstance(posterior, DiagonalGaussian) and len(posterior) == 3
    expected = (3, *model.latent_shape(*SIZE))
    assert posterior.mean.shape == posterior.logvar.shape == posterior.std.shape == expected
    for t in (posterior.mean, posterior.std):
        assert t.dtype == torch.float32 and t.device == model.device and bool(torch.isfinite(t).all())
    assert (float(posterior.std.max()) < 1e-6) == model.deterministic
    assert torch.equal(model.encode(x_m).mean, posterior.mean), "encode is deterministic"
    close(model.encode(x_m[1:2]).mean, posterior.mean[1:2])  # one image's code does not depend on the batch


def test_decode_returns_model_space_images(model):
    x_m = model.to_model(images(model, 2))
    y = model.decode(model.encode(x_m).mean)
    assert y.shape == x_m.shape and y.dtype == torch.float32 and y.device == model.device
    assert float(y.min()) >= 0 and float(y.max()) <= 1
    z = torch.randn(2, *model.latent_shape(*SIZE), generator=seeded(0))
    assert not torch.allclose(model.decode(z), y, atol=1e-3), "decode depends on the latent"


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_to_model_and_from_model(model, channels):
    x = torch.rand(2, channels, *SIZE, generator=seeded(0))
    y = model.to_model(x)
    h, w = model.working_size(*SIZE)
    assert y.shape[:2] == (2, model.channels) and y.dtype == x.dtype
    assert y.shape[-2] % model.size_multiple == 0 and y.shape[-1] % model.size_multiple == 0
    assert 0 <= y.shape[-2] - h < model.size_multiple and 0 <= y.shape[-1] - w < model.size_multiple
    if y.shape[-2] > h:  # padding replicates the edge
        assert torch.equal(y[..., h:, :w], y[..., h - 1 : h, :w].expand_as(y[..., h:, :w]))
    back = model.from_model(y, SIZE)
    assert back.shape == (2, model.channels, *SIZE)
    assert float(model.from_model(-y, SIZE).max()) <= 0 < -float(model.from_model(-y, SIZE).min()), "changes are not clamped"


def test_model_space_round_trip_at_the_working_size_is_exact(model):
    size = model.working_size(*SIZE)
    x = images(model, 2, size)
    assert torch.equal(model.from_model(model.to_model(x), size), x)


def test_prior_sample(model):
    noise = torch.randn(3, *model.latent_shape(*SIZE), generator=seeded(0))
    z = model.prior_sample(noise)
    assert z.shape == noise.shape and z.dtype == torch.float32 and bool(torch.isfinite(z).all())
    assert torch.equal(model.prior_sample(noise), z)
    assert not torch.allclose(model.prior_sample(2 * noise), z)
    assert model.decode(z).shape == model.to_model(images(model, 3)).shape


# ------------------------------------------------------------------ written once, in terms of the above
def test_reconstruct_score_and_reconstruct_and_anomaly_score_agree(model):
    x = images(model, 3)
    score, reconstruction = model.score_and_reconstruct(x)
    assert score.shape == (3,) and score.dtype == torch.float32 and bool(torch.isfinite(score).all())
    assert reconstruction.shape == (3, model.channels, *SIZE) and reconstruction.dtype == torch.float32
    assert float(reconstruction.min()) >= 0 and float(reconstruction.max()) <= 1
    close(score, model.anomaly_score(x))
    close(reconstruction, model.reconstruct(x))
    close(reconstruction, model.from_model(model.decode(model.encode(model.to_model(x)).mean), SIZE))
    close(model.anomaly_score(x[2:]), score[2:], atol=1e-4)


def test_anomaly_percentile_needs_training_percentiles(model, monkeypatch):
    scores = model.anomaly_score(images(model, 3))
    with pytest.raises(ValueError, match="has no train_anomaly_percentiles in its metrics"):
        model.anomaly_percentile(scores)
    low, high = float(scores.min()) - 1, float(scores.max()) + 1
    monkeypatch.setattr(model, "metrics", {"train_anomaly_percentiles": torch.linspace(low, high, 101).tolist()})
    close(model.anomaly_percentile(scores), (scores - low) / (high - low) * 100, atol=1e-3)


def test_sample(model, monkeypatch):
    size = (12, 20)
    out = model.sample(3, generator=seeded(0), size=size)
    assert out.shape == (3, model.channels, *size) and out.dtype == torch.float32
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    assert torch.equal(model.sample(3, generator=seeded(0), size=size), out)
    assert not torch.allclose(out[0], out[1], atol=1e-3)
    cold = model.sample(2, generator=seeded(0), temperature=0.0, size=size)
    close(cold[0], cold[1], atol=1e-6)  # no noise: the prior's centre, twice
    monkeypatch.setattr(model, "sample_size", size)
    assert model.sample(2).shape == (2, model.channels, *size)
    with pytest.raises(ValueError, match="n must be an int >= 0"):
        model.sample(-1, size=size)
    with pytest.raises(ValueError, match="temperature must be >= 0"):
        model.sample(1, temperature=-1.0, size=size)


@pytest.mark.parametrize("method", ["linear", "slerp"])
def test_interpolate_ends_at_the_reconstructions(model, method):
    x0, x1 = images(model, 2, seed=0), images(model, 2, seed=1)
    path = model.interpolate(x0, x1, steps=4, method=method)
    assert path.shape == (2, 4, model.channels, *SIZE)
    close(path[:, 0], model.reconstruct(x0), atol=1e-4)
    close(path[:, -1], model.reconstruct(x1), atol=1e-4)
    assert not torch.allclose(path[:, 1], path[:, 0], atol=1e-4)
    single = model.interpolate(x0[0], x1[0], steps=3, method=method)
    assert single.shape == (3, model.channels, *SIZE)
    close(single[0], model.reconstruct(x0[:1])[0], atol=1e-4)
    close(single[-1], model.reconstruct(x1[:1])[0], atol=1e-4)
    if method == "linear":  # the middle decodes the mean of the two codes
        mean0, mean1 = (model.encode(model.to_model(x)).mean for x in (x0[:1], x1[:1]))
        close(single[1], model.from_model(model.decode((mean0 + mean1) / 2), SIZE)[0], atol=1e-4)
    with pytest.raises(ValueError, match="steps must be >= 2"):
        model.interpolate(x0, x1, steps=1)
    with pytest.raises(ValueError, match="x0 and x1 must have the same shape"):
        model.interpolate(x0, x1[:1])


def test_traverse(model):
    x = images(model, 1)[0]
    k = model.latent_shape(*SIZE)[0]
    dims = [0, k - 1]
    out = model.traverse(x, dims, torch.tensor([-1.0, 0.0, 1.0]))
    assert out.shape == (2, 3, model.channels, *SIZE)
    reconstruction = model.reconstruct(x.unsqueeze(0))[0]
    close(out[:, 1], reconstruction.expand(2, *reconstruction.shape))
    mean = model.encode(model.to_model(x.unsqueeze(0))).mean[0]
    moved = mean.clone()
    moved[k - 1] += 1.0  # a dimension, or a channel at every position
    close(out[1, 2], model.from_model(model.decode(moved.unsqueeze(0)), SIZE)[0])
    assert not torch.allclose(out[1, 2], reconstruction, atol=1e-4)
    per_dim = model.traverse(x, dims, torch.tensor([[0.0, 1.0], [0.0, -1.0]]))
    assert per_dim.shape == (2, 2, model.channels, *SIZE)
    close(per_dim[:, 0], reconstruction.expand(2, *reconstruction.shape))
    with pytest.raises(ValueError, match=re.escape(f"in [0, {k}), got [{k}]")):
        model.traverse(x, [k], [1.0])
    with pytest.raises(ValueError, match=r"values must have shape \[T\] or \[2, T\]"):
        model.traverse(x, dims, torch.zeros(3, 2))


def test_calibrate_writes_the_latent_statistics(model):
    model = copy.deepcopy(model)
    shapes = model.latent_loc.shape, model.latent_scale.shape
    batches = [images(model, 3, seed=s) for s in range(2)]
    loc, scale = model.calibrate(iter(batches))
    assert loc is model.latent_loc and scale is model.latent_scale
    assert (loc.shape, scale.shape) == shapes and loc.dtype == scale.dtype == torch.float32
    # per latent dimension; per channel over every position for spatial latents
    codes = torch.cat([model.encode(model.to_model(x)).mean for x in batches]).transpose(0, 1).flatten(1)
    close(loc.flatten(), codes.mean(1))
    close(scale.flatten(), codes.std(1))
    model.calibrate(batches, max_batches=1)
    first = model.encode(model.to_model(batches[0])).mean.transpose(0, 1).flatten(1)
    close(model.latent_scale.flatten(), first.std(1))
    with pytest.raises(ValueError, match="calibrate needs at least 2 latent values"):
        model.calibrate([])


def test_dimension_usage(model):
    posterior = model.encode(model.to_model(images(model, 2)))
    usage = model.dimension_usage(posterior)
    assert usage.shape == (model.latent_shape(*SIZE)[0],) and bool(torch.isfinite(usage).all()) and bool((usage >= -1e-6).all())
    close(model.dimension_usage(posterior[:1]), usage)  # the first image's
    assert not torch.allclose(model.dimension_usage(posterior[1:]), usage)


def test_float64_images_work_as_float32(model):
    x = images(model, 2)
    close(model.reconstruct(x.double()).float(), model.reconstruct(x))
    close(model.anomaly_score(x.double()).float(), model.anomaly_score(x), atol=1e-4)


def test_an_empty_batch_gives_empty_results(model):
    x = images(model, 0)
    assert model.encode(model.to_model(x)).mean.shape == (0, *model.latent_shape(*SIZE))
    assert model.reconstruct(x).shape == x.shape
    assert model.anomaly_score(x).shape == (0,)
    assert model.sample(0, size=SIZE).shape == (0, model.channels, *SIZE)


# ------------------------------------------------------------------ save_pretrained -> load_vae
def test_save_pretrained_load_vae_round_trip(model, tmp_path):
    model = copy.deepcopy(model)
    model.calibrate([images(model, 3, seed=s) for s in range(2)])
    path = tmp_path / "checkpoint"
    model.save_pretrained(path)
    config = read_config(path)
    assert type(model).claims(config) and not any(cls.claims(config) for cls in MODEL_KINDS if cls is not type(model))
    loaded = load_vae(str(path))
    assert type(loaded) is type(model) and loaded.kind == model.kind
    assert loaded.name_or_path == str(path) and loaded.load_options == {}
    assert torch.equal(loaded.latent_loc, model.latent_loc) and torch.equal(loaded.latent_scale, model.latent_scale)
    x_m = model.to_model(images(model, 2))
    assert torch.equal(loaded.encode(x_m).mean, model.encode(x_m).mean)
    z = torch.randn(2, *model.latent_shape(*SIZE), generator=seeded(0))
    assert torch.equal(loaded.decode(z), model.decode(z))
    assert loaded.describe() == model.describe()


def test_load_vae_returns_the_model_in_eval_mode(folder):
    loaded = load_vae(folder)
    assert not any(module.training for module in loaded.modules())


# ------------------------------------------------------------------ VAEAugment
INPUTS = ("pil", "pil_other_channels", "uint8", "float", "float_hw", "float64", "tv_image", "other_channels", "uint8_batch",
          "float_batch", "working_size_batch")


def make_input(name: str, model):
    """One input of each kind VAEAugment accepts, ``SIZE`` in the model's channels unless named otherwise."""
    g = seeded(0)
    c = (4 - model.channels) if "other_channels" in name else model.channels  # 1 <-> 3
    size = model.working_size(*SIZE) if name.startswith("working_size") else SIZE  # no resize, no padding for the conv VAE
    if name.startswith("pil"):
        array = (torch.rand(*size, c, generator=g) * 255).to(torch.uint8).numpy()
        return PIL.Image.fromarray(array[..., 0], mode="L") if c == 1 else PIL.Image.fromarray(array, mode="RGB")
    batch = (4,) if name.endswith("batch") else ()
    x = torch.rand(*batch, c, *size, generator=g)
    return {"uint8": (x * 255).round().to(torch.uint8), "uint8_batch": (x * 255).round().to(torch.uint8), "float_hw": x[0],
            "float64": x.double(), "tv_image": tv_tensors.Image(x)}.get(name, x)


def as_float(image) -> torch.Tensor:
    if isinstance(image, PIL.Image.Image):
        return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0)
    t = image.as_subclass(torch.Tensor)
    return t.float() / 255.0 if t.dtype == torch.uint8 else t.float()


def snapshot(inpt):
    return np.asarray(inpt).copy() if isinstance(inpt, PIL.Image.Image) else inpt.clone()


def assert_same_kind(out, inpt):
    assert type(out) is type(inpt)
    if isinstance(inpt, PIL.Image.Image):
        assert out.mode == inpt.mode and out.size == inpt.size
    else:
        assert out.shape == inpt.shape and out.dtype == inpt.dtype and out.device == inpt.device


@pytest.mark.parametrize("name", INPUTS)
def test_vae_augment_on_every_input_type(model, name):
    inpt = make_input(name, model)
    before = snapshot(inpt)
    out = VAEAugment(model, strength=1.0, generator=seeded(5))(inpt)
    assert_same_kind(out, inpt)
    assert np.array_equal(np.asarray(inpt), before) if isinstance(inpt, PIL.Image.Image) else torch.equal(inpt, before)
    assert float((as_float(out) - as_float(inpt)).abs().mean()) > 1 / 255, "the image did not change"
    assert torch.equal(as_float(VAEAugment(model, strength=1.0, generator=seeded(5))(inpt)), as_float(out)), "seeded runs repeat"
    assert not torch.equal(as_float(VAEAugment(model, strength=1.0, generator=seeded(6))(inpt)), as_float(out))
    assert torch.equal(as_float(VAEAugment(model, p=0.0)(inpt)), as_float(inpt))
    identity = VAEAugment(model, strength=0.0, residual=True)(inpt)
    assert_same_kind(identity, inpt)
    exact = isinstance(inpt, torch.Tensor) and inpt.is_floating_point()
    assert float((as_float(identity) - as_float(inpt)).abs().max()) <= (1e-5 if exact else 1 / 255 + 1e-6)


def test_global_seed_repeats(model):
    x = images(model, 2)
    torch.manual_seed(3)
    first = VAEAugment(model, strength=1.0)(x)
    torch.manual_seed(3)
    assert torch.equal(VAEAugment(model, strength=1.0)(x), first)
    assert not torch.equal(VAEAugment(model, strength=1.0)(x), first)


def test_strength_zero_gives_the_reconstruction_or_by_default_the_input(model):
    x = images(model, 3)
    close(VAEAugment(model, strength=0.0, residual=False)(x), model.reconstruct(x), atol=1e-6)
    close(VAEAugment(model, strength=0.0)(x), x, atol=1e-6)  # the default adds the decoded change: none at strength 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.uint8])
def test_an_empty_batch_stays_empty(model, dtype):
    x = torch.zeros(0, model.channels, *SIZE, dtype=dtype)
    out = VAEAugment(model)(x)
    assert out.shape == x.shape and out.dtype == dtype


def test_batched_equals_unbatched_under_a_replayed_draw(model):
    augment = VAEAugment(model, strength=1.0, p=0.5, generator=seeded(0))
    x = images(model, 4)
    batch = augment(x)
    params = augment.last_params
    assert params["noise"].shape == (4, *model.latent_shape(*SIZE)) and params["apply"].shape == (4,)
    assert torch.equal(augment.replay(x), batch)
    assert not torch.equal(augment(x), batch), "a new call draws again"

    params = augment.draw(4, SIZE)
    params["apply"] = torch.tensor([True, False, True, True])
    batch = augment.transform(x, params)
    for i in range(4):
        single = augment.transform(x[i], {"noise": params["noise"][i : i + 1], "apply": params["apply"][i : i + 1]})
        close(batch[i], single)
    assert torch.equal(batch[1], x[1]) and not torch.allclose(batch[0], x[0], atol=1e-3)
    single = augment(x[2])
    assert torch.equal(augment.replay(x[2]), single)


def test_one_draw_per_image_unless_same_on_batch(model):
    x = images(model, 1).expand(3, -1, -1, -1).contiguous()
    per_image = VAEAugment(model, strength=1.0, residual=False)(x)
    assert not torch.allclose(per_image[0], per_image[1], atol=1e-3)
    same = VAEAugment(model, strength=1.0, residual=False, same_on_batch=True)(x)
    close(same[1:], same[:1].expand(2, -1, -1, -1), atol=1e-6)
    assert not torch.allclose(same[0], x[0], atol=1e-3)


def test_augment_batch_formula(model):
    """data mode: z = mean + strength * latent_scale * noise; residual adds the decoded change only."""
    x = images(model, 3)
    noise = torch.randn(3, *model.latent_shape(*SIZE), generator=seeded(0))
    mean = model.encode(model.to_model(x)).mean
    z = mean + 1.5 * model.latent_scale * noise
    close(augment_batch(model, x, noise, "data", 1.5), model.from_model(model.decode(z), SIZE))
    expected = (x + model.from_model(model.decode(z) - model.decode(mean), SIZE)).clamp(0, 1)
    close(augment_batch(model, x, noise, "data", 1.5, residual=True), expected)


def test_pickle_round_trip(model):
    augment = VAEAugment(model, strength=1.5, residual=True, generator=seeded(3))
    clone = pickle.loads(pickle.dumps(augment))
    assert type(clone.vae) is type(model) and clone.strength == 1.5 and clone.residual and clone.mode == "data"
    x = images(model, 2)
    assert torch.equal(clone(x), augment(x))
    mix = LatentMix(model, generator=seeded(3))
    mix_clone = pickle.loads(pickle.dumps(mix))
    labels = torch.tensor([0, 0])
    assert torch.equal(mix_clone(x, labels)[0], mix(x, labels)[0])


def test_modes_a_kind_cannot_do_are_refused(model):
    x = images(model, 2)
    if model.deterministic:
        with pytest.raises(ValueError, match=f"mode 'posterior' needs a posterior with a variance; this {model.kind} has deterministic"):
            VAEAugment(model, mode="posterior")
    else:
        out = VAEAugment(model, mode="posterior", strength=2.0)(x)
        assert not torch.allclose(out, VAEAugment(model, strength=0.0)(x), atol=1e-3)
    with pytest.raises(ValueError, match="mode 'neighbour' needs a checkpoint with a latent bank"):
        VAEAugment(model, mode="neighbour", strength=0.5)
    for mode in set(MODES) - set(model.modes):
        with pytest.raises(ValueError, match=re.escape(f"mode {mode!r} is not available for a {model.kind}")):
            VAEAugment(model, mode=mode, strength=0.5)


def test_class_mode_on_every_kind(model):
    x, labels = images(model, 6), torch.tensor([0, 0, 0, 1, 1, 1])
    assert "class" in model.modes, "every kind does class noise: spatial latents through their pooled codes"
    augment = VAEAugment(model, mode="class", strength=1.0, generator=seeded(0)).fit(x, labels)
    out = augment(x)
    assert out.shape == x.shape and not torch.allclose(out, VAEAugment(model, strength=0.0)(x), atol=1e-3)
    assert torch.equal(pickle.loads(pickle.dumps(augment)).replay(x), out), "the fitted statistics travel with the transform"


def test_bf16_precision_where_a_kind_lists_it(model):
    x = images(model, 2)  # SIZE: not the conv VAE's image_size
    if "bf16" not in model.precisions:
        with pytest.raises(ValueError, match=re.escape(f"precision 'bf16' does not apply to a {model.kind}") + ".*takes dtype= when loaded"):
            VAEAugment(model, precision="bf16")
        return
    fast = VAEAugment(model, strength=1.0, generator=seeded(0), precision="bf16")(x)
    full = VAEAugment(model, strength=1.0, generator=seeded(0))(x)
    assert fast.dtype == x.dtype and fast.shape == x.shape
    assert float((fast - full).abs().mean()) < 2 / 255


# ------------------------------------------------------------------ LatentMix
def test_latent_mix_moves_codes_within_a_class(model):
    x = images(model, 6)
    labels = torch.tensor([0, 0, 1, 1, 1, 2])
    mix = LatentMix(model, method="extrapolate", lam=0.5, generator=seeded(0))
    out, out_labels = mix(x, labels)
    assert out.shape == x.shape and out.dtype == x.dtype and torch.equal(out_labels, labels)
    partner = mix.last_params["partner"]
    assert all(labels[partner[i]] == labels[i] and partner[i] != i for i in range(5))
    assert partner[5] == 5 and torch.equal(out[5], x[5]), "an image without classmates stays as it is"
    mean = model.encode(model.to_model(x)).mean
    z = mean + 0.5 * (mean - mean[partner])
    close(out[:5], model.from_model(model.decode(z[:5]), SIZE))


def test_latent_mix_takes_tuples_dicts_and_runs_in_compose(model):
    x, labels = images(model, 4), torch.tensor([0, 0, 1, 1])
    reference, _ = LatentMix(model, generator=seeded(0))(x, labels)
    assert not torch.allclose(reference, x, atol=1e-3)
    out, out_labels = LatentMix(model, generator=seeded(0))((x, labels))
    assert torch.equal(out, reference) and torch.equal(out_labels, labels)
    out, out_labels = v2.Compose([LatentMix(model, generator=seeded(0))])(x, labels)
    assert torch.equal(out, reference) and torch.equal(out_labels, labels)
    sample = LatentMix(model, generator=seeded(0))({"image": tv_tensors.Image(x), "labels": labels})
    assert sample.keys() == {"image", "labels"} and type(sample["image"]) is tv_tensors.Image
    assert torch.equal(sample["image"].as_subclass(torch.Tensor), reference) and torch.equal(sample["labels"], labels)


def test_latent_mix_on_uint8_empty_and_mismatched_batches(model):
    x = (images(model, 4) * 255).to(torch.uint8)
    out, _ = LatentMix(model, method="interpolate", lam=(0.2, 0.8))(x, torch.tensor([1, 1, 2, 2]))
    assert out.dtype == torch.uint8 and out.shape == x.shape and not torch.equal(out, x)
    empty, labels = LatentMix(model)(x[:0], torch.zeros(0, dtype=torch.long))
    assert empty.shape == x[:0].shape and labels.shape == (0,)
    with pytest.raises(ValueError, match=r"B = len\(labels\)"):
        LatentMix(model)(x, torch.tensor([1, 2]))


# ------------------------------------------------------------------ DataLoader helpers
def dataset(model, n=4, size=SIZE):
    x = images(model, n, size)
    return x, [(x[i], i) for i in range(n)]


def test_posterior_cache_per_item(model):
    x, data = dataset(model)
    cache = PosteriorCache(data, VAEAugment(model, strength=1.0))
    assert not cache.cached.any()
    torch.manual_seed(0)
    first = [cache[i] for i in range(4)]
    assert cache.cached.all() and [label for _, label in first] == [0, 1, 2, 3]
    torch.manual_seed(0)
    reference = [VAEAugment(model, strength=1.0)(x[i]) for i in range(4)]
    for (image, _), expected in zip(first, reference):
        assert image.shape == x[0].shape
        close(image, expected, atol=1e-6)
    posterior = model.encode(model.to_model(x))
    close(cache.mean, posterior.mean)
    close(cache.logvar, posterior.logvar)
    eager = PosteriorCache(data, VAEAugment(model)).precompute(batch_size=3)
    assert eager.cached.all()
    close(eager.mean, cache.mean)
    close(eager.logvar, cache.logvar)
    cache.mean.zero_()  # later items come from the cache: corrupting it must show
    torch.manual_seed(0)
    assert not torch.allclose(cache[0][0], first[0][0], atol=1e-4)


def test_posterior_cache_with_images_of_two_sizes(model):
    augment = VAEAugment(model)
    cache = PosteriorCache([(images(model, 1)[0], 0), (images(model, 1, size=(12, 12))[0], 1)], augment)
    if model.latent_shape(*SIZE) == model.latent_shape(12, 12):
        assert cache[1][0].shape == (model.channels, 12, 12)
    else:
        with pytest.raises(ValueError, match=r"needs images of one size, \(18, 26\); item 1 is \(12, 12\)"):
            cache[1]


def test_batched_posterior_cache_in_a_dataloader(model):
    x, data = dataset(model)
    augment = VAEAugment(model, strength=1.0, residual=False, generator=seeded(0))
    cache = PosteriorCache(data, augment, batched=True)
    batch, labels = cache.collate([cache[i] for i in (2, 0, 3)])
    assert torch.equal(labels, torch.tensor([2, 0, 3])) and cache.cached[[0, 2, 3]].all() and cache.cached.sum() == 3
    close(batch, augment_batch(model, x[[2, 0, 3]], augment.last_params["noise"], "data", 1.0))
    loader = DataLoader(cache, batch_size=2, num_workers=0, collate_fn=cache.collate)
    out = list(loader)
    assert [tuple(b.shape) for b, _ in out] == [(2, model.channels, *SIZE)] * 2
    assert torch.equal(torch.cat([label for _, label in out]), torch.arange(4)) and cache.cached.all()
    close(cache.mean, model.encode(model.to_model(x)).mean)
    with pytest.raises(TypeError, match="default_collate.*UseCollateFnCacheCollate"):
        next(iter(DataLoader(cache, batch_size=2)))


def test_augment_collate_in_a_dataloader(model):
    x, data = dataset(model)
    loader = DataLoader(data, batch_size=2, num_workers=0, collate_fn=AugmentCollate(VAEAugment(model, strength=1.0, generator=seeded(0))))
    reference = VAEAugment(model, strength=1.0, generator=seeded(0))
    batches = list(loader)
    assert len(batches) == 2
    for i, (batch, labels) in enumerate(batches):
        assert torch.equal(labels, torch.arange(2 * i, 2 * i + 2))
        close(batch, reference(x[2 * i : 2 * i + 2]), atol=1e-6)
    images_only = AugmentCollate(VAEAugment(model, strength=1.0, generator=seeded(0)))([x[0], x[1]])
    close(images_only, VAEAugment(model, strength=1.0, generator=seeded(0))(x[:2]), atol=1e-6)


# ------------------------------------------------------------------ albumentations
def test_albu_vae_augment_on_hwc_uint8(model, folder):
    A = pytest.importorskip("albumentations")
    from vae_augment.albu import AlbuVAEAugment

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (*SIZE, model.channels), dtype=np.uint8)
    mask = rng.integers(0, 3, SIZE, dtype=np.uint8)

    def pipeline(seed):
        return A.Compose([AlbuVAEAugment(folder, strength=1.0, p=1.0)], seed=seed)

    out = pipeline(7)(image=image, mask=mask)
    assert out["image"].shape == image.shape and out["image"].dtype == np.uint8
    assert np.abs(out["image"].astype(float) - image).mean() > 1 and np.array_equal(out["mask"], mask)
    assert np.array_equal(pipeline(7)(image=image, mask=mask)["image"], out["image"]), "a seeded Compose repeats"
    assert not np.array_equal(pipeline(8)(image=image, mask=mask)["image"], out["image"])
    rebuilt = A.from_dict(A.to_dict(pipeline(7)))
    assert rebuilt.transforms[0].checkpoint == folder
    rebuilt.set_random_seed(7)
    assert np.array_equal(rebuilt(image=image, mask=mask)["image"], out["image"])
    if model.channels == 1:  # HW gray images keep their shape
        gray = A.Compose([AlbuVAEAugment(folder)], seed=0)(image=image[..., 0])["image"]
        assert gray.shape == SIZE and gray.dtype == np.uint8
    assert AlbuVAEAugment(load_vae(folder)).checkpoint == folder  # a loaded model is serialized by its folder
    with pytest.raises(ValueError, match="without a checkpoint name"):
        A.to_dict(A.Compose([AlbuVAEAugment(model)]))
    if model.deterministic:
        with pytest.raises(ValueError, match="mode 'posterior' needs a posterior with a variance"):
            AlbuVAEAugment(model, mode="posterior")
