"""The checkpoint folder format of both model kinds: its file names, and reading them with validation.

A vae-augment checkpoint is a folder with ``config.json`` (every constructor argument of the model)
and ``model.safetensors``; optionally ``latent_bank.safetensors`` (training codes for the
"neighbour" mode), ``metrics.json`` and ``README.md`` (the model card, `vae_augment.card`). A
diffusers autoencoder folder is diffusers' own ``config.json`` + ``diffusion_pytorch_model.safetensors``
plus ``vae_augment.json`` (calibrated latent statistics and options). This module names those files,
reads each of them, refusing with a `CheckpointError` that says what is wrong and what is accepted,
and turns a spec (bundled name, folder, Hub repo id) into a folder (`resolve`). Writing is atomic
(`vae_augment.atomic`); downloads and uploads are `vae_augment.hub`'s. Which model class a folder
holds is decided by the loader (`vae_augment.loader`); nothing here knows the model classes.

Weights are read from safetensors only: pickle files can run code when loaded.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from . import atomic

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
def write_statistics(folder: str | Path, latent_loc: torch.Tensor, latent_scale: torch.Tensor, **options: Any) -> None:
    """Write a diffusers folder's ``vae_augment.json`` (see `read_statistics`)."""
    atomic.atomic_write_json(Path(folder) / STATS_NAME, {"latent_loc": latent_loc.flatten().tolist(),
                                                         "latent_scale": latent_scale.flatten().tolist(), **options})


# ------------------------------------------------------------------ which folder a spec names
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
