"""A PNG grid that shows what a checkpoint does: inputs, reconstructions, prior samples, an interpolation."""

from __future__ import annotations

from pathlib import Path

import torch
from torchvision.utils import save_image

from .hub import load_vae


@torch.no_grad()
def preview_grid(checkpoint="mnist", out: str | Path = "preview.png", images: torch.Tensor | None = None, n: int = 8,
                 seed: int = 0) -> Path:
    """Write a 4-row grid to ``out``: inputs, their reconstructions, prior samples, and an interpolation
    between the first two inputs. ``images: [N, C, H, W]`` in [0, 1]; without them the inputs are
    the model's own prior samples (so no data set is needed)."""
    vae = load_vae(checkpoint)
    generator = torch.Generator(device=vae.device).manual_seed(seed)
    if images is None:
        images = vae.sample(n, generator=generator, temperature=0.8)
    images = images[:n].to(vae.device)
    if images.shape[0] < 2:
        raise ValueError(f"preview needs at least 2 images, got {images.shape[0]}")
    rows = [images, vae.reconstruct(images), vae.sample(images.shape[0], generator=generator, size=images.shape[-2:]),
            vae.interpolate(images[0], images[1], steps=images.shape[0])]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_image(torch.cat(rows), out, nrow=images.shape[0], padding=2, pad_value=0.5)
    return out
