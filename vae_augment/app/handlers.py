"""The app's requests, one plain function each, testable without building the app.

Each handler takes what it works with explicitly (the `support.ModelCache` of checkpoints, the
`support.OutputFolder` for the files it hands out) followed by the inputs of its endpoint, in the
order the endpoint takes them, and returns the endpoint's outputs (file paths, text, numbers). The
layout (`vae_augment.app`) binds the first arguments with `functools.partial`; a test can call a
handler directly. The five endpoints (``augment``, ``interpolate``, ``sample``, ``explore``,
``anomaly``) report a bad input as a ``gr.Error`` with the reason (`ui_errors`).
"""

from __future__ import annotations

import functools
import logging
import warnings
from pathlib import Path

import gradio as gr
from PIL import Image

from ..latent import MAX_STRENGTH
from ..models import Autoencoder
from ..policy import choose_defaults
from . import support
from .support import ModelCache, OutputFolder

log = logging.getLogger("vae_augment.app")


def ui_errors(fn):
    """Show ValueError/TypeError messages (CheckpointError included) in the UI as gr.Error; anything
    unexpected is logged with its traceback and reported in one line."""

    @functools.wraps(fn)  # keeps the signature, so Gradio still sees the progress parameter
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except (ValueError, TypeError) as err:
            raise gr.Error(str(err), print_exception=False) from None
        except Exception as err:
            log.exception("%s failed", fn.__name__)
            raise gr.Error(f"unexpected {type(err).__name__} in {fn.__name__}: {err}", print_exception=False) from None

    return wrapper


def load_model(models: ModelCache, checkpoint, progress) -> Autoencoder:
    """The model for the chosen ``checkpoint``, saying so through ``progress`` when it must be loaded first."""
    name = models.validate(checkpoint)
    if not models.is_loaded(name):
        progress(0.05, desc=f"loading {name}" + ("" if name in models.names else " from the Hugging Face Hub"))
    return models.get(name)


# ------------------------------------------------------------------ the endpoints
def checkpoint_info(models: ModelCache, checkpoint, progress=gr.Progress()) -> str:
    """A line about the chosen checkpoint, or why it cannot be used (shown next to the choice)."""
    try:
        name = models.validate(checkpoint)
        return support.describe(load_model(models, name, progress), name)
    except ValueError as err:  # CheckpointError included: offline, not found, not a repo id
        return f"**Cannot use this checkpoint**: {err}"


@ui_errors
def augment(models: ModelCache, outputs: OutputFolder, image, checkpoint, mode, strength, residual, variants, seed, random_seed,
            progress=gr.Progress()) -> tuple:
    """``variants`` variants of ``image`` -> (original, reconstruction, gallery of variants, gallery of changes,
    anomaly score, summary, zip of the PNGs, the seed used)."""
    vae = load_model(models, checkpoint, progress)
    n = support.check_int("variants", variants, 1, support.MAX_VARIANTS)
    seed = support.choose_seed(seed, random_seed)
    x = support.load_image(image, vae.channels)
    progress(0.3, desc="augmenting")
    result = support.augment(vae, x, n, mode, strength, residual, seed)
    folder = outputs.new()
    pils = [support.to_pil(v) for v in result["variants"]]
    original, reconstruction = support.to_pil(result["original"]), support.to_pil(result["reconstruction"])
    files = {"original.png": original, "reconstruction.png": reconstruction, "grid.png": support.grid(result["variants"], nrow=min(n, 8))}
    files.update({f"variant_{i + 1:02d}.png": p for i, p in enumerate(pils)})
    archive = support.write_zip(folder / f"vae-augment_{mode}_{strength:g}_seed{seed}.zip", files)
    gallery = [(_shown(folder, f"variant_{i + 1:02d}.png", p), f"variant {i + 1}") for i, p in enumerate(pils)]
    reference = "original" if result["residual"] else "reconstruction"
    change = support.change_view(result["variants"], result[reference])
    changes = [_shown(folder, f"change_{i + 1:02d}.png", d) for i, d in enumerate(change["images"])]
    summary = (_percentile_text(result["score"], result["percentile"], vae.score_unit)
               + _change_text(mode, strength, reference, change) + _input_note(image, vae))
    return (_shown(folder, "original.png", original), _shown(folder, "reconstruction.png", reconstruction), gallery,
            changes, result["score"], summary, str(archive), seed)


@ui_errors
def interpolate(models: ModelCache, outputs: OutputFolder, image_a, image_b, checkpoint, steps, method, progress=gr.Progress()) -> str:
    """The decoded path from ``image_a`` to ``image_b`` in ``steps`` images, as one strip (a PNG path)."""
    vae = load_model(models, checkpoint, progress)
    steps = support.check_int("steps", steps, 2, support.MAX_STEPS)
    a, b = support.load_image(image_a, vae.channels), support.load_image(image_b, vae.channels)
    frames = support.interpolate(vae, a, b, steps, method)
    return _shown(outputs.new(), f"interpolation_{method}_{steps}.png", support.grid(frames, nrow=steps))


@ui_errors
def sample(models: ModelCache, outputs: OutputFolder, checkpoint, count, temperature, seed, random_seed,
           progress=gr.Progress()) -> tuple[list, int]:
    """``count`` decoded prior samples -> (gallery, the seed used)."""
    vae = load_model(models, checkpoint, progress)
    n = support.check_int("count", count, 1, support.MAX_SAMPLES)
    temperature = support.check_float("temperature", temperature, 0.0, 2.0)
    seed = support.choose_seed(seed, random_seed)
    images, folder = support.sample(vae, n, temperature, seed), outputs.new()
    return [(_shown(folder, f"sample_{i + 1:02d}.png", x), f"sample {i + 1}") for i, x in enumerate(images)], seed


@ui_errors
def explore(models: ModelCache, outputs: OutputFolder, image, checkpoint, dims, steps, span, progress=gr.Progress()) -> tuple[str, str]:
    """The traversal of the ``dims`` latent dimensions ``image`` uses most -> (grid PNG path, Markdown legend)."""
    vae = load_model(models, checkpoint, progress)
    dims = support.check_int("dimensions", dims, 1, support.MAX_TRAVERSE_DIMS)
    steps = support.check_int("steps", steps, 3, support.MAX_TRAVERSE_STEPS)
    span = support.check_float("range", span, 0.1, support.MAX_TRAVERSE_SPAN)
    x = support.load_image(image, vae.channels)
    traversal, chosen, kl, offsets = support.explore(vae, x, dims, steps, span)
    picture = support.grid(traversal.flatten(0, 1), nrow=steps)
    rows = "\n".join(f"| {row + 1} | z[{d}] | {k:.2f} |" for row, (d, k) in enumerate(zip(chosen, kl.tolist())))
    table = (f"Columns move each dimension from {offsets[0]:+.2g} to {offsets[-1]:+.2g} times the training data's spread "
             f"along it (the middle column is the image's own code).\n\n| row | dimension | {vae.usage_unit} |\n|---|---|---|\n"
             + rows)
    picture = support.for_display(picture, support.DISPLAY_GRID_ROW * len(chosen))
    return support.save_png(outputs.new(), "latent_traversal.png", picture), table


@ui_errors
def anomaly(models: ModelCache, outputs: OutputFolder, image, checkpoint, progress=gr.Progress()) -> tuple:
    """-> (anomaly score, percentile, summary, the image as the model sees it, reconstruction, difference)."""
    vae = load_model(models, checkpoint, progress)
    result = support.anomaly_view(vae, support.load_image(image, vae.channels))
    folder = outputs.new()
    shown = [_shown(folder, f"{k}.png", result[k]) for k in ("seen", "reconstruction", "difference")]
    return (result["score"], result["percentile"],
            _percentile_text(result["score"], result["percentile"], vae.score_unit) + _input_note(image, vae), *shown)


# ------------------------------------------------------------------ the private events
def model_settings(models: ModelCache, checkpoint) -> tuple[gr.Number, gr.Number, gr.Checkbox]:
    """What depends on the chosen model (once it is loaded): the score boxes' unit and the residual
    default (`VAEAugment`'s own: `policy.choose_defaults`)."""
    try:
        name = models.validate(checkpoint)
        vae = models.get(name) if name in models.names or models.is_loaded(name) else None
    except ValueError:
        vae = None
    unit = vae.score_unit if vae is not None else "in the model's unit"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the checkpoint line already says what the model is
        residual_default = choose_defaults(vae, None)[0] if vae is not None else True
    return (gr.Number(label=f"Anomaly score ({unit})"), gr.Number(label=f"Anomaly score ({unit}; higher = more unusual)"),
            gr.Checkbox(value=residual_default))


def use_drawing(models: ModelCache, drawing, checkpoint) -> Image.Image:
    """The sketchpad's drawing as an image of the model's size (28x28 while the model is not loaded)."""
    known = checkpoint in models.names or models.is_loaded(checkpoint)  # never download for a drawing
    size = models.get(checkpoint).sample_size if known else (28, 28)
    try:
        return support.drawing_to_image(drawing, size)
    except ValueError as err:
        raise gr.Error(str(err), print_exception=False) from None


def strength_range(mode, strength) -> gr.Slider:
    """The strength slider for ``mode``: its highest strength, the value lowered to it if above."""
    highest = MAX_STRENGTH.get(mode, 4.0)
    return gr.Slider(maximum=highest, value=min(strength, highest))


def examples_for(models: ModelCache, folder: Path) -> list[str]:
    """PNG examples that need no data set: a few drawn digits and the default checkpoint's own prior samples."""
    size, samples = (28, 28), []
    if models.names:
        try:
            vae = models.get(models.names[0])
            size = vae.sample_size
            samples = [support.to_pil(x) for x in support.sample(vae, 4, temperature=0.8, seed=0)]
        except ValueError as err:  # a broken default checkpoint should not keep the app from starting
            log.warning("no prior-sample examples: %s", err)
    paths = []
    for i, image in enumerate(support.example_drawings(size) + samples):
        path = folder / f"example_{i}.png"
        image.save(path)
        paths.append(str(path))
    return paths


# ------------------------------------------------------------------ text and files
def _shown(folder: Path, name: str, image) -> str:
    """A tensor ``[C, H, W]`` or PIL image, enlarged for display and saved as ``folder/name`` (PNG)."""
    return support.save_png(folder, name, support.for_display(image if isinstance(image, Image.Image) else support.to_pil(image)))


def _input_note(image, vae: Autoencoder) -> str:
    """A note when the input is not what the model was trained on (colour into a gray model, gray into an RGB one,
    a size more than twice or less than half the model's), saying what it was trained on and what was done."""
    try:
        with Image.open(image["path"] if isinstance(image, dict) else image) as picture:
            width, height, colour = picture.width, picture.height, picture.mode not in ("1", "L", "LA", "I", "I;16", "F")
    except (OSError, TypeError, ValueError, KeyError):  # a drawing or an array: nothing to compare
        return ""
    done = []
    if colour and vae.channels == 1:
        done.append("converted to gray")
    elif not colour and vae.channels == 3:
        done.append("copied to three colour channels")
    size = getattr(vae, "image_size", None)
    if size is not None and not (0.5 <= height / size[0] <= 2 and 0.5 <= width / size[1] <= 2):
        done.append(f"resized to {size[0]}x{size[1]} and back")
    if not done:
        return ""
    kind = "colour" if colour else "gray"
    return (f"\n\n**Note:** this model knows {vae.describe()}; your {width}x{height} {kind} image was "
            f"{' and '.join(done)}, so expect it to look like the model's training images.")


def _change_text(mode: str, strength: float, reference: str, change: dict) -> str:
    """What the variants are, and how far they are from what strength 0 gives (the reconstruction, or the
    original in the residual mode), so that a small change is not mistaken for none."""
    return (f"\n\nVariants at strength **{strength:g}** in mode **{mode}** (0 gives the {reference}): on average "
            f"**{change['mean']:.3f}** per pixel from the {reference} on a 0-1 scale, at most {change['max']:.2f}. "
            f"The row below the variants shows where, brightened {change['gain']:.3g}x. Raise the strength for more change.")


def _percentile_text(score: float, percentile: float | None, unit: str) -> str:
    """The anomaly summary, with the score in the model's own unit (`Autoencoder.score_unit`)."""
    if percentile is None:
        return f"Anomaly score **{score:.1f}** {unit} (this checkpoint has no training percentiles to compare with)."
    verdict = "unusual for this model" if percentile >= 99 else "typical of the training data" if percentile <= 90 else "at the edge of the training data"
    return (f"Anomaly score **{score:.1f}** {unit}: higher than {percentile:.1f}% of the training images, "
            f"{verdict}.")
