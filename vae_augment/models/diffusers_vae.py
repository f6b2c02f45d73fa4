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

import importlib.util
import math
import os
import threading
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import atomic, checkpoint
from .base import Autoencoder, DiagonalGaussian

KINDS = ("AutoencoderKL", "AutoencoderTiny")
DEFAULT_MAX_PIXELS = 1024 * 1024  # larger images are processed at this many pixels (see `DiffusersVAE`)
DETERMINISTIC_LOGVAR = -30.0  # TAESD has no posterior variance; std = exp(-15), i.e. a point
DEFAULT_MAX_BATCH = 8  # images per encoder/decoder call: the SD autoencoder needs ~1-2 GB per 512x512 image
_UPCAST_LOCK = threading.Lock()  # the float16 -> float32 switch happens once, even with app threads sharing a model


def require_diffusers():
    """The diffusers package (an optional extra), or an ImportError that says how to install it."""
    try:
        import diffusers
    except ImportError:
        raise ImportError("pretrained diffusers autoencoders need diffusers: pip install 'vae-augment[diffusers]'") from None
    return diffusers


class DiffusersVAE(Autoencoder):
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

    It implements `Autoencoder`: model space is the autoencoder's channels at `working_size`, padded
    to a multiple of ``downscale``; latents are spatial, ``[C_latent, h / f, w / f]``; ``traverse``
    moves one latent channel at every position; the anomaly score is a reconstruction error.
    """

    score_unit = "mean squared error per pixel x 1000"
    usage_unit = "spread over the image (data units)"
    sample_size = (256, 256)
    checkpoint_files = (checkpoint.CONFIG_NAME, checkpoint.DIFFUSERS_WEIGHTS)
    optional_files = (checkpoint.STATS_NAME,)

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
        self.latent_channels = int(config.latent_channels)
        blocks = config.block_out_channels if kind == "AutoencoderKL" else config.encoder_block_out_channels
        self.downscale = self.size_multiple = 2 ** (len(blocks) - 1)
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
        if dtype is None:
            dtype = torch.float16 if next(autoencoder.parameters()).is_cuda else torch.float32
        if dtype != self.dtype:
            self.autoencoder.to(dtype)
        self.eval()  # like the autoencoder it wraps (and as load_vae promises)

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

    def latent_shape(self, height: int | None = None, width: int | None = None) -> tuple[int, int, int]:
        """Shape of the latent of one ``height x width`` image: ``(C, ceil(h / f), ceil(w / f))``."""
        if height is None or width is None:
            raise ValueError(f"the latents of a diffusers {self.kind} depend on the image size: give the size (H, W) of "
                             "the images to draw noise for")
        h, w = self.working_size(height, width)
        return self.latent_channels, -(-h // self.downscale), -(-w // self.downscale)

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
        if x.shape[0] == 0:  # the autoencoders' attention blocks cannot reshape an empty batch
            empty = x.new_zeros(0, self.latent_channels, x.shape[-2] // self.downscale, x.shape[-1] // self.downscale)
            return DiagonalGaussian(empty, empty.clone())
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
        if z.shape[0] == 0:
            return z.new_zeros(0, self.channels, z.shape[-2] * self.downscale, z.shape[-1] * self.downscale).float()
        z = z / self.scaling_factor + self.shift_factor
        return self._run(lambda v: self.autoencoder.decode(v).sample, z).add_(1).div_(2).clamp_(0, 1)

    def prior_sample(self, noise: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Standard normal ``noise`` -> latents with the (calibrated) data statistics, N(latent_loc, latent_scale^2):
        these autoencoders have no prior of their own (their KL weight was near zero)."""
        return self.latent_loc + self.latent_scale * noise

    def score_model_space(self, x: torch.Tensor, posterior: DiagonalGaussian, area: tuple[int, int] | None = None
                          ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean squared reconstruction error per pixel of the image (x 1000; padding excluded), ``[B]``: these
        autoencoders have no meaningful KL term, so unlike the VAE's score this is not an ELBO."""
        reconstruction = self.decode(posterior.mean)
        h, w = area or x.shape[-2:]
        return (reconstruction - x)[..., :h, :w].square().flatten(1).mean(1) * 1000, reconstruction

    def dimension_usage(self, posterior: DiagonalGaussian) -> torch.Tensor:
        """How much each latent channel varies over the first image, in units of the data's spread (their
        KL is meaningless: these autoencoders were not trained with one), ``[C_latent]``."""
        return posterior.mean[0].flatten(1).std(1) / self.latent_scale.flatten()

    def describe(self) -> str:
        return (f"{'gray' if self.channels == 1 else 'RGB'} images of any size, a pretrained diffusers {self.kind} with "
                f"{self.latent_channels} latent channels per {self.downscale}x{self.downscale} pixels")

    # ------------------------------------------------------------------ persistence
    @classmethod
    def claims(cls, config: dict[str, Any]) -> bool:
        """Whether a folder's config.json is one of this kind (the loader's kind table asks)."""
        return checkpoint.is_diffusers_config(config)

    @classmethod
    def check_config(cls, config: dict[str, Any], where: str) -> None:
        """Refuse, before any weights are downloaded, a diffusers model that is not an autoencoder (a UNet
        can be gigabytes), and say how to install diffusers when it is missing."""
        if config.get("_class_name") not in KINDS:
            raise checkpoint.CheckpointError(f"{where} holds a diffusers {config.get('_class_name') or 'model'}; vae-augment uses "
                                             f"diffusers {' and '.join(KINDS)} (for a full pipeline, pass subfolder='vae')")
        require_diffusers()

    @classmethod
    def wraps(cls, module: Any) -> bool:
        """Whether ``module`` is a diffusers autoencoder object this class wraps."""
        return type(module).__name__ in KINDS

    @classmethod
    def from_module(cls, module: Any, *, device: str | torch.device | None = None, **options) -> "DiffusersVAE":
        """Wrap a diffusers autoencoder object (moved to ``device`` first); ``options`` go to the constructor."""
        return cls(module if device is None else module.to(device), **options)

    @classmethod
    def from_folder(cls, folder: str | os.PathLike, config: dict[str, Any] | None = None, *, device: str | torch.device | None = None,
                    dtype: torch.dtype | None = None, max_pixels: int | None | str = "saved", tiling: bool | None = None,
                    max_batch: int = DEFAULT_MAX_BATCH, **unused) -> "DiffusersVAE":
        """A local diffusers autoencoder folder -> `DiffusersVAE` (safetensors only; pickle weights are refused).
        ``max_pixels`` and ``tiling`` not given come from the folder's ``vae_augment.json``, else the defaults."""
        folder = Path(folder)
        config = checkpoint.read_config(folder) if config is None else config
        cls.check_config(config, repr(str(folder)))
        kind = config["_class_name"]
        if not (folder / checkpoint.DIFFUSERS_WEIGHTS).is_file():
            pickles = checkpoint.pickle_files(folder)
            what = f"offers only pickle weights ({', '.join(pickles)})" if pickles else f"has no {checkpoint.DIFFUSERS_WEIGHTS}"
            raise checkpoint.CheckpointError(f"diffusers folder {str(folder)!r} {what}; {checkpoint.PICKLE_REASON}")
        stats = checkpoint.read_statistics(folder)
        diffusers = require_diffusers()
        # read in float16 straight away where DiffusersVAE would choose it (dtype None on CUDA)
        load_dtype = dtype or (torch.float16 if device is not None and torch.device(device).type == "cuda" else torch.float32)
        try:
            autoencoder = getattr(diffusers, kind).from_pretrained(folder, use_safetensors=True, torch_dtype=load_dtype,
                                                                   low_cpu_mem_usage=importlib.util.find_spec("accelerate") is not None)
        except (OSError, ValueError, RuntimeError) as err:
            raise checkpoint.CheckpointError(f"cannot load the diffusers {kind} in {str(folder)!r}: {err}") from None
        checkpoint.check_finite(autoencoder.state_dict(), folder / checkpoint.DIFFUSERS_WEIGHTS)
        if device is not None:
            autoencoder.to(device)
        if max_pixels == "saved":
            max_pixels = stats.get("max_pixels", DEFAULT_MAX_PIXELS)
        if tiling is None:
            tiling = bool(stats.get("tiling", False))
        model = cls(autoencoder, max_pixels=max_pixels, tiling=tiling, dtype=dtype, max_batch=max_batch)
        if "latent_loc" in stats:
            if stats["latent_loc"].numel() != model.latent_channels:
                raise checkpoint.CheckpointError(f"{str(folder / checkpoint.STATS_NAME)!r} must hold {model.latent_channels} "
                                                 f"latent_loc and latent_scale values, got {stats['latent_loc'].numel()}")
            model.latent_loc.copy_(stats["latent_loc"].view_as(model.latent_loc))
            model.latent_scale.copy_(stats["latent_scale"].view_as(model.latent_scale))
        model.name_or_path = str(folder)
        return model

    def save_pretrained(self, save_directory: str | os.PathLike) -> None:
        """The diffusers files (config.json + diffusion_pytorch_model.safetensors) and ``vae_augment.json``
        (latent statistics, max_pixels, tiling); `load_vae` reads the folder back. The files are written as
        one unit: an interrupted save leaves the previous ones intact."""
        # diffusers deletes old weight shards only in the folder it writes to (here the empty stage);
        # staged_folder removes them, and a VAE's files, from the folder
        with atomic.staged_folder(save_directory, remove=checkpoint.SAVED_FILES) as stage:
            self.autoencoder.save_pretrained(stage, safe_serialization=True)
            checkpoint.write_statistics(stage, self.latent_loc, self.latent_scale, max_pixels=self.max_pixels, tiling=self.tiling)
