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
from torch.utils.data import Dataset, Subset, TensorDataset

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


def _to_float_images(array, channels: int | None) -> torch.Tensor:
    """uint8 ``[N, H, W]`` / ``[N, H, W, C]`` / ``[N, C, H, W]`` -> float ``[N, C, H, W]`` in [0, 1]."""
    x = torch.as_tensor(np.asarray(array))
    if x.ndim == 3:
        x = x.unsqueeze(1)
    elif x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        x = x.permute(0, 3, 1, 2)
    x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
    return convert_channels(x, channels) if channels else x


def convert_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """Gray <-> RGB for ``[..., C, H, W]`` float images (ITU-R 601 luma for RGB -> gray)."""
    c = x.shape[-3]
    if c == channels:
        return x
    if c == 1 and channels == 3:
        return x.expand(*x.shape[:-3], 3, *x.shape[-2:]).contiguous()
    if c == 3 and channels == 1:
        weights = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype, device=x.device).view(3, 1, 1)
        return (x * weights).sum(-3, keepdim=True)
    if c == 4 and channels in (1, 3):
        return convert_channels(x[..., :3, :, :], channels)
    raise ValueError(f"cannot convert images with {c} channels to {channels}; accepted: 1 (gray), 3 (RGB), 4 (RGBA)")


def resize(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear (antialiased) resize of ``[B, C, H, W]`` float images to ``size = (H', W')``."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return torch.nn.functional.interpolate(x, size=tuple(size), mode="bilinear", antialias=True, align_corners=False).clamp_(0, 1)


def torchvision_dataset(name: str, root: str | Path, train: bool, download: bool = False, channels: int | None = None,
                        image_size: int | None = None) -> TensorDataset:
    """A torchvision dataset by name (MNIST, FashionMNIST, KMNIST, CIFAR10, CIFAR100, SVHN), held in memory."""
    import torchvision

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
    images = _to_float_images(ds.data, channels)
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
        from PIL import Image

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
        gray = all(m in ("L", "1", "I;16", "I", "F", "LA") for m in modes)
        self.channels = channels or (1 if gray else 3)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int):
        from PIL import Image

        with Image.open(self.files[index]) as im:
            image = pil_to_float(im, self.channels)
        if self.size is not None:
            image = resize(image.unsqueeze(0), self.size)[0]
        return image, self.labels[index]


def pil_to_float(image, channels: int) -> torch.Tensor:
    """A PIL image of any mode -> ``[channels, H, W]`` float in [0, 1]."""
    from PIL import Image

    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float32)
        scale = 65535.0 if array.max(initial=0) > 255 else 255.0
        gray = torch.from_numpy(array / scale).clamp_(0, 1).unsqueeze(0)
        return convert_channels(gray, channels)
    if image.mode == "F":
        gray = torch.from_numpy(np.array(image, dtype=np.float32)).clamp_(0, 1).unsqueeze(0)
        return convert_channels(gray, channels)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # composite on white, the usual background of scanned or drawn images
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    image = image.convert("L" if channels == 1 else "RGB")
    array = np.asarray(image, dtype=np.uint8)
    x = torch.from_numpy(array.copy()).float().div_(255.0)
    return x.unsqueeze(0) if x.ndim == 2 else x.permute(2, 0, 1).contiguous()


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


class PosteriorCache(Dataset):
    """A dataset wrapper that applies a `VAEAugment` and caches each image's posterior the first time
    it is seen, so later epochs only decode.

    Valid when nothing random happens to the image before the VAE (``dataset`` must return the same
    image for an index every time). The cache lives in shared memory, so DataLoader workers fill
    and reuse one cache across epochs. Items of ``dataset`` are images or tuples whose first entry
    is the image; the rest passes through.

    ``batched=True`` decodes whole batches instead of single images (several times faster on CPU):
    items are then handed to ``collate_fn=cache.collate``, which collates them, encodes the images
    not cached yet, and augments the batch inside the DataLoader worker. Images must be tensors of
    one size; without ``cache.collate`` the DataLoader refuses the items.
    """

    def __init__(self, dataset: Dataset, augment, batched: bool = False):
        from .transforms import VAEAugment

        if not isinstance(augment, VAEAugment):
            raise TypeError(f"augment must be a VAEAugment, got {type(augment).__name__}")
        from .transforms import _image_size, latent_shape

        self.dataset, self.augment, self.batched = dataset, augment, bool(batched)
        n, vae = len(dataset), augment.vae
        # a model of spatial latents (any input size) caches latents of the first image's size; every
        # image must then have that size
        self.size = vae.image_size or (_image_size(self._split(dataset[0])[0]) if n else (8, 8))
        shape = latent_shape(vae, self.size)
        self.mean = torch.zeros(n, *shape).share_memory_()
        self.logvar = torch.zeros(n, *shape).share_memory_()
        self.cached = torch.zeros(n, dtype=torch.bool).share_memory_()

    def __len__(self) -> int:
        return len(self.dataset)

    @torch.inference_mode()
    def precompute(self, batch_size: int = 512) -> "PosteriorCache":
        """Encode every image now (batched), instead of on first sight."""
        from .transforms import image_to_float

        for start in range(0, len(self), batch_size):
            indices = torch.arange(start, min(start + batch_size, len(self)))
            self._fill(indices, torch.cat([image_to_float(self._split(self.dataset[int(i)])[0])[0] for i in indices]))
        return self

    @staticmethod
    def _split(item):
        return (item[0], tuple(item[1:])) if isinstance(item, tuple) else (item, None)

    def _fill(self, indices: torch.Tensor, x: torch.Tensor) -> None:
        """Encode the images ``x`` of the dataset rows ``indices`` that are not cached yet, into the cache."""
        from .transforms import to_model_space

        missing = (~self.cached[indices]).nonzero().squeeze(1)
        if missing.numel():
            vae = self.augment.vae
            with torch.inference_mode():
                posterior = vae.encode(to_model_space(vae, x[missing].to(vae.device)))
            self.mean[indices[missing]] = posterior.mean.cpu()
            self.logvar[indices[missing]] = posterior.logvar.cpu()
            self.cached[indices[missing]] = True

    def _augment(self, indices: torch.Tensor, image, where: str):
        """Augment ``image`` (one image or a collated batch, rows ``indices`` of the dataset) from cached posteriors."""
        from .model import DiagonalGaussian
        from .transforms import augment_batch, float_to_image, image_to_float

        aug, vae = self.augment, self.augment.vae
        x, meta = image_to_float(image)
        if x.shape[0] != len(indices):
            raise ValueError(f"PosteriorCache expects one image per item, got a batch of {x.shape[0]}")
        if vae.image_size is None and tuple(x.shape[-2:]) != tuple(self.size):
            raise ValueError(f"PosteriorCache with a model of spatial latents needs images of one size, {tuple(self.size)}; "
                             f"{where} {tuple(x.shape[-2:])} (resize or crop them first)")
        self._fill(indices, x)
        posterior = DiagonalGaussian(self.mean[indices], self.logvar[indices])
        params = aug.draw(len(indices), tuple(x.shape[-2:]))
        aug.last_params = params
        y = augment_batch(vae, x, params["noise"], aug.mode, aug.strength, aug.residual, params["apply"], posterior=posterior,
                          precision=aug.precision)
        return float_to_image(y, meta, image)

    def __getitem__(self, index: int):
        if self.batched:
            return UseCollateFnCacheCollate(index, self.dataset[index])
        image, rest = self._split(self.dataset[index])
        out = self._augment(torch.tensor([index]), image, f"item {index} is")
        return out if rest is None else (out, *rest)

    def collate(self, samples: list["UseCollateFnCacheCollate"]):
        """The DataLoader ``collate_fn`` of a ``batched=True`` cache: collate, encode what is not cached
        yet, draw one set of parameters per image and decode the whole batch."""
        from torch.utils.data import default_collate

        if not all(isinstance(s, UseCollateFnCacheCollate) for s in samples):
            raise TypeError("PosteriorCache.collate collates the items of a PosteriorCache(..., batched=True)")
        split = [self._split(s.item) for s in samples]
        shapes = {tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__ for image, _ in split}
        if len(shapes) != 1 or not all(isinstance(image, torch.Tensor) and image.ndim == 3 for image, _ in split):
            raise TypeError(f"a batched PosteriorCache needs image tensors [C, H, W] of one shape, got {sorted(map(str, shapes))}")
        indices = torch.tensor([s.index for s in samples], dtype=torch.long)
        out = self._augment(indices, default_collate([image for image, _ in split]), "got")
        if split[0][1] is None:
            return out
        return [out, *default_collate([rest for _, rest in split])]


class UseCollateFnCacheCollate:
    """An item of a ``batched=True`` `PosteriorCache`, waiting for `PosteriorCache.collate`. It is
    deliberately not collatable by torch's default_collate, whose error then names this class: the
    DataLoader needs ``collate_fn=cache.collate``."""

    __slots__ = ("index", "item")

    def __init__(self, index: int, item):
        self.index, self.item = index, item
