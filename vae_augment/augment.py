"""The functional core of augmentation on image batches: encode, perturb or mix latents, decode.

`augment_batch`, `latent_mix_batch` and `latent_borrow_batch` are plain functions on
``[B, C, H, W]`` float images in [0, 1] and an `Autoencoder` (never a checkpoint name: resolving
one is the adapters' job, in `transform_base`); the torchvision and albumentations adapters and
the DataLoader helpers only draw their parameters, convert types at their edges and call them.
Images of another size or channel count than the model's are converted for it and the result
converted back, in one place: `encode_images` on the way in, `decode_to_input` on the way out.
"""

from __future__ import annotations

import contextlib
import itertools

import torch

from .latent import borrow_residual, feature_space_mix, perturb, pooled_codes
from .models import Autoencoder, DiagonalGaussian
from .pixels import change_to_channels, convert_channels, image_to_float
from .policy import DEFAULT_STRENGTH

PRECISIONS = {"bf16": torch.bfloat16, "fp16": torch.float16}  # autocast dtypes for `precision`


def check_mode_supported(vae: Autoencoder, mode: str) -> None:
    """Refuse a mode this model cannot do: one outside its ``modes``, "neighbour" without a latent bank,
    "posterior" on deterministic latents."""
    if mode not in vae.modes:
        raise ValueError(f"mode {mode!r} is not available for a {vae.kind} (its modes: {', '.join(vae.modes)})")
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


# ------------------------------------------------------------------ images <-> model space (the one round trip)
def to_model_space(vae: Autoencoder, x: torch.Tensor) -> torch.Tensor:
    """``[B, C, H, W]`` float images (C = 1, 3 or 4) -> the model's space (see `Autoencoder.to_model`)."""
    if x.shape[1] not in (1, 3, 4):
        raise ValueError(f"images must have 1 (gray), 3 (RGB) or 4 (RGBA) channels, got {x.shape[1]} (shape {tuple(x.shape)}; "
                         "image tensors are [C, H, W] or [B, C, H, W]: permute channels-last images first)")
    return vae.to_model(x)


def encode_images(vae: Autoencoder, x: torch.Tensor) -> DiagonalGaussian:
    """The posteriors of ``x: [B, C, H, W]`` float images in [0, 1] (any size, 1, 3 or 4 channels, any device)."""
    return vae.encode(to_model_space(vae, x.to(vae.device, vae.latent_scale.dtype)))


def decode_to_input(vae: Autoencoder, z: torch.Tensor, mean: torch.Tensor, like: torch.Tensor, residual: bool) -> torch.Tensor:
    """Decode ``z`` and bring it to ``like``'s size, channels (alpha kept) and dtype; with ``residual``,
    ``like`` plus the decoded change from ``mean`` to ``z`` (a gray change applies to every colour)."""
    if residual:
        decoded = vae.decode(torch.cat([z, mean])).float()
        delta = change_to_channels(vae.from_model(decoded[: z.shape[0]] - decoded[z.shape[0]:], like.shape[-2:]), like.shape[1])
        return (like + delta.to(like)).clamp_(0, 1)
    decoded = vae.from_model(vae.decode(z), like.shape[-2:])
    result = convert_channels(decoded, 3 if like.shape[1] == 4 else like.shape[1]).to(like)
    if like.shape[1] == 4:  # keep the alpha channel
        result = torch.cat([result, like[:, 3:]], 1)
    return result


def latent_shape(vae: Autoencoder, size) -> tuple[int, ...]:
    """Shape of one latent (of the noise to draw) for an image of ``size = (H, W)`` (None: the model's own, if it has one)."""
    return tuple(vae.latent_shape(*size)) if size is not None else tuple(vae.latent_shape())


def noise_shape(vae: Autoencoder, size, mode: str) -> tuple[int, ...]:
    """Shape of the noise ``augment_batch`` takes per image of ``size = (H, W)`` in ``mode``: one latent's
    (`latent_shape`), except in ``"class"`` mode, where it is one code's, ``(vae.code_size(),)``."""
    return (vae.code_size(),) if mode == "class" else latent_shape(vae, size)


def encode_means(vae: Autoencoder, images, batch_size: int = 256) -> torch.Tensor:
    """Codes ``[N, D]`` (float32, CPU) of ``images``: ``[N, C, H, W]`` (uint8 or float in [0, 1]) or a sequence
    of PIL images / image tensors of their own sizes and modes; a code is the posterior mean, pooled to
    ``vae.code_size()`` values for spatial latents (`latent.pooled_codes`)."""
    n = images.shape[0] if isinstance(images, torch.Tensor) and images.ndim == 4 else len(images)
    codes = []
    with torch.inference_mode():
        for start in range(0, n, batch_size):
            chunk = images[start : start + batch_size]
            if isinstance(chunk, torch.Tensor) and chunk.ndim == 4:
                xs = [to_model_space(vae, image_to_float(chunk)[0].to(vae.device))]
            else:  # images of their own sizes and modes: each into the model's space first, one batch per run of a size
                xs = [to_model_space(vae, image_to_float(image)[0].to(vae.device)) for image in chunk]
                xs = [torch.cat(list(run)) for _, run in itertools.groupby(xs, key=lambda x: x.shape)]
            codes.extend(pooled_codes(vae.encode(x).mean).float().cpu() for x in xs)
    return torch.cat(codes) if codes else torch.zeros(0, vae.code_size())


def labelled_codes(vae: Autoencoder, images, labels, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and labels, or a dataset of (image, label) items (``labels`` None) -> codes ``[N, D]`` and labels ``[N]``."""
    if labels is None:
        items = [images[i] for i in range(len(images))]
        if not items or not all(isinstance(item, (tuple, list)) and len(item) >= 2 for item in items):
            raise ValueError("fit(dataset) needs a dataset of (image, label) items; or pass images and labels")
        images, labels = [item[0] for item in items], [int(item[1]) for item in items]
    labels = torch.as_tensor(labels).cpu()
    n = images.shape[0] if isinstance(images, torch.Tensor) and images.ndim == 4 else len(images)
    if labels.ndim != 1 or labels.shape[0] != n:
        raise ValueError(f"labels must be [N] class indices for N = {n} images, got shape {tuple(labels.shape)}")
    return encode_means(vae, images, batch_size), labels


# ------------------------------------------------------------------ VAE augmentation
def augment_batch(vae: Autoencoder, x: torch.Tensor, noise: torch.Tensor, mode: str = "data", strength: float = DEFAULT_STRENGTH,
                  residual: bool = False, apply: torch.Tensor | None = None,
                  posterior: DiagonalGaussian | None = None, precision: str | None = None,
                  class_factor: torch.Tensor | None = None, prior: torch.Tensor | None = None) -> torch.Tensor:
    """Encode, perturb the latent, decode: the augmentation on ``x: [B, C, H, W]`` float in [0, 1].

    ``noise: [B, *noise_shape(vae, x.shape[-2:], mode)]`` standard normal draws, ``[B, latent_dim]`` for a
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
    expected = (x.shape[0], *noise_shape(vae, x.shape[-2:], mode))
    if tuple(noise.shape) != expected:
        raise ValueError(f"noise must have shape {list(expected)} for x of shape {list(x.shape)} in mode {mode!r}, got {list(noise.shape)}")
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
    posterior = encode_images(vae, selected) if posterior is None else posterior.to(device)
    noise = noise.to(device, posterior.mean.dtype)
    if mode == "prior":
        noise = vae.prior_sample(noise) if prior is None else prior.to(device, posterior.mean.dtype)
    z = perturb(posterior.mean, posterior.std, noise, mode, strength, vae.latent_scale, vae.latent_bank, class_factor)
    result = decode_to_input(vae, z, posterior.mean, selected, residual)
    if rows is None:
        return result
    out = x.clone()
    out[rows.to(x.device)] = result
    return out


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
            mean = encode_images(vae, x).mean
            z = feature_space_mix(mean, partner.to(device), lam.to(device), method)
            rows = apply.nonzero().squeeze(1)
            out[rows] = decode_to_input(vae, z[rows.to(device)], mean[rows.to(device)], x[rows], residual)
    return out.clone()


# ------------------------------------------------------------------ variation borrowed from unlabelled codes
def latent_borrow_batch(vae: Autoencoder, x: torch.Tensor, donor: torch.Tensor, centre: torch.Tensor, strength: float,
                        apply: torch.Tensor, residual: bool = False) -> torch.Tensor:
    """The tensor operation behind `LatentBorrow` on ``x: [B, C, H, W]`` float in [0, 1]: each image of
    ``apply`` gets the code mean + strength * (donor - centre) (see `latent.borrow_residual`), ``donor``
    and ``centre`` ``[B, vae.code_size()]`` (a donor code of the image's class, that class's centre);
    returns an ordinary tensor."""
    with torch.inference_mode():
        out = x.clone()
        if x.shape[0] and apply.any():
            rows = apply.nonzero().squeeze(1)
            selected = x[rows]
            mean = encode_images(vae, selected).mean
            z = borrow_residual(mean, donor[rows].to(mean), centre[rows].to(mean), strength)
            out[rows] = decode_to_input(vae, z, mean, selected, residual)
    return out.clone()
