"""How the conv `VAE` reads and writes its checkpoint folder and shares it on the Hub.

`CheckpointMixin` gives `VAE` what the loader's kind table asks (`claims`, `check_config`,
`from_folder`, the files to download) and what huggingface_hub's ``PyTorchModelHubMixin`` users call
(`from_pretrained`, `save_pretrained`, `push_to_hub`). It is kept apart from the model's arithmetic
and uses only the model's constructor, state dict, ``latent_bank`` and ``metrics``.

`from_pretrained` cannot call the loader (`vae_augment.loader` sits above the models and imports
them); it calls the same two steps the loader does, `checkpoint.resolve` and
`hub.download_checkpoint`, with this class as the only kind it accepts.
"""

from __future__ import annotations

import inspect
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from .. import atomic, checkpoint, hub
from ..card import model_card
from .conv_nets import MAX_STAGES


class CheckpointMixin:
    """Persistence of the conv `VAE`: config.json (every constructor argument) + model.safetensors, with
    the optional latent bank, metrics.json and model card (`vae_augment.checkpoint` names the files)."""

    checkpoint_files = (checkpoint.WEIGHTS_NAME, checkpoint.CONFIG_NAME)  # weights first: a pickle-only repo is refused with the reason
    optional_files = (checkpoint.METRICS_NAME, checkpoint.BANK_NAME)

    @classmethod
    def claims(cls, config: dict[str, Any]) -> bool:
        """Whether a folder's config.json is one of this kind (the loader's kind table asks). The conv VAE reads
        any config that is not a diffusers one, so that a config with wrong keys is explained (unknown keys) rather
        than refused as unknown; it is therefore the last entry of the kind table."""
        return not checkpoint.is_diffusers_config(config)

    @classmethod
    def check_config(cls, config: dict[str, Any], where: str) -> None:
        """Refuse a diffusers config (at ``where``) before any weights are read or downloaded: `load_vae` wraps
        those, this class reads only its own."""
        if not cls.claims(config):
            raise checkpoint.CheckpointError(f"{where} holds a diffusers {config.get('_class_name', 'model')}, not a "
                                             "vae-augment VAE; load it with vae_augment.load_vae, which wraps diffusers autoencoders")

    @classmethod
    def from_folder(cls, folder: str | os.PathLike, config: dict[str, Any] | None = None, *, device: str | torch.device | None = None,
                    strict: bool = True, **unused):
        """Rebuild a VAE from a local checkpoint folder's ``config.json`` and load ``model.safetensors`` strictly."""
        folder = Path(folder)
        config = checkpoint.read_config(folder) if config is None else config
        cls.check_config(config, repr(str(folder)))
        config_path = folder / checkpoint.CONFIG_NAME
        known = set(inspect.signature(cls.__init__).parameters) - {"self"}
        unknown = sorted(set(config) - known)
        if unknown:
            raise checkpoint.CheckpointError(f"{config_path} has unknown keys {unknown}; accepted keys are {sorted(known)}")
        # Everything is checked before memory is allocated: the config's values on a model built on the meta
        # device (shapes only), then those shapes against the weights file's header.
        try:
            with torch.device("meta"):
                skeleton = cls(**config)
        except (TypeError, ValueError) as err:
            raise checkpoint.CheckpointError(f"{config_path} does not describe a valid VAE: {err}") from None
        weights = checkpoint.require_weights(folder, checkpoint.WEIGHTS_NAME)
        found = checkpoint.read_shapes(weights)
        if strict:
            checkpoint.check_shapes({k: tuple(v.shape) for k, v in skeleton.state_dict().items()}, found, weights, config_path,
                                    hints=cls._size_hints(config, found))
        metrics = checkpoint.read_metrics(folder)
        model = cls(**config)
        model.latent_bank = checkpoint.read_latent_bank(folder, model.latent_dim)
        checkpoint.load_safetensors_into(model, weights, strict=strict, device=str(device or "cpu"))
        model.metrics = metrics
        model.name_or_path = str(folder)
        return model.eval()

    @classmethod
    def _size_hints(cls, config: dict[str, Any], found: dict[str, tuple[int, ...]]) -> list[str]:
        """The config keys that disagree with the weights (read from the tensor shapes ``found``), each with the
        value the weights imply and the shapes that say so."""
        defaults = {k: p.default for k, p in inspect.signature(cls.__init__).parameters.items() if k != "self"}
        implied: dict[str, tuple[Any, str]] = {}  # key -> (value the weights imply, the tensor that says so)
        if len(found.get("latent_loc", ())) == 1:
            implied["latent_dim"] = (found["latent_loc"][0], f"latent_loc {found['latent_loc']}")
        if len(found.get("encoder.fc.1.weight", ())) == 2:
            implied["hidden"] = (found["encoder.fc.1.weight"][0], f"encoder.fc.1.weight {found['encoder.fc.1.weight']}")
        if len(found.get("encoder.convs.0.weight", ())) == 4:
            implied["channels"] = (found["encoder.convs.0.weight"][1], f"encoder.convs.0.weight {found['encoder.convs.0.weight']}")
        stages = [found[f"encoder.convs.{2 * i}.weight"] for i in range(MAX_STAGES + 1) if f"encoder.convs.{2 * i}.weight" in found]
        if stages and all(len(shape) == 4 for shape in stages):
            implied["widths"] = ([shape[0] for shape in stages], f"the {len(stages)} encoder.convs.*.weight tensors")
        if len(found.get("prior_logits", ())) == 1:
            implied["prior_components"] = (found["prior_logits"][0], f"prior_logits {found['prior_logits']}")
        elif "encoder.fc.1.weight" in found:  # a full weights file without the mixture: the standard normal prior
            implied["prior_components"] = (0, "no prior_logits")
        implied["likelihood"] = ("gaussian" if "log_scale" in found else "bernoulli", "log_scale " + ("present" if "log_scale" in found else "absent"))
        wrong = []
        for key, (value, evidence) in implied.items():
            given = config.get(key, defaults[key])
            if (list(given) if key == "widths" and isinstance(given, (list, tuple)) else given) != value:
                said = f"says {key}={given!r}" if key in config else f"has no {key} (so the default {given!r})"
                wrong.append(f"{key}: config.json {said}, the weights hold {key}={value!r} ({evidence})")
        return wrong

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *, revision: str | None = None,
                        map_location: str | torch.device = "cpu", strict: bool = True, **download_kwargs):
        """Rebuild a VAE from ``config.json`` and load ``model.safetensors`` strictly.

        ``pretrained_model_name_or_path`` is a bundled name (``"mnist"``), a local folder or a Hub
        repo id (``"org/name"``, at ``revision``). Pickle weights are never read. `vae_augment.load_vae`
        loads every kind of model; this loads vae-augment VAEs only.
        """
        def fetch(repo_id: str) -> Path:
            return hub.download_checkpoint(repo_id, lambda config, where: cls, revision=revision, **download_kwargs)

        model = cls.from_folder(checkpoint.resolve(pretrained_model_name_or_path, fetch), device=map_location, strict=strict)
        model.name_or_path = os.fspath(pretrained_model_name_or_path)
        return model

    def save_pretrained(self, save_directory: str | os.PathLike, *, config: dict | None = None, refresh_card: bool = False,
                        **kwargs) -> None:
        """Write ``config.json`` and ``model.safetensors``, the latent bank and ``metrics.json`` where the
        model has them, and a model card if the folder has none (or ``refresh_card``).

        The files are written as one unit (`atomic.staged_folder`): an interrupted save leaves the
        previous checkpoint intact, never new weights beside an old config; a latent bank, metrics or
        diffusers files left from an earlier save are removed when this model has none.
        """
        folder = Path(save_directory)
        config = dict(config or self._hub_mixin_config)
        with atomic.staged_folder(folder, remove=checkpoint.SAVED_FILES) as stage:
            atomic.atomic_save_tensors(stage / checkpoint.WEIGHTS_NAME, self.state_dict(), metadata={"format": "pt"})
            atomic.atomic_write_json(stage / checkpoint.CONFIG_NAME, config)
            if self.latent_bank is not None:
                # float16 halves the file; that precision (~1e-3 of the codes' spread) is ample for finding neighbours
                atomic.atomic_save_tensors(stage / checkpoint.BANK_NAME, {"latent_bank": self.latent_bank.half()})
            if self.metrics:
                atomic.atomic_write_json(stage / checkpoint.METRICS_NAME, self.metrics)
            if refresh_card or not (folder / checkpoint.CARD_NAME).exists():
                atomic.atomic_write_text(stage / checkpoint.CARD_NAME, model_card(config, self.metrics))

    def push_to_hub(self, repo_id: str, *, private: bool | None = None, token: str | None = None, revision: str | None = None) -> str:
        """Save to a temporary folder and upload it (config, weights, metrics, model card) to ``repo_id``."""
        with tempfile.TemporaryDirectory() as tmp:
            self.save_pretrained(tmp)
            return hub.push(tmp, repo_id, private=private, token=token, revision=revision)
