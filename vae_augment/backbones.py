"""Pretrained latent-diffusion autoencoders (diffusers) behind the library's VAE interface.

`DiffusersVAE` wraps a ``diffusers.AutoencoderKL`` (e.g. ``stabilityai/sd-vae-ft-mse``: latents
``[4, H/8, W/8]``, a diagonal Gaussian posterior) or ``diffusers.AutoencoderTiny``
(``madebyollin/taesd``: deterministic latents) so that `VAEAugment`, `LatentMix`, the albumentations
adapter and the app use it exactly like a `vae_augment.VAE`:

- images go in and come out as ``[B, 3, H, W]`` floats in [0, 1] of any size (the adapter maps them
  to the autoencoder's [-1, 1], pads to a multiple of its downscale factor and crops back);
- latents are *scaled* latents, ``(z - shift_factor) * scaling_factor``, which the diffusers
  configs choose so that latents of natural images have about unit variance: one unit of strength
  in ``"data"`` mode is therefore about the data's own spread, as for the library's VAEs.
  `calibrate` measures the per-channel spread on your images instead;
- the posterior of the SD autoencoder is almost a point (it was trained with a KL weight near
  1e-6, diffusers issue 9328) and TAESD's is one, so use ``mode="data"``, not ``"posterior"``.

Load one with ``load_vae("stabilityai/sd-vae-ft-mse")`` or ``load_vae("./folder")``; diffusers is an
optional extra: ``pip install 'vae-augment[diffusers]'``.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import threading
import warnings
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from .model import DiagonalGaussian, check_dims, column_mean_std, lerp_latents, shift_latents

KINDS = ("AutoencoderKL", "AutoencoderTiny")
DIFFUSERS_WEIGHTS = "diffusion_pytorch_model.safetensors"
DIFFUSERS_FILES = "diffusion_pytorch_model*"  # the weights in any format or sharding, stale after a new save
STATS_NAME = "vae_augment.json"  # calibrated latent statistics and options, next to the diffusers files
DEFAULT_MAX_PIXELS = 1024 * 1024  # larger images are processed at this many pixels (see `DiffusersVAE`)
DETERMINISTIC_LOGVAR = -30.0  # TAESD has no posterior variance; std = exp(-15), i.e. a point
DEFAULT_MAX_BATCH = 8  # images per encoder/decoder call: the SD autoencoder needs ~1-2 GB per 512x512 image
_UPCAST_LOCK = threading.Lock()  # the float16 -> float32 switch happens once, even with app threads sharing a model


def require_diffusers():
    try:
        import diffusers
    except ImportError:
        raise ImportError("pretrained diffusers autoencoders need diffusers: pip install 'vae-augment[diffusers]'") from None
    return diffusers


def _has_accelerate() -> bool:
    import importlib.util

    return importlib.util.find_spec("accelerate") is not None


def is_diffusers_config(config: dict[str, Any]) -> bool:
    return config.get("_class_name") in KINDS or "_diffusers_version" in config


class DiffusersVAE(nn.Module):
    """A diffusers ``AutoencoderKL`` or ``AutoencoderTiny`` used as a VAE for augmentation.

    Args:
        autoencoder: the diffusers model.
        max_pixels: images with more pixels are downscaled (aspect kept) before encoding and the
            result scaled back; with ``residual=True`` only the decoded change is upscaled, so the
            original's full-resolution detail survives. None: no bound.
        tiling: use diffusers' tiled encoding/decoding (bounded memory for very large images;
            implies no ``max_pixels`` bound).
        dtype: the autoencoder's dtype; default float16 on CUDA (also after ``.to("cuda")``),
            float32 otherwise. In float16 a batch whose output is not finite (the known fp16
            overflow of the SD autoencoders) is recomputed in float32, and the model stays in
            float32 from then on (with a warning).
        max_batch: images per encoder/decoder call (larger batches are split), bounding memory.

    The wrapper owns ``autoencoder`` (it is set to eval mode and may change dtype); `VAEAugment`
    given a diffusers model wraps a copy.

    The interface matches `vae_augment.VAE` where the app and transforms need it: ``channels``,
    ``image_size`` (None: any size), ``latent_shape``, ``encode``/``decode`` on model-space tensors,
    ``latent_scale``, ``reconstruct``, ``sample``, ``interpolate``, ``traverse``, ``anomaly_score``.
    """

    def __init__(self, autoencoder: nn.Module, max_pixels: int | None = DEFAULT_MAX_PIXELS, tiling: bool = False,
                 dtype: torch.dtype | None = None, max_batch: int = DEFAULT_MAX_BATCH):
        super().__init__()
        kind = type(autoencoder).__name__
        if kind not in KINDS:
            raise TypeError(f"autoencoder must be a diffusers {' or '.join(KINDS)}, got {kind}")
        if max_pixels is not None and (isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 64):
            raise ValueError(f"max_pixels must be an int >= 64 or None, got {max_pixels!r}")
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
            raise ValueError(f"max_batch must be a positive int, got {max_batch!r}")
        config = autoencoder.config
        if config.in_channels not in (1, 3) or config.out_channels != config.in_channels:
            raise ValueError(f"the autoencoder must map 1 or 3 channels to the same, got {config.in_channels} -> {config.out_channels}")
        self.autoencoder = autoencoder.eval().requires_grad_(False)
        self.kind = kind
        self.deterministic = kind == "AutoencoderTiny"
        self.channels = int(config.in_channels)
        self.image_size = None  # any size
        self.latent_channels = int(config.latent_channels)
        blocks = config.block_out_channels if kind == "AutoencoderKL" else config.encoder_block_out_channels
        self.downscale = 2 ** (len(blocks) - 1)
        self.scaling_factor = float(config.scaling_factor)
        self.shift_factor = float(getattr(config, "shift_factor", None) or 0.0)
        self.tiling = bool(tiling)
        self.max_batch = max_batch
        self.auto_dtype = dtype is None  # float16 whenever the model is on CUDA
        self.upcast = False  # set after a float16 overflow: float32 from then on
        self.max_pixels = None if tiling else max_pixels
        if tiling:
            autoencoder.enable_tiling()
        # per-channel location and spread of scaled latents ([C, 1, 1]), on the autoencoder's device;
        # ones until `calibrate`
        device = next(autoencoder.parameters()).device
        self.register_buffer("latent_loc", torch.zeros(self.latent_channels, 1, 1, device=device))
        self.register_buffer("latent_scale", torch.ones(self.latent_channels, 1, 1, device=device))
        self.latent_bank = None
        self.metrics: dict[str, Any] = {}
        if dtype is None:
            dtype = torch.float16 if next(autoencoder.parameters()).is_cuda else torch.float32
        if dtype != self.dtype:
            self.autoencoder.to(dtype)

    # ------------------------------------------------------------------ properties
    @property
    def device(self) -> torch.device:
        return next(self.autoencoder.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.autoencoder.parameters()).dtype

    def _apply(self, fn, *args, **kwargs):
        """Behind ``.to``/``.cuda``/``.cpu``/``.half`` (also of a parent module): with the automatic dtype,
        a move to CUDA switches to float16 and a move off it back to float32 (after a float16 overflow,
        float32 stays); a call that changes the dtype (``.half()``, ``.to(dtype)``) fixes it from then on.
        The latent statistics stay float32."""
        before = next(self.autoencoder.parameters()).dtype
        super()._apply(fn, *args, **kwargs)
        self.latent_loc.data, self.latent_scale.data = self.latent_loc.float(), self.latent_scale.float()
        if self.dtype != before:
            self.auto_dtype = False
        elif self.auto_dtype:
            wanted = torch.float16 if self.device.type == "cuda" and not self.upcast else torch.float32
            if self.dtype != wanted:
                self.autoencoder.to(wanted)
        return self

    def extra_repr(self) -> str:
        return f"kind={self.kind}, latent_channels={self.latent_channels}, downscale={self.downscale}, max_pixels={self.max_pixels}"

    # ------------------------------------------------------------------ geometry
    def working_size(self, height: int, width: int) -> tuple[int, int]:
        """The size an image of ``height x width`` is processed at: at most ``max_pixels`` pixels."""
        if self.max_pixels is None or height * width <= self.max_pixels:
            return height, width
        scale = math.sqrt(self.max_pixels / (height * width))
        return max(1, int(height * scale)), max(1, int(width * scale))

    def latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
        """Shape of the latent of one ``height x width`` image: ``(C, ceil(h / f), ceil(w / f))``."""
        h, w = self.working_size(height, width)
        return self.latent_channels, -(-h // self.downscale), -(-w // self.downscale)

    def to_model(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` in [0, 1] -> the model's channels (gray <-> RGB), bounded and padded to a multiple
        of the downscale factor."""
        from .data import convert_channels

        if x.shape[1] != self.channels:
            x = convert_channels(x, self.channels)
        h, w = self.working_size(*x.shape[-2:])
        if (h, w) != tuple(x.shape[-2:]):
            x = F.interpolate(x, size=(h, w), mode="bilinear", antialias=True, align_corners=False)
        pad_h, pad_w = -h % self.downscale, -w % self.downscale
        if pad_h or pad_w:  # replicate, not zeros: a black border would leak into the image's edge
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        return x

    def from_model(self, y: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        """Undo `to_model` for an image of ``size = (H, W)``: crop the padding, scale back."""
        h, w = self.working_size(*size)
        y = y[..., :h, :w]
        if (h, w) != tuple(size):
            y = F.interpolate(y, size=tuple(size), mode="bilinear", align_corners=False)
        return y

    # ------------------------------------------------------------------ core
    def check_input(self, x: torch.Tensor, name: str = "x") -> None:
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or not x.is_floating_point():
            raise ValueError(f"{name} must be a float tensor [B, C, H, W] in [0, 1], got {getattr(x, 'shape', type(x).__name__)}")
        if x.shape[1] != self.channels or x.shape[-2] % self.downscale or x.shape[-1] % self.downscale:
            raise ValueError(f"{name} must have {self.channels} channels and sides that are multiples of {self.downscale} "
                             f"(use to_model), got shape {tuple(x.shape)}")

    def _run(self, fn, x: torch.Tensor) -> torch.Tensor:
        """``fn`` in the autoencoder's dtype, ``max_batch`` images at a time; a float16 result that is not
        finite is recomputed in float32."""
        if x.shape[0] > self.max_batch:
            return torch.cat([self._run(fn, chunk) for chunk in x.split(self.max_batch)])
        dtype = self.dtype
        try:
            out = fn(x.to(dtype))
        except RuntimeError:
            if not (dtype == torch.float16 and self.upcast):  # not a race with another thread's switch to float32
                raise
            return fn(x.to(torch.float32)).float()
        if dtype == torch.float16 and not torch.isfinite(out).all():
            with _UPCAST_LOCK, torch.inference_mode(False):  # parameters made here must stay usable outside inference mode
                if self.dtype == torch.float16:
                    warnings.warn(f"{self.kind} overflowed in float16 (NaN/inf output); running it in float32 from now on. "
                                  "Pass dtype=torch.float32, or use an fp16-safe autoencoder (e.g. madebyollin/sdxl-vae-fp16-fix)",
                                  RuntimeWarning, stacklevel=3)
                    self.upcast = True
                    self.autoencoder.to(torch.float32)
            out = fn(x.to(torch.float32))
        return out.float()

    def encode(self, x: torch.Tensor) -> DiagonalGaussian:
        """Posterior over scaled latents for ``x: [B, C, H, W]`` in [0, 1] (sides multiples of ``downscale``);
        mean and logvar ``[B, C_latent, H / f, W / f]``."""
        self.check_input(x)
        if self.deterministic:
            mean = self._run(lambda v: self.autoencoder.encode(v * 2 - 1).latents, x)
            logvar = torch.full_like(mean, DETERMINISTIC_LOGVAR)
        else:
            moments = self._run(lambda v: self.autoencoder.encode(v * 2 - 1).latent_dist.parameters, x)
            mean, logvar = moments.chunk(2, dim=1)
            logvar = logvar + 2 * math.log(self.scaling_factor)
        return DiagonalGaussian((mean - self.shift_factor) * self.scaling_factor, logvar)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Scaled latents ``[B, C_latent, h, w]`` -> images ``[B, C, h * f, w * f]`` in [0, 1]."""
        z = z / self.scaling_factor + self.shift_factor
        return self._run(lambda v: self.autoencoder.decode(v).sample, z).add_(1).div_(2).clamp_(0, 1)

    # ------------------------------------------------------------------ the VAE API, at any size
    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """decode(posterior mean) of ``x: [B, C, H, W]`` in [0, 1], at the input's size (the model's channels)."""
        return self.from_model(self.decode(self.encode(self.to_model(x)).mean), x.shape[-2:])

    @torch.no_grad()
    def anomaly_score(self, x: torch.Tensor) -> torch.Tensor:
        """Mean squared reconstruction error per pixel (x 1000), ``[B]``; higher = more unusual. These
        autoencoders have no meaningful KL term, so unlike `VAE.anomaly_score` this is not an ELBO."""
        return self.score_and_reconstruct(x)[0]

    @torch.no_grad()
    def score_and_reconstruct(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`anomaly_score` and `reconstruct` of ``x`` from one pass through the autoencoder."""
        reconstruction = self.reconstruct(x)
        return (reconstruction - x).square().flatten(1).mean(1) * 1000, reconstruction

    def anomaly_percentile(self, scores: torch.Tensor) -> torch.Tensor:
        raise ValueError(f"a diffusers {self.kind} has no training anomaly percentiles; compare scores between your own images")

    def prior_sample(self, noise: torch.Tensor) -> torch.Tensor:
        """Standard normal ``noise`` -> latents with the (calibrated) data statistics, N(latent_loc, latent_scale^2):
        these autoencoders have no prior of their own (their KL weight was near zero)."""
        return self.latent_loc + self.latent_scale * noise

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, temperature: float = 1.0,
               size: Sequence[int] = (256, 256)) -> torch.Tensor:
        """``n`` images of ``size`` decoded from latents ~ N(latent_loc, (temperature * latent_scale)^2).
        Latent-diffusion autoencoders are not generative on their own: expect textures, not scenes."""
        if n < 0 or not temperature >= 0:
            raise ValueError(f"n must be >= 0 and temperature >= 0, got {n} and {temperature}")
        shape = self.latent_shape(*size)
        device = generator.device if generator is not None else self.device
        noise = torch.randn(n, *shape, generator=generator, device=device).to(self.device)
        return self.from_model(self.decode(self.prior_sample(temperature * noise)), size)

    @torch.no_grad()
    def interpolate(self, x0: torch.Tensor, x1: torch.Tensor, steps: int = 8, method: str = "linear") -> torch.Tensor:
        """Decode latents on the path between ``x0`` and ``x1`` (same size): ``[C, H, W]`` -> ``[steps, C, H, W]``,
        ``[B, C, H, W]`` -> ``[B, steps, C, H, W]``."""
        if steps < 2:
            raise ValueError(f"steps must be >= 2, got {steps}")
        single = x0.ndim == 3
        x0, x1 = (x0.unsqueeze(0), x1.unsqueeze(0)) if single else (x0, x1)
        if x0.shape != x1.shape:
            raise ValueError(f"x0 and x1 must have the same shape, got {tuple(x0.shape)} and {tuple(x1.shape)}")
        z0, z1 = self.encode(self.to_model(x0)).mean, self.encode(self.to_model(x1)).mean
        t = torch.linspace(0, 1, steps, device=z0.device)
        z = lerp_latents(z0.flatten(1), z1.flatten(1), t, method)  # [B, steps, N]
        images = self.decode(z.flatten(0, 1).view(-1, *z0.shape[1:]))
        images = self.from_model(images, x0.shape[-2:]).unflatten(0, (x0.shape[0], steps))
        return images[0] if single else images

    @torch.no_grad()
    def traverse(self, x: torch.Tensor, dims: Sequence[int], values: torch.Tensor) -> torch.Tensor:
        """Shift one latent *channel* at a time (uniformly over all positions) of ``x: [C, H, W]`` by
        ``values`` (``[T]`` or ``[K, T]``) -> ``[K, T, C, H, W]``."""
        check_dims(dims, self.latent_channels, "latent channels")
        z = shift_latents(self.encode(self.to_model(x.unsqueeze(0))).mean[0], dims, values)  # [K, T, C, h, w]
        images = self.decode(z.flatten(0, 1))
        return self.from_model(images, x.shape[-2:]).unflatten(0, z.shape[:2])

    @torch.no_grad()
    def calibrate(self, batches, max_batches: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Measure the per-channel mean and spread of scaled latent means over ``batches`` of images
        (``[B, C, H, W]`` in [0, 1], any size), so that ``"data"`` strength is in units of *your*
        data's variation; stored in ``latent_loc``/``latent_scale`` and written by `save_pretrained`."""
        codes = (self.encode(self.to_model(x.to(self.device))).mean.movedim(1, -1).flatten(0, -2)  # [N positions, C]
                 for x in itertools.islice(batches, max_batches))
        loc, scale = column_mean_std(codes, "calibrate needs at least one image")
        self.latent_loc.copy_(loc.float().view(-1, 1, 1))
        self.latent_scale.copy_(scale.float().clamp_min(1e-6).view(-1, 1, 1))
        return self.latent_loc, self.latent_scale

    # ------------------------------------------------------------------ persistence
    def save_pretrained(self, save_directory: str | os.PathLike) -> None:
        """The diffusers files (config.json + diffusion_pytorch_model.safetensors) and ``vae_augment.json``
        (latent statistics, max_pixels); `load_vae` reads the folder back. The files are written as one
        unit: an interrupted save leaves the previous ones intact."""
        from .hub import BANK_NAME, METRICS_NAME, WEIGHTS_NAME, atomic_write_json, staged_folder

        # diffusers deletes old weight shards only in the folder it writes to (here the empty stage)
        stale = (DIFFUSERS_FILES, WEIGHTS_NAME, BANK_NAME, METRICS_NAME)
        with staged_folder(save_directory, remove=stale) as stage:
            self.autoencoder.save_pretrained(stage, safe_serialization=True)
            atomic_write_json(stage / STATS_NAME, {
                "latent_loc": self.latent_loc.flatten().tolist(), "latent_scale": self.latent_scale.flatten().tolist(),
                "max_pixels": self.max_pixels, "tiling": self.tiling,
            })

    def load_statistics(self, path: str | os.PathLike) -> None:
        from .hub import CheckpointError

        try:
            stats = json.loads(Path(path).read_text(encoding="utf-8"))
            loc = torch.tensor(stats["latent_loc"], dtype=torch.float32).view(-1, 1, 1)
            scale = torch.tensor(stats["latent_scale"], dtype=torch.float32).view(-1, 1, 1)
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            raise CheckpointError(f"{str(path)!r} is not a valid {STATS_NAME} ({type(err).__name__}: {err})") from None
        if loc.shape != self.latent_loc.shape or scale.shape != self.latent_scale.shape or not bool((scale > 0).all()):
            raise CheckpointError(f"{str(path)!r} must hold {self.latent_channels} latent_loc values and as many positive "
                                  f"latent_scale values, got {loc.numel()} and {scale.numel()}")
        self.latent_loc.copy_(loc)
        self.latent_scale.copy_(scale)


def load_diffusers(folder: str | os.PathLike, config: dict[str, Any], device: str | torch.device | None = None,
                   dtype: torch.dtype | None = None, max_pixels: int | None | str = "saved", tiling: bool | None = None,
                   max_batch: int = DEFAULT_MAX_BATCH) -> DiffusersVAE:
    """A local diffusers autoencoder folder -> `DiffusersVAE` (safetensors only; pickle weights are refused).
    ``max_pixels`` and ``tiling`` not given come from the folder's ``vae_augment.json``, else the defaults."""
    from .hub import PICKLE_SUFFIXES, CheckpointError

    folder = Path(folder)
    kind = config.get("_class_name")
    if kind not in KINDS:
        raise CheckpointError(f"{str(folder)!r} holds a diffusers {kind or 'model'}; vae-augment uses diffusers "
                              f"{' and '.join(KINDS)} (for a full pipeline, pass its vae/ subfolder)")
    if not (folder / DIFFUSERS_WEIGHTS).is_file():
        pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
        what = f"offers only pickle weights ({', '.join(pickles)})" if pickles else f"has no {DIFFUSERS_WEIGHTS}"
        raise CheckpointError(f"diffusers folder {str(folder)!r} {what}; vae-augment loads weights only from safetensors "
                              "because unpickling a file can run arbitrary code")
    diffusers = require_diffusers()
    # read in float16 straight away where DiffusersVAE would choose it (dtype None on CUDA)
    load_dtype = dtype or (torch.float16 if device is not None and torch.device(device).type == "cuda" else torch.float32)
    try:
        autoencoder = getattr(diffusers, kind).from_pretrained(folder, use_safetensors=True, torch_dtype=load_dtype,
                                                               low_cpu_mem_usage=_has_accelerate())
    except (OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"cannot load the diffusers {kind} in {str(folder)!r}: {err}") from None
    if device is not None:
        autoencoder.to(device)
    stats = folder / STATS_NAME
    options = {}
    if stats.is_file():
        try:
            options = json.loads(stats.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            options = {}
    if max_pixels == "saved":
        max_pixels = options.get("max_pixels", DEFAULT_MAX_PIXELS)
    if tiling is None:
        tiling = bool(options.get("tiling", False))
    model = DiffusersVAE(autoencoder, max_pixels=max_pixels, tiling=tiling, dtype=dtype, max_batch=max_batch)
    if stats.is_file():
        model.load_statistics(stats)
    return model
