"""Choosing `pseudo_label`'s settings: neighbours ``k`` and the confidence ``threshold`` (issue 30, item 2).

    python benchmarks/pseudo_choice.py [--quick] [--root ../shared/data] [--workers 2] [--seeds 3]

MNIST at 100 labels, the utility benchmark's protocol (benchmarks/utility.py: the same labelled draws,
unlabelled pool, small CNN and classic augmentation, the one chosen there). Two views, neither on the
test split:
- ``labels``: how many of the pool's propagated labels are right, for each ``k`` in `KS`, and at each
  confidence threshold of `THRESHOLDS` how many pool images keep a label and how many of those are
  right (the pool's true labels score the propagation only; `--label-seeds` labelled draws);
- ``validation``: what decides: the classifier trained on the labelled images plus the kept
  pseudo-labels, with the classic augmentation, scored on the validation split (training images
  50,000-59,999) for each setting of `CANDIDATES`, paired by seed with the library's default
  (k = 10, threshold 0) as ``pseudo + C`` is in the utility benchmark.
Writes benchmarks/results/pseudo_choice.json.
"""

from __future__ import annotations

import argparse
import json
import time

from common import DEFAULT_ROOT, RESULTS, write_json  # noqa: I001  (sets OMP_WAIT_POLICY before torch loads)
import torch

from runs import balanced_subset, scored
from stats import paired
from utility import POOL, mnist_state
from vae_augment.latent import propagate_labels
from vae_augment.pseudo import DEFAULT_NEIGHBOURS

KS = [5, 10, 20, 40]
THRESHOLDS = [0.0, 0.5, 0.8, 0.9, 0.95]
CANDIDATES = ["pseudo", "pseudo k=5", "pseudo k=20", "pseudo t=0.5", "pseudo t=0.9"]  # the first: the default, k=10 and no threshold


def label_quality(state: dict, seeds: int) -> dict:
    """For each k: the share of right labels over the pool; per threshold, the share kept and right among kept."""
    x, y, vae = state["x"], state["y"], state["vae"]
    out: dict = {}
    for k in KS:
        rows = {f"{t:g}": {"kept": [], "right": []} for t in THRESHOLDS}
        for seed in range(seeds):
            idx = balanced_subset(y, 10, seed, POOL)
            keep = ~torch.isin(state["pool_index"], idx)
            with torch.inference_mode():
                codes = vae.encode(x[idx]).mean
            labels, confidence = propagate_labels(codes, y[idx], state["pool_codes"][keep], k=k)
            truth = y[state["pool_index"][keep]]
            for t in THRESHOLDS:
                kept = (labels >= 0) & (confidence >= t)
                rows[f"{t:g}"]["kept"].append(kept.float().mean().item())
                rows[f"{t:g}"]["right"].append((labels[kept] == truth[kept]).float().mean().item())
        out[str(k)] = {t: {name: sum(v) / len(v) for name, v in r.items()} for t, r in rows.items()}
        print(f"k={k:<3} " + "  ".join(f"t={t}: kept {r['kept']:.3f} right {r['right']:.3f}" for t, r in out[str(k)].items()),
              flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--root", default=DEFAULT_ROOT)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=3, help="paired seeds of the validation runs")
    parser.add_argument("--label-seeds", type=int, default=5, help="labelled draws for the label quality")
    parser.add_argument("--steps", type=int, default=1000, help="classifier steps (the utility benchmark's)")
    parser.add_argument("--out", default=str(RESULTS / "pseudo_choice.json"))
    args = parser.parse_args()
    start = time.time()
    seeds, label_seeds, steps = (1, 1, 40) if args.quick else (args.seeds, args.label_seeds, args.steps)
    state = mnist_state(args.root, steps)
    utility = json.loads((RESULTS / "utility.json").read_text())
    classic = utility["mnist"]["chosen"]["classic"]["condition"]
    result: dict = {"protocol": {"labels": 100, "classic": classic, "steps": steps, "seeds": seeds, "label_seeds": label_seeds,
                                 "pool": f"the utility benchmark's unlabelled pool ({len(state['pool_index']):,} images)",
                                 "default": {"k": DEFAULT_NEIGHBOURS, "threshold": 0.0}, "quick": args.quick}}
    result["labels"] = label_quality(state, label_seeds)
    names = [f"{c} + {classic}" for c in CANDIDATES]
    val = scored(names, "mnist", 10, seeds, "validation", {"mnist": state}, args.workers)
    result["validation"] = {**val, "gains": {n: paired(val[n], val[names[0]]) for n in names[1:]}}
    best = max(names, key=lambda n: val[n]["mean"])
    result["chosen"] = {"condition": best, "over_default": result["validation"]["gains"].get(best)}
    result["protocol"]["seconds"] = round(time.time() - start, 1)
    out = write_json(args.out, result)
    print(f"best on validation: {best}; wrote {out}")


if __name__ == "__main__":
    main()
