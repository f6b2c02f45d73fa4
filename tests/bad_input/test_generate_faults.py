"""Faults around offline generation (issue 31): an --out folder that holds someone else's files or is a file,
a run killed half way and run again (with the same settings or others), its manifest, and the command
line's errors for them, in the last line of its output."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
import torch
from conftest import TINY, make_images, one_error_line, write_pngs

import vae_augment.generate as generate
from vae_augment import VAE
from vae_augment.cli import main
from vae_augment.generate import MANIFEST_NAME, generate_variants

TIME_LIMIT_S = 20  # per case (conftest.py's time_limit)
pytestmark = pytest.mark.usefixtures("time_limit")
PER_IMAGE = 3


@pytest.fixture
def source(tmp_path) -> tuple[Path, Path]:
    """A tiny saved VAE (seed 0) and a data folder of 5 images in classes a (3) and b (2): (checkpoint, data)."""
    torch.manual_seed(0)
    VAE(**TINY).save_pretrained(tmp_path / "checkpoint")
    write_pngs(tmp_path / "data" / "a", make_images(3, seed=1))
    write_pngs(tmp_path / "data" / "b", make_images(2, seed=2))
    return tmp_path / "checkpoint", tmp_path / "data"


def run(source, out: Path, **kwargs) -> int:
    options = dict(per_image=PER_IMAGE, strength=0.5, batch_size=2, seed=7, progress=False)
    return generate_variants(source[0], source[1], out, **{**options, **kwargs})


def cli_args(source, out: Path, *extra: str, per_image: int = PER_IMAGE) -> list[str]:
    return ["generate", "--checkpoint", str(source[0]), "--data", str(source[1]), "--out", str(out), "--per-image",
            str(per_image), "--strength", "0.5", "--batch-size", "2", "--seed", "7", *extra]


def contents(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def pngs(folder: Path) -> dict[str, bytes]:
    return {name: data for name, data in contents(folder).items() if name.endswith(".png")}


# ------------------------------------------------------------------ 1. --out: empty, new, or a run of its own
@pytest.mark.parametrize(
    ("make", "listed"),
    [
        (lambda f: [(f / "a").mkdir(), (f / "a" / "img000_0.png").write_bytes(b"a user's image")], "a/"),
        (lambda f: (f / "notes.txt").write_text("keep me"), "notes.txt"),
        (lambda f: (f / MANIFEST_NAME).write_text('{"mine": 1}'), MANIFEST_NAME),  # a file of that name, not a generate run's
    ],
    ids=["an-image-of-the-same-name", "a-text-file", "someone-elses-generate-json"],
)
def test_generate_refuses_an_out_folder_holding_other_files(source, tmp_path, make, listed):
    out = tmp_path / "out"
    out.mkdir()
    make(out)
    before = contents(out)
    with pytest.raises(FileExistsError, match=rf"holds files that generate did not write \({re.escape(listed)}\).*nothing was written"):
        run(source, out)
    assert contents(out) == before  # nothing replaced, nothing added


def test_generate_writes_into_an_empty_or_a_new_folder_with_a_manifest(source, tmp_path):
    (tmp_path / "empty").mkdir()
    for out in (tmp_path / "empty", tmp_path / "new" / "nested"):
        assert run(source, out, command="vae-augment generate ...") == 5 * PER_IMAGE
        assert len(pngs(out)) == 5 * PER_IMAGE
        manifest = json.loads((out / MANIFEST_NAME).read_text())
        assert manifest["command"] == "vae-augment generate ..."
        assert manifest["checkpoint"] == str(source[0].resolve()) and manifest["data"] == str(source[1].resolve())
        assert (manifest["strength"], manifest["mode"], manifest["seed"], manifest["batch_size"]) == (0.5, "data", 7, 2)
        assert (manifest["images"], manifest["per_image"], manifest["files"], manifest["complete"]) == (5, PER_IMAGE, 15, True)


def test_cli_generate_into_a_folder_of_user_files_is_one_line_and_exit_2(source, tmp_path, capsys):
    out = tmp_path / "out"
    (out / "a").mkdir(parents=True)
    (out / "a" / "img000_0.png").write_bytes(b"a user's image")
    assert main(cli_args(source, out)) == 2  # with the progress output on: the error is still the one line of stderr
    line = one_error_line(capsys.readouterr().err, "generate")
    assert str(out) in line and "(a/)" in line and "nothing was written" in line
    assert contents(out) == {"a/img000_0.png": b"a user's image"}


# ------------------------------------------------------------------ 2. a run killed half way, run again
def kill_after(monkeypatch, files: int) -> None:
    """Make the run stop, as if killed, when it is about to write its ``files + 1``-th image, leaving a PNG cut short
    in a temporary file as a kill during a write would."""
    real, count = generate.atomic.atomic_write_bytes, [0]

    def write(path, data, durable=True):
        if Path(path).suffix == ".png":
            count[0] += 1
            if count[0] > files:
                (Path(path).parent / f".{Path(path).name}.0123456789ab.tmp").write_bytes(data[: len(data) // 2])
                raise KeyboardInterrupt
        real(path, data, durable)

    monkeypatch.setattr(generate.atomic, "atomic_write_bytes", write)


def test_a_killed_run_run_again_resumes_it_exactly(source, tmp_path, monkeypatch):
    run(source, tmp_path / "whole")
    out = tmp_path / "out"
    with monkeypatch.context() as patch:
        kill_after(patch, 7)
        with pytest.raises(KeyboardInterrupt):
            run(source, out)
    assert len(pngs(out)) == 7 and not json.loads((out / MANIFEST_NAME).read_text())["complete"]
    assert run(source, out) == 5 * PER_IMAGE - 7  # only the rest
    assert pngs(out) == pngs(tmp_path / "whole")  # the same images, byte for byte, as an uninterrupted run
    assert not [p for p in out.rglob("*.tmp")]  # the image cut short is gone
    assert json.loads((out / MANIFEST_NAME).read_text())["complete"]
    assert run(source, out) == 0  # a finished run: nothing to do


def test_cli_generate_interrupted_then_run_again_finishes_the_run(source, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    with monkeypatch.context() as patch:
        kill_after(patch, 7)
        assert main(cli_args(source, out, "--quiet")) == 130
    assert "the images written so far are whole, and the same command resumes the run" in capsys.readouterr().err
    assert main(cli_args(source, out, "--quiet")) == 0
    assert f"wrote 8 images to {out} (the other 7 of the run's 15 were written before)" in capsys.readouterr().out
    assert len(pngs(out)) == 15 and json.loads((out / MANIFEST_NAME).read_text())["command"].startswith("vae-augment generate --checkpoint")


@pytest.mark.parametrize(("change", "differs"), [({"per_image": 2}, "per_image 3, now 2"), ({"seed": 8}, "seed 7, now 8"),
                                                  ({"strength": 1.0}, "strength 0.5, now 1.0"), ({"mode": "prior"}, "mode 'data', now 'prior'")])
def test_a_run_into_the_folder_of_another_with_other_settings_is_refused(source, tmp_path, monkeypatch, change, differs):
    out = tmp_path / "out"
    with monkeypatch.context() as patch:
        kill_after(patch, 4)
        with pytest.raises(KeyboardInterrupt):
            run(source, out)
    before = contents(out)
    with pytest.raises(FileExistsError, match=rf"holds a generate run made with other settings \({re.escape(differs)};.*"
                                              r"repeat its settings or choose another output folder \(nothing was written\)"):
        run(source, out, **change)
    assert contents(out) == before


def test_cli_generate_run_again_with_other_settings_exits_2_and_mixes_nothing(source, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(cli_args(source, out, "--quiet")) == 0
    before = contents(out)
    assert main(cli_args(source, out, "--quiet", per_image=2)) == 2
    line = one_error_line(capsys.readouterr().err, "generate")
    assert "per_image 3, now 2" in line, line
    assert contents(out) == before and len(pngs(out)) == 5 * PER_IMAGE
    assert main(cli_args(source, out, "--quiet")) == 0  # the same command again: nothing more
    assert "wrote 0 images" in capsys.readouterr().out and contents(out) == before


# ------------------------------------------------------------------ 4. the problem in the last line
def test_cli_generate_with_an_out_that_is_a_file_says_so_in_its_last_line(source, tmp_path, capsys):
    out = tmp_path / "variants.txt"
    out.write_text("mine")
    assert main(cli_args(source, out)) == 2
    line = one_error_line(capsys.readouterr().err, "generate")
    assert f"output folder {str(out)!r} is a file, not a folder" in line, line
    assert out.read_text() == "mine"


def test_an_error_half_way_is_the_last_line_after_the_progress_bar(source, tmp_path, capsys, monkeypatch):
    real = generate.atomic.atomic_write_bytes

    def full(path, data, durable=True):
        if Path(path).suffix == ".png":
            raise OSError(28, "No space left on device", str(path))
        real(path, data, durable)

    monkeypatch.setattr(generate.atomic, "atomic_write_bytes", full)
    assert main(cli_args(source, tmp_path / "out")) == 2
    err = capsys.readouterr().err
    assert "generate:" in err  # the progress bar was drawn
    last = err.splitlines()[-1]  # splitlines also splits at the bar's carriage returns
    assert last.startswith("vae-augment generate: error: [Errno 28] No space left on device"), repr(err[-300:])


# ------------------------------------------------------------------ 6. a kill at any step (issue 31, item 6)
def test_a_kill_at_any_step_leaves_a_folder_that_the_same_run_completes_exactly(source, tmp_path):
    """A copy of the folder is taken before every file-system step of a run (mkdir, fsync, rename, unlink): what a SIGKILL at
    that instant leaves (temporary files cut short). Run again, each gives the uninterrupted run's images, and no debris."""
    whole, out = tmp_path / "whole", tmp_path / "out"
    run(source, whole)
    copies: list[tuple[str, Path]] = []

    def snapshot(step: str) -> None:
        copy = tmp_path / f"kill{len(copies):03d}"
        if out.is_dir():
            shutil.copytree(out, copy, symlinks=True)
            for tmp in copy.rglob("*.tmp"):  # killed mid-write: the temporary file holds half its bytes
                tmp.write_bytes(tmp.read_bytes()[: tmp.stat().st_size // 2])
        copies.append((step, copy))

    def hooked(name):
        real = getattr(os, name)

        def call(*args, **kwargs):
            if str(out) in str(args[0]) and not str(args[0]).startswith(str(tmp_path / "kill")):
                snapshot(f"before os.{name}({str(args[0])[len(str(out)):]})")
            return real(*args, **kwargs)
        return call

    with pytest.MonkeyPatch.context() as patch:
        for name in ("mkdir", "fsync", "replace", "unlink"):
            patch.setattr(os, name, hooked(name))
        run(source, out)
    assert pngs(out) == pngs(whole)
    assert len(copies) >= 5 * PER_IMAGE, [step for step, _ in copies]  # the hooks saw every image's rename
    for step, folder in copies:
        run(source, folder)
        assert pngs(folder) == pngs(whole), step
        assert not [p for p in folder.rglob("*.tmp")], step
        assert json.loads((folder / MANIFEST_NAME).read_text())["complete"], step
