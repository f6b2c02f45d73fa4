"""Faults in checkpoints (issue 13): configs that disagree with their weights or are absurd, non-finite
weights, side files of the wrong type, missing files, truncated or corrupt safetensors, pickles offered as
weights, symlink loops, malformed Hub ids, and the command line's one-line errors for each."""

from __future__ import annotations

import json
import os
import pickle
import re
import resource
from pathlib import Path

import pytest
import torch
from conftest import TINY, make_images, one_error_line, write_pngs
from huggingface_hub import HfApi
from safetensors.torch import load_file, save_file

from vae_augment import VAE, CheckpointError, VAEAugment, checkpoint, hub, load_vae
from vae_augment.cli import main


TIME_LIMIT_S = 20  # per case (conftest.py's time_limit)
pytestmark = pytest.mark.usefixtures("time_limit")


@pytest.fixture
def folder(tmp_path) -> Path:
    """A tiny saved VAE (hidden 256, as the CLI's default: a wrong latent_dim in its config would allocate
    latent_dim x 768 weights) with a latent bank and the metrics.json training writes."""
    torch.manual_seed(0)
    vae = VAE(**{**TINY, "hidden": 256})
    vae.latent_bank = torch.randn(10, TINY["latent_dim"])
    vae.metrics = {"dataset": "tiny", "epochs": 1, "test": {"reconstruction_r2": 0.9, "neg_elbo_nats": 80.0},
                   "train_anomaly_percentiles": [float(i) for i in range(101)], "history": [{"epoch": 1}]}
    vae.save_pretrained(tmp_path / "checkpoint")
    return tmp_path / "checkpoint"


def edit_config(folder: Path, **change) -> None:
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **change}))


def peak_memory_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


# ------------------------------------------------------------------ 4. config sizes against the weights, before allocating
@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"latent_dim": 1_000_000}, r"config.json does not describe a valid VAE: latent_dim and hidden must be positive ints "
                                    r"of at most 65536; latent_dim is 1000000"),
        ({"latent_dim": 10**9}, r"latent_dim is 1000000000"),
        ({"hidden": 10**9}, r"hidden is 1000000000"),
        ({"latent_dim": 5000}, r"config.json does not match the weights in '.*model.safetensors': .*latent_dim: config.json "
                               r"says latent_dim=5000, the weights hold latent_dim=4 \(latent_loc \(4,\)\)"),
        ({"hidden": 60000}, r"hidden: config.json says hidden=60000, the weights hold hidden=256 \(encoder.fc.1.weight \(256, 392\)\)"),
        ({"widths": [4, 4000]}, r"widths: config.json says widths=\[4, 4000\], the weights hold widths=\[4, 8\]"),
        ({"widths": [4096] * 9, "image_size": 512}, r"more than the 1,073,741,824 allowed"),
        ({"latent_dim": 0}, r"latent_dim is 0"),
        ({"latent_dim": -3}, r"latent_dim is -3"),
        ({"latent_dim": 4.5}, r"latent_dim is 4.5"),
        ({"latent_dim": "4"}, r"latent_dim is '4'"),
        ({"latent_dim": True}, r"latent_dim is True"),
        ({"widths": "4,8"}, r"widths must be a non-empty list of positive ints .*got '4,8'"),
        ({"widths": [4, 8.5]}, r"widths must be a non-empty list of positive ints .*got \[4, 8.5\]"),
        ({"image_size": "28"}, r"image_size must be an int or \[height, width\] with sides in \[8, 512\], got '28'"),
        ({"image_size": 10**6}, r"image_size must be .* got 1000000"),
        ({"beta": "high"}, r"beta must be >= 0, got 'high'"),
        ({"channels": 1.0}, r"channels must be 1 or 3, got 1.0"),
    ],
)
def test_a_config_that_is_absurd_or_disagrees_with_the_weights_fails_before_allocating(folder, change, message):
    edit_config(folder, **change)
    before = peak_memory_mb()
    with pytest.raises(CheckpointError, match=message):
        load_vae(folder)
    assert peak_memory_mb() - before < 300  # a latent_dim of 10^6 alone would be ~3 GB of weights


def test_a_config_missing_a_key_is_read_with_the_default_and_named(folder):
    config = json.loads((folder / "config.json").read_text())
    del config["latent_dim"]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"latent_dim: config.json has no latent_dim \(so the default 16\), the weights hold latent_dim=4"):
        load_vae(folder)


def test_vae_refuses_absurd_sizes_when_made():
    for kwargs, message in [({"latent_dim": 10**9}, "latent_dim is 1000000000"), ({"hidden": 10**6}, "hidden is 1000000"),
                            ({"widths": [8] * 10}, "at most 9 of them"),
                            ({"widths": [4096, 4096], "image_size": 512, "hidden": 60000}, "GiB in float32")]:
        with pytest.raises(ValueError, match=message):
            VAE(**{**TINY, **kwargs})


# ------------------------------------------------------------------ 7. non-finite weights
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused_at_load(folder, value):
    state = load_file(folder / "model.safetensors")
    state["decoder.fc.0.weight"][0, 0] = value
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"'.*model.safetensors' holds non-finite values \(NaN or infinity\) in "
                                              r"\['decoder.fc.0.weight'\]; a model with such weights returns NaN images"):
        load_vae(folder)


def test_a_non_finite_latent_bank_is_refused(folder):
    save_file({"latent_bank": torch.full((3, TINY["latent_dim"]), float("nan")).half()}, str(folder / "latent_bank.safetensors"))
    with pytest.raises(CheckpointError, match=r"'.*latent_bank.safetensors' holds non-finite values .* in \['latent_bank'\]"):
        load_vae(folder)


def test_finite_weights_still_give_finite_images(folder):
    images = VAEAugment(load_vae(folder), strength=0.5, residual=False)(make_images(2))
    assert torch.isfinite(images).all()


def test_non_finite_diffusers_weights_are_refused(tmp_path):
    from conftest import tiny_kl
    from vae_augment import DiffusersVAE

    autoencoder = tiny_kl()
    with torch.no_grad():
        autoencoder.decoder.conv_out.weight[0, 0, 0, 0] = float("nan")
    DiffusersVAE(autoencoder).save_pretrained(tmp_path / "kl")
    with pytest.raises(CheckpointError, match=r"'.*diffusion_pytorch_model.safetensors' holds non-finite values .*decoder.conv_out.weight"):
        load_vae(tmp_path / "kl")


# ------------------------------------------------------------------ 8. side files of the wrong type
@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[1, 2, 3]", r"metrics.json' must hold a JSON object of training figures, got list"),
        ("{not json", r"metrics.json' is not valid JSON .*expected a JSON object of training figures"),
        ('"figures"', r"must hold a JSON object of training figures, got str"),
        (json.dumps({"train_anomaly_percentiles": "high"}), r"train_anomaly_percentiles must be a non-decreasing list of at least 2 "
                                                            r"finite numbers, got \"high\""),
        (json.dumps({"train_anomaly_percentiles": [3.0, 1.0]}), r"train_anomaly_percentiles must be a non-decreasing list"),
        (json.dumps({"test": [0.9]}), r"test must be an object of numbers, got \[0.9\]"),
        (json.dumps({"test": {"reconstruction_r2": "good"}}), r"test must be an object of numbers"),
        (json.dumps({"epochs": "one"}), r"epochs must be an int >= 0, got \"one\""),
        (json.dumps({"history": {"epoch": 1}}), r"history must be a list of objects"),
    ],
)
def test_metrics_json_of_the_wrong_type_is_refused_at_load(folder, text, message):
    (folder / "metrics.json").write_text(text)
    with pytest.raises(CheckpointError, match=message):
        load_vae(folder)


def test_metrics_json_without_optional_keys_loads_and_says_what_is_missing(folder):
    (folder / "metrics.json").write_text(json.dumps({"dataset": "mine", "my_own_key": [1, 2]}))
    vae = load_vae(folder)
    assert vae.metrics["my_own_key"] == [1, 2]
    with pytest.raises(ValueError, match="has no train_anomaly_percentiles in its metrics"):
        vae.anomaly_percentile(torch.zeros(2))


def test_valid_metrics_give_percentiles(folder):
    percentiles = load_vae(folder).anomaly_percentile(torch.tensor([-1.0, 50.0, 500.0]))
    assert percentiles.tolist() == [0.0, 50.0, 100.0]


@pytest.mark.parametrize(
    ("stats", "message"),
    [
        ([1, 2], r"vae_augment.json' is not a valid vae_augment.json \(TypeError: expected a JSON object, got list\)"),
        ({"latent_loc": [0.0]}, r"is not a valid vae_augment.json \(KeyError: 'latent_scale'\)"),
        ({"latent_loc": ["a"], "latent_scale": [1.0]}, r"is not a valid vae_augment.json \((ValueError|TypeError)"),
        ({"latent_loc": [float("nan")], "latent_scale": [1.0]}, r"must hold as many finite latent_loc values as positive finite latent_scale"),
        ({"latent_loc": [0.0], "latent_scale": [0.0]}, r"positive finite latent_scale"),
        ({"latent_loc": [0.0], "latent_scale": [1.0], "max_pixels": "big"}, r"max_pixels must be a positive int or null, got \"big\""),
        ({"latent_loc": [0.0], "latent_scale": [1.0], "tiling": "yes"}, r"tiling must be true or false, got \"yes\""),
    ],
)
def test_latent_statistics_of_the_wrong_type_are_refused(tmp_path, stats, message):
    (tmp_path / "vae_augment.json").write_text(json.dumps(stats))
    with pytest.raises(CheckpointError, match=message):
        checkpoint.read_statistics(tmp_path)


@pytest.mark.parametrize(
    ("tensors", "message"),
    [
        ({"codes": torch.zeros(3, 4)}, r"holds no tensor 'latent_bank' \(found \['codes'\]\); expected \[N, 4\] training codes"),
        ({"latent_bank": torch.zeros(3, 5)}, r"must hold \[N, 4\] codes, got \(3, 5\)"),
        ({"latent_bank": torch.zeros(12)}, r"must hold \[N, 4\] codes, got \(12,\)"),
    ],
)
def test_a_latent_bank_of_the_wrong_shape_or_name_is_refused(folder, tensors, message):
    save_file(tensors, str(folder / "latent_bank.safetensors"))
    with pytest.raises(CheckpointError, match=message):
        load_vae(folder)


# ------------------------------------------------------------------ missing, truncated and corrupt files
@pytest.mark.parametrize(
    ("remove", "message"),
    [
        ("config.json", r"checkpoint folder '.*checkpoint' has no config.json; it is needed to rebuild the model"),
        ("model.safetensors", r"checkpoint folder '.*checkpoint' has no model.safetensors \(expected config.json \+ model.safetensors\)"),
    ],
)
def test_a_checkpoint_missing_a_required_file_is_refused(folder, remove, message):
    (folder / remove).unlink()
    with pytest.raises(CheckpointError, match=message):
        load_vae(folder)


def test_a_checkpoint_without_its_optional_files_loads(folder):
    for name in ("metrics.json", "latent_bank.safetensors", "README.md"):
        (folder / name).unlink()
    vae = load_vae(folder)
    assert vae.metrics == {} and vae.latent_bank is None


def test_a_missing_checkpoint_folder(tmp_path):
    with pytest.raises(CheckpointError, match=r"cannot find checkpoint '.*nowhere': it is not a bundled name .*an existing folder, "
                                              r"or a Hugging Face Hub repo id .*\(it starts with '/', so it reads as a path, and no such folder exists\)"):
        load_vae(str(tmp_path / "nowhere"))


CORRUPTIONS = {
    "truncated": lambda data: data[: len(data) // 2],
    "header-only": lambda data: data[: 8 + int.from_bytes(data[:8], "little")],
    "first-bytes": lambda data: data[:5],
    "empty": lambda data: b"",
    "random": lambda data: bytes((i * 37 + 11) % 256 for i in range(len(data))),
    "bad-header": lambda data: data[:8] + b"{not json" + data[17:],
}


@pytest.mark.parametrize("corrupt", CORRUPTIONS.values(), ids=CORRUPTIONS.keys())
@pytest.mark.parametrize("name", ["model.safetensors", "latent_bank.safetensors"])
def test_truncated_or_corrupt_safetensors_are_refused(folder, name, corrupt):
    path = folder / name
    broken = corrupt(path.read_bytes())
    path.write_bytes(broken)
    what = "safetensors file" if name == "model.safetensors" else "latent bank"
    with pytest.raises(CheckpointError, match=rf"'.*{re.escape(name)}' is not a readable {what} \(truncated or corrupt\?\)"):
        load_vae(folder)
    assert path.read_bytes() == broken  # the loader never writes


@pytest.fixture
def no_unpickling(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a pickle file was unpickled")

    for module, name in ((torch, "load"), (pickle, "load"), (pickle, "loads")):
        monkeypatch.setattr(module, name, refuse)


def test_a_pickle_offered_as_weights_is_refused_unread(folder, tmp_path, no_unpickling):
    state = load_file(folder / "model.safetensors")
    torch.save(state, folder / "model.safetensors.pt")  # written with the real torch.save (only loading is refused)
    pickled = (folder / "model.safetensors.pt").read_bytes()
    # a pickle file given as the checkpoint itself
    for name in ("weights.bin", "model.pt"):
        (tmp_path / name).write_bytes(pickled)
        with pytest.raises(CheckpointError, match=rf"'.*{re.escape(name)}' is a pickle weights file; it is refused unread: "
                                                  r"vae-augment loads weights only from safetensors because unpickling"):
            load_vae(tmp_path / name)
    # a pickle saved under the safetensors name
    (folder / "model.safetensors").write_bytes(pickled)
    with pytest.raises(CheckpointError, match=r"'.*model.safetensors' is not a readable safetensors file .* It is a pickle "
                                              r"\(torch.save\) file, not safetensors: .*it was not unpickled"):
        load_vae(folder)
    # a folder that offers only pickles
    (folder / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"offers only pickle weights \(model.safetensors.pt\)"):
        load_vae(folder)


def test_a_safetensors_file_given_instead_of_its_folder(folder):
    with pytest.raises(CheckpointError, match=r"'.*model.safetensors' is a file; a checkpoint is a folder of config.json \+ "
                                              r"model.safetensors \(give the folder that holds it\)"):
        load_vae(folder / "model.safetensors")


# ------------------------------------------------------------------ symlink loops
def test_a_checkpoint_folder_that_is_a_symlink_loop(tmp_path):
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    with pytest.raises(CheckpointError, match=r"checkpoint folder '.*loop' is a symlink loop"):
        load_vae(loop)


@pytest.mark.parametrize("name", ["config.json", "model.safetensors", "metrics.json", "latent_bank.safetensors"])
def test_a_checkpoint_file_that_is_a_symlink_loop(folder, name):
    (folder / name).unlink()
    (folder / name).symlink_to(folder / name)
    with pytest.raises(CheckpointError, match=rf"'.*{re.escape(name)}' is a symlink loop"):
        load_vae(folder)


def test_a_checkpoint_file_that_links_to_nothing(folder):
    (folder / "model.safetensors").unlink()
    (folder / "model.safetensors").symlink_to(folder / "gone.safetensors")
    with pytest.raises(CheckpointError, match=r"'.*model.safetensors' is a symlink to '.*gone.safetensors', which does not exist"):
        load_vae(folder)


# ------------------------------------------------------------------ malformed Hub ids (offline, never sent)
@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ("a/b/c/d", "it has 4 parts separated by '/', a repo id has exactly two"),
        ("../x", "it starts with '.', so it reads as a path, and no such folder exists"),
        ("user/", "its name part is empty"),
        ("no_such_name", "it has no '/'"),
        ("org/na--me", "it contains '..' or '--'"),
        ("org/name.git", "it ends with '.git'"),
        ("org/" + "n" * 100, "it is 104 characters long, the Hub allows 96"),
        ("org/na me", "it holds characters other than letters, digits"),
        ("-org/name", "it holds characters other than letters, digits"),
    ],
)
def test_malformed_hub_ids_are_refused_without_asking_the_hub(spec, reason, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def no_download(*args, **kwargs):
        raise AssertionError("the Hub was asked")

    monkeypatch.setattr(hub, "hf_hub_download", no_download)
    with pytest.raises(CheckpointError, match=rf"cannot find checkpoint {re.escape(repr(spec))}: it is not a bundled name .*, "
                                              rf"an existing folder, or a Hugging Face Hub repo id of the form 'org/name' \({re.escape(reason)}"):
        load_vae(spec)


def test_an_empty_spec_is_refused():
    with pytest.raises(CheckpointError, match=r"a checkpoint spec must be a non-empty name, folder or repo id, got ''"):
        load_vae("")


# ------------------------------------------------------------------ the command line: one line, exit 2
BAD_CHECKPOINTS = {
    "nan-weights": lambda f: save_file({k: v.fill_(float("nan")) for k, v in load_file(f / "model.safetensors").items()},
                                       str(f / "model.safetensors")),
    "absurd-config": lambda f: edit_config(f, latent_dim=10**9),
    "mismatched-config": lambda f: edit_config(f, hidden=512),
    "metrics-list": lambda f: (f / "metrics.json").write_text("[]"),
    "truncated-weights": lambda f: (f / "model.safetensors").write_bytes((f / "model.safetensors").read_bytes()[:100]),
    "pickle-only": lambda f: [(f / "model.safetensors").rename(f / "pytorch_model.bin")],
    "no-config": lambda f: (f / "config.json").unlink(),
    "weights-loop": lambda f: [(f / "model.safetensors").unlink(), (f / "model.safetensors").symlink_to(f / "model.safetensors")],
}


@pytest.fixture
def no_hub(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the Hub was contacted")

    monkeypatch.setattr(HfApi, "create_repo", refuse)
    monkeypatch.setattr(HfApi, "upload_folder", refuse)


@pytest.mark.parametrize("command", ["eval", "generate", "push", "train-resume"])
@pytest.mark.parametrize("spoil", BAD_CHECKPOINTS.values(), ids=BAD_CHECKPOINTS.keys())
def test_cli_commands_given_a_bad_checkpoint_exit_2_with_one_line(folder, tmp_path, spoil, command, capsys, no_hub):
    spoil(folder)
    data = write_pngs(tmp_path / "images", make_images(4))
    argv = {
        "eval": ["eval", "--checkpoint", str(folder), "--data", str(data), "--iw-k", "0", "--device", "cpu"],
        "generate": ["generate", "--checkpoint", str(folder), "--data", str(data), "--out", str(tmp_path / "variants"), "--quiet"],
        "push": ["push", "--checkpoint", str(folder), "--repo-id", "org/name"],
        # a checkpoint folder is no training run: resuming into it is refused, and nothing in it is touched
        "train-resume": ["train", "--data", str(data), "--out", str(folder), "--resume", "--epochs", "1", "--quiet"],
    }[command]
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    capsys.readouterr()
    assert main(argv) == 2
    line = one_error_line(capsys.readouterr().err, command.split("-")[0])
    assert str(folder) in line
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == before
    assert not (tmp_path / "variants").exists()


def test_cli_generate_with_an_out_that_is_a_file(folder, tmp_path, capsys):
    data = write_pngs(tmp_path / "images", make_images(2))
    out = tmp_path / "variants.txt"
    out.write_text("mine")
    assert main(["generate", "--checkpoint", str(folder), "--data", str(data), "--out", str(out), "--quiet"]) == 2
    assert str(out) in one_error_line(capsys.readouterr().err, "generate")
    assert out.read_text() == "mine"
