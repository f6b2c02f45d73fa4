"""An RGB model of our own: training on a synthetic RGB image folder end to end, at 32x32 and 64x64."""

from __future__ import annotations

import numpy as np
import PIL.Image
import pytest
import torch

from conftest import make_images, write_pngs
from vae_augment import VAEAugment, load_vae, train


@pytest.mark.parametrize("size", [32, 64])
def test_rgb_folder_trains_round_trips_and_augments(tmp_path, size):
    folder = write_pngs(tmp_path / "photos", make_images(60, channels=3, size=size))
    out = tmp_path / "run"
    vae = train(folder, out, epochs=4, batch_size=16, lr=3e-3, latent_dim=8, widths=[8, 16], hidden=32, iw_k=2,
                device="cpu", progress=False, log=False)
    assert vae.likelihood == "gaussian" and vae.channels == 3 and vae.image_size == (size, size)
    history = [h["neg_elbo_nats"] for h in vae.metrics["history"]]
    assert history[-1] < history[0] - 10, f"held-out -ELBO should fall, got {history}"
    loaded = load_vae(out)
    x = make_images(4, channels=3, size=size, seed=1)
    with torch.no_grad():
        assert torch.allclose(loaded.reconstruct(x), vae.reconstruct(x), atol=1e-6)
    augment = VAEAugment(loaded, strength=0.5, generator=torch.Generator().manual_seed(0))
    batch = augment(x)
    assert batch.shape == x.shape and not torch.allclose(batch, x, atol=1e-3)
    photo = PIL.Image.fromarray((np.random.default_rng(0).random((size + 7, size - 3, 3)) * 255).astype(np.uint8))
    variant = augment(photo)
    assert variant.mode == "RGB" and variant.size == photo.size
    residual = VAEAugment(loaded, strength=0.0, residual=True)(photo)
    assert np.abs(np.asarray(residual, dtype=int) - np.asarray(photo, dtype=int)).max() <= 1
