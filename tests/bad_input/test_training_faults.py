"""Faults around training (issue 13): an --out folder that holds someone else's files, a run killed at
each step of saving a checkpoint, unreadable images in a training folder, and the command line's
one-line errors for them."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
from pathlib import Path

import pytest
import torch
from conftest import TINY, TINY_ARGS, make_images, one_error_line, write_pngs
from safetensors.torch import load_file
from torch.utils.data import TensorDataset

from vae_augment import load_vae, train
from vae_augment.checkpoint import read_trainer_state
from vae_augment.cli import main
from vae_augment.data import ImageFolderDataset
from vae_augment.training import STATE_NAME

RUN_FILES = {"config.json", "model.safetensors", "metrics.json", "README.md", STATE_NAME}
TIME_LIMIT_S = 20  # per case (conftest.py's time_limit)
pytestmark = pytest.mark.usefixtures("time_limit")


def tiny_data():
    train_x, test_x = make_images(16, seed=0), make_images(8, seed=1)
    return TensorDataset(train_x, torch.zeros(16, dtype=torch.long)), TensorDataset(test_x, torch.zeros(8, dtype=torch.long))


def train_tiny(out: Path, **kwargs):
    train_set, test_set = tiny_data()
    options = dict(test_data=test_set, epochs=2, batch_size=8, lr=5e-3, iw_k=0, seed=3, device="cpu", progress=False, log=False, **TINY)
    return train(train_set, out, **{**options, **kwargs})


def contents(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------ 1. --out must be empty, new, or a run of its own
def user_checkpoint(folder: Path) -> None:
    from vae_augment import VAE

    VAE(**TINY).save_pretrained(folder)


@pytest.mark.parametrize(
    ("make", "listed"),
    [
        (lambda f: [(f / "README.md").write_text("# my notes"), (f / "metrics.json").write_text('{"mine": 1}')],
         "README.md, metrics.json"),
        (lambda f: (f / "notes.txt").write_text("keep me"), "notes.txt"),
        (lambda f: (f / "photos").mkdir(), "photos/"),
        (user_checkpoint, "README.md, config.json, model.safetensors"),
    ],
    ids=["readme-and-metrics", "a-text-file", "a-subfolder", "a-saved-checkpoint"],
)
def test_train_refuses_an_out_folder_holding_other_files(tmp_path, make, listed):
    out = tmp_path / "out"
    out.mkdir()
    make(out)
    before = contents(out)
    names_before = sorted(p.name for p in out.iterdir())
    for resume in (False, True):
        error = FileNotFoundError if resume else FileExistsError
        with pytest.raises(error, match=re.escape(listed)) as info:
            train_tiny(out, resume=resume)
        message = str(info.value)
        assert "no training run" in message and "nothing was written" in message, message
    assert contents(out) == before  # nothing replaced
    assert sorted(p.name for p in out.iterdir()) == names_before  # nothing added


def test_train_writes_into_an_empty_or_a_new_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    for out in (tmp_path / "empty", tmp_path / "new" / "nested"):
        train_tiny(out, epochs=1)
        assert RUN_FILES <= {p.name for p in out.iterdir()}


def test_train_refuses_an_out_that_is_a_file(tmp_path):
    out = tmp_path / "out.txt"
    out.write_text("mine")
    with pytest.raises(FileExistsError, match=r"output folder '.*out.txt' is a file, not a folder"):
        train_tiny(out)
    assert out.read_text() == "mine"


def test_train_refuses_an_out_that_is_a_symlink_loop(tmp_path):
    out = tmp_path / "loop"
    out.symlink_to(out)
    with pytest.raises(FileExistsError, match=r"output folder '.*loop' is a symlink that cannot be followed"):
        train_tiny(out)


def test_cli_train_into_a_folder_of_user_files_is_one_line_and_exit_2(tmp_path, capsys):
    data = write_pngs(tmp_path / "images", make_images(10))
    out = tmp_path / "out"
    out.mkdir()
    (out / "README.md").write_text("# mine")
    (out / "metrics.json").write_text("{}")
    before = contents(out)
    argv = ["train", "--data", str(data), "--out", str(out), "--epochs", "1", *TINY_ARGS, "--iw-k", "0", "--device", "cpu", "--quiet"]
    assert main(argv) == 2
    line = one_error_line(capsys.readouterr().err, "train")
    assert "README.md, metrics.json" in line and "--resume" in line
    assert contents(out) == before
    assert main([*argv, "--resume"]) == 2
    assert "cannot resume" in one_error_line(capsys.readouterr().err, "train")


# ------------------------------------------------------------------ 2. a kill at any step of saving
def is_debris(name: str) -> bool:
    """What an interrupted atomic write leaves: a hidden temporary file or staging folder."""
    return name.startswith(".staging-") or (name.startswith(".") and name.endswith(".tmp"))


@pytest.fixture(scope="module")
def kill_points(tmp_path_factory):
    """A 2-epoch run with a copy of its folder taken before every file-system step of saving (fsync,
    rename, link, unlink, rmdir): what a SIGKILL at that instant leaves on disk. Returns the uninterrupted
    run's folder and [(step, copy)], one copy per distinct state (temporary files also cut short)."""
    root = tmp_path_factory.mktemp("kills")
    out = root / "run"
    seen: dict[tuple, str] = {}
    copies: list[tuple[str, Path]] = []
    busy = [False]

    def snapshot(step: str) -> None:
        if busy[0] or not out.is_dir():
            return
        busy[0] = True
        try:
            names = sorted(p.name for p in out.iterdir())
            key = (tuple(sorted((n, hashlib.sha1((out / n).read_bytes()).hexdigest()) for n in names
                                if not is_debris(n) and (out / n).is_file())), any(map(is_debris, names)))
            if key in seen:
                return
            seen[key] = step
            copy = root / f"kill{len(copies):03d}"
            shutil.copytree(out, copy, symlinks=True)
            for tmp in copy.rglob("*.tmp"):  # killed mid-write: the temporary file holds half its bytes
                tmp.write_bytes(tmp.read_bytes()[: tmp.stat().st_size // 2])
            copies.append((f"{step} ({', '.join(names) or 'empty'})", copy))
        finally:
            busy[0] = False

    def hooked(name):
        real = getattr(os, name)

        def call(*args, **kwargs):
            snapshot(f"before os.{name}{tuple(str(a)[-40:] for a in args[:2])}")
            return real(*args, **kwargs)
        return call

    with pytest.MonkeyPatch.context() as patch:
        for name in ("fsync", "replace", "link", "unlink", "rmdir"):
            patch.setattr(os, name, hooked(name))
        train_tiny(out)
    return out, copies


def test_a_kill_at_any_step_of_saving_leaves_a_folder_that_resumes_or_restarts(kill_points, assert_same_state):
    uninterrupted, copies = kill_points
    assert len(copies) >= 8, [step for step, _ in copies]  # the hooks saw the saves
    final = load_file(uninterrupted / "model.safetensors")
    first_save_states = 0
    for step, folder in copies:
        names = {p.name for p in folder.iterdir() if not is_debris(p.name)}
        # earlier files are intact: whatever the folder holds loads
        if {"config.json", "model.safetensors"} <= names:
            load_vae(folder)
        if STATE_NAME in names:
            read_trainer_state(folder / STATE_NAME)
            if "model.safetensors" not in names:
                first_save_states += 1
            with pytest.raises(FileExistsError, match="already holds a training run.*pass resume=True"):
                train_tiny(folder)
            train_tiny(folder, resume=True)
        else:  # nothing of the run was finished: recognised as empty
            assert names == set(), (step, names)
            with pytest.raises(FileNotFoundError, match=r"cannot resume: .* does not exist.*start without --resume"):
                train_tiny(folder, resume=True)
            train_tiny(folder)
        assert RUN_FILES <= {p.name for p in folder.iterdir()}, step
        assert not [p.name for p in folder.iterdir() if is_debris(p.name)], step  # leftovers cleared
        assert_same_state(load_file(folder / "model.safetensors"), final)
    assert first_save_states >= 1  # a kill during the first save, after the trainer state was written


# ------------------------------------------------------------------ 3. unreadable images: found before training
def truncate(path: Path) -> Path:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def test_a_truncated_image_is_skipped_with_a_warning_before_training(tmp_path):
    data = write_pngs(tmp_path / "images", make_images(20))
    write_pngs(data, make_images(1, seed=5), prefix="cut")
    truncate(data / "cut000.png")
    with pytest.warns(UserWarning, match=r"skipping 1 of 21 files .*'.*cut000.png' is not a readable image \(image file is truncated"):
        train(data, tmp_path / "run", epochs=1, batch_size=8, iw_k=0, device="cpu", progress=False, log=False, **TINY)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["train_images"] + metrics["test"]["images"] == 20


def test_the_dataset_checks_every_file_when_it_is_made(tmp_path):
    data = write_pngs(tmp_path / "images" / "a", make_images(10))
    write_pngs(tmp_path / "images" / "b", make_images(10, seed=1))
    truncate(data / "img003.png")
    (data / "empty.png").write_bytes(b"")
    with pytest.warns(UserWarning, match=r"skipping 2 of 21 files .*empty.png.*img003.png") as caught:
        dataset = ImageFolderDataset(tmp_path / "images")
    assert len(caught) == 1
    assert len(dataset) == 19 and dataset.labels.count(0) == 9 and dataset.labels.count(1) == 10
    assert all(item[0].shape == (1, 28, 28) for item in dataset)  # every remaining file reads


def test_a_folder_of_mostly_broken_images_is_refused(tmp_path):
    data = write_pngs(tmp_path / "images", make_images(4))
    for name in ("img000.png", "img001.png"):
        truncate(data / name)
    with pytest.raises(ValueError, match=r"2 of 4 files in '.*images' are not readable images, more than 10%.*img000.png"):
        ImageFolderDataset(data)
    for name in ("img002.png", "img003.png"):
        truncate(data / name)
    with pytest.raises(ValueError, match=r"none of the 4 files in '.*images' is a readable image"):
        ImageFolderDataset(data)


def test_symlink_loops_in_a_data_folder_are_skipped_and_named(tmp_path):
    data = tmp_path / "images"
    write_pngs(data / "a", make_images(6))
    write_pngs(data / "b", make_images(6, seed=1))
    (data / "loop").symlink_to(data)  # a class folder that is the data folder itself
    (data / "a" / "self.png").symlink_to(data / "a" / "self.png")  # an image that is a loop
    with pytest.warns(UserWarning) as caught:
        dataset = ImageFolderDataset(data)
    text = " ".join(str(w.message) for w in caught)
    assert "loop" in text and "self.png" in text and "symlink" in text, text
    assert dataset.classes == ["a", "b"] and len(dataset) == 12


def test_cli_train_on_a_folder_of_broken_images_is_one_line_and_exit_2(tmp_path, capsys):
    data = tmp_path / "images"
    data.mkdir()
    for i in range(3):
        (data / f"x{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    argv = ["train", "--data", str(data), "--out", str(tmp_path / "run"), "--epochs", "1", *TINY_ARGS, "--device", "cpu", "--quiet"]
    assert main(argv) == 2
    assert "none of the 3 files" in one_error_line(capsys.readouterr().err, "train")
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------ 4. a diverging run stops (issue 31, item 3)
def test_a_diverging_run_stops_at_the_first_non_finite_loss_and_keeps_the_last_checkpoint(tmp_path):
    out = tmp_path / "run"
    train_tiny(out, epochs=1)
    before = contents(out)
    with pytest.raises(FloatingPointError, match=r"training diverged: the training loss was nan at epoch 2, step \d of 2 .*"
                                                 r"the checkpoint of epoch 1 in '.*run' is kept as it was.*--lr, e\.g\. 100000.*--resume"):
        train_tiny(out, epochs=3, lr=1e6, resume=True)
    assert contents(out) == before  # the last finite checkpoint, byte for byte; no NaN weights, no metrics.json with NaN
    load_vae(out)
    train_tiny(out, epochs=2, resume=True)  # a lower lr continues from it
    assert json.loads((out / "metrics.json").read_text())["epochs"] == 2


def test_a_run_whose_weights_turn_non_finite_in_its_last_step_saves_nothing_of_that_epoch(tmp_path, monkeypatch):
    from vae_augment import training

    out = tmp_path / "run"
    train_tiny(out, epochs=1)
    before = contents(out)
    real = training._train_epoch

    def last_step_overflows(run, epoch, forward):
        result = real(run, epoch, forward)
        with torch.no_grad():
            next(run.vae.parameters()).fill_(float("inf"))  # as an overflowing last update would leave them
        return result

    monkeypatch.setattr(training, "_train_epoch", last_step_overflows)
    with pytest.raises(FloatingPointError, match=r"the weights were not finite at the end of epoch 2, step 2 of 2.*kept as it was"):
        train_tiny(out, epochs=2, resume=True)
    assert contents(out) == before


def test_cli_train_that_diverges_exits_2_naming_epoch_step_and_lr(tmp_path, capsys):
    data = write_pngs(tmp_path / "images", make_images(20))
    out = tmp_path / "run"
    argv = ["train", "--data", str(data), "--out", str(out), "--epochs", "3", "--batch-size", "8", "--lr", "1e6", *TINY_ARGS,
            "--iw-k", "0", "--device", "cpu", "--quiet"]
    assert main(argv) == 2
    captured = capsys.readouterr()
    line = one_error_line(captured.err, "train")
    assert re.search(r"at epoch 1, step \d of 3", line) and "--lr, e.g. 100000" in line and "nothing was saved" in line, line
    assert "train loss nan" not in captured.out
    assert not (out / "model.safetensors").exists() and not (out / "metrics.json").exists()


def test_cli_fit_prior_that_diverges_exits_2_and_writes_nothing(tmp_path, capsys, monkeypatch):
    from vae_augment import VAE, losses

    torch.manual_seed(0)
    VAE(**TINY).save_pretrained(tmp_path / "checkpoint")
    before = contents(tmp_path / "checkpoint")
    data = write_pngs(tmp_path / "images", make_images(20))
    real = losses.mixture_log_prob
    calls = []

    def overflow_at_step_3(*args):  # a fit that overflows on its third step
        calls.append(1)
        value = real(*args)
        return value * float("inf") if len(calls) == 3 else value

    monkeypatch.setattr(losses, "mixture_log_prob", overflow_at_step_3)
    argv = ["fit-prior", "--checkpoint", str(tmp_path / "checkpoint"), "--data", str(data), "--out", str(tmp_path / "prior"),
            "--components", "4", "--steps", "10", "--batch-size", "16", "--iw-k", "0", "--device", "cpu", "--quiet"]
    assert main(argv) == 2
    line = one_error_line(capsys.readouterr().err, "fit-prior")
    assert "diverged" in line and "at step 3 of 10" in line and "--lr, e.g. 0.0003" in line, line
    assert not (tmp_path / "prior").exists()
    assert contents(tmp_path / "checkpoint") == before


# ------------------------------------------------------------------ 5. a disk that fills during a save (issue 31, item 5)
def fill_disk_after(monkeypatch, budget: int, error: int = errno.ENOSPC) -> None:
    """Make every file written through os.fdopen fail, part way, once ``budget`` more bytes have been written in all:
    a disk that fills (ENOSPC) or a file-size limit (EFBIG)."""
    real, left = os.fdopen, [budget]

    class Filling:
        def __init__(self, f):
            self.f = f

        def write(self, data):
            if len(data) > left[0]:
                self.f.write(data[: left[0]])
                left[0] = 0
                raise OSError(error, os.strerror(error))
            left[0] -= len(data)
            return self.f.write(data)

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    monkeypatch.setattr(os, "fdopen", lambda fd, *args, **kwargs: Filling(real(fd, *args, **kwargs)))


@pytest.mark.parametrize("error", [errno.ENOSPC, errno.EFBIG], ids=["ENOSPC", "EFBIG"])
def test_a_disk_full_at_the_trainer_state_leaves_the_previous_checkpoint_and_names_the_file(tmp_path, monkeypatch, error):
    out = tmp_path / "run"
    train_tiny(out, epochs=1)
    before, state_size = contents(out), (out / STATE_NAME).stat().st_size
    with monkeypatch.context() as patch:
        fill_disk_after(patch, 100, error)
        with pytest.raises(OSError, match=rf"could not write '.*run/{STATE_NAME}' \({re.escape(os.strerror(error))}\): "
                                          r"it needed ([\d,]+) bytes.*the file already there is as it was") as info:
            train_tiny(out, epochs=2, resume=True)
    assert info.value.errno == error
    needed = int(re.search(r"needed ([\d,]+) bytes", str(info.value)).group(1).replace(",", ""))
    assert state_size < needed < state_size + 1000  # the state file's size, with one more epoch of history in its metadata
    assert contents(out) == before and not [p for p in out.iterdir() if is_debris(p.name)]
    load_vae(out)
    train_tiny(out, epochs=2, resume=True)  # with space again: it goes on


def test_a_disk_full_at_the_weights_keeps_the_previous_weights_loadable(tmp_path, monkeypatch, capsys):
    data = write_pngs(tmp_path / "images", make_images(20))
    out = tmp_path / "run"
    argv = ["train", "--data", str(data), "--out", str(out), "--batch-size", "8", *TINY_ARGS, "--iw-k", "0", "--device", "cpu", "--quiet"]
    assert main([*argv, "--epochs", "1"]) == 0
    before = contents(out)
    with monkeypatch.context() as patch:
        fill_disk_after(patch, (out / STATE_NAME).stat().st_size + 1000)  # the trainer state fits, the weights do not
        assert main([*argv, "--epochs", "2", "--resume"]) == 2
    line = one_error_line(capsys.readouterr().err, "train")
    assert re.search(rf"could not write '{re.escape(str(out))}/model.safetensors' \(No space left on device\): it needed "
                     rf"{before['model.safetensors'].__len__():,} bytes.*the checkpoint already in '{re.escape(str(out))}' is as it was",
                     line), line
    assert {name: contents(out)[name] for name in ("config.json", "model.safetensors", "metrics.json", "README.md")} == \
        {name: before[name] for name in ("config.json", "model.safetensors", "metrics.json", "README.md")}
    assert not [p.name for p in out.iterdir() if is_debris(p.name)]
    load_vae(out)
    assert main([*argv, "--epochs", "2", "--resume"]) == 0  # resumes from the trainer state of epoch 2
    assert json.loads((out / "metrics.json").read_text())["epochs"] == 2


def test_cli_train_error_after_a_progress_bar_is_the_last_line(tmp_path, capsys):
    """Issue 31, item 4: an error in the middle of an epoch, its progress bar drawn, ends the output on a line of its own
    (the bar, closed as its loop ends, clears its line)."""
    data = write_pngs(tmp_path / "images", make_images(20))
    argv = ["train", "--data", str(data), "--out", str(tmp_path / "run"), "--epochs", "2", "--batch-size", "8", "--lr", "1e6",
            *TINY_ARGS, "--iw-k", "0", "--device", "cpu"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "epoch 1/2" in err  # the bar was drawn
    last = err.splitlines()[-1]  # splitlines also splits at the bar's carriage returns
    assert last.startswith("vae-augment train: error: training diverged: the training loss was nan at epoch 1"), repr(err[-300:])


# ------------------------------------------------------------------ 6. a kill at any step of fit-prior (issue 31, item 6)
def test_a_kill_at_any_step_of_fit_prior_leaves_no_half_checkpoint(tmp_path, capsys, assert_same_state):
    """A copy of --out's parent folder is taken before every file-system step of `vae-augment fit-prior` (what a SIGKILL
    then leaves, temporary files cut short): --out is either the whole new checkpoint or absent, and the same command
    run again writes the same checkpoint and clears what the kill left."""
    from vae_augment import VAE

    torch.manual_seed(0)
    VAE(**TINY).save_pretrained(tmp_path / "checkpoint")
    data = write_pngs(tmp_path / "images", make_images(20))
    parent = tmp_path / "models"
    parent.mkdir()

    def argv(folder: Path) -> list[str]:
        return ["fit-prior", "--checkpoint", str(tmp_path / "checkpoint"), "--data", str(data), "--out", str(folder / "prior"),
                "--components", "4", "--steps", "10", "--batch-size", "16", "--iw-k", "0", "--device", "cpu", "--quiet"]

    copies: list[tuple[str, Path]] = []

    def hooked(name):
        real = getattr(os, name)

        def call(*args, **kwargs):
            if str(args[0]).startswith(str(parent) + os.sep):
                copy = tmp_path / f"kill{len(copies):03d}"
                shutil.copytree(parent, copy, symlinks=True)
                for tmp in copy.rglob("*.tmp"):
                    tmp.write_bytes(tmp.read_bytes()[: tmp.stat().st_size // 2])
                copies.append((f"before os.{name}({str(args[0])[len(str(parent)):]})", copy))
            return real(*args, **kwargs)
        return call

    with pytest.MonkeyPatch.context() as patch:
        for name in ("mkdir", "fsync", "replace", "link", "unlink", "rmdir"):
            patch.setattr(os, name, hooked(name))
        assert main(argv(parent)) == 0
    final = load_file(parent / "prior" / "model.safetensors")
    assert len(copies) >= 8, [step for step, _ in copies]
    for step, folder in copies:
        out = folder / "prior"
        assert not out.exists() or not [p for p in out.iterdir() if not is_debris(p.name)], (step, sorted(os.listdir(out)))
        assert main(argv(folder)) == 0, (step, capsys.readouterr().err)
        assert sorted(os.listdir(folder)) == ["prior"], step  # the kill's leftovers are gone
        assert_same_state(load_file(out / "model.safetensors"), final)
        load_vae(out)


# ------------------------------------------------------------------ 7. a real SIGKILL at training steps other than saving (issue 31, item 7)
KILLED_RUN = """
import os, signal, sys
from pathlib import Path
import torch
sys.path.insert(0, {tests!r})
torch.set_num_threads(1)
from bad_input.test_training_faults import train_tiny
from vae_augment import training

where, count = {where!r}, {count}
calls = [0]

def killing(real):
    def call(*args, **kwargs):
        calls[0] += 1
        if calls[0] == count:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)
    return call

if where == "optimizer step":
    torch.optim.Adam.step = killing(torch.optim.Adam.step)
else:
    setattr(training, where, killing(getattr(training, where)))
train_tiny(Path({out!r}), epochs=3)
"""
KILLS = {  # where -> (which call is killed, what the folder holds then); 16 images in batches of 8: 2 steps an epoch
    "optimizer step, epoch 1": ("optimizer step", 2, "nothing"),
    "optimizer step, epoch 2": ("optimizer step", 4, "epoch 1's checkpoint"),
    "held-out evaluation of epoch 3": ("evaluate", 3, "epoch 2's checkpoint"),
    "reference statistics at the end": ("reference_statistics", 1, "epoch 3's checkpoint, no metrics.json yet"),
    "final evaluation": ("evaluate", 4, "epoch 3's checkpoint, no metrics.json yet"),
}


@pytest.fixture(scope="module")
def three_epochs(tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted") / "run"
    train_tiny(out, epochs=3)
    return load_file(out / "model.safetensors")


@pytest.mark.parametrize("kill", list(KILLS))
def test_a_sigkill_during_training_leaves_a_folder_that_resumes_to_the_same_weights(kill, tmp_path, three_epochs, assert_same_state):
    """The training process is killed outright (SIGKILL, in a subprocess) in the middle of an epoch's optimizer steps,
    of a held-out evaluation or of the end-of-run statistics, not only while saving: what it leaves loads, and
    ``resume=True`` finishes the run with the weights of a run never interrupted."""
    import subprocess
    import sys

    where, count, holds = KILLS[kill]
    out = tmp_path / "run"
    script = KILLED_RUN.format(tests=str(Path(__file__).parents[1]), where=where, count=count, out=str(out))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=TIME_LIMIT_S)
    assert done.returncode == -9, (done.returncode, done.stderr[-2000:])
    names = {p.name for p in out.iterdir()} if out.exists() else set()
    assert not [n for n in names if is_debris(n)], names  # nothing was being written
    if holds == "nothing":
        assert not {"model.safetensors", STATE_NAME} & names, names
        train_tiny(out, epochs=3)
    else:
        assert {"config.json", "model.safetensors", STATE_NAME} <= names and "metrics.json" not in names, names
        assert read_trainer_state(out / STATE_NAME)[1]["epoch"] == int(holds.split()[1][0]), holds  # the last finished epoch
        load_vae(out)  # the last finished epoch's checkpoint loads
        with pytest.raises(FileExistsError, match="already holds a training run.*pass resume=True"):
            train_tiny(out, epochs=3)
        train_tiny(out, epochs=3, resume=True)
    assert RUN_FILES <= {p.name for p in out.iterdir()}
    assert json.loads((out / "metrics.json").read_text())["epochs"] == 3
    assert_same_state(load_file(out / "model.safetensors"), three_epochs)
