"""Datasets for training and evaluation: torchvision datasets by name, image folders, tensors.

Every dataset here yields ``(image, label)`` with ``image: [C, H, W]`` float in [0, 1]; folders
without class subfolders give label -1.
"""

from __future__ import annotations

import random
import warnings
from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torchvision
from PIL import Image
from torch.utils.data import Dataset, Subset, TensorDataset

from . import checkpoint
from .pixels import GRAY_MODES, float_images, pil_to_float, resize

MAX_UNREADABLE = 0.1  # a folder with more unreadable files than this share is refused, not trained on without them
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
            "(for example data, with MNIST/raw inside it) or add --download where the internet is reachable"
        ) from None
    images = float_images(ds.data, channels)
    labels = torch.as_tensor(np.asarray(ds.targets if hasattr(ds, "targets") else ds.labels), dtype=torch.long)
    if image_size:
        images = resize(images, (image_size, image_size))
    return TensorDataset(images, labels)


def _is_loop(link: Path, folder: Path) -> bool:
    """Whether the folder ``link`` leads back to ``folder`` or a folder above it (walking it would repeat them)."""
    target, here = link.resolve(), folder.resolve()
    return target == here or target in here.parents


def _list_images(folder: Path) -> tuple[list[Path], list[int], list[str], list[str]]:
    """Image files, their labels, the class names, and what was passed over as a symlink loop (named in a warning).
    Files with an image suffix that are not files (a dead symlink) stay in the list: the check names them."""
    loops = [d.name + "/" for d in sorted(folder.iterdir()) if d.is_symlink() and d.is_dir() and _is_loop(d, folder)]
    classes = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".") and d.name + "/" not in loops)
    files: list[Path] = []
    labels: list[int] = []

    def images(paths) -> list[Path]:  # rglob does not follow symlinked folders, so walking cannot loop
        return sorted(p for p in paths if p.suffix.lower() in IMAGE_SUFFIXES and (p.is_file() or p.is_symlink()))

    if classes:
        for index, cls in enumerate(classes):
            found = images((folder / cls).rglob("*"))
            files += found
            labels += [index] * len(found)
    if not files:
        files = images(folder.iterdir())
        labels = [-1] * len(files)
        classes = []
    return files, labels, classes, loops


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
        files, labels, self.classes, loops = _list_images(folder)
        if loops:
            warnings.warn(f"skipping {', '.join(loops)} in {str(folder)!r}: a symlink loop (a folder that leads back to "
                          "this one, whose images would be read twice under another class)", stacklevel=2)
        if not files:
            raise ValueError(f"data folder {str(folder)!r} holds no images (accepted: {', '.join(IMAGE_SUFFIXES)}), "
                             "neither directly nor in class subfolders")
        # Every file is decoded in full now (a truncated file opens, then fails on its pixels), so that a bad
        # file is named here, before training, rather than ending an epoch half way through.
        sizes: Counter = Counter()
        modes: Counter = Counter()
        bad: list[str] = []
        self.files, self.labels = [], []
        for path, label in zip(files, labels):
            try:
                with Image.open(path) as im:
                    im.load()
                    sizes[(im.height, im.width)] += 1
                    modes[im.mode] += 1
            except Exception as err:  # PIL raises several types for non-images and truncated files
                reason = (checkpoint.dead_link_reason(path) if checkpoint.is_dead_link(path)
                          else ' '.join(str(err).replace(repr(str(path)), '').replace(str(path), '').split()) or type(err).__name__)
                bad.append(f"{str(path)!r} is not a readable image ({reason})")
                continue
            self.files.append(path)
            self.labels.append(label)
        if bad:
            listing = "; ".join(bad[:5]) + (f"; and {len(bad) - 5} more" if len(bad) > 5 else "")
            if not self.files:
                raise ValueError(f"none of the {len(bad)} files in {str(folder)!r} is a readable image: {listing}")
            if len(bad) > MAX_UNREADABLE * len(files):
                raise ValueError(f"{len(bad)} of {len(files)} files in {str(folder)!r} are not readable images, more than "
                                 f"{MAX_UNREADABLE:.0%}: is this the right folder? Repair or remove them: {listing}")
            warnings.warn(f"skipping {len(bad)} of {len(files)} files in {str(folder)!r} that are not readable images "
                          f"(truncated or corrupt): {listing}", stacklevel=2)
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
        try:
            with Image.open(self.files[index]) as im:
                image = pil_to_float(im, self.channels)
        except OSError as err:  # read in full when the dataset was made: the file changed since
            raise OSError(f"{str(self.files[index])!r} can no longer be read as an image ({err}); it was readable when "
                          "the dataset was made") from None
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
