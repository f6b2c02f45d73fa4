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
