"""The conv VAE's networks: `Encoder` and `Decoder`, their sizes, and their fast inference path on CPU batches.

`vae_augment.models.conv.VAE` builds one of each from its config; the size bounds and
`parameter_count` let it refuse an absurd config before anything is allocated. Shapes: images
``[B, C, H, W]``, latents ``[B, latent_dim]``.
"""

from __future__ import annotations

import numbers
import weakref
from typing import Any, Sequence

import torch
from torch import nn

# Bounds on the sizes of a config, checked before anything is allocated: an absurd config.json (a latent_dim of
# 10^9) fails with its key named instead of with the allocator's "can't allocate memory" after minutes of swapping.
MAX_FEATURES = 65_536  # latent_dim and hidden
MAX_WIDTH = 4_096  # channels of one conv stage
MAX_STAGES = 9  # 512 pixels halve to 1 in nine stages
MAX_PARAMETERS = 2**30  # 4 GiB of float32 weights
MAX_PRIOR_COMPONENTS = 65_536


def is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def parameter_count(channels: int, size: Sequence[int], widths: Sequence[int], hidden: int, latent_dim: int) -> int:
    """Weights of the encoder and decoder (both fully connected pairs and both conv stacks), before building them."""
    heights, widths_px = feature_sizes(size[0], len(widths)), feature_sizes(size[1], len(widths))
    flat = widths[-1] * heights[-1] * widths_px[-1]
    convs = sum(c_in * c_out * 9 + c_out for c_in, c_out in zip([channels, *widths], widths))
    deconvs = sum(c_in * c_out * 9 + c_out for c_in, c_out in zip(widths[::-1], [*widths[-2::-1], channels]))
    fc = (flat * hidden + hidden) + (hidden * 2 * latent_dim + 2 * latent_dim) + (latent_dim * hidden + hidden) + (hidden * flat + flat)
    return convs + deconvs + fc + 2 * latent_dim + channels


def feature_sizes(size: int, stages: int) -> list[int]:
    """Spatial sizes after each stride-2 conv (k=3, p=1 gives ceil(n / 2))."""
    sizes = [size]
    for _ in range(stages):
        sizes.append((sizes[-1] + 1) // 2)
    return sizes


def _fast_layout(h: torch.Tensor) -> torch.Tensor:
    """Channels-last activations make oneDNN's (transposed) convolutions faster on CPU batches, but send
    batches of a few images to a slow fallback kernel; so only for batches of 16 or more
    (docs/benchmarks.md#speed)."""
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
# `_assemble`; docs/benchmarks.md#speed has what each measured). The rearranged weights are made once
# per dtype and device and remade whenever a parameter changes (its version counter), so training and
# loading never see stale ones. Results equal the module path's up to float rounding (tests/test_model.py).
FAST_BATCH = 16
_PLANS: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()


def _use_fast_path(x: torch.Tensor) -> bool:
    """Not under `torch.compile`: the plan cache compares data pointers, which breaks the graph; the compiler
    chooses layouts itself, from the modules' own path (`_direct`)."""
    return (x.device.type == "cpu" and x.shape[0] >= FAST_BATCH and not torch.is_grad_enabled()
            and not torch.compiler.is_compiling())


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
