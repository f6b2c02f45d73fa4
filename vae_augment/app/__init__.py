"""The vae-augment demo: see what a VAE augmentation does to an image before training with it.

    pip install "vae-augment[app]"
    vae-augment demo           # or `python app.py` in the source tree; http://127.0.0.1:7860, offline
                               # (GRADIO_SERVER_NAME / GRADIO_SERVER_PORT to change)

A thin Gradio UI: each tab is one named API endpoint (``/augment``, ``/interpolate``, ``/sample``,
``/explore``, ``/anomaly``, plus ``/checkpoint_info``) that ``gradio_client`` can call; the work
is done by the library, through `vae_augment.app.support`. Importing this package needs gradio
(the ``[app]`` extra); nothing is served until `main` or `launch` is called.
"""

from __future__ import annotations

import functools
import logging
import os
import warnings
from pathlib import Path
from typing import Mapping

import pydantic
from PIL import Image

try:
    import gradio as gr
except ImportError:  # pragma: no cover - depends on the environment
    raise ImportError("the demo needs gradio: pip install 'vae-augment[app]'") from None

from ..augment import DEFAULT_STRENGTH, choose_residual
from ..checkpoint import bundled_dir, bundled_names
from ..latent import MAX_STRENGTH, MODES
from ..models import Autoencoder
from . import support

log = logging.getLogger("vae_augment.app")

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 7860
CHECKPOINTS_ENV = "VAE_AUGMENT_APP_CHECKPOINTS"  # extra checkpoint folders, os.pathsep-separated (set by the operator)
CONCURRENCY = 2  # requests computed at once; the rest wait in the queue
QUEUE_SIZE = 64
MAX_FILE_SIZE = "25mb"  # uploads above this are refused by Gradio before any decoding
# System fonts only: the default theme would ask Google Fonts for its typeface, which fails offline.
THEME = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
# Inputs are often tiny (28x28): show them enlarged, with crisp pixels, like the results; galleries
# take the height of their rows (Gradio reserves 450 pixels otherwise).
CSS = """
.pixel-input img { width: 100%; height: 100%; object-fit: contain; image-rendering: pixelated; }
.fit-gallery .grid-wrap { min-height: 0 !important; height: auto !important; max-height: 660px; }
"""


def image_input(label: str, **kwargs) -> gr.Image:
    """An image upload whose bad inputs become a clear ``gr.Error`` instead of a stack trace.

    It passes the uploaded file's path on (``type="filepath"``, no mode conversion), so Gradio
    itself only reads the header; `support.load_image` decodes the pixels, within a pixel bound.
    API clients get the reason too: a bare path string (``gradio_client`` needs ``handle_file``),
    a file that is not an image, or a path that was not uploaded to this app.
    """
    component = gr.Image(label=label, type="filepath", image_mode=None, format="png", sources=["upload", "clipboard"],
                         height=260, elem_classes=["pixel-input"], **kwargs)
    # Wrapped on the instance: a gr.Image subclass would make Gradio write a .pyi file next to app.py.
    component.data_model = _FilesOnly(component.data_model)
    component.preprocess = _readable_upload(component.preprocess, component.GRADIO_CACHE)
    return component


class _FilesOnly:
    """An image component's data model (same schema, same validation), except that a value that is not a file
    object fails with a ``gr.Error`` saying how to send one. Gradio validates inputs before any of the app's
    code runs, and reports its own ValidationError to API clients only as "the upstream Gradio app has raised
    an exception"; ``client.predict("digit.png", ...)`` is the usual cause."""

    def __init__(self, model):
        self._model = model

    def __getattr__(self, name):  # schema, from_json, ...: the wrapped model's
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._model, name)

    def model_validate(self, value, *args, **kwargs):
        if isinstance(value, dict):
            try:
                return self._model.model_validate(value, *args, **kwargs)
            except pydantic.ValidationError as err:
                problem = f"a file object that Gradio refused ({err.errors()[0]['msg']})"
        elif isinstance(value, str):
            problem = f"the string {value!r}"
        else:
            problem = f"a value of type {type(value).__name__}"
        raise gr.Error(f"the image must be sent as a file, got {problem}: with gradio_client, pass "
                       "handle_file(path) (from gradio_client import handle_file), not the path itself", print_exception=False)


def _readable_upload(preprocess, upload_folder: str):
    @functools.wraps(preprocess)
    def wrapper(payload):
        path = getattr(payload, "path", None)
        if path and not _inside(path, upload_folder):
            # A file object that names a path on the server instead of an upload: Gradio moves only objects with
            # its "meta" key to its cache and passes the others on as they are. Never open those.
            raise gr.Error("the image must be uploaded to this app: with gradio_client, pass handle_file(path); "
                           f"{Path(path).name} names a file on the server, which the app does not open", print_exception=False)
        try:
            return preprocess(payload)
        except gr.Error:
            raise
        except Exception as err:  # PIL raises several kinds for files that are not images
            name = getattr(payload, "orig_name", None) or "the upload"
            raise gr.Error(f"{name} is not an image this app can read ({type(err).__name__}); "
                           "upload a PNG, JPEG, WebP, BMP, GIF or TIFF file", print_exception=False) from None

    return wrapper


def _inside(path: str, folder: str) -> bool:
    """Whether ``path`` lies in ``folder``, after resolving links and ``..``."""
    return Path(os.path.realpath(path)).is_relative_to(os.path.realpath(folder))


def _ui_errors(fn):
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



def _examples_for(models: support.ModelCache, folder: Path) -> list[str]:
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


def build_app(checkpoints: Mapping[str, "str | Path | Autoencoder"] | None = None) -> gr.Blocks:
    """The Gradio Blocks app. ``checkpoints`` maps the names offered to local folders (or models);
    default: the bundled checkpoints. A Hub repo id typed into the checkpoint box is also accepted."""
    models = support.ModelCache(checkpoints)
    outputs = support.OutputFolder()
    examples = _examples_for(models, outputs.new(keep=True))

    def model(checkpoint, progress) -> Autoencoder:
        name = models.validate(checkpoint)
        if not models.is_loaded(name):
            progress(0.05, desc=f"loading {name}" + ("" if name in models.names else " from the Hugging Face Hub"))
        return models.get(name)

    def checkpoint_info(checkpoint, progress=gr.Progress()):
        """A line about the chosen checkpoint, or why it cannot be used (shown next to the choice)."""
        try:
            name = models.validate(checkpoint)
            return support.describe(model(name, progress), name)
        except ValueError as err:  # CheckpointError included: offline, not found, not a repo id
            return f"**Cannot use this checkpoint**: {err}"

    @_ui_errors
    def augment(image, checkpoint, mode, strength, residual, variants, seed, random_seed, progress=gr.Progress()):
        vae = model(checkpoint, progress)
        n = support.check_int("variants", variants, 1, support.MAX_VARIANTS)
        seed = support.choose_seed(seed, random_seed)
        x = support.load_image(image, vae.channels)
        progress(0.3, desc="augmenting")
        result = support.augment(vae, x, n, mode, strength, residual, seed)
        folder = outputs.new()
        pils = [support.to_pil(v) for v in result["variants"]]
        original, reconstruction = support.to_pil(result["original"]), support.to_pil(result["reconstruction"])
        files = {"original.png": original, "reconstruction.png": reconstruction,
                 "grid.png": support.grid(result["variants"], nrow=min(n, 8))}
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

    @_ui_errors
    def interpolate(image_a, image_b, checkpoint, steps, method, progress=gr.Progress()):
        vae = model(checkpoint, progress)
        steps = support.check_int("steps", steps, 2, support.MAX_STEPS)
        a, b = support.load_image(image_a, vae.channels), support.load_image(image_b, vae.channels)
        frames = support.interpolate(vae, a, b, steps, method)
        return _shown(outputs.new(), f"interpolation_{method}_{steps}.png", support.grid(frames, nrow=steps))

    @_ui_errors
    def sample(checkpoint, count, temperature, seed, random_seed, progress=gr.Progress()):
        vae = model(checkpoint, progress)
        n = support.check_int("count", count, 1, support.MAX_SAMPLES)
        temperature = support.check_float("temperature", temperature, 0.0, 2.0)
        seed = support.choose_seed(seed, random_seed)
        images, folder = support.sample(vae, n, temperature, seed), outputs.new()
        return [(_shown(folder, f"sample_{i + 1:02d}.png", x), f"sample {i + 1}") for i, x in enumerate(images)], seed

    @_ui_errors
    def explore(image, checkpoint, dims, steps, span, progress=gr.Progress()):
        vae = model(checkpoint, progress)
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

    @_ui_errors
    def anomaly(image, checkpoint, progress=gr.Progress()):
        vae = model(checkpoint, progress)
        result = support.anomaly_view(vae, support.load_image(image, vae.channels))
        folder = outputs.new()
        shown = [_shown(folder, f"{k}.png", result[k]) for k in ("seen", "reconstruction", "difference")]
        return (result["score"], result["percentile"],
                _percentile_text(result["score"], result["percentile"], vae.score_unit) + _input_note(image, vae), *shown)

    def model_settings(checkpoint):
        """What depends on the chosen model (once it is loaded): the score boxes' unit and the residual
        default (`VAEAugment` chooses the residual mode for a blurry checkpoint)."""
        try:
            name = models.validate(checkpoint)
            vae = models.get(name) if name in models.names or models.is_loaded(name) else None
        except ValueError:
            vae = None
        unit = vae.score_unit if vae is not None else "in the model's unit"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # the checkpoint line already says what the model is
            residual_default = choose_residual(vae, None) if vae is not None else False
        return (gr.Number(label=f"Anomaly score ({unit})"), gr.Number(label=f"Anomaly score ({unit}; higher = more unusual)"),
                gr.Checkbox(value=residual_default))

    def use_drawing(drawing, checkpoint):
        known = checkpoint in models.names or models.is_loaded(checkpoint)  # never download for a drawing
        size = models.get(checkpoint).sample_size if known else (28, 28)
        try:
            return support.drawing_to_image(drawing, size)
        except ValueError as err:
            raise gr.Error(str(err), print_exception=False) from None

    def strength_range(mode, strength):
        highest = MAX_STRENGTH.get(mode, 4.0)
        return gr.Slider(maximum=highest, value=min(strength, highest))

    choices = models.names
    with gr.Blocks(title="vae-augment", analytics_enabled=False, delete_cache=(3600, 3600)) as demo:
        gr.Markdown("# vae-augment\nSee what a VAE augmentation does to an image before training with it: "
                    "upload or draw an image, pick a mode and a strength, and look at the variants.")
        with gr.Row():
            checkpoint = gr.Dropdown(choices=choices, value=choices[0] if choices else None, allow_custom_value=True,
                                     label="Checkpoint", info="a bundled checkpoint, or type a Hugging Face Hub repo id (org/name)",
                                     scale=2)
            info = gr.Markdown(label="Checkpoint", elem_id="checkpoint-info")

        with gr.Tab("Augment"):
            with gr.Row():
                with gr.Column():
                    image = image_input("Image (upload one, draw one, or pick an example)", elem_id="augment-input")
                    gr.Examples(examples=[[p] for p in examples], inputs=[image], label="Examples (drawings and prior samples)")
                with gr.Column():
                    sketch = gr.Sketchpad(label="Draw", type="pil", canvas_size=(280, 280),
                                          fixed_canvas=True, layers=False, transforms=(), elem_id="sketchpad",
                                          brush=gr.Brush(default_size=16, colors=["#000000"], color_mode="fixed"))
                    use = gr.Button("Use drawing and augment", size="sm", elem_id="use-drawing")
                with gr.Column():
                    mode = gr.Radio([m for m in MODES if m != "class"], value="data", label="Mode",
                                    info="data: noise scaled by the data's spread; posterior: by the posterior's; prior: blend towards a prior sample; neighbour: towards a nearby training image's code")
                    strength = gr.Slider(0, MAX_STRENGTH["data"], value=DEFAULT_STRENGTH, step=0.05, label="Strength")
                    residual = gr.Checkbox(label="Residual (add only the decoded change; keeps sharp detail)")
                    variants = gr.Slider(1, support.MAX_VARIANTS, value=8, step=1, label="Variants")
                    with gr.Row():
                        seed = gr.Number(value=0, precision=0, label="Seed", minimum=0, maximum=support.MAX_SEED, elem_id="augment-seed")
                        random_seed = gr.Checkbox(label="Random seed")
                    run = gr.Button("Augment", variant="primary", elem_id="augment-button")
            with gr.Row():
                original = gr.Image(label="Original", format="png", interactive=False)
                reconstruction = gr.Image(label="Reconstruction", format="png", interactive=False)
                with gr.Column():
                    score = gr.Number(None, precision=2, label="Anomaly score (in the model's unit)", interactive=False, elem_id="augment-score")
                    score_text = gr.Markdown(label="Anomaly summary", elem_id="augment-summary")
                    download = gr.File(label="Download: variants, original, reconstruction and a grid (PNG, zip)", elem_id="augment-download")
            gallery = gr.Gallery(label="Variants", format="png", columns=8, rows=1, elem_id="augment-gallery", elem_classes=["fit-gallery"])
            changes = gr.Gallery(label="Change: where each variant differs from what strength 0 gives (brightened; black = unchanged)",
                                 format="png", columns=8, rows=1, elem_id="augment-change", elem_classes=["fit-gallery"])
            augment_inputs = [image, checkpoint, mode, strength, residual, variants, seed, random_seed]
            augment_outputs = [original, reconstruction, gallery, changes, score, score_text, download, seed]
            run.click(augment, augment_inputs, augment_outputs, api_name="augment", show_progress_on=gallery)
            use.click(use_drawing, [sketch, checkpoint], image, api_visibility="private", queue=False).success(
                augment, augment_inputs, augment_outputs, api_visibility="private", show_progress_on=gallery)
            mode.change(strength_range, [mode, strength], strength, api_visibility="private", queue=False)

        with gr.Tab("Interpolate"):
            with gr.Row():
                image_a = image_input("First image")
                image_b = image_input("Second image")
                with gr.Column():
                    steps = gr.Slider(2, support.MAX_STEPS, value=8, step=1, label="Steps")
                    method = gr.Radio(["linear", "slerp"], value="linear", label="Interpolation",
                                      info="slerp: spherical, keeps the norm typical of the prior")
                    run_interpolate = gr.Button("Interpolate", variant="primary")
            if len(examples) >= 2:
                gr.Examples(examples=[[examples[i], examples[j]] for i, j in ((0, 2), (1, 3), (-1, -2)) if max(i, j) < len(examples)],
                            inputs=[image_a, image_b])
            strip = gr.Image(label="Decoded path from the first image to the second", format="png", interactive=False,
                             elem_id="interpolate-result")
            run_interpolate.click(interpolate, [image_a, image_b, checkpoint, steps, method], strip, api_name="interpolate")

        with gr.Tab("Sample"):
            with gr.Row():
                count = gr.Slider(1, support.MAX_SAMPLES, value=16, step=1, label="Images")
                temperature = gr.Slider(0, 2, value=0.8, step=0.05, label="Temperature", info="scale of the prior noise: lower is cleaner, higher more varied")
                sample_seed = gr.Number(value=0, precision=0, label="Seed", minimum=0, maximum=support.MAX_SEED, elem_id="augment-seed")
                sample_random = gr.Checkbox(label="Random seed")
            run_sample = gr.Button("Sample", variant="primary")
            samples = gr.Gallery(label="Decoded prior samples", format="png", columns=8, rows=1, elem_id="sample-gallery", elem_classes=["fit-gallery"])
            run_sample.click(sample, [checkpoint, count, temperature, sample_seed, sample_random], [samples, sample_seed], api_name="sample",
                             show_progress_on=samples)

        with gr.Tab("Explore latent"):
            with gr.Row():
                explore_image = image_input("Image")
                with gr.Column():
                    dims = gr.Slider(1, support.MAX_TRAVERSE_DIMS, value=6, step=1, label="Dimensions",
                                     info="the ones this image uses most (largest KL from the prior)")
                    explore_steps = gr.Slider(3, support.MAX_TRAVERSE_STEPS, value=7, step=2, label="Steps")
                    span = gr.Slider(0.5, support.MAX_TRAVERSE_SPAN, value=2.5, step=0.5, label="Range (x the data's spread)")
                    run_explore = gr.Button("Explore", variant="primary")
            gr.Examples(examples=[[p] for p in examples], inputs=[explore_image])
            traversal = gr.Image(label="One row per dimension, one column per step", format="png", interactive=False, elem_id="explore-result")
            legend = gr.Markdown(label="Dimensions")
            run_explore.click(explore, [explore_image, checkpoint, dims, explore_steps, span], [traversal, legend], api_name="explore",
                              show_progress_on=traversal)

        with gr.Tab("Anomaly"):
            with gr.Row():
                anomaly_image = image_input("Image")
                with gr.Column():
                    anomaly_score = gr.Number(precision=2, label="Anomaly score (in the model's unit; higher = more unusual)", interactive=False,
                                              elem_id="anomaly-score")
                    anomaly_percentile = gr.Number(precision=2, label="Percentile among the training images' scores", interactive=False)
                    anomaly_text = gr.Markdown(label="Summary")
                    run_anomaly = gr.Button("Score", variant="primary")
            gr.Examples(examples=[[p] for p in examples], inputs=[anomaly_image])
            with gr.Row():
                seen = gr.Image(label="What the model sees", format="png", interactive=False)
                anomaly_reconstruction = gr.Image(label="Reconstruction", format="png", interactive=False)
                diff = gr.Image(label="Difference (brighter = worse)", format="png", interactive=False, elem_id="anomaly-difference")
            run_anomaly.click(anomaly, [anomaly_image, checkpoint],
                              [anomaly_score, anomaly_percentile, anomaly_text, seen, anomaly_reconstruction, diff], api_name="anomaly",
                              show_progress_on=diff)

        checkpoint.change(checkpoint_info, checkpoint, info, api_name="checkpoint_info").then(
            model_settings, checkpoint, [score, anomaly_score, residual], api_visibility="private", queue=False)
        demo.load(checkpoint_info, checkpoint, info, api_visibility="private").then(
            model_settings, checkpoint, [score, anomaly_score, residual], api_visibility="private", queue=False)
    demo.queue(default_concurrency_limit=CONCURRENCY, max_size=QUEUE_SIZE)
    return demo


def checkpoints_from_env() -> dict[str, Path] | None:
    """Bundled checkpoints plus the folders listed in `CHECKPOINTS_ENV` (named after the folder), or
    None (bundled only) when it is unset."""
    extra = [Path(p).expanduser() for p in os.environ.get(CHECKPOINTS_ENV, "").split(os.pathsep) if p.strip()]
    if not extra:
        return None
    found = {name: bundled_dir() / name for name in bundled_names()}
    found.update({folder.name: folder for folder in extra})
    return found


def launch(demo: gr.Blocks, server_name: str | None = None, server_port: int | None = None, **kwargs):
    """Start the server: ``server_name``/``server_port``, else GRADIO_SERVER_NAME/GRADIO_SERVER_PORT, else 127.0.0.1:7860."""
    server_name = server_name or os.environ.get("GRADIO_SERVER_NAME") or DEFAULT_HOST
    server_port = int(server_port or os.environ.get("GRADIO_SERVER_PORT") or DEFAULT_PORT)
    kwargs.setdefault("max_file_size", MAX_FILE_SIZE)
    return demo.launch(server_name=server_name, server_port=server_port, theme=THEME, css=CSS, **kwargs)


def main(server_name: str | None = None, server_port: int | None = None) -> None:
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    launch(build_app(checkpoints_from_env()), server_name, server_port)
