"""Pixel conversion at the edges: PIL images, numpy arrays and tensors <-> float ``[B, C, H, W]`` in [0, 1].

Every adapter (the torchvision and albumentations transforms, the datasets, the app, offline
generation) converts here and nowhere else. Nothing in this module knows about models.

PIL images come back in their own mode, at their own scale (`image_to_float` / `float_to_image`):

- 8-bit modes (``1``, ``L``, ``LA``, ``P``, ``PA``, ``RGB``, ``RGBA``, ``RGBX``, ``CMYK``, ``YCbCr``):
  white is 255. Alpha is composited on white for the model and put back unchanged; ``1`` comes back
  thresholded at half (not dithered); ``P``/``PA`` in their own palette (each pixel the nearest
  opaque entry, not dithered), with their transparency, and pixels transparent in the input keep
  their entry; ``CMYK`` and ``YCbCr`` go through Pillow's conversion to RGB and back (same colours;
  ``CMYK`` comes back with K = 0).
- 16-bit and 32-bit integer gray (``I;16``, ``I;16L``, ``I;16B``, ``I``): white is 65535 when any
  pixel exceeds 255, else 255 (8-bit values in a wider mode, as ``image.convert("I")`` makes them).
- float gray (``F``): white is 1 when every pixel is within [0, 1], 255 within [0, 255], else 65535.
- values outside [0, 65535], NaN or infinity, and every other mode (``LAB``, ``HSV``, ``La``, ...)
  are refused with a ValueError. See `pil_scale`.

Images are refused with zero height or width, or above `MAX_PIXELS` pixels (before any conversion).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import PIL.Image
import torch
from torch.nn import functional as F
from torchvision import tv_tensors

RANGE_TOLERANCE = 1e-3  # float images may exceed [0, 1] by rounding, not more
# images above this many pixels each are refused at once (8K UHD, 7680x4320, fits): a model works at its own size,
# so a larger image only costs memory and time (several float copies of 256 MB for an 8000x8000 gray image)
MAX_PIXELS = 2**25
PIL_MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "I;16", "I;16L", "I;16B", "I", "F")
GRAY_MODES = ("L", "1", "I", "I;16", "I;16B", "I;16L", "F", "LA")
ALPHA_MODES = ("RGBA", "LA", "PA")


# ------------------------------------------------------------------ channels and size
def convert_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """Gray <-> RGB for ``[..., C, H, W]`` float images (ITU-R 601 luma for RGB -> gray); RGBA drops alpha."""
    c = x.shape[-3]
    if c == channels:
        return x
    if c == 1 and channels == 3:
        return x.expand(*x.shape[:-3], 3, *x.shape[-2:]).contiguous()
    if c == 3 and channels == 1:
        weights = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype, device=x.device).view(3, 1, 1)
        return (x * weights).sum(-3, keepdim=True)
    if c == 4 and channels in (1, 3):
        return convert_channels(x[..., :3, :, :], channels)
    raise ValueError(f"cannot convert images with {c} channels to {channels}; accepted: 1 (gray), 3 (RGB), 4 (RGBA)")


def resize(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear (antialiased) resize of ``[B, C, H, W]`` float images to ``size = (H', W')``, clamped to [0, 1]."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", antialias=True, align_corners=False).clamp_(0, 1)


def resize_change(delta: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear resize of a signed change ``[B, C, H, W]`` (not clamped: it may be negative)."""
    if tuple(delta.shape[-2:]) == tuple(size):
        return delta
    return F.interpolate(delta, size=tuple(size), mode="bilinear", antialias=True, align_corners=False)


def change_to_channels(delta: torch.Tensor, channels: int) -> torch.Tensor:
    """A change in one channel layout -> ``channels`` (1, 3, or 4 with a zero alpha change); a gray
    change applies to every colour."""
    if delta.shape[1] == 1 and channels in (3, 4):
        delta = delta.expand(-1, 3, -1, -1)
    elif delta.shape[1] == 3 and channels == 1:
        delta = convert_channels(delta, 1)
    if channels == 4:
        delta = torch.cat([delta, torch.zeros_like(delta[:, :1])], 1)
    return delta


# ------------------------------------------------------------------ float <-> 8 bits
def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Float in [0, 1] -> uint8 in [0, 255], rounded to nearest (the one place this rounding is written)."""
    return x.detach().float().mul(255).round_().clamp_(0, 255).to(torch.uint8)


def to_pil(image: torch.Tensor) -> PIL.Image.Image:
    """``[C, H, W]`` float in [0, 1] (C = 1 or 3) -> an 8-bit PIL image (L or RGB)."""
    array = to_uint8(image).permute(1, 2, 0).cpu().numpy()
    if array.shape[2] == 1:
        return PIL.Image.fromarray(np.ascontiguousarray(array[..., 0]), mode="L")
    return PIL.Image.fromarray(np.ascontiguousarray(array), mode="RGB")


def float_images(array, channels: int | None = None) -> torch.Tensor:
    """uint8 ``[N, H, W]`` / ``[N, H, W, C]`` / ``[N, C, H, W]`` (as a dataset stores them) -> float ``[N, C, H, W]``."""
    x = torch.as_tensor(np.asarray(array))
    if x.ndim == 3:
        x = x.unsqueeze(1)
    elif x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        x = x.permute(0, 3, 1, 2)
    x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
    return convert_channels(x, channels) if channels else x


INTEGER_MODES = ("I;16", "I;16B", "I;16L", "I")  # high-bit-depth gray
FLOAT_MODE = "F"


def check_image_size(height: int, width: int, what: str | None = None) -> None:
    """Refuse an image of zero height or width, or of more than `MAX_PIXELS` pixels (``what`` describes it)."""
    if height < 1 or width < 1:
        raise ValueError(f"image height and width must be at least 1 pixel, got {what or f'{height}x{width} (height x width)'}")
    if height * width > MAX_PIXELS:
        raise ValueError(f"images may have at most {MAX_PIXELS:,} pixels each (2**25; 8K UHD, 7680x4320, fits), got "
                         f"{height}x{width} (height x width) = {height * width:,} pixels: resize them first (e.g. v2.Resize)")


def check_pil_mode(image: PIL.Image.Image) -> None:
    if image.mode not in PIL_MODES:
        raise ValueError(f"PIL images of mode {image.mode!r} are not supported; accepted modes: {', '.join(PIL_MODES)} "
                         "(convert it to one of them first)")


def pil_channels(mode: str) -> int:
    """The channels a PIL image of ``mode`` is read as: 1 for gray modes, else 3 (alpha is kept aside)."""
    return 1 if mode in GRAY_MODES else 3


def pil_scale(image: PIL.Image.Image) -> float:
    """The value that means white for a PIL image: 255 for 8-bit modes; for 16-bit and 32-bit integer
    gray (``I;16``, ``I``) 65535 when any pixel exceeds 255, else 255 (8-bit values stored in a wider
    mode); for float gray (``F``) 1 when every pixel is within [0, 1], 255 when within [0, 255], else
    65535. Values outside [0, 65535] (or non-finite floats) and modes outside `PIL_MODES` are refused:
    no scale would be right."""
    check_pil_mode(image)
    if image.mode not in INTEGER_MODES and image.mode != FLOAT_MODE:
        return 255.0
    if image.width == 0 or image.height == 0:
        return 255.0
    array = np.asarray(image)  # not getextrema: it skips NaN unless it is the first pixel, and refuses I;16B
    low, high = float(array.min()), float(array.max())  # NaN propagates into both
    if not (math.isfinite(low) and math.isfinite(high)) or low < 0 or high > 65535:
        raise ValueError(f"a PIL image of mode {image.mode!r} must hold finite values in [0, 65535] (got [{low:.4g}, "
                         f"{high:.4g}]); accepted: 8-bit modes, 16-bit gray, and float gray in [0, 1], [0, 255] or [0, 65535]")
    if image.mode == FLOAT_MODE and high <= 1:
        return 1.0
    return 255.0 if high <= 255 else 65535.0


def pil_to_float(image: PIL.Image.Image, channels: int, scale: float | None = None) -> torch.Tensor:
    """A PIL image of a mode in `PIL_MODES` -> ``[channels, H, W]`` float in [0, 1] (transparency composited
    on white; 16-bit, 32-bit and float gray divided by ``scale``, by default `pil_scale` of the image:
    pass the scale of the full image when ``image`` is a downscaled copy)."""
    check_image_size(image.height, image.width, f"a {image.width}x{image.height} (width x height) PIL image")
    if scale is None:
        scale = pil_scale(image)
    if image.mode in INTEGER_MODES or image.mode == FLOAT_MODE:
        array = np.asarray(image, dtype=np.float32) / scale
        return convert_channels(torch.from_numpy(array).clamp_(0, 1).unsqueeze(0), channels)
    if image.mode in ALPHA_MODES or (image.mode == "P" and "transparency" in image.info):
        # composite on white, the usual background of scanned or drawn images
        rgba = image.convert("RGBA")
        image = PIL.Image.alpha_composite(PIL.Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    image = image.convert("L" if channels == 1 else "RGB")
    x = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).float().div_(255.0)
    return x.unsqueeze(0) if x.ndim == 2 else x.permute(2, 0, 1).contiguous()


def float_to_pil(y: torch.Tensor, mode: str, scale: float = 255.0) -> PIL.Image.Image:
    """``[C, H, W]`` float in [0, 1] -> a PIL image of ``mode`` at ``scale`` (see `pil_scale`): 16-bit, 32-bit
    and float gray at their own scale, every other mode converted from 8-bit gray or RGB."""
    if mode in INTEGER_MODES or mode == FLOAT_MODE:
        gray = convert_channels(y.unsqueeze(0), 1)[0, 0].detach().float().cpu().numpy() * scale
        if mode == FLOAT_MODE:
            return PIL.Image.fromarray(np.ascontiguousarray(gray, dtype=np.float32))  # mode F
        values = np.clip(np.rint(gray), 0, 65535)
        if mode == "I":
            return PIL.Image.fromarray(np.ascontiguousarray(values, dtype=np.int32))  # mode I
        order = ">u2" if mode == "I;16B" else "<u2"  # I;16 and I;16L are little-endian
        return PIL.Image.frombytes(mode, (gray.shape[1], gray.shape[0]), values.astype(order).tobytes())
    image = to_pil(y)
    if mode == "1":
        return image.convert("1", dither=PIL.Image.Dither.NONE)  # thresholded at half: dithering would speckle the image
    return image if image.mode == mode else image.convert(mode)


def uncomposite(y: torch.Tensor, like: PIL.Image.Image) -> torch.Tensor:
    """The colour of a result ``y: [C, H, W]`` computed on ``like`` (an image with alpha) composited on
    white: ``like``'s own colour plus the change divided by alpha, so that the result, shown on white with
    ``like``'s alpha, looks like ``y``, and a zero change gives back ``like``'s colour exactly (not the
    white it was composited on); fully transparent pixels keep their colour."""
    channels = y.shape[0]
    composited = pil_to_float(like, channels)  # what the model saw
    colour = pil_to_float(like.convert("L" if channels == 1 else "RGB"), channels)  # alpha dropped, not composited
    alpha = torch.from_numpy(np.asarray(like.convert("RGBA").getchannel("A"), dtype=np.float32) / 255.0)
    change = y.detach().float().cpu() - composited
    return torch.where(alpha > 0, colour + change / alpha.clamp(min=1 / 255), colour).clamp_(0, 1)


def to_palette(rgb: PIL.Image.Image, like: PIL.Image.Image) -> PIL.Image.Image:
    """An 8-bit RGB image in the palette of ``like`` (mode P or PA): each pixel the nearest opaque entry,
    without dithering; pixels (partly) transparent in ``like`` keep their entry, and ``like``'s
    transparency, alpha band (PA) and other info are kept."""
    indices = np.asarray(like.getchannel("P") if like.mode == "PA" else like)
    entries = np.asarray(like.getpalette("RGB") or [0, 0, 0], dtype=np.uint8).reshape(-1, 3)
    alpha = np.full(256, 255, np.uint8)  # per palette entry
    transparency = like.info.get("transparency")
    if isinstance(transparency, int) and transparency < 256:
        alpha[transparency] = 0
    elif isinstance(transparency, bytes):
        alpha[: len(transparency)] = np.frombuffer(transparency[:256], np.uint8)
    opaque = np.flatnonzero(alpha[: len(entries)] == 255)
    out = like.copy()
    if opaque.size == 0:  # nothing visible to change
        return out
    palette = PIL.Image.new("P", (1, 1))
    palette.putpalette(entries[opaque].tobytes())
    nearest = opaque[np.asarray(rgb.convert("RGB").quantize(palette=palette, dither=PIL.Image.Dither.NONE))]
    new = np.where(alpha[indices] < 255, indices, nearest).astype(np.uint8)
    if like.mode == "PA":
        new = np.dstack([new, np.asarray(like.getchannel("A"))])
    out.frombytes(np.ascontiguousarray(new).tobytes())
    return out


# ------------------------------------------------------------------ any image <-> a float batch, and back
def image_to_float(inpt: Any) -> tuple[torch.Tensor, dict[str, Any]]:
    """PIL / tensor ``[H, W]``, ``[C, H, W]``, ``[B, C, H, W]`` (uint8 or float) -> float ``[B, C, H, W]`` + how to undo."""
    if isinstance(inpt, PIL.Image.Image):
        check_pil_mode(inpt)
        check_image_size(inpt.height, inpt.width, f"a {inpt.width}x{inpt.height} (width x height) PIL image")
        meta = {"kind": "pil", "mode": inpt.mode, "scale": pil_scale(inpt)}
        if inpt.mode in ("RGBA", "LA"):  # PA keeps its alpha in `to_palette`
            meta["alpha"] = inpt.getchannel("A")
        return pil_to_float(inpt, pil_channels(inpt.mode), meta["scale"]).unsqueeze(0), meta
    if not isinstance(inpt, torch.Tensor):
        raise TypeError(f"expected a PIL image or a torch.Tensor image, got {type(inpt).__name__}")
    if inpt.ndim not in (2, 3, 4):
        raise ValueError(f"image tensors must have 2 ([H, W]), 3 ([C, H, W]) or 4 ([B, C, H, W]) dimensions, got shape {tuple(inpt.shape)}")
    meta = {"kind": "tensor", "ndim": inpt.ndim, "dtype": inpt.dtype, "device": inpt.device}
    x = inpt.as_subclass(torch.Tensor)
    x = x.reshape(1, 1, *x.shape) if x.ndim == 2 else x.unsqueeze(0) if x.ndim == 3 else x
    check_image_size(x.shape[-2], x.shape[-1], f"shape {tuple(inpt.shape)}")
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
        image = uncomposite(y[0], like) if meta["mode"] in ALPHA_MODES else y[0]
        if meta["mode"] in ("P", "PA"):
            return to_palette(to_pil(image), like)
        if "alpha" in meta:
            image = to_pil(image).convert("RGBA" if meta["mode"] != "LA" else "LA")
            image.putalpha(meta["alpha"])
            return image if image.mode == meta["mode"] else image.convert(meta["mode"])
        return float_to_pil(image, meta["mode"], meta.get("scale", 255.0))
    y = to_uint8(y) if meta["dtype"] == torch.uint8 else y.to(meta["dtype"])
    y = y.to(meta["device"])
    if meta["ndim"] == 2:
        y = y[0, 0]
    elif meta["ndim"] == 3:
        y = y[0]
    return tv_tensors.wrap(y, like=like) if isinstance(like, tv_tensors.TVTensor) else y


def hwc_to_batch(img: np.ndarray) -> torch.Tensor:
    """HWC / HW numpy (uint8 or float in [0, 1], as albumentations passes them) -> float ``[1, C, H, W]``."""
    if not isinstance(img, np.ndarray) or img.ndim not in (2, 3):
        raise ValueError(f"expected an HWC or HW numpy image, got {type(img).__name__} with shape {getattr(img, 'shape', None)}")
    check_image_size(img.shape[0], img.shape[1], f"an HWC image of shape {img.shape}")
    x = torch.from_numpy(np.ascontiguousarray(img))
    x = x.unsqueeze(-1) if x.ndim == 2 else x
    return image_to_float(x.permute(2, 0, 1))[0]  # the same dtype, range and finiteness checks as for tensors


def batch_to_hwc(y: torch.Tensor, like: np.ndarray) -> np.ndarray:
    """Undo `hwc_to_batch`: the shape and dtype of ``like``."""
    if like.dtype == np.uint8:
        out = to_uint8(y[0]).permute(1, 2, 0).cpu().numpy()
    else:
        out = y[0].permute(1, 2, 0).cpu().numpy().astype(like.dtype)
    return out[..., 0] if like.ndim == 2 else out


def batch_size_of(inpt: Any) -> int:
    """Images in ``inpt``: B for a ``[B, C, H, W]`` tensor, else 1."""
    return inpt.shape[0] if isinstance(inpt, torch.Tensor) and inpt.ndim == 4 else 1


def image_size_of(inpt: Any) -> tuple[int, int]:
    """``(H, W)`` of a PIL image or an image tensor (``(0, 0)`` for anything else)."""
    if isinstance(inpt, PIL.Image.Image):
        return inpt.height, inpt.width
    return tuple(inpt.shape[-2:]) if isinstance(inpt, torch.Tensor) and inpt.ndim >= 2 else (0, 0)
