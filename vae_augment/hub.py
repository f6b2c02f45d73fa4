"""Moving checkpoint files to and from the Hugging Face Hub: download with clear errors, push with a card.

Downloads go through huggingface_hub into its usual cache (``HF_HOME``), honouring ``HF_ENDPOINT``
and ``HF_HUB_OFFLINE``; an unreachable Hub is found with one probe (`hub_reachable`) and answered
within seconds. `download_checkpoint` is the one way a Hub repo's checkpoint is fetched: config.json
first, which names the model kind, then the files that kind needs; a repo that is a diffusers
pipeline or offers only pickle weights is explained here, once. Which kind a config is, is decided
by the caller (the loader's kind table, or a model class for its own ``from_pretrained``); nothing
here knows the model classes.
"""

from __future__ import annotations

import socket
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence
from urllib.parse import urlsplit

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

from .card import model_card
from .checkpoint import (
    BANK_NAME,
    CARD_NAME,
    CONFIG_NAME,
    DIFFUSERS_WEIGHTS,
    METRICS_NAME,
    PIPELINE_INDEX,
    WEIGHTS_NAME,
    CheckpointError,
    check_folder,
    is_diffusers_config,
    is_repo_id,
    read_config,
    read_metrics,
    require_weights,
)


class MissingFileError(CheckpointError):
    """A Hub repo (reachable) that does not have the file asked for."""


class OfflineError(CheckpointError):
    """A Hub file that is not in the local cache while the Hub cannot be reached (or HF_HUB_OFFLINE is set)."""


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


class CheckpointKind(Protocol):
    """What `download_checkpoint` needs of a model kind (`vae_augment.models.Autoencoder` provides it)."""

    checkpoint_files: tuple[str, ...]
    optional_files: tuple[str, ...]

    def check_config(self, config: dict[str, Any], where: str) -> None: ...


def download_checkpoint(repo_id: str, kind_of: Callable[[dict[str, Any], str], CheckpointKind], revision: str | None = None,
                        **kwargs) -> Path:
    """Download a Hub repo's checkpoint into the huggingface_hub cache; returns the snapshot folder.

    config.json comes first: ``kind_of(config, where)`` names the model kind (or raises), whose
    ``check_config`` refuses what it cannot load before any weights are downloaded, and whose
    ``checkpoint_files`` and ``optional_files`` are then fetched. A repo without config.json is
    explained: a diffusers pipeline (``subfolder="vae"`` picks its autoencoder), or weights only in
    pickle files. ``kwargs`` go to `download_file` (``subfolder``, ``local_files_only``, ...)."""
    where = f"Hub repo {repo_id!r}"
    try:
        config_path = download_file(repo_id, CONFIG_NAME, revision=revision, **kwargs)
    except MissingFileError as missing:
        if not kwargs.get("subfolder"):
            try:
                download_file(repo_id, PIPELINE_INDEX, revision=revision, **kwargs)
            except CheckpointError:
                pass
            else:
                raise CheckpointError(f"{where} is a diffusers pipeline; load its autoencoder with "
                                      f"load_vae({repo_id!r}, subfolder='vae')") from None
        download_file(repo_id, WEIGHTS_NAME, revision=revision, **kwargs)  # no weights either: the error says safetensors only
        raise missing from None
    config = read_config(config_path.parent)
    kind = kind_of(config, where)
    kind.check_config(config, where)
    return fetch_files(repo_id, kind.checkpoint_files, kind.optional_files, revision=revision, **kwargs)


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
