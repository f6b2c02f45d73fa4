"""Augmentation transforms: `VAEAugment` (torchvision v2) and `LatentMix` (label-aware batches).

The tensor work is one plain function, `augment_batch`, on ``[B, C, H, W]`` float images in [0, 1];
the classes only draw parameters, convert types at their edges and call it.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
from typing import Any

import PIL.Image
import torch
from torch import nn
from torchvision import tv_tensors
from torchvision.transforms.v2 import Transform
from torchvision.transforms.v2._utils import is_pure_tensor

from .data import convert_channels, pil_to_float, resize
from .latent import check_mode_strength, feature_space_mix, perturb, same_class_partners
from .model import VAE, DiagonalGaussian

RANGE_TOLERANCE = 1e-3  # float images may exceed [0, 1] by rounding, not more
PRECISIONS = {"bf16": torch.bfloat16, "fp16": torch.float16}  # autocast dtypes for `precision`
DEFAULT_STRENGTH = 0.2  # data-relative units: on MNIST ~96% of variants keep their label (benchmarks/quality.py)


def _as_vae(vae) -> VAE:
    from .backbones import KINDS, DiffusersVAE
    from .hub import load_vae

    if isinstance(vae, (str, os.PathLike)):
        return load_vae(vae)
    if type(vae).__name__ in KINDS:  # a diffusers model given directly: wrap a copy, so the caller's keeps its mode and dtype
        return load_vae(copy.deepcopy(vae))
    if not isinstance(vae, (VAE, DiffusersVAE)):
        raise TypeError("vae must be a vae_augment.VAE, a diffusers AutoencoderKL/AutoencoderTiny, or a checkpoint "
                        f"name/folder/Hub id, got {type(vae).__name__}")
    return vae


def check_mode_supported(vae, mode: str) -> None:
    """Refuse a mode this model cannot do: "neighbour" without a latent bank, "posterior" on deterministic latents."""
    if mode == "neighbour" and vae.latent_bank is None:
        raise ValueError("mode 'neighbour' needs a checkpoint with a latent bank (latent_bank.safetensors, written by "
                         "vae-augment train); this model has none")
    if mode == "posterior" and getattr(vae, "deterministic", False):
        raise ValueError(f"mode 'posterior' needs a posterior with a variance; this {vae.kind} has deterministic "
                         "latents: use mode='data'")


def _prepare_vae(vae, device) -> VAE:
    """The model to run; a model given for another device is copied there, never moved in place,
    so the caller's model (perhaps used elsewhere, or still training) is left as it was."""
    vae = _as_vae(vae)
    if device is not None and torch.device(device) != vae.device:
        vae = copy.deepcopy(vae).to(device)
    return vae


# ------------------------------------------------------------------ the functional core
def to_model_space(vae: VAE, x: torch.Tensor) -> torch.Tensor:
    """Convert ``[B, C, H, W]`` float images to the model's channels and size (a model of any size,
    ``image_size`` None, pads them to its downscale factor instead: see `DiffusersVAE.to_model`)."""
    if x.shape[1] not in (1, 3, 4):
        raise ValueError(f"images must have 1 (gray), 3 (RGB) or 4 (RGBA) channels, got {x.shape[1]} (shape {tuple(x.shape)})")
    x = convert_channels(x, vae.channels)
    return vae.to_model(x) if vae.image_size is None else resize(x, vae.image_size)


def _to_input_size(vae, y: torch.Tensor, size) -> torch.Tensor:
    return vae.from_model(y, size) if vae.image_size is None else resize(y, size)


def _from_model_space(vae, y: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    channels = 3 if like.shape[1] == 4 else like.shape[1]
    return convert_channels(_to_input_size(vae, y, like.shape[-2:]), channels)


def latent_shape(vae, size) -> tuple[int, ...]:
    """Shape of one latent (of the noise to draw) for an image of ``size = (H, W)``."""
    return tuple(vae.latent_shape(*size))


def check_precision(vae, precision: str | None) -> None:
    if precision is not None and precision not in PRECISIONS:
        raise ValueError(f"precision must be None (float32), 'bf16' or 'fp16', got {precision!r}")
    if precision is not None and not isinstance(vae, VAE):
        raise ValueError("precision applies to vae-augment's own VAEs; a diffusers backbone takes dtype= when loaded")


def _autocast(vae, precision: str | None):
    if precision is None:
        return contextlib.nullcontext()
    return torch.autocast(vae.device.type, dtype=PRECISIONS[precision])


def augment_batch(vae: VAE, x: torch.Tensor, noise: torch.Tensor, mode: str = "data", strength: float = DEFAULT_STRENGTH,
                  residual: bool = False, apply: torch.Tensor | None = None,
                  posterior: DiagonalGaussian | None = None, precision: str | None = None) -> torch.Tensor:
    """Encode, perturb the latent, decode: the augmentation on ``x: [B, C, H, W]`` float in [0, 1].

    ``noise: [B, *latent_shape(vae, x.shape[-2:])]`` standard normal draws, ``[B, latent_dim]`` for a
    `VAE` (see `latent.perturb` for ``mode`` and ``strength``); ``apply: [B]`` bool chooses which images change (the rest are returned as they
    are). With ``residual``, the result is ``x + decode(z') - decode(mean)``: only the decoded
    change is added, so the original's sharp detail survives. Images of another size or channel
    count than the model's are converted for it and the result converted back. ``posterior``
    (for the rows of ``x``) skips the encoder when already known. ``precision="bf16"`` (or ``"fp16"``)
    runs the VAE under autocast: about twice as fast on CPUs with AVX512-BF16 or AMX and on GPUs,
    with pixels a few 1/255 steps from the float32 result. The result has ``x``'s dtype and
    device and is an ordinary tensor (usable by autograd downstream).
    """
    if x.ndim != 4:
        raise ValueError(f"x must be [B, C, H, W], got {tuple(x.shape)}")
    expected = (x.shape[0], *latent_shape(vae, x.shape[-2:]))
    if tuple(noise.shape) != expected:
        raise ValueError(f"noise must have shape {list(expected)} for x of shape {list(x.shape)}, got {list(noise.shape)}")
    check_precision(vae, precision)
    with torch.inference_mode(), _autocast(vae, precision):
        out = _augment_batch(vae, x, noise, mode, strength, residual, apply, posterior)
    return out.clone()


def _augment_batch(vae, x, noise, mode, strength, residual, apply, posterior) -> torch.Tensor:
    n = x.shape[0]
    rows = None  # None: every image changes (the fast path, no gather/scatter)
    if apply is not None and not bool(apply.all()):
        rows = apply.nonzero().squeeze(1)
        if rows.numel() == 0:
            return x.clone()
        noise = noise[rows.to(noise.device)]
        if posterior is not None:
            posterior = posterior[rows.to(posterior.mean.device)]
    if n == 0:
        return x.clone()
    selected = x if rows is None else x[rows.to(x.device)]
    device = vae.device
    if posterior is None:
        posterior = vae.encode(to_model_space(vae, selected.to(device, vae.latent_scale.dtype)))
    else:
        posterior = posterior.to(device)
    noise = noise.to(device, posterior.mean.dtype)
    if mode == "prior":
        noise = vae.prior_sample(noise)
    z = perturb(posterior.mean, posterior.std, noise, mode, strength, vae.latent_scale, vae.latent_bank)
    if residual:
        decoded = vae.decode(torch.cat([z, posterior.mean])).float()
        delta = _delta_to_input(vae, decoded[: z.shape[0]] - decoded[z.shape[0]:], selected)
        result = (selected + delta.to(selected)).clamp_(0, 1)
    else:
        result = _from_model_space(vae, vae.decode(z), selected).to(selected)
        if selected.shape[1] == 4:  # keep the alpha channel
            result = torch.cat([result, selected[:, 3:]], 1)
    if rows is None:
        return result
    out = x.clone()
    out[rows.to(x.device)] = result
    return out


def _delta_to_input(vae, delta: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A change in model space -> the input's size and channels (a gray change applies to every colour)."""
    if vae.image_size is None:
        delta = vae.from_model(delta, like.shape[-2:])
    elif tuple(delta.shape[-2:]) != tuple(like.shape[-2:]):
        delta = torch.nn.functional.interpolate(delta, size=like.shape[-2:], mode="bilinear", align_corners=False)
    c = like.shape[1]
    if delta.shape[1] == 1 and c in (3, 4):
        delta = delta.expand(-1, 3, -1, -1)
    elif delta.shape[1] == 3 and c == 1:
        delta = convert_channels(delta, 1)
    if c == 4:
        delta = torch.cat([delta, torch.zeros_like(delta[:, :1])], 1)
    return delta


# ------------------------------------------------------------------ type conversion at the edges
def image_to_float(inpt: Any) -> tuple[torch.Tensor, dict[str, Any]]:
    """PIL / tensor ``[H, W]``, ``[C, H, W]``, ``[B, C, H, W]`` (uint8 or float) -> float ``[B, C, H, W]`` + how to undo."""
    if isinstance(inpt, PIL.Image.Image):
        channels = 1 if inpt.mode in ("L", "1", "I", "I;16", "I;16B", "I;16L", "F", "LA") else 3
        meta = {"kind": "pil", "mode": inpt.mode}
        if inpt.mode in ("RGBA", "LA", "PA"):
            meta["alpha"] = inpt.getchannel("A")
        return pil_to_float(inpt, channels).unsqueeze(0), meta
    if not isinstance(inpt, torch.Tensor):
        raise TypeError(f"expected a PIL image or a torch.Tensor image, got {type(inpt).__name__}")
    if inpt.ndim not in (2, 3, 4):
        raise ValueError(f"image tensors must have 2 ([H, W]), 3 ([C, H, W]) or 4 ([B, C, H, W]) dimensions, got shape {tuple(inpt.shape)}")
    meta = {"kind": "tensor", "ndim": inpt.ndim, "dtype": inpt.dtype, "device": inpt.device}
    x = inpt.as_subclass(torch.Tensor)
    x = x.reshape(1, 1, *x.shape) if x.ndim == 2 else x.unsqueeze(0) if x.ndim == 3 else x
    if x.dtype == torch.uint8:
        x = x.float().div_(255.0)
    elif x.is_floating_point():
        if x.numel():
            low, high = (v.item() for v in torch.aminmax(x))  # NaN and inf propagate into min/max
            if not (math.isfinite(low) and math.isfinite(high)):
                raise ValueError("image contains NaN or infinite values; expected finite floats in [0, 1]")
            if low < -RANGE_TOLERANCE or high > 1 + RANGE_TOLERANCE:
                raise ValueError(f"float images must be in [0, 1] (got values in [{low:.4g}, {high:.4g}]); "
                                 "scale them first, or pass uint8 images in [0, 255]")
        x = x.float().clamp(0, 1)
    else:
        raise TypeError(f"image tensors must be uint8 in [0, 255] or float in [0, 1], got dtype {x.dtype}")
    return x, meta


def float_to_image(y: torch.Tensor, meta: dict[str, Any], like: Any) -> Any:
    """Undo `image_to_float`: same type, dtype, shape and device as ``like``."""
    if meta["kind"] == "pil":
        array = y[0].mul(255).round_().clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy()
        image = PIL.Image.fromarray(array[..., 0] if array.shape[2] == 1 else array, mode="L" if array.shape[2] == 1 else "RGB")
        if "alpha" in meta:
            image = image.convert("RGBA" if meta["mode"] != "LA" else "LA")
            image.putalpha(meta["alpha"])
        if image.mode != meta["mode"]:
            image = image.convert(meta["mode"])
        return image
    if meta["dtype"] == torch.uint8:
        y = y.mul(255).round_().clamp_(0, 255).to(torch.uint8)
    else:
        y = y.to(meta["dtype"])
    y = y.to(meta["device"])
    if meta["ndim"] == 2:
        y = y[0, 0]
    elif meta["ndim"] == 3:
        y = y[0]
    return tv_tensors.wrap(y, like=like) if isinstance(like, tv_tensors.TVTensor) else y


def _batch_size(inpt: Any) -> int:
    return inpt.shape[0] if isinstance(inpt, torch.Tensor) and inpt.ndim == 4 else 1


def _image_size(inpt: Any) -> tuple[int, int]:
    if isinstance(inpt, PIL.Image.Image):
        return inpt.height, inpt.width
    return tuple(inpt.shape[-2:]) if isinstance(inpt, torch.Tensor) and inpt.ndim >= 2 else (0, 0)


def _worker_generator(generator: torch.Generator | None, state: dict) -> torch.Generator | None:
    """In a DataLoader worker, an explicit generator is re-seeded once from its own seed mixed with
    the worker's seed, so workers draw different variants, different user seeds give different
    runs, and a run repeats under the same ``torch.manual_seed``."""
    if generator is None:
        return None
    state.setdefault("base_seed", generator.initial_seed())
    info = torch.utils.data.get_worker_info()
    if info is not None and state.get("worker") != (info.id, info.seed):
        generator.manual_seed((state["base_seed"] * 1_000_003 + info.seed) % (2**63))
        state["worker"] = (info.id, info.seed)
    return generator


# ------------------------------------------------------------------ VAEAugment
class VAEAugment(Transform):
    """Replace images by decoded latents drawn near their posteriors (a torchvision v2 transform).

    Args:
        vae: a `VAE`, or a checkpoint spec for `load_vae` (``"mnist"``, a folder, a Hub repo id).
        strength: how far latents move. In ``"data"`` mode (default) in units of the spread of
            posterior means over the training set (0 to 4); in ``"posterior"`` mode in posterior
            standard deviations (0 to 4); in ``"prior"`` mode the weight of a prior sample (0 to 1).
            Strength 0 gives the reconstruction (or, with ``residual``, the input).
        mode: ``"data"``, ``"posterior"`` or ``"prior"`` (see `latent.perturb`).
        residual: return ``x + decode(z') - decode(mean)`` so detail the VAE blurs survives.
        p: probability of augmenting each image.
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
    ``last_params``; `replay` applies them again.
    """

    _transformed_types = (is_pure_tensor, tv_tensors.Image, PIL.Image.Image)

    def __init__(self, vae, strength: float = DEFAULT_STRENGTH, mode: str = "data", residual: bool = False, p: float = 1.0,
                 same_on_batch: bool = False, generator: torch.Generator | None = None, device: str | torch.device | None = None,
                 precision: str | None = None):
        super().__init__()
        check_mode_strength(mode, strength)
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 1:
            raise ValueError(f"p must be a probability in [0, 1], got {p!r}")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        self.vae = _prepare_vae(vae, device)
        check_mode_supported(self.vae, mode)
        check_precision(self.vae, precision)
        self.precision = precision
        self.strength = float(strength)
        self.mode = mode
        self.residual = bool(residual)
        self.p = float(p)
        self.same_on_batch = bool(same_on_batch)
        self.generator = generator
        self.last_params: dict[str, Any] | None = None
        self._replaying: dict[str, Any] | None = None
        self._worker_state: dict = {}

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        """Draw ``noise: [B, latent_dim]`` and ``apply: [B]`` for the images in ``flat_inputs``."""
        sizes = {_batch_size(inpt) for inpt in flat_inputs}
        if len(sizes) > 1:
            raise ValueError(f"all images in one call must have the same batch size, got {sorted(sizes)}")
        n = sizes.pop() if sizes else 1
        if self._replaying is not None:
            return self._replaying
        image_sizes = {_image_size(inpt) for inpt in flat_inputs}
        if self.vae.image_size is None and len(image_sizes) > 1:  # spatial latents: one noise shape per call
            raise ValueError(f"with a model of spatial latents, all images in one call must have one size, got {sorted(image_sizes)}")
        params = self.draw(n, image_sizes.pop() if image_sizes else None)
        self.last_params = params
        return params

    def draw(self, n: int, size: tuple[int, int] | None = None) -> dict[str, Any]:
        """Parameters for ``n`` images of ``size = (H, W)``: standard normal ``noise [n, *latent_shape]``
        (``[n, latent_dim]`` for a `VAE`, whatever the size) and ``apply [n]`` (bool)."""
        if size is None and self.vae.image_size is None:
            raise ValueError("draw needs the image size (H, W) for a model of spatial latents")
        generator = _worker_generator(self.generator, self._worker_state)
        shape = latent_shape(self.vae, size or self.vae.image_size)
        rows = 1 if self.same_on_batch else n
        noise = torch.randn(rows, *shape, generator=generator)
        apply = torch.rand(rows, generator=generator) < self.p if self.p < 1 else torch.ones(rows, dtype=torch.bool)
        if self.same_on_batch:
            noise, apply = noise.expand(n, *shape), apply.expand(n)
        return {"noise": noise, "apply": apply}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        x, meta = image_to_float(inpt)
        if x.shape[0] != params["noise"].shape[0]:
            raise ValueError(f"params were drawn for {params['noise'].shape[0]} images, got a batch of {x.shape[0]}")
        y = augment_batch(self.vae, x, params["noise"], self.mode, self.strength, self.residual, params["apply"],
                          precision=self.precision)
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

    def extra_repr(self) -> str:
        return (f"strength={self.strength}, mode={self.mode!r}, residual={self.residual}, p={self.p}, "
                f"same_on_batch={self.same_on_batch}" + (f", precision={self.precision!r}" if self.precision else ""))


# ------------------------------------------------------------------ LatentMix
class LatentMix(nn.Module):
    """Label-aware batch augmentation in latent space (DeVries & Taylor, 2017).

    Called on ``(images [B, C, H, W], labels [B])`` like ``v2.MixUp``; each image's code moves
    relative to the code of another image of the same class in the batch: extrapolation
    c' = c_j + lam (c_j - c_k) (the variant DeVries & Taylor found most useful) or interpolation
    c' = c_j + lam (c_k - c_j). Labels are returned unchanged (the class is kept); an image with no
    classmate in the batch is left as it is.

    Args:
        vae: a `VAE` or checkpoint spec.
        method: ``"extrapolate"`` (default) or ``"interpolate"``.
        lam: a float, or ``(low, high)`` to draw lam uniformly per image (0 to 2).
        p: probability of changing each image.
        residual: add only the decoded change to the input.
        generator: a CPU `torch.Generator`; default: the global torch RNG.
    """

    def __init__(self, vae, method: str = "extrapolate", lam: float | tuple[float, float] = 0.5, p: float = 1.0,
                 residual: bool = False, generator: torch.Generator | None = None):
        super().__init__()
        if method not in ("extrapolate", "interpolate"):
            raise ValueError(f"method must be 'extrapolate' or 'interpolate', got {method!r}")
        low, high = (lam, lam) if isinstance(lam, (int, float)) else tuple(lam)
        if not 0 <= low <= high <= 2:
            raise ValueError(f"lam must be a number or a (low, high) range within [0, 2], got {lam!r}")
        if not 0 <= p <= 1:
            raise ValueError(f"p must be a probability in [0, 1], got {p!r}")
        self.vae = _prepare_vae(vae, None)
        self.method, self.lam_range, self.p, self.residual, self.generator = method, (float(low), float(high)), float(p), bool(residual), generator
        self.last_params: dict[str, Any] | None = None
        self._worker_state: dict = {}

    def make_params(self, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        generator = _worker_generator(self.generator, self._worker_state)
        n = labels.shape[0]
        low, high = self.lam_range
        params = {
            "partner": same_class_partners(labels.cpu(), torch.rand(n, generator=generator)),
            "lam": low + (high - low) * torch.rand(n, generator=generator),
            "apply": torch.rand(n, generator=generator) < self.p,
        }
        self.last_params = params
        return params

    def forward(self, *inputs, params: dict[str, torch.Tensor] | None = None):
        """``mix(images, labels)`` or ``mix((images, labels))`` -> ``(images', labels)``."""
        if len(inputs) == 1 and isinstance(inputs[0], (tuple, list)):
            inputs = tuple(inputs[0])
        if len(inputs) != 2:
            raise TypeError(f"LatentMix takes (images, labels), got {len(inputs)} inputs")
        images, labels = inputs
        if not isinstance(labels, torch.Tensor) or labels.ndim != 1:
            raise ValueError(f"labels must be a 1-D tensor of class indices, got {getattr(labels, 'shape', type(labels))}")
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[0] != labels.shape[0]:
            raise ValueError(f"images must be [B, C, H, W] with B = len(labels) = {labels.shape[0]}, got {tuple(getattr(images, 'shape', ()))}")
        params = self.make_params(labels) if params is None else params
        x, meta = image_to_float(images)
        apply = params["apply"] & (params["partner"] != torch.arange(labels.shape[0]))
        y = latent_mix_batch(self.vae, x, params["partner"], params["lam"], apply, self.method, self.residual)
        return float_to_image(y, meta, images), labels


def latent_mix_batch(vae: VAE, x: torch.Tensor, partner: torch.Tensor, lam: torch.Tensor, apply: torch.Tensor,
                     method: str = "extrapolate", residual: bool = False) -> torch.Tensor:
    """The tensor operation behind `LatentMix` on ``x: [B, C, H, W]`` float in [0, 1]; returns an ordinary tensor."""
    with torch.inference_mode():
        out = _latent_mix_batch(vae, x, partner, lam, apply, method, residual)
    return out.clone()


def _latent_mix_batch(vae, x, partner, lam, apply, method, residual) -> torch.Tensor:
    out = x.clone()
    if x.shape[0] == 0 or not apply.any():
        return out
    device = vae.device
    mean = vae.encode(to_model_space(vae, x.to(device))).mean
    z = feature_space_mix(mean, partner.to(device), lam.to(device), method)
    rows = apply.nonzero().squeeze(1)
    if residual:
        decoded = vae.decode(torch.cat([z[rows.to(device)], mean[rows.to(device)]]))
        delta = _delta_to_input(vae, decoded[: rows.numel()] - decoded[rows.numel():], x[rows])
        out[rows] = (x[rows] + delta.to(x)).clamp_(0, 1)
    else:
        out[rows] = _from_model_space(vae, vae.decode(z[rows.to(device)]), x[rows]).to(x)
    return out


class AugmentCollate:
    """A DataLoader ``collate_fn`` that collates a batch, then applies a `VAEAugment` to its images at once.

    Inside DataLoader workers this runs the VAE on whole batches (one draw per image) instead of
    one image at a time, several times faster on CPU. Samples are images or tuples whose first
    entry is the image (uint8 or float ``[C, H, W]`` tensors); the rest is collated as usual.
    """

    def __init__(self, augment: VAEAugment):
        if not isinstance(augment, VAEAugment):
            raise TypeError(f"augment must be a VAEAugment, got {type(augment).__name__}")
        self.augment = augment

    def __call__(self, samples):
        from torch.utils.data import default_collate

        batch = default_collate(samples)
        if isinstance(batch, list):  # what default_collate makes of (image, label, ...) samples
            return [self.augment(batch[0]), *batch[1:]]
        return self.augment(batch)


def worker_init_fn(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: one intra-op thread per worker, so workers don't oversubscribe cores."""
    torch.set_num_threads(1)


