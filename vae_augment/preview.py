"""A labelled PNG grid that shows what a checkpoint does to images: inputs (your own, with ``data``),
their reconstructions, variants at the chosen strength and mode, and an interpolation."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image, ImageDraw

from .policy import DEFAULT_STRENGTH
from .data import load_splits
from .loader import load_vae
from .pixels import to_pil
from .transforms import VAEAugment

MIN_TILE = 96  # small images are enlarged (nearest neighbour, pixels kept crisp) to at least this many pixels a side
MAX_TILE = 192  # large ones (photos) are reduced to at most this many pixels on their long side
LABEL_WIDTH = 120
GAP = 4


def _data_images(data, root, n: int, image_size: int | None = None) -> torch.Tensor:
    """The first ``n`` training images of ``data`` (a dataset name with ``root``, or a folder; resized to
    ``image_size`` when given) as floats in [0, 1]."""
    train_set, _, _ = load_splits(data, root, image_size=image_size)
    if len(train_set) < 2:
        raise ValueError(f"preview needs at least 2 images from {str(data)!r}, found {len(train_set)}")
    images = torch.stack([train_set[i][0] for i in range(min(n, len(train_set)))])
    return images.float().div(255) if images.dtype == torch.uint8 else images.float()


@torch.no_grad()
def preview_grid(checkpoint="mnist", out: str | Path = "preview.png", images: torch.Tensor | None = None, n: int = 8,
                 seed: int = 0, data=None, root=None, strength: float = DEFAULT_STRENGTH, mode: str = "data",
                 variants: int = 3, image_size: int | None = None, residual: bool | None = None) -> Path:
    """Write a grid to ``out``, one labelled row each: the inputs, their reconstructions, ``variants`` rows
    of `VAEAugment` at ``strength`` and ``mode`` (``residual`` as `VAEAugment` takes it), and an interpolation
    between the first two inputs.

    The inputs are ``images`` (``[N, C, H, W]`` in [0, 1]), else the first ``n`` training images of
    ``data`` (a dataset name with ``root``, or a folder of images: what ``vae-augment train`` takes),
    else the model's own prior samples (labelled as such, so no data set is needed); ``image_size``
    resizes a folder's images (needed when they differ in size). Tiles smaller than `MIN_TILE` pixels are
    enlarged, larger than `MAX_TILE` reduced. The same ``seed`` gives the same file."""
    if mode == "class":
        raise ValueError("preview cannot show mode 'class': it needs labelled images to fit (VAEAugment(...).fit); "
                         "choose data, posterior, prior or neighbour")
    if not isinstance(variants, int) or variants < 1:
        raise ValueError(f"variants must be an int >= 1, got {variants!r}")
    vae = load_vae(checkpoint)
    generator = torch.Generator(device=vae.device).manual_seed(seed)
    source = "input"
    if images is None and data is not None:
        images = _data_images(data, root, n, image_size)
    if images is None:
        images, source = vae.sample(n, generator=generator, temperature=0.8), "prior sample"
    images = images[:n].to(vae.device)
    if images.shape[0] < 2:
        raise ValueError(f"preview needs at least 2 images, got {images.shape[0]}")
    augment = VAEAugment(vae, strength=strength, mode=mode, residual=residual, p=1.0, generator=torch.Generator().manual_seed(seed))  # every tile a variant
    rows = [(source, images), ("reconstruction", vae.reconstruct(images))]
    rows += [(f"variant {k + 1}", augment(images)) for k in range(variants)]
    rows.append(("interpolation", vae.interpolate(images[0], images[1], steps=images.shape[0])))
    return _write_grid(rows, Path(out), f"strength {strength:g}, mode {mode}{', residual' if augment.residual else ''}")


def _write_grid(rows: list[tuple[str, torch.Tensor]], out: Path, caption: str) -> Path:
    height, width = rows[0][1].shape[-2:]
    if min(height, width) < MIN_TILE:  # a whole factor, nearest neighbour: pixels stay crisp squares
        scale = -(-MIN_TILE // min(height, width))
        tile_h, tile_w, resample = height * scale, width * scale, Image.Resampling.NEAREST
    else:
        scale = min(1.0, MAX_TILE / max(height, width))
        tile_h, tile_w, resample = max(1, round(height * scale)), max(1, round(width * scale)), Image.Resampling.BICUBIC
    columns = max(row.shape[0] for _, row in rows)
    top = 20
    sheet = Image.new("RGB", (LABEL_WIDTH + columns * (tile_w + GAP), top + len(rows) * (tile_h + GAP)), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((GAP, 4), caption, fill="black")
    for r, (label, row) in enumerate(rows):
        y = top + r * (tile_h + GAP)
        draw.text((GAP, y + tile_h // 2 - 6), label, fill="black")
        for c, image in enumerate(row.float().clamp(0, 1).cpu()):
            tile = to_pil(image).convert("RGB").resize((tile_w, tile_h), resample)
            sheet.paste(tile, (LABEL_WIDTH + c * (tile_w + GAP), y))
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return out
