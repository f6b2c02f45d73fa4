"""The run folder `train` writes: which folders it may write into, and the trainer state it resumes from.

``trainer_state.safetensors`` holds the model and optimizer tensors plus the config, epoch and history
in its metadata; it is written atomically, and first at every epoch, so a run killed at any point
resumes from the last finished epoch (see `vae_augment.training`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from . import atomic, checkpoint
from .models import VAE

STATE_NAME = "trainer_state.safetensors"


def save_state(path: Path, vae: VAE, optimizer: torch.optim.Optimizer, meta: dict[str, Any]) -> None:
    """Write the trainer state (model and optimizer tensors; ``meta`` and the optimizer's param groups as JSON metadata) atomically."""
    tensors = {f"model.{k}": v for k, v in vae.state_dict().items()}
    opt = optimizer.state_dict()
    for index, state in opt["state"].items():
        for key, value in state.items():
            tensors[f"optim.{index}.{key}"] = value if torch.is_tensor(value) else torch.tensor(value)
    meta = dict(meta, param_groups=opt["param_groups"])
    atomic.atomic_save_tensors(path, tensors, metadata={"trainer": json.dumps(meta)})


def check_out_folder(out: Path, resume: bool) -> None:
    """Refuse an output folder training must not write into: a file, a dead symlink, or a folder that holds
    files but no training run (``trainer_state.safetensors``); with ``resume``, one without a run, and without
    it, one with a run. Leftovers of an interrupted save (`atomic.is_save_debris`) count as nothing."""
    if checkpoint.is_dead_link(out):
        raise FileExistsError(f"output folder {str(out)!r} is a symlink that cannot be followed "
                              f"({checkpoint.dead_link_reason(out)}); choose another output folder")
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"output folder {str(out)!r} is a file, not a folder; choose another output folder (nothing was written)")
    entries = sorted(out.iterdir()) if out.is_dir() else []
    found = [p.name + ("/" if p.is_dir() else "") for p in entries if not atomic.is_save_debris(p.name)]
    leftovers = len(entries) - len(found)
    state = out / STATE_NAME
    if state.is_file():
        if not resume:
            raise FileExistsError(f"{str(out)!r} already holds a training run ({STATE_NAME}); pass resume=True (--resume) to "
                                  "continue it, or choose another output folder (nothing was overwritten)")
        return
    listing = ", ".join(found[:8]) + (f" and {len(found) - 8} more" if len(found) > 8 else "")
    if resume:
        why = (f"the folder holds files but no training run ({listing})" if found
               else "the folder holds only the leftovers of a save interrupted before the first epoch's state was "
                    "written, which a fresh start clears" if leftovers
               else "the folder is empty or does not exist")
        raise FileNotFoundError(f"cannot resume: {str(state)!r} does not exist ({why}; nothing was written); "
                                "start without --resume" + (" in an empty or new folder" if found else ""))
    if found:
        raise FileExistsError(f"output folder {str(out)!r} holds files but no training run ({listing}); training writes only "
                              f"into an empty or new folder, or continues its own run ({STATE_NAME}) with --resume, so that "
                              "no one's files are overwritten: choose another output folder or empty this one (nothing was written)")


def load_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any], vae: VAE, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Put a saved trainer state into ``vae`` and ``optimizer``; returns its meta without the param groups."""
    vae.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta.pop("param_groups")})
    return meta


def resume_state(out: Path, config: dict[str, Any], vae: VAE, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Load the run in ``out`` into ``vae`` and ``optimizer`` and return its meta (epoch, history, command, config),
    after checking that it was started with the same model ``config``."""
    tensors, saved = checkpoint.read_trainer_state(out / STATE_NAME)
    if "config" in saved:
        saved_config = saved["config"]
    elif (out / checkpoint.CONFIG_NAME).is_file():  # a state file written before the config went into it
        saved_config = checkpoint.read_config(out)
    else:
        raise FileNotFoundError(f"cannot resume: {str(out)!r} holds {STATE_NAME} without the run's config (neither in it "
                                f"nor in {checkpoint.CONFIG_NAME}); start again in a new folder")
    if saved_config != config:
        raise ValueError(f"cannot resume: the run in {str(out)!r} was started with {saved_config}, now {config}")
    return {**load_state(tensors, saved, vae, optimizer), "config": config}
