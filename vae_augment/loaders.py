"""DataLoader helpers: a posterior cache (`PosteriorCache`) and whole-batch augmentation in the
collate function (`AugmentCollate`), both around a `VAEAugment`, whose public ``draw`` and
``apply`` they call. Worker seeding lives in `vae_augment.seeding` (``worker_init_fn`` is
re-exported here).
"""

from __future__ import annotations

import PIL.Image
import torch
from torch.utils.data import Dataset, default_collate

from .augment import encode_images, latent_shape
from .models import DiagonalGaussian
from .pixels import image_size_of, image_to_float
from .seeding import worker_init_fn
from .transforms import VAEAugment

__all__ = ["PosteriorCache", "AugmentCollate", "worker_init_fn"]


def _check_augment(augment) -> None:
    if not isinstance(augment, VAEAugment):
        raise TypeError(f"augment must be a VAEAugment, got {type(augment).__name__}")


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
        _check_augment(augment)
        self.dataset, self.augment, self.batched = dataset, augment, bool(batched)
        n, vae = len(dataset), augment.vae
        # latents of the first image's size; for a model whose latents depend on the size (spatial
        # latents), every image must then give latents of that shape
        self.size = image_size_of(self._split(dataset[0])[0]) if n else vae.sample_size
        shape = latent_shape(vae, self.size)
        self.mean = torch.zeros(n, *shape).share_memory_()
        self.logvar = torch.zeros(n, *shape).share_memory_()
        self.cached = torch.zeros(n, dtype=torch.bool).share_memory_()

    def __len__(self) -> int:
        return len(self.dataset)

    @torch.inference_mode()
    def precompute(self, batch_size: int = 512) -> "PosteriorCache":
        """Encode every image now (batched), instead of on first sight."""
        for start in range(0, len(self), batch_size):
            indices = torch.arange(start, min(start + batch_size, len(self)))
            self._fill(indices, torch.cat([image_to_float(self._split(self.dataset[int(i)])[0])[0] for i in indices]))
        return self

    @staticmethod
    def _split(item):
        return (item[0], tuple(item[1:])) if isinstance(item, tuple) else (item, None)

    def _fill(self, indices: torch.Tensor, x: torch.Tensor) -> None:
        """Encode the images ``x: [B, C, H, W]`` (float in [0, 1]) of the dataset rows ``indices`` that are not
        cached yet, into the cache."""
        missing = (~self.cached[indices]).nonzero().squeeze(1)
        if missing.numel():
            with torch.inference_mode():
                posterior = encode_images(self.augment.vae, x[missing])
            self.mean[indices[missing]] = posterior.mean.cpu()
            self.logvar[indices[missing]] = posterior.logvar.cpu()
            self.cached[indices[missing]] = True

    def _augment(self, indices: torch.Tensor, image, where: str):
        """Augment ``image`` (one image or a collated batch, rows ``indices`` of the dataset) from cached posteriors."""
        aug = self.augment
        x = image_to_float(image)[0]  # checks the image; `apply` converts the original, so the result keeps its type
        if x.shape[0] != len(indices):
            raise ValueError(f"PosteriorCache expects one image per item, got a batch of {x.shape[0]}")
        size = tuple(x.shape[-2:])
        if latent_shape(aug.vae, size) != tuple(self.mean.shape[1:]):
            raise ValueError(f"PosteriorCache with a model of spatial latents needs images of one size, {tuple(self.size)}; "
                             f"{where} {size} (resize or crop them first)")
        self._fill(indices, x)
        params = aug.draw(len(indices), size)
        aug.last_params = params
        return aug.apply(image, params, posterior=DiagonalGaussian(self.mean[indices], self.logvar[indices]))

    def __getitem__(self, index: int):
        if self.batched:
            return UseCollateFnCacheCollate(index, self.dataset[index])
        image, rest = self._split(self.dataset[index])
        out = self._augment(torch.tensor([index]), image, f"item {index} is")
        return out if rest is None else (out, *rest)

    def collate(self, samples: list["UseCollateFnCacheCollate"]):
        """The DataLoader ``collate_fn`` of a ``batched=True`` cache: collate, encode what is not cached
        yet, draw one set of parameters per image and decode the whole batch."""
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


class AugmentCollate:
    """A DataLoader ``collate_fn`` that collates a batch, then applies a `VAEAugment` to its images at once.

    Inside DataLoader workers this runs the VAE on whole batches (one draw per image) instead of
    one image at a time, several times faster on CPU. Samples are images or tuples whose first
    entry is the image (uint8 or float ``[C, H, W]`` tensors, or ``[H, W]`` gray ones, which come back
    as ``[B, H, W]``); the rest is collated as usual.
    """

    def __init__(self, augment):
        _check_augment(augment)
        self.augment = augment

    def __call__(self, samples):
        first = samples[0][0] if samples and isinstance(samples[0], (tuple, list)) else samples[0] if samples else None
        if isinstance(first, PIL.Image.Image):  # default_collate's own error would not say what to do
            raise TypeError(f"AugmentCollate collates image tensors [C, H, W] (uint8 or float), got {type(first).__name__}: "
                            "add v2.PILToTensor() (uint8) or v2.ToImage() to the dataset's transform, or apply VAEAugment per item")
        batch = default_collate(samples)
        if isinstance(batch, list):  # what default_collate makes of (image, label, ...) samples
            return [self._augment(batch[0]), *batch[1:]]
        return self._augment(batch)

    def _augment(self, images):
        """The collated images ``[B, C, H, W]``; ``[B, H, W]`` of gray ``[H, W]`` images gets its channel and loses
        it again (VAEAugment would read it as one image of B channels)."""
        if isinstance(images, torch.Tensor) and images.ndim == 3:
            return self.augment(images.unsqueeze(1)).squeeze(1)
        return self.augment(images)
