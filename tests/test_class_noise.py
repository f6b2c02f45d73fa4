"""Class-aware latent noise (mode="class"): the within-class covariance, `VAEAugment.fit`, and its statistics."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from conftest import TINY_16
from torch.utils.data import DataLoader, TensorDataset

from vae_augment import VAE, CheckpointError, PosteriorCache, VAEAugment, load_vae
from vae_augment.augment import augment_batch
from vae_augment.latent import CODE_GRID, covariance_factor, perturb, pooled_codes, spread_codes, within_class_covariance


@pytest.fixture(scope="module")
def vae():
    """A tiny 16x16 VAE (this module's own: it takes precedence over conftest.py's 28x28 one)."""
    torch.manual_seed(0)
    return VAE(**TINY_16).eval()


def labelled(n_per_class: int = 6, classes: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n_per_class * classes, 1, 16, 16, generator=g)
    labels = torch.arange(classes).repeat_interleave(n_per_class)
    return images, labels


def test_within_class_covariance_is_the_pooled_covariance_shrunk_to_its_diagonal():
    g = torch.Generator().manual_seed(1)
    codes, labels = torch.randn(30, 5, generator=g), torch.arange(3).repeat(10)
    expected = np.zeros((5, 5))
    for k in range(3):
        c = codes[labels == k].double().numpy()
        expected += (c - c.mean(0)).T @ (c - c.mean(0))
    expected /= 30 - 3
    torch.testing.assert_close(within_class_covariance(codes, labels, shrinkage=0.0), torch.from_numpy(expected))
    shrunk = within_class_covariance(codes, labels, shrinkage=0.25)
    torch.testing.assert_close(shrunk, torch.from_numpy(0.75 * expected + 0.25 * np.diag(np.diag(expected))))
    factor = covariance_factor(shrunk)
    torch.testing.assert_close(factor.double() @ factor.double().T, shrunk, atol=1e-5, rtol=1e-5)


def test_class_noise_moves_along_the_within_class_directions():
    """Two classes apart along dimension 0, each spread along dimension 1: the noise goes along 1."""
    g = torch.Generator().manual_seed(2)
    within = torch.randn(200, generator=g)
    codes = torch.stack([torch.tensor([-3.0, 3.0]).repeat(100), within], 1)  # class k at x = -3 or +3, spread in y
    codes[:, 0] += 0.05 * torch.randn(200, generator=g)
    labels = torch.arange(2).repeat(100)
    factor = covariance_factor(within_class_covariance(codes, labels, shrinkage=0.0))
    noise = torch.randn(5000, 2, generator=g)
    mean = torch.zeros(5000, 2)
    moved = perturb(mean, torch.ones_like(mean), noise, "class", 0.5, class_factor=factor)
    spread = moved.std(0)
    assert spread[1] == pytest.approx(0.5 * within.std().item(), rel=0.05)  # strength 1 = one within-class std
    assert spread[0] < 0.05 * spread[1]  # hardly towards the other class
    isotropic = perturb(mean, torch.ones_like(mean), noise, "data", 0.5, latent_scale=codes.std(0))
    assert isotropic.std(0)[0] > 10 * spread[0]  # where data-relative noise spends most of its budget


@pytest.mark.parametrize(
    ("codes", "labels", "message"),
    [
        (torch.zeros(4, 3), torch.zeros(4, dtype=torch.long), r"at least 2 classes, got only class \[0\]"),
        (torch.zeros(5, 3), torch.tensor([0, 0, 1, 1, 2]), r"at least 2 labelled images .* classes \[2\] have 1"),
        (torch.full((4, 3), float("nan")), torch.tensor([0, 0, 1, 1]), "NaN or infinite"),
        (torch.zeros(4, 3), torch.tensor([0, 0, 1]), "got 4 images but 3 labels"),
        (torch.zeros(4, 3), torch.tensor([0.0, 0.0, 1.0, 1.0]), "integer class indices"),
        (torch.zeros(4, 3, 2), torch.tensor([0, 0, 1, 1]), r"\[N, D\] tensor of flat latents"),
    ],
    ids=["one-class", "singleton-class", "nan", "mismatch", "float-labels", "spatial"],
)
def test_bad_labelled_codes_raise_a_clear_error(codes, labels, message):
    with pytest.raises(ValueError, match=message):
        within_class_covariance(codes, labels)


def test_fit_learns_the_covariance_of_the_models_codes(vae):
    images, labels = labelled()
    augment = VAEAugment(vae, mode="class", strength=0.5).fit(images, labels, shrinkage=0.1)
    with torch.no_grad():
        codes = vae.encode(images).mean
    expected = within_class_covariance(codes, labels, 0.1).float()
    torch.testing.assert_close(augment.class_statistics["covariance"], expected)
    assert augment.class_statistics["images"] == 18 and augment.class_statistics["classes"] == 3
    # the same from a dataset of (image, label) items, and from uint8 images
    from_dataset = VAEAugment(vae, mode="class").fit(TensorDataset(images, labels), shrinkage=0.1)
    torch.testing.assert_close(from_dataset.class_factor, augment.class_factor)
    as_uint8 = (images * 255).round().to(torch.uint8)
    torch.testing.assert_close(VAEAugment(vae, mode="class").fit(as_uint8, labels, shrinkage=0.1).class_statistics["covariance"],
                               within_class_covariance(vae.encode(as_uint8.float() / 255).mean.detach(), labels, 0.1).float())


def test_class_variants_follow_the_fitted_factor(vae):
    images, labels = labelled()
    augment = VAEAugment(vae, mode="class", strength=0.7, residual=False, generator=torch.Generator().manual_seed(0)).fit(images, labels)
    x = images[:4]
    out = augment(x)
    noise = augment.last_params["noise"]
    with torch.no_grad():
        mean = vae.encode(x).mean
        expected = vae.decode(mean + 0.7 * noise @ augment.class_factor.T)
    torch.testing.assert_close(out, expected)
    assert not torch.equal(out, vae.reconstruct(x))


def test_class_mode_needs_fit_and_flat_latents(vae):
    with pytest.raises(ValueError, match=r"call fit\(images, labels\)"):
        VAEAugment(vae, mode="class")(torch.rand(2, 1, 16, 16))
    with pytest.raises(ValueError, match=r"labels must be \[N\] class indices for N = 18"):
        VAEAugment(vae, mode="class").fit(labelled()[0], torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match=r"dataset of \(image, label\) items"):
        VAEAugment(vae, mode="class").fit(TensorDataset(labelled()[0]))
    with pytest.raises(ValueError, match="nothing to save"):
        VAEAugment(vae, mode="class").save_statistics("unused.safetensors")


def test_class_mode_on_spatial_latents_fits_on_one_size_and_applies_to_another(tmp_path):
    """A diffusers AutoencoderKL (spatial latents [4, h, w]): the covariance is of the pooled codes, the same size
    whatever the image's, so statistics fitted on 16x16 RGB images apply to 24x24 ones and survive a save."""
    from conftest import tiny_kl

    vae = load_vae(tiny_kl())  # skips without diffusers
    g = torch.Generator().manual_seed(0)
    x16, x24, y = torch.rand(12, 3, 16, 16, generator=g), torch.rand(4, 3, 24, 24, generator=g), torch.arange(12) % 3
    augment = VAEAugment(vae, mode="class", strength=1.0, p=1.0, generator=torch.Generator().manual_seed(1)).fit(x16, y)
    assert augment.class_factor.shape == (vae.code_size(), vae.code_size()) == (4 * CODE_GRID**2,) * 2
    plain = VAEAugment(vae, strength=0.0)
    for x in (x16[:4], x24):
        out = augment(x)
        assert out.shape == x.shape and out.dtype == x.dtype
        assert (out - plain(x)).abs().mean() > 1e-3, "the class noise changes the decoded image"
        assert augment.last_params["noise"].shape == (len(x), vae.code_size())
        assert torch.equal(augment.replay(x), out)
    augment.save_statistics(tmp_path / "class.safetensors")
    loaded = VAEAugment(vae, mode="class", strength=1.0).load_statistics(tmp_path / "class.safetensors")
    torch.testing.assert_close(loaded.class_factor, augment.class_factor)
    other = VAEAugment(vae).fit(x16, y)  # fit works in any mode; class noise is the mode that uses it
    torch.testing.assert_close(other.class_factor, augment.class_factor)
    with pytest.raises(ValueError, match=r"noise must have shape \[4, 64\] .* in mode 'class'"):
        augment_batch(vae, x24, torch.zeros(4, 4, 6, 6), "class", 1.0, class_factor=augment.class_factor)


def test_pooled_codes_and_their_spread_agree():
    """At the grid's own size spreading is exact; larger latents get a smooth (bilinear) offset whose pooling is
    close to it; flat latents pass through."""
    offset = torch.randn(2, 4 * CODE_GRID**2)
    on_grid = torch.randn(2, 4, CODE_GRID, CODE_GRID)
    torch.testing.assert_close(pooled_codes(on_grid + spread_codes(offset, on_grid)) - pooled_codes(on_grid), offset)
    larger = torch.randn(2, 4, 2 * CODE_GRID, 3 * CODE_GRID)
    spread = spread_codes(offset, larger)
    assert spread.shape == larger.shape and pooled_codes(larger).shape == (2, 4 * CODE_GRID**2)
    moved = (pooled_codes(larger + spread) - pooled_codes(larger)).flatten()
    assert torch.corrcoef(torch.stack([moved, offset.flatten()]))[0, 1] > 0.9
    flat = torch.randn(3, 5)
    assert pooled_codes(flat) is flat and spread_codes(flat, flat) is flat


def test_statistics_round_trip_through_safetensors(vae, tmp_path):
    augment = VAEAugment(vae, mode="class", strength=0.5).fit(*labelled())
    path = tmp_path / "class_statistics.safetensors"
    augment.save_statistics(path)
    loaded = VAEAugment(vae, mode="class", strength=0.5).load_statistics(path)
    torch.testing.assert_close(loaded.class_factor, augment.class_factor)
    assert loaded.class_statistics["images"] == 18 and loaded.class_statistics["shrinkage"] == pytest.approx(0.1)
    other = VAE(**{**TINY_16, "latent_dim": 6})
    with pytest.raises(CheckpointError, match="statistics of 4-dimensional latents; this VAE has 6"):
        VAEAugment(other, mode="class").load_statistics(path)
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(CheckpointError, match="not a readable statistics file"):
        VAEAugment(vae, mode="class").load_statistics(path)


def test_fitted_transform_pickles_and_runs_in_dataloader_workers(vae):
    images, labels = labelled()
    augment = VAEAugment(vae, mode="class", strength=0.5, generator=torch.Generator().manual_seed(3)).fit(images, labels)
    copy = pickle.loads(pickle.dumps(augment))
    torch.testing.assert_close(copy.class_factor, augment.class_factor)

    class Augmented(torch.utils.data.Dataset):
        def __len__(self):
            return len(images)

        def __getitem__(self, i):
            return augment(images[i]), labels[i]

    batches = list(DataLoader(Augmented(), batch_size=6, num_workers=2))
    out = torch.cat([b[0] for b in batches])
    assert out.shape == images.shape and not torch.allclose(out, images)
    assert torch.equal(torch.cat([b[1] for b in batches]), labels)  # labels untouched, no labels needed at call time
    cache = PosteriorCache(TensorDataset(images, labels), augment)
    first, label = cache[0]
    assert first.shape == images[0].shape and int(label) == 0 and bool(cache.cached[0])
