"""Training runs of the accuracy benchmarks, spread over the cores: one job trains the small CNN on one
condition's augmentation of one seed's labelled images and scores it on a split.

A benchmark describes each dataset as a state dict: ``x``, ``y`` (the labelled pool's source, images
``[N, C, H, W]`` in [0, 1] and labels), ``pool`` (labelled images are drawn from the first ``pool``), ``vae``,
``steps`` (classifier steps), ``build(name, vae, x_lab, y_lab)`` (condition name -> augmentation
``(images, labels) -> images``, or None), optionally ``trainer(name, state, idx, seed)`` (the trained
classifier of a condition with a training loop of its own, such as benchmarks/semi.py's, or None), and the splits to score on, e.g. ``validation`` and ``test``
(``(images, labels)``). The worker processes are forked, so the states are shared, not pickled.
"""

from __future__ import annotations

import multiprocessing

from common import predict, train_classifier  # noqa: I001  (sets OMP_WAIT_POLICY before torch loads)
import torch

from stats import summarize

_STATE: dict = {}


def balanced_subset(y: torch.Tensor, per_class: int, seed: int, pool: int) -> torch.Tensor:
    """Indices of ``per_class`` images of each class among the first ``pool``, drawn by ``seed``."""
    g = torch.Generator().manual_seed(seed)
    picks = []
    for c in range(int(y.max()) + 1):
        idx = (y[:pool] == c).nonzero().squeeze(1)
        picks.append(idx[torch.randperm(len(idx), generator=g)[:per_class]])
    return torch.cat(picks)


def _init(state):
    torch.set_num_threads(1)
    _STATE.update(state)


def _job(job) -> float:
    """One training run: (dataset, condition, labels per class, seed, split, only_variants) -> accuracy on the split."""
    dataset, name, per_class, seed, split, only_variants = job
    s = _STATE[dataset]
    x, y = s["x"], s["y"]
    idx = balanced_subset(y, per_class, seed, s["pool"])
    model = s["trainer"](name, s, idx, seed) if "trainer" in s else None  # a condition with a training loop of its own
    if model is None:
        augment = s["build"](name, s["vae"], x[idx], y[idx])
        if only_variants:  # classification accuracy score: every training image is a VAE variant
            augment.augment.p = 1.0
        model = train_classifier(x[idx], y[idx], steps=s["steps"], batch_size=64, seed=seed, augment=augment)
    x_eval, y_eval = s[split]
    return (predict(model, x_eval) == y_eval).float().mean().item()


def run_all(jobs: list, state: dict, workers: int) -> list[float]:
    if workers <= 1:
        _init(state)
        return [_job(j) for j in jobs]
    with multiprocessing.get_context("fork").Pool(workers, initializer=_init, initargs=(state,)) as pool:
        return pool.map(_job, jobs, chunksize=1)


def scored(names, dataset, per_class, seeds, split, state, workers, seed0=0, only_variants=False, done=None) -> dict:
    """Each condition of ``names`` on seeds ``seed0`` .. ``seed0 + seeds - 1``: name -> `stats.summarize` of its accuracies.
    ``done``: name -> row an earlier run scored on the same split from the same first seed; its runs are taken for the
    seeds they cover and only the others are run (the runs are seeded: a rerun with the same code gives the same
    accuracies; runs made before classic.ElasticBatch's blur became two matrices, 2026-12-07, drew the same fields to
    float rounding, and training can grow a rounding difference into one as large as a seed's, so a rerun of one of those
    can differ by that much, as after any change of summation order)."""
    earlier = {n: list((done or {}).get(n, {}).get("runs", ()))[:seeds] for n in names}
    jobs = [(dataset, name, per_class, seed0 + s, split, only_variants)
            for name in names for s in range(len(earlier[name]), seeds)]
    accs = iter(run_all(jobs, state, workers))
    out = {}
    for name in names:
        out[name] = summarize(earlier[name] + [next(accs) for _ in range(len(earlier[name]), seeds)])
        print(f"[{dataset} {split}, {per_class * 10} labels{', variants only' if only_variants else ''}] {name:<44} "
              f"{100 * out[name]['mean']:.1f} +- {100 * out[name]['std']:.1f}"
              f"{f' ({len(earlier[name])} runs reused)' if earlier[name] else ''}", flush=True)
    return out


def best_of(names: list[str], val: dict, per_class: int, seeds: int, state: dict, workers: int, dataset: str = "mnist",
            seed0: int = 0) -> str:
    """Score ``names`` on ``dataset``'s validation split into ``val`` and return the best of them other than "none"."""
    val.update(scored(names, dataset, per_class, seeds, "validation", state, workers, seed0=seed0))
    return max((n for n in names if n != "none"), key=lambda n: val[n]["mean"])
