"""VAEAugment, the posterior cache and DataLoader workers on the conv VAE: what test_contract.py does
not check on every model kind (samples with masks and boxes, channel conversion, bad input and
arguments, autograd, workers, the neighbour mode, bf16 at the VAE's own size)."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import make_images
from torch.utils.data import DataLoader, Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from vae_augment import VAE
from vae_augment import PosteriorCache
from vae_augment import VAEAugment, augment_batch, worker_init_fn


# `vae` (the tiny gray 28x28 VAE, latent scale 0.5) is conftest.py's.
@pytest.fixture(scope="module")
def rgb_vae() -> VAE:
    torch.manual_seed(1)
    return VAE(channels=3, image_size=32, latent_dim=4, widths=[4, 8], hidden=16, likelihood="gaussian").eval()


# ------------------------------------------------------------------ samples and channels
def test_labels_masks_boxes_pass_through_in_compose(vae):
    image = tv_tensors.Image(torch.rand(1, 28, 28))
    mask = tv_tensors.Mask(torch.randint(0, 2, (28, 28)))
    boxes = tv_tensors.BoundingBoxes(torch.tensor([[1, 2, 10, 12]]), format="XYXY", canvas_size=(28, 28))
    pipeline = v2.Compose([v2.ToDtype(torch.float32, scale=True), VAEAugment(vae, strength=2.0)])
    out = pipeline({"image": image, "mask": mask, "boxes": boxes, "label": 7})
    assert out["label"] == 7 and out["mask"] is mask and torch.equal(out["boxes"], boxes)
    assert not torch.equal(out["image"], image)
    image2, label = VAEAugment(vae)((torch.rand(1, 28, 28), 3))
    assert label == 3 and image2.shape == (1, 28, 28)


def test_channel_conversion_both_ways(vae, rgb_vae):
    rgb = torch.rand(2, 3, 28, 28)
    out = VAEAugment(vae, strength=1.0, residual=True)(rgb)
    assert out.shape == rgb.shape
    gray = torch.rand(1, 20, 20)
    out = VAEAugment(rgb_vae, strength=1.0)(gray)
    assert out.shape == gray.shape
    with pytest.raises(ValueError, match="1 \\(gray\\), 3 \\(RGB\\) or 4"):
        VAEAugment(vae)(torch.rand(2, 28, 28).unsqueeze(0).expand(1, 2, 28, 28))


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    "inpt, error, message",
    [
        (torch.rand(1, 1, 1, 28, 28), ValueError, "2 \\(\\[H, W\\]\\), 3 .* or 4"),
        (torch.rand(28), ValueError, "dimensions"),
        (torch.full((1, 28, 28), float("nan")), ValueError, "NaN or infinite"),
        (torch.full((1, 28, 28), float("inf")), ValueError, "NaN or infinite"),
        (torch.rand(4, 1, 28, 28).index_put_((torch.tensor(2), torch.tensor(0), torch.tensor(5), torch.tensor(9)), torch.tensor(float("nan"))),
         ValueError, "NaN or infinite"),
        (torch.rand(1, 28, 28) * 255, ValueError, "must be in \\[0, 1\\]"),
        (torch.rand(1, 28, 28) - 0.5, ValueError, "must be in \\[0, 1\\]"),
        (torch.zeros(1, 28, 28, dtype=torch.int32), TypeError, "uint8 .* or float"),
    ],
)
def test_bad_images_raise_clear_errors(vae, inpt, error, message):
    with pytest.raises(error, match=message):
        VAEAugment(vae)(inpt)


def test_rounding_outside_the_unit_range_is_accepted(vae):
    x = torch.rand(1, 28, 28)
    x[0, 0, 0], x[0, 0, 1] = -1e-6, 1 + 1e-6
    assert VAEAugment(vae)(x).shape == x.shape


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"strength": 7.5}, "strength for mode 'data' must be a number in \\[0, 4\\], got 7.5"),
        ({"strength": -1}, "strength"),
        ({"mode": "prior", "strength": 1.5}, "\\[0, 1\\]"),
        ({"mode": "wild"}, "mode must be one of"),
        ({"p": 1.5}, "p must be a probability in \\[0, 1\\], got 1.5"),
    ],
)
def test_bad_arguments_raise_clear_errors(vae, kwargs, message):
    with pytest.raises(ValueError, match=message):
        VAEAugment(vae, **kwargs)


def test_unknown_model_is_refused():
    with pytest.raises(TypeError, match=r"vae_augment model \(VAE, DiffusersVAE\), a diffusers AutoencoderKL/AutoencoderTiny, or a checkpoint name/folder/Hub id, got Linear"):
        VAEAugment(torch.nn.Linear(2, 2))


# ------------------------------------------------------------------ outputs
def test_outputs_are_usable_by_autograd(vae):
    out = VAEAugment(vae)(torch.rand(2, 1, 28, 28))
    layer = torch.nn.Conv2d(1, 2, 3)
    layer(out).sum().backward()  # inference-mode tensors would raise here
    assert layer.weight.grad is not None


# ------------------------------------------------------------------ DataLoader workers and the cache
class Digits(Dataset):
    def __init__(self, n=16, transform=None):
        self.x = torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(0))
        self.transform = transform

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        x = self.x[i]
        return (self.transform(x) if self.transform else x), i


def run_epochs(dataset, seed, epochs=2, workers=2):
    torch.manual_seed(seed)
    loader = DataLoader(dataset, batch_size=4, num_workers=workers, worker_init_fn=worker_init_fn)
    return [torch.cat([x for x, _ in loader]) for _ in range(epochs)]


@pytest.mark.parametrize("generator", [None, "seeded"])
def test_workers_differ_and_seeded_runs_repeat(vae, generator):
    def make():
        g = torch.Generator().manual_seed(1) if generator else None
        return Digits(transform=VAEAugment(vae, strength=2.0, generator=g))

    first = run_epochs(make(), seed=0)
    again = run_epochs(make(), seed=0)
    assert all(torch.equal(a, b) for a, b in zip(first, again)), "same seed, same run"
    assert not torch.equal(first[0], first[1]), "two epochs draw different variants"
    # worker 0 serves batches 0, 2; worker 1 serves batches 1, 3: the same source image differs by worker
    base = Digits()
    same_source = Digits(transform=VAEAugment(vae, strength=2.0))
    same_source.x = base.x[:1].expand(16, 1, 28, 28).clone()
    out = run_epochs(same_source, seed=0, epochs=1)[0]
    assert not torch.allclose(out[0], out[4]), "workers must not repeat each other's draws"


def test_posterior_cache_filled_by_workers_is_shared(vae):
    cached = PosteriorCache(Digits(n=8), VAEAugment(vae))
    list(DataLoader(cached, batch_size=2, num_workers=2))
    assert cached.cached.all(), "workers write the cache into shared memory"
    assert torch.allclose(cached.mean, vae.encode(Digits(n=8).x).mean, atol=1e-5)


def test_batched_posterior_cache_equals_the_uncached_batch_and_is_shared_by_workers(vae):
    data = Digits(n=8)
    augment = VAEAugment(vae, strength=2.0, residual=False, generator=torch.Generator().manual_seed(0))
    cached = PosteriorCache(data, augment, batched=True)
    batch, labels = cached.collate([cached[i] for i in (3, 1, 5)])
    assert torch.equal(labels, torch.tensor([3, 1, 5])) and cached.cached[[1, 3, 5]].all() and cached.cached.sum() == 3
    reference = augment_batch(vae, data.x[[3, 1, 5]], augment.last_params["noise"], "data", 2.0)
    torch.testing.assert_close(batch, reference, atol=1e-5, rtol=0)
    cached.mean[3].zero_()  # a cached row is used, not recomputed: corrupting it must show
    again, _ = cached.collate([cached[3]])
    fresh = augment_batch(vae, data.x[[3]], augment.last_params["noise"], "data", 2.0)
    assert not torch.allclose(again, fresh, atol=1e-4)

    shared = PosteriorCache(Digits(n=8), VAEAugment(vae), batched=True)
    out = list(DataLoader(shared, batch_size=4, num_workers=2, collate_fn=shared.collate, worker_init_fn=worker_init_fn))
    assert shared.cached.all() and [tuple(x.shape) for x, _ in out] == [(4, 1, 28, 28)] * 2
    assert torch.allclose(shared.mean, vae.encode(Digits(n=8).x).mean, atol=1e-5)
    with pytest.raises(TypeError, match="default_collate.*UseCollateFnCacheCollate"):  # forgetting collate_fn fails loudly, never silently unaugmented
        next(iter(DataLoader(shared, batch_size=4)))


def test_an_explicit_generator_in_workers_keeps_its_seed(vae):
    def first_epoch(seed):
        return run_epochs(Digits(transform=VAEAugment(vae, strength=2.0, generator=torch.Generator().manual_seed(seed))),
                          seed=0, epochs=1)[0]

    assert torch.equal(first_epoch(1), first_epoch(1))
    assert not torch.equal(first_epoch(1), first_epoch(2)), "different user seeds must give different runs"


def test_the_callers_model_is_not_moved_or_frozen(vae):
    before = [p.requires_grad for p in vae.parameters()]
    VAEAugment(vae, device="meta")
    assert vae.device.type == "cpu" and [p.requires_grad for p in vae.parameters()] == before


def test_augment_batch_keeps_float64_and_checks_noise_shape(vae):
    x = torch.rand(2, 1, 28, 28, dtype=torch.float64)
    out = augment_batch(vae, x, torch.randn(2, 4))
    assert out.dtype == torch.float64 and not out.is_inference()
    with pytest.raises(ValueError, match=r"noise must have shape \[2, 4\] for x of shape \[2, 1, 28, 28\] in mode .data., got \[3, 4\]"):
        augment_batch(vae, x, torch.randn(3, 4))


def test_neighbour_mode_moves_towards_a_nearby_training_code(vae, tmp_path):
    from vae_augment import load_vae
    from vae_augment.latent import nearest_codes

    bank = torch.randn(50, 4)
    mean = bank[:3] + 0.01  # close to the first three codes, which are not exact duplicates
    noise = torch.zeros(3, 4)  # Phi(0) = 0.5: the middle candidate
    target = nearest_codes(mean, bank, noise, k=1)
    assert torch.equal(target, bank[:3])
    assert torch.equal(nearest_codes(bank[:3], bank, noise, k=1)[0:1].ne(bank[0:1]).any(1), torch.tensor([True])), \
        "an image's own code is excluded"

    with pytest.raises(ValueError, match="latent bank"):
        VAEAugment(vae, mode="neighbour", strength=1.0)
    model = VAE(latent_dim=4, widths=[4, 8], hidden=16)
    x = torch.rand(6, 1, 28, 28)
    model.latent_bank = model.encode(torch.rand(40, 1, 28, 28)).mean.detach()
    model.save_pretrained(tmp_path / "ckpt")
    loaded = load_vae(tmp_path / "ckpt")
    assert torch.allclose(loaded.latent_bank, model.latent_bank, atol=1e-2)  # stored as float16
    params = {"noise": torch.randn(6, 4), "apply": torch.ones(6, dtype=torch.bool)}
    full = VAEAugment(loaded, mode="neighbour", strength=1.0, residual=False).transform(x, params)
    codes = nearest_codes(loaded.encode(x).mean, loaded.latent_bank, params["noise"])
    assert torch.allclose(full, loaded.decode(codes), atol=1e-5), "strength 1 decodes the chosen neighbour's code"
    none = VAEAugment(loaded, mode="neighbour", strength=0.0, residual=False).transform(x, params)
    assert torch.allclose(none, loaded.reconstruct(x), atol=1e-5)


def test_augment_collate_equals_the_transform_on_the_collated_batch(vae):
    from vae_augment import AugmentCollate

    data = Digits(n=8)
    samples = [data[i] for i in range(4)]
    collate = AugmentCollate(VAEAugment(vae, strength=2.0, generator=torch.Generator().manual_seed(0)))
    images, labels = collate(samples)
    expected = VAEAugment(vae, strength=2.0, generator=torch.Generator().manual_seed(0))(torch.stack([s[0] for s in samples]))
    assert torch.equal(labels, torch.tensor([0, 1, 2, 3])) and torch.allclose(images, expected, atol=1e-6)
    loaded = list(DataLoader(data, batch_size=4, num_workers=2, collate_fn=collate, worker_init_fn=worker_init_fn))
    assert len(loaded) == 2 and not torch.allclose(loaded[0][0], data.x[:4], atol=1e-3)


def test_bf16_precision_is_close_to_float32_and_keeps_types(vae):
    x = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
    full = VAEAugment(vae, strength=1.0, generator=torch.Generator().manual_seed(0))
    fast = VAEAugment(vae, strength=1.0, generator=torch.Generator().manual_seed(0), precision="bf16")
    a, b = full(x), fast(x)
    assert b.dtype == torch.uint8 and b.shape == x.shape
    assert (a.float() - b.float()).abs().mean() < 2.0  # within a couple of 1/255 steps on average
    assert "precision='bf16'" in repr(fast)
    residual = VAEAugment(vae, strength=0.0, residual=True, precision="bf16")(x.float() / 255)
    torch.testing.assert_close(residual, x.float() / 255, atol=1e-6, rtol=0)  # strength 0 stays the identity
    with pytest.raises(ValueError, match=r"precision must be None \(float32\), 'bf16' or 'fp16', got 'int8'"):
        VAEAugment(vae, precision="int8")


# ------------------------------------------------------------------ one base, public apply
def test_the_three_transforms_share_one_base(vae):
    from vae_augment import LatentBorrow, LatentMix
    from vae_augment.transform_base import LabelledBatchTransform, VAETransform

    assert issubclass(VAEAugment, VAETransform) and issubclass(LatentMix, LabelledBatchTransform)
    assert issubclass(LatentBorrow, LabelledBatchTransform) and issubclass(LabelledBatchTransform, VAETransform)
    for make in (lambda p: VAEAugment(vae, p=p), lambda p: LatentMix(vae, p=p), lambda p: LatentBorrow(vae, p=p)):
        with pytest.raises(ValueError, match=r"p must be .*\[0, 1\], got 1.5"):
            make(1.5)
    for cls in (VAEAugment, LatentMix, LatentBorrow):
        with pytest.raises(TypeError, match="generator must be a torch.Generator or None, got int"):
            cls(vae, generator=3)
    assert LatentMix(vae, lam=(0.25, 0.5), residual=False).extra_repr() == "method='extrapolate', lam=(0.25, 0.5), p=1.0, residual=False"
    assert VAEAugment(vae, strength=0.3, mode="posterior", residual=True, p=0.5).extra_repr() == (
        "strength=0.3, mode='posterior', residual=True, p=0.5, same_on_batch=False")  # precision None: left out
    with pytest.raises(ValueError, match="LatentMix learns no statistics"):
        LatentMix(vae).save_statistics("unused.safetensors")
    with pytest.raises(ValueError, match="LatentMix learns no statistics"):
        LatentMix(vae).load_statistics("unused.safetensors")


def test_apply_applies_drawn_params_and_skips_the_encoder_given_a_posterior(vae):
    x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    augment = VAEAugment(vae, strength=1.0, generator=torch.Generator().manual_seed(1))
    out = augment(x)
    params = augment.last_params
    assert torch.equal(augment.apply(x, params), out)  # the same draw, applied again
    uint8 = (x * 255).round().to(torch.uint8)
    assert augment.apply(uint8, params).dtype == torch.uint8  # the caller's type back
    with torch.inference_mode():
        posterior = vae.encode(vae.to_model(x))
    calls = []
    handle = vae.encoder.register_forward_hook(lambda *args: calls.append(1))
    try:
        given = augment.apply(x, params, posterior=posterior)
    finally:
        handle.remove()
    assert not calls and torch.allclose(given, out, atol=1e-5)
    other = augment.draw(3)
    assert not torch.allclose(augment.apply(x, other), out)
    with pytest.raises(ValueError, match="params were drawn for 3 images, got a batch of 2"):
        augment.apply(x[:2], params)


def test_apply_with_a_function_is_still_module_apply(vae):
    augment = VAEAugment(vae)
    seen = []
    assert augment.apply(lambda module: seen.append(type(module).__name__)) is augment
    assert "VAE" in seen and "VAEAugment" in seen


# ------------------------------------------------------------------ torch.compile
def test_compiled_networks_give_the_eager_output_for_the_same_params(vae):
    """The networks compile without graph breaks (``fullgraph=True`` raises at one) on the batch path, where eager
    takes the fast CPU path, and `apply` of one draw gives the eager output up to float rounding."""
    torch._dynamo.reset()
    compiled = copy.deepcopy(vae)
    compiled.encoder.compile(fullgraph=True)  # nn.Module.compile: in place, the state dict and pickling unchanged
    compiled.decoder.compile(fullgraph=True)
    x = make_images(16)  # 16 images: the eager fast path (conv_nets.FAST_BATCH)
    eager_augment, compiled_augment = VAEAugment(vae, strength=1.0, residual=False), VAEAugment(compiled, strength=1.0, residual=False)
    params = eager_augment.draw(16)
    eager, out = eager_augment.apply(x, params), compiled_augment.apply(x, params)
    assert (eager - x).abs().max() > 0.1, "the variants must differ from the input for the comparison to mean something"
    torch.testing.assert_close(out, eager, atol=1e-5, rtol=0)
    compiled_augment(x)
    torch.testing.assert_close(compiled_augment.replay(x), eager_augment.apply(x, compiled_augment.last_params), atol=1e-5, rtol=0)
    assert compiled.state_dict().keys() == vae.state_dict().keys()
    with pytest.raises(ValueError, match="NaN or infinite"):  # the input check stays outside the compiled networks
        compiled_augment(torch.full((16, 1, 28, 28), float("nan")))
