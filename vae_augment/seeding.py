"""Randomness inside DataLoader workers: each worker re-seeds an explicit generator once, so workers
draw different variants and a seeded run repeats.

Every adapter (the torchvision transforms, the albumentations adapter, the DataLoader helpers)
seeds through here; it knows nothing of models or images.
"""

from __future__ import annotations

import torch
from torch.utils.data import get_worker_info

__all__ = ["WorkerSeed", "reseed_in_worker", "worker_init_fn"]


class WorkerSeed:
    """Re-seeding of an explicit random generator once per DataLoader worker.

    `next_seed` returns a new seed the first time it is called in a worker (a worker process of a
    new epoch counts as new), mixing the base seed (the user's, recorded at the first call) with the
    worker's own seed, so workers draw different variants, different user seeds give different
    runs, and a run repeats under the same ``torch.manual_seed``. It returns None outside workers
    and on later calls in the same worker.
    """

    def __init__(self):
        self.base: int | None = None
        self.worker: tuple[int, int] | None = None

    def next_seed(self, base: int) -> int | None:
        if self.base is None:
            self.base = int(base)
        info = get_worker_info()
        if info is None or self.worker == (info.id, info.seed):
            return None
        self.worker = (info.id, info.seed)
        return (self.base * 1_000_003 + info.seed) % (2**63)


def reseed_in_worker(generator: torch.Generator | None, seed: WorkerSeed) -> torch.Generator | None:
    """``generator`` (None: the global torch RNG, which DataLoader seeds itself), re-seeded by ``seed`` in a new worker."""
    if generator is not None:
        new = seed.next_seed(generator.initial_seed())
        if new is not None:
            generator.manual_seed(new)
    return generator


def worker_init_fn(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: one intra-op thread per worker, so workers don't oversubscribe cores."""
    torch.set_num_threads(1)
