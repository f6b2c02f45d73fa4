"""The loader: a bundled name, a local folder, a Hub repo id or a model object -> a model.

`MODEL_KINDS` is the kind table, the only place that decides which model class a checkpoint
folder, a Hub repo or a model object of another library becomes: each class says whether it
claims a config.json (`Autoencoder.claims`), which files to download (``checkpoint_files``,
``optional_files``) and how to build itself from a folder (`Autoencoder.from_folder`). A new kind
of model is a new class in `vae_augment.models` and one entry here, before `VAE`. The files are
found by `vae_augment.checkpoint.resolve` and fetched from the Hub by `vae_augment.hub`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from .checkpoint import CheckpointError, check_folder, read_config
from .checkpoint import resolve as resolve_spec
from .hub import download_checkpoint
from .models import Autoencoder, DiffusersVAE, VAE

# asked in this order; the conv VAE last, as it reads every config no other kind claims (a new kind goes before it)
MODEL_KINDS: tuple[type[Autoencoder], ...] = (DiffusersVAE, VAE)
BACKBONE_OPTIONS = ("max_pixels", "tiling", "max_batch")  # options of a model kind, passed to its loader


def kind_of(config: dict[str, Any], where: str) -> type[Autoencoder]:
    """The model class that reads a checkpoint whose config.json holds ``config``."""
    for cls in MODEL_KINDS:
        if cls.claims(config):
            return cls
    raise CheckpointError(f"{where} holds no model vae-augment can load (accepted: {', '.join(c.__name__ for c in MODEL_KINDS)})")


def fetch_checkpoint(repo_id: str, revision: str | None = None, **kwargs) -> Path:
    """Download the files of a Hub repo's checkpoint (its kind decided from its config.json by `kind_of`) into
    the usual huggingface_hub cache; returns the snapshot folder that holds them. ``subfolder="vae"`` picks
    the autoencoder of a full diffusers pipeline repo."""
    return download_checkpoint(repo_id, kind_of, revision=revision, **kwargs)


def resolve(spec: str | os.PathLike, revision: str | None = None, **kwargs) -> Path:
    """A bundled name, local folder or Hub repo id -> a local checkpoint folder (downloading if needed)."""
    return resolve_spec(spec, lambda repo_id: fetch_checkpoint(repo_id, revision=revision, **kwargs))


def load_vae(spec: "str | os.PathLike | Autoencoder | Any", revision: str | None = None, device: str | torch.device | None = None,
             dtype: torch.dtype | None = None, **kwargs) -> Autoencoder:
    """Load a model from a bundled name (``"mnist"``), a local folder, or a Hub repo id (``"org/name"``).

    Hub files are downloaded with huggingface_hub into its usual cache (``HF_HOME``), honouring
    ``HF_ENDPOINT`` and ``HF_HUB_OFFLINE``. The model is returned in eval mode on ``device``
    (default: cpu). Passing a model returns it unchanged (moved to ``device`` if given).

    A diffusers ``AutoencoderKL`` or ``AutoencoderTiny`` (a folder saved by diffusers, or a Hub repo
    such as ``"stabilityai/sd-vae-ft-mse"``; ``subfolder="vae"`` for a pipeline repo) comes back as a
    `DiffusersVAE` in ``dtype`` (default float16 on CUDA, else float32); it needs
    ``pip install 'vae-augment[diffusers]'``; ``max_pixels``, ``tiling`` and ``max_batch`` are passed
    to it. A diffusers model object is wrapped as it is.
    """
    options = {key: kwargs.pop(key) for key in BACKBONE_OPTIONS if key in kwargs}
    if isinstance(spec, Autoencoder):
        return spec if device is None else spec.to(device)
    for cls in MODEL_KINDS:
        if cls.wraps(spec):  # a model object of another library
            return cls.from_module(spec, device=device, dtype=dtype, **options)
    if not isinstance(spec, (str, os.PathLike)):
        raise TypeError("expected a vae-augment model, a diffusers AutoencoderKL/AutoencoderTiny, or a checkpoint "
                        f"name/folder/Hub id, got {type(spec).__name__}")
    strict = kwargs.pop("strict", True)
    subfolder = kwargs.get("subfolder")
    local = Path(os.fspath(spec)).expanduser()
    name = os.fspath(spec)
    if subfolder and local.is_dir():  # a local pipeline folder: its autoencoder lives in a subfolder
        kwargs.pop("subfolder")
        folder = check_folder(local / subfolder)
        name = str(local / subfolder)  # a spec that loads it again by itself
    else:
        folder = resolve(spec, revision=revision, **kwargs)
    config = read_config(folder)
    model = kind_of(config, repr(str(folder))).from_folder(folder, config, device=device, dtype=dtype, strict=strict, **options)
    model.name_or_path = name
    # what else it takes to load it again from name_or_path (serialized by AlbuVAEAugment)
    model.load_options = {k: v for k, v in {"revision": revision, "subfolder": kwargs.get("subfolder")}.items() if v}
    return model


def load_trainable(spec: "str | os.PathLike | VAE") -> VAE:
    """The conv VAE that ``train(init=spec)`` starts from: a `VAE`, or a bundled name, folder or Hub repo id of one
    (loaded on cpu); any other kind of model is refused with a clear error."""
    model = load_vae(spec, device="cpu")
    if not isinstance(model, VAE):
        raise TypeError(f"init must be a conv VAE trained by vae-augment (the kind train() trains), got a {model.kind} "
                        f"({type(model).__name__})")
    return model
