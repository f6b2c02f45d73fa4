"""The app in a real browser: headless Debian chromium driven by Playwright draws a digit on the
sketchpad, uses it, presses Augment and looks at the variants and the change they make; runs every
other tab on an example; uploads a colour photo (a note says what the model was trained on); and
chooses a checkpoint that cannot load (one message, not an error on every output).

Skips without gradio, Playwright (``pip install playwright``; its own browser download is not
needed) or ``/usr/bin/chromium`` (``apt-get install chromium``). The bundled checkpoint is used
when there is one, else a tiny VAE trained here. ``VAE_AUGMENT_SCREENSHOT_DIR=docs`` also writes a
screenshot of each tab there, ``docs/app-<tab>.png`` (docs/app.md's pictures).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from PIL import Image

pytest.importorskip("gradio")
sync_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
VARIANTS = 8  # the app's default
EXAMPLE = ".gallery-item, button.gallery, tr.tr-body"  # an example: a thumbnail, or a table row for two inputs

pytestmark = [pytest.mark.skipif(not CHROMIUM.is_file(), reason="needs Debian's chromium at /usr/bin/chromium"),
              pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting' is deprecated"),
              pytest.mark.filterwarnings("ignore:The copy keyword is deprecated")]


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    from conftest import free_port, make_images, trained_checkpoint

    from vae_augment import app
    from vae_augment.checkpoint import bundled_names

    checkpoints = None if "mnist" in bundled_names() else {"tiny": trained_checkpoint(make_images(256), tmp_path_factory.mktemp("tiny"))}
    demo = app.build_app(checkpoints)
    _, address, _ = app.launch(demo, server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
    try:
        yield address
    finally:
        demo.close()


@pytest.fixture(scope="module")
def page():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser.new_page(viewport={"width": 1400, "height": 1000})
        finally:
            browser.close()


def draw_seven(page) -> None:
    """Pick the brush and draw a 7 with the mouse."""
    page.locator("#sketchpad button[aria-label=Brush]").click()
    box = page.locator("#sketchpad canvas").first.bounding_box()
    points = [(0.3, 0.2), (0.7, 0.2), (0.45, 0.85)]
    page.mouse.move(box["x"] + box["width"] * points[0][0], box["y"] + box["height"] * points[0][1])
    page.mouse.down()
    for fx, fy in points[1:]:
        page.mouse.move(box["x"] + box["width"] * fx, box["y"] + box["height"] * fy, steps=15)
    page.mouse.up()


def save_screenshot(page, tmp_path: Path, tab: str) -> Path:
    """A full-page screenshot as ``app-<tab>.png``, copied to ``$VAE_AUGMENT_SCREENSHOT_DIR`` when that is set."""
    screenshot = tmp_path / f"app-{tab.lower().replace(' ', '-')}.png"
    page.screenshot(path=str(screenshot), full_page=True)
    with Image.open(screenshot) as shot:
        assert shot.width >= 1400 and shot.height >= 900
    folder = os.environ.get("VAE_AUGMENT_SCREENSHOT_DIR")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(screenshot, Path(folder) / screenshot.name)
    return screenshot


def open_app(page, url) -> list[str]:
    """Load the page and wait for the checkpoint line; returns the list that collects the page's errors."""
    errors = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.goto(url, wait_until="domcontentloaded")
    page.wait_for_selector("#checkpoint-info >> text=latent dimensions", timeout=30_000)
    return errors


def wait_for_images(page, selector: str, count: int = 1) -> list[list[int]]:
    """Wait until ``selector`` holds ``count`` loaded images; returns their natural sizes."""
    page.wait_for_function(f"document.querySelectorAll({selector!r} + ' img').length >= {count}", timeout=60_000)
    page.wait_for_function(f"[...document.querySelectorAll({selector!r} + ' img')].every(img => img.complete && img.naturalWidth > 0)",
                           timeout=20_000)
    return page.eval_on_selector_all(f"{selector} img", "images => images.map(img => [img.naturalWidth, img.naturalHeight])")


def test_draw_a_digit_augment_it_and_see_the_variants(page, url, tmp_path):
    errors = open_app(page, url)
    draw_seven(page)
    page.locator("#use-drawing").click()
    page.wait_for_selector("#augment-input img", timeout=20_000)
    page.locator("#augment-button").click()

    sizes = wait_for_images(page, "#augment-gallery", VARIANTS)
    assert len(sizes) == VARIANTS and all(w == h and w >= 140 for w, h in sizes)
    assert ".zip" in page.locator("#augment-download").inner_text()  # the download of the variants
    assert float(page.locator("#augment-score input").input_value()) > 0  # the anomaly score, in nats
    # the change is visible: a row of difference images under the variants, and the summary says how large it is
    assert len(wait_for_images(page, "#augment-change", VARIANTS)) == VARIANTS
    summary = page.locator("#augment-summary").inner_text()
    assert "Variants at strength 0.2 in mode data (0 gives the original)" in summary  # residual: VAEAugment's default
    assert float(re.search(r"on average ([\d.]+) per pixel from the original", summary).group(1)) > 0.005
    brightness = page.eval_on_selector_all("#augment-change img", """images => images.map(img => {
        const canvas = document.createElement('canvas'); canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
        const context = canvas.getContext('2d'); context.drawImage(img, 0, 0);
        const pixels = context.getImageData(0, 0, canvas.width, canvas.height).data;
        let high = 0; for (let i = 0; i < pixels.length; i += 4) high = Math.max(high, pixels[i]); return high; })""")
    assert max(brightness) >= 250  # the largest change is shown white
    assert "Note:" not in summary  # a drawing is what the model knows
    assert not errors, errors
    save_screenshot(page, tmp_path, "augment")


@pytest.mark.parametrize("tab, button, result, count", [
    ("Sample", "Sample", "#sample-gallery", 16),  # prior samples need no input: the default count
    ("Interpolate", "Interpolate", "#interpolate-result", 1),  # each of the others on its first example
    ("Explore latent", "Explore", "#explore-result", 1),
    ("Anomaly", "Score", "#anomaly-difference", 1),
])
def test_every_tab_runs_and_shows_its_result(page, url, tab, button, result, count, tmp_path):
    """Each tab opens without a page error and shows its result (on its first example where it needs an input);
    a screenshot of each is written to ``$VAE_AUGMENT_SCREENSHOT_DIR/app-<tab>.png`` when that is set."""
    errors = open_app(page, url)
    page.get_by_role("tab", name=tab).click()
    panel = page.locator("[role=tabpanel]:visible")
    panel.first.wait_for(timeout=10_000)
    if tab != "Sample":
        panel.locator(EXAMPLE).first.click()  # the first example (a row of two for Interpolate)
        panel.locator(".pixel-input img").first.wait_for(timeout=20_000)
    panel.get_by_role("button", name=button, exact=True).click()
    sizes = wait_for_images(page, result, count)
    assert len(sizes) >= count and all(min(size) >= 84 for size in sizes)
    page.wait_for_timeout(1_000)  # galleries fade their images in
    if tab == "Anomaly":
        assert "Anomaly score" in panel.inner_text()
    assert not errors, errors
    save_screenshot(page, tmp_path, tab)


def test_a_colour_photo_gets_a_note_on_what_the_model_knows(page, url, tmp_path):
    """A 640x480 RGB photo into the gray 28x28 model: the summary says what the model was trained on and what was done."""
    photo = tmp_path / "photo.png"
    Image.new("RGB", (640, 480), (200, 120, 40)).save(photo)
    errors = open_app(page, url)
    page.locator("#augment-input input[type=file]").set_input_files(str(photo))
    page.wait_for_selector("#augment-input img", timeout=20_000)
    page.locator("#augment-button").click()
    page.wait_for_selector("#augment-summary >> text=Note:", timeout=60_000)
    note = page.locator("#augment-summary").inner_text()
    assert "this model knows 28x28 gray images" in note and "your 640x480 colour image was converted to gray and resized" in note
    assert not errors, errors


def test_a_checkpoint_that_cannot_load_shows_one_message(page, url, monkeypatch):
    """An unreachable Hub repo: the reason next to the checkpoint choice and once as a message when Augment is
    pressed, with the error marked on the variants alone (not on every output box, the seed among them)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # the discard port: nothing listens
    errors = open_app(page, url)
    page.locator(EXAMPLE).first.click()
    page.wait_for_selector("#augment-input img", timeout=20_000)
    choice = page.get_by_label("Checkpoint")
    choice.fill("someone/not-cached-anywhere")
    choice.press("Enter")
    page.wait_for_selector("#checkpoint-info >> text=Cannot use this checkpoint", timeout=30_000)
    page.locator("#augment-button").click()
    page.wait_for_selector(".toast-body", timeout=30_000)
    page.wait_for_timeout(500)
    toasts = page.locator(".toast-body")
    assert toasts.count() == 1 and "cannot be reached" in toasts.first.inner_text()
    badges = page.get_by_text("Error", exact=True)  # the toast's title and the marks on output boxes
    assert badges.count() == 2 and page.locator("#augment-gallery").get_by_text("Error", exact=True).count() == 1
    assert page.locator("#augment-seed").get_by_text("Error").count() == 0
    assert not errors, errors
