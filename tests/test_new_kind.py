"""A third model kind needs its own class and one entry in the loader's kind table, nothing else.

`LinearAE` below is a complete kind written only against the `Autoencoder` interface and the
checkpoint helpers: it is saved, found by `load_vae` through `loader.MODEL_KINDS`, and used by the
transforms, the DataLoader helpers and the app's computations without any change to them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from vae_augment import DiffusersVAE, LatentBorrow, LatentMix, PosteriorCache, VAE, VAEAugment, atomic, checkpoint, load_vae, loader
from vae_augment.app import support
from vae_augment.models import Autoencoder, DiagonalGaussian

WEIGHTS = "linear_ae.safetensors"


class LinearAE(Autoencoder):
    """A linear autoencoder on 12x12 gray images with a 6-dimensional latent and a fixed posterior spread."""

    kind = "LinearAE"
    score_unit = "squared error per image"
    usage_unit = "|mean|"
    sample_size = (12, 12)

    def __init__(self, latent_dim: int = 6):
        super().__init__()
        self.channels, self.latent_dim = 1, latent_dim
        self.enc, self.dec = nn.Linear(144, latent_dim), nn.Linear(latent_dim, 144)
        self.register_buffer("latent_loc", torch.zeros(latent_dim))
        self.register_buffer("latent_scale", torch.ones(latent_dim))

    def encode(self, x):
        mean = self.enc(x.flatten(1))
        return DiagonalGaussian(mean, torch.full_like(mean, -2.0))

    def decode(self, z):
        return torch.sigmoid(self.dec(z)).view(-1, 1, 12, 12)

    def latent_shape(self, height=None, width=None):
        return (self.latent_dim,)

    def working_size(self, height, width):
        return (12, 12)

    def prior_sample(self, noise, generator=None):
        return noise

    def score_model_space(self, x, posterior, area=None):
        reconstruction = self.decode(posterior.mean)
        return (reconstruction - x).square().flatten(1).sum(1), reconstruction

    def dimension_usage(self, posterior):
        return posterior.mean[0].abs()

    def describe(self):
        return f"12x12 gray images, a linear autoencoder with {self.latent_dim} latent dimensions"

    @classmethod
    def claims(cls, config):
        return config.get("kind") == "LinearAE"

    @classmethod
    def from_folder(cls, folder, config=None, *, device=None, **options):
        config = checkpoint.read_config(folder) if config is None else config
        model = cls(latent_dim=config["latent_dim"])
        checkpoint.load_safetensors_into(model, checkpoint.require_weights(Path(folder), WEIGHTS), device=str(device or "cpu"))
        return model.eval()

    def save_pretrained(self, save_directory):
        with atomic.staged_folder(save_directory, remove=checkpoint.SAVED_FILES) as stage:
            atomic.atomic_save_tensors(stage / WEIGHTS, self.state_dict())
            atomic.atomic_write_json(stage / checkpoint.CONFIG_NAME, {"kind": "LinearAE", "latent_dim": self.latent_dim})


@pytest.fixture
def kinds(monkeypatch):
    """The kind table with the new kind in it: the one line a new kind adds to vae_augment/loader.py."""
    monkeypatch.setattr(loader, "MODEL_KINDS", (LinearAE, DiffusersVAE, VAE))


@pytest.fixture
def folder(tmp_path) -> Path:
    torch.manual_seed(0)
    LinearAE().save_pretrained(tmp_path / "linear")
    return tmp_path / "linear"


def test_a_new_kind_is_loaded_by_the_kind_table(kinds, folder):
    assert json.loads((folder / "config.json").read_text())["kind"] == "LinearAE" and (folder / WEIGHTS).is_file()
    model = load_vae(folder)
    assert type(model) is LinearAE and model.name_or_path == str(folder)
    torch.testing.assert_close(model.dec.weight, load_vae(folder).dec.weight)


def test_without_its_entry_the_folder_is_refused_clearly(folder):
    with pytest.raises(checkpoint.CheckpointError, match="unknown keys"):
        load_vae(folder)  # VAE, the last kind, reads it and says what is wrong


def test_every_part_of_the_library_works_on_the_new_kind(kinds, folder):
    model = load_vae(folder)
    images = torch.rand(6, 1, 20, 16, generator=torch.Generator().manual_seed(1))  # not the model's size
    out = VAEAugment(model, strength=0.5, generator=torch.Generator().manual_seed(0))(images)
    assert out.shape == images.shape and not torch.allclose(out, images)
    pil = PIL.Image.fromarray((np.random.default_rng(0).random((20, 16)) * 255).astype(np.uint8), mode="L")
    assert VAEAugment(model)(pil).size == pil.size
    # class-aware noise and LatentBorrow work on any kind, through its codes (`Autoencoder.code_size`)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    noisy = VAEAugment(model, mode="class", strength=1.0, generator=torch.Generator().manual_seed(0)).fit(images, labels)(images)
    assert noisy.shape == images.shape and model.code_size() == 6
    bands = torch.zeros(6, 1, 20, 16)
    for i, c in enumerate(labels.tolist()):  # each class bright in a band of its own, so the classes' codes differ
        bands[i, :, 6 * c : 6 * c + 6] = 1.0
    near = (bands.repeat(4, 1, 1, 1) + 0.05 * torch.rand(24, 1, 20, 16, generator=torch.Generator().manual_seed(2))).clamp(0, 1)
    with pytest.warns(UserWarning, match="borrows from 24 unlabelled images"):
        borrow = LatentBorrow(model, p=1.0).fit(bands, labels, unlabelled=near)
    assert borrow(images, labels)[0].shape == images.shape
    mixed, labels = LatentMix(model, generator=torch.Generator().manual_seed(0))(images, torch.tensor([0, 0, 1, 1, 2, 2]))
    assert mixed.shape == images.shape and labels.tolist() == [0, 0, 1, 1, 2, 2]
    cache = PosteriorCache(TensorDataset(images, torch.arange(6)), VAEAugment(model), batched=True)
    batch, _ = next(iter(DataLoader(cache, batch_size=3, collate_fn=cache.collate)))
    assert batch.shape == (3, 1, 20, 16)
    # the app's computations
    assert "linear autoencoder" in support.describe(model, "linear")
    result = support.anomaly_view(model, images[0])
    assert result["seen"].shape == (1, 12, 12) and result["score"] > 0
    traversal, dims, usage, offsets = support.explore(model, images[0], 3, 5, 2.0)
    assert traversal.shape == (3, 5, 1, 12, 12) and len(dims) == 3
    assert model.sample(np.int64(2)).shape == (2, 1, 12, 12)  # numpy integers are counts too


def test_a_kind_must_say_the_unit_of_its_scores():
    class Unitless(LinearAE):
        score_unit = ""

    with pytest.raises(TypeError, match="must declare score_unit"):
        Unitless()


def test_fit_takes_images_of_their_own_sizes_and_modes():
    torch.manual_seed(0)
    vae = VAE(channels=1, image_size=16, latent_dim=4, widths=(4, 8), hidden=16)
    rng = np.random.default_rng(0)
    images = [PIL.Image.fromarray((rng.random((h, 20)) * 255).astype(np.uint8), mode="L") for h in (16, 18, 20, 22)]
    images += [PIL.Image.fromarray((rng.random((16, 16, 3)) * 255).astype(np.uint8), mode="RGB") for _ in range(4)]
    augment = VAEAugment(vae, mode="class").fit(images, [0, 0, 1, 1, 0, 0, 1, 1])
    assert augment.class_statistics["images"] == 8 and augment.class_factor.shape == (4, 4)
