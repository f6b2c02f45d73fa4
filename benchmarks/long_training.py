"""The semi-supervised pipelines trained longer, at 100 MNIST labels (issue 30's 98% goal).

    python benchmarks/long_training.py [--quick] [--root ../shared/data] [--workers 2] [--steps 3000]
        [--phase all|validation|test] [--vae-dir DIR] [--val-seeds 5] [--seeds 10] [--test-seed0 100]

The utility benchmark trains each classifier for 1,000 steps of 64 images: about 1.3 passes over the 50,000
pseudo-labelled pool images, and FixMatch's own runs take hundreds of times longer. This script runs the
semi-supervised pipelines of benchmarks/semi.py (with the classic chosen in results/utility.json) for
``--steps`` steps, every training of a pipeline (the self-training round's and the final one) that long:

- ``validation`` (seeds 0 to ``--val-seeds`` - 1): `CONDITIONS` with the VAE trained on the pool only
  (benchmarks/validation_vae.py's: the bundled VAE was trained on the validation images, which can make the
  validation split overstate what its decoder adds); ``--vae-dir`` holds it or receives it (9 minutes).
  Of the kinds with decoded variants (`VARIANTS`), the best becomes ``classic+vae``.
- ``test`` (seeds ``--test-seed0`` to ``--test-seed0 + --seeds`` - 1, the bundled VAE): ``pseudo+classic``,
  ``classic+vae`` and ``classic+vae-without-variants``, their paired gains, and each against its own
  1,000-step runs in results/utility.json. Those ran on utility.py's test seeds (100-109): from the default
  first seed, 100, the comparison is paired; from another, unpaired (`stats.unpaired`). A test seed below
  ``--val-seeds`` draws the same labelled images as that validation seed (scored on other images): the
  earlier 3,000-step test (seeds 0-9, commit a4a1e06; ``--test-seed0 0 --out`` elsewhere reruns it) did on 0-4.

A phase reuses the runs the results file already holds for its conditions (the runs are seeded). Writes
benchmarks/results/long_training_<steps>.json; docs/benchmarks.md renders every such file, and the goals
table takes the length chosen on validation (`tables.chosen_long_training`: the shortest, unless a longer one's
``classic+vae`` beats it there with a paired interval above 0).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from common import DEFAULT_ROOT, RESULTS, write_json  # noqa: I001  (sets OMP_WAIT_POLICY before torch loads)

from runs import scored
from semi import without_variants
from stats import paired, unpaired
from utility import mnist_state
from validation_vae import pool_vae, with_vae

CONDITIONS = ("pseudo", "self fixmatch", "self fixmatch rborrow")  # the kinds run on validation, before " + <classic>"
VARIANTS = ("self fixmatch rborrow",)  # of those, the ones with decoded variants: the candidates for classic+vae
VAL_SEED0 = 0  # the validation phase's first seed, as utility.py's
UTILITY_TEST_SEED0 = 100  # utility.py's first test seed: a test phase from it pairs with the 1,000-step runs


def validation(result: dict, state: dict, classic: str, vae_dir: Path, args) -> None:
    """`CONDITIONS` on the validation split with the pool-only VAE; the best of `VARIANTS` becomes ``classic+vae``."""
    names = [f"{kind} + {classic}" for kind in CONDITIONS]
    own = with_vae(state, pool_vae(state, vae_dir, args.quick))
    val = scored(names, "mnist", 10, args.val_seeds, "validation", {"mnist": own}, args.workers, seed0=VAL_SEED0,
                 done=result.get("validation", {}))
    best = max((f"{kind} + {classic}" for kind in VARIANTS), key=lambda n: val[n]["mean"])
    result["validation"] = {"vae": "pool-only (training images 0-49,999; benchmarks/validation_vae.py's recipe)",
                            "seeds": args.val_seeds, **val,
                            "gains": {f"{n} - {names[0]}": paired(val[n], val[names[0]]) for n in names[1:]}
                            | {"variants' share": paired(val[best], val[without_variants(best)])}}
    result["chosen"] = {"pseudo+classic": f"pseudo + {classic}", "classic+vae": best,
                        "classic+vae-without-variants": without_variants(best)}


def test(result: dict, state: dict, args) -> None:
    """The chosen pipelines on the test split with the bundled VAE, their gains, and each against its 1,000-step runs."""
    chosen = {alias: result["chosen"][alias] for alias in ("pseudo+classic", "classic+vae", "classic+vae-without-variants")}
    same_seeds = result.get("protocol", {}).get("test_seed0") == args.test_seed0
    earlier = result.get("test", {}).get("100", {}) if same_seeds else {}
    rows = scored(list(chosen.values()), "mnist", 10, args.seeds, "test", {"mnist": state}, args.workers, seed0=args.test_seed0,
                  done={name: earlier[alias] for alias, name in chosen.items() if earlier.get(alias, {}).get("condition") == name})
    result["test"] = {"seeds": args.seeds, "100": {alias: {"condition": name, **rows[name]} for alias, name in chosen.items()}}
    t = result["test"]["100"]
    result["gains"] = {"classic+vae - pseudo+classic": paired(t["classic+vae"], t["pseudo+classic"]),
                       "classic+vae - classic+vae-without-variants": paired(t["classic+vae"], t["classic+vae-without-variants"]),
                       "classic+vae-without-variants - pseudo+classic": paired(t["classic+vae-without-variants"], t["pseudo+classic"])}
    short = json.loads((RESULTS / "utility.json").read_text())["mnist"]["test"]["100"]  # utility.py's test seeds: 100-109
    same = args.test_seed0 == UTILITY_TEST_SEED0 and all(args.seeds <= len(short[a]["runs"]) for a in chosen if a in short)
    compare = paired if same else unpaired  # paired: the same seeds, each run against its own seed's
    result["against_1000_steps"] = {alias: compare(t[alias], short[alias]) for alias in chosen if alias in short and not args.quick}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="40 steps, one seed, a pool-only VAE of one epoch")
    parser.add_argument("--root", default=DEFAULT_ROOT)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--phase", choices=("all", "validation", "test"), default="all")
    parser.add_argument("--vae-dir", help="the pool-only VAE's folder (read when it holds one, else trained into it)")
    parser.add_argument("--val-seeds", type=int, default=5)
    parser.add_argument("--seeds", type=int, default=10, help="test seeds (the utility benchmark's at 100 labels: 10)")
    parser.add_argument("--test-seed0", type=int, default=UTILITY_TEST_SEED0,
                        help="the test phase's first seed (utility.py's: 100; the earlier 3,000-step test's: 0)")
    parser.add_argument("--out", help="default: benchmarks/results/long_training_<steps>.json (with --quick: a temporary file)")
    args = parser.parse_args()
    start = time.time()
    if args.quick:
        args.steps, args.val_seeds, args.seeds = 40, 1, 1
    default = Path(tempfile.gettempdir()) / "vae-augment-long_training-quick.json" if args.quick else RESULTS / f"long_training_{args.steps}.json"
    out = Path(args.out or default)
    result = json.loads(out.read_text()) if out.is_file() else {}
    if args.quick and result and not result.get("protocol", {}).get("quick", True):
        parser.error(f"{out} holds a full run's results: give a quick run another --out")
    if result.get("protocol", {}).get("steps") not in (None, args.steps) or result.get("protocol", {}).get("quick", args.quick) != args.quick:
        result = {}  # runs of another length (or a quick run) are not reused
    state = mnist_state(args.root, args.steps)
    classic = json.loads((RESULTS / "utility.json").read_text())["mnist"]["chosen"]["classic"]["condition"]
    protocol = result.get("protocol", {})
    seconds = protocol.get("seconds", {})  # per phase, summed over its invocations (a prototype's included, see the docs)
    for phase in ("validation", "test"):
        if args.phase not in ("all", phase):
            continue
        phase_start = time.time()
        if phase == "validation":
            validation(result, state, classic, Path(args.vae_dir or tempfile.mkdtemp(prefix="vae-augment-pool-vae-")), args)
        elif "chosen" not in result:
            parser.error(f"--phase test needs the validation phase's choice at {args.steps} steps in {out}: run --phase validation first")
        else:
            if protocol.get("test_seed0") != args.test_seed0:
                seconds.pop("test", None)  # other test seeds: no run is reused, the phase's time starts afresh
            test(result, state, args)
        seconds[phase] = round(seconds.get(phase, 0) + time.time() - phase_start, 1)
        result["protocol"] = protocol = {**protocol, "steps": args.steps, "batch_size": 64, "labels": 100, "classic": classic,
                                         "quick": args.quick, "val_seed0": VAL_SEED0, f"{phase}_seeds": args.val_seeds if phase == "validation" else args.seeds,
                                         "seconds": seconds} | ({"test_seed0": args.test_seed0} if phase == "test" else {})
        write_json(out, result)  # after each phase: a failed test phase keeps the validation's runs
    print(json.dumps({k: result.get(k) for k in ("chosen", "gains", "against_1000_steps")}, indent=1))
    print(f"wrote {out} in {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
