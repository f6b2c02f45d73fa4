"""Bad and unusual input at every entry point (issue 13, part B): nothing lost, nothing silently wrong.

Items 5, 6 and 9: every PIL mode a photo or a scan opens as comes back in its own mode and at its
own scale; zero-size images and soft labels get a clear error naming what was wrong and what is
accepted. Then the battery over `VAEAugment`, `LatentMix`, `PosteriorCache`, `AugmentCollate`, the
albumentations adapter and the functions behind the app's endpoints (called directly, no server):
each case asserts its outcome, the right result (type, mode, dtype, shape, range, finite) or an
error of the right type whose message names the argument and what is accepted. Most cases use a
tiny random VAE; the identity ``VAEAugment(strength=0, residual=True)`` (the input plus a decoded
change of zero) shows whether a conversion round-trips at the input's own scale.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from vae_augment import AugmentCollate, LatentMix, PosteriorCache, VAEAugment, load_vae
from vae_augment.pixels import MAX_PIXELS, check_image_size, convert_channels, image_to_float, pil_scale, pil_to_float

TIME_LIMIT_S = 10  # per case (conftest.py's time_limit); every case takes well under a second on a free core
pytestmark = pytest.mark.usefixtures("time_limit")


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


# ------------------------------------------------------------------ the battery, on a tiny VAE (conftest.py's `vae`)
@pytest.fixture(scope="module")
def unchanged(vae) -> VAEAugment:
    """Strength 0 with the residual mode: the input plus a decoded change of zero, i.e. the input."""
    return VAEAugment(vae, strength=0.0, residual=True)


@pytest.fixture(scope="module")
def variants(vae) -> VAEAugment:
    return VAEAugment(vae, strength=1.0, residual=False, generator=torch.Generator().manual_seed(0))


def rectangle(size=(28, 28)) -> np.ndarray:
    """A float image ``[H, W]`` in [0, 1]: a dark background with a graded bright rectangle."""
    height, width = size
    image = np.full((height, width), 0.1, np.float32)
    image[height // 4 : 3 * height // 4, width // 5 : 4 * width // 5] = np.linspace(0.5, 1.0, 4 * width // 5 - width // 5)
    return image


def colours(size=(28, 28)) -> Image.Image:
    """An RGB image with a few distinct colours (a palette of them stays small)."""
    gray = rectangle(size)
    rgb = np.stack([gray, gray[::-1], gray[:, ::-1]], -1)
    return Image.fromarray((rgb * 255).round().astype(np.uint8))


def palette_image(transparent: bool = False) -> Image.Image:
    """A P image with its own 6-colour palette (not the web palette), optionally with index 0 transparent."""
    image = colours().quantize(6, dither=Image.Dither.NONE)
    if transparent:
        image.info["transparency"] = int(np.asarray(image)[0, 0])  # the background's entry
    return image


def pil_image(kind: str) -> Image.Image:
    """An image of each mode Image.open returns for photos and scans, with values at its own scale."""
    gray = rectangle()
    if kind == "1":
        return Image.fromarray((gray > 0.6).astype(np.uint8) * 255).convert("1", dither=Image.Dither.NONE)
    if kind == "L":
        return Image.fromarray((gray * 255).round().astype(np.uint8))
    if kind == "LA":
        image = pil_image("L").convert("LA")
        image.putalpha(Image.fromarray(np.tile(np.linspace(0, 255, 28).astype(np.uint8), (28, 1))))
        return image
    if kind == "P":
        return palette_image()
    if kind == "P transparent":
        return palette_image(transparent=True)
    if kind == "PA":
        image = palette_image().convert("PA")
        image.putalpha(pil_image("LA").getchannel("A"))
        return image
    if kind in ("RGB", "RGBA", "RGBX", "CMYK", "YCbCr"):
        image = colours().convert(kind)
        if kind == "RGBA":
            image.putalpha(pil_image("LA").getchannel("A"))
        return image
    if kind == "I;16":
        return Image.fromarray((gray * 60000).round().astype(np.uint16))
    if kind == "I;16B":
        return Image.frombytes("I;16B", (28, 28), (gray * 60000).round().astype(">u2").tobytes())
    if kind == "I":
        return Image.fromarray((gray * 60000).round().astype(np.int32))
    if kind == "I 8-bit":  # what pil_image("L").convert("I") gives
        return pil_image("L").convert("I")
    if kind == "F [0, 1]":
        return Image.fromarray(gray)
    if kind == "F [0, 255]":
        return Image.fromarray(gray * 255)
    if kind == "F [0, 65535]":
        return Image.fromarray(gray * 65535)
    raise AssertionError(kind)


# ------------------------------------------------------------------ 5: every PIL mode at its own scale
# kind -> (mode, scale of white, tolerance of the unchanged round trip in that scale)
PIL_CASES = {
    "1": ("1", 255, 0), "L": ("L", 255, 0), "LA": ("LA", 255, 0), "P": ("P", None, 0), "P transparent": ("P", None, 0),
    "PA": ("PA", None, 0), "RGB": ("RGB", 255, 0), "RGBA": ("RGBA", 255, 0), "RGBX": ("RGBX", 255, 0),
    "CMYK": ("CMYK", 255, 0), "YCbCr": ("YCbCr", 255, 3),  # YCbCr -> RGB -> YCbCr rounds by a few steps
    "I;16": ("I;16", 65535, 0), "I;16B": ("I;16B", 65535, 0), "I": ("I", 65535, 0), "I 8-bit": ("I", 255, 0),
    "F [0, 1]": ("F", 1, 1e-6), "F [0, 255]": ("F", 255, 1e-4), "F [0, 65535]": ("F", 65535, 0.02),
}


@pytest.mark.parametrize("kind", list(PIL_CASES))
def test_every_pil_mode_round_trips_at_its_own_scale(unchanged, kind):
    image = pil_image(kind)
    mode, _, tolerance = PIL_CASES[kind]
    out = unchanged(image)
    assert isinstance(out, Image.Image) and out.mode == mode and out.size == image.size
    assert out.info.get("transparency") == image.info.get("transparency")
    if mode in ("P", "PA"):  # the same entries of the image's own palette, not the web palette
        assert out.getpalette() == image.getpalette()
    np.testing.assert_allclose(np.asarray(out, dtype=np.float64), np.asarray(image, dtype=np.float64), rtol=0, atol=tolerance)


@pytest.mark.parametrize("kind", ["I;16", "I;16B", "I", "F [0, 1]", "F [0, 255]", "F [0, 65535]"])
def test_high_bit_depth_and_float_images_are_augmented_at_their_own_scale(vae, kind):
    """A variant of a 16-bit or float image has the brightness of the same variant of its 8-bit version."""
    image, (_, scale, _) = pil_image(kind), PIL_CASES[kind]
    eight_bit = Image.fromarray((np.asarray(image, dtype=np.float64) / scale * 255).round().astype(np.uint8))
    variant = VAEAugment(vae, strength=1.0, generator=torch.Generator().manual_seed(1))(image)
    reference = VAEAugment(vae, strength=1.0, generator=torch.Generator().manual_seed(1))(eight_bit)
    assert variant.mode == image.mode
    values = np.asarray(variant, dtype=np.float64) / scale
    assert 0 <= values.min() and values.max() <= 1
    np.testing.assert_allclose(values, np.asarray(reference, dtype=np.float64) / 255, atol=1 / 255 + 1e-6)


def test_binary_images_are_thresholded_not_dithered(vae):
    """Mode 1 comes back as the gray result thresholded at half (dithering would scatter dots over the digit)."""
    image = pil_image("1")
    blurry = VAEAugment(vae, strength=0.0, residual=False)  # the reconstruction: many grays
    gray = np.asarray(blurry(image.convert("L")))
    assert ((gray > 40) & (gray < 215)).any()  # there are grays to binarize
    np.testing.assert_array_equal(np.asarray(blurry(image)), gray >= 128)


def test_palette_images_keep_their_palette_and_transparent_pixels(variants):
    image = pil_image("P transparent")
    out = variants(image)
    transparent = np.asarray(image) == image.info["transparency"]
    assert out.mode == "P" and out.getpalette() == image.getpalette() and out.info["transparency"] == image.info["transparency"]
    assert (np.asarray(out)[transparent] == image.info["transparency"]).all()  # still transparent
    assert not (np.asarray(out)[~transparent] == image.info["transparency"]).any()  # no opaque pixel became transparent


@pytest.mark.parametrize("mode", ["LAB", "HSV", "La", "RGBa"])
def test_pil_modes_without_a_faithful_conversion_are_refused(unchanged, mode):
    with pytest.raises(ValueError, match=rf"PIL images of mode '{mode}' are not supported; accepted modes: 1, L, LA, P"):
        unchanged(Image.new(mode, (28, 28)))


@pytest.mark.parametrize("values, message", [
    (np.array([[0, 70000]], np.int32), r"mode 'I' must hold finite values in \[0, 65535\] \(got \[0, 7e\+04\]\)"),
    (np.array([[-5, 200]], np.int32), r"mode 'I' must hold finite values in \[0, 65535\] \(got \[-5, 200\]\)"),
    (np.array([[0.5, np.nan]], np.float32), r"mode 'F' must hold finite values in \[0, 65535\] \(got \[nan, nan\]\)"),
    (np.array([[0.5, np.inf]], np.float32), r"mode 'F' must hold finite values in \[0, 65535\] \(got \[0.5, inf\]\)"),
    (np.array([[0.5, 1e6]], np.float32), r"mode 'F' must hold finite values in \[0, 65535\] \(got \[0.5, 1e\+06\]\).*float gray in \[0, 1\]"),
], ids=["I above 65535", "I negative", "F NaN not first", "F inf", "F above 65535"])
def test_high_bit_depth_images_out_of_every_scale_are_refused(unchanged, values, message):
    with pytest.raises(ValueError, match=message):
        unchanged(Image.fromarray(values))


# the modes a file can hold, written where Pillow can (YCbCr has no file format that opens as YCbCr)
FILE_CASES = {"1": "tiff", "L": "png", "LA": "png", "P": "png", "P transparent": "png", "PA": "tiff", "RGB": "png",
              "RGBA": "png", "CMYK": "tiff", "I;16": "png", "I": "tiff", "I 8-bit": "tiff", "F [0, 1]": "tiff",
              "F [0, 255]": "tiff", "F [0, 65535]": "tiff"}


@pytest.mark.parametrize("kind", list(FILE_CASES))
def test_the_app_loader_reads_every_mode_as_the_library_does(tmp_path, kind):
    support = pytest.importorskip("vae_augment.app.support")
    path = tmp_path / f"image.{FILE_CASES[kind]}"
    pil_image(kind).save(path)
    opened = Image.open(path)
    assert opened.mode == PIL_CASES[kind][0]  # the file holds the mode under test
    library = image_to_float(opened)[0][0]
    for channels in (1, 3):
        x = support.load_image(path, channels)
        assert x.shape == (channels, 28, 28) and x.dtype == torch.float32
        torch.testing.assert_close(x, convert_channels(library, channels), rtol=0, atol=1e-6)


def test_the_app_loader_reads_16_bit_scale_before_downscaling(tmp_path):
    """A large dark 16-bit scan stays dark: its scale is read from the full image, not the downscaled one."""
    support = pytest.importorskip("vae_augment.app.support")
    values = np.full((1200, 1200), 200, np.uint16)
    values[::2, ::2] = 300  # above 255 only at single pixels, which the downscaling averages away
    path = tmp_path / "scan.tiff"
    Image.fromarray(values.astype(np.int32)).save(path)  # opens as mode I
    x = support.load_image(path, 1)
    assert x.shape == (1, support.MAX_SIDE, support.MAX_SIDE)
    torch.testing.assert_close(x.mean(), torch.tensor(225 / 65535), rtol=0.02, atol=0)


# ------------------------------------------------------------------ tensors: every dtype, range, shape
ACCEPTED_DTYPES = [torch.uint8, torch.float16, torch.bfloat16, torch.float32, torch.float64]
REFUSED_DTYPES = [torch.int8, torch.int16, torch.int32, torch.int64, torch.uint16, torch.bool, torch.complex64]


def image_tensor(dtype: torch.dtype, shape=(1, 28, 28)) -> torch.Tensor:
    x = torch.from_numpy(np.broadcast_to(rectangle(shape[-2:]), shape).copy())
    return (x * 255).round().to(dtype) if dtype == torch.uint8 else x.to(dtype) if dtype.is_floating_point else x.round().to(dtype)


@pytest.mark.parametrize("dtype", ACCEPTED_DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(28, 28), (1, 28, 28), (3, 20, 24), (4, 28, 28), (2, 1, 28, 28)], ids=str)
def test_vae_augment_returns_each_accepted_dtype_and_shape(variants, dtype, shape):
    x = image_tensor(dtype, shape)
    out = variants(x)
    assert out.dtype == dtype and out.shape == x.shape
    values = out.double()
    assert torch.isfinite(values).all() and values.min() >= 0 and values.max() <= (255 if dtype == torch.uint8 else 1)


@pytest.mark.parametrize("dtype", REFUSED_DTYPES, ids=str)
def test_other_dtypes_are_refused_naming_what_is_accepted(variants, vae, dtype):
    message = rf"image tensors must be uint8 in \[0, 255\] or float in \[0, 1\], got dtype {dtype}"
    x = image_tensor(dtype, (2, 1, 28, 28)) if dtype != torch.complex64 else torch.zeros(2, 1, 28, 28, dtype=dtype)
    with pytest.raises(TypeError, match=message):
        variants(x)
    with pytest.raises(TypeError, match=message):
        LatentMix(vae)(x, torch.tensor([0, 0]))
    with pytest.raises(TypeError, match=message):
        AugmentCollate(variants)([(x[0], 0), (x[1], 1)])
    with pytest.raises(TypeError, match=message):
        PosteriorCache([x[0]], variants)[0]


@pytest.mark.parametrize("dtype", ACCEPTED_DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(28, 28), (1, 28, 28), (3, 20, 24), (4, 28, 28)], ids=str)
def test_the_dataloader_helpers_return_each_accepted_dtype_and_shape(variants, dtype, shape):
    """Issue 31, item 7: the dtype table of `AugmentCollate` and `PosteriorCache` (per sample and batched), as
    `VAEAugment`'s above: each accepted dtype and shape comes back as it came, in range and finite."""
    x = image_tensor(dtype, shape)
    collated, labels = AugmentCollate(variants)([(x, 0), (x, 1)])
    assert collated.dtype == dtype and collated.shape == (2, *x.shape) and labels.tolist() == [0, 1]
    outputs = [collated[0], collated[1], PosteriorCache([x], variants)[0]]
    batched = PosteriorCache([x, x], variants, batched=True)
    if len(shape) == 3:
        outputs += list(batched.collate([batched[0], batched[1]]))
    else:  # a batched cache collates [C, H, W] images only, and says so
        with pytest.raises(TypeError, match=r"a batched PosteriorCache needs image tensors \[C, H, W\] of one shape, got \['\(28, 28\)'\]"):
            batched.collate([batched[0], batched[1]])
    for out in outputs:
        assert out.dtype == dtype and out.shape == x.shape
        values = out.double()
        assert torch.isfinite(values).all() and values.min() >= 0 and values.max() <= (255 if dtype == torch.uint8 else 1)


BAD_TENSORS = [
    ("float above 1", torch.full((1, 28, 28), 1.5), ValueError, r"float images must be in \[0, 1\] \(got values in \[1.5, 1.5\]\)"),
    ("float below 0", torch.full((1, 28, 28), -0.5), ValueError, r"float images must be in \[0, 1\] \(got values in \[-0.5, -0.5\]\)"),
    ("uint8 scale as float", torch.full((1, 28, 28), 200.0), ValueError, r"float images must be in \[0, 1\].*pass uint8 images"),
    ("negative ints", torch.full((1, 28, 28), -3, dtype=torch.int32), TypeError, r"uint8 in \[0, 255\] or float in \[0, 1\]"),
    ("NaN", torch.full((1, 28, 28), float("nan")), ValueError, "image contains NaN or infinite values"),
    ("inf", torch.full((1, 28, 28), float("inf")), ValueError, "image contains NaN or infinite values"),
    ("-inf fp16", torch.full((1, 28, 28), float("-inf"), dtype=torch.float16), ValueError, "image contains NaN or infinite values"),
    ("zero height", torch.rand(1, 0, 28), ValueError, r"image height and width must be at least 1 pixel, got shape \((2, )?1, 0, 28\)"),
    ("zero width", torch.rand(1, 28, 0), ValueError, r"image height and width must be at least 1 pixel, got shape \((2, )?1, 28, 0\)"),
    ("zero-size batch", torch.rand(2, 1, 0, 0), ValueError, r"image height and width must be at least 1 pixel, got shape \(2, 1, 0, 0\)"),
    ("2 channels", torch.rand(2, 28, 28), ValueError, r"images must have 1 \(gray\), 3 \(RGB\) or 4 \(RGBA\) channels, got 2"),
    ("5 channels", torch.rand(5, 28, 28), ValueError, r"images must have 1 \(gray\), 3 \(RGB\) or 4 \(RGBA\) channels, got 5"),
    ("channels last", torch.rand(28, 28, 3), ValueError, r"channels, got 28 .*\[C, H, W\]"),
    ("1-D", torch.rand(28), ValueError, r"image tensors must have 2 \(\[H, W\]\), 3 \(\[C, H, W\]\) or 4 \(\[B, C, H, W\]\) dimensions"),
    ("5-D", torch.rand(1, 1, 1, 28, 28), ValueError, r"must have 2 \(\[H, W\]\), 3 \(\[C, H, W\]\) or 4 .* got shape \(1, 1, 1, 28, 28\)"),
]


@pytest.mark.parametrize("x, error, message", [case[1:] for case in BAD_TENSORS], ids=[case[0] for case in BAD_TENSORS])
def test_bad_image_tensors_are_refused_by_vae_augment(variants, x, error, message):
    with pytest.raises(error, match=message):
        variants(x)


@pytest.mark.parametrize("x, error, message", [case[1:] for case in BAD_TENSORS if case[1].ndim == 3],
                         ids=[case[0] for case in BAD_TENSORS if case[1].ndim == 3])
def test_bad_image_tensors_are_refused_by_the_other_entry_points(variants, vae, x, error, message):
    batch = torch.stack([x, x])
    with pytest.raises(error, match=message):
        LatentMix(vae)(batch, torch.tensor([0, 0]))
    with pytest.raises(error, match=message):
        AugmentCollate(variants)([(x, 0), (x, 1)])
    with pytest.raises(error, match=message):
        PosteriorCache([x], variants)[0]
    with pytest.raises(error, match=message):
        PosteriorCache([x, x], variants, batched=True).precompute()


def test_empty_batches_come_back_empty(variants, vae):
    x = image_tensor(torch.uint8, (0, 1, 28, 28))
    assert variants(x).shape == (0, 1, 28, 28) and variants(x).dtype == torch.uint8
    out, labels = LatentMix(vae)(x, torch.zeros(0, dtype=torch.long))
    assert out.shape == (0, 1, 28, 28) and labels.shape == (0,)
    assert len(PosteriorCache([], variants)) == 0


@pytest.mark.parametrize("mode", ["L", "F", "I;16", "P"])
@pytest.mark.parametrize("size", [(0, 28), (28, 0)], ids=str)
def test_zero_size_pil_images_are_refused(variants, mode, size):
    with pytest.raises(ValueError, match=rf"image height and width must be at least 1 pixel, got a {size[0]}x{size[1]} "
                                         r"\(width x height\) PIL image"):
        variants(Image.new(mode, size))


def test_numpy_images_are_refused_not_passed_through(variants, vae):
    image = (rectangle() * 255).astype(np.uint8)
    with pytest.raises(TypeError, match=r"VAEAugment takes PIL images and torch tensors, got a numpy array .*AlbuVAEAugment"):
        variants(image)
    with pytest.raises(TypeError, match=r"VAEAugment takes PIL images and torch tensors, got a numpy array"):
        variants((image, 3))
    with pytest.raises(TypeError, match=r"LatentMix takes image tensors \[B, C, H, W\], got a numpy array"):
        LatentMix(vae)(np.stack([image, image])[:, None], torch.tensor([0, 0]))
    assert variants((torch.from_numpy(image)[None], np.array(3)))[1] == 3  # numpy labels still pass through


def test_pil_images_into_the_collate_function_get_an_instruction(variants):
    with pytest.raises(TypeError, match=r"AugmentCollate collates image tensors \[C, H, W\].*got Image.*v2.PILToTensor\(\)"):
        AugmentCollate(variants)([(pil_image("L"), 0), (pil_image("L"), 1)])


# ------------------------------------------------------------------ huge images: a documented limit, refused at once
@pytest.mark.parametrize("make", [
    lambda: torch.zeros(1, 8000, 8000, dtype=torch.uint8),
    lambda: torch.zeros(1, 1, 1, 1, dtype=torch.uint8).expand(2, 3, 8000, 8000),  # no memory behind it
    lambda: Image.new("L", (8000, 8000)),
], ids=["tensor", "batch", "PIL"])
def test_huge_images_are_refused_above_the_pixel_limit_at_once(variants, make):
    image = make()
    start = time.perf_counter()
    with pytest.raises(ValueError, match=rf"images may have at most {MAX_PIXELS:,} pixels .* got 8000x8000 \(height x width\) = "
                                         r"64,000,000 pixels: resize them first"):
        variants(image)
    assert time.perf_counter() - start < 1.0


def test_images_at_the_pixel_limit_are_accepted():
    check_image_size(4320, 7680)  # 8K UHD
    check_image_size(5792, 5792)  # 33,547,264 pixels
    with pytest.raises(ValueError, match=r"at most 33,554,432 pixels each .* got 5793x5793 \(height x width\) = 33,558,849"):
        check_image_size(5793, 5793)


# ------------------------------------------------------------------ 6: labels of LatentMix
LABELS_RULE = r"labels must be a 1-D integer tensor of class indices, one per image, got "
BAD_LABELS = [
    ("soft 1-D", torch.rand(6), ValueError, LABELS_RULE + r"a torch.float32 tensor of shape \(6,\); .*labels.argmax\(1\)"),
    ("whole floats 1-D", torch.tensor([0.0, 0, 1, 1, 2, 2]), ValueError, LABELS_RULE + r"a torch.float32 .*labels.long\(\)"),
    ("one-hot", torch.eye(3)[[0, 0, 1, 1, 2, 2]], ValueError, LABELS_RULE + r"a torch.float32 tensor of shape \(6, 3\); .*argmax"),
    ("soft [B, C]", torch.softmax(torch.randn(6, 3), 1), ValueError, LABELS_RULE + r"a torch.float32 tensor of shape \(6, 3\)"),
    ("3-D", torch.zeros(6, 1, 1, dtype=torch.long), ValueError, LABELS_RULE + r"a torch.int64 tensor of shape \(6, 1, 1\)"),
    ("0-D", torch.tensor(3), ValueError, LABELS_RULE + r"a torch.int64 tensor of shape \(\)"),
    ("complex", torch.zeros(6, dtype=torch.complex64), ValueError, LABELS_RULE + r"a torch.complex64 tensor"),
    ("too few", torch.tensor([0, 0, 1]), ValueError, r"images must be \[B, C, H, W\] with B = len\(labels\) = 3, got \(6, 1, 28, 28\)"),
    ("too many", torch.zeros(8, dtype=torch.long), ValueError, r"B = len\(labels\) = 8"),
    ("a list", [0, 0, 1, 1, 2, 2], ValueError, r"labels"),
]


@pytest.mark.parametrize("labels, error, message", [case[1:] for case in BAD_LABELS], ids=[case[0] for case in BAD_LABELS])
def test_bad_labels_are_refused_naming_what_is_accepted(vae, labels, error, message):
    x = image_tensor(torch.float32, (6, 1, 28, 28))
    with pytest.raises(error, match=message):
        LatentMix(vae)(x, labels)


# ------------------------------------------------------------------ 9 and the rest: constructor arguments
VAE_AUGMENT_ARGS = [
    ({"strength": -1}, ValueError, r"strength for mode 'data' must be a number in \[0, 4\], got -1"),
    ({"strength": float("nan")}, ValueError, r"strength for mode 'data' must be a number in \[0, 4\], got nan"),
    ({"strength": "0.5"}, ValueError, r"strength for mode 'data' must be a number in \[0, 4\], got '0.5'"),
    ({"p": -0.1}, ValueError, r"p must be a probability in \[0, 1\], got -0.1"),
    ({"p": float("nan")}, ValueError, r"p must be a probability in \[0, 1\], got nan"),
    ({"p": "1"}, ValueError, r"p must be a probability in \[0, 1\], got '1'"),
    ({"mode": "Data"}, ValueError, r"mode must be one of \('data', 'posterior', 'prior', 'neighbour', 'class'\), got 'Data'"),
    ({"mode": "neighbour"}, ValueError, r"mode 'neighbour' needs a checkpoint with a latent bank"),
    ({"generator": 42}, TypeError, r"generator must be a torch.Generator or None, got int"),
    ({"generator": np.random.default_rng(0)}, TypeError, r"generator must be a torch.Generator or None, got Generator"),
    ({"device": "gpu"}, ValueError, r"device must be a torch device such as 'cpu' or 'cuda:0', got 'gpu'"),
    ({"device": "cuda:7"}, ValueError, r"device 'cuda:7' is not available on this machine"),
    ({"device": 3.5}, ValueError, r"device must be a torch device such as 'cpu' or 'cuda:0', got 3.5"),
    ({"precision": "fp8"}, ValueError, r"precision must be None \(float32\), 'bf16' or 'fp16', got 'fp8'"),
    ({"residual": "no"}, TypeError, r"residual must be True, False or None \(chosen from the checkpoint\), got 'no'"),
    ({"same_on_batch": "no"}, TypeError, r"same_on_batch must be True or False, got 'no'"),
]


@pytest.mark.parametrize("kwargs, error, message", VAE_AUGMENT_ARGS, ids=[str(case[0]) for case in VAE_AUGMENT_ARGS])
def test_bad_vae_augment_arguments(vae, kwargs, error, message):
    with pytest.raises(error, match=message):
        VAEAugment(vae, **kwargs)


def test_a_device_that_exists_is_accepted(vae):
    assert VAEAugment(vae, device="cpu").vae is vae and VAEAugment(vae, device=torch.device("cpu")).vae is vae


LATENT_MIX_ARGS = [
    ({"lam": -1}, ValueError, r"lam must be a number or a \(low, high\) range within \[0, 2\], got -1"),
    ({"lam": float("nan")}, ValueError, r"lam must be a number or a \(low, high\) range within \[0, 2\], got nan"),
    ({"lam": "0.5"}, ValueError, r"lam must be a number or a \(low, high\) range within \[0, 2\], got '0.5'"),
    ({"lam": (0.1, 0.5, 0.9)}, ValueError, r"lam must be a number or a \(low, high\) range within \[0, 2\], got \(0.1, 0.5, 0.9\)"),
    ({"lam": (1.0, 0.5)}, ValueError, r"lam must be a number or a \(low, high\) range within \[0, 2\], got \(1.0, 0.5\)"),
    ({"lam": (0.2, "x")}, ValueError, r"lam must be a number or a \(low, high\) range within \[0, 2\]"),
    ({"p": 2}, ValueError, r"p must be a probability in \[0, 1\], got 2"),
    ({"p": float("nan")}, ValueError, r"p must be a probability in \[0, 1\], got nan"),
    ({"method": "mix"}, ValueError, r"method must be 'extrapolate' or 'interpolate', got 'mix'"),
    ({"generator": 42}, TypeError, r"generator must be a torch.Generator or None, got int"),
    ({"residual": 1}, TypeError, r"residual must be True, False or None \(chosen from the checkpoint\), got 1"),
]


@pytest.mark.parametrize("kwargs, error, message", LATENT_MIX_ARGS, ids=[str(case[0]) for case in LATENT_MIX_ARGS])
def test_bad_latent_mix_arguments(vae, kwargs, error, message):
    with pytest.raises(error, match=message):
        LatentMix(vae, **kwargs)


@pytest.mark.parametrize("helper", [lambda a: PosteriorCache([torch.zeros(1, 28, 28)], a), AugmentCollate],
                         ids=["PosteriorCache", "AugmentCollate"])
@pytest.mark.parametrize("augment_arg, name", [("mnist", "str"), (None, "NoneType"), (lambda x: x, "function")])
def test_the_dataloader_helpers_need_a_vae_augment(vae, helper, augment_arg, name):
    with pytest.raises(TypeError, match=rf"augment must be a VAEAugment, got {name}"):
        helper(augment_arg)
    with pytest.raises(TypeError, match=r"augment must be a VAEAugment, got LatentMix"):
        helper(LatentMix(vae))


def test_the_dataloader_helpers_return_every_accepted_dtype(variants):
    for dtype in ACCEPTED_DTYPES:
        x = image_tensor(dtype, (1, 28, 28))
        images, labels = AugmentCollate(variants)([(x, 0), (x, 1)])
        assert images.dtype == dtype and images.shape == (2, 1, 28, 28) and labels.tolist() == [0, 1]
        cached = PosteriorCache([(x, 5)], variants)
        out, label = cached[0]
        assert out.dtype == dtype and out.shape == x.shape and label == 5 and torch.isfinite(out.double()).all()


@pytest.mark.parametrize("kind", ["1", "P transparent", "I;16", "F [0, 255]", "CMYK"])
def test_posterior_cache_returns_pil_images_in_their_mode_and_scale(unchanged, kind):
    image = pil_image(kind)
    out = PosteriorCache([image], unchanged)[0]
    assert out.mode == image.mode
    np.testing.assert_allclose(np.asarray(out, dtype=np.float64), np.asarray(image, dtype=np.float64), atol=PIL_CASES[kind][2])


# ------------------------------------------------------------------ the albumentations adapter
@pytest.fixture(scope="module")
def albu(vae):
    pytest.importorskip("albumentations")
    from vae_augment.albu import AlbuVAEAugment

    return AlbuVAEAugment(vae, strength=1.0, residual=False)


@pytest.mark.parametrize("dtype", [np.uint8, np.float16, np.float32, np.float64], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", [(28, 28), (28, 28, 1), (20, 24, 3), (28, 28, 4)], ids=str)
def test_albumentations_returns_each_accepted_dtype_and_shape(albu, dtype, shape):
    gray = rectangle(shape[:2])
    image = np.broadcast_to(gray[..., None] if len(shape) == 3 else gray, shape).copy()
    image = (image * 255).round().astype(dtype) if dtype == np.uint8 else image.astype(dtype)
    out = albu(image=image)["image"]
    assert out.dtype == image.dtype and out.shape == image.shape
    values = out.astype(np.float64)
    assert np.isfinite(values).all() and values.min() >= 0 and values.max() <= (255 if dtype == np.uint8 else 1)


BAD_ARRAYS = [
    ("zero width", np.zeros((28, 0, 3), np.uint8), ValueError, r"at least 1 pixel, got an HWC image of shape \(28, 0, 3\)"),
    ("zero height", np.zeros((0, 28), np.float32), ValueError, r"at least 1 pixel, got an HWC image of shape \(0, 28\)"),
    ("int16", np.zeros((28, 28), np.int16), TypeError, r"uint8 in \[0, 255\] or float in \[0, 1\], got dtype torch.int16"),
    ("uint16", np.zeros((28, 28), np.uint16), TypeError, r"uint8 in \[0, 255\] or float in \[0, 1\], got dtype torch.uint16"),
    ("negative int32", np.full((28, 28), -3, np.int32), TypeError, r"uint8 in \[0, 255\] or float in \[0, 1\], got dtype torch.int32"),
    ("int64", np.zeros((28, 28), np.int64), TypeError, r"uint8 in \[0, 255\] or float in \[0, 1\], got dtype torch.int64"),
    ("bool", np.zeros((28, 28, 1), bool), TypeError, r"uint8 in \[0, 255\] or float in \[0, 1\], got dtype torch.bool"),
    ("complex", np.zeros((28, 28), np.complex64), TypeError, r"uint8 in \[0, 255\] or float in \[0, 1\], got dtype torch.complex64"),
    ("float above 1", np.full((28, 28), 2.0, np.float32), ValueError, r"float images must be in \[0, 1\]"),
    ("float below 0", np.full((28, 28), -0.5, np.float64), ValueError, r"float images must be in \[0, 1\]"),
    ("NaN", np.full((28, 28, 3), np.nan, np.float32), ValueError, r"NaN or infinite"),
    ("inf", np.full((28, 28), np.inf, np.float32), ValueError, r"NaN or infinite"),
    ("2 channels", np.zeros((28, 28, 2), np.uint8), ValueError, r"1 \(gray\), 3 \(RGB\) or 4 \(RGBA\) channels, got 2"),
    ("5 channels", np.zeros((28, 28, 5), np.uint8), ValueError, r"1 \(gray\), 3 \(RGB\) or 4 \(RGBA\) channels, got 5"),
    ("1-D", np.zeros(28, np.uint8), ValueError, r"expected an HWC or HW numpy image, got ndarray with shape \(28,\)"),
    ("4-D", np.zeros((1, 28, 28, 3), np.uint8), ValueError, r"expected an HWC or HW numpy image, got ndarray with shape \(1, 28, 28, 3\)"),
    ("huge", np.zeros((8000, 8000, 3), np.uint8), ValueError, rf"images may have at most {MAX_PIXELS:,} pixels"),
]


@pytest.mark.parametrize("image, error, message", [case[1:] for case in BAD_ARRAYS], ids=[case[0] for case in BAD_ARRAYS])
def test_bad_albumentations_images(albu, image, error, message):
    start = time.perf_counter()
    with pytest.raises(error, match=message):
        albu(image=image)
    assert time.perf_counter() - start < 1.0


ALBU_ARGS = [
    ({"strength": -1}, r"strength\n.*greater than or equal to 0"),
    ({"strength": float("nan")}, r"strength\n"),
    ({"strength": "strong"}, r"strength\n.*valid number"),
    ({"p": -0.5}, r"p\n.*greater than or equal to 0"),
    ({"p": float("nan")}, r"p\n"),
    ({"mode": "bogus"}, r"mode\n.*'data', 'posterior' or 'prior'"),
    ({"residual": "sometimes"}, r"residual\n.*valid boolean"),
]


@pytest.mark.parametrize("kwargs, message", ALBU_ARGS, ids=[str(case[0]) for case in ALBU_ARGS])
def test_bad_albumentations_arguments(vae, kwargs, message):
    pytest.importorskip("albumentations")
    from vae_augment.albu import AlbuVAEAugment

    with pytest.raises(ValueError, match=message):
        AlbuVAEAugment(vae, **kwargs)


# ------------------------------------------------------------------ the app's endpoint functions, called directly
@pytest.fixture(scope="module")
def endpoints(vae, tmp_path_factory):
    """The Python functions behind the app's named endpoints (``/augment``, ...), by api name."""
    pytest.importorskip("gradio")
    from vae_augment import app

    folder = tmp_path_factory.mktemp("tiny")
    vae.save_pretrained(folder)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        demo = app.build_app({"tiny": folder})
    return {fn.api_name: fn.fn for fn in demo.fns.values() if fn.api_name}


@pytest.mark.parametrize("kind", list(FILE_CASES))
def test_app_endpoints_take_every_mode(endpoints, tmp_path, kind):
    path = tmp_path / f"image.{FILE_CASES[kind]}"
    pil_image(kind).save(path)
    outputs = endpoints["augment"](str(path), "tiny", "data", 1.0, False, 2, 7, False)
    original, gallery, seed = outputs[0], outputs[2], outputs[-1]  # shown original, reconstruction, gallery, ..., seed
    score = next(value for value in outputs if isinstance(value, float))
    assert len(gallery) == 2 and np.isfinite(score) and seed == 7
    shown = np.asarray(Image.open(original).convert("L"), dtype=np.float64)
    # what the app shows is the image at its own brightness: an 8-bit copy of it, enlarged 5 times
    expected = (convert_channels(image_to_float(Image.open(path))[0], 1)[0, 0].numpy() * 255).round()
    np.testing.assert_allclose(shown[::5, ::5], expected, atol=1)
    anomaly_score, _, _, *shown = endpoints["anomaly"](str(path), "tiny")
    assert np.isfinite(anomaly_score)
    # issue 31, item 7: every endpoint that takes an image, not only augment and anomaly
    other = tmp_path / "other.png"
    pil_image("L").save(other)
    strip = endpoints["interpolate"](str(path), str(other), "tiny", 3, "linear")
    grid, legend = endpoints["explore"](str(path), "tiny", 2, 3, 2.0)
    assert "| z[" in legend
    for picture in (*[p for p, _ in gallery], strip, grid, *shown):
        assert np.isfinite(np.asarray(Image.open(picture), dtype=np.float64)).all()


def test_app_endpoints_refuse_unsupported_modes_with_a_message(endpoints, tmp_path):
    import gradio as gr

    path = tmp_path / "lab.tiff"
    Image.new("LAB", (28, 28), (50, 0, 0)).save(path)
    assert Image.open(path).mode == "LAB"
    for name, args in (("augment", (str(path), "tiny", "data", 1.0, False, 2, 7, False)), ("anomaly", (str(path), "tiny")),
                       ("explore", (str(path), "tiny", 2, 3, 1.0)), ("interpolate", (str(path), str(path), "tiny", 3, "linear"))):
        with pytest.raises(gr.Error, match=r"PIL images of mode 'LAB' are not supported; accepted modes: 1, L, LA, P"):
            endpoints[name](*args)


@pytest.mark.parametrize("args, message", [
    ((None, "tiny", "data", 1.0, False, 2, 0, False), "no image given"),
    (("{png}", "tiny", "prior", 3.0, False, 2, 0, False), r"strength for mode 'prior' must be a number in \[0, 1\], got 3.0"),
    (("{png}", "tiny", "sideways", 1.0, False, 2, 0, False), r"mode must be one of"),
    (("{png}", "tiny", "data", float("nan"), False, 2, 0, False), r"strength for mode 'data' must be a number in \[0, 4\], got nan"),
    (("{png}", "tiny", "data", 1.0, False, 2.5, 0, False), r"variants must be a whole number in \[1, 32\], got 2.5"),
    (("{png}", "tiny", "data", 1.0, False, 0, 0, False), r"variants must be a whole number in \[1, 32\], got 0"),
    (("{png}", "tiny", "data", 1.0, False, 2, -5, False), r"seed must be a whole number in \[0, 2147483647\], got -5"),
    (("{png}", "../etc", "data", 1.0, False, 2, 0, False), r"'../etc' is not a checkpoint this app offers"),
], ids=["no image", "strength", "mode", "NaN strength", "fractional variants", "no variants", "negative seed", "path as checkpoint"])
def test_app_augment_refuses_bad_settings_naming_them(endpoints, tmp_path, args, message):
    import gradio as gr

    png = tmp_path / "image.png"
    pil_image("L").save(png)
    with pytest.raises(gr.Error, match=message):
        endpoints["augment"](*(str(png) if a == "{png}" else a for a in args))
