"""`vae-augment demo` from a regular (non-editable) install in a fresh virtual environment.

The package is installed from the source tree with pip (no editable finder, no source tree on the
path), its dependencies taken from the running environment through a .pth file, and the demo is
started from a folder outside the repository: it must serve the app from the installed package,
with the bundled checkpoint that ships in it.
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import sysconfig
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import free_port

pytest.importorskip("gradio")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fresh")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    # the dependencies (torch, gradio, ...) come from this environment; its .pth files (the editable
    # install of vae_augment among them) are not processed for a path added this way
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # build with this environment's setuptools when it is recent enough (no download), else in pip's isolated build
    try:
        isolation = [] if int(importlib.metadata.version("setuptools").split(".")[0]) < 68 else ["--no-build-isolation"]
    except importlib.metadata.PackageNotFoundError:
        isolation = []
    build = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", *isolation,
                            "--target", str(site), str(REPO)], capture_output=True, text=True, cwd=root)
    assert build.returncode == 0, build.stdout + build.stderr
    return venv


def test_the_installed_package_is_the_one_imported(fresh_venv, tmp_path):
    python = fresh_venv / "bin" / "python"
    probe = subprocess.run([str(python), "-c", "import vae_augment, vae_augment.app; from vae_augment import bundled_names; "
                            "print(vae_augment.__file__); print(bundled_names())"],
                           capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": ""})
    assert probe.returncode == 0, probe.stderr
    where, names = probe.stdout.splitlines()[:2]
    assert Path(where).is_relative_to(fresh_venv) and not Path(where).is_relative_to(REPO), where
    assert "mnist" in names  # the bundled checkpoint ships as package data


def test_demo_serves_from_a_regular_install(fresh_venv, tmp_path):
    python, port = fresh_venv / "bin" / "python", free_port()
    env = {**os.environ, "PYTHONPATH": "", "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    server = subprocess.Popen([str(python), "-m", "vae_augment.cli", "demo", "--port", str(port)], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline, page = time.monotonic() + 120, None
        while time.monotonic() < deadline and server.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/config", timeout=2) as response:
                    page = response.read().decode()
                break
            except OSError:
                time.sleep(0.5)
        if page is None:
            server.kill()
            pytest.fail(f"the demo did not serve on port {port}:\n{server.communicate()[0][-3000:]}")
        assert "vae-augment" in page and "augment" in page  # the app's title and its /augment endpoint
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
