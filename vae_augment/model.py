"""The convolutional VAE: encoder -> diagonal Gaussian posterior -> decoder.

Shapes throughout: images ``x: [B, C, H, W]`` float in [0, 1], latents ``z: [B, latent_dim]``.
"""

from __future__ import annotations

import inspect
import itertools
import math
import os
import tempfile
from pathlib import Path
from typing import Sequence

import torch
from huggingface_hub import PyTorchModelHubMixin
from torch import nn
from torch.nn import functional as F

from . import losses

LIKELIHOODS = ("bernoulli", "gaussian")


class DiagonalGaussian:
    """A diagonal Gaussian N(mean, diag(std^2)) over latents, one per image.

    ``mean`` and ``logvar`` are ``[B, D]`` (``[B, C, h, w]`` for the spatial latents of
    `backbones.DiffusersVAE`). The reparameterization ``mean + std * eps`` lives here
    and only here.
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

    def kl(self) -> torch.Tensor:
        """KL(q || N(0, I)) in nats, ``[B]``.

        Closed form from Kingma & Welling (2013), Appendix B:
        -KL = 1/2 * sum_j (1 + log sigma_j^2 - mu_j^2 - sigma_j^2).
        """
        return 0.5 * (self.mean.square() + self.var - 1.0 - self.logvar).flatten(1).sum(dim=1)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log q(z) in nats, summed over latent dimensions; ``z: [..., B, D]`` -> ``[..., B]``."""
        return (-0.5 * ((z - self.mean) / self.std).square() - 0.5 * self.logvar - 0.5 * math.log(2 * math.pi)).sum(-1)

    def __getitem__(self, index) -> "DiagonalGaussian":
        return DiagonalGaussian(self.mean[index], self.logvar[index])

    def to(self, *args, **kwargs) -> "DiagonalGaussian":
        return DiagonalGaussian(self.mean.to(*args, **kwargs), self.logvar.to(*args, **kwargs))


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    return (-0.5 * z.square() - 0.5 * math.log(2 * math.pi)).sum(-1)


def _feature_sizes(size: int, stages: int) -> list[int]:
    """Spatial sizes after each stride-2 conv (k=3, p=1 gives ceil(n / 2))."""
    sizes = [size]
    for _ in range(stages):
        sizes.append((sizes[-1] + 1) // 2)
    return sizes


def _fast_layout(h: torch.Tensor) -> torch.Tensor:
    """Channels-last activations make oneDNN's (transposed) convolutions 2-3x faster on CPU batches,
    but send batches of a few images to a slow fallback kernel; so only for batches of 16 or more."""
    if h.shape[0] >= 16:
        return h.contiguous(memory_format=torch.channels_last)
    return h.contiguous()


class Encoder(nn.Module):
    """``[B, C, H, W]`` -> (mean, logvar), each ``[B, latent_dim]``."""

    def __init__(self, channels: int, widths: Sequence[int], flat_size: int, hidden: int, latent_dim: int):
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = channels
        for width in widths:
            layers += [nn.Conv2d(in_ch, width, 3, stride=2, padding=1), nn.SiLU(inplace=True)]
            in_ch = width
        self.convs = nn.Sequential(*layers)
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(flat_size, hidden), nn.SiLU(inplace=True), nn.Linear(hidden, 2 * latent_dim))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = _fast_layout(self.convs[:2](x))
        return self.fc(self.convs[2:](h)).chunk(2, dim=-1)


class Decoder(nn.Module):
    """``[B, latent_dim]`` -> likelihood parameters ``[B, C, H, W]`` (logits or means, pre-activation)."""

    def __init__(self, channels: int, widths: Sequence[int], heights: list[int], widths_px: list[int], hidden: int, latent_dim: int):
        super().__init__()
        widths = list(widths)
        self.start_shape = (widths[-1], heights[-1], widths_px[-1])
        self.fc = nn.Sequential(
            nn.Linear(latent_dim, hidden), nn.SiLU(inplace=True), nn.Linear(hidden, widths[-1] * heights[-1] * widths_px[-1]), nn.SiLU(inplace=True)
        )
        layers: list[nn.Module] = []
        outs = widths[-2::-1] + [channels]
        for i, (in_ch, out_ch) in enumerate(zip(widths[::-1], outs)):
            stage = len(widths) - i  # index into sizes of this stage's input
            target_h, target_w = heights[stage - 1], widths_px[stage - 1]
            pad = (target_h - (2 * heights[stage] - 1), target_w - (2 * widths_px[stage] - 1))
            layers.append(nn.ConvTranspose2d(in_ch, out_ch, 3, stride=2, padding=1, output_padding=pad))
            if i < len(widths) - 1:
                layers.append(nn.SiLU(inplace=True))
        self.deconvs = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = _fast_layout(self.fc(z).view(-1, *self.start_shape))
        return self.deconvs(h).contiguous()


class VAE(
    nn.Module,
    PyTorchModelHubMixin,
    library_name="vae-augment",
    tags=["vae", "data-augmentation", "image"],
    repo_url="https://github.com/vae-augment/vae-augment",
):
    """A convolutional variational autoencoder (Kingma & Welling, 2013).

    Args:
        channels: image channels, 1 (gray) or 3 (RGB).
        image_size: side of a square image, or ``[height, width]``; 8 to 512 pixels.
        latent_dim: size of the latent code z.
        widths: channels of the stride-2 conv stages of the encoder (mirrored in the decoder).
        hidden: width of the fully connected layer between conv features and latents.
        likelihood: ``"bernoulli"`` (images in [0, 1], the MNIST default) or ``"gaussian"`` (a
            Gaussian with a learned per-channel scale, for natural images).
        beta: weight of the KL term during training (1 gives the ELBO).

    Every argument is stored in ``config.json`` by ``save_pretrained`` so that
    ``VAE.from_pretrained(folder_or_repo)`` rebuilds the model without code.
    """

    def __init__(
        self,
        channels: int = 1,
        image_size: int | list[int] = 28,
        latent_dim: int = 16,
        widths: Sequence[int] = (32, 64),
        hidden: int = 256,
        likelihood: str = "bernoulli",
        beta: float = 1.0,
    ):
        super().__init__()
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels!r}")
        size = [image_size, image_size] if isinstance(image_size, int) else list(image_size)
        if len(size) != 2 or not all(isinstance(s, int) and 8 <= s <= 512 for s in size):
            raise ValueError(f"image_size must be an int or [height, width] with sides in [8, 512], got {image_size!r}")
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}")
        widths = [int(w) for w in widths]
        if not widths or any(w < 1 for w in widths):
            raise ValueError(f"widths must be a non-empty list of positive ints, got {widths!r}")
        if latent_dim < 1 or hidden < 1:
            raise ValueError(f"latent_dim and hidden must be positive, got {latent_dim!r} and {hidden!r}")
        if not beta >= 0:
            raise ValueError(f"beta must be >= 0, got {beta!r}")
        self.channels = channels
        self.image_size = tuple(size)
        self.latent_dim = latent_dim
        self.likelihood = likelihood
        self.beta = float(beta)
        heights = _feature_sizes(size[0], len(widths))
        widths_px = _feature_sizes(size[1], len(widths))
        flat = widths[-1] * heights[-1] * widths_px[-1]
        self.encoder = Encoder(channels, widths, flat, hidden, latent_dim)
        self.decoder = Decoder(channels, widths, heights, widths_px, hidden, latent_dim)
        if likelihood == "gaussian":
            # per-channel log standard deviation of p(x|z), learned (the sigma-VAE of Rybkin et al., 2021)
            self.log_scale = nn.Parameter(torch.full((channels,), -2.0))
        # Spread of posterior means over the training set, per latent dimension; written by
        # training (`latent_statistics`) and used by the augmentation to measure strength.
        self.register_buffer("latent_loc", torch.zeros(latent_dim))
        self.register_buffer("latent_scale", torch.ones(latent_dim))
        # Posterior means of (a sample of) the training images, [N, latent_dim], for the "neighbour"
        # augmentation; kept out of the state dict, in latent_bank.safetensors beside the weights.
        self.latent_bank: torch.Tensor | None = None

    def _apply(self, fn, *args, **kwargs):
        # the latent bank is not a buffer (it stays out of the state dict) but moves with the model,
        # so the "neighbour" mode never copies it per call
        super()._apply(fn, *args, **kwargs)
        if self.latent_bank is not None:
            self.latent_bank = fn(self.latent_bank)
        return self

    # ----------------------------------------------------------------- core
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def latent_shape(self, height: int | None = None, width: int | None = None) -> tuple[int]:
        """Shape of one image's latent: ``(latent_dim,)`` whatever the input size (inputs are resized)."""
        return (self.latent_dim,)

    @property
    def num_pixels(self) -> int:
        return self.channels * self.image_size[0] * self.image_size[1]

    def check_input(self, x: torch.Tensor, name: str = "x") -> None:
        """Raise a clear error unless ``x`` is a float ``[B, C, H, W]`` batch this model accepts."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor of shape [B, C, H, W], got {type(x).__name__}")
        if x.ndim != 4:
            raise ValueError(f"{name} must have 4 dimensions [B, C, H, W], got shape {tuple(x.shape)}")
        if not x.is_floating_point():
            raise TypeError(f"{name} must be a float tensor in [0, 1], got dtype {x.dtype} (divide uint8 images by 255)")
        expected = (self.channels, *self.image_size)
        if tuple(x.shape[1:]) != expected:
            raise ValueError(f"{name} must have shape [B, {', '.join(map(str, expected))}] for this model, got {tuple(x.shape)}")
        if x.numel() and not torch.isfinite(x).all():
            raise ValueError(f"{name} contains NaN or infinite values; images must be finite floats in [0, 1]")

    def encode(self, x: torch.Tensor) -> DiagonalGaussian:
        """Posterior q(z|x) for ``x: [B, C, H, W]`` float in [0, 1]."""
        self.check_input(x)
        mean, logvar = self.encoder(x)
        return DiagonalGaussian(mean, logvar)

    def decoder_output(self, z: torch.Tensor) -> torch.Tensor:
        """Pre-activation decoder output (Bernoulli logits or Gaussian mean logits), ``[B, C, H, W]``."""
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"z must have shape [B, {self.latent_dim}], got {tuple(z.shape)}")
        return self.decoder(z)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Mean image of p(x|z), ``[B, C, H, W]`` in [0, 1]."""
        return torch.sigmoid(self.decoder_output(z))

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, DiagonalGaussian]:
        """Returns (decoder output for a reparameterized sample, posterior)."""
        posterior = self.encode(x)
        return self.decoder_output(posterior.sample(generator)), posterior

    def log_likelihood(self, x: torch.Tensor, decoder_out: torch.Tensor) -> torch.Tensor:
        """log p(x|z) in nats per image, ``[..., B]``."""
        if self.likelihood == "bernoulli":
            return losses.bernoulli_log_likelihood(x, decoder_out)
        return losses.gaussian_log_likelihood(x, torch.sigmoid(decoder_out), self.log_scale)

    def loss(self, x: torch.Tensor, beta: float | None = None, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Training objective: mean over the batch of -(log p(x|z) - beta * KL); see `losses.elbo`."""
        out, posterior = self(x, generator)
        return self.objective(x, out, posterior, self.beta if beta is None else beta)

    def objective(self, x: torch.Tensor, decoder_out: torch.Tensor, posterior: DiagonalGaussian, beta: float) -> dict[str, torch.Tensor]:
        """`losses.elbo` for a forward pass already made, in float32 whatever precision it ran in."""
        return losses.elbo(self.log_likelihood(x, decoder_out.float()), posterior.to(torch.float32).kl(), beta)

    # ------------------------------------------------------------- evaluation
    @torch.no_grad()
    def elbo(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Per-image ELBO in nats, ``[B]`` (one reparameterized sample, beta = 1)."""
        out, posterior = self(x, generator)
        return self.log_likelihood(x, out) - posterior.kl()

    @torch.no_grad()
    def iw_nll(self, x: torch.Tensor, k: int = 64, generator: torch.Generator | None = None) -> torch.Tensor:
        """Importance-weighted estimate of -log p(x) in nats per image, ``[B]`` (Burda et al., 2015).

        -log (1/k) sum_i p(x|z_i) p(z_i) / q(z_i|x), z_i ~ q(z|x); an upper bound on the NLL that
        tightens as k grows (k = 1 is the negative ELBO).
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        posterior = self.encode(x)
        z = torch.stack([posterior.sample(generator) for _ in range(k)])  # [k, B, D]
        out = self.decoder_output(z.flatten(0, 1)).unflatten(0, (k, x.shape[0]))
        log_w = self.log_likelihood(x.unsqueeze(0), out) + standard_normal_log_prob(z) - posterior.log_prob(z)
        return -(torch.logsumexp(log_w, dim=0) - math.log(k))

    def bits_per_dim(self, nats: torch.Tensor) -> torch.Tensor:
        """Convert nats per image to bits per dimension (see `losses.bits_per_dim`)."""
        return losses.bits_per_dim(nats, self.num_pixels, self.likelihood)

    @torch.no_grad()
    def anomaly_score(self, x: torch.Tensor) -> torch.Tensor:
        """Deterministic negative ELBO at the posterior mean, nats per image, ``[B]``; higher = more unusual.

        -log p(x | z = mean) + KL(q(z|x) || p(z)): large when the image reconstructs badly or its
        code lies far from the prior.
        """
        return self.score_and_reconstruct(x)[0]

    @torch.no_grad()
    def score_and_reconstruct(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`anomaly_score` and `reconstruct` of ``x`` from one encode and one decode."""
        posterior = self.encode(x)
        out = self.decoder_output(posterior.mean)
        return -(self.log_likelihood(x, out) - posterior.kl()), torch.sigmoid(out)

    def anomaly_percentile(self, scores: torch.Tensor) -> torch.Tensor:
        """Where anomaly ``scores`` fall among the training set's, as a percentile in [0, 100].

        Needs ``train_anomaly_percentiles`` from the checkpoint's metrics.json (written by `train`).
        """
        reference = getattr(self, "metrics", {}).get("train_anomaly_percentiles")
        if not reference:
            raise ValueError("this checkpoint has no train_anomaly_percentiles in metrics.json; train it with vae-augment "
                             "train or compute them with vae_augment.training.reference_statistics")
        grid = torch.tensor(reference, dtype=torch.float64)
        levels = torch.linspace(0, 100, len(reference), dtype=torch.float64)
        s = scores.detach().double().cpu().reshape(-1)
        index = torch.searchsorted(grid, s).clamp(1, len(reference) - 1)
        lo, hi = grid[index - 1], grid[index]
        frac = ((s - lo) / (hi - lo).clamp_min(1e-12)).clamp(0, 1)
        out = levels[index - 1] + frac * (levels[index] - levels[index - 1])
        return out.float().reshape(scores.shape)

    # ------------------------------------------------------------- generation
    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """decode(posterior mean), ``[B, C, H, W]`` in [0, 1]."""
        return self.decode(self.encode(x).mean)

    def prior_sample(self, noise: torch.Tensor) -> torch.Tensor:
        """Standard normal ``noise`` -> a sample of the prior p(z) = N(0, I): the noise itself."""
        return noise

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, temperature: float = 1.0) -> torch.Tensor:
        """``n`` images decoded from z ~ N(0, temperature^2 I), ``[n, C, H, W]`` in [0, 1]."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        if not temperature >= 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        device = generator.device if generator is not None else self.device
        z = torch.randn(n, self.latent_dim, generator=generator, device=device).to(self.device) * temperature
        return self.decode(z)

    @torch.no_grad()
    def interpolate(self, x0: torch.Tensor, x1: torch.Tensor, steps: int = 8, method: str = "linear") -> torch.Tensor:
        """Decode codes on the path between the posterior means of ``x0`` and ``x1``.

        ``x0, x1: [C, H, W]`` -> ``[steps, C, H, W]``; or ``[B, C, H, W]`` -> ``[B, steps, C, H, W]``.
        ``method`` is ``"linear"`` or ``"slerp"`` (spherical, which keeps the norm typical of the prior).
        """
        if steps < 2:
            raise ValueError(f"steps must be >= 2, got {steps}")
        single = x0.ndim == 3
        if single:
            x0, x1 = x0.unsqueeze(0), x1.unsqueeze(0)
        if x0.shape != x1.shape:
            raise ValueError(f"x0 and x1 must have the same shape, got {tuple(x0.shape)} and {tuple(x1.shape)}")
        z0, z1 = self.encode(x0).mean, self.encode(x1).mean
        t = torch.linspace(0, 1, steps, device=z0.device, dtype=z0.dtype)
        z = lerp_latents(z0, z1, t, method)  # [B, steps, D]
        images = self.decode(z.flatten(0, 1)).unflatten(0, z.shape[:2])
        return images[0] if single else images

    @torch.no_grad()
    def traverse(self, x: torch.Tensor, dims: Sequence[int], values: torch.Tensor) -> torch.Tensor:
        """Decode the posterior mean of ``x: [C, H, W]`` with one latent dimension at a time moved.

        ``dims``: K latent indices; ``values``: offsets added to the mean along each of them, ``[T]``
        (the same for every dimension) or ``[K, T]``, in latent units (multiply by
        ``latent_scale[dims]`` for units of the data's spread) -> ``[K, T, C, H, W]``.
        """
        check_dims(dims, self.latent_dim, "indices")
        z = shift_latents(self.encode(x.unsqueeze(0)).mean[0], dims, values)  # [K, T, D]
        return self.decode(z.flatten(0, 1)).unflatten(0, z.shape[:2])

    @torch.no_grad()
    def latent_statistics(self, batches, max_batches: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-dimension mean and standard deviation of posterior means over ``batches`` of images; stored
        in ``latent_loc`` / ``latent_scale`` (the augmentation's unit of strength)."""
        codes = (self.encode(x.to(self.device)).mean for x in itertools.islice(batches, max_batches))
        loc, scale = column_mean_std(codes, "latent_statistics needs at least 2 images")
        self.latent_loc.copy_(loc.float())
        self.latent_scale.copy_(scale.float().clamp_min(1e-6))
        return self.latent_loc, self.latent_scale

    # ------------------------------------------------------------ persistence
    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        *,
        revision: str | None = None,
        map_location: str | torch.device = "cpu",
        strict: bool = True,
        **download_kwargs,
    ) -> "VAE":
        """Rebuild a VAE from ``config.json`` and load ``model.safetensors`` strictly.

        ``pretrained_model_name_or_path`` is a bundled name (``"mnist"``), a local folder or a Hub
        repo id (``"org/name"``, at ``revision``). Pickle weights are never read.
        """
        from . import hub
        from .backbones import is_diffusers_config

        folder = hub.resolve(pretrained_model_name_or_path, revision=revision, **download_kwargs)
        config = hub.read_config(folder)
        if is_diffusers_config(config):
            raise hub.CheckpointError(f"{str(folder)!r} holds a diffusers {config.get('_class_name', 'model')}, not a vae-augment "
                                      "VAE; load it with vae_augment.load_vae, which wraps diffusers autoencoders")
        known = set(inspect.signature(cls.__init__).parameters) - {"self"}
        unknown = sorted(set(config) - known)
        if unknown:
            raise hub.CheckpointError(f"{folder / hub.CONFIG_NAME} has unknown keys {unknown}; accepted keys are {sorted(known)}")
        try:
            model = cls(**config)
        except (TypeError, ValueError) as err:
            raise hub.CheckpointError(f"{folder / hub.CONFIG_NAME} does not describe a valid VAE: {err}") from None
        model.latent_bank = hub.read_latent_bank(folder, model.latent_dim)
        hub.load_safetensors_into(model, folder / hub.WEIGHTS_NAME, strict=strict, device=map_location)
        model.metrics = hub.read_metrics(folder)
        model.name_or_path = os.fspath(pretrained_model_name_or_path)
        return model.eval()

    def save_pretrained(self, save_directory: str | os.PathLike, *, config: dict | None = None, refresh_card: bool = False,
                        **kwargs) -> None:
        """Write ``config.json`` and ``model.safetensors``, the latent bank and ``metrics.json`` where the
        model has them, and a model card if the folder has none (or ``refresh_card``).

        The files are written as one unit (`hub.staged_folder`): an interrupted save leaves the
        previous checkpoint intact, never new weights beside an old config; a latent bank, metrics or
        diffusers files left from an earlier save are removed when this model has none.
        """
        from . import hub

        folder = Path(save_directory)
        config = dict(config or self._hub_mixin_config)
        metrics = getattr(self, "metrics", None) or {}
        from .backbones import DIFFUSERS_FILES, STATS_NAME

        stale = (hub.BANK_NAME, hub.METRICS_NAME, DIFFUSERS_FILES, STATS_NAME)
        with hub.staged_folder(folder, remove=stale) as stage:
            hub.atomic_save_tensors(stage / hub.WEIGHTS_NAME, self.state_dict(), metadata={"format": "pt"})
            hub.atomic_write_json(stage / hub.CONFIG_NAME, config)
            if self.latent_bank is not None:
                # float16 halves the file; that precision (~1e-3 of the codes' spread) is ample for finding neighbours
                hub.atomic_save_tensors(stage / hub.BANK_NAME, {"latent_bank": self.latent_bank.half()})
            if metrics:
                hub.atomic_write_json(stage / hub.METRICS_NAME, metrics)
            if refresh_card or not (folder / hub.CARD_NAME).exists():
                hub.atomic_write_bytes(stage / hub.CARD_NAME, hub.model_card(config, metrics).encode())

    def push_to_hub(self, repo_id: str, *, private: bool | None = None, token: str | None = None, revision: str | None = None) -> str:
        """Save to a temporary folder and upload it (config, weights, metrics, model card) to ``repo_id``."""
        from . import hub

        with tempfile.TemporaryDirectory() as tmp:
            self.save_pretrained(tmp)
            return hub.push(tmp, repo_id, private=private, token=token, revision=revision)


def column_mean_std(rows, too_few: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-column mean and (unbiased) standard deviation over an iterable of ``[N, K]`` tensors,
    accumulated in float64 without holding them all; ``ValueError(too_few)`` for fewer than 2 rows."""
    total, total_sq, count = 0.0, 0.0, 0
    for r in rows:
        r = r.double()
        total, total_sq, count = total + r.sum(0), total_sq + r.square().sum(0), count + r.shape[0]
    if count < 2:
        raise ValueError(too_few)
    loc = total / count
    return loc, (total_sq / count - loc.square()).clamp_min(0).mul(count / (count - 1)).sqrt()


def check_dims(dims: Sequence[int], size: int, what: str) -> None:
    if not dims or not all(0 <= int(d) < size for d in dims):
        raise ValueError(f"dims must be a non-empty list of {what} in [0, {size}), got {[int(d) for d in dims]}")


def shift_latents(mean: torch.Tensor, dims: Sequence[int], values) -> torch.Tensor:
    """One latent ``mean`` (``[D]``, or spatial ``[C, h, w]``) -> ``[K, T, *mean.shape]``: for each of the K
    ``dims`` (a dimension, or a channel at every position), the mean with that one moved by each of
    ``values`` (``[T]``, the same for every dimension, or ``[K, T]``)."""
    dims = [int(d) for d in dims]
    values = torch.as_tensor(values, dtype=mean.dtype, device=mean.device)
    values = values.expand(len(dims), -1) if values.ndim == 1 else values
    if values.ndim != 2 or values.shape[0] != len(dims):
        raise ValueError(f"values must have shape [T] or [{len(dims)}, T], got {tuple(values.shape)}")
    z = mean.repeat(len(dims), values.shape[1], *[1] * mean.ndim)
    rows = torch.arange(len(dims), device=mean.device)
    z[rows, :, dims] += values.view(*values.shape, *[1] * (mean.ndim - 1))
    return z


def lerp_latents(z0: torch.Tensor, z1: torch.Tensor, t: torch.Tensor, method: str = "linear") -> torch.Tensor:
    """Points between ``z0, z1: [B, D]`` at fractions ``t: [T]`` -> ``[B, T, D]``."""
    if method not in ("linear", "slerp"):
        raise ValueError(f"method must be 'linear' or 'slerp', got {method!r}")
    t = t.view(1, -1, 1)
    a, b = z0.unsqueeze(1), z1.unsqueeze(1)
    if method == "linear":
        return a + t * (b - a)
    cos = F.cosine_similarity(z0, z1, dim=-1).clamp(-1 + 1e-7, 1 - 1e-7).view(-1, 1, 1)
    omega = torch.acos(cos)
    so = torch.sin(omega)
    return (torch.sin((1 - t) * omega) / so) * a + (torch.sin(t * omega) / so) * b
