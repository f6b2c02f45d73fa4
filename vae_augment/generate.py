"""Offline augmentation: write K variants of every image of a data set as PNGs in an ImageFolder tree."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import DataLoader, Subset

from .data import load_splits
from .hub import load_vae
from .transforms import DEFAULT_STRENGTH, VAEAugment


def generate_variants(checkpoint, data, out: str | Path, per_image: int = 4, root=None, strength: float = DEFAULT_STRENGTH,
                      mode: str = "data", residual: bool = False, seed: int = 0, batch_size: int = 256,
                      limit: int | None = None, split: str = "train", progress: bool = True) -> int:
    """Write ``per_image`` variants of each image of ``data`` to ``out/<class>/<index>_<k>.png``.

    Class folders are named after the data set's classes (``all`` for unlabelled folders). The run
    is reproducible from ``seed``. Returns the number of files written.
    """
    from torchvision.utils import save_image
    from tqdm.auto import tqdm

    if not isinstance(per_image, int) or per_image < 1:
        raise ValueError(f"per_image must be an int >= 1, got {per_image!r}")
    vae = load_vae(checkpoint)
    train_set, test_set, _ = load_splits(data, root, image_size=None, channels=None, seed=seed)
    dataset = train_set if split == "train" else test_set
    if limit is not None:
        dataset = Subset(dataset, range(min(limit, len(dataset))))
    classes = _class_names(data, train_set)
    augment = VAEAugment(vae, strength=strength, mode=mode, residual=residual, generator=torch.Generator().manual_seed(seed))
    out = Path(out)
    written, index = 0, 0
    bar = tqdm(total=len(dataset) * per_image, desc="generate", disable=not progress, unit="img")
    for images, labels in DataLoader(dataset, batch_size=batch_size):
        for k in range(per_image):
            variants = augment(images)
            for i in range(images.shape[0]):
                label = int(labels[i])
                folder = out / (classes[label] if 0 <= label < len(classes) else "all")
                folder.mkdir(parents=True, exist_ok=True)
                save_image(variants[i], folder / f"{index + i:06d}_{k}.png")
                written += 1
            bar.update(images.shape[0])
        index += images.shape[0]
    bar.close()
    return written


def _class_names(data, train_set) -> list[str]:
    base = train_set.dataset if isinstance(train_set, Subset) else train_set
    classes = getattr(base, "classes", None)
    if classes:
        return [str(c).replace("/", "_") for c in classes]
    key = str(data).lower().replace("-", "").replace("_", "")
    if key in ("mnist", "kmnist", "fashionmnist", "cifar10", "svhn"):
        return [str(i) for i in range(10)]
    if key == "cifar100":
        return [str(i) for i in range(100)]
    return []
