"""MNIST as a density model: the NLL of dynamically binarized test digits, next to the literature (issue 12).

    python benchmarks/density.py [--quick] [--root ../shared/data] [--work DIR]
                                 [--trained DIR] [--fitted DIR] [--tuned DIR]

The figure MNIST density papers report: -log p(x) in nats of *dynamically binarized* test digits,
importance-weighted with k=1000 samples (IWAE, Burda et al. 2016, Table 1: 84.78 nats, 2-layer
82.90). Two steps, each a `vae-augment` command recorded with its figures:

1. ``vae-augment train`` on dynamically binarized digits with 64 latents and wider convolutions
   (``TRAIN``; about an hour on two CPU cores);
2. ``vae-augment fit-prior``: its N(0, I) prior replaced by a mixture of ``COMPONENTS`` Gaussians
   fitted to the codes of the training digits (four binarizations of each), then the test figures
   measured again on the same binarized digits (seed 0). The N(0, I) figure is the trained model's
   own (``vae-augment eval --iw-k 0 --binarized-k 1000``, run here when training did not measure it);
3. ``vae-augment train --init``: the fitted model trained on for ``TUNE``'s few epochs at a small
   learning rate, encoder, decoder and mixture prior together (the KL now against the learned prior),
   then measured the same way. Its setting was fixed before it was measured (not tuned on the test
   digits); it is the figure the goal is judged by, better or worse.

``--trained DIR`` starts from a finished step-1 run (its recorded command must be ``TRAIN``'s);
``--fitted DIR`` reads a finished step-2 output (its recorded fit-prior options must be ``FIT``'s; with
``--trained``, the run it was fitted to, whose N(0, I) figure is then measured),
``--tuned DIR`` (with ``--fitted``) a finished step-3 output (its recorded options must be ``TUNE``'s),
so that an hour's run is not repeated to write this file (``--quiet`` is not compared: it changes only
what is printed). ``--quick`` (CI) runs the steps on a
tiny config for one epoch and a short fit, with k=4 on 500 test digits.

Writes benchmarks/results/density.json; the summary in docs/benchmarks.md renders it (benchmarks/update_readme.py).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shlex
import tempfile
import time
from pathlib import Path

from common import DEFAULT_ROOT, RESULTS, write_json  # noqa: I001  (sets OMP_WAIT_POLICY before torch loads)

from vae_augment.cli import main as cli

TRAIN = ["--epochs", "80", "--latent-dim", "64", "--widths", "48,96", "--hidden", "512", "--batch-size", "128", "--lr", "2e-3",
         "--warmup-epochs", "5", "--binarize", "--seed", "0", "--iw-k", "0", "--device", "cpu", "--quiet"]
COMPONENTS = 2048
FIT = ["--components", str(COMPONENTS), "--steps", "8000", "--passes", "4", "--binarize", "--iw-k", "0", "--binarized-k", "1000",
       "--device", "cpu", "--quiet"]
QUICK_TRAIN = ["--epochs", "1", "--latent-dim", "8", "--widths", "8,16", "--hidden", "64", "--binarize", "--iw-k", "0", "--device", "cpu",
               "--quiet"]
QUICK_FIT = ["--components", "16", "--steps", "50", "--passes", "1", "--binarize", "--iw-k", "0", "--binarized-k", "4", "--device", "cpu",
             "--quiet"]
TUNE = ["--epochs", "10", "--lr", "2e-4", "--binarize", "--seed", "0", "--iw-k", "0", "--device", "cpu", "--quiet"]
QUICK_TUNE = ["--epochs", "1", "--lr", "2e-4", "--binarize", "--iw-k", "0", "--device", "cpu", "--quiet"]
LITERATURE = {"IWAE (Burda et al. 2016)": 84.78, "IWAE, 2 stochastic layers": 82.90}


def _options(command: "str | list[str]", after: str | None = None) -> list[str]:
    """The options of a recorded ``vae-augment <after> ...`` command (or of an option list) that change the result:
    not those that name paths (they differ by machine) nor ``--quiet`` (it changes only what is printed)."""
    words = shlex.split(command) if isinstance(command, str) else list(command)
    words = words[words.index(after) + 1:] if after else words
    paths = {"--dataset", "--data", "--root", "--out", "--checkpoint", "--init"}
    return [w for i, w in enumerate(words)
            if w not in paths and w != "--quiet" and (i == 0 or words[i - 1] not in paths)]


def _metrics(folder: Path) -> dict:
    path = folder / "metrics.json"
    if not path.is_file():
        raise SystemExit(f"{folder} has no metrics.json: not a finished run")
    return json.loads(path.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--root", default=DEFAULT_ROOT)
    parser.add_argument("--work", help="folder to keep the two checkpoints in (new or empty; default: a temporary folder)")
    parser.add_argument("--trained", help="a finished `vae-augment train` run with TRAIN's options (skips step 1)")
    parser.add_argument("--fitted", help="a finished `vae-augment fit-prior` output with FIT's options (skips both steps; with --trained, the run it was fitted to)")
    parser.add_argument("--tuned", help="a finished `vae-augment train --init FITTED` run with TUNE's options (with --fitted)")
    parser.add_argument("--out", default=str(RESULTS / "density.json"))
    args = parser.parse_args()
    if args.tuned and not args.fitted:
        parser.error("--tuned needs the --fitted checkpoint it was trained on from")
    with tempfile.TemporaryDirectory() as tmp:
        run(args, Path(args.work or tmp))


def _binarized(checkpoint: Path, root: str, k: int) -> dict:
    """``vae-augment eval --json`` of ``checkpoint``: the NLL of the dynamically binarized test digits (seed 0) and the gray figures."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = cli(["eval", "--checkpoint", str(checkpoint), "--dataset", "MNIST", "--root", root, "--iw-k", "0",
                    "--binarized-k", str(k), "--device", "cpu", "--json"])
    if code != 0:
        raise SystemExit("vae-augment eval failed")
    return json.loads(buffer.getvalue())


def run(args, work: Path) -> None:
    start = time.time()
    train_options, fit_options = (QUICK_TRAIN, QUICK_FIT) if args.quick else (TRAIN, FIT)
    tune_options = QUICK_TUNE if args.quick else TUNE
    trained = Path(args.trained) if args.trained else None if args.fitted else work / "trained"
    if args.fitted:
        fitted = Path(args.fitted)
    else:
        if not args.trained:
            if cli(["train", "--dataset", "MNIST", "--root", args.root, "--out", str(trained), *train_options]) != 0:
                raise SystemExit("vae-augment train failed")
        fitted = work / "fitted"
        if cli(["fit-prior", "--checkpoint", str(trained), "--dataset", "MNIST", "--root", args.root, "--out", str(fitted),
                *fit_options]) != 0:
            raise SystemExit("vae-augment fit-prior failed")
    metrics = _metrics(fitted)
    recorded_train, recorded_fit = _options(metrics["command"], "train"), _options(metrics["prior_command"], "fit-prior")
    if (recorded_train, recorded_fit) != (_options(train_options), _options(fit_options)):
        raise SystemExit(f"{fitted} was made with other options than this benchmark's:\n train {recorded_train}\n  (expected {train_options})\n"
                         f" fit-prior {recorded_fit}\n  (expected {fit_options})")
    k = int(fit_options[fit_options.index("--binarized-k") + 1])
    before = metrics["test_before_prior"]  # the trained model's own figures, copied by fit-prior
    if before.get("binarized_iw_k") != k:  # train ran with --iw-k 0: measure N(0, I)'s figure on the same digits
        if trained is None:
            raise SystemExit(f"{fitted}'s source checkpoint has no binarized NLL at k={k}; give it as --trained too")
        if args.fitted and _metrics(trained)["command"] != metrics["command"]:
            raise SystemExit(f"{fitted} was not fitted to {trained}: their training commands differ")
        before = _binarized(trained, args.root, k)
    after = metrics["test"]
    tuned = Path(args.tuned) if args.tuned else work / "tuned"
    if not args.tuned and cli(["train", "--dataset", "MNIST", "--root", args.root, "--out", str(tuned), "--init", str(fitted),
                               *tune_options]) != 0:
        raise SystemExit("vae-augment train --init failed")
    tuned_metrics = _metrics(tuned)
    recorded_tune = _options(tuned_metrics["command"], "train")
    if recorded_tune != _options(tune_options) or Path(tuned_metrics["training"].get("init", "")).resolve() != fitted.resolve():
        raise SystemExit(f"{tuned} was not made by this benchmark's step 3 from {fitted}: train {recorded_tune} from "
                         f"{tuned_metrics['training'].get('init')} (expected {tune_options})")
    trained_on = _binarized(tuned, args.root, k)
    result = {"protocol": {"quick": args.quick, "data": "MNIST test split (10,000 digits), dynamically binarized (seed 0)",
                           "train_command": metrics["command"], "prior_command": metrics["prior_command"],
                           "tune_command": tuned_metrics["command"],
                           "literature_nats": LITERATURE, "seconds_to_write": round(time.time() - start, 1)},
              "standard_prior": before, "mixture_prior": after, "prior_fit": metrics["prior"],
              "gain_nats": before["binarized_iw_nll_nats"] - after["binarized_iw_nll_nats"],
              "trained_with_prior": trained_on,
              "tune_gain_nats": after["binarized_iw_nll_nats"] - trained_on["binarized_iw_nll_nats"]}
    out = write_json(args.out, result)
    print(f"binarized IW-NLL (k={after['binarized_iw_k']}): {before['binarized_iw_nll_nats']:.2f} nats with N(0, I), "
          f"{after['binarized_iw_nll_nats']:.2f} with the {metrics['prior']['components']}-component prior, "
          f"{trained_on['binarized_iw_nll_nats']:.2f} trained on with it; wrote {out}")


if __name__ == "__main__":
    main()
