"""`vae-augment train` under torchrun: 2 processes on CPU (gloo), tiny synthetic data."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import torch

from conftest import TINY_ARGS, make_images, write_pngs
from vae_augment import load_vae


def test_two_processes_train_in_sync_and_rank_0_writes_a_loadable_checkpoint(tmp_path):
    data = write_pngs(tmp_path / "data", make_images(40, channels=3, size=32))
    out = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "vae_augment.cli",
           "train", "--dataset", str(data), "--out", str(out), "--epochs", "2", "--batch-size", "8", *TINY_ARGS,
           "--iw-k", "0", "--device", "cpu", "--quiet"]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["training"]["world_size"] == 2
    assert metrics["training"]["ranks_in_sync"] is True, "both ranks must end with identical weights"
    assert result.stdout.count("epoch 2/2") == 1, "only rank 0 prints"
    # each rank saw half the data per epoch: 36 training images / 2 ranks / batch 8 -> 3 steps
    assert len(metrics["history"]) == 2
    vae = load_vae(out)
    assert vae.channels == 3 and vae.image_size == (32, 32)
    with torch.no_grad():
        assert torch.isfinite(vae.elbo(make_images(4, channels=3, size=32))).all()
