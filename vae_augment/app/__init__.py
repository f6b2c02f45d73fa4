"""The vae-augment demo: see what a VAE augmentation does to an image before training with it.

    pip install "vae-augment[app]"
    vae-augment demo           # or `python app.py` in the source tree; http://127.0.0.1:7860, offline
                               # (GRADIO_SERVER_NAME / GRADIO_SERVER_PORT to change)

A thin Gradio UI: each tab is one named API endpoint (``/augment``, ``/interpolate``, ``/sample``,
``/explore``, ``/anomaly``, plus ``/checkpoint_info``) that ``gradio_client`` can call; the work
is done by the library, through `vae_augment.app.support`; the requests are the plain
functions of `vae_augment.app.handlers`, and each tab has its builder here. Importing this package needs gradio
(the ``[app]`` extra); nothing is served until `main` or `launch` is called.
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path
from typing import Mapping

import pydantic

try:
    import gradio as gr
except ImportError:  # pragma: no cover - depends on the environment
    raise ImportError("the demo needs gradio: pip install 'vae-augment[app]'") from None

from ..checkpoint import bundled_dir, bundled_names
from ..latent import MAX_STRENGTH, MODES
from ..models import Autoencoder
from ..policy import DEFAULT_STRENGTH
from . import handlers, support

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


def build_app(checkpoints: Mapping[str, "str | Path | Autoencoder"] | None = None) -> gr.Blocks:
    """The Gradio Blocks app. ``checkpoints`` maps the names offered to local folders (or models);
    default: the bundled checkpoints. A Hub repo id typed into the checkpoint box is also accepted.
    Each tab is laid out by its own builder; the requests are `vae_augment.app.handlers`."""
    models = support.ModelCache(checkpoints)
    outputs = support.OutputFolder()
    examples = handlers.examples_for(models, outputs.new(keep=True))
    choices = models.names
    with gr.Blocks(title="vae-augment", analytics_enabled=False, delete_cache=(3600, 3600)) as demo:
        gr.Markdown("# vae-augment\nSee what a VAE augmentation does to an image before training with it: "
                    "upload or draw an image, pick a mode and a strength, and look at the variants.")
        with gr.Row():
            checkpoint = gr.Dropdown(choices=choices, value=choices[0] if choices else None, allow_custom_value=True,
                                     label="Checkpoint", info="a bundled checkpoint, or type a Hugging Face Hub repo id (org/name)",
                                     scale=2)
            info = gr.Markdown(label="Checkpoint", elem_id="checkpoint-info")
        score, residual = augment_tab(models, outputs, checkpoint, examples)
        interpolate_tab(models, outputs, checkpoint, examples)
        sample_tab(models, outputs, checkpoint)
        explore_tab(models, outputs, checkpoint, examples)
        anomaly_score = anomaly_tab(models, outputs, checkpoint, examples)

        checkpoint_info = _bound(handlers.checkpoint_info, models)
        model_settings = _bound(handlers.model_settings, models)
        checkpoint.change(checkpoint_info, checkpoint, info, api_name="checkpoint_info").then(
            model_settings, checkpoint, [score, anomaly_score, residual], api_visibility="private", queue=False)
        demo.load(checkpoint_info, checkpoint, info, api_visibility="private").then(
            model_settings, checkpoint, [score, anomaly_score, residual], api_visibility="private", queue=False)
    demo.queue(default_concurrency_limit=CONCURRENCY, max_size=QUEUE_SIZE)
    return demo


def _bound(handler, *args):
    """``handler`` with its first arguments given (`functools.partial`), under the handler's name: Gradio names
    an event after its function."""
    bound = functools.partial(handler, *args)
    bound.__name__ = handler.__name__
    return bound


def augment_tab(models: support.ModelCache, outputs: support.OutputFolder, checkpoint: gr.Dropdown,
                examples: list[str]) -> tuple[gr.Number, gr.Checkbox]:
    """The Augment tab (``/augment``); returns its score box and residual checkbox, which follow the chosen model."""
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
                residual = gr.Checkbox(value=True, label="Residual (add only the decoded change; keeps sharp detail)")
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
        augment = _bound(handlers.augment, models, outputs)
        augment_inputs = [image, checkpoint, mode, strength, residual, variants, seed, random_seed]
        augment_outputs = [original, reconstruction, gallery, changes, score, score_text, download, seed]
        run.click(augment, augment_inputs, augment_outputs, api_name="augment", show_progress_on=gallery)
        use.click(_bound(handlers.use_drawing, models), [sketch, checkpoint], image, api_visibility="private",
                  queue=False).success(augment, augment_inputs, augment_outputs, api_visibility="private", show_progress_on=gallery)
        mode.change(handlers.strength_range, [mode, strength], strength, api_visibility="private", queue=False)
    return score, residual


def interpolate_tab(models: support.ModelCache, outputs: support.OutputFolder, checkpoint: gr.Dropdown, examples: list[str]) -> None:
    """The Interpolate tab (``/interpolate``)."""
    with gr.Tab("Interpolate"):
        with gr.Row():
            image_a = image_input("First image")
            image_b = image_input("Second image")
            with gr.Column():
                steps = gr.Slider(2, support.MAX_STEPS, value=8, step=1, label="Steps")
                method = gr.Radio(["linear", "slerp"], value="linear", label="Interpolation",
                                  info="slerp: spherical, keeps the norm typical of the prior")
                run = gr.Button("Interpolate", variant="primary")
        if len(examples) >= 2:
            gr.Examples(examples=[[examples[i], examples[j]] for i, j in ((0, 2), (1, 3), (-1, -2)) if max(i, j) < len(examples)],
                        inputs=[image_a, image_b])
        strip = gr.Image(label="Decoded path from the first image to the second", format="png", interactive=False,
                         elem_id="interpolate-result")
        run.click(_bound(handlers.interpolate, models, outputs), [image_a, image_b, checkpoint, steps, method], strip,
                  api_name="interpolate")


def sample_tab(models: support.ModelCache, outputs: support.OutputFolder, checkpoint: gr.Dropdown) -> None:
    """The Sample tab (``/sample``)."""
    with gr.Tab("Sample"):
        with gr.Row():
            count = gr.Slider(1, support.MAX_SAMPLES, value=16, step=1, label="Images")
            temperature = gr.Slider(0, 2, value=0.8, step=0.05, label="Temperature", info="scale of the prior noise: lower is cleaner, higher more varied")
            seed = gr.Number(value=0, precision=0, label="Seed", minimum=0, maximum=support.MAX_SEED, elem_id="augment-seed")
            random_seed = gr.Checkbox(label="Random seed")
        run = gr.Button("Sample", variant="primary")
        samples = gr.Gallery(label="Decoded prior samples", format="png", columns=8, rows=1, elem_id="sample-gallery", elem_classes=["fit-gallery"])
        run.click(_bound(handlers.sample, models, outputs), [checkpoint, count, temperature, seed, random_seed],
                  [samples, seed], api_name="sample", show_progress_on=samples)


def explore_tab(models: support.ModelCache, outputs: support.OutputFolder, checkpoint: gr.Dropdown, examples: list[str]) -> None:
    """The Explore latent tab (``/explore``)."""
    with gr.Tab("Explore latent"):
        with gr.Row():
            image = image_input("Image")
            with gr.Column():
                dims = gr.Slider(1, support.MAX_TRAVERSE_DIMS, value=6, step=1, label="Dimensions",
                                 info="the ones this image uses most (largest KL from the prior)")
                steps = gr.Slider(3, support.MAX_TRAVERSE_STEPS, value=7, step=2, label="Steps")
                span = gr.Slider(0.5, support.MAX_TRAVERSE_SPAN, value=2.5, step=0.5, label="Range (x the data's spread)")
                run = gr.Button("Explore", variant="primary")
        gr.Examples(examples=[[p] for p in examples], inputs=[image])
        traversal = gr.Image(label="One row per dimension, one column per step", format="png", interactive=False, elem_id="explore-result")
        legend = gr.Markdown(label="Dimensions")
        run.click(_bound(handlers.explore, models, outputs), [image, checkpoint, dims, steps, span], [traversal, legend],
                  api_name="explore", show_progress_on=traversal)


def anomaly_tab(models: support.ModelCache, outputs: support.OutputFolder, checkpoint: gr.Dropdown, examples: list[str]) -> gr.Number:
    """The Anomaly tab (``/anomaly``); returns its score box, whose label follows the chosen model."""
    with gr.Tab("Anomaly"):
        with gr.Row():
            image = image_input("Image")
            with gr.Column():
                score = gr.Number(precision=2, label="Anomaly score (in the model's unit; higher = more unusual)", interactive=False,
                                  elem_id="anomaly-score")
                percentile = gr.Number(precision=2, label="Percentile among the training images' scores", interactive=False)
                text = gr.Markdown(label="Summary")
                run = gr.Button("Score", variant="primary")
        gr.Examples(examples=[[p] for p in examples], inputs=[image])
        with gr.Row():
            seen = gr.Image(label="What the model sees", format="png", interactive=False)
            reconstruction = gr.Image(label="Reconstruction", format="png", interactive=False)
            difference = gr.Image(label="Difference (brighter = worse)", format="png", interactive=False, elem_id="anomaly-difference")
        run.click(_bound(handlers.anomaly, models, outputs), [image, checkpoint],
                  [score, percentile, text, seen, reconstruction, difference], api_name="anomaly", show_progress_on=difference)
    return score


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
