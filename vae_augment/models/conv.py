"""The library's own convolutional VAE: encoder -> diagonal Gaussian posterior -> decoder.

Shapes throughout: model-space images ``x: [B, C, H, W]`` float in [0, 1] at ``image_size``,
latents ``z: [B, latent_dim]``.
"""

from __future__ import annotations

import inspect
import math
import numbers
import os
import tempfile
import weakref
from pathlib import Path
from typing import Any, Sequence

import torch
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

from .. import checkpoint, losses
from ..latent import MODES
from .base import Autoencoder, DiagonalGaussian

LIKELIHOODS = ("bernoulli", "gaussian")


# Bounds on the sizes of a config, checked before anything is allocated: an absurd config.json (a latent_dim of
# 10^9) fails with its key named instead of with the allocator's "can't allocate memory" after minutes of swapping.
MAX_FEATURES = 65_536  # latent_dim and hidden
MAX_WIDTH = 4_096  # channels of one conv stage
MAX_STAGES = 9  # 512 pixels halve to 1 in nine stages
MAX_PARAMETERS = 2**30  # 4 GiB of float32 weights
MAX_PRIOR_COMPONENTS = 65_536


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _parameter_count(channels: int, size: Sequence[int], widths: Sequence[int], hidden: int, latent_dim: int) -> int:
    """Weights of the encoder and decoder (both fully connected pairs and both conv stacks), before building them."""
    heights, widths_px = _feature_sizes(size[0], len(widths)), _feature_sizes(size[1], len(widths))
    flat = widths[-1] * heights[-1] * widths_px[-1]
    convs = sum(c_in * c_out * 9 + c_out for c_in, c_out in zip([channels, *widths], widths))
    deconvs = sum(c_in * c_out * 9 + c_out for c_in, c_out in zip(widths[::-1], [*widths[-2::-1], channels]))
    fc = (flat * hidden + hidden) + (hidden * 2 * latent_dim + 2 * latent_dim) + (latent_dim * hidden + hidden) + (hidden * flat + flat)
    return convs + deconvs + fc + 2 * latent_dim + channels


def _feature_sizes(size: int, stages: int) -> list[int]:
    """Spatial sizes after each stride-2 conv (k=3, p=1 gives ceil(n / 2))."""
    sizes = [size]
    for _ in range(stages):
        sizes.append((sizes[-1] + 1) // 2)
    return sizes


def _fast_layout(h: torch.Tensor) -> torch.Tensor:
    """Channels-last activations make oneDNN's (transposed) convolutions 2-3x faster on CPU batches,
    but send batches of a few images to a slow fallback kernel; so only for batches of 16 or more."""
    if h.shape[0] >= FAST_BATCH:
        return h.contiguous(memory_format=torch.channels_last)
    return h.contiguous()


# ----------------------------------------------------------------- the inference path on CPU batches
# Without autograd, a CPU batch of FAST_BATCH images or more runs the same arithmetic rearranged for
# oneDNN (benchmarks/throughput.py measures it against the machine's matmul peak): activations stay
# channels-last from the first convolution to the last, the fully connected layers read and write
# that layout directly (their weights permuted once, not the activations on every call), and a
# transposed convolution that oneDNN runs slowly (few output channels, or an odd output size) is
# computed as one matrix product to its nine taps, added into the output's four phases (`_taps`,
# `_assemble`): 2.5x faster than oneDNN for the last layer of the MNIST decoder. The rearranged weights are made once per dtype and device and remade whenever a
# parameter changes (its version counter), so training and loading never see stale ones. Results
# equal the module path's up to float rounding (tests/test_model.py).
FAST_BATCH = 16
IW_DECODES = 8192  # images decoded at once by iw_nll (k samples of a batch are decoded in chunks of this many)
_PLANS: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()


def _use_fast_path(x: torch.Tensor) -> bool:
    return x.device.type == "cpu" and x.shape[0] >= FAST_BATCH and not torch.is_grad_enabled()


def _compute_dtype(x: torch.Tensor, module: nn.Module) -> torch.dtype:
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return next(module.parameters()).dtype


def _plan(module: nn.Module, dtype: torch.dtype, build) -> dict:
    """``build(dtype)`` for ``module``, cached until one of its parameters or buffers changes."""
    tensors = list(module.parameters())
    key = (dtype, tuple((t.data_ptr(), t._version) for t in tensors))
    plans = _PLANS.setdefault(module, {})
    plan = plans.get(dtype)
    if plan is None or plan["key"] != key:
        with torch.no_grad():
            plan = {"key": key, **build(dtype)}
        plans[dtype] = plan
    return plan


def _nhwc_columns(weight: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """A linear layer's ``[out, C*H*W]`` weight (inputs flattened NCHW) -> the same for inputs flattened NHWC."""
    return weight.reshape(weight.shape[0], *shape).permute(0, 2, 3, 1).reshape(weight.shape[0], -1).contiguous()


def _nhwc_rows(weight: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """A linear layer's ``[C*H*W, ...]`` weight or bias (outputs in NCHW order) -> outputs in NHWC order."""
    rest = weight.shape[1:]
    return weight.reshape(*shape, *rest).permute(1, 2, 0, *range(3, 3 + len(rest))).reshape(weight.shape[0], *rest).contiguous()


def _taps(deconv: nn.ConvTranspose2d, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """A ConvTranspose2d(k=3, stride=2, padding=1) as one matrix product to its nine taps per output
    channel, ``[in] -> [out, 3, 3]`` (rows padded to a multiple of 16, which MKL multiplies faster),
    with the bias on the four taps `_assemble` adds without a shift, so each output pixel gets it once."""
    w = deconv.weight  # [in, out, 3, 3]
    cin, cout = w.shape[:2]
    rows = -(-cout * 9 // 16) * 16
    weight = w.new_zeros(rows, cin)
    weight[: cout * 9] = w.reshape(cin, cout * 9).t()
    bias = w.new_zeros(cout, 3, 3)
    bias[:, 1:, 1:] = deconv.bias.view(cout, 1, 1)
    return weight.to(dtype), torch.cat([bias.reshape(-1), w.new_zeros(rows - cout * 9)]).to(dtype)


def _assemble(taps: torch.Tensor, out_h: int, out_w: int) -> torch.Tensor:
    """Taps ``[B, H, W, C, 3, 3]`` -> the transposed convolution's output ``[B, C, out_h, out_w]``: output row
    2m takes tap 1 of input row m, row 2m + 1 taps 2 of row m and 0 of row m + 1 (columns alike)."""
    batch, height, width, channels = taps.shape[:4]
    t = taps.permute(0, 3, 1, 2, 4, 5)  # [B, C, H, W, 3, 3]
    padded = nn.functional.pad(t, (0, 0, 0, 0, 0, 1, 0, 1))  # zero past the last row and column
    shifted, below, beside = padded[:, :, 1:, 1:], padded[:, :, 1:, :width], padded[:, :, :height, 1:]  # (m+1, n+1), (m+1, n), (m, n+1)
    y = t.new_empty(batch, channels, height, 2, width, 2)
    y[:, :, :, 0, :, 0] = t[..., 1, 1]
    y[:, :, :, 0, :, 1] = t[..., 1, 2] + beside[..., 1, 0]
    y[:, :, :, 1, :, 0] = t[..., 2, 1] + below[..., 0, 1]
    y[:, :, :, 1, :, 1] = t[..., 2, 2] + beside[..., 2, 0] + below[..., 0, 2] + shifted[..., 0, 0]
    return y.view(batch, channels, 2 * height, 2 * width)[:, :, :out_h, :out_w]


def _wants_taps(deconv: nn.ConvTranspose2d) -> bool:
    """oneDNN's transposed convolution is slow to few output channels and to odd output sizes."""
    return deconv.out_channels <= 4 or tuple(deconv.output_padding) != (1, 1)


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
        if not torch.is_grad_enabled():
            return self._fast(x) if _use_fast_path(x) else self._direct(x)
        h = _fast_layout(self.convs[:2](x))
        return self.fc(self.convs[2:](h)).chunk(2, dim=-1)

    def _direct(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The modules' own kernels on their own weights, without the per-module call overhead (a third of
        the time of one image; the same result bit for bit)."""
        f = nn.functional
        h = x.contiguous()
        for conv in self.convs[::2]:
            h = f.silu(f.conv2d(h, conv.weight, conv.bias, stride=2, padding=1), inplace=True)
        h = f.silu(f.linear(h.flatten(1), self.fc[1].weight, self.fc[1].bias), inplace=True)
        return f.linear(h, self.fc[3].weight, self.fc[3].bias).chunk(2, dim=-1)

    def _build(self, dtype: torch.dtype) -> dict:
        convs = [(c.weight.to(dtype).contiguous(memory_format=torch.channels_last), c.bias.to(dtype)) for c in self.convs[::2]]
        return {"convs": convs, "fc1": None, "fc2": (self.fc[3].weight.to(dtype), self.fc[3].bias.to(dtype))}

    def _fast(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dtype = _compute_dtype(x, self)
        plan = _plan(self, dtype, self._build)
        h = x.to(dtype).contiguous(memory_format=torch.channels_last)
        for weight, bias in plan["convs"]:
            h = nn.functional.silu(nn.functional.conv2d(h, weight, bias, stride=2, padding=1), inplace=True)
        h = h.contiguous(memory_format=torch.channels_last)
        if plan["fc1"] is None:  # needs the feature map's shape: made at the first call
            plan["fc1"] = (_nhwc_columns(self.fc[1].weight, tuple(h.shape[1:])).to(dtype), self.fc[1].bias.to(dtype))
        h = nn.functional.silu(nn.functional.linear(h.permute(0, 2, 3, 1).reshape(h.shape[0], -1), *plan["fc1"]), inplace=True)
        return nn.functional.linear(h, *plan["fc2"]).chunk(2, dim=-1)


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
        if not torch.is_grad_enabled():
            return self._fast(z) if _use_fast_path(z) else self._direct(z)
        h = _fast_layout(self.fc(z).view(-1, *self.start_shape))
        return self.deconvs(h).contiguous()

    def _direct(self, z: torch.Tensor) -> torch.Tensor:
        """As `Encoder._direct`: the modules' kernels without the per-module call overhead."""
        f = nn.functional
        h = f.silu(f.linear(z, self.fc[0].weight, self.fc[0].bias), inplace=True)
        h = _fast_layout(f.silu(f.linear(h, self.fc[2].weight, self.fc[2].bias), inplace=True).view(-1, *self.start_shape))
        deconvs = self.deconvs[::2]
        for i, deconv in enumerate(deconvs):
            h = f.conv_transpose2d(h, deconv.weight, deconv.bias, stride=2, padding=1, output_padding=deconv.output_padding)
            if i < len(deconvs) - 1:
                h = f.silu(h, inplace=True)
        return h.contiguous()

    def _build(self, dtype: torch.dtype) -> dict:
        fc1, fc2 = self.fc[0], self.fc[2]
        stages = []
        for deconv in self.deconvs[::2]:
            if _wants_taps(deconv):
                stages.append(("taps", *_taps(deconv, dtype), tuple(deconv.output_padding)))
            else:
                stages.append(("native", deconv.weight.to(dtype), deconv.bias.to(dtype), tuple(deconv.output_padding)))
        return {"fc1": (fc1.weight.to(dtype), fc1.bias.to(dtype)),
                "fc2": (_nhwc_rows(fc2.weight, self.start_shape).to(dtype), _nhwc_rows(fc2.bias, self.start_shape).to(dtype)),
                "stages": stages}

    def _fast(self, z: torch.Tensor) -> torch.Tensor:
        dtype = _compute_dtype(z, self)
        plan = _plan(self, dtype, self._build)
        f = nn.functional
        h = f.silu(f.linear(z.to(dtype), *plan["fc1"]), inplace=True)
        h = f.silu(f.linear(h, *plan["fc2"]), inplace=True)
        channels, height, width = self.start_shape
        h = h.view(-1, height, width, channels).permute(0, 3, 1, 2)  # channels-last [B, C, H, W], no copy
        last = len(plan["stages"]) - 1
        for i, (how, weight, bias, output_padding) in enumerate(plan["stages"]):
            out_h, out_w = 2 * h.shape[2] - 1 + output_padding[0], 2 * h.shape[3] - 1 + output_padding[1]
            if how == "native":
                h = f.conv_transpose2d(h, weight, bias, stride=2, padding=1, output_padding=output_padding)
            else:
                batch, channels, height, width = h.shape
                taps = f.linear(h.permute(0, 2, 3, 1).reshape(-1, channels), weight, bias)  # h is channels-last: a view
                out_channels = self.deconvs[2 * i].out_channels
                h = _assemble(taps[:, : out_channels * 9].view(batch, height, width, out_channels, 3, 3), out_h, out_w)
            if i < last:
                h = f.silu(h, inplace=True).contiguous(memory_format=torch.channels_last)
        return h.contiguous()


class VAE(
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
    modes = MODES  # "class" included: flat latents
    precisions = ("bf16", "fp16")
    has_elbo = True
    checkpoint_files = (checkpoint.WEIGHTS_NAME, checkpoint.CONFIG_NAME)  # weights first: a pickle-only repo is refused with the reason
    optional_files = (checkpoint.METRICS_NAME, checkpoint.BANK_NAME)


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
        if len(size) != 2 or not all(_is_int(s) and 8 <= s <= 512 for s in size):
            raise ValueError(f"image_size must be an int or [height, width] with sides in [8, 512], got {image_size!r}")
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}")
        if (isinstance(widths, (str, bytes)) or not isinstance(widths, Sequence) or not widths or len(widths) > MAX_STAGES
                or not all(_is_int(w) and 1 <= w <= MAX_WIDTH for w in widths)):
            raise ValueError(f"widths must be a non-empty list of positive ints (at most {MAX_STAGES} of them, each at most "
                             f"{MAX_WIDTH}), got {widths!r}")
        widths = [int(w) for w in widths]
        for name, value in (("latent_dim", latent_dim), ("hidden", hidden)):
            if not (_is_int(value) and 1 <= value <= MAX_FEATURES):
                raise ValueError(f"latent_dim and hidden must be positive ints of at most {MAX_FEATURES}; {name} is {value!r}")
        latent_dim, hidden = int(latent_dim), int(hidden)
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not (math.isfinite(beta) and beta >= 0):
            raise ValueError(f"beta must be >= 0, got {beta!r}")
        if not (_is_int(prior_components) and 0 <= prior_components <= MAX_PRIOR_COMPONENTS):
            raise ValueError(f"prior_components must be an int in [0, {MAX_PRIOR_COMPONENTS}] (0: the standard normal prior), "
                             f"got {prior_components!r}")
        count = _parameter_count(channels, size, widths, hidden, latent_dim)
        if count > MAX_PARAMETERS:  # checked before anything is allocated
            raise ValueError(f"this config makes a VAE of {count:,} parameters ({4 * count / 2**30:.1f} GiB in float32), more than "
                             f"the {MAX_PARAMETERS:,} allowed: lower hidden, latent_dim or widths, or use more conv stages")
        self.channels = channels
        self.image_size = self.sample_size = tuple(size)
        self.latent_dim = latent_dim
        self.likelihood = likelihood
        self.beta = float(beta)
        self.prior_components = int(prior_components)
        heights = _feature_sizes(size[0], len(widths))
        widths_px = _feature_sizes(size[1], len(widths))
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
        if x.numel() and not torch.isfinite(x).all():
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

    # ------------------------------------------------------------ persistence
    @classmethod
    def claims(cls, config: dict[str, Any]) -> bool:
        """Whether a folder's config.json is one of this kind (the loader's kind table asks). The conv VAE reads
        any config that is not a diffusers one, so that a config with wrong keys is explained (unknown keys) rather
        than refused as unknown; it is therefore the last entry of the kind table."""
        return not checkpoint.is_diffusers_config(config)

    @classmethod
    def from_folder(cls, folder: str | os.PathLike, config: dict[str, Any] | None = None, *, device: str | torch.device | None = None,
                    strict: bool = True, **unused) -> "VAE":
        """Rebuild a VAE from a local checkpoint folder's ``config.json`` and load ``model.safetensors`` strictly."""
        folder = Path(folder)
        config = checkpoint.read_config(folder) if config is None else config
        if not cls.claims(config):
            raise checkpoint.CheckpointError(f"{str(folder)!r} holds a diffusers {config.get('_class_name', 'model')}, not a "
                                             "vae-augment VAE; load it with vae_augment.load_vae, which wraps diffusers autoencoders")
        config_path = folder / checkpoint.CONFIG_NAME
        known = set(inspect.signature(cls.__init__).parameters) - {"self"}
        unknown = sorted(set(config) - known)
        if unknown:
            raise checkpoint.CheckpointError(f"{config_path} has unknown keys {unknown}; accepted keys are {sorted(known)}")
        # Everything is checked before memory is allocated: the config's values on a model built on the meta
        # device (shapes only), then those shapes against the weights file's header.
        try:
            with torch.device("meta"):
                skeleton = cls(**config)
        except (TypeError, ValueError) as err:
            raise checkpoint.CheckpointError(f"{config_path} does not describe a valid VAE: {err}") from None
        weights = checkpoint.require_weights(folder, checkpoint.WEIGHTS_NAME)
        found = checkpoint.read_shapes(weights)
        if strict:
            checkpoint.check_shapes({k: tuple(v.shape) for k, v in skeleton.state_dict().items()}, found, weights, config_path,
                                    hints=cls._size_hints(config, found))
        metrics = checkpoint.read_metrics(folder)
        model = cls(**config)
        model.latent_bank = checkpoint.read_latent_bank(folder, model.latent_dim)
        checkpoint.load_safetensors_into(model, weights, strict=strict, device=str(device or "cpu"))
        model.metrics = metrics
        model.name_or_path = str(folder)
        return model.eval()

    @classmethod
    def _size_hints(cls, config: dict[str, Any], found: dict[str, tuple[int, ...]]) -> list[str]:
        """The config keys that disagree with the weights (read from the tensor shapes ``found``), each with the
        value the weights imply and the shapes that say so."""
        defaults = {k: p.default for k, p in inspect.signature(cls.__init__).parameters.items() if k != "self"}
        implied: dict[str, tuple[Any, str]] = {}  # key -> (value the weights imply, the tensor that says so)
        if len(found.get("latent_loc", ())) == 1:
            implied["latent_dim"] = (found["latent_loc"][0], f"latent_loc {found['latent_loc']}")
        if len(found.get("encoder.fc.1.weight", ())) == 2:
            implied["hidden"] = (found["encoder.fc.1.weight"][0], f"encoder.fc.1.weight {found['encoder.fc.1.weight']}")
        if len(found.get("encoder.convs.0.weight", ())) == 4:
            implied["channels"] = (found["encoder.convs.0.weight"][1], f"encoder.convs.0.weight {found['encoder.convs.0.weight']}")
        stages = [found[f"encoder.convs.{2 * i}.weight"] for i in range(MAX_STAGES + 1) if f"encoder.convs.{2 * i}.weight" in found]
        if stages and all(len(shape) == 4 for shape in stages):
            implied["widths"] = ([shape[0] for shape in stages], f"the {len(stages)} encoder.convs.*.weight tensors")
        if len(found.get("prior_logits", ())) == 1:
            implied["prior_components"] = (found["prior_logits"][0], f"prior_logits {found['prior_logits']}")
        elif "encoder.fc.1.weight" in found:  # a full weights file without the mixture: the standard normal prior
            implied["prior_components"] = (0, "no prior_logits")
        implied["likelihood"] = ("gaussian" if "log_scale" in found else "bernoulli", "log_scale " + ("present" if "log_scale" in found else "absent"))
        wrong = []
        for key, (value, evidence) in implied.items():
            given = config.get(key, defaults[key])
            if (list(given) if key == "widths" and isinstance(given, (list, tuple)) else given) != value:
                said = f"says {key}={given!r}" if key in config else f"has no {key} (so the default {given!r})"
                wrong.append(f"{key}: config.json {said}, the weights hold {key}={value!r} ({evidence})")
        return wrong

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *, revision: str | None = None,
                        map_location: str | torch.device = "cpu", strict: bool = True, **download_kwargs) -> "VAE":
        """Rebuild a VAE from ``config.json`` and load ``model.safetensors`` strictly.

        ``pretrained_model_name_or_path`` is a bundled name (``"mnist"``), a local folder or a Hub
        repo id (``"org/name"``, at ``revision``). Pickle weights are never read. `vae_augment.load_vae`
        loads every kind of model; this loads vae-augment VAEs only.
        """
        def fetch(repo_id: str) -> Path:
            try:
                return checkpoint.fetch_files(repo_id, cls.checkpoint_files, cls.optional_files, revision=revision, **download_kwargs)
            except checkpoint.MissingFileError:  # perhaps a diffusers repo: say so (from its config) rather than "no weights"
                try:
                    config = checkpoint.read_config(checkpoint.download_file(repo_id, checkpoint.CONFIG_NAME, revision=revision,
                                                                             **download_kwargs).parent)
                except checkpoint.CheckpointError:
                    config = {}
                if config and not cls.claims(config):
                    raise checkpoint.CheckpointError(f"Hub repo {repo_id!r} holds a diffusers {config.get('_class_name', 'model')}, "
                                                     "not a vae-augment VAE; load it with vae_augment.load_vae") from None
                raise

        folder = checkpoint.resolve(pretrained_model_name_or_path, fetch)
        model = cls.from_folder(folder, device=map_location, strict=strict)
        model.name_or_path = os.fspath(pretrained_model_name_or_path)
        return model

    def save_pretrained(self, save_directory: str | os.PathLike, *, config: dict | None = None, refresh_card: bool = False,
                        **kwargs) -> None:
        """Write ``config.json`` and ``model.safetensors``, the latent bank and ``metrics.json`` where the
        model has them, and a model card if the folder has none (or ``refresh_card``).

        The files are written as one unit (`checkpoint.staged_folder`): an interrupted save leaves the
        previous checkpoint intact, never new weights beside an old config; a latent bank, metrics or
        diffusers files left from an earlier save are removed when this model has none.
        """
        folder = Path(save_directory)
        config = dict(config or self._hub_mixin_config)
        with checkpoint.staged_folder(folder) as stage:
            checkpoint.atomic_save_tensors(stage / checkpoint.WEIGHTS_NAME, self.state_dict(), metadata={"format": "pt"})
            checkpoint.atomic_write_json(stage / checkpoint.CONFIG_NAME, config)
            if self.latent_bank is not None:
                # float16 halves the file; that precision (~1e-3 of the codes' spread) is ample for finding neighbours
                checkpoint.atomic_save_tensors(stage / checkpoint.BANK_NAME, {"latent_bank": self.latent_bank.half()})
            if self.metrics:
                checkpoint.atomic_write_json(stage / checkpoint.METRICS_NAME, self.metrics)
            if refresh_card or not (folder / checkpoint.CARD_NAME).exists():
                checkpoint.atomic_write_bytes(stage / checkpoint.CARD_NAME, checkpoint.model_card(config, self.metrics).encode())

    def push_to_hub(self, repo_id: str, *, private: bool | None = None, token: str | None = None, revision: str | None = None) -> str:
        """Save to a temporary folder and upload it (config, weights, metrics, model card) to ``repo_id``."""
        with tempfile.TemporaryDirectory() as tmp:
            self.save_pretrained(tmp)
            return checkpoint.push(tmp, repo_id, private=private, token=token, revision=revision)
