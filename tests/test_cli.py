"""The command line, called in-process: ``vae-augment train | eval | preview | push`` and its error exits."""

from __future__ import annotations

import json
import math
import re
import shlex
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import pytest
from conftest import TINY_ARGS, make_images, write_pngs
from huggingface_hub import HfApi
from PIL import Image

from vae_augment import load_vae
from vae_augment.cli import main


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """``vae-augment train`` for one epoch on a folder of 20 gray 28x28 PNGs; returns (argv, data folder, run folder)."""
    root = tmp_path_factory.mktemp("cli")
    data = write_pngs(root / "images", make_images(20, 1, (28, 28)))
    out = root / "run"
    argv = ["train", "--dataset", str(data), "--out", str(out), "--epochs", "1", "--batch-size", "8", *TINY_ARGS,
            "--iw-k", "4", "--device", "cpu", "--quiet"]
    assert main(argv) == 0
    return argv, data, out


def test_train_writes_a_checkpoint_with_its_command(cli_run):
    argv, _, out = cli_run
    assert {"config.json", "model.safetensors", "metrics.json", "README.md", "trainer_state.safetensors"} <= {p.name for p in out.iterdir()}
    config = json.loads((out / "config.json").read_text())
    assert config == {"channels": 1, "image_size": [28, 28], "latent_dim": 4, "widths": [4, 8], "hidden": 16,
                      "likelihood": "bernoulli", "beta": 1.0, "prior_components": 0}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["command"] == "vae-augment " + shlex.join(argv)
    assert metrics["epochs"] == 1 and metrics["test"]["iw_k"] == 4 and metrics["test"]["images"] == 2
    assert metrics["training"]["device"] == "cpu" and metrics["training"]["batch_size"] == 8
    assert metrics["command"] in (out / "README.md").read_text()
    assert load_vae(out).latent_dim == 4


def test_eval_json_repeats_the_training_figures(cli_run, capsys):
    _, data, out = cli_run
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(out), "--dataset", str(data), "--iw-k", "4", "--device", "cpu", "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["dataset"] == str(data) and figures["images"] == 2 and figures["iw_k"] == 4
    assert figures["neg_elbo_bits_per_dim"] == pytest.approx(figures["neg_elbo_nats"] / (784 * math.log(2)))
    # the same held-out images, weights and seed as the final evaluation of training
    trained = json.loads((out / "metrics.json").read_text())["test"]
    for key in ("neg_elbo_nats", "iw_nll_nats", "binarized_iw_nll_nats"):
        assert figures[key] == pytest.approx(trained[key], rel=1e-6)


def test_eval_prints_a_readable_summary(cli_run, capsys):
    _, data, out = cli_run
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(out), "--dataset", str(data), "--iw-k", "3", "--limit", "1", "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    assert re.search(r"held-out \(1 images\): -ELBO [\d.]+ nats/image, [\d.]+ bits/dim", text), text
    assert re.search(r"importance-weighted NLL \(k=3\): [\d.]+ nats/image", text), text


def test_preview_writes_a_png_grid(cli_run, tmp_path, capsys):
    _, _, out = cli_run
    grid = tmp_path / "sub" / "grid.png"
    assert main(["preview", "--checkpoint", str(out), "--out", str(grid), "--seed", "1"]) == 0
    assert f"wrote {grid}" in capsys.readouterr().out
    from vae_augment.preview import GAP, LABEL_WIDTH

    with Image.open(grid) as image:
        # labelled rows (prior samples, reconstructions, 3 variants, interpolation) of 8 tiles; the model's 28x28
        # enlarged 4x to 112 px (at least 96 px a tile)
        assert image.size == (LABEL_WIDTH + 8 * (112 + GAP), 20 + 6 * (112 + GAP))
        label_column = np.asarray(image.convert("L"))[20:, :LABEL_WIDTH]
        assert (label_column < 128).any(axis=1).reshape(-1).sum() > 0  # row labels are drawn
    again = tmp_path / "again.png"
    assert main(["preview", "--checkpoint", str(out), "--out", str(again), "--seed", "1"]) == 0
    assert again.read_bytes() == grid.read_bytes()


def test_preview_shows_the_users_own_images(cli_run, tmp_path):
    """--data: the first training images of a folder are the inputs (its tiles are those images, enlarged)."""
    from vae_augment.preview import GAP, LABEL_WIDTH

    _, _, out = cli_run
    folder = tmp_path / "mine"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(folder / f"img{i}.png")
    grid = tmp_path / "mine.png"
    assert main(["preview", "--checkpoint", str(out), "--data", str(folder), "--out", str(grid), "--variants", "2",
                 "-n", "4", "--strength", "0.5", "--mode", "posterior"]) == 0
    with Image.open(grid) as image:
        sheet = np.asarray(image.convert("L"))
    tile = 96  # 16 px enlarged 6x
    assert sheet.shape[1] >= LABEL_WIDTH + 2 * (tile + GAP)
    first = sheet[20:20 + tile, LABEL_WIDTH:LABEL_WIDTH + tile]
    from vae_augment.data import load_splits

    image = load_splits(folder)[0][0][0]  # the first training image, as preview reads it
    expected = (image.float().div(255) if image.dtype == torch.uint8 else image)[0].mul(255).round().to(torch.uint8).numpy()
    assert np.array_equal(first[::6, ::6], expected)  # the user's image, enlarged with nearest neighbour


def test_preview_of_photos_keeps_tiles_small_and_resizes_mixed_sizes(cli_run, tmp_path, capsys):
    """Large photos are reduced to MAX_TILE pixels a side (not pasted at 640x480); a folder of mixed sizes needs
    --image-size, which the error names and preview takes. Every row carries a label."""
    from vae_augment.preview import GAP, LABEL_WIDTH, MAX_TILE

    _, _, out = cli_run
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        Image.new("RGB", (640, 480), (200, 40 * i, 40)).save(photos / f"photo{i}.png")
    grid = tmp_path / "photos.png"
    assert main(["preview", "--checkpoint", str(out), "--data", str(photos), "--out", str(grid), "--variants", "1"]) == 0
    tile_w, tile_h = MAX_TILE, MAX_TILE * 480 // 640
    with Image.open(grid) as image:
        assert image.size == (LABEL_WIDTH + 2 * (tile_w + GAP), 20 + 4 * (tile_h + GAP))  # 2 training images (1 held out), 4 rows
        labels = np.asarray(image.convert("L"))[20:, :LABEL_WIDTH]
    rows = [labels[r * (tile_h + GAP):(r + 1) * (tile_h + GAP)] for r in range(4)]
    assert all((row < 128).any() for row in rows)  # input, reconstruction, variant 1, interpolation
    Image.new("L", (20, 30)).save(photos / "small.png")
    assert main(["preview", "--checkpoint", str(out), "--data", str(photos), "--out", str(grid)]) == 2
    assert "--image-size" in capsys.readouterr().err
    assert main(["preview", "--checkpoint", str(out), "--data", str(photos), "--out", str(grid), "--image-size", "32"]) == 0
    with Image.open(grid) as image:
        assert image.height == 20 + 6 * (96 + GAP)  # 32 px enlarged 3x


def test_push_uploads_the_checkpoint_and_a_model_card(cli_run, monkeypatch, capsys):
    argv, _, out = cli_run
    uploads = []
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kwargs: SimpleNamespace(repo_id=repo_id))

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        uploads.append({"repo_id": repo_id, "files": {p.name: p.read_bytes() for p in Path(folder_path).iterdir()}, **kwargs})
        return SimpleNamespace(commit_url=f"https://huggingface.co/{repo_id}/commit/123")

    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    assert main(["push", "--checkpoint", str(out), "--repo-id", "org/tiny", "--revision", "dev"]) == 0
    assert "pushed" in capsys.readouterr().out
    (upload,) = uploads
    assert upload["repo_id"] == "org/tiny" and upload["revision"] == "dev"
    files = upload["files"]
    assert files["config.json"] == (out / "config.json").read_bytes()
    assert files["model.safetensors"] == (out / "model.safetensors").read_bytes()
    card = files["README.md"].decode()
    assert "vae-augment " + shlex.join(argv) in card
    test = json.loads((out / "metrics.json").read_text())["test"]
    assert f"| neg_elbo_nats | {test['neg_elbo_nats']:.4g} |" in card
    assert f"| iw_nll_nats | {test['iw_nll_nats']:.4g} |" in card


def test_an_interrupted_run_exits_130_and_resume_finishes_it_exactly(cli_run, tmp_path, monkeypatch, capsys, assert_same_state):
    from safetensors.torch import load_file

    from vae_augment import VAE

    _, data, _ = cli_run
    common = ["--dataset", str(data), "--epochs", "2", "--batch-size", "8", *TINY_ARGS, "--iw-k", "0", "--device", "cpu", "--quiet"]
    assert main(["train", "--out", str(tmp_path / "straight"), *common]) == 0

    calls = {"n": 0}
    real_forward = VAE.forward

    def forward_until_ctrl_c(self, *args, **kwargs):
        calls["n"] += 1
        # 18 training images in batches of 8 (3 steps) + 1 held-out batch per epoch: the second step of epoch 2
        if calls["n"] == 6:
            raise KeyboardInterrupt
        return real_forward(self, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(VAE, "forward", forward_until_ctrl_c)
        capsys.readouterr()
        assert main(["train", "--out", str(tmp_path / "resumed"), *common]) == 130
    assert "interrupted; the last finished epoch's checkpoint is intact" in capsys.readouterr().err
    assert load_vae(tmp_path / "resumed").metrics == {}  # epoch 1 saved, the run not finished
    assert main(["train", "--out", str(tmp_path / "resumed"), *common, "--resume"]) == 0
    assert_same_state(load_file(tmp_path / "straight" / "model.safetensors"), load_file(tmp_path / "resumed" / "model.safetensors"))


# ------------------------------------------------------------------ errors: exit code 2 and one clear line
def _fails(argv: list[str], capsys) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return captured.err


def test_train_on_a_missing_folder(tmp_path, capsys):
    missing = tmp_path / "no_such_folder"
    err = _fails(["train", "--dataset", str(missing), "--out", str(tmp_path / "run"), "--quiet"], capsys)
    assert re.search(rf"^vae-augment train: error: '{re.escape(str(missing))}' is neither a dataset name \(MNIST, .*\) "
                     r"nor an existing folder", err), err
    assert not (tmp_path / "run").exists()


def test_train_on_mixed_sizes_needs_image_size(tmp_path, capsys):
    data = tmp_path / "mixed"
    write_pngs(data, make_images(2, 1, (28, 28)), prefix="a")
    write_pngs(data, make_images(2, 1, (16, 16)), prefix="b")
    err = _fails(["train", "--dataset", str(data), "--out", str(tmp_path / "run"), "--quiet"], capsys)
    assert "have different sizes" in err and "--image-size" in err


def test_eval_of_a_checkpoint_without_config(cli_run, tmp_path, capsys):
    _, data, out = cli_run
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.safetensors").write_bytes((out / "model.safetensors").read_bytes())
    err = _fails(["eval", "--checkpoint", str(broken), "--dataset", str(data)], capsys)
    assert "vae-augment eval: error: checkpoint folder" in err and "has no config.json" in err


def test_bad_widths_are_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--dataset", "x", "--widths", "a,b"])
    assert exit_info.value.code == 2
    assert "expected comma-separated ints such as 32,64, got 'a,b'" in capsys.readouterr().err



def test_readme_tables_are_rendered_from_the_results_files():
    """The README's and docs' figures come from committed results files via benchmarks/update_readme.py."""
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, str(repo / "benchmarks" / "update_readme.py"), "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_generate_writes_k_variants_of_every_image_in_an_imagefolder_tree(tmp_path, capsys):
    from PIL import Image

    from conftest import make_images, write_pngs
    from vae_augment import VAE

    torch_vae = VAE(latent_dim=4, widths=[4, 8], hidden=16)
    torch_vae.save_pretrained(tmp_path / "ckpt")
    write_pngs(tmp_path / "data" / "cats", make_images(3, seed=1), prefix="cat")
    write_pngs(tmp_path / "data" / "dogs", make_images(2, seed=2), prefix="dog")
    args = ["generate", "--checkpoint", str(tmp_path / "ckpt"), "--data", str(tmp_path / "data"), "--per-image", "3",
            "--strength", "0.5", "--quiet"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    files = sorted(p.relative_to(tmp_path / "a").as_posix() for p in (tmp_path / "a").rglob("*.png"))
    assert len(files) == 5 * 3, "every image, not a held-out share, gets K variants"
    assert "cats/cat000_0.png" in files and "dogs/dog001_2.png" in files
    image = Image.open(tmp_path / "a" / "cats" / "cat000_0.png")
    assert image.mode == "L" and image.size == (28, 28), "gray stays gray"
    variants = [np.asarray(Image.open(tmp_path / "a" / "cats" / f"cat000_{k}.png")) for k in range(3)]
    assert not np.array_equal(variants[0], variants[1])
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    assert np.array_equal(variants[0], np.asarray(Image.open(tmp_path / "b" / "cats" / "cat000_0.png"))), "seeded: repeats"
    assert "wrote 15 images" in capsys.readouterr().out


def test_preview_shows_residual_variants_by_default_and_decoded_ones_when_asked(cli_run, tmp_path):
    """As VAEAugment: by default a variant at strength 0 is the input itself; --no-residual shows the reconstruction."""
    from vae_augment.preview import LABEL_WIDTH

    _, _, out = cli_run
    sheets = {}
    for flag in ("--residual", "--no-residual"):
        grid = tmp_path / f"{flag}.png"
        assert main(["preview", "--checkpoint", str(out), "--out", str(grid), "--variants", "1", "-n", "2",
                     "--strength", "0", flag]) == 0
        with Image.open(grid) as image:
            sheets[flag] = np.asarray(image.convert("L"))
    rows = {flag: np.array_split(sheet[20:, LABEL_WIDTH:], 4) for flag, sheet in sheets.items()}  # input, reconstruction, variant, interpolation
    assert np.array_equal(rows["--residual"][2][:-4], rows["--residual"][0][:-4])  # the variant is the input
    assert not np.array_equal(rows["--no-residual"][2][:-4], rows["--no-residual"][0][:-4])
    assert np.array_equal(rows["--no-residual"][2][:-4], rows["--no-residual"][1][:-4])  # ... or the reconstruction
