"""Training and evaluation: learning on tiny data, run folders, exact resume, atomic checkpoints, bad data."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch
from conftest import TINY, make_images, write_pngs
from safetensors.torch import load_file
from torch.utils.data import TensorDataset

from vae_augment import VAE, CheckpointError, atomic, checkpoint, evaluate, load_vae, train
from vae_augment.data import ImageFolderDataset, load_splits, torchvision_dataset
from vae_augment.training import STATE_NAME

RUN_FILES = {"config.json", "model.safetensors", "metrics.json", "README.md", STATE_NAME}


def tiny_datasets(n_train: int = 48, n_test: int = 16, channels: int = 1, size=(28, 28)):
    train_x = make_images(n_train, channels, size, seed=0)
    test_x = make_images(n_test, channels, size, seed=1)
    return TensorDataset(train_x, torch.zeros(n_train, dtype=torch.long)), TensorDataset(test_x, torch.zeros(n_test, dtype=torch.long))


def train_tiny(out: Path, epochs: int = 2, **kwargs) -> VAE:
    """train() on the tiny tensor datasets with the tiny config, quietly, on the CPU."""
    train_set, test_set = tiny_datasets()
    options = dict(test_data=test_set, epochs=epochs, batch_size=16, lr=5e-3, iw_k=4, seed=3, device="cpu", progress=False, **TINY)
    options.update(kwargs)
    return train(train_set, out, **options)


def no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if p.name.endswith(".tmp") or p.name.startswith(".staging-")]


# ------------------------------------------------------------------ learning
def test_a_few_training_steps_lower_the_loss():
    torch.manual_seed(0)
    vae = VAE(**TINY)
    x = make_images(32)
    optimizer = torch.optim.Adam(vae.parameters(), lr=1e-2)

    def held_loss() -> float:  # the same noise each time, so only the weights change
        with torch.no_grad():
            return vae.loss(x, generator=torch.Generator().manual_seed(0))["loss"].item()

    before = held_loss()
    for _ in range(30):
        optimizer.zero_grad()
        vae.loss(x)["loss"].backward()
        optimizer.step()
    after = held_loss()
    assert after < 0.8 * before, (before, after)


def test_evaluate_reports_nats_bits_and_iw_nll_and_repeats():
    torch.manual_seed(0)
    vae = VAE(**TINY)
    _, test_set = tiny_datasets()
    figures = evaluate(vae, test_set, iw_k=4, batch_size=5, seed=1)
    assert figures["images"] == 16 and figures["iw_k"] == 4
    assert figures["neg_elbo_bits_per_dim"] == pytest.approx(figures["neg_elbo_nats"] / (784 * math.log(2)))
    assert figures["iw_nll_bits_per_dim"] == pytest.approx(figures["iw_nll_nats"] / (784 * math.log(2)))
    assert figures == evaluate(vae, test_set, iw_k=4, batch_size=5, seed=1)
    assert vae.training  # evaluate restores the mode it found


def test_binarized_nll_is_the_discrete_nll_of_dynamically_binarized_images():
    torch.manual_seed(0)
    vae = VAE(**TINY)
    gray = make_images(16, 1, (28, 28), seed=1)
    optimizer = torch.optim.Adam(vae.parameters(), lr=5e-3)
    for _ in range(30):  # away from p = 0.5 everywhere, where gray and binary images have the same likelihood
        optimizer.zero_grad()
        vae.loss(gray)["loss"].backward()
        optimizer.step()
    vae.eval()
    figures = evaluate(vae, TensorDataset(gray), iw_k=8, batch_size=8, seed=1)
    assert figures["binarized_iw_k"] == 8 and math.isfinite(figures["binarized_iw_nll_nats"])
    assert figures["binarized_iw_nll_nats"] != pytest.approx(figures["iw_nll_nats"], rel=1e-3)  # other images, other figure
    assert evaluate(vae, TensorDataset(gray), iw_k=8, batch_size=8, seed=1, binarized_k=32)["binarized_iw_k"] == 32
    # each pixel drawn as 1 with probability its gray value: the figure is the IW-NLL of such draws
    draws = [torch.bernoulli(gray, generator=torch.Generator().manual_seed(s)) for s in range(4)]
    expected = sum(vae.iw_nll(b, k=64, generator=torch.Generator().manual_seed(9)).mean().item() for b in draws) / 4
    many = evaluate(vae, TensorDataset(gray.repeat(4, 1, 1, 1)), iw_k=0, batch_size=64, seed=2, binarized_k=64)
    assert many["binarized_iw_nll_nats"] == pytest.approx(expected, rel=0.02)
    binary = draws[0]  # already binary: binarizing changes nothing, so both figures estimate the same NLL
    same = evaluate(vae, TensorDataset(binary), iw_k=64, batch_size=16, seed=3)
    assert same["binarized_iw_nll_nats"] == pytest.approx(same["iw_nll_nats"], rel=0.01)
    assert "binarized_iw_nll_nats" not in evaluate(vae, TensorDataset(gray), iw_k=4, binarized_k=0)
    gaussian = VAE(**{**TINY, "likelihood": "gaussian"})  # densities, not probabilities of binary images: not computed
    assert "binarized_iw_nll_nats" not in evaluate(gaussian, TensorDataset(gray), iw_k=4)
    with pytest.raises(ValueError, match="binarized_k must be >= 0"):
        evaluate(vae, TensorDataset(gray), iw_k=4, binarized_k=-1)
    with pytest.raises(ValueError, match="evaluation data is empty"):
        evaluate(vae, TensorDataset(torch.zeros(0, 1, 28, 28)))


# ------------------------------------------------------------------ train(): run folders
def test_train_on_a_tensor_dataset_writes_a_loadable_run(tmp_path, assert_same_state):
    out = tmp_path / "run"
    vae = train_tiny(out, epochs=2, command="vae-augment train --dataset tiny")
    assert RUN_FILES <= {p.name for p in out.iterdir()}
    assert no_temp_files(out)

    config = json.loads((out / "config.json").read_text())
    assert config == {"channels": 1, "image_size": [28, 28], "likelihood": "bernoulli", "beta": 1.0, "prior_components": 0, **TINY}

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs"] == 2 and len(metrics["history"]) == 2
    assert metrics["train_images"] == 48 and metrics["dataset"] == "TensorDataset"
    assert metrics["command"] == "vae-augment train --dataset tiny"
    test = metrics["test"]
    assert test["images"] == 16 and test["iw_k"] == 4
    assert test["neg_elbo_bits_per_dim"] == pytest.approx(test["neg_elbo_nats"] / (784 * math.log(2)))
    assert math.isfinite(test["iw_nll_nats"])
    assert test == evaluate(vae, tiny_datasets()[1], iw_k=4, batch_size=100, seed=3)

    loaded = load_vae(out)
    assert_same_state(loaded.state_dict(), vae.state_dict())
    assert loaded.metrics["test"] == test
    assert "vae-augment train --dataset tiny" in (out / "README.md").read_text()

    # the spread of posterior means over the training set, per latent dimension
    with torch.no_grad():
        means = loaded.encode(tiny_datasets()[0].tensors[0]).mean.double()
    torch.testing.assert_close(loaded.latent_loc, means.mean(0).float())
    torch.testing.assert_close(loaded.latent_scale, means.std(0).float())


@pytest.mark.parametrize("channels", [1, 3])
def test_train_on_a_png_folder(tmp_path, channels, assert_same_state):
    data = write_pngs(tmp_path / "images", make_images(20, channels, (16, 20)))
    out = tmp_path / "run"
    vae = train(data, out, epochs=1, batch_size=8, iw_k=2, device="cpu", progress=False, **TINY)
    assert RUN_FILES <= {p.name for p in out.iterdir()}
    config = json.loads((out / "config.json").read_text())
    assert config["channels"] == channels and config["image_size"] == [16, 20]
    assert config["likelihood"] == ("bernoulli" if channels == 1 else "gaussian")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["dataset"] == str(data)
    assert metrics["train_images"] == 18 and metrics["test"]["images"] == 2  # a 10% random hold-out
    loaded = load_vae(out)
    assert_same_state(loaded.state_dict(), vae.state_dict())
    assert ("log_scale" in loaded.state_dict()) == (channels == 3)


def test_a_folder_with_train_and_test_subfolders_uses_them(tmp_path):
    data = tmp_path / "images"
    write_pngs(data / "train" / "a", make_images(6, seed=0))
    write_pngs(data / "train" / "b", make_images(6, seed=1))
    write_pngs(data / "test" / "a", make_images(3, seed=2))
    train_set, test_set, info = load_splits(data)
    assert (len(train_set), len(test_set)) == (12, 3)
    assert info["holdout"] == "test/ folder" and info["image_size"] == [28, 28]
    assert train_set.classes == ["a", "b"] and sorted(set(train_set.labels)) == [0, 1]


def test_mixed_sizes_are_resized_when_image_size_is_given(tmp_path):
    data = tmp_path / "images"
    write_pngs(data, make_images(3, 1, (20, 20)), prefix="small")
    write_pngs(data, make_images(3, 3, (30, 24)), prefix="big")
    dataset = ImageFolderDataset(data, image_size=16, channels=1)
    image, label = dataset[4]
    assert image.shape == (1, 16, 16) and label == -1
    assert image.min() >= 0 and image.max() <= 1


# ------------------------------------------------------------------ resume
@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """A 2-epoch run with the default cosine learning-rate schedule."""
    out = tmp_path_factory.mktemp("uninterrupted")
    train_tiny(out, epochs=2)
    return out


def assert_same_run(a: Path, b: Path, assert_same_state) -> None:
    assert_same_state(load_file(a / "model.safetensors"), load_file(b / "model.safetensors"))
    assert_same_state(load_file(a / STATE_NAME), load_file(b / STATE_NAME))  # weights and optimizer moments
    metrics_a, metrics_b = (json.loads((f / "metrics.json").read_text()) for f in (a, b))
    assert metrics_a["test"] == metrics_b["test"]
    without_time = [[{k: v for k, v in epoch.items() if k != "seconds"} for epoch in m["history"]] for m in (metrics_a, metrics_b)]
    assert without_time[0] == without_time[1]


def test_binarize_trains_on_fresh_binary_draws_of_the_gray_images(tmp_path, monkeypatch, assert_same_state):
    seen = []
    objective = VAE.objective

    def spy(self, x, *args, **kwargs):
        if self.training:
            seen.append(x.detach().clone())
        return objective(self, x, *args, **kwargs)

    monkeypatch.setattr(VAE, "objective", spy)
    vae = train_tiny(tmp_path / "bin", epochs=2, batch_size=48, binarize=True)
    first, second = seen  # one batch of all 48 images per epoch
    assert set(torch.unique(torch.cat([first, second])).tolist()) == {0.0, 1.0}
    gray = tiny_datasets()[0].tensors[0]
    assert not torch.equal(first, second)  # drawn anew each epoch, not binarized once
    # each pixel is 1 with its gray value as probability (summed over the shuffled batch, position by position)
    assert abs(first.mean().item() - gray.mean().item()) < 0.02
    assert torch.corrcoef(torch.stack([first.sum(0).flatten(), gray.sum(0).flatten()]))[0, 1] > 0.8
    metrics = json.loads((tmp_path / "bin" / "metrics.json").read_text())
    assert metrics["training"]["binarize"] is True and "binarized_iw_nll_nats" in metrics["test"]

    monkeypatch.setattr(VAE, "objective", objective)
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"  # the draws repeat on resume
    train_tiny(straight, epochs=2, binarize=True, lr_schedule="constant")
    train_tiny(resumed, epochs=1, binarize=True, lr_schedule="constant")
    train_tiny(resumed, epochs=2, binarize=True, resume=True, lr_schedule="constant")
    assert_same_run(straight, resumed, assert_same_state)

    with pytest.raises(ValueError, match="binarize=True needs the bernoulli likelihood"):
        train_tiny(tmp_path / "gauss", likelihood="gaussian", binarize=True)
    with pytest.raises(TypeError, match="binarize must be a bool"):
        train_tiny(tmp_path / "str", binarize="yes")


def test_train_config_names_every_argument_of_train_and_checks_them_when_made(tmp_path, assert_same_state):
    """`train`'s keyword arguments are `TrainConfig`'s fields; a config is checked before any data is read, and
    `train_with(config)` is the same run as `train(...)` with those arguments."""
    import dataclasses
    import inspect

    from vae_augment.training import TrainConfig, train_with

    assert list(inspect.signature(train).parameters) == [field.name for field in dataclasses.fields(TrainConfig)]
    with pytest.raises(ValueError, match="batch_size must be an int >= 1, got 0"):
        TrainConfig(data=str(tmp_path / "no-such-folder"), out=tmp_path / "never", batch_size=0)
    with pytest.raises(ValueError, match="precision must be 'auto', 'fp32' or 'bf16', got 'fp16'"):
        TrainConfig(precision="fp16")
    assert not (tmp_path / "never").exists()
    train_set, test_set = tiny_datasets()
    options = dict(test_data=test_set, epochs=1, batch_size=16, lr=5e-3, iw_k=0, seed=3, device="cpu", progress=False, **TINY)
    by_config = train_with(TrainConfig(train_set, tmp_path / "config", **options))
    assert_same_state(by_config.state_dict(), train_tiny(tmp_path / "call", **options).state_dict())
    assert "init" not in by_config.metrics["training"]  # recorded only for a run started from one


def test_default_epochs_reach_the_minimum_step_budget_on_small_data(tmp_path, monkeypatch):
    """epochs=None: 10 epochs on a large dataset; on a small one, as many as make MIN_STEPS optimizer steps."""
    from vae_augment import training

    assert training.default_epochs(469) == 10  # MNIST's 60,000 images at batch 128: 4,690 steps already
    assert training.default_epochs(9) == 223  # 1,132 images at batch 128: ceil(2000 / 9)
    assert training.default_epochs(2000) == 10 and training.default_epochs(1) == 2000
    monkeypatch.setattr(training, "DEFAULT_EPOCHS", 1)
    monkeypatch.setattr(training, "MIN_STEPS", 7)  # 48 images at batch 16: 3 steps an epoch, so 3 epochs
    vae = train_tiny(tmp_path / "run", epochs=None)
    assert vae.metrics["epochs"] == 3 and len(vae.metrics["history"]) == 3
    monkeypatch.setattr(training, "MIN_STEPS", 2)  # a large dataset for this budget: DEFAULT_EPOCHS
    assert train_tiny(tmp_path / "run2", epochs=None).metrics["epochs"] == 1


def test_resume_continues_a_shorter_run_exactly(tmp_path, assert_same_state):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train_tiny(straight, epochs=2, lr_schedule="constant")
    train_tiny(resumed, epochs=1, lr_schedule="constant")
    assert json.loads((resumed / "metrics.json").read_text())["epochs"] == 1
    train_tiny(resumed, epochs=2, lr_schedule="constant", resume=True)
    assert_same_run(straight, resumed, assert_same_state)


def test_a_run_killed_mid_epoch_keeps_its_checkpoint_and_resumes_exactly(tmp_path, monkeypatch, uninterrupted, assert_same_state):
    out = tmp_path / "killed"
    calls = {"n": 0}
    original_forward = VAE.forward

    def forward_then_die(self, *args, **kwargs):
        calls["n"] += 1
        # epoch 1: 3 training steps (48 images, batch 16) + 1 held-out batch; die at epoch 2's second step
        if calls["n"] == 6:
            raise KeyboardInterrupt
        return original_forward(self, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(VAE, "forward", forward_then_die)
        with pytest.raises(KeyboardInterrupt):
            train_tiny(out, epochs=2)

    # the epoch-1 checkpoint is intact, loadable, and consistent with the trainer state
    assert no_temp_files(out)
    epoch1 = load_vae(out)
    state = load_file(out / STATE_NAME)
    assert_same_state(epoch1.state_dict(), {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")})
    train_tiny(out, epochs=2, resume=True)
    assert_same_run(uninterrupted, out, assert_same_state)


def test_a_run_killed_while_writing_a_checkpoint_resumes_exactly(tmp_path, monkeypatch, uninterrupted, assert_same_state):
    out = tmp_path / "killed"
    real_replace = os.replace
    state_writes = {"n": 0}

    def replace_then_die(src, dst, *args, **kwargs):
        if Path(dst).name == STATE_NAME:
            state_writes["n"] += 1
            if state_writes["n"] == 2:  # the end of epoch 2: killed after writing the temp file, before the rename
                raise KeyboardInterrupt
        return real_replace(src, dst, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(os, "replace", replace_then_die)
        with pytest.raises(KeyboardInterrupt):
            train_tiny(out, epochs=2)
    assert no_temp_files(out)
    assert load_vae(out).metrics == {}  # no metrics.json yet: the run never finished
    train_tiny(out, epochs=2, resume=True)
    assert_same_run(uninterrupted, out, assert_same_state)


def test_resume_refuses_a_missing_state_a_different_config_or_a_corrupt_state(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(FileNotFoundError, match=r"cannot resume: .*trainer_state.safetensors' does not exist"):
        train_tiny(out, epochs=1, resume=True)
    train_tiny(out, epochs=1, iw_k=0)
    with pytest.raises(ValueError, match=r"cannot resume: the run in .* was started with .*'latent_dim': 4.*now .*'latent_dim': 5"):
        train_tiny(out, epochs=2, resume=True, latent_dim=5)
    weights = (out / "model.safetensors").read_bytes()
    state = out / STATE_NAME
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="cannot resume from .* \\(truncated or corrupt\\?\\)"):
        train_tiny(out, epochs=2, resume=True)
    assert (out / "model.safetensors").read_bytes() == weights  # nothing already on disk was lost


# ------------------------------------------------------------------ atomic checkpoint writes
def _fail_serialize(monkeypatch):
    import safetensors.torch

    def save(*args, **kwargs):
        raise MemoryError("out of memory while serializing")

    monkeypatch.setattr(safetensors.torch, "save", save)


def _fail_mid_write(monkeypatch):
    # the temporary file has been written (and possibly partly flushed) when the process dies
    def fsync(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", fsync)


def _fail_rename(monkeypatch):
    def replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", replace)


@pytest.mark.parametrize("break_write", [_fail_serialize, _fail_mid_write, _fail_rename], ids=["serialize", "mid-write", "rename"])
def test_an_interrupted_checkpoint_write_leaves_the_old_file(saved_vae, monkeypatch, break_write, assert_same_state):
    old_vae, folder = saved_vae
    old_bytes = {name: (folder / name).read_bytes() for name in ("model.safetensors", "config.json")}
    new_vae = VAE(**TINY)  # different weights
    assert not torch.equal(new_vae.decoder.fc[0].weight, old_vae.decoder.fc[0].weight)

    with monkeypatch.context() as patch:
        break_write(patch)
        with pytest.raises((MemoryError, KeyboardInterrupt, OSError)):
            new_vae.save_pretrained(folder)

    assert {name: (folder / name).read_bytes() for name in old_bytes} == old_bytes
    assert no_temp_files(folder)
    assert_same_state(load_vae(folder).state_dict(), old_vae.state_dict())


def test_a_save_that_fails_after_writing_the_weights_keeps_the_old_pair(saved_vae, monkeypatch, assert_same_state):
    # the weights are written first: replacing them before the config is known to be written
    # would leave new weights beside the old config
    old_vae, folder = saved_vae
    old_bytes = {name: (folder / name).read_bytes() for name in ("model.safetensors", "config.json")}

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(atomic, "atomic_write_json", fail)
        with pytest.raises(OSError, match="No space left"):
            VAE(**{**TINY, "hidden": 48}).save_pretrained(folder)
    assert {name: (folder / name).read_bytes() for name in old_bytes} == old_bytes
    assert no_temp_files(folder)
    assert_same_state(load_vae(folder).state_dict(), old_vae.state_dict())


def test_a_save_that_fails_between_renames_puts_the_old_files_back(saved_vae, monkeypatch, assert_same_state):
    # config.json is renamed into place before model.safetensors: failing on the weights must put
    # the old config back
    old_vae, folder = saved_vae
    old_bytes = {p.name: p.read_bytes() for p in folder.iterdir()}
    real_replace = os.replace

    def replace(src, dst):
        if Path(dst) == folder / "model.safetensors":
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    with monkeypatch.context() as patch:
        patch.setattr(os, "replace", replace)
        with pytest.raises(OSError, match="No space left"):
            VAE(**{**TINY, "hidden": 48}).save_pretrained(folder, refresh_card=True)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == old_bytes
    assert_same_state(load_vae(folder).state_dict(), old_vae.state_dict())


def test_saving_a_model_without_a_latent_bank_removes_a_stale_one(tmp_path):
    folder = tmp_path / "ckpt"
    with_bank = VAE(**TINY)
    with_bank.latent_bank = torch.randn(20, TINY["latent_dim"])
    with_bank.save_pretrained(folder)
    assert load_vae(folder).latent_bank is not None
    VAE(**TINY).save_pretrained(folder)  # a new model with no bank, into the same folder
    assert not (folder / checkpoint.BANK_NAME).exists()
    assert load_vae(folder).latent_bank is None
    assert no_temp_files(folder)


def test_atomic_write_replaces_the_file_when_nothing_fails(tmp_path):
    path = tmp_path / "file.bin"
    path.write_bytes(b"old")
    atomic.atomic_write_bytes(path, b"new contents")
    assert path.read_bytes() == b"new contents"
    assert no_temp_files(tmp_path)


# ------------------------------------------------------------------ bad input
def test_missing_data_folder(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=r"'.*nowhere' is neither a dataset name \(MNIST, .*\) nor an existing folder"):
        train(missing, tmp_path / "run", epochs=1, progress=False)
    with pytest.raises(FileNotFoundError, match=r"data folder '.*nowhere' does not exist; give a folder of images or a dataset name"):
        ImageFolderDataset(missing)
    assert not (tmp_path / "run").exists()


def test_empty_data_folder(tmp_path):
    (tmp_path / "empty" / "class_a").mkdir(parents=True)
    (tmp_path / "empty" / "notes.txt").write_text("not an image")
    message = r"data folder '.*empty' holds no images \(accepted: \.png, .*\), neither directly nor in class subfolders"
    with pytest.raises(ValueError, match=message):
        train(tmp_path / "empty", tmp_path / "run", epochs=1, progress=False)


def test_a_folder_of_one_image_cannot_be_split(tmp_path):
    data = write_pngs(tmp_path / "one", make_images(1))
    with pytest.raises(ValueError, match="holds 1 image; at least 2 are needed"):
        load_splits(data)


def test_mixed_image_sizes_without_image_size(tmp_path):
    data = tmp_path / "mixed"
    write_pngs(data, make_images(2, 1, (28, 28)), prefix="a")
    write_pngs(data, make_images(1, 1, (32, 32)), prefix="b")
    with pytest.raises(ValueError, match=r"have different sizes \(28x28 \(2\), 32x32 \(1\)\); pass image_size \(--image-size\)"):
        train(data, tmp_path / "run", epochs=1, progress=False)


def test_an_unreadable_image_is_named(tmp_path):
    data = write_pngs(tmp_path / "images", make_images(3))
    (data / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"'.*broken.png' is not a readable image"):
        ImageFolderDataset(data)


def test_nan_in_the_training_data_stops_training_before_any_checkpoint(tmp_path):
    train_set, test_set = tiny_datasets()
    train_set.tensors[0][5, 0, 3, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite"):
        train(train_set, tmp_path / "run", test_data=test_set, epochs=1, batch_size=48, device="cpu", progress=False, **TINY)
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_bad_training_arguments(tmp_path):
    train_set, test_set = tiny_datasets()
    for kwargs, message in [
        ({"epochs": 0}, "epochs must be an int >= 1, got 0"),
        ({"epochs": True}, "epochs must be an int >= 1, got True"),
        ({"batch_size": 2.5}, "batch_size must be an int >= 1, got 2.5"),
        ({"lr": 0.0}, "lr must be > 0, got 0.0"),
        ({"lr_schedule": "step"}, "lr_schedule must be 'cosine' or 'constant', got 'step'"),
        ({"warmup_epochs": -1}, "warmup_epochs must be >= 0, got -1"),
    ]:
        with pytest.raises(ValueError, match=message):
            train(train_set, tmp_path / "run", test_data=test_set, progress=False, **kwargs)
    with pytest.raises(ValueError, match="a Dataset passed as data needs test_data"):
        train(train_set, tmp_path / "run", progress=False)
    with pytest.raises(ValueError, match=r"dataset 'mnist' needs root \(--root\), the folder that holds MNIST/"):
        train("mnist", tmp_path / "run", progress=False)
    with pytest.raises(FileNotFoundError, match=r"MNIST not found under root '.*' .*pass the folder that holds MNIST/raw"):
        torchvision_dataset("mnist", tmp_path, train=False)
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------ MNIST (needs VAE_AUGMENT_DATA)
def test_mnist_loads_by_name_from_the_root(mnist_root):
    test = torchvision_dataset("MNIST", mnist_root, train=False)
    images, labels = test.tensors
    assert images.shape == (10_000, 1, 28, 28) and images.dtype == torch.float32
    assert images.min() == 0 and images.max() == 1
    assert torch.bincount(labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    resized = torchvision_dataset("mnist", mnist_root, train=False, channels=3, image_size=32)
    assert resized.tensors[0].shape == (10_000, 3, 32, 32)
