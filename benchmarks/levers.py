"""Levers tried for issue 12 on the MNIST validation split, on top of the best classic pipeline.

    python benchmarks/levers.py [--quick] [--root ../shared/data] [--seeds 5] [--workers 2]
                                [--levers LEVER ...] [--add] [--other-vae CHECKPOINT --other-name NAME]

The protocol of benchmarks/utility.py's selection phase (100 labels, the same paired seeds 0-4,
the validation images 50,000-59,999, the small CNN for 1,000 steps): each lever runs as
"affine+elastic + X" (X, then the affine and elastic transform) and is compared with the classic
pipeline alone and with the chosen `class s=0.75 p=0.5`. Validation only: none of these is used on
the test split unless it beats the chosen setting here.

- ``class s=1 p=0.5``, ``class s=0.75 p=0.75``: more of the chosen noise.
- ``neighbour s=1 p=0.5``: the library's mode "neighbour" (towards one of the 10 nearest bank codes).
- ``... with NAME`` (``--other-vae``): the chosen setting and ``class s=1`` with another checkpoint
  in place of the bundled mnist (a retrained, sharper model), on the same seeds and images.
- ``@2000``: the classic pipeline and the chosen setting with 2,000 classifier steps (underfitting?).

The other rows of benchmarks/results/levers.json and levers_borrow.json (``bank``, ``bankcls``, ``sharp``,
``noaffine``, ``perclass``, ``classextra``, ``extra``, ``prop*`` and the VAE between the affine and the
elastic) came from prototypes since retired: what paid became the library's `LatentBorrow` (``propres``)
and `LatentMix` (``extra``), the rest did not pay. docs/benchmarks.md describes them; their code is in git
history (``git show 44fbf27:benchmarks/levers.py``). A lever is a VAEAugment setting of `CANDIDATES`;
``--add`` puts a new one's rows beside the recorded ones.

Writes benchmarks/results/levers.json; docs/benchmarks.md renders it (benchmarks/update_readme.py).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from common import DEFAULT_ROOT, RESULTS, mnist, write_json  # noqa: I001  (sets OMP_WAIT_POLICY before torch loads)

from runs import scored
from stats import paired
from utility import POOL, VALIDATION, VAE_CANDIDATES
from utility import build as utility_build
from vae_augment import load_vae

CLASSIC = "affine+elastic"
CHOSEN = f"{CLASSIC} + class s=0.75 p=0.5"
RETIRED_AT = "44fbf27"  # the last commit with the retired prototypes' code
# the levers: VAEAugment settings beside utility.py's candidates, name -> keyword arguments
LEVERS = {"class s=1 p=0.5": dict(mode="class", strength=1.0, p=0.5),
          "class s=0.75 p=0.75": dict(mode="class", strength=0.75, p=0.75),
          "neighbour s=1 p=0.5": dict(mode="neighbour", strength=1.0, p=0.5)}
CANDIDATES = {**VAE_CANDIDATES, **LEVERS}


def build(name, vae, x_lab, y_lab):
    """utility.build with the levers: "classic + lever" chains the lever, then the classic."""
    return utility_build(name, vae, x_lab, y_lab, CANDIDATES)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--root", default=DEFAULT_ROOT)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default=str(RESULTS / "levers.json"))
    parser.add_argument("--levers", nargs="+", metavar="LEVER", help="only these levers (default: all)")
    parser.add_argument("--other-vae", metavar="CHECKPOINT", help="also score the chosen setting (and class s=1) with this "
                        "checkpoint in place of the bundled mnist, e.g. a retrained sharper model")
    parser.add_argument("--other-name", default="other", help="the name --other-vae is reported under")
    parser.add_argument("--add", action="store_true", help="add these levers' rows to the existing --out (whose classic and chosen "
                        "runs this run must repeat exactly) instead of writing it afresh; seconds add up")
    args = parser.parse_args()
    if args.add and (args.quick or not Path(args.out).is_file()):
        parser.error("--add extends an existing full run's --out file")
    start = time.time()
    seeds, steps = (1, 40) if args.quick else (args.seeds, 1000)
    x, y = mnist(args.root, train=True)
    state = {"mnist": {"x": x, "y": y, "pool": POOL, "vae": load_vae("mnist"), "steps": steps,
                       "validation": (x[VALIDATION], y[VALIDATION]), "build": build}}
    every = list(LEVERS)
    unknown = sorted(set(args.levers or ()) - set(every))
    if unknown:
        parser.error(f"unknown levers {unknown}; known: {every} (the retired prototypes' code is in git history: "
                     f"git show {RETIRED_AT}:benchmarks/levers.py)")
    levers = args.levers or (["class s=1 p=0.5"] if args.quick else every)
    names = [CLASSIC, CHOSEN, *(f"{CLASSIC} + {lever}" for lever in levers)]
    rows = scored(names, "mnist", 10, seeds, "validation", state, args.workers)
    others, other_metrics = [], None
    if args.other_vae:  # the same labelled images, seeds and classifier; only the checkpoint differs
        state["mnist-other"] = {**state["mnist"], "vae": load_vae(args.other_vae)}
        metrics = state["mnist-other"]["vae"].metrics or {}
        other_metrics = {"command": metrics.get("command"), "test": metrics.get("test")}
        other = scored([CHOSEN, f"{CLASSIC} + class s=1 p=0.5"], "mnist-other", 10, seeds, "validation", state, args.workers)
        others = [f"{name} with {args.other_name}" for name in other]
        rows.update(zip(others, other.values()))
    if args.add:  # the new rows beside the earlier ones: valid only if this run repeats their baselines exactly
        earlier = json.loads(Path(args.out).read_text())
        for name in (CLASSIC, CHOSEN):
            if earlier["runs"][name]["runs"] != rows[name]["runs"]:
                raise SystemExit(f"--add: {name} gave {rows[name]['runs']} here, {earlier['runs'][name]['runs']} in {args.out}: "
                                 "the protocol or the machine's arithmetic changed, so run every lever afresh (without --add)")
        rows = {**earlier["runs"], **rows}
        other_metrics = other_metrics or earlier["protocol"].get("other_metrics")
        args.other_vae = args.other_vae or earlier["protocol"].get("other_vae")
        seconds = earlier["protocol"]["seconds"]
    else:
        state["mnist"]["steps"] = 2 * steps
        longer = scored([CLASSIC, CHOSEN], "mnist", 10, seeds, "validation", state, args.workers)
        rows.update({f"{name} @{2 * steps}": r for name, r in longer.items()})
        seconds = 0.0
    gains = {name: {"over classic": paired(r, rows[CLASSIC]), "over chosen": paired(r, rows[CHOSEN])}
             for name, r in rows.items() if "@" not in name and name not in (CLASSIC, CHOSEN)}
    gains[f"{CHOSEN} @{2 * steps}"] = {"over classic": paired(rows[f"{CHOSEN} @{2 * steps}"], rows[f"{CLASSIC} @{2 * steps}"])}
    gains[CHOSEN] = {"over classic": paired(rows[CHOSEN], rows[CLASSIC])}
    result = {"protocol": {"split": "validation (training images 50,000-59,999)", "labelled": 100, "seeds": seeds, "steps": steps,
                           "quick": args.quick, "other_vae": args.other_vae, "other_metrics": other_metrics, "classic": CLASSIC, "chosen": CHOSEN,
                           "seconds": round(seconds + time.time() - start, 1)},
              "runs": rows, "gains": gains}
    out = write_json(args.out, result)
    print(f"wrote {out} in {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
