"""The README's first code block is a runnable spec of the public API."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from vae_augment import bundled_names

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.skipif("mnist" not in bundled_names(), reason="needs the bundled checkpoint")
def test_first_code_block_runs_as_written(capsys):
    block = re.search(r"```python\n(.*?)```", README.read_text(), re.S).group(1)
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)
    assert namespace["variants"].shape == namespace["digits"].shape
    assert "tensor(" in capsys.readouterr().out


def test_readme_names_the_two_setup_commands():
    text = README.read_text()
    assert "pip install -e '.[app]' && python app.py" in text, "the main job's set-up command"
    assert "pip install -e '.[test]' && python -m pytest -q" in text, "the test command that .ci/run runs"
    assert "pip install -e '.[test]' && python -m pytest -q" in (README.parent / ".ci" / "run").read_text()


# ------------------------------------------------------------------ every Python block of the README and docs/
DOCS = [README, *sorted((README.parent / "docs").glob("*.md"))]
BLOCKS = [(path, i, block) for path in DOCS for i, block in enumerate(re.findall(r"```python\n(.*?)```", path.read_text(), re.S))]
EXTRAS = {"from datasets import": "datasets", "import lightning": "lightning"}  # an import in a block -> its extra (and module)
HUB_REPOS = ("stabilityai/sd-vae-ft-mse",)  # the Hub repos the blocks load: served from a pre-filled cache


def fill_hub_cache(hf_home: Path) -> None:
    """A Hugging Face cache (HF_HOME) holding each of HUB_REPOS as a tiny random AutoencoderKL, in the cache's own
    layout (refs/main -> snapshots/<commit>/files), so the blocks run with HF_HUB_OFFLINE=1 and the real client."""
    from conftest import tiny_kl

    for repo in HUB_REPOS:
        root = hf_hub_cache(hf_home) / f"models--{repo.replace('/', '--')}"
        commit = "0" * 40
        snapshot = root / "snapshots" / commit
        tiny_kl().save_pretrained(snapshot, safe_serialization=True)
        (root / "refs").mkdir(parents=True)
        (root / "refs" / "main").write_text(commit)


def hf_hub_cache(hf_home: Path) -> Path:
    return hf_home / "hub"


def test_no_readme_or_docs_line_names_this_machines_data_folder():
    """The examples run for a user anywhere: the data root comes from VAE_AUGMENT_DATA (default `data`), not from
    this repository's neighbour folder."""
    for path in DOCS:
        named = [n for n, line in enumerate(path.read_text().splitlines(), 1) if "../shared" in line]
        assert not named, f"{path.name} names ../shared on lines {named}"


def test_readme_is_short_and_its_goal_table_lives_in_docs():
    text = README.read_text()
    assert len(text.splitlines()) <= 300
    assert "<!-- summary:start -->" not in text and "<!-- summary:start -->" in (README.parent / "docs" / "benchmarks.md").read_text()


@pytest.mark.parametrize(("path", "index", "block"), BLOCKS, ids=[f"{p.name}-{i}" for p, i, _ in BLOCKS])
def test_every_python_block_runs(path, index, block, tmp_path):
    """Each block as a user pastes it: a fresh interpreter in the repository's folder, the Hub offline with
    a filled cache. Blocks that read MNIST take its root from VAE_AUGMENT_DATA, as the tests do, and skip
    without it (so nothing is downloaded here; a user's run downloads it into ./data)."""
    import os
    import subprocess
    import sys

    if "VAE_AUGMENT_DATA" in block:
        root = os.environ.get("VAE_AUGMENT_DATA")
        if not root or not (Path(root) / "MNIST" / "raw").is_dir():
            pytest.skip("needs VAE_AUGMENT_DATA=<folder holding MNIST/raw> (e.g. ../shared/data)")
    if any(repo in block for repo in HUB_REPOS):
        pytest.importorskip("diffusers")
        fill_hub_cache(tmp_path / "hf")
    if "AlbuVAEAugment" in block:
        pytest.importorskip("albumentations")
    if "gradio_client" in block:
        pytest.importorskip("gradio")
    for statement, extra in EXTRAS.items():  # docs/integrations.md: a recipe skips without its extra
        if statement in block:
            pytest.importorskip(extra, reason=f"needs the {extra} extra: pip install 'vae-augment[{extra}]'")
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    before = set(README.parent.iterdir())
    try:
        run = subprocess.run([sys.executable, "-c", block], cwd=README.parent, env=env, capture_output=True, text=True, timeout=300)
    finally:  # files a block writes where the user runs it (digit.png, ...) are not left in the checkout
        for made in set(README.parent.iterdir()) - before:
            if made.is_file():
                made.unlink()
    assert run.returncode == 0, f"{path.name}, Python block {index} failed:\n{block}\n{run.stderr[-3000:]}"
