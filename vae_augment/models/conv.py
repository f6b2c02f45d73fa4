"""The library's own convolutional VAE: encoder -> diagonal Gaussian posterior -> decoder.

Shapes throughout: model-space images ``x: [B, C, H, W]`` float in [0, 1] at ``image_size``,
latents ``z: [B, latent_dim]``. The encoder and decoder networks (and their fast CPU path) are in
`conv_nets`; reading, writing and sharing the checkpoint folder is `conv_checkpoint.CheckpointMixin`.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

from .. import losses
from .base import Autoencoder, DiagonalGaussian
from .conv_checkpoint import CheckpointMixin
from .conv_nets import (
    MAX_FEATURES,
    MAX_PARAMETERS,
    MAX_PRIOR_COMPONENTS,
    MAX_STAGES,
    MAX_WIDTH,
    Decoder,
    Encoder,
    feature_sizes,
    is_int,
    parameter_count,
)

LIKELIHOODS = ("bernoulli", "gaussian")

IW_DECODES = 8192  # images decoded at once by iw_nll (k samples of a batch are decoded in chunks of this many)


class VAE(
    CheckpointMixin,  # config.json + model.safetensors: from_folder, from_pretrained, save_pretrained, push_to_hub
    Autoencoder,
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
        prior_components: 0 for the standard normal prior N(0, I); K > 0 for a learned mixture of K
            diagonal Gaussians (`vae_augment.fit_prior` fits one to a trained model's codes, which
            tightens the ELBO and the NLL and draws prior samples near the codes of real images).

    Every argument is stored in ``config.json`` by ``save_pretrained`` so that
    ``VAE.from_pretrained(folder_or_repo)`` rebuilds the model without code. Images of another size
    or channel count are resized and converted by `to_model` (see `Autoencoder`).
    """

    kind = "VAE"
    score_unit = "nats per image"
    usage_unit = "KL (nats)"
    precisions = ("bf16", "fp16")
    has_elbo = True


    def __init__(
        self,
        channels: int = 1,
        image_size: int | list[int] = 28,
        latent_dim: int = 16,
        widths: Sequence[int] = (32, 64),
        hidden: int = 256,
        likelihood: str = "bernoulli",
        beta: float = 1.0,
        prior_components: int = 0,
    ):
        super().__init__()
        if isinstance(channels, bool) or channels not in (1, 3) or not isinstance(channels, int):
            raise ValueError(f"channels must be 1 or 3, got {channels!r}")
        size = [image_size, image_size] if isinstance(image_size, int) else list(image_size) if isinstance(image_size, (list, tuple)) else [image_size]
        if len(size) != 2 or not all(is_int(s) and 8 <= s <= 512 for s in size):
            raise ValueError(f"image_size must be an int or [height, width] with sides in [8, 512], got {image_size!r}")
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}")
        if (isinstance(widths, (str, bytes)) or not isinstance(widths, Sequence) or not widths or len(widths) > MAX_STAGES
                or not all(is_int(w) and 1 <= w <= MAX_WIDTH for w in widths)):
            raise ValueError(f"widths must be a non-empty list of positive ints (at most {MAX_STAGES} of them, each at most "
                             f"{MAX_WIDTH}), got {widths!r}")
        widths = [int(w) for w in widths]
        for name, value in (("latent_dim", latent_dim), ("hidden", hidden)):
            if not (is_int(value) and 1 <= value <= MAX_FEATURES):
                raise ValueError(f"latent_dim and hidden must be positive ints of at most {MAX_FEATURES}; {name} is {value!r}")
        latent_dim, hidden = int(latent_dim), int(hidden)
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not (math.isfinite(beta) and beta >= 0):
            raise ValueError(f"beta must be >= 0, got {beta!r}")
        if not (is_int(prior_components) and 0 <= prior_components <= MAX_PRIOR_COMPONENTS):
            raise ValueError(f"prior_components must be an int in [0, {MAX_PRIOR_COMPONENTS}] (0: the standard normal prior), "
                             f"got {prior_components!r}")
        count = parameter_count(channels, size, widths, hidden, latent_dim)
        if count > MAX_PARAMETERS:  # checked before anything is allocated
            raise ValueError(f"this config makes a VAE of {count:,} parameters ({4 * count / 2**30:.1f} GiB in float32), more than "
                             f"the {MAX_PARAMETERS:,} allowed: lower hidden, latent_dim or widths, or use more conv stages")
        self.channels = channels
        self.image_size = self.sample_size = tuple(size)
        self.latent_dim = latent_dim
        self.likelihood = likelihood
        self.beta = float(beta)
        self.prior_components = int(prior_components)
        heights = feature_sizes(size[0], len(widths))
        widths_px = feature_sizes(size[1], len(widths))
        flat = widths[-1] * heights[-1] * widths_px[-1]
        self.encoder = Encoder(channels, widths, flat, hidden, latent_dim)
        self.decoder = Decoder(channels, widths, heights, widths_px, hidden, latent_dim)
        if likelihood == "gaussian":
            # per-channel log standard deviation of p(x|z), learned (the sigma-VAE of Rybkin et al., 2021)
            self.log_scale = nn.Parameter(torch.full((channels,), -2.0))
        if self.prior_components:
            # p(z) = sum_k softmax(prior_logits)_k N(prior_loc_k, diag(exp(prior_log_scale_k))^2); fit_prior sets them
            self.prior_logits = nn.Parameter(torch.zeros(self.prior_components))
            self.prior_loc = nn.Parameter(torch.zeros(self.prior_components, latent_dim))
            self.prior_log_scale = nn.Parameter(torch.zeros(self.prior_components, latent_dim))
        # Spread of posterior means over the training set, per latent dimension; written by
        # training (`latent_statistics`) and used by the augmentation to measure strength.
        self.register_buffer("latent_loc", torch.zeros(latent_dim))
        self.register_buffer("latent_scale", torch.ones(latent_dim))
        # Posterior means of (a sample of) the training images, [N, latent_dim], for the "neighbour"
        # augmentation; kept out of the state dict, in latent_bank.safetensors beside the weights.

    # ----------------------------------------------------------------- the interface
    def latent_shape(self, height: int | None = None, width: int | None = None) -> tuple[int]:
        """Shape of one image's latent: ``(latent_dim,)`` whatever the input size (inputs are resized)."""
        return (self.latent_dim,)

    def working_size(self, height: int, width: int) -> tuple[int, int]:
        """Every image is processed at ``image_size``."""
        return self.image_size

    def prior_sample(self, noise: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Standard normal ``noise: [B, latent_dim]`` -> a sample of the prior: the noise itself for N(0, I); for
        a mixture, each row's component is drawn with ``generator`` (default: the global torch RNG) and the
        noise scaled and shifted by it."""
        if not self.prior_components:
            return noise
        weights = torch.softmax(self.prior_logits.detach().float(), 0)
        device = generator.device if generator is not None else weights.device
        component = (torch.multinomial(weights.to(device), noise.shape[0], replacement=True, generator=generator)
                     if noise.shape[0] else torch.zeros(0, dtype=torch.long)).to(self.prior_loc.device)
        loc, log_scale = self.prior_loc.detach()[component], self.prior_log_scale.detach()[component]
        return (loc + torch.exp(log_scale) * noise.to(loc)).to(noise.dtype)

    def prior_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z) in nats, ``[..., latent_dim]`` -> ``[...]``: the standard normal, or the learned mixture."""
        if not self.prior_components:
            return losses.standard_normal_log_prob(z)
        return losses.mixture_log_prob(z.float(), self.prior_logits.float(), self.prior_loc.float(), self.prior_log_scale.float())

    def with_mixture_prior(self, components: int) -> "VAE":
        """A copy of this model (weights, statistics, latent bank, metrics) with a mixture prior of ``components``
        Gaussians in place of its prior, at N(0, I) each until fitted (`vae_augment.fit_prior` fits it)."""
        config = {**self._hub_mixin_config, "prior_components": components}
        copy = VAE(**config).to(self.device, self.dtype)
        copy.load_state_dict({k: v for k, v in self.state_dict().items() if not k.startswith("prior_")}, strict=False)
        copy.latent_bank, copy.metrics, copy.name_or_path = self.latent_bank, dict(self.metrics or {}), getattr(self, "name_or_path", None)
        return copy.train(self.training)

    def kl(self, posterior: DiagonalGaussian, z: torch.Tensor) -> torch.Tensor:
        """KL(q(z|x) || p(z)) in nats, ``[B]``: the closed form for the standard normal prior (``z`` unused),
        the one-sample estimate log q(z|x) - log p(z) at the posterior sample ``z`` for a mixture prior."""
        if not self.prior_components:
            return posterior.kl()
        return posterior.log_prob(z) - self.prior_log_prob(z)

    def score_model_space(self, x: torch.Tensor, posterior: DiagonalGaussian, area: tuple[int, int] | None = None
                          ) -> tuple[torch.Tensor, torch.Tensor]:
        """Deterministic negative ELBO at the posterior mean, nats per image: -log p(x | z = mean) +
        KL(q(z|x) || p(z)) (for a mixture prior, log q(mean|x) - log p(mean)), large when the image reconstructs
        badly or its code lies far from the prior."""
        out = self.decoder_output(posterior.mean)
        return -(self.log_likelihood(x, out) - self.kl(posterior, posterior.mean)), torch.sigmoid(out)

    def dimension_usage(self, posterior: DiagonalGaussian) -> torch.Tensor:
        """KL of each latent dimension from N(0, I) for the first image, ``[latent_dim]``: the dimensions
        the model ignores keep the prior (KL near 0) and change nothing when moved. (A learned mixture
        prior has no per-dimension KL, so it is measured against N(0, I) for such a model too.)"""
        return posterior[:1].kl_terms()[0]

    def describe(self) -> str:
        height, width = self.image_size
        return f"{height}x{width} {'gray' if self.channels == 1 else 'RGB'} images, {self.latent_dim} latent dimensions"

    @property
    def device(self) -> torch.device:
        return self.latent_scale.device  # a buffer of the model itself: cheaper than walking the parameters

    @property
    def dtype(self) -> torch.dtype:
        return self.latent_scale.dtype  # .to(dtype) and .half() convert it with the weights

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
        if not torch.compiler.is_compiling() and x.numel() and not torch.isfinite(x).all():  # data-dependent: eager only
            raise ValueError(f"{name} contains NaN or infinite values; images must be finite floats in [0, 1]")

    def encode(self, x: torch.Tensor) -> DiagonalGaussian:
        """Posterior q(z|x) for ``x: [B, C, H, W]`` float in [0, 1]."""
        self.check_input(x)
        mean, logvar = self.encoder(x if x.dtype == self.dtype or torch.is_autocast_enabled(x.device.type) else x.to(self.dtype))
        return DiagonalGaussian(mean, logvar)

    def decoder_output(self, z: torch.Tensor) -> torch.Tensor:
        """Pre-activation decoder output (Bernoulli logits or Gaussian mean logits), ``[B, C, H, W]``."""
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"z must have shape [B, {self.latent_dim}], got {tuple(z.shape)}")
        return self.decoder(z if z.dtype == self.dtype or torch.is_autocast_enabled(z.device.type) else z.to(self.dtype))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Mean image of p(x|z), ``[B, C, H, W]`` in [0, 1]."""
        return torch.sigmoid(self.decoder_output(z))

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, DiagonalGaussian, torch.Tensor]:
        """Returns (decoder output for a reparameterized sample z, posterior, z)."""
        posterior = self.encode(x)
        z = posterior.sample(generator)
        return self.decoder_output(z), posterior, z

    def log_likelihood(self, x: torch.Tensor, decoder_out: torch.Tensor) -> torch.Tensor:
        """log p(x|z) in nats per image, ``[..., B]``."""
        if self.likelihood == "bernoulli":
            return losses.bernoulli_log_likelihood(x, decoder_out)
        return losses.gaussian_log_likelihood(x, torch.sigmoid(decoder_out), self.log_scale)

    def loss(self, x: torch.Tensor, beta: float | None = None, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Training objective: mean over the batch of -(log p(x|z) - beta * KL); see `losses.elbo`."""
        out, posterior, z = self(x, generator)
        return self.objective(x, out, posterior, self.beta if beta is None else beta, z)

    def objective(self, x: torch.Tensor, decoder_out: torch.Tensor, posterior: DiagonalGaussian, beta: float,
                  z: torch.Tensor) -> dict[str, torch.Tensor]:
        """`losses.elbo` for a forward pass already made (``z``: its posterior sample), in float32 whatever precision it ran in."""
        return losses.elbo(self.log_likelihood(x, decoder_out.float()), self.kl(posterior.to(torch.float32), z.float()), beta)

    # ------------------------------------------------------------- evaluation
    @torch.no_grad()
    def elbo(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Per-image ELBO in nats, ``[B]`` (one reparameterized sample, beta = 1)."""
        out, posterior, z = self(x, generator)
        return self.log_likelihood(x, out) - self.kl(posterior, z)

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
        chunk = max(1, IW_DECODES // max(1, x.shape[0]))  # samples decoded at once: memory stays bounded for large k
        log_w = torch.cat([self.log_likelihood(x.unsqueeze(0), self.decoder_output(part.flatten(0, 1)).unflatten(0, part.shape[:2]))
                           + self.prior_log_prob(part) for part in z.split(chunk)])  # a mixture prior's [codes, K] table stays bounded too
        log_w = log_w - posterior.log_prob(z)
        return -(torch.logsumexp(log_w, dim=0) - math.log(k))

    def bits_per_dim(self, nats: torch.Tensor) -> torch.Tensor:
        """Convert nats per image to bits per dimension (see `losses.bits_per_dim`)."""
        return losses.bits_per_dim(nats, self.num_pixels, self.likelihood)
