"""Shared fixtures and helpers: tiny model configs and models (and a tiny trained checkpoint), tiny data made in
the test, the command line's tiny options and one-line errors, a free port, a per-test time limit, and the (optional)
MNIST root.

Everything here is small enough for the whole suite to run in a few minutes on two CPU cores.
Tests that need MNIST take its root from the environment variable ``VAE_AUGMENT_DATA`` (the
folder that holds ``MNIST/raw``, e.g. ``../shared/data``) and skip cleanly without it.
Test files import the plain helpers and constants (``from conftest import TINY, make_images``);
fixtures need no import. tests/README.md lists what is here and which file tests what.
"""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

# Tiny models run fastest on one thread; with two OpenMP threads a step is ~100x slower whenever
# another process holds one of the two cores (each parallel region waits for the preempted thread).
torch.set_num_threads(1)

# A VAE small enough to train for a few steps in well under a second.
TINY = {"latent_dim": 4, "widths": [4, 8], "hidden": 16}
# The same at 16x16 gray: test_borrow, test_class_noise, test_fidelity.
TINY_16 = {"channels": 1, "image_size": 16, **TINY}
# TINY as `vae-augment train` options.
TINY_ARGS = ["--widths", "4,8", "--hidden", "16", "--latent-dim", "4"]


def tiny_kl():
    """A randomly initialised diffusers AutoencoderKL with 3 blocks (downscale 4) and a few channels: ~40k parameters
    (diffusers is an optional extra: without it the calling test is skipped)."""
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    return diffusers.AutoencoderKL(block_out_channels=(8, 8, 16), layers_per_block=1, norm_num_groups=8, latent_channels=4,
                                   down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
                                   sample_size=32)


def tiny_taesd():
    """A randomly initialised diffusers AutoencoderTiny with 4 blocks (downscale 8), as TAESD, but 8 channels wide."""
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    return diffusers.AutoencoderTiny(encoder_block_out_channels=(8,) * 4, decoder_block_out_channels=(8,) * 4,
                                     num_encoder_blocks=(1,) * 4, num_decoder_blocks=(1,) * 4)


def make_images(n: int, channels: int = 1, size=(28, 28), seed: int = 0) -> torch.Tensor:
    """``n`` learnable images ``[n, C, H, W]`` in [0, 1]: one bright rectangle each, at a random place, on a dark background."""
    height, width = (size, size) if isinstance(size, int) else size
    g = torch.Generator().manual_seed(seed)
    images = torch.full((n, channels, height, width), 0.05)
    for i in range(n):
        h = int(torch.randint(height // 4, height // 2 + 1, (1,), generator=g))
        w = int(torch.randint(width // 4, width // 2 + 1, (1,), generator=g))
        top = int(torch.randint(0, height - h + 1, (1,), generator=g))
        left = int(torch.randint(0, width - w + 1, (1,), generator=g))
        colour = torch.rand(channels, 1, 1, generator=g) * 0.5 + 0.5
        images[i, :, top : top + h, left : left + w] = colour
    return images


def write_pngs(folder: Path, images: torch.Tensor, prefix: str = "img") -> Path:
    """Save ``images: [N, C, H, W]`` in [0, 1] as 8-bit PNGs (gray for C = 1, RGB for C = 3) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    array = (images * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    for i, pixels in enumerate(array):
        image = Image.fromarray(pixels[..., 0], mode="L") if pixels.shape[-1] == 1 else Image.fromarray(pixels, mode="RGB")
        image.save(folder / f"{prefix}{i:03d}.png")
    return folder


def free_port() -> int:
    """A loopback TCP port that nothing listens on (for a server to start on, or to stand for an unreachable one)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_error_line(err: str, command: str) -> str:
    """Check that ``err`` (a command's stderr) is one ``vae-augment COMMAND: error: ...`` line and no traceback; return it."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"vae-augment {command}: error: "), err
    assert "Traceback" not in err
    return lines[0]


def trained_checkpoint(images: torch.Tensor, folder: Path) -> Path:
    """A tiny gray 28x28 VAE (`TINY`, seed 0) fitted to ``images`` for 150 steps (about a second), saved in ``folder`` with
    the reference statistics the app reads (metrics.json); returns ``folder``. test_app and test_app_browser serve it."""
    from torch.utils.data import TensorDataset

    from vae_augment import VAE
    from vae_augment.atomic import atomic_write_json
    from vae_augment.training import reference_statistics

    torch.manual_seed(0)
    vae = VAE(channels=1, image_size=28, **TINY)
    optimizer = torch.optim.Adam(vae.parameters(), lr=1e-2)
    for _ in range(150):
        loss = vae.loss(images[torch.randint(0, len(images), (64,))])["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    vae.eval()
    metrics = reference_statistics(vae, TensorDataset(images, torch.zeros(len(images))))
    vae.save_pretrained(folder)
    atomic_write_json(folder / "metrics.json", {"dataset": "rectangles", **metrics})
    return folder


@pytest.fixture(scope="module")
def vae():
    """The tiny gray 28x28 VAE (seed 0, `TINY`) with latent scale 0.5, in eval mode; one per test module.
    A module that needs another model defines its own ``vae`` fixture, which takes precedence (test_borrow, test_class_noise)."""
    from vae_augment import VAE

    torch.manual_seed(0)
    model = VAE(channels=1, image_size=28, **TINY)
    model.latent_scale.fill_(0.5)
    return model.eval()


@pytest.fixture
def saved_vae(tmp_path):
    """A tiny VAE saved with save_pretrained, with non-default latent statistics; returns (vae, folder)."""
    from vae_augment import VAE

    torch.manual_seed(0)
    vae = VAE(channels=1, image_size=28, **TINY)
    vae.latent_loc.copy_(torch.arange(4.0))
    vae.latent_scale.copy_(torch.tensor([0.5, 1.5, 2.0, 3.0]))
    folder = tmp_path / "checkpoint"
    vae.save_pretrained(folder)
    return vae.eval(), folder


@pytest.fixture(scope="session")
def assert_same_state():
    """Check that two state dicts have the same keys and bit-identical tensors."""

    def check(a: dict, b: dict) -> None:
        assert a.keys() == b.keys(), f"different keys: {sorted(set(a) ^ set(b))}"
        different = [k for k in a if not torch.equal(a[k], b[k])]
        assert not different, f"tensors differ: {different}"

    return check


@pytest.fixture
def time_limit(request):
    """Fail a test that runs longer than its module's ``TIME_LIMIT_S`` (20 s if unset), by SIGALRM: the test extra has no
    pytest-timeout. A module opts in with ``pytestmark = pytest.mark.usefixtures("time_limit")`` (the bad_input suites)."""
    seconds = getattr(request.module, "TIME_LIMIT_S", 20)

    def expire(signum, frame):
        raise TimeoutError(f"this case ran past its {seconds} s limit")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="session")
def mnist_root() -> Path:
    """The folder holding ``MNIST/raw``, from ``VAE_AUGMENT_DATA``; skips the test when unset or absent."""
    root = os.environ.get("VAE_AUGMENT_DATA")
    if not root:
        pytest.skip("MNIST tests need VAE_AUGMENT_DATA=<folder holding MNIST/raw> (e.g. ../shared/data)")
    root = Path(root).expanduser()
    if not (root / "MNIST" / "raw").is_dir():
        pytest.skip(f"VAE_AUGMENT_DATA={str(root)!r} has no MNIST/raw folder")
    return root


@pytest.fixture(autouse=True)
def _seed_everything():
    """Each test starts from the same global RNG state, so figures do not depend on test order."""
    torch.manual_seed(1234)
    np.random.seed(1234)
