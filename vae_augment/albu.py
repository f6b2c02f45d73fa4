"""The albumentations adapter: `AlbuVAEAugment`, an ``ImageOnlyTransform`` for HWC numpy images.

It converts at its edge (`pixels.hwc_to_batch`) and calls the same core as `VAEAugment`
(`augment.augment_batch`);
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

from .augment import augment_batch, check_mode_supported, noise_shape
from .latent import check_mode_strength
from .loader import load_vae
from .pixels import batch_to_hwc, hwc_to_batch
from .policy import DEFAULT_STRENGTH, choose_defaults
from .seeding import WorkerSeed
from .transform_base import prepare_model


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
        strength: float | None = Field(ge=0, le=4)
        mode: Literal["data", "posterior", "prior"]
        residual: bool | None

    def __init__(self, checkpoint: Any = "mnist", strength: float | None = None, mode: Literal["data", "posterior", "prior"] = "data",
                 residual: bool | None = None, p: float = 1.0, checkpoint_options: dict | None = None):
        super().__init__(p=p)
        check_mode_strength(mode, DEFAULT_STRENGTH if strength is None else strength)  # None: chosen below
        options = dict(checkpoint_options or {})
        self.vae = prepare_model(load_vae(checkpoint, **options) if isinstance(checkpoint, (str, os.PathLike)) else checkpoint, None)
        self.checkpoint_options = options or dict(self.vae.load_options)
        check_mode_supported(self.vae, mode)
        self.checkpoint = checkpoint if isinstance(checkpoint, (str, os.PathLike)) else self.vae.name_or_path
        self._worker_seed = WorkerSeed()
        self.residual, _, strength = choose_defaults(self.vae, residual, 1.0, strength, stacklevel=2)  # p is albumentations' own
        self.strength, self.mode = float(strength), mode

    def set_random_seed(self, seed: int | None) -> None:
        super().set_random_seed(seed)
        self._seed, self._worker_seed = seed, WorkerSeed()

    def _rng(self) -> np.random.Generator:
        """albumentations' generator; in a DataLoader worker, re-seeded once from the Compose seed mixed
        with the worker's seed (`seeding.WorkerSeed`), so workers draw different variants and a seeded run repeats."""
        new = self._worker_seed.next_seed(getattr(self, "_seed", None) or 0)
        if new is not None:
            self.random_generator = np.random.default_rng(new)
        return self.random_generator

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        image = data.get("image")
        size = image.shape[:2] if isinstance(image, np.ndarray) else None  # None: the model's own size, where it has one
        noise = self._rng().standard_normal(noise_shape(self.vae, size, self.mode)).astype(np.float32)
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
