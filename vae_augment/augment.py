"""The functional core of augmentation on image batches: encode, perturb or mix latents, decode.

`augment_batch` and `latent_mix_batch` are plain functions on ``[B, C, H, W]`` float images in
[0, 1]; the torchvision and albumentations adapters and the DataLoader helpers only draw their
parameters, convert types at their edges and call them. They work on any `Autoencoder`: images
of another size or channel count than the model's are converted for it and the result converted
back.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import warnings

import torch

from .hub import MODEL_KINDS, load_vae
from .latent import borrow_residual, feature_space_mix, perturb
from .models import Autoencoder, DiagonalGaussian
from .pixels import change_to_channels, convert_channels

PRECISIONS = {"bf16": torch.bfloat16, "fp16": torch.float16}  # autocast dtypes for `precision`
DEFAULT_STRENGTH = 0.2  # data-relative units: on MNIST ~96% of variants keep their label (benchmarks/quality.py)
# held-out reconstruction_r2 (`training.evaluate`) below which VAEAugment warns: the bundled MNIST VAE keeps 0.91
# of its test digits' variation; a VAE trained for seconds on 1,300 16x16 digits 0.24
FIDELITY_WARNING = 0.7
# checkpoints trained on fewer images are handled with care by default (`choose_defaults`): measured harmful on 1,258
# images, helpful on MNIST's 60,000; the threshold between is a judgement, not a measurement
SMALL_DATA_IMAGES = 10_000
# the strength chosen for such a checkpoint: on a folder of 1,258 16x16 digits (benchmarks/utility.py, validation split, 12 paired
# seeds) residual variants at p = 0.5 measured -0.4 points [-1.4, +0.6] against none at strength 0.2, +0.2 [-0.4, +0.8]
# at 0.1, and on the test split at 0.1 -0.2 [-0.5, +0.1] (at 0.2 in an earlier run: -1.6 [-3.0, -0.2])
CAREFUL_STRENGTH = 0.1


def reconstruction_fidelity(vae: Autoencoder) -> float | None:
    """The checkpoint's held-out ``reconstruction_r2`` (measured by `vae_augment.train`), or None when unmeasured."""
    fidelity = (vae.metrics.get("test") or {}).get("reconstruction_r2")
    return float(fidelity) if isinstance(fidelity, (int, float)) and math.isfinite(fidelity) else None


def training_images(vae: Autoencoder) -> int | None:
    """How many images the checkpoint was trained on (``train_images`` in its metrics), or None when unrecorded."""
    n = vae.metrics.get("train_images")
    return n if isinstance(n, int) and not isinstance(n, bool) else None


def choose_defaults(vae: Autoencoder, residual: bool | None, p: float | None = 1.0,
                    strength: float | None = DEFAULT_STRENGTH) -> tuple[bool, float, float]:
    """``residual``, ``p`` and ``strength`` as given; None chooses them from the checkpoint.

    A checkpoint is handled with care when its held-out reconstructions are blurry (``reconstruction_r2``
    below `FIDELITY_WARNING`) or it was trained on fewer than `SMALL_DATA_IMAGES` images: there
    ``residual=None`` becomes True (only the decoded change is added to the image, so its detail survives)
    ``p=None`` becomes 0.5 (half of the images stay real) and ``strength=None`` becomes `CAREFUL_STRENGTH`
    (0.1), and a warning says so. Elsewhere the plain mode, p = 1 and `DEFAULT_STRENGTH` (0.2). Measured
    on a small dataset of one's own (benchmarks/utility.py, a folder of 1,258 16x16 digits, a VAE trained by
    `vae-augment train`'s defaults, validation split): the plain mode at p = 1 cost 1.8 points against no
    augmentation, ``residual=True, p=0.5`` at strength 0.2 0.4 (1.6 on the test split), at 0.1 nothing
    measurable (test: -0.2 [-0.5, +0.1]): harmless, and no help; a VAE trained on MNIST's 60,000 images gains with the plain mode."""
    if residual is not None and not isinstance(residual, bool):  # bool("no") is True: refuse rather than guess
        raise TypeError(f"residual must be True, False or None (chosen from the checkpoint), got {residual!r}")
    fidelity = reconstruction_fidelity(vae)
    blurry = fidelity is not None and fidelity < FIDELITY_WARNING
    images = training_images(vae)
    small = images is not None and images < SMALL_DATA_IMAGES
    careful = blurry or small
    if careful:
        reasons = {"residual=True": "only the decoded change is added, so your images' detail survives",
                   "p=0.5": "half of the images stay real", f"strength={CAREFUL_STRENGTH}": "variants stay close to your images"}
        chosen = [name for name, value in (("residual=True", residual), ("p=0.5", p), (f"strength={CAREFUL_STRENGTH}", strength))
                  if value is None]
        advice = (f"{' and '.join(filter(None, [', '.join(chosen[:-1]), chosen[-1]]))} {'was' if len(chosen) == 1 else 'were'} chosen for you "
                  f"({'; '.join(reasons[name] for name in chosen)}); " if chosen else "")
        if residual is False:
            advice += f"use residual=True ({reasons['residual=True']}), "
        if blurry:
            why = (f"this checkpoint's reconstructions keep only {fidelity:.0%} of its held-out images' variation "
                   f"(reconstruction_r2 {fidelity:.2f}; below {FIDELITY_WARNING:.0%} variants are blurrier than the "
                   "images and can make a classifier worse)")
        else:
            why = (f"this checkpoint was trained on {images:,} images (fewer than {SMALL_DATA_IMAGES:,}): on a small dataset of "
                   "one's own (1,258 16x16 digits) a VAE's variants measured up to 2 points below no augmentation "
                   "(docs/benchmarks.md#does-it-help)")
        warnings.warn(f"{why}: {advice}lower the strength, or train the VAE longer, on more images or from one trained on similar "
                      "images (vae-augment train --init), and compare "
                      "against no augmentation on a validation split", UserWarning, stacklevel=3)
    return ((careful if residual is None else bool(residual)), ((0.5 if careful else 1.0) if p is None else p),
            ((CAREFUL_STRENGTH if careful else DEFAULT_STRENGTH) if strength is None else strength))


def choose_residual(vae: Autoencoder, residual: bool | None) -> bool:
    """``residual`` as given, or chosen from the checkpoint (see `choose_defaults`; for adapters whose ``p``
    is their own)."""
    return choose_defaults(vae, residual)[0]


# ------------------------------------------------------------------ the model
def as_model(vae) -> Autoencoder:
    """A model, a checkpoint spec (bundled name, folder, Hub id) or a diffusers autoencoder object (of
    which a copy is wrapped, so the caller's keeps its mode and dtype) -> an `Autoencoder`."""
    if isinstance(vae, Autoencoder):
        return vae
    if isinstance(vae, (str, os.PathLike)):
        return load_vae(vae)
    if any(kind.wraps(vae) for kind in MODEL_KINDS):
        return load_vae(copy.deepcopy(vae))
    raise TypeError("vae must be a vae_augment model (VAE, DiffusersVAE), a diffusers AutoencoderKL/AutoencoderTiny, or a "
                    f"checkpoint name/folder/Hub id, got {type(vae).__name__}")


def check_device(device) -> torch.device:
    """``device`` as a `torch.device`, if it names one that exists on this machine; else a ValueError."""
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"device must be a torch device such as 'cpu' or 'cuda:0', got {device!r}") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (device.index or 0) >= count:
            here = f"cuda:0 to cuda:{count - 1}" if count else "no CUDA device"
            raise ValueError(f"device {str(device)!r} is not available on this machine (it has {here}; 'cpu' always works)")
        return device
    try:
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as err:
        raise ValueError(f"device {str(device)!r} is not available on this machine ({err}); 'cpu' always works") from None
    return device


def prepare_model(vae, device) -> Autoencoder:
    """The model to run; a model given for another device is copied there, never moved in place,
    so the caller's model (perhaps used elsewhere, or still training) is left as it was."""
    device = None if device is None else check_device(device)
    vae = as_model(vae)
    if device is not None and device != vae.device:
        vae = copy.deepcopy(vae).to(device)
    return vae


def check_mode_supported(vae: Autoencoder, mode: str) -> None:
    """Refuse a mode this model cannot do: one outside its ``modes``, "neighbour" without a latent bank,
    "posterior" on deterministic latents."""
    if mode not in vae.modes:
        raise ValueError(f"mode {mode!r} is not available for a {vae.kind} (its modes: {', '.join(vae.modes)}); "
                         "'class' needs flat latents, such as those of vae-augment's own VAEs")
    if mode == "neighbour" and vae.latent_bank is None:
        raise ValueError("mode 'neighbour' needs a checkpoint with a latent bank (latent_bank.safetensors, written by "
                         "vae-augment train); this model has none")
    if mode == "posterior" and vae.deterministic:
        raise ValueError(f"mode 'posterior' needs a posterior with a variance; this {vae.kind} has deterministic "
                         "latents: use mode='data'")


def check_precision(vae: Autoencoder, precision: str | None) -> None:
    if precision is not None and precision not in PRECISIONS:
        raise ValueError(f"precision must be None (float32), 'bf16' or 'fp16', got {precision!r}")
    if precision is not None and precision not in vae.precisions:
        raise ValueError(f"precision {precision!r} does not apply to a {vae.kind} (it supports "
                         f"{', '.join(map(repr, vae.precisions)) or 'none'}); a diffusers backbone takes dtype= when loaded")


def _autocast(vae: Autoencoder, precision: str | None):
    if precision is None:
        return contextlib.nullcontext()
    return torch.autocast(vae.device.type, dtype=PRECISIONS[precision])


# ------------------------------------------------------------------ images <-> model space
def to_model_space(vae: Autoencoder, x: torch.Tensor) -> torch.Tensor:
    """``[B, C, H, W]`` float images (C = 1, 3 or 4) -> the model's space (see `Autoencoder.to_model`)."""
    if x.shape[1] not in (1, 3, 4):
        raise ValueError(f"images must have 1 (gray), 3 (RGB) or 4 (RGBA) channels, got {x.shape[1]} (shape {tuple(x.shape)}; "
                         "image tensors are [C, H, W] or [B, C, H, W]: permute channels-last images first)")
    return vae.to_model(x)


def from_model_space(vae: Autoencoder, y: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Decoded model-space images -> the size and channels of ``like`` (RGB for RGBA: alpha is added back by the caller)."""
    return convert_channels(vae.from_model(y, like.shape[-2:]), 3 if like.shape[1] == 4 else like.shape[1])


def change_to_input(vae: Autoencoder, delta: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A change in model space -> the size and channels of ``like`` (a gray change applies to every colour)."""
    return change_to_channels(vae.from_model(delta, like.shape[-2:]), like.shape[1])


def latent_shape(vae: Autoencoder, size) -> tuple[int, ...]:
    """Shape of one latent (of the noise to draw) for an image of ``size = (H, W)`` (None: the model's own, if it has one)."""
    return tuple(vae.latent_shape(*size)) if size is not None else tuple(vae.latent_shape())


# ------------------------------------------------------------------ VAE augmentation
def augment_batch(vae: Autoencoder, x: torch.Tensor, noise: torch.Tensor, mode: str = "data", strength: float = DEFAULT_STRENGTH,
                  residual: bool = False, apply: torch.Tensor | None = None,
                  posterior: DiagonalGaussian | None = None, precision: str | None = None,
                  class_factor: torch.Tensor | None = None, prior: torch.Tensor | None = None) -> torch.Tensor:
    """Encode, perturb the latent, decode: the augmentation on ``x: [B, C, H, W]`` float in [0, 1].

    ``noise: [B, *latent_shape(vae, x.shape[-2:])]`` standard normal draws, ``[B, latent_dim]`` for a
    `VAE` (see `latent.perturb` for ``mode`` and ``strength``); ``apply: [B]`` bool chooses which
    images change (the rest are returned as they are). With ``residual``, the result is
    ``x + decode(z') - decode(mean)``: only the decoded change is added, so the original's sharp
    detail survives. Images of another size or channel count than the model's are converted for it
    and the result converted back. ``posterior`` (for the rows of ``x``) skips the encoder when
    already known. ``precision="bf16"`` (or ``"fp16"``, where the model lists it in ``precisions``)
    runs the model under autocast: about twice as fast on CPUs with AVX512-BF16 or AMX and on GPUs,
    with pixels a few 1/255 steps from the float32 result. ``class_factor`` ``[D, D]`` is the square
    root of the within-class covariance that ``mode="class"`` draws from (`VAEAugment.fit`). ``prior``
    (``mode="prior"``, the shape of ``noise``) is the prior sample to blend towards, e.g.
    ``vae.prior_sample(noise, generator)`` for a replayable draw of a mixture prior's components;
    default: ``vae.prior_sample(noise)`` (components from the global RNG). The
    result has ``x``'s dtype and device and is an ordinary tensor (usable by autograd downstream).
    """
    if x.ndim != 4:
        raise ValueError(f"x must be [B, C, H, W], got {tuple(x.shape)}")
    expected = (x.shape[0], *latent_shape(vae, x.shape[-2:]))
    if tuple(noise.shape) != expected:
        raise ValueError(f"noise must have shape {list(expected)} for x of shape {list(x.shape)}, got {list(noise.shape)}")
    if prior is not None and tuple(prior.shape) != expected:
        raise ValueError(f"prior must have the shape of noise, {list(expected)}, got {list(prior.shape)}")
    check_precision(vae, precision)
    with torch.inference_mode(), _autocast(vae, precision):
        out = _augment_batch(vae, x, noise, mode, strength, residual, apply, posterior, class_factor, prior)
    return out.clone()


def _augment_batch(vae, x, noise, mode, strength, residual, apply, posterior, class_factor, prior=None) -> torch.Tensor:
    rows = None  # None: every image changes (the fast path, no gather/scatter)
    if apply is not None and not bool(apply.all()):
        rows = apply.nonzero().squeeze(1)
        if rows.numel() == 0:
            return x.clone()
        noise = noise[rows.to(noise.device)]
        if prior is not None:
            prior = prior[rows.to(prior.device)]
        if posterior is not None:
            posterior = posterior[rows.to(posterior.mean.device)]
    if x.shape[0] == 0:
        return x.clone()
    selected = x if rows is None else x[rows.to(x.device)]
    device = vae.device
    if posterior is None:
        posterior = vae.encode(to_model_space(vae, selected.to(device, vae.latent_scale.dtype)))
    else:
        posterior = posterior.to(device)
    noise = noise.to(device, posterior.mean.dtype)
    if mode == "prior":
        noise = vae.prior_sample(noise) if prior is None else prior.to(device, posterior.mean.dtype)
    z = perturb(posterior.mean, posterior.std, noise, mode, strength, vae.latent_scale, vae.latent_bank, class_factor)
    result = _decode_to_input(vae, z, posterior.mean, selected, residual)
    if rows is None:
        return result
    out = x.clone()
    out[rows.to(x.device)] = result
    return out


def _decode_to_input(vae: Autoencoder, z: torch.Tensor, mean: torch.Tensor, like: torch.Tensor, residual: bool) -> torch.Tensor:
    """Decode ``z`` and bring it to ``like``'s size, channels (alpha kept) and dtype; with ``residual``,
    ``like`` plus the decoded change from ``mean`` to ``z``."""
    if residual:
        decoded = vae.decode(torch.cat([z, mean])).float()
        delta = change_to_input(vae, decoded[: z.shape[0]] - decoded[z.shape[0]:], like)
        return (like + delta.to(like)).clamp_(0, 1)
    result = from_model_space(vae, vae.decode(z), like).to(like)
    if like.shape[1] == 4:  # keep the alpha channel
        result = torch.cat([result, like[:, 3:]], 1)
    return result


# ------------------------------------------------------------------ same-class latent mixing
def latent_mix_batch(vae: Autoencoder, x: torch.Tensor, partner: torch.Tensor, lam: torch.Tensor, apply: torch.Tensor,
                     method: str = "extrapolate", residual: bool = False) -> torch.Tensor:
    """The tensor operation behind `LatentMix` on ``x: [B, C, H, W]`` float in [0, 1]: each image of
    ``apply`` moves its code relative to that of ``x[partner]`` by ``lam`` (see
    `latent.feature_space_mix`); returns an ordinary tensor."""
    with torch.inference_mode():
        out = x.clone()
        if x.shape[0] and apply.any():
            device = vae.device
            mean = vae.encode(to_model_space(vae, x.to(device))).mean
            z = feature_space_mix(mean, partner.to(device), lam.to(device), method)
            rows = apply.nonzero().squeeze(1)
            out[rows] = _decode_to_input(vae, z[rows.to(device)], mean[rows.to(device)], x[rows], residual)
    return out.clone()


# ------------------------------------------------------------------ variation borrowed from unlabelled codes
def latent_borrow_batch(vae: Autoencoder, x: torch.Tensor, donor: torch.Tensor, centre: torch.Tensor, strength: float,
                        apply: torch.Tensor, residual: bool = False) -> torch.Tensor:
    """The tensor operation behind `LatentBorrow` on ``x: [B, C, H, W]`` float in [0, 1]: each image of
    ``apply`` gets the code mean + strength * (donor - centre) (see `latent.borrow_residual`), ``donor``
    and ``centre`` ``[B, latent_dim]`` (a donor code of the image's class, that class's centre);
    returns an ordinary tensor."""
    with torch.inference_mode():
        out = x.clone()
        if x.shape[0] and apply.any():
            device = vae.device
            rows = apply.nonzero().squeeze(1)
            selected = x[rows]
            mean = vae.encode(to_model_space(vae, selected.to(device, vae.latent_scale.dtype))).mean
            z = borrow_residual(mean, donor[rows].to(mean), centre[rows].to(mean), strength)
            out[rows] = _decode_to_input(vae, z, mean, selected, residual)
    return out.clone()
