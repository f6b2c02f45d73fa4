"""The checkpoint folder format of both model kinds, and moving checkpoint files to and from the Hub.

A vae-augment checkpoint is a folder with ``config.json`` (every constructor argument of the model)
and ``model.safetensors``; optionally ``latent_bank.safetensors`` (training codes for the
"neighbour" mode), ``metrics.json`` and ``README.md`` (the model card). A diffusers autoencoder
folder is diffusers' own ``config.json`` + ``diffusion_pytorch_model.safetensors`` plus
``vae_augment.json`` (calibrated latent statistics and options). This module names those files,
reads and writes each of them (a folder's files are written as one unit, `staged_folder`), and
downloads and uploads them with huggingface_hub. Which model class a folder holds is decided by
the loader (`vae_augment.hub`); nothing here knows the model classes.

Weights are read from safetensors only: pickle files can run code when loaded.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import secrets
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Sequence
from urllib.parse import urlsplit

import torch
from huggingface_hub import HfApi, constants, hf_hub_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from safetensors import SafetensorError, safe_open
import safetensors.torch
from safetensors.torch import load_file

# files of every checkpoint
CONFIG_NAME = "config.json"
METRICS_NAME = "metrics.json"
CARD_NAME = "README.md"
# a vae-augment VAE
WEIGHTS_NAME = "model.safetensors"
BANK_NAME = "latent_bank.safetensors"
# a diffusers autoencoder
DIFFUSERS_WEIGHTS = "diffusion_pytorch_model.safetensors"
DIFFUSERS_FILES = "diffusion_pytorch_model*"  # its weights in any format or sharding, stale after a new save
STATS_NAME = "vae_augment.json"  # calibrated latent statistics and options, next to the diffusers files
PIPELINE_INDEX = "model_index.json"  # a full diffusers pipeline (its autoencoder is in vae/)
# what a save of either kind may leave behind: removed unless the new save writes it again
SAVED_FILES = (WEIGHTS_NAME, BANK_NAME, METRICS_NAME, DIFFUSERS_FILES, STATS_NAME)
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".pkl", ".ckpt")
PICKLE_REASON = "vae-augment loads weights only from safetensors because unpickling a file can run arbitrary code"
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*/[A-Za-z0-9][A-Za-z0-9_.\-]*$")


class CheckpointError(ValueError):
    """A checkpoint folder or file that cannot be loaded; the message says why and what is accepted."""


class MissingFileError(CheckpointError):
    """A Hub repo (reachable) that does not have the file asked for."""


class OfflineError(CheckpointError):
    """A Hub file that is not in the local cache while the Hub cannot be reached (or HF_HUB_OFFLINE is set)."""


def bundled_dir() -> Path:
    """The folder of checkpoints that ship with the package (``checkpoints/`` in the repo)."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "checkpoints", here.parent / "checkpoints"):
        if candidate.is_dir():
            return candidate
    return here.parent / "checkpoints"


def bundled_names() -> list[str]:
    root = bundled_dir()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / CONFIG_NAME).is_file())


def is_repo_id(spec: str) -> bool:
    """True for ``"org/name"`` shaped strings the Hub accepts (no ``..``/``--``, no ``.git`` ending)."""
    return repo_id_problem(spec) is None


def repo_id_problem(spec: str) -> str | None:
    """Why ``spec`` is not a Hub repo id (``"org/name"``: letters, digits, ``-``, ``_``, ``.``), or None when it is one."""
    parts = spec.split("/")
    if spec.startswith((".", "/", "~")):
        return f"it starts with {spec[0]!r}, so it reads as a path, and no such folder exists"
    if len(parts) != 2:
        return (f"it has {len(parts)} parts separated by '/', a repo id has exactly two" if len(parts) > 2
                else "it has no '/' (a repo id is 'org/name')")
    if not all(parts):
        return f"its {'org' if not parts[0] else 'name'} part is empty"
    if ".." in spec or "--" in spec:
        return "it contains '..' or '--', which the Hub does not allow"
    if spec.endswith(".git"):
        return "it ends with '.git'"
    if len(spec) > 96:
        return f"it is {len(spec)} characters long, the Hub allows 96"
    if not _REPO_ID.match(spec):
        return "it holds characters other than letters, digits, '-', '_' and '.', or a part starts with '-', '_' or '.'"
    return None


def is_diffusers_config(config: dict[str, Any]) -> bool:
    """A config.json written by diffusers (it names its ``_class_name`` and ``_diffusers_version``)."""
    return "_class_name" in config or "_diffusers_version" in config


def pickle_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES) if folder.is_dir() else []


def is_dead_link(path: Path) -> bool:
    """A symlink that cannot be followed: a loop, or a link to something missing."""
    return path.is_symlink() and not path.exists()


def dead_link_reason(path: Path) -> str:
    try:
        path.resolve(strict=True)
    except RuntimeError:  # Python < 3.13 reports a loop so
        return "a symlink loop"
    except OSError as err:
        return "a symlink loop" if err.errno == errno.ELOOP else f"a symlink to {os.readlink(path)!r}, which does not exist"
    return "a symlink that cannot be followed"


def is_save_debris(name: str) -> bool:
    """What a save killed outright leaves in a folder: a hidden temporary file (`atomic_write_bytes`) or a
    staging folder (`staged_folder`); never part of a checkpoint, safe to delete."""
    return name.startswith(".staging-") or (name.startswith(".") and name.endswith(".tmp"))


def remove_save_debris(folder: Path) -> list[str]:
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


def _pickle_hint(path: Path) -> str:
    """' It is a pickle file ...' when ``path`` starts like one (torch.save's zip, or a raw pickle), else ''."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return ""
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        return (f" It is a pickle (torch.save) file, not safetensors: {PICKLE_REASON}; it was not unpickled. Convert it with "
                "safetensors.torch.save_file(state_dict, ...) from code you trust.")
    return ""


# ------------------------------------------------------------------ local folders
def check_folder(folder: str | Path) -> Path:
    """Raise `CheckpointError` unless ``folder`` is a checkpoint folder: it exists and holds config.json
    (each kind then checks its own weights file when it loads, `require_weights`)."""
    folder = Path(folder)
    if is_dead_link(folder):
        raise CheckpointError(f"checkpoint folder {str(folder)!r} is {dead_link_reason(folder)}; give the folder that holds "
                              f"{CONFIG_NAME} and the weights")
    if folder.is_file():
        raise CheckpointError(_file_spec_message(folder))
    if not folder.is_dir():
        raise CheckpointError(f"checkpoint folder {str(folder)!r} does not exist or is not a folder")
    if (folder / CONFIG_NAME).is_file():
        return folder
    if is_dead_link(folder / CONFIG_NAME):
        raise CheckpointError(f"{str(folder / CONFIG_NAME)!r} is {dead_link_reason(folder / CONFIG_NAME)}; it must be the "
                              "model's config file (save checkpoints with VAE.save_pretrained)")
    if (folder / PIPELINE_INDEX).is_file():
        raise CheckpointError(f"{str(folder)!r} is a diffusers pipeline; load its autoencoder with "
                              f"load_vae({str(folder)!r}, subfolder='vae')")
    require_weights(folder, WEIGHTS_NAME)  # a folder of pickles says so
    raise CheckpointError(f"checkpoint folder {str(folder)!r} has no {CONFIG_NAME}; it is needed to rebuild the model "
                          "(save checkpoints with VAE.save_pretrained)")


def require_weights(folder: Path, name: str) -> Path:
    """``folder / name``, or a `CheckpointError` that names what the folder offers instead (pickle files are refused)."""
    path = Path(folder) / name
    if path.is_file():
        return path
    if is_dead_link(path):
        raise CheckpointError(f"{str(path)!r} is {dead_link_reason(path)}; expected the weights file itself "
                              f"(checkpoint folder = {CONFIG_NAME} + {name})")
    pickles = pickle_files(Path(folder))
    if pickles:
        raise CheckpointError(
            f"checkpoint folder {str(folder)!r} offers only pickle weights ({', '.join(pickles)}); vae-augment "
            f"loads weights only from {name} because unpickling a file can run arbitrary code. "
            f"Convert it with safetensors.torch.save_file(state_dict, {name!r}) from code you trust."
        )
    raise CheckpointError(f"checkpoint folder {str(folder)!r} has no {name} (expected {CONFIG_NAME} + {name})")


def _file_spec_message(path: Path) -> str:
    """Why a file is not a checkpoint (a checkpoint is a folder), and what to give instead."""
    if path.suffix in PICKLE_SUFFIXES:
        return (f"{str(path)!r} is a pickle weights file; it is refused unread: {PICKLE_REASON}. A checkpoint is a folder of "
                f"{CONFIG_NAME} + {WEIGHTS_NAME}: convert it with safetensors.torch.save_file(state_dict, {WEIGHTS_NAME!r}) "
                "from code you trust")
    return (f"{str(path)!r} is a file; a checkpoint is a folder of {CONFIG_NAME} + {WEIGHTS_NAME} "
            f"(give the folder{' that holds it' if path.suffix == '.safetensors' else ''})")


# ------------------------------------------------------------------ reading
def read_config(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / CONFIG_NAME
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{str(path)!r} is not valid JSON ({err}); expected the model's constructor arguments") from None
    except OSError as err:  # missing, unreadable, a symlink loop
        raise CheckpointError(f"cannot read {str(path)!r} ({err.strerror or err}); expected the model's constructor arguments") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{str(path)!r} must hold a JSON object of constructor arguments, got {type(config).__name__}")
    return config


# the keys of metrics.json that vae-augment reads, and what each must hold (other keys are kept as they are)
METRICS_TYPES: dict[str, str] = {
    "dataset": "a string", "holdout": "a string", "command": "a string or null", "epochs": "an int >= 0",
    "train_images": "an int >= 0", "test": "an object of numbers", "history": "a list of objects", "training": "an object",
    "train_anomaly_percentiles": "a non-decreasing list of at least 2 finite numbers",
}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _metrics_value_ok(key: str, value: Any) -> bool:
    if key in ("dataset", "holdout"):
        return isinstance(value, str)
    if key == "command":
        return value is None or isinstance(value, str)
    if key in ("epochs", "train_images"):
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0
    if key == "test":
        return isinstance(value, dict) and all(_is_number(v) or v is None for v in value.values())
    if key == "history":
        return isinstance(value, list) and all(isinstance(v, dict) for v in value)
    if key == "training":
        return isinstance(value, dict)
    if key == "train_anomaly_percentiles":
        return (isinstance(value, list) and len(value) >= 2 and all(_is_number(v) and math.isfinite(v) for v in value)
                and all(a <= b for a, b in zip(value, value[1:])))
    return True


def read_metrics(folder: str | Path) -> dict[str, Any]:
    """A checkpoint's ``metrics.json`` (training figures), {} when it has none. A file that is not a JSON
    object, or whose known keys (`METRICS_TYPES`) hold the wrong type, is a `CheckpointError`: code that
    reads the figures later (anomaly percentiles, the fidelity warning) would otherwise fail or mislead."""
    path = Path(folder) / METRICS_NAME
    if is_dead_link(path):
        raise CheckpointError(f"{str(path)!r} is {dead_link_reason(path)}; remove it or make it the training figures file")
    if not path.is_file():
        return {}
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{str(path)!r} is not valid JSON ({err}); expected a JSON object of training figures "
                              "(or no metrics.json at all)") from None
    if not isinstance(metrics, dict):
        raise CheckpointError(f"{str(path)!r} must hold a JSON object of training figures, got {type(metrics).__name__}")
    wrong = [f"{key} must be {METRICS_TYPES[key]}, got {json.dumps(metrics[key])[:60]}" for key in METRICS_TYPES
             if key in metrics and not _metrics_value_ok(key, metrics[key])]
    if wrong:
        raise CheckpointError(f"{str(path)!r} holds figures of the wrong type: {'; '.join(wrong)}")
    return metrics


def read_latent_bank(folder: str | Path, latent_dim: int, device: str | torch.device = "cpu") -> torch.Tensor | None:
    """The optional ``latent_bank.safetensors`` ([N, latent_dim] training codes), or None."""
    path = Path(folder) / BANK_NAME
    if is_dead_link(path):
        raise CheckpointError(f"{str(path)!r} is {dead_link_reason(path)}; remove it or make it the latent bank file")
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            if "latent_bank" not in f.keys():
                raise CheckpointError(f"{str(path)!r} holds no tensor 'latent_bank' (found {sorted(f.keys())[:5]}); "
                                      f"expected [N, {latent_dim}] training codes")
            shape = tuple(f.get_slice("latent_bank").get_shape())
            if len(shape) != 2 or shape[1] != latent_dim:  # checked before reading: a wrong file may be large
                raise CheckpointError(f"{str(path)!r} must hold [N, {latent_dim}] codes, got {shape}")
            bank = f.get_tensor("latent_bank").to(device)
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{str(path)!r} is not a readable latent bank (truncated or corrupt?): {err}.{_pickle_hint(path)}") from None
    check_finite({"latent_bank": bank}, path)
    return bank.float()


def read_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """The name and shape of every tensor in a safetensors file, from its header alone (nothing is loaded),
    so that a config can be checked against the weights before a model is built from it."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{str(path)!r} is not a readable safetensors file (truncated or corrupt?): {err}."
                              f"{_pickle_hint(Path(path))}") from None


def check_shapes(expected: dict[str, tuple[int, ...]], found: dict[str, tuple[int, ...]], path: str | Path,
                 config_path: str | Path = CONFIG_NAME, hints: Sequence[str] = ()) -> None:
    """Raise `CheckpointError` unless the weights file ``path`` holds exactly the tensors ``expected``
    (name -> shape, what the config at ``config_path`` builds), naming what is missing, extra or of another
    shape; ``hints`` (the config keys that disagree with the weights, from the model kind) end the message."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    shapes = [f"{k}: file {tuple(found[k])} vs config {tuple(v)}" for k, v in expected.items() if k in found and tuple(found[k]) != tuple(v)]
    if missing or unexpected or shapes or hints:
        details = []
        if missing:
            details.append(f"missing weights {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            details.append(f"unexpected weights {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
        if shapes:
            details.append(f"shape mismatches {shapes[:3]}{' ...' if len(shapes) > 3 else ''}")
        details += hints
        raise CheckpointError(f"{config_path} does not match the weights in {str(path)!r}: " + "; ".join(details))


def check_finite(tensors: dict[str, torch.Tensor], path: str | Path) -> None:
    """Raise `CheckpointError` when a floating-point tensor of ``tensors`` (read from ``path``) holds NaN or
    infinity: such a model returns NaN images, which nothing downstream would notice."""
    bad = [name for name, t in tensors.items() if t.is_floating_point() and t.numel() and not bool(torch.isfinite(t).all())]
    if bad:
        raise CheckpointError(f"{str(path)!r} holds non-finite values (NaN or infinity) in {bad[:5]}{' ...' if len(bad) > 5 else ''}; "
                              "a model with such weights returns NaN images (was it saved after training diverged? retrain, "
                              "e.g. with a lower learning rate, or load an earlier checkpoint)")


def load_safetensors_into(model: torch.nn.Module, path: str | Path, strict: bool = True, device: str | torch.device = "cpu") -> None:
    """Load a safetensors file into ``model``; a corrupt file, a config/weights mismatch or non-finite
    weights raise `CheckpointError`."""
    try:
        state = load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{str(path)!r} is not a readable safetensors file (truncated or corrupt?): {err}."
                              f"{_pickle_hint(Path(path))}") from None
    if strict:
        check_shapes({k: tuple(v.shape) for k, v in model.state_dict().items()}, {k: tuple(v.shape) for k, v in state.items()}, path)
    check_finite(state, path)
    model.load_state_dict(state, strict=strict)
    model.to(device)


def read_tensors(path: str | Path, names: Sequence[str]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors ``names`` and the metadata of a safetensors file, or a `CheckpointError` that says what is wrong."""
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            missing = [name for name in names if name not in f.keys()]
            if missing:
                raise KeyError(f"no tensors {missing}")
            return {name: f.get_tensor(name) for name in names}, metadata
    except (SafetensorError, OSError, KeyError) as err:
        raise CheckpointError(f"{str(path)!r} is not a readable statistics file (expected the tensors {list(names)}): {err}") from None


def read_statistics(folder: str | Path) -> dict[str, Any]:
    """A diffusers folder's ``vae_augment.json``: ``latent_loc``/``latent_scale`` (``[C]`` float tensors) and saved
    options (``max_pixels``, ``tiling``); {} when the folder has none (a folder diffusers saved, never calibrated)."""
    path = Path(folder) / STATS_NAME
    if is_dead_link(path):
        raise CheckpointError(f"{str(path)!r} is {dead_link_reason(path)}; remove it or make it the latent statistics file")
    if not path.is_file():
        return {}
    try:
        stats = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(stats, dict):
            raise TypeError(f"expected a JSON object, got {type(stats).__name__}")
        loc = torch.tensor(stats["latent_loc"], dtype=torch.float32)
        scale = torch.tensor(stats["latent_scale"], dtype=torch.float32)
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{str(path)!r} is not a valid {STATS_NAME} ({type(err).__name__}: {err})") from None
    if loc.ndim != 1 or loc.shape != scale.shape or not bool((scale > 0).all()) or not bool(torch.isfinite(torch.cat([loc, scale])).all()):
        raise CheckpointError(f"{str(path)!r} must hold as many finite latent_loc values as positive finite latent_scale "
                              f"values, got {loc.numel()} and {scale.numel()}")
    max_pixels, tiling = stats.get("max_pixels"), stats.get("tiling", False)
    if max_pixels is not None and (isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1):
        raise CheckpointError(f"{str(path)!r}: max_pixels must be a positive int or null, got {json.dumps(max_pixels)}")
    if not isinstance(tiling, bool):
        raise CheckpointError(f"{str(path)!r}: tiling must be true or false, got {json.dumps(tiling)}")
    return {**stats, "latent_loc": loc, "latent_scale": scale}


def read_trainer_state(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and the ``trainer`` metadata of a training run's state file (see `vae_augment.training`)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads(f.metadata()["trainer"])
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as err:  # safetensors raises several kinds for truncated files
        raise CheckpointError(f"cannot resume from {str(path)!r} (truncated or corrupt?): {err}") from None
    return tensors, meta


# ------------------------------------------------------------------ writing
def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over ``path``."""
    path = Path(path)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
    # created 0666 minus the process's umask, by the kernel (mkstemp would make it 0600)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def staged_folder(folder: str | Path, remove: tuple[str, ...] = SAVED_FILES) -> Iterator[Path]:
    """Save a checkpoint's files as one unit.

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
    stage = Path(tempfile.mkdtemp(dir=folder, prefix=".staging-"))
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
        done: list[str] = []
        try:
            for path in staged:
                os.replace(path, folder / path.name)
                done.append(path.name)
        except BaseException:
            for name in done:  # put the previous files back (or remove files that are new)
                if (backups / name).exists():
                    os.replace(backups / name, folder / name)
                else:
                    (folder / name).unlink(missing_ok=True)
            raise
        names = {p.name for p in staged}
        for pattern in remove:
            for old in folder.glob(pattern):
                if old.name not in names and old.is_file():
                    old.unlink()
        _fsync_folder(folder)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


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


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def atomic_save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    atomic_write_bytes(path, safetensors.torch.save({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, metadata=metadata))


def write_statistics(folder: str | Path, latent_loc: torch.Tensor, latent_scale: torch.Tensor, **options: Any) -> None:
    """Write a diffusers folder's ``vae_augment.json`` (see `read_statistics`)."""
    atomic_write_json(Path(folder) / STATS_NAME, {"latent_loc": latent_loc.flatten().tolist(),
                                                  "latent_scale": latent_scale.flatten().tolist(), **options})


def model_card(config: dict[str, Any], metrics: dict[str, Any], repo_id: str | None = None) -> str:
    """A model card (README.md) with the dataset, the training command and the measured figures."""
    lines = [
        "---",
        "library_name: vae-augment",
        "tags:",
        "- vae",
        "- data-augmentation",
        "- image",
        "---",
        "",
        f"# {repo_id or 'vae-augment checkpoint'}",
        "",
        "A convolutional variational autoencoder for data augmentation with "
        "[vae-augment](https://github.com/vae-augment/vae-augment).",
        "",
        "```python",
        "from vae_augment import load_vae",
        f"vae = load_vae({(repo_id or 'path/to/this/folder')!r})",
        "```",
        "",
        "## Training",
        "",
        f"- dataset: {metrics.get('dataset', 'unknown')}",
    ]
    if metrics.get("command"):
        lines += ["- command:", "", "```bash", metrics["command"], "```", ""]
    if metrics.get("prior_command"):  # fit-prior's output: the mixture prior was fitted afterwards, with this command
        lines += ["- prior fitted with:", "", "```bash", metrics["prior_command"], "```", ""]
    lines += ["", "## Config", "", "```json", json.dumps(config, indent=2, sort_keys=True), "```", ""]
    test = metrics.get("test")
    if test:
        lines += ["## Test figures", "", "| metric | value |", "| --- | --- |"]
        for key, value in test.items():
            lines.append(f"| {key} | {value:.4g} |" if isinstance(value, float) else f"| {key} | {value} |")
        lines.append("")
    return "\n".join(lines)


# ------------------------------------------------------------------ the Hub
WAYS_OUT = ("Ways out: load a local folder instead (load_vae('path/to/folder'), which needs no network); run once "
            "where the Hub can be reached, which fills the cache; or set HF_HUB_OFFLINE=1 with a Hugging Face cache "
            "(HF_HOME) that already holds the repo")
_REACHABLE: dict[str, tuple[float, bool]] = {}  # endpoint -> (when probed, reachable), so one probe serves a few calls
_PROBE_TTL_S = 30.0


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the Hub endpoint (``HF_ENDPOINT``) opens within ``timeout`` seconds.

    huggingface_hub retries a host it cannot reach five times with back-off (about 23 s) before it
    falls back to its cache; one probe instead makes an unreachable Hub final at once. True under
    ``HF_HUB_OFFLINE``, which huggingface_hub handles itself. The answer is kept for 30 s.
    """
    if constants.HF_HUB_OFFLINE:
        return True
    endpoint = constants.ENDPOINT
    when, reachable = _REACHABLE.get(endpoint, (0.0, False))
    if time.monotonic() - when < _PROBE_TTL_S:
        return reachable
    url = urlsplit(endpoint)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout=timeout).close()
        reachable = True
    except OSError:  # refused, no route, no DNS: no network
        reachable = False
    _REACHABLE[endpoint] = (time.monotonic(), reachable)
    return reachable


def _is_connection_error(err: BaseException) -> bool:
    """A failure to reach the server at all (refused, no route, no DNS, timed out), from any HTTP client."""
    return isinstance(err, OSError) or any(cls.__name__ in ("ConnectError", "ConnectTimeout", "NetworkError", "TimeoutException")
                                           for cls in type(err).__mro__)


def download_file(repo_id: str, filename: str, revision: str | None = None, **kwargs) -> Path:
    """hf_hub_download with errors that say what went wrong (offline, missing repo, missing file).

    An unreachable Hub is found with one probe (`hub_reachable`) and the file then looked up in the
    cache only, so no network means an answer within seconds, with the ways out."""
    where = f"{repo_id!r}" + (f" at revision {revision!r}" if revision else "")
    probed_offline = not kwargs.get("local_files_only") and not hub_reachable()
    if probed_offline:
        kwargs = {**kwargs, "local_files_only": True}
    try:
        return Path(hf_hub_download(repo_id=repo_id, filename=filename, revision=revision, **kwargs))
    except (OfflineModeIsEnabled, LocalEntryNotFoundError) as err:
        if constants.HF_HUB_OFFLINE:
            reason = "HF_HUB_OFFLINE is set and the file is not in the local Hugging Face cache"
        elif probed_offline or not kwargs.get("local_files_only"):
            reason = f"the Hub ({constants.ENDPOINT}) cannot be reached (no network?) and the file is not in the local cache"
        else:
            reason = "local_files_only is set and the file is not in the local Hugging Face cache"
        raise OfflineError(f"cannot fetch {filename} of Hub repo {where}: {reason}. {WAYS_OUT}. ({type(err).__name__})") from None
    except GatedRepoError:
        raise CheckpointError(f"Hub repo {where} is gated: accept its terms on the Hub and log in with `hf auth login`") from None
    except RepositoryNotFoundError:
        raise CheckpointError(f"Hub repo {where} was not found (or is private: log in with `hf auth login`)") from None
    except RevisionNotFoundError:
        raise CheckpointError(f"Hub repo {repo_id!r} has no revision {revision!r}") from None
    except EntryNotFoundError:
        hint = ""
        if filename in (WEIGHTS_NAME, DIFFUSERS_WEIGHTS):
            hint = " vae-augment loads weights only from safetensors (pickle files such as pytorch_model.bin can run code when loaded)."
        raise MissingFileError(f"Hub repo {where} has no {filename}.{hint}") from None
    except HfHubHTTPError as err:
        raise CheckpointError(f"downloading {filename} of Hub repo {where} failed: {err}") from None


def fetch_files(repo_id: str, required: Sequence[str], optional: Sequence[str] = (), revision: str | None = None,
                **kwargs) -> Path:
    """Download ``required`` files (in this order; a missing one raises `MissingFileError`) and whichever
    of ``optional`` exist into the huggingface_hub cache; returns the snapshot folder that holds them."""
    paths = [download_file(repo_id, name, revision=revision, **kwargs) for name in required]
    for name in optional:
        try:
            download_file(repo_id, name, revision=revision, **kwargs)
        except CheckpointError:
            pass
    if len({p.parent for p in paths}) > 1:  # all from one snapshot; guard against a moved cache
        raise CheckpointError(f"{' and '.join(required)} of {repo_id!r} resolved to different snapshots")
    return paths[0].parent


def resolve(spec: str | os.PathLike, fetch: Callable[[str], Path]) -> Path:
    """A bundled name, local folder or Hub repo id -> a local checkpoint folder; a repo id is passed
    to ``fetch`` (which downloads the files of the kind it expects)."""
    text = os.fspath(spec)
    if not isinstance(text, str) or not text:
        raise CheckpointError(f"a checkpoint spec must be a non-empty name, folder or repo id, got {spec!r}")
    if text in bundled_names():
        return check_folder(bundled_dir() / text)
    path = Path(text).expanduser()
    if path.exists() or path.is_symlink():  # a symlink loop is named as one by check_folder
        return check_folder(path)
    problem = repo_id_problem(text)
    if problem is None:
        return fetch(text)
    names = ", ".join(repr(n) for n in bundled_names()) or "none installed"
    raise CheckpointError(
        f"cannot find checkpoint {text!r}: it is not a bundled name ({names}), an existing folder, "
        f"or a Hugging Face Hub repo id of the form 'org/name' ({problem})"
    )


def push(checkpoint: str | Path, repo_id: str, private: bool | None = None, token: str | None = None, revision: str | None = None) -> str:
    """Upload config.json, model.safetensors, metrics.json and a model card of a local checkpoint."""
    folder = check_folder(checkpoint)
    if is_diffusers_config(read_config(folder)):
        raise CheckpointError(f"{str(folder)!r} is a diffusers autoencoder, not a vae-augment checkpoint; share it with diffusers' "
                         "own push_to_hub (and copy vae_augment.json, its calibrated latent statistics, along)")
    require_weights(folder, WEIGHTS_NAME)
    if not is_repo_id(repo_id):
        raise CheckpointError(f"repo_id must look like 'org/name', got {repo_id!r}")
    config, metrics = read_config(folder), read_metrics(folder)
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id=repo_id, private=private, exist_ok=True)
    except Exception as err:  # huggingface_hub's HTTP client raises its own transport errors (httpx's ConnectError, ...)
        if not _is_connection_error(err):
            raise
        raise OfflineError(f"cannot push {str(folder)!r} to Hub repo {repo_id!r}: the Hub ({constants.ENDPOINT}) cannot be "
                           f"reached (no network? {type(err).__name__}); push from a machine with a network (the folder is "
                           "all it needs)") from None
    with tempfile.TemporaryDirectory() as tmp:
        staging = Path(tmp)
        for name in (CONFIG_NAME, WEIGHTS_NAME, METRICS_NAME, BANK_NAME):
            if (folder / name).is_file():
                (staging / name).symlink_to((folder / name).resolve())
        (staging / CARD_NAME).write_text(model_card(config, metrics, repo_id), encoding="utf-8")
        info = api.upload_folder(repo_id=repo_id, folder_path=staging, revision=revision, commit_message="Upload vae-augment checkpoint")
    return str(getattr(info, "commit_url", info))
