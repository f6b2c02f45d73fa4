"""Shared pieces of the benchmarks: MNIST as tensors and the small CNN classifier."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

# With the default (spinning) OpenMP wait policy, a 2-thread op slows down ~10x whenever another
# process holds one of the two cores; passive waiting keeps the accuracy benchmarks' run time sane
# on a shared machine. It must be set before torch loads OpenMP, so they import this module before
# torch. The throughput benchmark measures torch's default policy (run it on a quiet machine).
if not os.environ.get("VAE_AUGMENT_DEFAULT_OMP"):
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
from torch import nn  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_ROOT = os.environ.get("VAE_AUGMENT_DATA", "../shared/data")


def rate(fn, n_items: int, repeat: int, warmup: int = 2, sync=None) -> float:
    """Items per second of ``fn`` (which handles ``n_items``): the best of ``repeat`` timed calls after
    ``warmup`` untimed ones; ``sync`` (e.g. torch.cuda.synchronize) runs before each clock reading."""
    sync = sync or (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - start)
    return n_items / best


def write_json(path: str | Path, obj) -> Path:
    """Write a results file (creating its folder); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2) + "\n")
    return path


def mnist(root: str, train: bool, name: str = "MNIST") -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST (or another torchvision dataset of its layout, ``name``: "FashionMNIST") as float images ``[N, 1, 28, 28]``
    in [0, 1] and labels ``[N]``; a clear exit when absent."""
    import torchvision

    try:
        ds = getattr(torchvision.datasets, name)(root, train=train, download=False)
    except RuntimeError:
        raise SystemExit(f"{name} not found under --root {root!r} (expected {root}/{name}/raw); pass --root") from None
    return ds.data.unsqueeze(1).float().div(255), ds.targets.clone()


class SmallCNN(nn.Module):
    """2 conv layers + a linear head: the classifier of the utility and quality benchmarks (``side``: the images' side)."""

    def __init__(self, classes: int = 10, side: int = 28):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(32 * (side // 4) ** 2, 128), nn.ReLU(), nn.Linear(128, classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def train_classifier(x: torch.Tensor, y: torch.Tensor, steps: int, batch_size: int = 64, seed: int = 0, lr: float = 1e-3,
                     augment=None) -> SmallCNN:
    """Adam on random batches for a fixed number of steps; ``augment(images, labels) -> images`` per batch."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = SmallCNN(side=x.shape[-1])
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(x), (batch_size,), generator=g)
        xb, yb = x[idx], y[idx]
        if augment is not None:
            xb = augment(xb, yb)
        loss = nn.functional.cross_entropy(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model.eval()


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    return torch.cat([model(x[i : i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])
