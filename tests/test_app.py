"""The Gradio app (app.py): every endpoint through gradio_client against an in-process server,
with a tiny VAE trained here for a second, plus the upload and checkpoint handling it relies on."""

from __future__ import annotations

import importlib
import importlib.util
import io
import re
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import free_port, make_images, trained_checkpoint
from PIL import Image

gr = pytest.importorskip("gradio")
gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

from vae_augment import VAE, load_vae
from vae_augment.app import support  # noqa: E402
from vae_augment.checkpoint import CheckpointError  # noqa: E402

# Gradio's queue trips deprecation warnings of pandas 3 (not ours to fix)
GRADIO_WARNINGS = [pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting' is deprecated"),
                   pytest.mark.filterwarnings("ignore:The copy keyword is deprecated")]
pytestmark = GRADIO_WARNINGS

APP_PATH = Path(__file__).resolve().parents[1] / "app.py"
SIDE = 28
DISPLAY = support.DISPLAY_MIN_SIDE  # a 28-pixel result is shown 5x enlarged: 140 pixels


def load_app_module():
    """The app: `vae_augment.app` (app.py at the repo root only launches it)."""
    return importlib.import_module("vae_augment.app")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return trained_checkpoint(make_images(256), tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def server(checkpoint):
    app = load_app_module()
    demo = app.build_app({"tiny": checkpoint})
    _, url, _ = app.launch(demo, server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
    try:
        yield demo, Client(url, verbose=False)
    finally:
        demo.close()


@pytest.fixture(scope="module")
def client(server) -> Client:
    return server[1]


@pytest.fixture
def png(tmp_path):
    """Write an image of ``mode`` and ``size`` (W, H) to a file and return its path; the default is a
    28x28 gray rectangle like the tiny model's training images."""

    def make(mode: str = "L", size=(SIDE, SIDE), name: str = "image.png", seed: int = 3) -> str:
        gray = make_images(1, size=(size[1], size[0]), seed=seed)[0, 0].numpy()
        image = Image.fromarray((gray * 255).round().astype(np.uint8), mode="L")
        if mode == "I;16":
            image = Image.fromarray((gray * 65535).round().astype(np.uint16))
        elif mode != "L":
            image = image.convert(mode)
        path = tmp_path / name
        image.save(path)
        return str(path)

    return make


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("L"), dtype=np.int16)


def as_image(value) -> Image.Image:
    return Image.open(value["image"] if isinstance(value, dict) else value)


# ------------------------------------------------------------------ endpoints
def test_augment_returns_distinct_variants_their_zip_and_the_score(client, png, checkpoint):
    source = png()
    original, reconstruction, gallery, changes, score, summary, archive, seed = client.predict(
        handle_file(source), "tiny", "data", 1.5, False, 6, 7, False, api_name="/augment")
    assert seed == 7
    assert len(gallery) == 6 and [g["caption"] for g in gallery] == [f"variant {i}" for i in range(1, 7)]
    shown = [pixels(g["image"]) for g in gallery]
    assert all(s.shape == (DISPLAY, DISPLAY) for s in shown)  # 28 pixels enlarged 5x, pixels kept crisp
    assert Image.open(original).size == Image.open(reconstruction).size == (DISPLAY, DISPLAY)
    assert Image.open(gallery[0]["image"]).format == "PNG" and Path(gallery[0]["image"]).name == "variant_01.png"
    # the variants differ from each other and from the input
    assert min(np.abs(a - b).mean() for i, a in enumerate(shown) for b in shown[i + 1:]) > 2
    assert min(np.abs(s - pixels(original)).mean() for s in shown) > 2
    # the download holds every variant at the input's own size, plus original, reconstruction and grid
    with zipfile.ZipFile(archive) as z:
        names = sorted(z.namelist())
        assert names == sorted(["original.png", "reconstruction.png", "grid.png"] + [f"variant_{i:02d}.png" for i in range(1, 7)])
        variant = Image.open(io.BytesIO(z.read("variant_01.png")))
        assert variant.size == (SIDE, SIDE) and variant.format == "PNG"
        np.testing.assert_array_equal(np.asarray(variant.resize((DISPLAY, DISPLAY), Image.Resampling.NEAREST)), shown[0])
    # the score is the library's own, and the percentile is quoted
    vae = load_vae(checkpoint)
    x = torch.from_numpy(pixels(source).astype(np.float32) / 255)[None, None]
    assert score == pytest.approx(vae.anomaly_score(x).item(), abs=0.005)  # shown with 2 decimals
    assert f"**{score:.1f}** nats per image" in summary and "% of the training images" in summary  # the VAE's unit
    # the change row: one image per variant, |variant - reconstruction| brightened by the gain the summary quotes
    assert len(changes) == 6 and all(pixels(c["image"]).shape == (DISPLAY, DISPLAY) for c in changes)
    gain = float(re.search(r"brightened ([\d.]+)x", summary).group(1))
    mean = float(re.search(r"on average \*\*([\d.]+)\*\* per pixel from the reconstruction", summary).group(1))
    expected = np.abs(shown[0] - pixels(reconstruction)) * gain
    assert np.abs(pixels(changes[0]["image"]) - np.minimum(expected, 255)).mean() < 3
    assert mean == pytest.approx(np.mean([np.abs(s - pixels(reconstruction)).mean() for s in shown]) / 255, abs=0.003)


def test_augment_is_reproducible_from_its_seed_and_draws_a_random_one(client, png):
    source = handle_file(png())
    first = client.predict(source, "tiny", "posterior", 1.0, True, 3, 11, False, api_name="/augment")
    assert "(0 gives the original)" in first[5] and "per pixel from the original" in first[5]  # residual: the change is added to it
    again = client.predict(source, "tiny", "posterior", 1.0, True, 3, 11, False, api_name="/augment")
    for a, b in zip(first[2], again[2]):
        np.testing.assert_array_equal(pixels(a["image"]), pixels(b["image"]))
    drawn = client.predict(source, "tiny", "posterior", 1.0, True, 3, 11, True, api_name="/augment")
    assert isinstance(drawn[-1], int) and 0 <= drawn[-1] <= support.MAX_SEED
    if drawn[-1] != 11:
        assert any(np.abs(pixels(a["image"]) - pixels(b["image"])).max() > 0 for a, b in zip(first[2], drawn[2]))


@pytest.mark.parametrize("mode,size", [("RGBA", (40, 30)), ("P", (28, 28)), ("I;16", (28, 28)), ("RGB", (1200, 900))])
def test_augment_accepts_any_image_mode_and_downscales_large_ones(client, png, mode, size):
    original, _, gallery, _, score, *_ = client.predict(handle_file(png(mode, size)), "tiny", "prior", 0.5, True, 2, 0, False,
                                                     api_name="/augment")
    width, height = size
    scale = min(1.0, support.MAX_SIDE / max(size))
    width, height = round(width * scale), round(height * scale)
    factor = max(1, -(-DISPLAY // min(width, height)))
    assert Image.open(original).size == (width * factor, height * factor)
    assert all(as_image(g).size == (width * factor, height * factor) for g in gallery)
    assert np.isfinite(score)


def test_interpolate_returns_a_strip_from_the_first_image_to_the_second(client, png):
    a, b = png(seed=1, name="a.png"), png(seed=2, name="b.png")
    strip = Image.open(client.predict(handle_file(a), handle_file(b), "tiny", 5, "slerp", api_name="/interpolate"))
    cell = SIDE + 2  # images are separated by 2-pixel gutters
    factor = strip.height // (cell + 2)
    assert strip.size == ((5 * cell + 2) * factor, (cell + 2) * factor)
    frames = np.asarray(strip.convert("L"), dtype=np.int16)[::factor, ::factor][2:-2]
    first, last = frames[:, 2 : 2 + SIDE], frames[:, 2 + 4 * cell : 2 + 4 * cell + SIDE]
    assert np.abs(first - last).mean() > 5


def test_sample_returns_count_distinct_images_repeatably(client):
    gallery, seed = client.predict("tiny", 5, 1.0, 3, False, api_name="/sample")
    assert seed == 3 and len(gallery) == 5
    images = [pixels(g["image"]) for g in gallery]
    assert all(i.shape == (DISPLAY, DISPLAY) for i in images)
    assert min(np.abs(a - b).mean() for k, a in enumerate(images) for b in images[k + 1:]) > 1
    again, _ = client.predict("tiny", 5, 1.0, 3, False, api_name="/sample")
    np.testing.assert_array_equal(pixels(again[0]["image"]), images[0])


def test_explore_varies_one_dimension_per_row(client, png):
    grid_path, legend = client.predict(handle_file(png()), "tiny", 3, 5, 2.0, api_name="/explore")
    grid = np.asarray(Image.open(grid_path).convert("L"), dtype=np.int16)
    cell = SIDE + 2
    factor = grid.shape[0] // (3 * cell + 2)
    assert grid.shape == ((3 * cell + 2) * factor, (5 * cell + 2) * factor)
    small = grid[::factor, ::factor]
    rows = [[small[2 + r * cell : 2 + r * cell + SIDE, 2 + c * cell : 2 + c * cell + SIDE] for c in range(5)] for r in range(3)]
    assert all(np.abs(row[0] - row[-1]).mean() > 1 for row in rows)  # each row changes along it
    assert legend.count("| z[") == 3


def test_anomaly_reports_score_percentile_reconstruction_and_difference(client, png, checkpoint):
    score, percentile, summary, seen, reconstruction, difference = client.predict(handle_file(png()), "tiny", api_name="/anomaly")
    vae = load_vae(checkpoint)
    x = torch.from_numpy(pixels(png()).astype(np.float32) / 255)[None, None]
    expected = vae.anomaly_score(x)
    assert score == pytest.approx(expected.item(), abs=0.005)  # shown with 2 decimals
    assert percentile == pytest.approx(vae.anomaly_percentile(expected).item(), abs=0.005)
    quoted = re.search(r"higher than ([\d.]+)% of the training images", summary)
    assert 0 <= percentile <= 100 and float(quoted.group(1)) == pytest.approx(percentile, abs=0.06)
    for path in (seen, reconstruction, difference):
        assert Image.open(path).size == (DISPLAY, DISPLAY)
    recon = pixels(reconstruction)[::5, ::5]
    np.testing.assert_allclose(pixels(difference)[::5, ::5], np.abs(pixels(seen)[::5, ::5] - recon), atol=1)
    # noise is further from the training rectangles than a rectangle is
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (SIDE, SIDE), dtype=np.uint8))
    noise_path = Path(png()).with_name("noise.png")
    noise.save(noise_path)
    assert client.predict(handle_file(str(noise_path)), "tiny", api_name="/anomaly")[0] > score


def test_checkpoint_info_describes_the_model(client):
    text = client.predict("tiny", api_name="/checkpoint_info")
    assert "28x28 gray" in text and "4 latent dimensions" in text and "rectangles" in text


def test_requests_go_through_a_queue_with_a_concurrency_limit(server, png):
    demo, client = server
    app = load_app_module()
    assert demo._queue.default_concurrency_limit == app.CONCURRENCY
    source = png()
    jobs = [client.submit(handle_file(source), "tiny", "data", 1.0, False, 2, i, False, api_name="/augment") for i in range(4)]
    assert [len(job.result(timeout=60)[2]) for job in jobs] == [2, 2, 2, 2]


# ------------------------------------------------------------------ errors shown in the UI
def test_a_non_image_upload_gets_a_clear_message(client, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    with pytest.raises(AppError, match=r"notes\.txt is not an image this app can read"):
        client.predict(handle_file(str(text)), "tiny", "data", 1.0, False, 2, 0, False, api_name="/augment")
    fake = tmp_path / "fake.png"
    fake.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)  # a PNG signature and nothing else
    with pytest.raises(AppError, match="is not an image this app can read"):
        client.predict(handle_file(str(fake)), "tiny", api_name="/anomaly")


def test_an_api_client_that_sends_a_path_instead_of_a_file_is_told_to_use_handle_file(client, png):
    """view_api() says ``image: filepath``, so ``client.predict("digit.png", ...)`` is the natural first try: the
    answer says what to do (Gradio's own answer is "the upstream Gradio app has raised an exception")."""
    source = png()
    for value in (source, Path(source).name, 3):
        with pytest.raises(AppError, match=r"the image must be sent as a file, got .*: with gradio_client, pass handle_file\(path\)"):
            client.predict(value, "tiny", "data", 1.0, False, 2, 0, False, api_name="/augment")
    with pytest.raises(AppError, match="must be sent as a file"):
        client.predict(source, "tiny", api_name="/anomaly")
    result = client.predict(handle_file(source), "tiny", "data", 1.0, False, 2, 0, False, api_name="/augment")
    assert len(result[2]) == 2  # the same file through handle_file works


def test_a_file_object_that_names_a_server_path_is_not_opened(client, png):
    """A file object without Gradio's "meta" key is not uploaded nor moved to Gradio's cache: the app refuses to
    open the path it names (it could be any image on the server)."""
    with pytest.raises(AppError, match=r"image\.png names a file on the server, which the app does not open"):
        client.predict({"path": png()}, "tiny", "data", 1.0, False, 2, 0, False, api_name="/augment")


@pytest.mark.parametrize("choice", ["not a repo id", "../tiny", "/etc", "org/name/extra", "org/../name", ""])
def test_a_checkpoint_choice_must_be_offered_or_a_hub_repo_id(client, png, choice):
    with pytest.raises(AppError, match="Hub repo id|choose a checkpoint"):
        client.predict(handle_file(png()), choice, "data", 1.0, False, 2, 0, False, api_name="/augment")


def test_an_unreachable_hub_is_reported_as_such(client, png, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # the discard port: nothing listens
    repo = "someone/not-cached-anywhere"
    with pytest.raises(AppError, match=rf"Hub repo '{repo}': the Hub \(http://127.0.0.1:9\) cannot be reached"):
        client.predict(handle_file(png()), repo, "data", 1.0, False, 2, 0, False, api_name="/augment")
    info = client.predict(repo, api_name="/checkpoint_info")  # shown next to the checkpoint choice
    assert info.startswith("**Cannot use this checkpoint**") and "cannot be reached" in info


@pytest.mark.parametrize("args,message", [
    (("prior", 3.0, False, 2, 0, False), r"strength for mode 'prior' must be a number in \[0, 1\], got 3.0"),
    (("data", 1.0, False, 2.5, 0, False), r"variants must be a whole number in \[1, 32\], got 2.5"),
    (("sideways", 1.0, False, 2, 0, False), r"'sideways' .* is not in the list of choices"),  # Gradio's own checks
    (("data", 1.0, False, 0, 0, False), r"Value 0 is less than minimum value 1"),
    (("data", 1.0, False, 2, -5, False), r"Value -5 is less than minimum value 0"),
])
def test_bad_settings_get_a_message_that_names_them(client, png, args, message):
    with pytest.raises(AppError, match=message):
        client.predict(handle_file(png()), "tiny", *args, api_name="/augment")


# ------------------------------------------------------------------ launching
def test_app_launches_only_when_run_and_honours_the_server_settings(monkeypatch):
    from vae_augment import cli

    calls = []
    monkeypatch.setattr(gr.Blocks, "launch", lambda self, **kwargs: calls.append(kwargs))
    spec = importlib.util.spec_from_file_location("vae_augment_app_launcher", APP_PATH)
    launcher = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, launcher)
    spec.loader.exec_module(launcher)  # app.py imported, not run
    app = importlib.reload(load_app_module())
    assert calls == []  # importing app.py or the app package builds nothing and serves nothing
    assert not any(Path(app.__file__).parent.glob("*.pyi"))  # Gradio writes one next to modules that subclass its components
    monkeypatch.delenv("GRADIO_SERVER_NAME", raising=False)
    monkeypatch.delenv("GRADIO_SERVER_PORT", raising=False)
    assert cli.main(["demo"]) == 0
    assert (calls[-1]["server_name"], calls[-1]["server_port"]) == ("127.0.0.1", 7860)
    monkeypatch.setenv("GRADIO_SERVER_NAME", "0.0.0.0")
    monkeypatch.setenv("GRADIO_SERVER_PORT", "7123")
    assert cli.main(["demo"]) == 0
    assert (calls[-1]["server_name"], calls[-1]["server_port"]) == ("0.0.0.0", 7123)
    assert cli.main(["demo", "--port", "7999"]) == 0 and calls[-1]["server_port"] == 7999


# ------------------------------------------------------------------ the support module on its own
@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "I", "I;16", "F"])
def test_load_image_reads_every_mode_into_unit_floats(tmp_path, mode):
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8), "RGB")
    if mode == "I;16":
        image = Image.fromarray(rng.integers(0, 65536, (20, 30), dtype=np.uint16))
    elif mode == "PA":
        image = image.convert("P").convert("PA")
    else:
        image = image.convert(mode)
    path = tmp_path / ("image.tiff" if mode in ("I", "F", "CMYK", "PA", "LA") else "image.png")
    image.save(path)
    for channels in (1, 3):
        x = support.load_image(path, channels)
        assert x.shape == (channels, 20, 30) and x.dtype == torch.float32
        assert 0 <= x.min() and x.max() <= 1 and x.std() > 0.01


def test_load_image_bounds_size_and_refuses_too_many_pixels(tmp_path, monkeypatch):
    path = tmp_path / "large.jpg"
    Image.new("RGB", (3000, 1500), (200, 30, 30)).save(path)
    assert support.load_image(path, 3).shape == (3, support.MAX_SIDE // 2, support.MAX_SIDE)
    monkeypatch.setattr(support, "MAX_UPLOAD_PIXELS", 1000)
    with pytest.raises(ValueError, match=r"3000x1500 pixels; the app accepts images of at most"):
        support.load_image(path, 3)
    with pytest.raises(ValueError, match="no image given"):
        support.load_image(None, 1)


def test_drawings_are_framed_like_mnist_digits():
    canvas = Image.new("RGBA", (280, 280), (0, 0, 0, 0))
    Image.Image.paste(canvas, (0, 0, 0, 255), (200, 20, 240, 140))  # a dark bar in a corner
    digit = np.asarray(support.drawing_to_image({"composite": canvas}, (28, 28)), dtype=np.float32) / 255
    assert digit.shape == (28, 28)
    rows, cols = np.nonzero(digit > 0.5)
    assert 3 <= rows.min() and rows.max() <= 24 and abs(cols.mean() - 13.5) < 1.5  # centred, with a margin
    assert digit[0].max() == 0 and digit[:, 0].max() == 0
    with pytest.raises(ValueError, match="sketchpad is empty"):
        support.drawing_to_image({"composite": Image.new("RGBA", (50, 50), (255, 255, 255, 255))}, (28, 28))
    with pytest.raises(ValueError, match="sketchpad is empty"):
        support.drawing_to_image({"composite": None}, (28, 28))


def test_model_cache_loads_each_checkpoint_once_and_never_opens_user_paths(checkpoint, monkeypatch):
    cache = support.ModelCache({"tiny": checkpoint})
    loads = []
    real_load = support.load_vae
    monkeypatch.setattr(support, "load_vae", lambda spec: loads.append(spec) or real_load(spec))
    assert cache.get("tiny") is cache.get(" tiny ") and len(loads) == 1
    for choice in (str(checkpoint), "./tiny", "~/x", None, 3):
        with pytest.raises(CheckpointError):
            cache.get(choice)
    assert len(loads) == 1


def test_default_checkpoints_are_the_bundled_ones():
    from vae_augment.checkpoint import bundled_names

    assert support.ModelCache().names == bundled_names()


def test_traverse_moves_one_latent_dimension_at_a_time():
    torch.manual_seed(0)
    vae = VAE(channels=1, image_size=SIDE, latent_dim=4, widths=[4, 8], hidden=16).eval()
    x = make_images(1)[0]
    mean = vae.encode(x.unsqueeze(0)).mean[0]
    out = vae.traverse(x, [2, 0], torch.tensor([-1.0, 0.0, 0.5]))
    assert out.shape == (2, 3, 1, SIDE, SIDE)
    moved = mean.clone()
    moved[0] += 0.5
    torch.testing.assert_close(out[1, 2], vae.decode(moved.unsqueeze(0))[0])
    torch.testing.assert_close(out[0, 1], vae.decode(mean.unsqueeze(0))[0])  # offset 0 is the reconstruction
    per_dim = vae.traverse(x, [1, 3], torch.tensor([[0.0, 1.0], [2.0, 3.0]]))
    moved = mean.clone()
    moved[3] += 2.0
    torch.testing.assert_close(per_dim[1, 0], vae.decode(moved.unsqueeze(0))[0])
    with pytest.raises(ValueError, match=r"dims must be a non-empty list of latent dimensions in \[0, 4\)"):
        vae.traverse(x, [4], torch.zeros(3))
    with pytest.raises(ValueError, match=r"values must have shape \[T\] or \[2, T\]"):
        vae.traverse(x, [0, 1], torch.zeros(3, 2))


# ------------------------------------------------------------------ the unit of the anomaly score comes from the model
def test_anomaly_score_is_shown_in_the_models_own_unit(checkpoint, png, tmp_path):
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    tiny = diffusers.AutoencoderTiny(in_channels=1, out_channels=1, encoder_block_out_channels=(8,) * 4,
                                     decoder_block_out_channels=(8,) * 4, num_encoder_blocks=(1,) * 4, num_decoder_blocks=(1,) * 4)
    backbone = load_vae(tiny)
    backbone.save_pretrained(tmp_path / "taesd")
    app = load_app_module()
    demo = app.build_app({"tiny": checkpoint, "taesd": tmp_path / "taesd"})
    _, url, _ = app.launch(demo, server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
    try:
        client = Client(url, verbose=False)
        vae_score, _, vae_summary, *_ = client.predict(handle_file(png()), "tiny", api_name="/anomaly")
        score, percentile, summary, *_ = client.predict(handle_file(png()), "taesd", api_name="/anomaly")
        augment_summary = client.predict(handle_file(png()), "taesd", "data", 0.2, False, 2, 0, False, api_name="/augment")[5]
    finally:
        demo.close()
    assert backbone.score_unit == "mean squared error per pixel x 1000" and load_vae(checkpoint).score_unit == "nats per image"
    assert "nats per image" in vae_summary
    for text in (summary, augment_summary):
        assert "mean squared error per pixel x 1000" in text and "nats" not in text, text
    assert percentile is None  # a backbone has no training percentiles
    x = torch.from_numpy(pixels(png()).astype(np.float32) / 255)[None, None]
    assert score == pytest.approx(load_vae(tmp_path / "taesd").anomaly_score(x).item(), abs=0.005)


def test_augment_notes_an_input_unlike_the_training_images(client, tmp_path):
    """An RGB photo of another size into the gray 28x28 model: the summary says what the model knows and what was
    done; a gray digit of the model's size gets no note. Both say the strength the variants were made at."""
    photo = tmp_path / "photo.png"
    Image.new("RGB", (200, 120), (200, 30, 30)).save(photo)
    *_, summary, _, _ = client.predict(handle_file(str(photo)), "tiny", "data", 0.3, False, 1, 0, False, api_name="/augment")
    assert "**Note:** this model knows" in summary and "200x120 colour image was converted to gray and resized" in summary
    assert "strength **0.3** in mode **data**" in summary
    *_, anomaly_summary, _, _, _ = client.predict(handle_file(str(photo)), "tiny", api_name="/anomaly")
    assert "200x120 colour image was converted to gray and resized" in anomaly_summary
    digit = tmp_path / "digit.png"
    Image.new("L", (28, 28)).save(digit)
    *_, summary, _, _ = client.predict(handle_file(str(digit)), "tiny", "data", 0.3, False, 1, 0, False, api_name="/augment")
    assert "Note:" not in summary and "strength **0.3**" in summary


# ------------------------------------------------------------------ the handlers, called without building the app
@pytest.fixture
def direct(checkpoint):
    """What a handler is bound to in the app: a model cache and an output folder, built here without Gradio's Blocks."""
    from vae_augment.app import handlers

    return handlers, support.ModelCache({"tiny": checkpoint}), support.OutputFolder()


def test_augment_handler_returns_the_endpoint_outputs_and_repeats_with_its_seed(direct, png):
    handlers, models, outputs = direct
    image = png()
    first = handlers.augment(models, outputs, image, "tiny", "data", 0.5, False, 3, 7, False)
    again = handlers.augment(models, outputs, image, " tiny ", "data", 0.5, False, 3, 7, False)
    original, reconstruction, gallery, changes, score, summary, archive, seed = first
    assert seed == 7 and len(gallery) == 3 and len(changes) == 3
    assert [caption for _, caption in gallery] == ["variant 1", "variant 2", "variant 3"]
    assert pixels(original).shape == (DISPLAY, DISPLAY) and Path(reconstruction).parent == Path(original).parent
    with zipfile.ZipFile(archive) as zipped:
        assert sorted(zipped.namelist()) == ["grid.png", "original.png", "reconstruction.png",
                                             "variant_01.png", "variant_02.png", "variant_03.png"]
    assert "strength **0.5** in mode **data**" in summary
    assert score == pytest.approx(support.anomaly(models.get("tiny"), support.load_image(image, 1))[0])
    for (path, _), (path_again, _) in zip(gallery, again[2]):  # one seed, the same variants, in a new folder
        assert path != path_again and np.array_equal(pixels(path), pixels(path_again))


def test_handlers_report_bad_inputs_as_ui_errors_that_name_the_argument(direct, png):
    handlers, models, outputs = direct
    with pytest.raises(gr.Error, match=r"count must be a whole number in \[1, 64\], got 0"):
        handlers.sample(models, outputs, "tiny", 0, 1.0, 0, False)
    with pytest.raises(gr.Error, match=r"steps must be a whole number in \[2, 16\], got 1"):
        handlers.interpolate(models, outputs, png(), png(seed=4), "tiny", 1, "linear")
    with pytest.raises(gr.Error, match="not a checkpoint this app offers"):
        handlers.anomaly(models, outputs, png(), "./tiny")
    assert handlers.checkpoint_info(models, "./tiny").startswith("**Cannot use this checkpoint**")
    assert handlers.checkpoint_info(models, "tiny").startswith("**tiny**")


def test_explore_and_anomaly_handlers_agree_with_the_library(direct, png):
    handlers, models, outputs = direct
    picture, table = handlers.explore(models, outputs, png(), "tiny", 3, 5, 2.0)
    assert len([line for line in table.splitlines() if re.match(r"\| \d+ \| z\[\d\] \|", line)]) == 3
    assert pixels(picture).shape[1] >= 5 * SIDE
    score, percentile, text, seen, reconstruction, difference = handlers.anomaly(models, outputs, png(), "tiny")
    expected = support.anomaly(models.get("tiny"), support.load_image(png(), 1))
    assert (score, percentile) == pytest.approx(expected) and 0 <= percentile <= 100
    assert f"{score:.1f}" in text and all(Path(p).is_file() for p in (seen, reconstruction, difference))


def test_strength_range_and_model_settings_follow_the_choices(direct):
    from vae_augment.latent import MAX_STRENGTH

    handlers, models, _ = direct
    lowest = min(MAX_STRENGTH, key=MAX_STRENGTH.get)
    slider = handlers.strength_range(lowest, 100.0)
    assert slider.maximum == MAX_STRENGTH[lowest] and slider.value == MAX_STRENGTH[lowest]
    assert handlers.strength_range("data", 0.25).value == 0.25
    score, anomaly_score, residual = handlers.model_settings(models, "tiny")
    assert models.get("tiny").score_unit in score.label and models.get("tiny").score_unit in anomaly_score.label
    assert handlers.model_settings(models, "org/not-loaded")[0].label == "Anomaly score (in the model's unit)"
