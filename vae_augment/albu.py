"""The albumentations adapter: `AlbuVAEAugment`, an ``ImageOnlyTransform`` for HWC numpy images.

It converts at its edge and calls the same core as `VAEAugment` (`transforms.augment_batch`);
its randomness comes from albumentations' own seeded generator, so ``A.Compose(..., seed=...)``
reproduces, and ``A.to_dict`` / ``A.from_dict`` round-trip (the model is referenced by its
bundled name, folder or Hub id).
"""

from __future__ import annotations

import os
from typing import Any, Literal

import numpy as np
import torch

try:
    import albumentations as A
    from albumentations.core.transforms_interface import BaseTransformInitSchema
    from pydantic import Field
except ImportError as err:  # pragma: no cover - exercised only without the extra
    raise ImportError("the albumentations adapter needs albumentations: pip install 'vae-augment[albumentations]'") from err

from .latent import check_mode_strength
from .transforms import DEFAULT_STRENGTH, _prepare_vae, augment_batch, check_mode_supported, image_to_float, latent_shape


class AlbuVAEAugment(A.ImageOnlyTransform):
    """VAE augmentation for albumentations pipelines.

    Args:
        checkpoint: a bundled name (``"mnist"``), a folder or a Hub repo id, or a loaded `VAE`
            (serialization then needs the VAE to have been loaded from such a spec).
        checkpoint_options: keyword arguments for `load_vae` (``revision``, ``subfolder``); taken
            from the model when one is given.
        strength, mode, residual: as for `VAEAugment`.
        p: probability of applying the transform.

    Images are HWC (or HW) numpy arrays, uint8 in [0, 255] or float32 in [0, 1], gray or RGB;
    the result has the same shape and dtype. Masks, boxes and keypoints are left untouched.
    """

    class InitSchema(BaseTransformInitSchema):
        checkpoint: Any
        checkpoint_options: dict | None = None
        strength: float = Field(ge=0, le=4)
        mode: Literal["data", "posterior", "prior"]
        residual: bool

    def __init__(self, checkpoint: Any = "mnist", strength: float = DEFAULT_STRENGTH, mode: Literal["data", "posterior", "prior"] = "data",
                 residual: bool = False, p: float = 1.0, checkpoint_options: dict | None = None):
        super().__init__(p=p)
        check_mode_strength(mode, strength)
        from .hub import load_vae

        options = dict(checkpoint_options or {})
        self.vae = _prepare_vae(load_vae(checkpoint, **options) if isinstance(checkpoint, (str, os.PathLike)) else checkpoint, None)
        self.checkpoint_options = options or dict(getattr(self.vae, "load_options", {}) or {})
        check_mode_supported(self.vae, mode)
        self.checkpoint = checkpoint if isinstance(checkpoint, (str, os.PathLike)) else getattr(checkpoint, "name_or_path", None)
        self.strength, self.mode, self.residual = float(strength), mode, bool(residual)

    def set_random_seed(self, seed: int | None) -> None:
        super().set_random_seed(seed)
        self._seed, self._worker = seed, None

    def _rng(self) -> np.random.Generator:
        """albumentations' generator; in a DataLoader worker, re-seeded once from the Compose seed mixed
        with the worker's seed, so workers draw different variants and a seeded run repeats."""
        info = torch.utils.data.get_worker_info()
        if info is not None and getattr(self, "_worker", None) != (info.id, info.seed):
            self.random_generator = np.random.default_rng([getattr(self, "_seed", None) or 0, info.seed])
            self._worker = (info.id, info.seed)
        return self.random_generator

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        image = data.get("image")
        size = image.shape[:2] if isinstance(image, np.ndarray) else self.vae.image_size
        if size is None:
            raise ValueError("AlbuVAEAugment with a model of spatial latents needs the image to draw noise for")
        noise = self._rng().standard_normal(latent_shape(self.vae, size)).astype(np.float32)
        return {"noise": torch.from_numpy(noise).unsqueeze(0)}

    def apply(self, img: np.ndarray, noise: torch.Tensor | None = None, **params: Any) -> np.ndarray:
        if noise is None:  # called outside Compose
            noise = self.get_params_dependent_on_data({}, {"image": img})["noise"]
        x = hwc_to_batch(img)
        y = augment_batch(self.vae, x, noise, self.mode, self.strength, self.residual)
        return batch_to_hwc(y, img)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("checkpoint", "strength", "mode", "residual", "checkpoint_options")

    def get_transform_init_args(self) -> dict[str, Any]:
        if self.checkpoint is None:
            raise ValueError("this AlbuVAEAugment was given a VAE object without a checkpoint name; pass checkpoint as a "
                             "bundled name, folder or Hub repo id to serialize it")
        return {"checkpoint": str(self.checkpoint), "strength": self.strength, "mode": self.mode, "residual": self.residual,
                "checkpoint_options": self.checkpoint_options or None}


def hwc_to_batch(img: np.ndarray) -> torch.Tensor:
    """HWC / HW numpy (uint8 or float in [0, 1]) -> float ``[1, C, H, W]``."""
    if not isinstance(img, np.ndarray) or img.ndim not in (2, 3):
        raise ValueError(f"expected an HWC or HW numpy image, got {type(img).__name__} with shape {getattr(img, 'shape', None)}")
    x = torch.from_numpy(np.ascontiguousarray(img))
    x = x.unsqueeze(-1) if x.ndim == 2 else x
    return image_to_float(x.permute(2, 0, 1))[0]  # the same dtype, range and finiteness checks as VAEAugment


def batch_to_hwc(y: torch.Tensor, like: np.ndarray) -> np.ndarray:
    out = y[0].permute(1, 2, 0).cpu().numpy()
    if like.ndim == 2:
        out = out[..., 0]
    if like.dtype == np.uint8:
        return np.clip(np.rint(out * 255), 0, 255).astype(np.uint8)
    return out.astype(like.dtype)
