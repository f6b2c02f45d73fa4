"""Huge images in the library transforms (issue 31, item 7): time and memory bounds below the pixel limit.

Images above `pixels.MAX_PIXELS` are refused at once (test_inputs.py). Below it, an image is converted to
float once, brought to the model's size, and the decoded result (or, with ``residual``, the decoded
change) brought back, so the memory a call takes grows with the image: each case runs `VAEAugment` on
one image at the limit (8K UHD, 7680x4320) in a fresh process and bounds its peak memory growth by
`BYTES_PER_INPUT_BYTE` times the input's size (measured about 6: a float32 copy of it and a little
more), and its time by the module's limit. A diffusers backbone bounds its own cost by ``max_pixels`` (the image is
processed at that many pixels, its attention grows with their square): the case uses a small bound.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

TIME_LIMIT_S = 60  # per case (conftest.py's time_limit), a fresh process included; each takes a few seconds
pytestmark = pytest.mark.usefixtures("time_limit")
BYTES_PER_INPUT_BYTE = 12  # three float32 copies of a uint8 image

MEASURE = """
import resource, sys, time, warnings
import torch
sys.path.insert(0, {tests!r})
torch.set_num_threads(1)
from conftest import TINY, tiny_kl
from vae_augment import VAE, DiffusersVAE, VAEAugment

warnings.simplefilter("ignore")
kind, channels, residual = {kind!r}, {channels}, {residual}
vae = VAE(channels=1, image_size=28, **TINY).eval() if kind == "conv" else DiffusersVAE(tiny_kl(), max_pixels=128 * 128)
augment = VAEAugment(vae, strength=0.5, residual=residual, p=1.0, generator=torch.Generator().manual_seed(0))
augment(torch.zeros(channels, 64, 64, dtype=torch.uint8))  # what a first call allocates once, whatever the size
x = (torch.rand(channels, 4320, 7680) * 255).to(torch.uint8)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
start = time.perf_counter()
y = augment(x)
seconds = time.perf_counter() - start
grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
assert y.shape == x.shape and y.dtype == x.dtype
print(grown / x.numel(), seconds)
"""


@pytest.mark.parametrize(("kind", "channels", "residual"), [("conv", 1, False), ("conv", 3, True), ("diffusers", 3, True)],
                         ids=["conv-gray", "conv-rgb-residual", "diffusers-rgb-residual"])
def test_an_image_at_the_pixel_limit_takes_bounded_memory(kind, channels, residual):
    if kind == "diffusers":
        pytest.importorskip("diffusers")
    script = MEASURE.format(tests=str(Path(__file__).parents[1]), kind=kind, channels=channels, residual=residual)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=TIME_LIMIT_S)
    assert done.returncode == 0, done.stderr[-2000:]
    per_byte, seconds = map(float, done.stdout.split())
    assert per_byte < BYTES_PER_INPUT_BYTE, f"peak memory grew by {per_byte:.1f} bytes per input byte ({seconds:.1f} s)"
