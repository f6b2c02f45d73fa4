"""The model interface every autoencoder kind implements, and the posterior they return.

`Autoencoder` is what the rest of the library (the augmentation, the DataLoader helpers, the
app, the command line) programs against; nothing above this layer asks which class a model is.
A kind supplies the few methods marked abstract; ``reconstruct``, ``sample``, ``interpolate``,
``traverse``, ``anomaly_score`` and ``calibrate`` are written once, here, in terms of them.

Two spaces: *images* are ``[B, C, H, W]`` floats in [0, 1] of any size and 1, 3 or 4 channels;
*model space* is what ``encode`` takes and ``decode`` returns, ``to_model(images)`` (the model's
channels, at ``working_size``, padded to a multiple of ``size_multiple``). ``from_model(y, size)``
undoes the geometry. Latents are ``[B, *latent_shape(H, W)]``.
"""

from __future__ import annotations

import itertools
import math
import numbers
from abc import ABC, abstractmethod
from typing import Any, ClassVar, Iterable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from ..latent import CODE_GRID, MODES, check_dims, column_mean_std, lerp_latents, shift_latents
from ..pixels import convert_channels, resize, resize_change


class DiagonalGaussian:
    """A diagonal Gaussian N(mean, diag(std^2)) over latents, one per image.

    ``mean`` and ``logvar`` are ``[B, D]`` (``[B, C, h, w]`` for spatial latents). The
    reparameterization ``mean + std * eps`` lives here and only here.
    """

    def __init__(self, mean: torch.Tensor, logvar: torch.Tensor):
        self.mean = mean
        # clamp keeps exp() finite for untrained or adversarial inputs; it never binds in practice
        self.logvar = logvar.clamp(-30.0, 20.0)
        self.std = torch.exp(0.5 * self.logvar)

    def __len__(self) -> int:
        return self.mean.shape[0]

    @property
    def var(self) -> torch.Tensor:
        return self.std.square()

    def sample(self, generator: torch.Generator | None = None, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Reparameterized sample z = mean + std * eps, eps ~ N(0, I); gradients flow to mean and std."""
        if noise is None:  # drawn where the generator lives (a CPU generator works with a CUDA model)
            device = generator.device if generator is not None else self.mean.device
            noise = torch.randn(self.mean.shape, generator=generator, device=device, dtype=self.mean.dtype).to(self.mean.device)
        return self.mean + self.std * noise

    def mode(self) -> torch.Tensor:
        return self.mean

    def kl_terms(self) -> torch.Tensor:
        """KL(q || N(0, I)) per latent dimension, in nats, the shape of ``mean``."""
        return 0.5 * (self.mean.square() + self.var - 1.0 - self.logvar)

    def kl(self) -> torch.Tensor:
        """KL(q || N(0, I)) in nats, ``[B]``.

        Closed form from Kingma & Welling (2013), Appendix B:
        -KL = 1/2 * sum_j (1 + log sigma_j^2 - mu_j^2 - sigma_j^2).
        """
        return self.kl_terms().flatten(1).sum(dim=1)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log q(z) in nats, summed over latent dimensions; ``z: [..., B, D]`` -> ``[..., B]``."""
        return (-0.5 * ((z - self.mean) / self.std).square() - 0.5 * self.logvar - 0.5 * math.log(2 * math.pi)).sum(-1)

    def __getitem__(self, index) -> "DiagonalGaussian":
        return DiagonalGaussian(self.mean[index], self.logvar[index])

    def to(self, *args, **kwargs) -> "DiagonalGaussian":
        return DiagonalGaussian(self.mean.to(*args, **kwargs), self.logvar.to(*args, **kwargs))


class Autoencoder(nn.Module, ABC):
    """The interface of a model vae-augment augments with.

    What a kind declares (class or instance attributes):

    - ``kind``: its name (``"VAE"``, ``"AutoencoderKL"``, ...), used in messages.
    - ``channels``: 1 or 3, the channels of model space.
    - ``deterministic``: True when the posterior has no variance (``mode="posterior"`` is refused).
    - ``score_unit``: the unit of ``anomaly_score``, shown next to every score.
    - ``usage_unit``: the unit of ``dimension_usage`` (how much an image uses each latent dimension).
    - ``modes``: the augmentation modes it supports (`latent.MODES`).
    - ``precisions``: the autocast precisions (``"bf16"``, ``"fp16"``) ``augment_batch`` may run it in.
    - ``has_elbo``: whether ``elbo``/``iw_nll`` (and so ``vae-augment eval``) are defined.
    - ``sample_size``: the ``(H, W)`` that ``sample`` decodes at by default.
    - ``size_multiple``: model-space sides are padded to a multiple of this.
    - buffers ``latent_loc``/``latent_scale`` (broadcastable against one latent): the location and
      spread of posterior means over the training data, written by ``calibrate``; ``"data"`` mode
      measures strength in units of ``latent_scale``.
    - ``latent_bank``: ``[N, D]`` training codes for ``"neighbour"`` mode, or None.

    Metadata set by whoever loads or trains the model: ``metrics`` (training figures, from
    metrics.json), ``name_or_path`` (the spec it was loaded from, or None) and ``load_options``
    (what else it takes to load it again from ``name_or_path``: ``revision``, ``subfolder``).
    """

    kind: str = "autoencoder"
    deterministic: bool = False
    score_unit: ClassVar[str] = ""  # required: checked when a model is made
    usage_unit: ClassVar[str] = ""  # required
    modes: ClassVar[tuple[str, ...]] = MODES
    precisions: ClassVar[tuple[str, ...]] = ()
    has_elbo: ClassVar[bool] = False
    size_multiple: int = 1
    channels: int
    sample_size: tuple[int, int]
    latent_loc: torch.Tensor
    latent_scale: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        missing = [name for name in ("score_unit", "usage_unit") if not getattr(self, name)]
        if missing:
            raise TypeError(f"{type(self).__name__} must declare {' and '.join(missing)}: the app shows every score in its unit")
        self.metrics: dict[str, Any] = {}
        self.name_or_path: str | None = None
        self.load_options: dict[str, Any] = {}
        self.latent_bank: torch.Tensor | None = None

    def _apply(self, fn, *args, **kwargs):
        # the latent bank is not a buffer (it stays out of the state dict) but moves with the model,
        # so the "neighbour" mode never copies it per call
        super()._apply(fn, *args, **kwargs)
        if self.latent_bank is not None:
            self.latent_bank = fn(self.latent_bank)
        return self

    # ------------------------------------------------------------------ what a kind supplies
    @abstractmethod
    def encode(self, x: torch.Tensor) -> DiagonalGaussian:
        """Posterior q(z|x) for model-space ``x`` (see `to_model`)."""

    @abstractmethod
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latents ``[B, *latent_shape]`` -> model-space images in [0, 1]."""

    @abstractmethod
    def latent_shape(self, height: int | None = None, width: int | None = None) -> tuple[int, ...]:
        """Shape of one latent for an image of ``height x width`` (a model whose latents depend on the
        size raises ValueError without one)."""

    def code_size(self) -> int:
        """The length of one image's code (`latent.pooled_codes`), what class statistics, LatentBorrow's donors
        and pseudo-labels work on: the latent dimension of flat latents; ``C * CODE_GRID**2`` for spatial
        ``[C, h, w]`` ones, whatever the image size."""
        shape = self.latent_shape(*self.sample_size)
        return int(shape[0]) if len(shape) == 1 else int(shape[0]) * CODE_GRID**2

    @abstractmethod
    def working_size(self, height: int, width: int) -> tuple[int, int]:
        """The size an image of ``height x width`` is processed at (before padding)."""

    @abstractmethod
    def prior_sample(self, noise: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Standard normal ``noise`` (the shape of a latent batch) -> a sample of the model's prior; a prior
        with discrete parts (a mixture's component) draws them with ``generator`` (default: the global RNG)."""

    @abstractmethod
    def score_model_space(self, x: torch.Tensor, posterior: DiagonalGaussian, area: tuple[int, int] | None = None
                          ) -> tuple[torch.Tensor, torch.Tensor]:
        """Anomaly score ``[B]`` (in ``score_unit``) of model-space ``x`` and its reconstruction
        (model space), from its ``posterior``; ``area = (h, w)``: the image's part of ``x``, the rest padding."""

    @abstractmethod
    def dimension_usage(self, posterior: DiagonalGaussian) -> torch.Tensor:
        """How much the first image of ``posterior`` uses each latent dimension that ``traverse`` moves,
        ``[K]`` in ``usage_unit``."""

    @abstractmethod
    def describe(self) -> str:
        """One line on what the model takes and how its latents look."""

    @abstractmethod
    def save_pretrained(self, save_directory) -> None:
        """Write the model's checkpoint folder (see `vae_augment.checkpoint`) as one unit."""

    # ------------------------------------------------------------------ how the loader finds and reads this kind
    checkpoint_files: ClassVar[tuple[str, ...]] = ()  # downloaded from the Hub, in this order (a missing one is an error)
    optional_files: ClassVar[tuple[str, ...]] = ()  # downloaded when the repo has them

    @classmethod
    @abstractmethod
    def claims(cls, config: dict[str, Any]) -> bool:
        """Whether a checkpoint folder whose config.json holds ``config`` is of this kind."""

    @classmethod
    def check_config(cls, config: dict[str, Any], where: str) -> None:
        """Raise a clear error, before any weights are downloaded, for a config of this kind that cannot be loaded."""

    @classmethod
    @abstractmethod
    def from_folder(cls, folder, config: dict[str, Any] | None = None, *, device=None, **options) -> "Autoencoder":
        """Build the model from a local checkpoint folder (`vae_augment.checkpoint` names its files)."""

    @classmethod
    def wraps(cls, module: Any) -> bool:
        """Whether ``module``, a model object of another library, is one this kind wraps (see `from_module`)."""
        return False

    @classmethod
    def from_module(cls, module: Any, **options) -> "Autoencoder":
        raise TypeError(f"{cls.__name__} does not wrap {type(module).__name__} objects")

    # ------------------------------------------------------------------ common properties
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    # ------------------------------------------------------------------ images <-> model space
    def to_model(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``[B, C, H, W]`` in [0, 1] (C = 1, 3 or 4) -> model space: the model's channels (gray <->
        RGB), resized to `working_size`, padded (replicating the edge) to a multiple of ``size_multiple``."""
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise TypeError(f"images must be a float tensor in [0, 1], got {f'dtype {x.dtype}' if isinstance(x, torch.Tensor) else type(x).__name__}"
                            " (divide uint8 images by 255)")
        x = convert_channels(x.float(), self.channels)  # float64 images too: models compute in float32 (or autocast)
        h, w = self.working_size(*x.shape[-2:])
        x = resize(x, (h, w))
        pad_h, pad_w = -h % self.size_multiple, -w % self.size_multiple
        if pad_h or pad_w:  # replicate, not zeros: a black border would leak into the image's edge
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        return x

    def from_model(self, y: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        """Undo the geometry of `to_model` for an image of ``size = (H, W)``: crop the padding, resize back.
        Works on images and on signed changes (nothing is clamped); channels stay the model's."""
        h, w = self.working_size(*size)
        return resize_change(y[..., :h, :w].float(), size)  # float: CPUs have no bfloat16 antialiased resize

    # ------------------------------------------------------------------ written once for every kind
    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """decode(posterior mean) of images ``x: [B, C, H, W]``, at their size, in the model's channels."""
        return self.from_model(self.decode(self.encode(self.to_model(x)).mean), x.shape[-2:])

    @torch.no_grad()
    def score_and_reconstruct(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`anomaly_score` and `reconstruct` of images ``x`` from one encode and one decode."""
        x_m = self.to_model(x)
        score, reconstruction = self.score_model_space(x_m, self.encode(x_m), self.working_size(*x.shape[-2:]))
        return score, self.from_model(reconstruction, x.shape[-2:])

    @torch.no_grad()
    def anomaly_score(self, x: torch.Tensor) -> torch.Tensor:
        """How unusual each image of ``x: [B, C, H, W]`` is to the model, ``[B]`` in ``score_unit``; higher = more."""
        x_m = self.to_model(x)
        return self.score_model_space(x_m, self.encode(x_m), self.working_size(*x.shape[-2:]))[0]

    def anomaly_percentile(self, scores: torch.Tensor) -> torch.Tensor:
        """Where anomaly ``scores`` fall among the training set's, as a percentile in [0, 100].

        Needs ``train_anomaly_percentiles`` in ``metrics`` (written by `vae_augment.train`).
        """
        reference = (self.metrics or {}).get("train_anomaly_percentiles")
        if not reference:
            raise ValueError(f"this {self.kind} has no train_anomaly_percentiles in its metrics (vae-augment train records "
                             "them for the VAEs it trains; vae_augment.training.reference_statistics computes them); compare "
                             "scores between your own images instead")
        grid = torch.tensor(reference, dtype=torch.float64)
        levels = torch.linspace(0, 100, len(reference), dtype=torch.float64)
        s = scores.detach().double().cpu().reshape(-1)
        index = torch.searchsorted(grid, s).clamp(1, len(reference) - 1)
        lo, hi = grid[index - 1], grid[index]
        frac = ((s - lo) / (hi - lo).clamp_min(1e-12)).clamp(0, 1)
        return (levels[index - 1] + frac * (levels[index] - levels[index - 1])).float().reshape(scores.shape)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, temperature: float = 1.0,
               size: Sequence[int] | None = None) -> torch.Tensor:
        """``n`` images of ``size`` (default ``sample_size``) decoded from prior samples at ``temperature``
        (the prior's noise scaled by it), ``[n, C, H, W]`` in [0, 1]."""
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
            raise ValueError(f"n must be an int >= 0, got {n!r}")
        n = int(n)
        if not temperature >= 0:
            raise ValueError(f"temperature must be >= 0, got {temperature!r}")
        size = tuple(size or self.sample_size)
        device = generator.device if generator is not None else self.device
        noise = torch.randn(n, *self.latent_shape(*size), generator=generator, device=device).to(self.device)
        return self.from_model(self.decode(self.prior_sample(temperature * noise, generator)), size)

    @torch.no_grad()
    def interpolate(self, x0: torch.Tensor, x1: torch.Tensor, steps: int = 8, method: str = "linear") -> torch.Tensor:
        """Decode codes on the path between the posterior means of ``x0`` and ``x1`` (images of one shape).

        ``[C, H, W]`` -> ``[steps, C, H, W]``; ``[B, C, H, W]`` -> ``[B, steps, C, H, W]``. ``method`` is
        ``"linear"`` or ``"slerp"`` (spherical, which keeps the norm typical of the prior).
        """
        if steps < 2:
            raise ValueError(f"steps must be >= 2, got {steps}")
        single = x0.ndim == 3
        x0, x1 = (x0.unsqueeze(0), x1.unsqueeze(0)) if single else (x0, x1)
        if x0.shape != x1.shape:
            raise ValueError(f"x0 and x1 must have the same shape, got {tuple(x0.shape)} and {tuple(x1.shape)}")
        z0, z1 = self.encode(self.to_model(x0)).mean, self.encode(self.to_model(x1)).mean
        t = torch.linspace(0, 1, steps, device=z0.device, dtype=z0.dtype)
        z = lerp_latents(z0.flatten(1), z1.flatten(1), t, method)  # [B, steps, N]
        images = self.decode(z.flatten(0, 1).view(-1, *z0.shape[1:]))
        images = self.from_model(images, x0.shape[-2:]).unflatten(0, (x0.shape[0], steps))
        return images[0] if single else images

    @torch.no_grad()
    def traverse(self, x: torch.Tensor, dims: Sequence[int], values) -> torch.Tensor:
        """Decode the posterior mean of the image ``x: [C, H, W]`` with one latent dimension at a time moved.

        ``dims``: K indices into the first axis of a latent (a dimension of a flat latent, a channel,
        at every position, of a spatial one); ``values``: offsets added along each, ``[T]`` (the same
        for every dimension) or ``[K, T]``, in latent units (multiply by ``latent_scale`` for units
        of the data's spread) -> ``[K, T, C, H, W]``.
        """
        mean = self.encode(self.to_model(x.unsqueeze(0))).mean[0]
        check_dims(dims, mean.shape[0], "latent dimensions" if mean.ndim == 1 else "latent channels")
        z = shift_latents(mean, dims, values)  # [K, T, *latent]
        return self.from_model(self.decode(z.flatten(0, 1)), x.shape[-2:]).unflatten(0, z.shape[:2])

    @torch.no_grad()
    def calibrate(self, batches: Iterable[torch.Tensor], max_batches: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Measure the location and spread of posterior means over ``batches`` of images (``[B, C, H, W]``
        in [0, 1]) per latent dimension (per channel, over all positions, for spatial latents), so that
        ``"data"`` strength is in units of this data's variation; stored in ``latent_loc``/``latent_scale``
        and written by ``save_pretrained``."""
        codes = (self.encode(self.to_model(x.to(self.device))).mean.movedim(1, -1).flatten(0, -2)  # [N, D] or [N positions, C]
                 for x in itertools.islice(batches, max_batches))
        loc, scale = column_mean_std(codes, "calibrate needs at least 2 latent values per dimension (2 images, or "
                                            "one image of a model with spatial latents)")
        self.latent_loc.copy_(loc.float().view_as(self.latent_loc))
        self.latent_scale.copy_(scale.float().clamp_min(1e-6).view_as(self.latent_scale))
        return self.latent_loc, self.latent_scale
