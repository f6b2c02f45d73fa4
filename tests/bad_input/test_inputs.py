"""Bad and unusual inputs at the transforms' boundary (issue 13, items 5, 6 and 9): every PIL mode a photo or
a scan opens as comes back in its own mode and at its own scale; zero-size images and soft labels get a clear
error naming what was wrong and what is accepted."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from vae_augment import LatentMix, VAEAugment, load_vae
from vae_augment.pixels import pil_scale, pil_to_float

@pytest.fixture(scope="module")
def identity():
    """Strength 0 in the residual mode: the input plus a zero change, so the output must equal the input."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return VAEAugment(load_vae("mnist"), strength=0.0, residual=True)


RNG = np.random.default_rng(0)
GRAY16 = (RNG.random((28, 28)) * 65535).astype(np.uint16)
GRAY8 = (RNG.random((28, 28)) * 255).astype(np.uint8)
RGB8 = (RNG.random((28, 28, 3)) * 255).astype(np.uint8)


def image(mode: str) -> Image.Image:
    if mode == "I;16":
        return Image.frombytes("I;16", (28, 28), GRAY16.astype("<u2").tobytes())
    if mode == "I":
        return Image.fromarray(GRAY16.astype(np.int32))
    if mode == "I8":  # 8-bit values stored in a 32-bit mode (Image.convert("I") of an L image)
        return Image.fromarray(GRAY8).convert("I")
    if mode == "F01":
        return Image.fromarray(GRAY16.astype(np.float32) / 65535)
    if mode == "F255":
        return Image.fromarray(GRAY8.astype(np.float32))
    if mode in ("1", "L", "LA", "P"):
        return Image.fromarray(GRAY8).convert(mode)
    return Image.fromarray(RGB8).convert(mode)


@pytest.mark.parametrize("mode, scale", [("I;16", 65535), ("I", 65535), ("I8", 255), ("F01", 1), ("F255", 255)])
def test_high_bit_depth_and_float_images_round_trip_at_their_own_scale(identity, mode, scale):
    """16-bit gray came back 257x darker, float gray in [0, 1] as 0-253, float gray in 0-255 binarized."""
    source = image(mode)
    assert pil_scale(source) == scale
    out = identity(source)
    assert out.mode == source.mode and out.size == source.size
    expected, got = np.asarray(source, dtype=np.float64), np.asarray(out, dtype=np.float64)
    assert np.abs(got - expected).max() <= scale * 1e-5 + (1 if scale > 1 else 0)  # rounding at the input's own scale
    x = pil_to_float(source, 1)
    assert 0 <= x.min() and x.max() <= 1 and x.max() > 0.9  # the full range used, not a sliver of it


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "YCbCr"])
def test_every_8_bit_mode_comes_back_in_its_own_mode(identity, mode):
    source = image(mode)
    out = identity(source)
    assert out.mode == source.mode and out.size == source.size
    if mode in ("1", "L", "RGB", "LA", "RGBA"):
        assert np.array_equal(np.asarray(out), np.asarray(source))


@pytest.mark.parametrize("values", [[-1.0, 0.5], [0.0, 70000.0], [0.0, float("nan")]])
def test_float_images_outside_any_scale_are_refused(identity, values):
    array = np.full((28, 28), values[0], np.float32)
    array[0, 0] = values[1]
    with pytest.raises(ValueError, match=r"mode 'F' must hold finite values in \[0, 65535\].*accepted"):
        identity(Image.fromarray(array))


@pytest.mark.parametrize("shape", [(1, 0, 28), (1, 28, 0), (0, 28), (2, 1, 0, 5)])
def test_zero_size_images_are_refused_with_their_shape(identity, shape):
    with pytest.raises(ValueError, match=r"height and width must be at least 1 pixel, got shape"):
        identity(torch.rand(*shape))


def test_zero_size_numpy_image_into_the_albumentations_adapter():
    pytest.importorskip("albumentations")
    from vae_augment import AlbuVAEAugment

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        transform = AlbuVAEAugment(checkpoint="mnist", p=1.0)
    with pytest.raises(ValueError, match=r"at least 1 pixel, got an HWC image of shape \(28, 0, 3\)"):
        transform(image=np.zeros((28, 0, 3), np.uint8))


@pytest.mark.parametrize("labels", [torch.rand(8), torch.eye(10)[:8], torch.ones(8, dtype=torch.complex64)])
def test_soft_one_hot_and_float_labels_are_refused_not_ignored(labels):
    """LatentMix(vae)(x, torch.rand(8)) returned every image unchanged."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mix = LatentMix("mnist")
    with pytest.raises(ValueError, match=r"labels must be a 1-D integer tensor of class indices.*argmax"):
        mix(torch.rand(8, 1, 28, 28), labels)


def test_latentmix_refuses_a_generator_of_the_wrong_type_when_made():
    with pytest.raises(TypeError, match="generator must be a torch.Generator or None, got int"):
        LatentMix("mnist", generator=42)
