"""Checkpoints: save/load round trip, bad checkpoint folders, the Hub download path, push.

The Hub is tested for real: a server on 127.0.0.1 serves checkpoints in the Hub's URL layout
(``HEAD``/``GET /{repo_id}/resolve/{revision}/{filename}``) and huggingface_hub downloads from it
through ``HF_ENDPOINT``. huggingface_hub reads ``HF_ENDPOINT``, ``HF_HUB_OFFLINE`` and ``HF_HOME``
when it is imported, so each download runs in a fresh Python process.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import unquote, urlsplit

import pytest
import torch
from conftest import TINY, free_port, make_images
from huggingface_hub import HfApi
from safetensors.torch import load_file, save_file

from vae_augment import VAE, CheckpointError, load_vae
from vae_augment import checkpoint, hub


# ------------------------------------------------------------------ save / load round trip
@pytest.mark.parametrize(
    "config",
    [
        {"channels": 1, "image_size": 28},
        {"channels": 3, "image_size": [20, 36], "likelihood": "gaussian", "beta": 0.5},
    ],
    ids=["gray-bernoulli", "rgb-gaussian-non-square"],
)
def test_save_load_round_trip_is_exact(tmp_path, config, assert_same_state):
    torch.manual_seed(0)
    vae = VAE(**config, **TINY).eval()
    vae.latent_loc.normal_()
    vae.latent_scale.uniform_(0.5, 2.0)
    vae.save_pretrained(tmp_path / "ckpt")

    assert json.loads((tmp_path / "ckpt" / "config.json").read_text()) == {
        "channels": 1, "image_size": 28, "likelihood": "bernoulli", "beta": 1.0, "prior_components": 0, **TINY, **config
    }
    for loaded in (VAE.from_pretrained(tmp_path / "ckpt"), load_vae(str(tmp_path / "ckpt"), device="cpu")):
        assert not loaded.training
        assert_same_state(loaded.state_dict(), vae.state_dict())
        assert (loaded.channels, loaded.image_size, loaded.likelihood, loaded.beta) == (
            vae.channels, vae.image_size, vae.likelihood, vae.beta
        )
        x = make_images(3, vae.channels, vae.image_size)
        z = torch.randn(3, 4)
        assert torch.equal(loaded.decode(z), vae.decode(z))
        assert torch.equal(loaded.encode(x).mean, vae.encode(x).mean)
        g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
        assert torch.equal(loaded.elbo(x, generator=g1), vae.elbo(x, generator=g2))


def test_load_vae_passes_a_model_through(saved_vae):
    vae, _ = saved_vae
    assert load_vae(vae) is vae


def test_save_keeps_an_existing_model_card(saved_vae):
    vae, folder = saved_vae
    (folder / "README.md").write_text("my own card")
    vae.save_pretrained(folder)
    assert (folder / "README.md").read_text() == "my own card"


# ------------------------------------------------------------------ bad checkpoint folders
def test_folder_without_config(saved_vae):
    _, folder = saved_vae
    (folder / "config.json").unlink()
    with pytest.raises(CheckpointError, match=r"checkpoint folder '.*checkpoint' has no config.json; it is needed to rebuild the model"):
        load_vae(folder)


def test_folder_without_weights(saved_vae):
    _, folder = saved_vae
    (folder / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"has no model.safetensors \(expected config.json \+ model.safetensors\)"):
        load_vae(folder)


@pytest.mark.parametrize("with_config", [False, True], ids=["bin-only", "config-and-bin"])
@pytest.mark.parametrize("pickle_name", ["pytorch_model.bin", "model.pt", "weights.pkl"])
def test_folder_with_only_pickle_weights_is_refused_unread(saved_vae, monkeypatch, with_config, pickle_name):
    vae, folder = saved_vae
    torch.save(vae.state_dict(), folder / pickle_name)
    (folder / "model.safetensors").unlink()
    if not with_config:
        (folder / "config.json").unlink()

    def no_unpickling(*args, **kwargs):
        raise AssertionError("a pickle file was loaded")

    monkeypatch.setattr(torch, "load", no_unpickling)
    refusal = rf"offers only pickle weights \({re.escape(pickle_name)}\); .*only from model.safetensors because unpickling a file can run"
    with pytest.raises(CheckpointError, match=refusal):
        load_vae(folder)


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda data: data[: len(data) // 2],
        lambda data: data[:5],
        lambda data: b"",
        lambda data: os.urandom(len(data)),
        lambda data: data[:8] + b"{not json" + data[17:],
    ],
    ids=["truncated", "truncated-header", "empty", "random-bytes", "bad-header"],
)
def test_truncated_or_corrupt_safetensors(saved_vae, corrupt):
    _, folder = saved_vae
    weights = folder / "model.safetensors"
    broken = corrupt(weights.read_bytes())
    weights.write_bytes(broken)
    with pytest.raises(CheckpointError, match=r"'.*model.safetensors' is not a readable safetensors file \(truncated or corrupt\?\)"):
        load_vae(folder)
    assert weights.read_bytes() == broken  # the loader never writes


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"latent_dim": 5}, (r"config.json does not match the weights in '.*model.safetensors': shape mismatches "
                             r"\[.*'encoder.fc.3.weight: file \(8, 16\) vs config \(10, 16\)'")),
        ({"widths": [4, 8, 8]}, r"config.json does not match the weights .*missing weights \[.*'encoder.convs.4.bias'"),
        ({"widths": [4]}, r"config.json does not match the weights .*unexpected weights \["),
        ({"likelihood": "gaussian"}, r"config.json does not match the weights .*missing weights \['log_scale'\]"),
        ({"channels": 3}, r"config.json does not match the weights .*shape mismatches"),
        ({"image_size": 32}, r"config.json does not match the weights .*shape mismatches"),
    ],
)
def test_config_that_does_not_match_the_weights(saved_vae, change, message):
    _, folder = saved_vae
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(CheckpointError, match=message):
        load_vae(folder)


def test_weights_with_an_extra_tensor_are_refused(saved_vae):
    vae, folder = saved_vae
    save_file({**vae.state_dict(), "extra.weight": torch.zeros(2)}, str(folder / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"unexpected weights \['extra.weight'\]"):
        load_vae(folder)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", r"config.json' is not valid JSON .*expected the model's constructor arguments"),
        ("[1, 2]", r"config.json' must hold a JSON object of constructor arguments, got list"),
        (json.dumps({"channels": 1, "depth": 3}), r"has unknown keys \['depth'\]; accepted keys are \['beta', 'channels'"),
        (json.dumps({"channels": 2}), r"does not describe a valid VAE: channels must be 1 or 3, got 2"),
    ],
)
def test_bad_config_files(saved_vae, text, message):
    _, folder = saved_vae
    (folder / "config.json").write_text(text)
    with pytest.raises(CheckpointError, match=message):
        load_vae(folder)


def test_unknown_spec(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    unknown = r"cannot find checkpoint 'no_such_checkpoint': it is not a bundled name .*an existing folder, or a Hugging Face Hub repo id"
    with pytest.raises(CheckpointError, match=unknown):
        load_vae("no_such_checkpoint")
    with pytest.raises(CheckpointError, match=r"checkpoint folder '.*' does not exist or is not a folder"):
        checkpoint.check_folder(tmp_path / "missing")


# ------------------------------------------------------------------ the Hub, served from 127.0.0.1
MAIN_COMMIT = hashlib.sha1(b"commit on main").hexdigest()  # 40 hex digits, like a git commit sha
V1_COMMIT = hashlib.sha1(b"commit tagged v1").hexdigest()


class FakeHub:
    """Repos as {repo_id: {revision: (commit, {filename: bytes})}}; revisions include the commit shas themselves."""

    def __init__(self):
        self.repos: dict[str, dict[str, tuple[str, dict[str, bytes]]]] = {}
        self.requests: list[tuple[str, str]] = []

    def add(self, repo_id: str, revision: str, commit: str, files: dict[str, bytes]) -> None:
        self.repos.setdefault(repo_id, {})[revision] = (commit, files)
        self.repos[repo_id][commit] = (commit, files)


def add_diffusers_repos(fake: FakeHub, root: Path) -> None:
    """org/sd-vae (a tiny random AutoencoderKL at the repo root), org/pipeline (a tiny AutoencoderTiny in
    vae/ of a pipeline repo) and org/taesd-pickle (config + pickle weights only)."""
    import importlib.util

    if importlib.util.find_spec("diffusers") is None:  # the optional extra: those repos' tests skip
        return
    from conftest import tiny_kl, tiny_taesd

    tiny_kl().save_pretrained(root / "sd-vae")
    tiny_taesd().save_pretrained(root / "taesd")
    weights = "diffusion_pytorch_model.safetensors"
    fake.add("org/sd-vae", "main", "f" * 40, {name: (root / "sd-vae" / name).read_bytes() for name in ("config.json", weights)})
    fake.add("org/pipeline", "main", "a" * 40, {"model_index.json": b"{}", **{f"vae/{name}": (root / "taesd" / name).read_bytes()
                                                                             for name in ("config.json", weights)}})
    fake.add("org/sd-unet", "main", "9" * 40, {"config.json": json.dumps({"_class_name": "UNet2DConditionModel",
                                                                         "_diffusers_version": "0.30.0"}).encode(),
                                               weights: b"not fetched"})
    torch.save({}, root / "diffusion_pytorch_model.bin")
    fake.add("org/taesd-pickle", "main", "b" * 40, {"config.json": (root / "taesd" / "config.json").read_bytes(),
                                                    "diffusion_pytorch_model.bin": (root / "diffusion_pytorch_model.bin").read_bytes()})


def make_handler(fake: FakeHub):
    route = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<revision>[^/]+)/(?P<filename>.+)$")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep the test output clean
            pass

        def _reply(self, status: int, headers: dict[str, str], body: bytes = b"") -> None:
            self.send_response(status)
            for key, value in {**headers, "Content-Length": str(len(body))}.items():
                self.send_header(key, value)
            self.end_headers()
            if self.command == "GET":
                self.wfile.write(body)

        def _serve(self) -> None:
            path = unquote(urlsplit(self.path).path)
            fake.requests.append((self.command, path))
            match = route.match(path)
            if not match:
                return self._reply(404, {"X-Error-Message": "unknown endpoint"})
            revisions = fake.repos.get(match["repo"])
            if revisions is None:  # the Hub answers 401 for unknown (or private) repos without a token
                return self._reply(401, {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"})
            if match["revision"] not in revisions:
                return self._reply(404, {"X-Error-Code": "RevisionNotFound", "X-Error-Message": "Invalid rev id"})
            commit, files = revisions[match["revision"]]
            body = files.get(match["filename"])
            if body is None:
                return self._reply(404, {"X-Error-Code": "EntryNotFound", "X-Error-Message": "Entry not found", "X-Repo-Commit": commit})
            etag = '"' + hashlib.sha256(body).hexdigest() + '"'
            self._reply(200, {"X-Repo-Commit": commit, "ETag": etag, "Content-Type": "application/octet-stream"}, body)

        do_HEAD = do_GET = _serve

    return Handler


@pytest.fixture(scope="module")
def hub_server(tmp_path_factory):
    """Serves org/name (main and v1, two different checkpoints), org/pickle-only, org/pickle-with-config, org/no-config, org/copy."""
    root = tmp_path_factory.mktemp("served")
    checkpoints = {}
    for seed, revision in ((0, "main"), (1, "v1")):
        torch.manual_seed(seed)
        vae = VAE(**TINY)
        vae.latent_scale.fill_(2.0 + seed)
        vae.save_pretrained(root / revision)
        (root / revision / "metrics.json").write_text(json.dumps({"dataset": "tiny", "test": {"neg_elbo_nats": 100.0 + seed}}))
        checkpoints[revision] = root / revision

    def read(folder: Path, names) -> dict[str, bytes]:
        return {name: (folder / name).read_bytes() for name in names}

    files = ("config.json", "model.safetensors", "metrics.json", "README.md")
    fake = FakeHub()
    fake.add("org/name", "main", MAIN_COMMIT, read(checkpoints["main"], files))
    fake.add("org/name", "v1", V1_COMMIT, read(checkpoints["v1"], files))
    pickled = root / "pytorch_model.bin"
    torch.save(VAE(**TINY).state_dict(), pickled)
    fake.add("org/pickle-only", "main", "c" * 40, {"pytorch_model.bin": pickled.read_bytes()})
    fake.add("org/pickle-with-config", "main", "d" * 40,
             {"pytorch_model.bin": pickled.read_bytes(), "config.json": (checkpoints["main"] / "config.json").read_bytes()})
    fake.add("org/copy", "main", MAIN_COMMIT, read(checkpoints["main"], files))
    fake.add("org/no-config", "main", "e" * 40, {"model.safetensors": (checkpoints["main"] / "model.safetensors").read_bytes()})
    add_diffusers_repos(fake, root)

    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(fake))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield SimpleNamespace(url=f"http://127.0.0.1:{server.server_address[1]}", fake=fake, checkpoints=checkpoints)
    server.shutdown()
    server.server_close()


# Loads each (spec, revision) in a fresh process; writes the loaded weights to a file for the parent to compare.
LOADER = r"""
import json, sys
if sys.argv[2] == "no-backoff":
    import time
    time.sleep = lambda seconds: None  # huggingface_hub retries an unreachable host for ~23 s before giving up
from safetensors.torch import save_file
from vae_augment import CheckpointError, load_vae

results = []
for spec, revision, dump, kwargs in json.loads(sys.argv[1]):
    try:
        vae = load_vae(spec, revision=revision, **kwargs)
    except CheckpointError as err:
        results.append({"error": str(err)})
    else:
        save_file({k: v.contiguous() for k, v in vae.state_dict().items()}, dump)
        results.append({"loaded": dump, "metrics": vae.metrics, "kind": type(vae).__name__})
print("RESULTS " + json.dumps(results))
"""


def start_loader(workdir: Path, loads: list, *, endpoint: str, hf_home: Path, offline: bool = False,
                 backoff: bool = True) -> subprocess.Popen:
    """Start a fresh Python process that runs LOADER on ``loads`` [(spec, revision), ...] with the given Hub settings."""
    workdir.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_") and k.lower() not in
           ("http_proxy", "https_proxy", "all_proxy", "no_proxy")}
    env.update(HF_ENDPOINT=endpoint, HF_HOME=str(hf_home), HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_DISABLE_PROGRESS_BARS="1",
               HF_HUB_DISABLE_IMPLICIT_TOKEN="1", NO_PROXY="127.0.0.1,localhost", OMP_NUM_THREADS="1")
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    specs = [[spec, revision, str(workdir / f"loaded_{i}.safetensors"), kwargs[0] if kwargs else {}]
             for i, (spec, revision, *kwargs) in enumerate(loads)]
    process = subprocess.Popen([sys.executable, "-c", LOADER, json.dumps(specs), "backoff" if backoff else "no-backoff"],
                               env=env, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return process


def finish_loader(process: subprocess.Popen) -> list[dict]:
    try:
        stdout, stderr = process.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    lines = [line for line in stdout.splitlines() if line.startswith("RESULTS ")]
    assert process.returncode == 0 and lines, f"loader failed:\n{stdout}\n{stderr}"
    return json.loads(lines[-1][len("RESULTS "):])


ONLINE_LOADS = {
    "main": ("org/name", None),
    "v1": ("org/name", "v1"),
    "pinned": ("org/name", MAIN_COMMIT),
    "missing_repo": ("org/missing", None),
    "missing_revision": ("org/name", "v2"),
    "pickle_only": ("org/pickle-only", None),
    "pickle_with_config": ("org/pickle-with-config", None),
    "no_config": ("org/no-config", None),
    "sd_vae": ("org/sd-vae", None),
    "pipeline_vae": ("org/pipeline", None, {"subfolder": "vae"}),
    "diffusers_pickle": ("org/taesd-pickle", None),
    "diffusers_unet": ("org/sd-unet", None),
    "pipeline_without_subfolder": ("org/pipeline", None),
}


@pytest.fixture(scope="module")
def hub_runs(hub_server, tmp_path_factory):
    """Runs the loader processes (importing torch dominates their time, so the independent ones run side by side):

    - online: every spec of ONLINE_LOADS, from the server into a fresh HF_HOME;
    - offline_empty: HF_HUB_OFFLINE=1 and an empty HF_HOME, asking for org/copy (served, so only the offline
      setting can make it fail);
    - unreachable: HF_ENDPOINT on a port nobody listens on;
    - then offline_cached: HF_HUB_OFFLINE=1 with the HF_HOME the online run filled.
    """
    work = tmp_path_factory.mktemp("hub_runs")
    unreachable = f"http://127.0.0.1:{free_port()}"  # a port nobody listens on
    processes = {
        "online": start_loader(work / "online", list(ONLINE_LOADS.values()), endpoint=hub_server.url, hf_home=work / "online" / "hf"),
        "offline_empty": start_loader(work / "offline_empty", [("org/copy", None)], endpoint=hub_server.url,
                                      hf_home=work / "offline_empty" / "hf", offline=True),
        "unreachable": start_loader(work / "unreachable", [("org/name", None)], endpoint=unreachable,
                                    hf_home=work / "unreachable" / "hf", backoff=False),
    }
    runs = {name: finish_loader(process) for name, process in processes.items()}
    online = SimpleNamespace(hf_home=work / "online" / "hf", **dict(zip(ONLINE_LOADS, runs["online"])))
    requests_before = len(hub_server.fake.requests)
    offline_cached = finish_loader(start_loader(work / "offline_cached", [("org/name", None), ("org/name", "v1"), ("org/sd-vae", None)],
                                                endpoint=hub_server.url, hf_home=online.hf_home, offline=True))
    return SimpleNamespace(online=online, offline_cached=offline_cached, offline_cached_requests=hub_server.fake.requests[requests_before:],
                           offline_empty=runs["offline_empty"][0], unreachable=runs["unreachable"][0], unreachable_url=unreachable)


def served_weights(hub_server, revision: str) -> dict:
    return load_file(hub_server.checkpoints[revision] / "model.safetensors")


def test_hub_download_gives_the_served_weights_at_each_revision(hub_runs, hub_server, assert_same_state):
    online = hub_runs.online
    assert not torch.equal(served_weights(hub_server, "main")["decoder.fc.0.weight"], served_weights(hub_server, "v1")["decoder.fc.0.weight"])
    assert_same_state(load_file(online.main["loaded"]), served_weights(hub_server, "main"))
    assert_same_state(load_file(online.v1["loaded"]), served_weights(hub_server, "v1"))
    assert_same_state(load_file(online.pinned["loaded"]), served_weights(hub_server, "main"))
    assert online.main["metrics"]["test"]["neg_elbo_nats"] == 100.0
    assert online.v1["metrics"]["test"]["neg_elbo_nats"] == 101.0
    assert ("GET", "/org/name/resolve/v1/model.safetensors") in hub_server.fake.requests


def test_hub_download_lands_in_the_usual_cache_layout(hub_runs, hub_server):
    repo_cache = hub_runs.online.hf_home / "hub" / "models--org--name"
    for commit, revision in ((MAIN_COMMIT, "main"), (V1_COMMIT, "v1")):
        snapshot = repo_cache / "snapshots" / commit
        for name in ("model.safetensors", "config.json", "metrics.json"):
            assert (snapshot / name).read_bytes() == (hub_server.checkpoints[revision] / name).read_bytes()
        assert (repo_cache / "refs" / revision).read_text() == commit
    blob = hashlib.sha256((hub_server.checkpoints["main"] / "model.safetensors").read_bytes()).hexdigest()
    assert (repo_cache / "blobs" / blob).is_file()


def test_hub_errors_name_the_repo_and_the_reason(hub_runs, hub_server):
    online = hub_runs.online
    assert online.missing_repo["error"] == "Hub repo 'org/missing' was not found (or is private: log in with `hf auth login`)"
    assert online.missing_revision["error"] == "Hub repo 'org/name' has no revision 'v2'"
    assert online.no_config["error"] == "Hub repo 'org/no-config' has no config.json."
    for result in (online.pickle_only, online.pickle_with_config):
        assert re.search(r"^Hub repo 'org/pickle-[a-z-]+' has no model.safetensors\. vae-augment loads weights only from safetensors "
                         r"\(pickle files such as pytorch_model.bin can run code when loaded\)", result["error"]), result
    assert not [r for r in hub_server.fake.requests if r[1].endswith("pytorch_model.bin")]  # never even asked for


def test_hub_offline_loads_from_the_prefilled_cache_without_requests(hub_runs, hub_server, assert_same_state):
    main, v1, sd_vae = hub_runs.offline_cached
    if "org/sd-vae" in hub_server.fake.repos:
        assert sd_vae.get("kind") == "DiffusersVAE", sd_vae
    assert_same_state(load_file(main["loaded"]), served_weights(hub_server, "main"))
    assert_same_state(load_file(v1["loaded"]), served_weights(hub_server, "v1"))
    assert hub_runs.offline_cached_requests == []


def test_hub_offline_with_an_empty_cache_says_why(hub_runs, hub_server):
    # the first file the loader needs is config.json (it says which kind of model the repo holds)
    assert re.search(r"^cannot fetch config.json of Hub repo 'org/copy': HF_HUB_OFFLINE is set and the file is not in "
                     r"the local Hugging Face cache", hub_runs.offline_empty["error"]), hub_runs.offline_empty
    assert not [r for r in hub_server.fake.requests if "/org/copy/" in r[1]]


def test_hub_unreachable_says_why(hub_runs):
    assert re.search(rf"^cannot fetch config.json of Hub repo 'org/name': the Hub \({re.escape(hub_runs.unreachable_url)}\) "
                     r"cannot be reached \(no network\?\) and the file is not in the local cache", hub_runs.unreachable["error"]), \
        hub_runs.unreachable


# ------------------------------------------------------------------ push
@pytest.fixture
def fake_upload(monkeypatch):
    """Replaces HfApi.create_repo / upload_folder; records the calls and the staged files' contents."""
    calls: dict = {"create_repo": [], "upload_folder": []}

    def create_repo(self, repo_id, **kwargs):
        calls["create_repo"].append({"repo_id": repo_id, **kwargs})
        return SimpleNamespace(repo_id=repo_id)

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        files = {p.name: p.read_bytes() for p in Path(folder_path).iterdir()}
        calls["upload_folder"].append({"repo_id": repo_id, "files": files, **kwargs})
        return SimpleNamespace(commit_url=f"https://huggingface.co/{repo_id}/commit/{'e' * 40}")

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    return calls


@pytest.fixture
def finished_run(saved_vae):
    """A saved checkpoint with the metrics.json that training writes."""
    _, folder = saved_vae
    metrics = {"dataset": "MNIST", "command": "vae-augment train --dataset MNIST --root ../shared/data --epochs 5",
               "test": {"neg_elbo_nats": 93.2345678, "neg_elbo_bits_per_dim": 0.1715, "iw_nll_nats": 89.5, "iw_k": 64}}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


def test_push_uploads_config_weights_and_a_model_card(finished_run, fake_upload):
    url = hub.push(finished_run, "org/name", private=True)
    assert url == f"https://huggingface.co/org/name/commit/{'e' * 40}"
    assert fake_upload["create_repo"] == [{"repo_id": "org/name", "private": True, "exist_ok": True}]
    (upload,) = fake_upload["upload_folder"]
    assert upload["repo_id"] == "org/name"
    files = upload["files"]
    assert set(files) == {"config.json", "model.safetensors", "metrics.json", "README.md"}
    for name in ("config.json", "model.safetensors", "metrics.json"):
        assert files[name] == (finished_run / name).read_bytes()
    card = files["README.md"].decode()
    assert card.startswith("---\nlibrary_name: vae-augment\n")
    assert "vae-augment train --dataset MNIST --root ../shared/data --epochs 5" in card
    assert "- dataset: MNIST" in card
    assert "| neg_elbo_nats | 93.23 |" in card and "| iw_k | 64 |" in card
    assert "load_vae('org/name')" in card


def test_push_to_hub_from_a_model(saved_vae, fake_upload):
    vae, _ = saved_vae
    vae.metrics = {"dataset": "tiny", "command": "vae-augment train --dataset tiny", "test": {"neg_elbo_nats": 120.5}}
    vae.push_to_hub("org/from-model")
    (upload,) = fake_upload["upload_folder"]
    files = upload["files"]
    assert {"config.json", "model.safetensors", "metrics.json", "README.md"} <= set(files)
    assert json.loads(files["config.json"]) == {"channels": 1, "image_size": 28, "likelihood": "bernoulli", "beta": 1.0, "prior_components": 0, **TINY}
    assert json.loads(files["metrics.json"]) == vae.metrics
    assert "vae-augment train --dataset tiny" in files["README.md"].decode()


def test_push_refuses_bad_input_before_contacting_the_hub(finished_run, tmp_path, fake_upload):
    with pytest.raises(ValueError, match=r"repo_id must look like 'org/name', got 'not a repo'"):
        hub.push(finished_run, "not a repo")
    with pytest.raises(CheckpointError, match="does not exist or is not a folder"):
        hub.push(tmp_path / "missing", "org/name")
    assert fake_upload == {"create_repo": [], "upload_folder": []}


def test_hub_serves_diffusers_autoencoders(hub_runs, hub_server):
    """A diffusers AutoencoderKL repo and the vae/ subfolder of a pipeline repo load as DiffusersVAE with
    the served weights; a diffusers repo with pickle weights only is refused without asking for them."""
    pytest.importorskip("diffusers")
    online = hub_runs.online
    for result, folder in ((online.sd_vae, "sd-vae"), (online.pipeline_vae, "taesd")):
        assert result.get("kind") == "DiffusersVAE", result
        served = load_file(hub_server.checkpoints["main"].parent / folder / "diffusion_pytorch_model.safetensors")
        loaded = {k.removeprefix("autoencoder."): v for k, v in load_file(result["loaded"]).items() if k.startswith("autoencoder.")}
        assert loaded.keys() == served.keys() and all(torch.equal(loaded[k], served[k]) for k in served)
    assert online.diffusers_pickle["error"] == (
        "Hub repo 'org/taesd-pickle' has no diffusion_pytorch_model.safetensors. vae-augment loads weights only from "
        "safetensors (pickle files such as pytorch_model.bin can run code when loaded).")
    assert online.diffusers_unet["error"] == ("Hub repo 'org/sd-unet' holds a diffusers UNet2DConditionModel; vae-augment uses "
                                              "diffusers AutoencoderKL and AutoencoderTiny (for a full pipeline, pass subfolder='vae')")
    assert online.pipeline_without_subfolder["error"] == ("Hub repo 'org/pipeline' is a diffusers pipeline; load its autoencoder "
                                                          "with load_vae('org/pipeline', subfolder='vae')")
    assert not [r for r in hub_server.fake.requests if r[1].endswith(".bin") or r[1].startswith("/org/sd-unet/resolve/main/diff")]


# ------------------------------------------------------------------ an unreachable Hub fails fast and says what to do
@pytest.fixture
def closed_hub(monkeypatch):
    """HF_ENDPOINT on a loopback port nobody listens on (the Hub switched off), not offline mode."""
    from huggingface_hub import constants

    port = free_port()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setattr(hub, "_REACHABLE", {})
    return f"http://127.0.0.1:{port}"


def test_an_unreachable_hub_is_final_at_once_with_the_ways_out(closed_hub, tmp_path):
    start = time.monotonic()
    with pytest.raises(hub.OfflineError) as caught:
        load_vae("org/name", cache_dir=str(tmp_path / "cache"))
    assert time.monotonic() - start < 5  # one probe, no five retries with back-off (about 23 s)
    message = str(caught.value)
    assert f"cannot fetch config.json of Hub repo 'org/name': the Hub ({closed_hub}) cannot be reached" in message
    assert "load a local folder instead" in message and "run once where the Hub can be reached" in message
    assert "HF_HUB_OFFLINE=1" in message


def test_push_to_an_unreachable_hub_says_what_to_do(closed_hub, finished_run):
    start = time.monotonic()
    with pytest.raises(hub.OfflineError, match=r"cannot push .* the Hub \(http://127.0.0.1:\d+\) cannot be reached.*"
                                                      r"push from a machine with a network"):
        hub.push(finished_run, "org/name")
    assert time.monotonic() - start < 5
