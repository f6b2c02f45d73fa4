"""Datasets for training and evaluation: torchvision datasets by name, image folders, tensors.

Every dataset here yields ``(image, label)`` with ``image: [C, H, W]`` float in [0, 1]; folders
without class subfolders give label -1.
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torchvision
from PIL import Image
from torch.utils.data import Dataset, Subset, TensorDataset

from .pixels import GRAY_MODES, float_images, pil_to_float, resize

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")

# name (lower case) -> (torchvision class name, channels, how its train/test split is chosen)
TORCHVISION_DATASETS = {
    "mnist": ("MNIST", 1, "train"),
    "fashionmnist": ("FashionMNIST", 1, "train"),
    "kmnist": ("KMNIST", 1, "train"),
    "cifar10": ("CIFAR10", 3, "train"),
    "cifar100": ("CIFAR100", 3, "train"),
    "svhn": ("SVHN", 3, "split"),
}


def dataset_names() -> list[str]:
    return [v[0] for v in TORCHVISION_DATASETS.values()]


def torchvision_dataset(name: str, root: str | Path, train: bool, download: bool = False, channels: int | None = None,
                        image_size: int | None = None) -> TensorDataset:
    """A torchvision dataset by name (MNIST, FashionMNIST, KMNIST, CIFAR10, CIFAR100, SVHN), held in memory."""
    key = name.lower().replace("-", "").replace("_", "")
    if key not in TORCHVISION_DATASETS:
        raise ValueError(f"unknown dataset {name!r}; accepted names: {', '.join(dataset_names())}, or a folder of images")
    cls_name, _, split_kind = TORCHVISION_DATASETS[key]
    cls = getattr(torchvision.datasets, cls_name)
    root = Path(root).expanduser()
    kwargs = {"split": "train" if train else "test"} if split_kind == "split" else {"train": train}
    try:
        ds = cls(str(root), download=download, **kwargs)
    except RuntimeError as err:  # torchvision: "Dataset not found. You can use download=True to download it"
        raise FileNotFoundError(
            f"{cls_name} not found under root {str(root)!r} ({err}); pass the folder that holds {cls_name}/raw "
            "(for example ../shared/data) or --download where the internet is reachable"
        ) from None
    images = float_images(ds.data, channels)
    labels = torch.as_tensor(np.asarray(ds.targets if hasattr(ds, "targets") else ds.labels), dtype=torch.long)
    if image_size:
        images = resize(images, (image_size, image_size))
    return TensorDataset(images, labels)


def _list_images(folder: Path) -> tuple[list[Path], list[int], list[str]]:
    classes = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    files: list[Path] = []
    labels: list[int] = []
    if classes:
        for index, cls in enumerate(classes):
            found = sorted(p for p in (folder / cls).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            files += found
            labels += [index] * len(found)
    if not files:
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        labels = [-1] * len(files)
        classes = []
    return files, labels, classes


class ImageFolderDataset(Dataset):
    """Images in ``folder/<class>/*.png`` (ImageFolder layout) or directly in ``folder``.

    Images are converted to ``channels`` (taken from the first image when not given: 1 for gray,
    else 3) and must share one size unless ``image_size`` is given, in which case they are resized,
    or ``any_size`` is set (each image keeps its own size; batch them one at a time).
    """

    def __init__(self, folder: str | Path, image_size: int | Sequence[int] | None = None, channels: int | None = None,
                 any_size: bool = False):
        folder = Path(folder).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(f"data folder {str(folder)!r} does not exist; give a folder of images or a dataset name "
                                    f"({', '.join(dataset_names())})")
        self.files, self.labels, self.classes = _list_images(folder)
        if not self.files:
            raise ValueError(f"data folder {str(folder)!r} holds no images (accepted: {', '.join(IMAGE_SUFFIXES)}), "
                             "neither directly nor in class subfolders")
        sizes: Counter = Counter()
        modes: Counter = Counter()
        for path in self.files:
            try:
                with Image.open(path) as im:
                    sizes[(im.height, im.width)] += 1
                    modes[im.mode] += 1
            except Exception as err:  # PIL raises several types for non-images
                raise ValueError(f"{str(path)!r} is not a readable image: {err}") from None
        if image_size is None and any_size:
            self.size = next(iter(sizes)) if len(sizes) == 1 else None  # None: each image keeps its own size
        elif image_size is None:
            if len(sizes) > 1:
                listing = ", ".join(f"{h}x{w} ({n})" for (h, w), n in sizes.most_common(4))
                raise ValueError(f"images in {str(folder)!r} have different sizes ({listing}); pass image_size "
                                 "(--image-size) to resize them all to one size")
            self.size = next(iter(sizes))
        else:
            self.size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        gray = all(m in GRAY_MODES for m in modes)
        self.channels = channels or (1 if gray else 3)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int):
        with Image.open(self.files[index]) as im:
            image = pil_to_float(im, self.channels)
        if self.size is not None:
            image = resize(image.unsqueeze(0), self.size)[0]
        return image, self.labels[index]


def load_splits(data: str | Path, root: str | Path | None = None, image_size: int | None = None, channels: int | None = None,
                download: bool = False, holdout: float = 0.1, seed: int = 0) -> tuple[Dataset, Dataset, dict]:
    """Training and held-out datasets for ``data`` (a torchvision name or a folder) plus a description.

    Torchvision datasets use their own test split; a folder is split at random (``holdout``
    fraction, fixed by ``seed``), or uses ``train/`` and ``test/`` (or ``val/``) subfolders when present.
    """
    text = str(data)
    key = text.lower().replace("-", "").replace("_", "")
    if key in TORCHVISION_DATASETS and not Path(text).is_dir():
        if root is None:
            raise ValueError(f"dataset {text!r} needs root (--root), the folder that holds {TORCHVISION_DATASETS[key][0]}/")
        train_set = torchvision_dataset(text, root, True, download, channels, image_size)
        test_set = torchvision_dataset(text, root, False, download, channels, image_size)
        _, c, h, w = train_set.tensors[0].shape
        name = TORCHVISION_DATASETS[key][0]
        return train_set, test_set, {"dataset": name, "channels": c, "image_size": [h, w], "holdout": "test split"}
    folder = Path(text).expanduser()
    if not folder.exists():
        raise FileNotFoundError(f"{text!r} is neither a dataset name ({', '.join(dataset_names())}) nor an existing folder")
    split_dirs = [folder / "train", next((folder / s for s in ("test", "val") if (folder / s).is_dir()), None)]
    if split_dirs[0].is_dir() and split_dirs[1] is not None:
        train_set = ImageFolderDataset(split_dirs[0], image_size, channels)
        test_set = ImageFolderDataset(split_dirs[1], image_size or train_set.size, channels or train_set.channels)
        holdout_desc = f"{split_dirs[1].name}/ folder"
    else:
        full = ImageFolderDataset(folder, image_size, channels)
        if len(full) < 2:
            raise ValueError(f"data folder {str(folder)!r} holds {len(full)} image; at least 2 are needed (train + held-out)")
        order = list(range(len(full)))
        random.Random(seed).shuffle(order)
        n_test = max(1, int(round(holdout * len(full))))
        train_set, test_set = Subset(full, order[n_test:]), Subset(full, order[:n_test])
        train_set.size, train_set.channels = full.size, full.channels
        holdout_desc = f"random {holdout:.0%} of the folder (seed {seed})"
    return train_set, test_set, {
        "dataset": str(folder), "channels": train_set.channels, "image_size": list(train_set.size), "holdout": holdout_desc,
    }
