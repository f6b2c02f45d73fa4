"""The torchvision v2 transforms: `VAEAugment` (latents drawn near each image's posterior),
`LatentMix` (same-class latent mixing on labelled batches, like ``v2.MixUp``) and `LatentBorrow`
(within-class variation borrowed from unlabelled codes, on labelled batches).

Each derives from `transform_base.VAETransform`, which owns what they share; each draws its
parameters in one method (``draw``) and applies them in another (``apply``, which calls the
functional core in `vae_augment.augment`; conversion at the edges is `vae_augment.pixels`').
"""

from __future__ import annotations

import warnings
from typing import Any

import PIL.Image
import torch
from torchvision import tv_tensors
from torchvision.transforms.v2._utils import is_pure_tensor

from .augment import (
    augment_batch,
    check_mode_supported,
    check_precision,
    labelled_codes,
    latent_borrow_batch,
    latent_mix_batch,
    encode_means,
    noise_shape,
)
from .checkpoint import CheckpointError
from .latent import (
    DEFAULT_SHRINKAGE,
    borrow_donors,
    check_mode_strength,
    covariance_factor,
    propagate_labels,
    same_class_partners,
    within_class_covariance,
)
from .models import DiagonalGaussian
from .pixels import batch_size_of, float_to_image, image_size_of, image_to_float
from .policy import DEFAULT_STRENGTH, SMALL_DATA_IMAGES, choose_defaults, choose_residual
from .transform_base import LabelledBatchTransform, VAETransform, check_generator, check_probability, check_range, has_numpy_image

__all__ = ["VAEAugment", "LatentMix", "LatentBorrow", "DEFAULT_STRENGTH"]


# ------------------------------------------------------------------ VAEAugment
class VAEAugment(VAETransform):
    """Replace images by decoded latents drawn near their posteriors (a torchvision v2 transform).

    Args:
        vae: a model (`VAE`, `DiffusersVAE`, a diffusers autoencoder object), or a checkpoint spec for
            `load_vae` (``"mnist"``, a folder, a Hub repo id).
        strength: how far latents move. In ``"data"`` mode (default) in units of the spread of
            posterior means over the training set (0 to 4); in ``"posterior"`` mode in posterior
            standard deviations (0 to 4); in ``"prior"`` mode the weight of a prior sample (0 to 1).
            Strength 0 gives the reconstruction (or, with ``residual``, the input). None (default):
            `DEFAULT_STRENGTH`, or `policy.CAREFUL_STRENGTH` for a checkpoint handled with care (see
            `vae_augment.policy`).
        mode: ``"data"``, ``"posterior"``, ``"prior"``, ``"neighbour"`` or ``"class"`` (noise along the
            within-class covariance of labelled codes, learnt by `fit`; see `latent.perturb`).
        residual: return ``x + decode(z') - decode(mean)`` so detail the VAE blurs survives; False returns
            ``decode(z')`` itself. None (default): True (`vae_augment.policy` says why), with a warning
            when the checkpoint is handled with care.
        p: probability of augmenting each image. None (default): chosen with ``residual``, 0.5 for such
            a checkpoint (half of the images stay real), else 1 (see `policy.choose_defaults`).
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
    ``last_params``; `replay` applies them again, and `apply` applies given ones.
    """

    _transformed_types = (is_pure_tensor, tv_tensors.Image, PIL.Image.Image)
    _repr_fields = ("strength", "mode", "residual", "p", "same_on_batch", "precision")
    _statistics_names = ("class_factor", "covariance")

    def __init__(self, vae, strength: float | None = None, mode: str = "data", residual: bool | None = None, p: float | None = None,
                 same_on_batch: bool = False, generator: torch.Generator | None = None, device: str | torch.device | None = None,
                 precision: str | None = None):
        check_mode_strength(mode, DEFAULT_STRENGTH if strength is None else strength)  # None: chosen below
        if p is not None:
            check_probability(p, hint=" (or None: chosen from the checkpoint)")
        check_generator(generator)
        if not isinstance(same_on_batch, bool):
            raise TypeError(f"same_on_batch must be True or False, got {same_on_batch!r}")
        super().__init__(vae, generator, device)
        check_mode_supported(self.vae, mode)
        check_precision(self.vae, precision)
        self.precision, self.mode, self.same_on_batch = precision, mode, same_on_batch
        self.residual, p, strength = choose_defaults(self.vae, residual, p, strength, stacklevel=2)  # a chosen strength is valid in every mode
        self.strength, self.p = float(strength), float(p)
        self._replaying: dict[str, Any] | None = None
        self.class_factor: torch.Tensor | None = None  # square root of the within-class covariance (mode "class"), from `fit`
        self.class_statistics: dict[str, Any] = {}

    # ------------------------------------------------------------------ class-aware noise
    def fit(self, images, labels=None, shrinkage: float = DEFAULT_SHRINKAGE, batch_size: int = 256) -> "VAEAugment":
        """Learn the within-class covariance of latent codes from labelled images, for ``mode="class"``.

        ``images``: ``[N, C, H, W]`` (uint8 or float in [0, 1]) or a sequence of PIL images / image
        tensors, with ``labels: [N]`` class indices; or a dataset of ``(image, label)`` items with
        ``labels`` None. A few labelled images per class are enough. The statistics travel with the transform
        (pickling, DataLoader workers) and are saved by `save_statistics`. Returns ``self``.
        """
        codes, labels = labelled_codes(self.vae, images, labels, batch_size)
        covariance = within_class_covariance(codes, labels, shrinkage)
        self.class_factor = covariance_factor(covariance)
        self.class_statistics = {"covariance": covariance.float(), "shrinkage": float(shrinkage), "images": len(labels),
                                 "classes": int(labels.unique().numel())}
        return self

    def _statistics(self) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        if self.class_factor is None:
            return {}, {}
        stats = self.class_statistics
        return ({"class_factor": self.class_factor, "covariance": stats["covariance"]},
                {name: str(stats[name]) for name in ("shrinkage", "images", "classes")})

    def _set_statistics(self, tensors: dict[str, torch.Tensor], metadata: dict[str, str], path) -> None:
        self._check_latent_size(path, tensors, square=("class_factor", "covariance"))
        self.class_factor = tensors["class_factor"].float()
        self.class_statistics = {"covariance": tensors["covariance"].float(), "shrinkage": float(metadata.get("shrinkage", "nan")),
                                 "images": int(metadata.get("images", 0)), "classes": int(metadata.get("classes", 0))}

    # ------------------------------------------------------------------ drawing and applying
    def check_inputs(self, flat_inputs: list[Any]) -> None:
        """Refuse numpy images, which a torchvision transform would pass through unchanged."""
        if has_numpy_image(flat_inputs) and not any(self._needs_transform_list(flat_inputs)):
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
        if len({noise_shape(self.vae, size, self.mode) for size in image_sizes}) > 1:  # one noise shape per call
            raise ValueError(f"with a model of spatial latents, all images in one call must have one size, got {image_sizes}")
        params = self.draw(n, image_sizes[0] if image_sizes else None)
        self.last_params = params
        return params

    def draw(self, n: int, size: tuple[int, int] | None = None) -> dict[str, Any]:
        """Parameters for ``n`` images of ``size = (H, W)``: standard normal ``noise [n, *noise_shape]``
        (``[n, latent_dim]`` for a `VAE`, whatever the size; a model of spatial latents needs ``size``, except
        in mode ``"class"``, whose noise is ``[n, vae.code_size()]``),
        ``apply [n]`` (bool) and, in mode ``"prior"``, the ``prior`` samples (the noise mapped to the model's
        prior, a mixture's components drawn with the same generator)."""
        generator = self._generator()
        shape = noise_shape(self.vae, size, self.mode)
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
        return self._apply_params(inpt, params)

    def _apply_params(self, inpt: Any, params: dict[str, Any], posterior: DiagonalGaussian | None = None) -> Any:
        """``apply(images, params, posterior=None)``: the drawn ``params`` (from `draw`, `last_params`) applied to
        ``images`` (any type `VAEAugment` accepts; the same type back). ``posterior``, of the images' rows,
        skips the encoder when it is already known (`PosteriorCache`)."""
        x, meta = image_to_float(inpt)
        if x.shape[0] != params["noise"].shape[0]:
            raise ValueError(f"params were drawn for {params['noise'].shape[0]} images, got a batch of {x.shape[0]}")
        y = augment_batch(self.vae, x, params["noise"], self.mode, self.strength, self.residual, params["apply"], posterior=posterior,
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


# ------------------------------------------------------------------ LatentMix
class LatentMix(LabelledBatchTransform):
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

    _repr_fields = ("method", ("lam", "lam_range"), "p", "residual")

    def __init__(self, vae, method: str = "extrapolate", lam: float | tuple[float, float] = 0.5, p: float = 1.0,
                 residual: bool | None = None, generator: torch.Generator | None = None, labels_getter="default"):
        if method not in ("extrapolate", "interpolate"):
            raise ValueError(f"method must be 'extrapolate' or 'interpolate', got {method!r}")
        bounds = (lam, lam) if not isinstance(lam, (tuple, list)) else tuple(lam)
        if (len(bounds) != 2 or not all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in bounds)
                or not 0 <= bounds[0] <= bounds[1] <= 2):
            raise ValueError(f"lam must be a number or a (low, high) range within [0, 2], got {lam!r}")
        self_p = check_probability(p)
        super().__init__(vae, generator, labels_getter)
        self.method, self.lam_range, self.p = method, (float(bounds[0]), float(bounds[1])), self_p
        self.residual = choose_residual(self.vae, residual, stacklevel=2)

    def draw(self, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Parameters for a batch with ``labels [B]``: a same-class ``partner [B]``, ``lam [B]`` and ``apply [B]``."""
        generator = self._generator()
        n = labels.shape[0]
        low, high = self.lam_range
        return {
            "partner": same_class_partners(labels.cpu(), torch.rand(n, generator=generator)),
            "lam": low + (high - low) * torch.rand(n, generator=generator),
            "apply": torch.rand(n, generator=generator) < self.p,
        }

    def _apply_params(self, inpt: Any, params: dict[str, Any]) -> Any:
        x, meta = image_to_float(inpt)
        n = x.shape[0]
        apply = params["apply"] & (params["partner"] != torch.arange(n))
        y = latent_mix_batch(self.vae, x, params["partner"], params["lam"], apply, self.method, self.residual)
        return float_to_image(y, meta, inpt)


# ------------------------------------------------------------------ LatentBorrow
class LatentBorrow(LabelledBatchTransform):
    """Within-class variation borrowed from unlabelled images, on labelled batches (used like ``v2.MixUp``).

    `fit` encodes the labelled images and gives the unlabelled codes (the checkpoint's latent bank,
    posterior means of its training images, or ``unlabelled`` images) pseudo-labels by label
    propagation over their nearest-neighbour graph (`latent.propagate_labels`); of each class it keeps
    the share ``keep`` it is most confident of as donors (default: all of them; docs/benchmarks.md
    measures the choice). On a batch, an image of class c gets the
    code mean + strength * (b - centre_c), b a random donor of class c and centre_c the mean code of
    the labelled images of class c (`latent.borrow_residual`): the image keeps its own code and
    class and takes on a real writer's variation (slant, width, style) instead of a Gaussian's.
    The unlabelled images are used through their codes only: the classifier never sees them.

    Args:
        vae: a model or checkpoint spec, as for `VAEAugment`. Spatial latents (the diffusers backbones)
            work through their pooled codes (`latent.pooled_codes`): donors and centres are per channel on a
            small grid, and an offset is spread smoothly over the image's latent, whatever its size.
        strength: how much of the donor's offset is added (0 to 2; 1: all of it).
        p: probability of changing each image (default 0.5: half of the images stay real).
        keep: the share of each pseudo-class kept as donors, the most confident first (0 to 1]; default 1.
        residual: add only the decoded change to the input; None (default): chosen from the checkpoint,
            as for `VAEAugment`.
        generator: a CPU `torch.Generator`; default: the global torch RNG.
        labels_getter: how to find the labels in the input, as for ``v2.MixUp``.

    Images are ``[B, C, H, W]`` tensors (uint8 or float in [0, 1], plain or ``tv_tensors.Image``), labels
    1-D class indices of the classes `fit` saw; both come back as they came (the images changed). The
    parameters of the last call are kept in ``last_params``. How much it helps, and where it did
    not: docs/benchmarks.md#does-it-help.
    """

    _repr_fields = ("strength", "p", "keep", "residual")
    _statistics_names = ("classes", "centres", "donors", "offsets", "counts")

    def __init__(self, vae, strength: float = 1.0, p: float = 0.5, keep: float = 1.0, residual: bool | None = None,
                 generator: torch.Generator | None = None, labels_getter="default"):
        strength, p, keep = check_range("strength", strength, 0, 2), check_range("p", p, 0, 1), check_range("keep", keep, 0, 1, False)
        super().__init__(vae, generator, labels_getter)
        self.strength, self.p, self.keep = strength, p, keep
        self.residual = choose_residual(self.vae, residual, stacklevel=2)
        self.statistics: dict[str, torch.Tensor] = {}  # classes, centres, donors (sorted by class), offsets, from `fit`

    def fit(self, images, labels=None, unlabelled=None, batch_size: int = 256) -> "LatentBorrow":
        """Learn the class centres and the donors from labelled images (``[N, C, H, W]`` or a sequence of
        images, with ``labels: [N]``; or a dataset of ``(image, label)`` items) and unlabelled ones
        (``unlabelled``: ``[M, C, H, W]``, a sequence of images, or a dataset of images or of ``(image, label)``
        items whose labels are ignored; default: the checkpoint's latent bank, which ``vae-augment train``
        writes). Every class needs a labelled image, and there must be at least 2 classes.
        Returns ``self``."""
        codes, labels = labelled_codes(self.vae, images, labels, batch_size)
        if labels.is_floating_point() or labels.is_complex():
            raise ValueError(f"labels must be integer class indices, got dtype {labels.dtype}")
        bank = self._bank(unlabelled, batch_size)
        if not (bool(torch.isfinite(codes).all()) and bool(torch.isfinite(bank).all())):
            raise ValueError("the codes of these images contain NaN or infinite values; check the images and the model")
        classes, index = torch.unique(labels, return_inverse=True)
        if classes.numel() < 2:
            raise ValueError(f"LatentBorrow needs labelled images of at least 2 classes, got only class {classes.tolist()}")
        if len(bank) < classes.numel():
            raise ValueError(f"got {len(bank)} unlabelled images for {classes.numel()} classes; give at least a few per class")
        if len(bank) < SMALL_DATA_IMAGES:
            warnings.warn(f"LatentBorrow borrows from {len(bank)} unlabelled images; on a small dataset it measured no gain over a "
                          "classic augmentation and a loss on its own (docs/benchmarks.md#does-it-help): compare it against the "
                          "classic pipeline on a validation split", UserWarning, stacklevel=2)
        pseudo, confidence = propagate_labels(codes, index, bank)
        centres = torch.zeros(classes.numel(), codes.shape[1]).index_add_(0, index, codes) / torch.bincount(index).unsqueeze(1)
        donors, counts = borrow_donors(bank, pseudo, confidence, classes, self.keep)
        self.statistics = {"classes": classes.long(), "centres": centres, "donors": donors,
                           "offsets": torch.cumsum(counts, 0) - counts, "counts": counts}
        return self

    def _bank(self, unlabelled, batch_size: int) -> torch.Tensor:
        """The unlabelled codes ``[M, D]``: of ``unlabelled`` images (a tensor, a sequence or a dataset), or the latent bank."""
        if unlabelled is not None:
            if not (isinstance(unlabelled, torch.Tensor) and unlabelled.ndim == 4):  # a sequence of images, or a dataset
                unlabelled = [item[0] if isinstance(item, (tuple, list)) else item for item in (unlabelled[i] for i in range(len(unlabelled)))]
            return encode_means(self.vae, unlabelled, batch_size)
        if self.vae.latent_bank is not None:
            return self.vae.latent_bank.float().cpu()
        raise ValueError("LatentBorrow needs unlabelled images: pass fit(..., unlabelled=images), or use a checkpoint "
                         "with a latent bank (latent_bank.safetensors, written by vae-augment train)")

    def _statistics(self) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        return dict(self.statistics), ({"keep": str(self.keep)} if self.statistics else {})

    def _set_statistics(self, tensors: dict[str, torch.Tensor], metadata: dict[str, str], path) -> None:
        self._check_latent_size(path, tensors, rows=("centres", "donors"))
        classes, counts, offsets = tensors["classes"], tensors["counts"], tensors["offsets"]
        if (len(classes) != len(tensors["centres"]) or counts.shape != classes.shape or offsets.shape != classes.shape
                or not bool((classes[1:] > classes[:-1]).all()) or int(counts.sum()) != len(tensors["donors"])
                or not torch.equal(offsets, torch.cumsum(counts, 0) - counts)):
            raise CheckpointError(f"{str(path)!r} does not hold consistent LatentBorrow statistics (classes, centres, donors, "
                                  "offsets and counts disagree); write it with save_statistics")
        self.statistics = {name: tensors[name] for name in self._statistics_names}
        self.keep = float(metadata.get("keep", self.keep))

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
        generator = self._generator()
        n = labels.shape[0]
        pick = stats["offsets"][index] + (torch.rand(n, generator=generator) * stats["counts"][index]).long().clamp_max(stats["counts"][index] - 1)
        return {"donor": stats["donors"][pick], "centre": stats["centres"][index],
                "apply": torch.rand(n, generator=generator) < self.p}

    def _apply_params(self, inpt: Any, params: dict[str, Any]) -> Any:
        x, meta = image_to_float(inpt)
        y = latent_borrow_batch(self.vae, x, params["donor"], params["centre"], self.strength, params["apply"], self.residual)
        return float_to_image(y, meta, inpt)
