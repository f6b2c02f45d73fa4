"""Atomic writes: a file, or a folder's set of files, is replaced whole or not at all.

A reader (a loader, a resumed training run) never sees a half-written file: each file is written to
a hidden temporary file in the same folder, fsynced, then renamed over its namesake
(`atomic_write_bytes`). A checkpoint's files are written as one unit (`staged_folder`), so new weights
never sit beside an old config. A process killed outright can leave hidden temporaries behind; they
are recognised by name (`is_save_debris`) and safe to delete (`remove_save_debris`).

Nothing here knows what the files mean; `vae_augment.checkpoint` names a checkpoint's files.
"""

from __future__ import annotations

import errno
import glob
import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import safetensors.torch
import torch

STAGING_PREFIX = ".staging-"  # the hidden folder `staged_folder` writes into
NO_SPACE = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}  # a write that did not fit: the disk, the file-size limit, the quota


def atomic_write_bytes(path: str | Path, data: bytes, durable: bool = True) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over ``path``. ``durable=False`` skips the
    fsync: a killed process still leaves the whole file or none, but a power loss may lose it."""
    path = Path(path)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
    # created 0666 minus the process's umask, by the kernel (mkstemp would make it 0600)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if isinstance(err, OSError) and err.errno in NO_SPACE:
            raise _no_space(err, path, len(data)) from err
        raise


def _no_space(err: OSError, path: Path, size: int) -> OSError:
    """``err`` (a full disk, a quota, a file-size limit) as an error that names the file and the space it needed."""
    if path.parent.name.startswith(STAGING_PREFIX):  # a checkpoint's file: name it where it was to go
        path, kept = path.parent.parent / path.name, f"the checkpoint already in {str(path.parent.parent)!r} is as it was"
    else:
        kept = "the file already there is as it was" if path.exists() else "nothing was written"
    try:
        free = f", {shutil.disk_usage(path.parent).free:,} bytes are free there"
    except OSError:
        free = ""
    return OSError(err.errno, f"could not write {str(path)!r} ({err.strerror}): it needed {size:,} bytes{free}; {kept}. "
                              "Free some space (or choose a folder on another disk) and run again")


def atomic_write_text(path: str | Path, text: str) -> None:
    """`atomic_write_bytes` of ``text`` in UTF-8."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """``obj`` as indented JSON with sorted keys (stable diffs), written atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def atomic_save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """A safetensors file of ``tensors`` (detached, contiguous, on cpu) with ``metadata``, written atomically."""
    atomic_write_bytes(path, safetensors.torch.save({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, metadata=metadata))


@contextmanager
def staged_folder(folder: str | Path, remove: Sequence[str] = ()) -> Iterator[Path]:
    """Save a folder's files as one unit.

    Write every file into the yielded staging folder (hidden, inside ``folder``). When the block
    ends without an error, the staged files are fsynced and renamed over their namesakes in
    ``folder``; then the files matching the glob patterns in ``remove`` that were not staged (left
    from an earlier save, e.g. a latent bank the new model lacks) are deleted. An error while
    writing leaves ``folder`` as it was; an error while renaming puts back the files already
    replaced (kept as hard links until then), so weights and config never mismatch. A process
    killed outright (SIGKILL, power loss) can leave a ``.staging-*`` folder behind, safe to delete.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(dir=folder, prefix=STAGING_PREFIX))
    try:
        yield stage
        staged = sorted(p for p in stage.iterdir() if p.is_file())
        for path in staged:
            with open(path, "r+b") as f:
                os.fsync(f.fileno())
        backups = stage / ".previous"
        backups.mkdir()
        for path in staged:
            if (folder / path.name).is_file():
                _link_or_copy(folder / path.name, backups / path.name)
        _replace_all(staged, folder, backups)
        names = {p.name for p in staged}
        for pattern in remove:
            for old in folder.glob(pattern):
                if old.name not in names and old.is_file():
                    old.unlink()
        _fsync_folder(folder)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


@contextmanager
def new_folder(folder: str | Path) -> Iterator[Path]:
    """Write a new folder as one unit: into the yielded staging folder (a hidden sibling of ``folder``), renamed to
    ``folder`` when the block ends without an error. ``folder`` must not exist or be empty (save debris aside), and so
    it stays if the process is killed; the hidden sibling then left behind is removed by the next call for ``folder``."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    prefix = f"{STAGING_PREFIX}{folder.name}-"
    for old in folder.parent.glob(glob.escape(prefix) + "*"):  # left by a kill
        shutil.rmtree(old, ignore_errors=True)
    stage = Path(tempfile.mkdtemp(dir=folder.parent, prefix=prefix))
    try:
        yield stage
        for path in sorted(p for p in stage.rglob("*") if p.is_file()):
            with open(path, "r+b") as f:
                os.fsync(f.fileno())
        _fsync_folder(stage)
        remove_save_debris(folder)
        os.replace(stage, folder)  # onto a folder that does not exist or is empty: one rename
        _fsync_folder(folder.parent)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _replace_all(staged: list[Path], folder: Path, backups: Path) -> None:
    """Rename each staged file over its namesake in ``folder``; on an error, put back the previous files
    (from ``backups``) or remove the new ones, then re-raise."""
    done: list[str] = []
    try:
        for path in staged:
            os.replace(path, folder / path.name)
            done.append(path.name)
    except BaseException:
        for name in done:
            if (backups / name).exists():
                os.replace(backups / name, folder / name)
            else:
                (folder / name).unlink(missing_ok=True)
        raise


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:  # a file system without hard links
        shutil.copy2(src, dst)


def _fsync_folder(folder: Path) -> None:
    """Make the renames in ``folder`` durable (where the platform can open a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def is_save_debris(name: str) -> bool:
    """What a save killed outright leaves in a folder: a hidden temporary file (`atomic_write_bytes`) or a
    staging folder (`staged_folder`); never part of a checkpoint, safe to delete."""
    return name.startswith(STAGING_PREFIX) or (name.startswith(".") and name.endswith(".tmp"))


def remove_save_debris(folder: str | Path) -> list[str]:
    """Delete the leftovers of interrupted saves in ``folder`` (see `is_save_debris`); returns their names."""
    removed = []
    for path in sorted(Path(folder).iterdir()) if Path(folder).is_dir() else []:
        if is_save_debris(path.name):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path.name)
    return removed
