"""Offline augmentation: write K variants of every image of a data set as PNGs in an ImageFolder tree."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from .data import TORCHVISION_DATASETS, ImageFolderDataset, torchvision_dataset
from .loader import load_vae
from .pixels import to_pil
from .transforms import VAEAugment


def generate_variants(checkpoint, data, out: str | Path, per_image: int = 4, root=None, strength: float | None = None,
                      mode: str = "data", residual: bool | None = None, seed: int = 0, batch_size: int = 256,
                      limit: int | None = None, split: str = "train", image_size: int | None = None,
                      progress: bool = True, device: str | torch.device | None = None) -> int:
    """Write ``per_image`` variants of every image of ``data`` to ``out/<class>/<name>_<k>.png``.

    ``data`` is a folder of images (every image in it; class subfolders become class folders, a
    flat folder gives ``all/``) or a torchvision dataset name (its ``split``, class folders named
    by label). Names come from the source files (or the index in the data set). Gray images are
    written as 8-bit gray PNGs, RGB as RGB; the images keep their size unless ``image_size`` is
    given (a folder of mixed sizes is then taken one image at a time). The model runs on ``device``
    (default: cpu). The run repeats exactly for the same ``seed``.
    Returns the number of files written.
    """
    if not isinstance(per_image, int) or per_image < 1:
        raise ValueError(f"per_image must be an int >= 1, got {per_image!r}")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    vae = load_vae(checkpoint, device=device)
    key = str(data).lower().replace("-", "").replace("_", "")
    if key in TORCHVISION_DATASETS and not Path(str(data)).is_dir():
        if root is None:
            raise ValueError(f"dataset {data!r} needs root (--root)")
        dataset = torchvision_dataset(str(data), root, split == "train", image_size=image_size)
        classes = [str(i) for i in range(int(dataset.tensors[1].max()) + 1)]
        names = [f"{i:06d}" for i in range(len(dataset))]
    else:
        dataset = ImageFolderDataset(data, image_size, any_size=True)
        if dataset.size is None:
            batch_size = 1  # photos of different sizes, each kept at its own size
        classes = dataset.classes
        names = [p.stem for p in dataset.files]
    if limit is not None:
        dataset = Subset(dataset, range(min(limit, len(dataset))))
    augment = VAEAugment(vae, strength=strength, mode=mode, residual=residual, p=1.0, generator=torch.Generator().manual_seed(seed))  # every output a variant
    out = Path(out)
    written, index = 0, 0
    if progress:
        print(f"writing {len(dataset) * per_image:,} images ({len(dataset):,} x {per_image} variants) to {out}", flush=True)
    bar = tqdm(total=len(dataset) * per_image, desc="generate", disable=not progress, unit="img")
    for images, labels in DataLoader(dataset, batch_size=batch_size):
        for k in range(per_image):
            variants = augment(images)
            for i in range(images.shape[0]):
                label = int(labels[i])
                folder = out / (classes[label] if 0 <= label < len(classes) else "all")
                folder.mkdir(parents=True, exist_ok=True)
                to_pil(variants[i]).save(folder / f"{names[index + i]}_{k}.png")
                written += 1
            bar.update(images.shape[0])
        index += images.shape[0]
    bar.close()
    return written
