"""The work behind the Gradio app (`vae_augment.app`), without Gradio: reading uploads safely, loading
each checkpoint once, and each tab's computation on the library's public API.

Everything here raises `ValueError` (or its subclass `CheckpointError`) with a message meant for
the person using the app; the app shows those as ``gr.Error``. Images are ``[C, H, W]`` float
tensors in [0, 1] until they become PIL images for display.
"""

from __future__ import annotations

import io
import secrets
import shutil
import tempfile
import threading
import time
import uuid
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Mapping

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageOps
from torchvision.utils import make_grid

from ..augment import augment_batch, latent_shape
from ..checkpoint import CheckpointError, bundled_dir, bundled_names, is_repo_id
from ..loader import fetch_checkpoint, load_vae
from ..latent import check_mode_strength
from ..models import Autoencoder
from ..pixels import convert_channels, pil_channels, pil_scale, pil_to_float, resize, to_pil
from ..transforms import VAEAugment

MAX_UPLOAD_PIXELS = 50_000_000  # refuse to decode more (about 7000 x 7000)
MAX_SIDE = 512  # larger uploads are downscaled to this longest side before any tensor work
DISPLAY_MIN_SIDE = 140  # small results are enlarged (nearest neighbour, whole factors) for display
DISPLAY_GRID_ROW = 84  # ... and grids to at least this many pixels per row
MAX_VARIANTS, MAX_SAMPLES, MAX_STEPS = 32, 64, 16
MAX_TRAVERSE_DIMS, MAX_TRAVERSE_STEPS, MAX_TRAVERSE_SPAN = 10, 11, 4.0
MAX_SEED = 2**31 - 1
MAX_HUB_MODELS = 4  # Hub checkpoints kept loaded at once (bundled ones always stay)


# ------------------------------------------------------------------ checkpoints
class ModelCache:
    """Checkpoint choices -> loaded VAEs, each loaded once and reused by every request.

    ``checkpoints`` maps the names the app offers to local folders (or loaded models); the default
    is the bundled checkpoints. Any other choice must be a Hugging Face Hub repo id, downloaded on
    first use; a choice is never read as a local path, so nobody can make the app open files.
    """

    def __init__(self, checkpoints: Mapping[str, "str | Path | Autoencoder"] | None = None, max_hub_models: int = MAX_HUB_MODELS):
        if checkpoints is None:
            checkpoints = {name: bundled_dir() / name for name in bundled_names()}
        self.local = dict(checkpoints)
        self.max_hub_models = max_hub_models
        self._models: OrderedDict[str, Autoencoder] = OrderedDict()
        self._guard = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}

    @property
    def names(self) -> list[str]:
        return list(self.local)

    def validate(self, choice) -> str:
        """The choice, stripped, if it is an offered name or a Hub repo id; else a `CheckpointError`."""
        text = choice.strip() if isinstance(choice, str) else ""
        if text in self.local:
            return text
        if not text:
            raise CheckpointError("choose a checkpoint: " + self._offer())
        if not is_repo_id(text):
            raise CheckpointError(f"{text!r} is not a checkpoint this app offers nor a Hugging Face Hub repo id: " + self._offer())
        return text

    def _offer(self) -> str:
        names = ", ".join(repr(n) for n in self.local)
        return (f"one of {names}, " if names else "") + "or a Hub repo id of the form 'org/name'"

    def is_loaded(self, choice: str) -> bool:
        return choice in self._models

    def get(self, choice) -> Autoencoder:
        """The model for ``choice`` (see `validate`), loading or downloading it on first use."""
        name = self.validate(choice)
        with self._guard:
            if name in self._models:
                self._models.move_to_end(name)
                return self._models[name]
            lock = self._loading.setdefault(name, threading.Lock())
        with lock:  # one download per checkpoint, while other checkpoints keep serving
            with self._guard:
                if name in self._models:
                    return self._models[name]
            model = self._load(name)
            with self._guard:
                self._models[name] = model
                hub_names = [n for n in self._models if n not in self.local]
                for old in hub_names[: max(0, len(hub_names) - self.max_hub_models)]:
                    del self._models[old]
        return model

    def _load(self, name: str) -> Autoencoder:
        spec = self.local.get(name)
        if isinstance(spec, Autoencoder):
            return spec.eval().requires_grad_(False)
        if spec is not None:
            return load_vae(spec).requires_grad_(False)
        folder = fetch_checkpoint(name)  # an unreachable Hub answers at once, from the cache or with the ways out
        model = load_vae(folder).requires_grad_(False)
        model.name_or_path = name
        return model


def describe(vae: Autoencoder, name: str) -> str:
    """One line about a checkpoint: what it takes, its latents, training data and figures if known."""
    text = f"**{name}**: {vae.describe()}"
    metrics = vae.metrics
    if metrics.get("dataset"):
        text += f", trained on {metrics['dataset']}"
    test = metrics.get("test") or {}
    if isinstance(test.get("neg_elbo_nats"), (int, float)):
        text += f" (test -ELBO {test['neg_elbo_nats']:.1f} nats/image)"
    if not metrics.get("train_anomaly_percentiles"):
        text += "; no training anomaly percentiles, so scores are shown without a percentile"
    return text + "."


# ------------------------------------------------------------------ arguments
def check_int(name: str, value, low: int, high: int) -> int:
    """``value`` as an int in [low, high], or a ValueError that names the argument."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) or not low <= value <= high:
        raise ValueError(f"{name} must be a whole number in [{low}, {high}], got {value!r}")
    return int(value)


def check_float(name: str, value, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ValueError(f"{name} must be a number in [{low:g}, {high:g}], got {value!r}")
    return float(value)


def choose_seed(seed, random_seed: bool) -> int:
    """A fresh random seed when ``random_seed``, else ``seed`` checked to be in [0, 2^31 - 1]."""
    if random_seed:
        return secrets.randbelow(MAX_SEED + 1)
    if seed is None:
        raise ValueError("seed is empty: enter a whole number or tick 'random seed'")
    return check_int("seed", seed, 0, MAX_SEED)


# ------------------------------------------------------------------ reading uploads
def load_image(path, channels: int) -> torch.Tensor:
    """An uploaded file -> ``[channels, H, W]`` float in [0, 1], longest side at most `MAX_SIDE`.

    Every mode of `pixels.PIL_MODES` is read as the library reads it (RGBA and palette transparency
    composited on white, 16-bit and float gray at their own scale, see `vae_augment.pixels`), other
    modes are refused; the first frame of an animation is used. Files that are not images, or would
    decode to more than `MAX_UPLOAD_PIXELS`, are refused with a ValueError before decoding.
    """
    if path is None:
        raise ValueError("no image given: upload one, draw one or pick an example")
    name = Path(str(path)).name
    try:
        with Image.open(path) as image:
            width, height = image.size
            if width * height > MAX_UPLOAD_PIXELS:
                raise ValueError(f"{name} is {width}x{height} pixels; the app accepts images of at most "
                                 f"{MAX_UPLOAD_PIXELS // 1_000_000} megapixels")
            if image.format == "JPEG":
                image.draft(image.mode, (MAX_SIDE, MAX_SIDE))  # decode large JPEGs at a reduced scale
            image.load()
            image = ImageOps.exif_transpose(image)
            scale = pil_scale(image)  # 16-bit and float gray at their own scale, read from every pixel before downscaling
            # read as the library reads it (its own channels, then converted), so the app shows what VAEAugment does
            return convert_channels(pil_to_float(_bounded(image), pil_channels(image.mode), scale), channels)
    except (OSError, SyntaxError, Image.DecompressionBombError) as err:  # UnidentifiedImageError is an OSError
        raise ValueError(f"{name} could not be read as an image ({type(err).__name__}: {err}); "
                         "upload a PNG, JPEG, WebP, BMP, GIF or TIFF file") from None


def _bounded(image: Image.Image) -> Image.Image:
    """Downscale so the longest side is at most `MAX_SIDE` (aspect kept)."""
    if image.mode in ("P", "PA"):
        image = image.convert("RGBA" if image.mode == "PA" or "transparency" in image.info else "RGB")
    elif image.mode == "1":
        image = image.convert("L")
    elif image.mode not in ("L", "LA", "RGB", "RGBA", "I", "F") and not image.mode.startswith("I;16"):
        image = image.convert("RGB")  # CMYK, YCbCr, LAB, HSV, ...
    scale = MAX_SIDE / max(image.size)
    if scale < 1:
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.BILINEAR, reducing_gap=3.0)
    return image


def drawing_to_image(value, size: tuple[int, int], margin: float = 0.2) -> Image.Image:
    """A sketchpad drawing (dark strokes on a light or transparent canvas, as on paper) -> a gray
    image of ``size`` (H, W), white strokes on black, framed as MNIST frames its digits: the
    strokes' bounding box, squared, with ``margin`` of its side around it."""
    composite = value.get("composite") if isinstance(value, dict) else value
    if composite is None:
        raise ValueError("the sketchpad is empty: draw something first")
    rgba = np.asarray(composite.convert("RGBA") if isinstance(composite, Image.Image) else Image.fromarray(composite).convert("RGBA"),
                      dtype=np.float32) / 255.0
    ink = (1.0 - rgba[..., :3].mean(-1)) * rgba[..., 3]  # transparent counts as paper
    rows, cols = np.nonzero(ink > 0.1)
    if rows.size == 0:
        raise ValueError("the sketchpad is empty: draw something first")
    top, bottom, left, right = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    side = max(bottom - top, right - left)
    pad = int(round(side * margin))
    canvas = np.zeros((side + 2 * pad, side + 2 * pad), dtype=np.float32)
    y0, x0 = pad + (side - (bottom - top)) // 2, pad + (side - (right - left)) // 2
    canvas[y0 : y0 + bottom - top, x0 : x0 + right - left] = ink[top:bottom, left:right]
    small = resize(torch.from_numpy(canvas)[None, None], size)[0]
    return to_pil(small)


def example_drawings(size: tuple[int, int]) -> list[Image.Image]:
    """A few drawn digits (0, 1, 4, 7), framed by `drawing_to_image` (white on black)."""
    strokes = {
        "0": [("ellipse", (90, 40, 190, 240))],
        "1": [("line", [(120, 70), (150, 40), (150, 240)])],
        "4": [("line", [(170, 240), (170, 40), (80, 170), (200, 170)])],
        "7": [("line", [(80, 50), (200, 50), (120, 240)])],
    }
    images = []
    for shapes in strokes.values():
        canvas = Image.new("L", (280, 280), 255)
        draw = ImageDraw.Draw(canvas)
        for kind, xy in shapes:
            if kind == "ellipse":
                draw.ellipse(xy, outline=0, width=24)
            else:
                draw.line(xy, fill=0, width=24, joint="curve")
        images.append(drawing_to_image(canvas, size))
    return images


# ------------------------------------------------------------------ converting results
def for_display(image: Image.Image, min_side: int = DISPLAY_MIN_SIDE) -> Image.Image:
    """Enlarge small images by a whole factor (nearest neighbour, so pixels stay crisp) to at least
    ``min_side`` on the short side; larger images are returned as they are."""
    factor = -(-min_side // min(image.size))
    return image if factor <= 1 else image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)


def grid(images: torch.Tensor, nrow: int) -> Image.Image:
    """``[N, C, H, W]`` -> one PIL image, ``nrow`` images per row, 2-pixel gray gutters."""
    return to_pil(make_grid(images.float().cpu(), nrow=nrow, padding=2, pad_value=0.5))


class OutputFolder:
    """Files the app hands out (zips, grids): one subfolder per request under a private temporary
    folder; subfolders older than ``max_age_s`` are removed as new ones are made."""

    def __init__(self, max_age_s: float = 3600.0):
        self.root = Path(tempfile.mkdtemp(prefix="vae-augment-app-"))
        self.max_age_s = max_age_s

    def new(self, keep: bool = False) -> Path:
        """A fresh subfolder; ``keep`` exempts it from removal (for files served all along, like examples)."""
        now = time.time()
        for old in self.root.iterdir():
            if old.is_dir() and not old.name.startswith("keep-") and now - old.stat().st_mtime > self.max_age_s:
                shutil.rmtree(old, ignore_errors=True)
        folder = self.root / (("keep-" if keep else "") + uuid.uuid4().hex)
        folder.mkdir()
        return folder


def save_png(folder: Path, name: str, image: Image.Image) -> str:
    """Save ``image`` as ``folder/name`` (PNG) and return the path as a string.

    The app hands Gradio files rather than PIL images: Gradio writes PIL results to a
    content-addressed cache in place, so two requests with an identical result (the same
    example's reconstruction, say) can serve a half-written file; files are copied atomically.
    """
    path = folder / name
    image.save(path, format="PNG")
    return str(path)


def write_zip(path: Path, images: dict[str, Image.Image]) -> Path:
    """Save ``{file name: PIL image}`` as PNGs in one zip file at ``path``."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for filename, image in images.items():
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            archive.writestr(filename, buffer.getvalue())
    return path


# ------------------------------------------------------------------ the tabs
def model_view(vae: Autoencoder, x: torch.Tensor) -> torch.Tensor:
    """``x: [B, C, H, W]`` as the model sees it: its channels, at its working size (before any padding)."""
    x = convert_channels(x.to(vae.device), vae.channels)
    return resize(x, vae.working_size(*x.shape[-2:]))


def anomaly(vae: Autoencoder, x: torch.Tensor) -> tuple[float, float | None]:
    """Anomaly score (in ``vae.score_unit``) of one image ``x: [C, H, W]`` and its percentile among the training
    scores (None when the checkpoint has no reference percentiles)."""
    return _percentile(vae, vae.anomaly_score(model_view(vae, x.unsqueeze(0))))


def _percentile(vae: Autoencoder, score: torch.Tensor) -> tuple[float, float | None]:
    percentile = None
    if vae.metrics.get("train_anomaly_percentiles"):
        percentile = float(vae.anomaly_percentile(score)[0])
    return float(score[0]), percentile


def augment(vae: Autoencoder, x: torch.Tensor, n: int, mode: str, strength: float, residual: bool, seed: int) -> dict:
    """``n`` variants of ``x: [C, H, W]`` by `VAEAugment` (exactly what a training pipeline would
    get), with the reconstruction and the anomaly score. Returns tensors at the input's size."""
    check_mode_strength(mode, strength)
    transform = VAEAugment(vae, strength=strength, mode=mode, residual=bool(residual), p=1.0, generator=torch.Generator().manual_seed(seed))
    batch = x.unsqueeze(0).expand(n, -1, -1, -1).contiguous()
    variants = transform(batch)
    zero = torch.zeros(1, *latent_shape(vae, x.shape[-2:]))
    reconstruction = augment_batch(vae, x.unsqueeze(0), zero, "data", 0.0)[0]
    score, percentile = anomaly(vae, x)
    return {"original": x, "reconstruction": reconstruction, "variants": variants, "score": score, "percentile": percentile,
            "residual": bool(residual)}


def change_view(variants: torch.Tensor, reference: torch.Tensor, max_gain: float = 20.0) -> dict:
    """Where each of ``variants: [N, C, H, W]`` differs from ``reference: [C, H, W]`` (what strength 0 gives).

    ``images``: ``|variant - reference|`` averaged over channels, ``[N, 1, H, W]``, multiplied by ``gain`` so
    that the largest change is white (the gain is at most ``max_gain``, so that rounding noise stays dark);
    ``mean`` and ``max``: the change per pixel before the gain, in [0, 1] units.
    """
    difference = (variants.float() - reference.float().unsqueeze(0)).abs().mean(1, keepdim=True)
    peak = float(difference.max()) if difference.numel() else 0.0
    gain = min(max_gain, 1.0 / peak) if peak > 0 else 1.0
    return {"images": (difference * gain).clamp(0, 1), "gain": gain, "mean": float(difference.mean()) if difference.numel() else 0.0,
            "max": peak}


def interpolate(vae: Autoencoder, a: torch.Tensor, b: torch.Tensor, steps: int, method: str) -> torch.Tensor:
    """``steps`` images decoded on the path between the codes of ``a`` and ``b`` -> ``[steps, C, H, W]``."""
    a_m, b_m = (model_view(vae, t.unsqueeze(0))[0] for t in (a, b))
    if a_m.shape != b_m.shape:  # a model of any size: bring the second image to the first one's size
        b_m = resize(b_m.unsqueeze(0), a_m.shape[-2:])[0]
    return vae.interpolate(a_m, b_m, steps=steps, method=method)


def sample(vae: Autoencoder, n: int, temperature: float, seed: int) -> torch.Tensor:
    return vae.sample(n, generator=torch.Generator(device=vae.device).manual_seed(seed), temperature=temperature)


@torch.no_grad()
def explore(vae: Autoencoder, x: torch.Tensor, n_dims: int, steps: int, span: float) -> tuple[torch.Tensor, list[int], torch.Tensor, torch.Tensor]:
    """Move the ``n_dims`` latent dimensions this image uses most, one at a time, from ``-span`` to
    ``+span`` times the training data's spread along each.

    "Uses most" is the per-dimension KL of q(z|x) from the prior: dimensions the model ignores keep
    the prior (KL near 0) and change nothing when moved. Returns the traversal
    ``[n_dims, steps, C, H, W]``, the dimensions, their KL (nats) and the offsets ``[steps]`` in
    units of the data's spread. For a diffusers backbone the dimensions are latent channels (moved
    uniformly over the image), ranked by their spread over the image instead of KL.
    """
    x_m = model_view(vae, x.unsqueeze(0))
    posterior = vae.encode(vae.to_model(x_m))
    kl = vae.dimension_usage(posterior)
    n_dims = min(n_dims, kl.shape[0])
    dims = torch.argsort(kl, descending=True, stable=True)[:n_dims]
    offsets = torch.linspace(-span, span, steps, device=vae.device)
    values = offsets.unsqueeze(0) * vae.latent_scale.flatten()[dims].unsqueeze(1)
    return vae.traverse(x_m[0], dims.tolist(), values), dims.tolist(), kl[dims], offsets


def anomaly_view(vae: Autoencoder, x: torch.Tensor) -> dict:
    """What the Anomaly tab shows for ``x: [C, H, W]``: the image as the model sees it (its size and
    channels), the reconstruction, their per-pixel absolute difference (averaged over channels,
    ``[1, H, W]``, not rescaled), the score and its percentile (see `anomaly`)."""
    seen = model_view(vae, x.unsqueeze(0))[0]
    scores, reconstructions = vae.score_and_reconstruct(seen.unsqueeze(0))  # one pass for both
    reconstruction = reconstructions[0]
    score, percentile = _percentile(vae, scores)
    difference = (seen - reconstruction).abs().mean(0, keepdim=True)
    return {"seen": seen, "reconstruction": reconstruction, "difference": difference, "score": score, "percentile": percentile}
