"""The torchvision v2 transforms: `VAEAugment` (latents drawn near each image's posterior) and
`LatentMix` (same-class latent mixing on labelled batches, like ``v2.MixUp``).

Each draws its parameters in one method and applies them in another; the tensor work is done by
`vae_augment.augment`, and conversion at the edges by `vae_augment.pixels`.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import PIL.Image
import torch
from torch.utils._pytree import tree_flatten, tree_unflatten
from torchvision import tv_tensors
from torchvision.transforms.v2 import Transform
from torchvision.transforms.v2._utils import _parse_labels_getter, has_any, is_pure_tensor

from .augment import (
    DEFAULT_STRENGTH,
    SMALL_DATA_IMAGES,
    augment_batch,
    check_mode_supported,
    check_precision,
    latent_borrow_batch,
    latent_mix_batch,
    latent_shape,
    prepare_model,
    to_model_space,
    choose_defaults,
    choose_residual,
)
from .checkpoint import CheckpointError, atomic_save_tensors, read_tensors
from .latent import (
    DEFAULT_SHRINKAGE,
    check_mode_strength,
    covariance_factor,
    propagate_labels,
    same_class_partners,
    within_class_covariance,
)
from .loaders import WorkerSeed, reseed_in_worker
from .pixels import batch_size_of, float_to_image, image_size_of, image_to_float

__all__ = ["VAEAugment", "LatentMix", "LatentBorrow", "DEFAULT_STRENGTH"]
_KEYPOINTS = (tv_tensors.KeyPoints,) if hasattr(tv_tensors, "KeyPoints") else ()  # torchvision >= 0.23


def _has_numpy_image(flat_inputs: list[Any]) -> bool:
    return any(isinstance(inpt, np.ndarray) and inpt.ndim >= 2 for inpt in flat_inputs)


def _encode(vae, images, batch_size: int = 256) -> torch.Tensor:
    """Posterior means ``[N, D]`` (float32, CPU) of ``images``: ``[N, C, H, W]`` (uint8 or float in [0, 1]) or a
    sequence of PIL images / image tensors of their own sizes and modes."""
    n = images.shape[0] if isinstance(images, torch.Tensor) and images.ndim == 4 else len(images)
    codes = []
    with torch.inference_mode():
        for start in range(0, n, batch_size):
            chunk = images[start : start + batch_size]
            device = vae.device
            if isinstance(chunk, torch.Tensor) and chunk.ndim == 4:
                x = to_model_space(vae, image_to_float(chunk)[0].to(device))
            else:  # images of their own sizes and modes: each into the model's space first
                x = torch.cat([to_model_space(vae, image_to_float(image)[0].to(device)) for image in chunk])
            codes.append(vae.encode(x).mean.float().cpu())
    return torch.cat(codes) if codes else torch.zeros(0, vae.latent_shape()[0])


def _labelled_codes(vae, images, labels, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """``fit``'s inputs (images and labels, or a dataset of (image, label) items) -> codes ``[N, D]`` and labels ``[N]``."""
    if labels is None:
        items = [images[i] for i in range(len(images))]
        if not items or not all(isinstance(item, (tuple, list)) and len(item) >= 2 for item in items):
            raise ValueError("fit(dataset) needs a dataset of (image, label) items; or pass images and labels")
        images, labels = [item[0] for item in items], [int(item[1]) for item in items]
    labels = torch.as_tensor(labels).cpu()
    n = images.shape[0] if isinstance(images, torch.Tensor) and images.ndim == 4 else len(images)
    if labels.ndim != 1 or labels.shape[0] != n:
        raise ValueError(f"labels must be [N] class indices for N = {n} images, got shape {tuple(labels.shape)}")
    return _encode(vae, images, batch_size), labels


# ------------------------------------------------------------------ VAEAugment
class VAEAugment(Transform):
    """Replace images by decoded latents drawn near their posteriors (a torchvision v2 transform).

    Args:
        vae: a model (`VAE`, `DiffusersVAE`, a diffusers autoencoder object), or a checkpoint spec for
            `load_vae` (``"mnist"``, a folder, a Hub repo id).
        strength: how far latents move. In ``"data"`` mode (default) in units of the spread of
            posterior means over the training set (0 to 4); in ``"posterior"`` mode in posterior
            standard deviations (0 to 4); in ``"prior"`` mode the weight of a prior sample (0 to 1).
            Strength 0 gives the reconstruction (or, with ``residual``, the input). None (default):
            `DEFAULT_STRENGTH` (0.2), or `augment.CAREFUL_STRENGTH` (0.1) for a checkpoint handled with
            care (see ``residual``), where 0.2 measured a small cost.
        mode: ``"data"``, ``"posterior"``, ``"prior"``, ``"neighbour"`` or ``"class"`` (noise along the
            within-class covariance of labelled codes, learnt by `fit`; see `latent.perturb`).
        residual: return ``x + decode(z') - decode(mean)`` so detail the VAE blurs survives. None
            (default): chosen from the checkpoint, True when its held-out reconstructions are blurry
            (``reconstruction_r2`` in its metrics below `augment.FIDELITY_WARNING`) or it was trained
            on fewer than `augment.SMALL_DATA_IMAGES` images (with a warning), else False.
        p: probability of augmenting each image. None (default): chosen with ``residual``, 0.5 for such
            a checkpoint (half of the images stay real), else 1 (see `augment.choose_defaults`).
        same_on_batch: one draw for the whole batch instead of one per image.
        generator: a `torch.Generator` (CPU) for the draws; default: the global torch RNG, so
            DataLoader worker seeding and `torch.manual_seed` work as for torchvision transforms.
        device: where the model runs (default: where it is). Inputs are moved there and back.
        precision: None (float32), or ``"bf16"``/``"fp16"`` to run the VAE under autocast (about 2x
            faster on batches on CPUs with AVX512-BF16/AMX and on GPUs; slower one image at a time;
            see `augment_batch`).

    Accepts PIL images, ``tv_tensors.Image`` and plain tensors ``[H, W]``, ``[C, H, W]`` or
    ``[B, C, H, W]``, uint8 or float in [0, 1], and returns the same type, dtype, shape and device.
    Labels, masks, boxes and other entries of a sample pass through untouched. A batch gets one draw
    per image (unless ``same_on_batch``). The parameters of the last call are kept in
    ``last_params``; `replay` applies them again.
    """

    _transformed_types = (is_pure_tensor, tv_tensors.Image, PIL.Image.Image)

    def __init__(self, vae, strength: float | None = None, mode: str = "data", residual: bool | None = None, p: float | None = None,
                 same_on_batch: bool = False, generator: torch.Generator | None = None, device: str | torch.device | None = None,
                 precision: str | None = None):
        super().__init__()
        check_mode_strength(mode, DEFAULT_STRENGTH if strength is None else strength)  # None: chosen below
        if p is not None and (isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 1):
            raise ValueError(f"p must be a probability in [0, 1], got {p!r} (or None: chosen from the checkpoint)")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        if not isinstance(same_on_batch, bool):
            raise TypeError(f"same_on_batch must be True or False, got {same_on_batch!r}")
        self.vae = prepare_model(vae, device)
        check_mode_supported(self.vae, mode)
        check_precision(self.vae, precision)
        self.precision = precision
        self.mode = mode
        self.residual, p, strength = choose_defaults(self.vae, residual, p, strength)  # a chosen strength is valid in every mode
        self.strength = float(strength)
        self.p = float(p)
        self.same_on_batch = bool(same_on_batch)
        self.generator = generator
        self.last_params: dict[str, Any] | None = None
        self._replaying: dict[str, Any] | None = None
        self._worker_seed = WorkerSeed()
        self.class_factor: torch.Tensor | None = None  # square root of the within-class covariance (mode "class"), from `fit`
        self.class_statistics: dict[str, Any] = {}

    # ------------------------------------------------------------------ class-aware noise
    def fit(self, images, labels=None, shrinkage: float = DEFAULT_SHRINKAGE, batch_size: int = 256) -> "VAEAugment":
        """Learn the within-class covariance of latent codes from labelled images, for ``mode="class"``.

        ``images``: ``[N, C, H, W]`` (uint8 or float in [0, 1]) or a sequence of PIL images / image
        tensors, with ``labels: [N]`` class indices; or a dataset of ``(image, label)`` items with
        ``labels`` None. A few labelled images per class are enough (benchmarks/quality.py fits it on 10
        per class). The statistics travel with the transform
        (pickling, DataLoader workers) and are saved by `save_statistics`. Returns ``self``.
        """
        if "class" not in self.vae.modes:
            raise ValueError(f"fit learns the within-class covariance of flat latents; a {self.vae.kind} has spatial "
                             "latents (mode 'class' is not available for it)")
        codes, labels = _labelled_codes(self.vae, images, labels, batch_size)
        n = len(labels)
        covariance = within_class_covariance(codes, labels, shrinkage)
        self.class_factor = covariance_factor(covariance)
        self.class_statistics = {"covariance": covariance.float(), "shrinkage": float(shrinkage), "images": int(n),
                                 "classes": int(labels.unique().numel())}
        return self

    def save_statistics(self, path) -> None:
        """Write what `fit` learnt to a safetensors file (atomically); `load_statistics` reads it back."""
        if self.class_factor is None:
            raise ValueError("nothing to save: call fit(images, labels) first")
        stats = self.class_statistics
        atomic_save_tensors(path, {"class_factor": self.class_factor, "covariance": stats["covariance"]},
                            metadata={"shrinkage": str(stats["shrinkage"]), "images": str(stats["images"]), "classes": str(stats["classes"])})

    def load_statistics(self, path) -> "VAEAugment":
        """Read statistics written by `save_statistics` (for a model with the same latent size); returns ``self``."""
        if "class" not in self.vae.modes:
            raise ValueError(f"class statistics are for flat latents; a {self.vae.kind} has spatial latents (mode 'class' "
                             "is not available for it)")
        tensors, metadata = read_tensors(path, ("class_factor", "covariance"))
        size = self.vae.latent_shape()[0]
        if tensors["class_factor"].shape != (size, size) or tensors["covariance"].shape != (size, size):
            raise CheckpointError(f"{str(path)!r} holds statistics of {tensors['class_factor'].shape[0]}-dimensional latents; "
                                  f"this {self.vae.kind} has {size}")
        self.class_factor = tensors["class_factor"].float()
        self.class_statistics = {"covariance": tensors["covariance"].float(), "shrinkage": float(metadata.get("shrinkage", "nan")),
                                 "images": int(metadata.get("images", 0)), "classes": int(metadata.get("classes", 0))}
        return self

    # ------------------------------------------------------------------ drawing and applying
    def check_inputs(self, flat_inputs: list[Any]) -> None:
        """Refuse numpy images, which a torchvision transform would pass through unchanged."""
        if _has_numpy_image(flat_inputs) and not any(self._needs_transform_list(flat_inputs)):
            raise TypeError("VAEAugment takes PIL images and torch tensors, got a numpy array (which it would return "
                            "unchanged): pass torch.from_numpy(image).permute(2, 0, 1) for an HWC image, or use "
                            "vae_augment.albu.AlbuVAEAugment in an albumentations pipeline")

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        """Draw ``noise: [B, latent_dim]`` and ``apply: [B]`` for the images in ``flat_inputs``."""
        sizes = {batch_size_of(inpt) for inpt in flat_inputs}
        if len(sizes) > 1:
            raise ValueError(f"all images in one call must have the same batch size, got {sorted(sizes)}")
        n = sizes.pop() if sizes else 1
        if self._replaying is not None:
            return self._replaying
        image_sizes = sorted({image_size_of(inpt) for inpt in flat_inputs})
        if len({latent_shape(self.vae, size) for size in image_sizes}) > 1:  # one noise shape per call
            raise ValueError(f"with a model of spatial latents, all images in one call must have one size, got {image_sizes}")
        params = self.draw(n, image_sizes[0] if image_sizes else None)
        self.last_params = params
        return params

    def draw(self, n: int, size: tuple[int, int] | None = None) -> dict[str, Any]:
        """Parameters for ``n`` images of ``size = (H, W)``: standard normal ``noise [n, *latent_shape]``
        (``[n, latent_dim]`` for a `VAE`, whatever the size; a model of spatial latents needs ``size``),
        ``apply [n]`` (bool) and, in mode ``"prior"``, the ``prior`` samples (the noise mapped to the model's
        prior, a mixture's components drawn with the same generator)."""
        generator = reseed_in_worker(self.generator, self._worker_seed)
        shape = latent_shape(self.vae, size)
        rows = 1 if self.same_on_batch else n
        noise = torch.randn(rows, *shape, generator=generator)
        apply = torch.rand(rows, generator=generator) < self.p if self.p < 1 else torch.ones(rows, dtype=torch.bool)
        params = {"noise": noise, "apply": apply}
        if self.mode == "prior":  # the prior's discrete parts (a mixture's components) from this generator too
            params["prior"] = self.vae.prior_sample(noise, generator).cpu()
        if self.same_on_batch:
            params = {key: value.expand(n, *value.shape[1:]) for key, value in params.items()}
        return params

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        x, meta = image_to_float(inpt)
        if x.shape[0] != params["noise"].shape[0]:
            raise ValueError(f"params were drawn for {params['noise'].shape[0]} images, got a batch of {x.shape[0]}")
        y = augment_batch(self.vae, x, params["noise"], self.mode, self.strength, self.residual, params["apply"],
                          precision=self.precision, class_factor=self.class_factor, prior=params.get("prior"))
        return float_to_image(y, meta, inpt)

    def replay(self, *inputs: Any) -> Any:
        """Apply the parameters of the last call again (to the same or other inputs of the same batch size)."""
        if self.last_params is None:
            raise RuntimeError("replay needs a previous call to draw parameters from")
        self._replaying = self.last_params
        try:
            return self(*inputs)
        finally:
            self._replaying = None

    def extra_repr(self) -> str:
        return (f"strength={self.strength}, mode={self.mode!r}, residual={self.residual}, p={self.p}, "
                f"same_on_batch={self.same_on_batch}" + (f", precision={self.precision!r}" if self.precision else ""))


# ------------------------------------------------------------------ label-aware batch transforms
class _LabelledBatchTransform(Transform):
    """A transform on labelled batches, used like ``v2.MixUp``: finds the labels (``labels_getter``), draws
    parameters for them (``draw(labels)``) and changes the images (``transform``); labels pass unchanged."""

    _transformed_types = (is_pure_tensor, tv_tensors.Image)

    def forward(self, *inputs):
        """``t(images, labels)`` or ``t((images, labels))`` (or a dict with "labels") -> the same structure."""
        inputs = inputs if len(inputs) > 1 else inputs[0]
        flat_inputs, spec = tree_flatten(inputs)
        if has_any(flat_inputs, PIL.Image.Image, tv_tensors.BoundingBoxes, tv_tensors.Mask, *_KEYPOINTS):
            raise ValueError(f"{type(self).__name__}() does not support PIL images, bounding boxes, keypoints and masks; "
                             "apply it after batching, to (images [B, C, H, W], labels [B])")
        if _has_numpy_image(flat_inputs):
            raise TypeError(f"{type(self).__name__} takes image tensors [B, C, H, W], got a numpy array (which it would return "
                            "unchanged): pass torch.from_numpy(images)")
        labels = self._labels_getter(inputs)
        if not isinstance(labels, torch.Tensor) or labels.ndim != 1 or labels.is_floating_point() or labels.is_complex():
            got = (f"a {labels.dtype} tensor of shape {tuple(labels.shape)}" if isinstance(labels, torch.Tensor)
                   else type(labels).__name__)
            raise ValueError(f"labels must be a 1-D integer tensor of class indices, one per image, got {got}; for one-hot "
                             "or soft labels [B, classes] pass labels.argmax(1), for whole-number floats labels.long()")
        needs_transform = self._needs_transform_list(flat_inputs)
        params = {"labels": labels, **self.draw(labels)}
        self.last_params = params
        flat_outputs = [self.transform(inpt, params) if needed and inpt is not labels else inpt
                        for inpt, needed in zip(flat_inputs, needs_transform)]
        return tree_unflatten(flat_outputs, spec)


# ------------------------------------------------------------------ LatentMix
class LatentMix(_LabelledBatchTransform):
    """Label-aware batch augmentation in latent space (DeVries & Taylor, 2017), a torchvision v2
    transform used like ``v2.MixUp``/``v2.CutMix``: after batching, on ``(images, labels)``.

    Each image's code moves relative to the code of another image of the same class in the batch:
    extrapolation c' = c_j + lam (c_j - c_k) (the variant DeVries & Taylor found most useful) or
    interpolation c' = c_j + lam (c_k - c_j). Labels are returned unchanged (the class is kept); an
    image with no classmate in the batch is left as it is.

    Args:
        vae: a model or checkpoint spec, as for `VAEAugment`.
        method: ``"extrapolate"`` (default) or ``"interpolate"``.
        lam: a float, or ``(low, high)`` to draw lam uniformly per image (0 to 2).
        p: probability of changing each image.
        residual: add only the decoded change to the input; None (default): chosen from the checkpoint,
            as for `VAEAugment`.
        generator: a CPU `torch.Generator`; default: the global torch RNG.
        labels_getter: how to find the labels in the input, as for ``v2.MixUp``: ``"default"`` (the
            second entry of a tuple, or the "labels" key of a dict) or a callable.

    Images are ``[B, C, H, W]`` tensors (uint8 or float in [0, 1], plain or ``tv_tensors.Image``) and
    come back in the same type; labels are 1-D class indices. PIL images, boxes, masks and keypoints
    are refused, as ``v2.MixUp`` refuses them. The parameters of the last call are kept in
    ``last_params``.
    """

    def __init__(self, vae, method: str = "extrapolate", lam: float | tuple[float, float] = 0.5, p: float = 1.0,
                 residual: bool | None = None, generator: torch.Generator | None = None, labels_getter="default"):
        super().__init__()
        if method not in ("extrapolate", "interpolate"):
            raise ValueError(f"method must be 'extrapolate' or 'interpolate', got {method!r}")
        bounds = (lam, lam) if not isinstance(lam, (tuple, list)) else tuple(lam)
        if (len(bounds) != 2 or not all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in bounds)
                or not 0 <= bounds[0] <= bounds[1] <= 2):
            raise ValueError(f"lam must be a number or a (low, high) range within [0, 2], got {lam!r}")
        low, high = bounds
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 1:
            raise ValueError(f"p must be a probability in [0, 1], got {p!r}")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        self.vae = prepare_model(vae, None)
        self.method, self.lam_range, self.p = method, (float(low), float(high)), float(p)
        self.residual = choose_residual(self.vae, residual)
        self.generator = generator
        self._labels_getter = _parse_labels_getter(labels_getter)
        self.last_params: dict[str, Any] | None = None
        self._worker_seed = WorkerSeed()

    def draw(self, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Parameters for a batch with ``labels [B]``: a same-class ``partner [B]``, ``lam [B]`` and ``apply [B]``."""
        generator = reseed_in_worker(self.generator, self._worker_seed)
        n = labels.shape[0]
        low, high = self.lam_range
        return {
            "partner": same_class_partners(labels.cpu(), torch.rand(n, generator=generator)),
            "lam": low + (high - low) * torch.rand(n, generator=generator),
            "apply": torch.rand(n, generator=generator) < self.p,
        }

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        n = params["labels"].shape[0]
        if inpt.ndim != 4 or inpt.shape[0] != n:
            raise ValueError(f"images must be [B, C, H, W] with B = len(labels) = {n}, got {tuple(inpt.shape)}")
        x, meta = image_to_float(inpt)
        apply = params["apply"] & (params["partner"] != torch.arange(n))
        y = latent_mix_batch(self.vae, x, params["partner"], params["lam"], apply, self.method, self.residual)
        return float_to_image(y, meta, inpt)

    def extra_repr(self) -> str:
        return f"method={self.method!r}, lam={self.lam_range}, p={self.p}, residual={self.residual}"


# ------------------------------------------------------------------ LatentBorrow
class LatentBorrow(_LabelledBatchTransform):
    """Within-class variation borrowed from unlabelled images, on labelled batches (used like ``v2.MixUp``).

    `fit` encodes the labelled images and gives the unlabelled codes (the checkpoint's latent bank,
    posterior means of its training images, or ``unlabelled`` images) pseudo-labels by label
    propagation over their nearest-neighbour graph (`latent.propagate_labels`); of each class it keeps
    the share ``keep`` it is most confident of as donors (default: all of them; on MNIST keeping every
    propagated code, 93% of them right, measured better than the purer most confident half). On a batch, an image of class c gets the
    code mean + strength * (b - centre_c), b a random donor of class c and centre_c the mean code of
    the labelled images of class c (`latent.borrow_residual`): the image keeps its own code and
    class and takes on a real writer's variation (slant, width, style) instead of a Gaussian's.
    The unlabelled images are used through their codes only: the classifier never sees them.

    Args:
        vae: a model with flat latents, or a checkpoint spec, as for `VAEAugment`.
        strength: how much of the donor's offset is added (0 to 2; 1: all of it).
        p: probability of changing each image (default 0.5: half of the images stay real).
        keep: the share of each pseudo-class kept as donors, the most confident first (0 to 1]; default 1.
        residual: add only the decoded change to the input; None (default): chosen from the checkpoint,
            as for `VAEAugment`.
        generator: a CPU `torch.Generator`; default: the global torch RNG.
        labels_getter: how to find the labels in the input, as for ``v2.MixUp``.

    Images are ``[B, C, H, W]`` tensors (uint8 or float in [0, 1], plain or ``tv_tensors.Image``), labels
    1-D class indices of the classes `fit` saw; both come back as they came (the images changed). The
    parameters of the last call are kept in ``last_params``. On MNIST with 100 labels it is the
    benchmark's best setting on top of the affine and elastic transforms (README, "Does it help?").
    """

    def __init__(self, vae, strength: float = 1.0, p: float = 0.5, keep: float = 1.0, residual: bool | None = None,
                 generator: torch.Generator | None = None, labels_getter="default"):
        super().__init__()
        for name, value, low, high, closed in (("strength", strength, 0, 2, True), ("p", p, 0, 1, True), ("keep", keep, 0, 1, False)):
            if (isinstance(value, bool) or not isinstance(value, (int, float))
                    or not (low <= value if closed else low < value) or not value <= high):
                raise ValueError(f"{name} must be a number in {'[' if closed else '('}{low}, {high}], got {value!r}")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        self.vae = prepare_model(vae, None)
        if "class" not in self.vae.modes:
            raise ValueError(f"LatentBorrow works on flat latents (one code per image); a {self.vae.kind} has spatial latents")
        self.strength, self.p, self.keep = float(strength), float(p), float(keep)
        self.residual = choose_residual(self.vae, residual)
        self.generator = generator
        self._labels_getter = _parse_labels_getter(labels_getter)
        self.last_params: dict[str, Any] | None = None
        self._worker_seed = WorkerSeed()
        self.statistics: dict[str, torch.Tensor] = {}  # classes, centres, donors (sorted by class), offsets, from `fit`

    def fit(self, images, labels=None, unlabelled=None, batch_size: int = 256) -> "LatentBorrow":
        """Learn the class centres and the donors from labelled images (``[N, C, H, W]`` or a sequence of
        images, with ``labels: [N]``; or a dataset of ``(image, label)`` items) and unlabelled ones
        (``unlabelled``: ``[M, C, H, W]``, a sequence of images, or a dataset of images or of ``(image, label)``
        items whose labels are ignored; default: the checkpoint's latent bank, which ``vae-augment train``
        writes). Every class needs a labelled image, and there must be at least 2 classes.
        Returns ``self``."""
        codes, labels = _labelled_codes(self.vae, images, labels, batch_size)
        if labels.is_floating_point() or labels.is_complex():
            raise ValueError(f"labels must be integer class indices, got dtype {labels.dtype}")
        if unlabelled is not None:
            if not (isinstance(unlabelled, torch.Tensor) and unlabelled.ndim == 4):  # a sequence of images, or a dataset
                unlabelled = [item[0] if isinstance(item, (tuple, list)) else item for item in (unlabelled[i] for i in range(len(unlabelled)))]
            bank = _encode(self.vae, unlabelled, batch_size)
        elif self.vae.latent_bank is not None:
            bank = self.vae.latent_bank.float().cpu()
        else:
            raise ValueError("LatentBorrow needs unlabelled images: pass fit(..., unlabelled=images), or use a checkpoint "
                             "with a latent bank (latent_bank.safetensors, written by vae-augment train)")
        if not (bool(torch.isfinite(codes).all()) and bool(torch.isfinite(bank).all())):
            raise ValueError("the codes of these images contain NaN or infinite values; check the images and the model")
        classes, index = torch.unique(labels, return_inverse=True)
        if classes.numel() < 2:
            raise ValueError(f"LatentBorrow needs labelled images of at least 2 classes, got only class {classes.tolist()}")
        if len(bank) < classes.numel():
            raise ValueError(f"got {len(bank)} unlabelled images for {classes.numel()} classes; give at least a few per class")
        if len(bank) < SMALL_DATA_IMAGES:
            warnings.warn(f"LatentBorrow borrows from {len(bank)} unlabelled images; on a small dataset (1,258 digits, "
                          "benchmarks/utility.py) it measured no gain over a classic augmentation and up to 5 points below "
                          "no augmentation on its own: compare it against the classic pipeline on a validation split",
                          UserWarning, stacklevel=2)
        pseudo, confidence = propagate_labels(codes, index, bank)
        centres = torch.zeros(classes.numel(), codes.shape[1]).index_add_(0, index, codes) / torch.bincount(index).unsqueeze(1)
        donors, counts = [], []
        for c in range(classes.numel()):
            members = torch.nonzero(pseudo == c).squeeze(1)
            if members.numel() == 0:
                raise ValueError(f"no unlabelled image was assigned to class {classes[c].item()}; give more unlabelled "
                                 "images (or labelled ones of that class)")
            top = confidence[members].argsort(descending=True)[: max(1, int(self.keep * members.numel()))]
            donors.append(bank[members[top]])
            counts.append(len(top))
        counts = torch.tensor(counts)
        self.statistics = {"classes": classes.long(), "centres": centres, "donors": torch.cat(donors),
                           "offsets": torch.cumsum(counts, 0) - counts, "counts": counts}
        return self

    def save_statistics(self, path) -> None:
        """Write what `fit` learnt to a safetensors file (atomically); `load_statistics` reads it back."""
        if not self.statistics:
            raise ValueError("nothing to save: call fit(images, labels) first")
        atomic_save_tensors(path, dict(self.statistics), metadata={"keep": str(self.keep)})

    def load_statistics(self, path) -> "LatentBorrow":
        """Read statistics written by `save_statistics` (for a model with the same latent size); returns ``self``."""
        names = ("classes", "centres", "donors", "offsets", "counts")
        tensors, metadata = read_tensors(path, names)
        size = self.vae.latent_shape()[0]
        if tensors["centres"].shape[1:] != (size,) or tensors["donors"].shape[1:] != (size,):
            raise CheckpointError(f"{str(path)!r} holds statistics of {tensors['centres'].shape[-1]}-dimensional latents; "
                                  f"this {self.vae.kind} has {size}")
        classes, counts, offsets = tensors["classes"], tensors["counts"], tensors["offsets"]
        if (len(classes) != len(tensors["centres"]) or counts.shape != classes.shape or offsets.shape != classes.shape
                or not bool((classes[1:] > classes[:-1]).all()) or int(counts.sum()) != len(tensors["donors"])
                or not torch.equal(offsets, torch.cumsum(counts, 0) - counts)):
            raise CheckpointError(f"{str(path)!r} does not hold consistent LatentBorrow statistics (classes, centres, donors, "
                                  "offsets and counts disagree); write it with save_statistics")
        self.statistics = {name: tensors[name] for name in names}
        self.keep = float(metadata.get("keep", self.keep))
        return self

    def draw(self, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Parameters for a batch with ``labels [B]``: each image's ``donor [B, D]`` and class ``centre [B, D]``, and ``apply [B]``."""
        if not self.statistics:
            raise RuntimeError("LatentBorrow needs fit(images, labels) (or load_statistics) before use")
        stats = self.statistics
        labels = labels.cpu()
        index = torch.searchsorted(stats["classes"], labels).clamp_max(len(stats["classes"]) - 1)
        unknown = stats["classes"][index] != labels
        if unknown.any():
            raise ValueError(f"labels {sorted(set(labels[unknown].tolist()))} are not among the classes fit saw "
                             f"({stats['classes'].tolist()})")
        generator = reseed_in_worker(self.generator, self._worker_seed)
        n = labels.shape[0]
        pick = stats["offsets"][index] + (torch.rand(n, generator=generator) * stats["counts"][index]).long().clamp_max(stats["counts"][index] - 1)
        return {"donor": stats["donors"][pick], "centre": stats["centres"][index],
                "apply": torch.rand(n, generator=generator) < self.p}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        n = params["labels"].shape[0]
        if inpt.ndim != 4 or inpt.shape[0] != n:
            raise ValueError(f"images must be [B, C, H, W] with B = len(labels) = {n}, got {tuple(inpt.shape)}")
        x, meta = image_to_float(inpt)
        y = latent_borrow_batch(self.vae, x, params["donor"], params["centre"], self.strength, params["apply"], self.residual)
        return float_to_image(y, meta, inpt)

    def extra_repr(self) -> str:
        return f"strength={self.strength}, p={self.p}, keep={self.keep}, residual={self.residual}"
