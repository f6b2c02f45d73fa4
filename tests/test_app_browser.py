"""The app in a real browser: headless Debian chromium driven by Playwright draws a digit on the
sketchpad, uses it, presses Augment, waits for the gallery and saves a screenshot.

Skips without gradio, Playwright (``pip install playwright``; its own browser download is not
needed) or ``/usr/bin/chromium`` (``apt-get install chromium``). The bundled checkpoint is used
when there is one, else a tiny VAE trained here. ``VAE_AUGMENT_SCREENSHOT=docs/app.png`` also
writes the screenshot there (the README's picture).
"""

from __future__ import annotations

import os
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

pytestmark = [pytest.mark.skipif(not CHROMIUM.is_file(), reason="needs Debian's chromium at /usr/bin/chromium"),
              pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting' is deprecated"),
              pytest.mark.filterwarnings("ignore:The copy keyword is deprecated")]


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    from test_app import free_port, load_app_module, rectangles, train_tiny

    from vae_augment.checkpoint import bundled_names

    app = load_app_module()
    checkpoints = None if "mnist" in bundled_names() else {"tiny": train_tiny(rectangles(256), tmp_path_factory.mktemp("tiny"))}
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


def test_draw_a_digit_augment_it_and_see_the_variants(page, url, tmp_path):
    errors = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.goto(url, wait_until="domcontentloaded")
    page.wait_for_selector("#checkpoint-info >> text=latent dimensions", timeout=30_000)

    draw_seven(page)
    page.locator("#use-drawing").click()
    page.wait_for_selector("#augment-input img", timeout=20_000)
    page.locator("#augment-button").click()
    page.wait_for_function(f"document.querySelectorAll('#augment-gallery img').length >= {VARIANTS}", timeout=60_000)
    page.wait_for_function("[...document.querySelectorAll('#augment-gallery img')].every(img => img.complete && img.naturalWidth > 0)",
                           timeout=20_000)

    sizes = page.eval_on_selector_all("#augment-gallery img", "images => images.map(img => [img.naturalWidth, img.naturalHeight])")
    assert len(sizes) == VARIANTS and all(w == h and w >= 140 for w, h in sizes)
    assert ".zip" in page.locator("#augment-download").inner_text()  # the download of the variants
    assert float(page.locator("#augment-score input").input_value()) > 0  # the anomaly score, in nats
    assert "Variants at strength 0.2 in mode data" in page.locator("#augment-summary").inner_text()  # what was done, visibly
    assert not errors, errors

    screenshot = tmp_path / "app.png"
    page.screenshot(path=str(screenshot), full_page=True)
    with Image.open(screenshot) as shot:
        assert shot.width >= 1400 and shot.height >= 900
    target = os.environ.get("VAE_AUGMENT_SCREENSHOT")
    if target:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(screenshot, target)


@pytest.mark.parametrize("tab, button, result", [
    ("Sample", "Sample", "img"),  # prior samples need no input
    ("Interpolate", None, None),
    ("Explore latent", None, None),
    ("Anomaly", None, None),
])
def test_every_tab_opens_and_shows_its_controls(page, url, tab, button, result, tmp_path):
    """Each tab opens without a page error, shows its controls (and Sample its result); a screenshot of each is
    written to ``$VAE_AUGMENT_SCREENSHOT_DIR/app-<tab>.png`` when that is set (the docs' pictures)."""
    errors = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.goto(url, wait_until="domcontentloaded")
    page.wait_for_selector("#checkpoint-info >> text=latent dimensions", timeout=30_000)
    page.get_by_role("tab", name=tab).click()
    panel = page.locator("[role=tabpanel]:visible")
    panel.first.wait_for(timeout=10_000)
    if button:
        panel.get_by_role("button", name=button, exact=True).click()
        panel.locator(result).nth(15).wait_for(timeout=30_000)  # the 16 samples of the default count
        page.wait_for_timeout(1_000)  # the gallery fades its images in
    assert panel.get_by_role("button").count() >= 1
    assert not errors, errors
    screenshot = tmp_path / f"app-{tab.lower().replace(' ', '-')}.png"
    page.screenshot(path=str(screenshot), full_page=True)
    folder = os.environ.get("VAE_AUGMENT_SCREENSHOT_DIR")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(screenshot, Path(folder) / screenshot.name)
