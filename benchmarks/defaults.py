"""Does `VAEAugment(vae)` with no arguments do harm on data nobody tuned it on? (issue 30, item 4)

    python benchmarks/defaults.py [--root ../shared/data] [--fashion-root DIR] [--phase validation|test|all] [--quick]

The default is judged as a user gets it, `VAEAugment(vae)`, alone against no augmentation and before the
dataset's classic augmentation against the classic alone, paired by seed (benchmarks/runs.py), 100 labels
(10 per class) unless said:

- Fashion-MNIST (when ``--fashion-root`` holds it: benchmarks/fashion_data.py writes it), a dataset the
  defaults were never tuned on. Its VAE is trained as a user would train one, `vae-augment train --dataset
  FashionMNIST` with every default (into ``--fashion-vae``, reused when it is there). Splits as MNIST's in
  benchmarks/utility.py: labelled images from the first 50,000 training images, validation 50,000-59,999,
  the test split. ``--phase validation`` chooses its classic among utility.py's candidates (5 seeds) and
  compares the candidate defaults (DEFAULT_CANDIDATES: the rule of each version) before it; ``--phase test``
  runs none, the classic, `VAEAugment(vae)` and the classic then `VAEAugment(vae)` once (10 seeds).
- MNIST, the bundled checkpoint, 100 and 1,000 labels: `VAEAugment(vae)` alone and before the classic chosen
  in benchmarks/results/utility.json, on that benchmark's test seeds, so its `none` and `classic` runs there
  are the pairs (10 seeds at 100 labels, 5 at 1,000).
- The digits (both VAEs) are measured by benchmarks/utility.py, whose conditions include the default.

``--phase figures`` (also part of ``all``) measures why: on 1,000 test images, how far the reconstruction and
the default variant move an image, as a share of the distance to its nearest neighbour among 20,000 training
images (mean absolute difference per pixel).

Writes benchmarks/results/defaults.json (with the settings the default chose on each checkpoint and the
checkpoint figures the careful settings read); docs/benchmarks.md renders it.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

from common import DEFAULT_ROOT, RESULTS, mnist, write_json  # noqa: I001  (sets OMP_WAIT_POLICY before torch loads)
import torch

from runs import best_of, scored
from stats import paired
from utility import CLASSIC, build
from vae_augment import VAEAugment, load_vae, train
from vae_augment.policy import DEFAULT_STRENGTH

# candidate defaults, before the classic, compared on Fashion-MNIST's validation split; "default" is VAEAugment(vae)
DEFAULT_CANDIDATES = {
    "default": {},
    "plain s=0.2": dict(residual=False, p=1.0, strength=0.2),  # the earlier default of a checkpoint trained on many images
    "residual s=0.2": dict(residual=True, p=1.0, strength=0.2),
    "residual s=0.2 p=0.5": dict(residual=True, p=0.5, strength=0.2),
    "residual s=0.1 p=0.5": dict(residual=True, p=0.5, strength=0.1),  # the default of a checkpoint handled with care
}
VALIDATION_CANDIDATES = [n for n in DEFAULT_CANDIDATES if n != "default"]
TEST_SEED0 = 100  # the test split's first seed, as benchmarks/utility.py's (so MNIST's none and classic runs there pair)
FASHION_SEEDS = {"validation": 5, "test": 10}


def defaults_build(name, vae, x_lab, y_lab):
    return build(name, vae, x_lab, y_lab, DEFAULT_CANDIDATES)


def chosen_settings(vae) -> dict:
    """What `VAEAugment(vae)` chose for ``vae``: residual, p and strength (and the checkpoint figures it read)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        augment = VAEAugment(vae)
    test = vae.metrics.get("test") or {}
    return {"residual": augment.residual, "p": augment.p, "strength": augment.strength,
            "train_images": vae.metrics.get("train_images"), "reconstruction_r2": test.get("reconstruction_r2")}


@torch.no_grad()
def neighbour_figures(vae, reference: torch.Tensor, images: torch.Tensor, seed: int = 0) -> dict:
    """How far ``images``' reconstructions, plain variants and residual variants (strength `DEFAULT_STRENGTH`) lie from
    them, each as a share of the distance to the image's nearest neighbour in ``reference`` (mean |difference| per pixel)."""
    def distance(a, b):
        return (a - b).abs().flatten(1).mean(1)
    nearest = torch.cat([torch.cdist(chunk.flatten(1), reference.flatten(1), p=1).min(1).values for chunk in images.split(250)])
    nearest = nearest / images[0].numel()
    made = {"reconstruction": vae.reconstruct(images)}
    for residual in (False, True):
        augment = VAEAugment(vae, strength=DEFAULT_STRENGTH, residual=residual, p=1.0, generator=torch.Generator().manual_seed(seed))
        made[f"{'residual' if residual else 'plain'} variant"] = augment(images)
    return {"nearest_neighbour_distance": nearest.mean().item(),
            **{name: (distance(out, images).mean() / nearest.mean()).item() for name, out in made.items()}}


def fashion_state(root: str, vae_dir: Path, steps: int, epochs: int | None) -> dict:
    """Fashion-MNIST's pool, validation and test splits, and a VAE trained on its training images by `train`'s defaults."""
    x, y = mnist(root, True, "FashionMNIST")
    if not (vae_dir / "model.safetensors").is_file():
        kwargs = {} if epochs is None else {"epochs": epochs}
        train("FashionMNIST", vae_dir, root=root, progress=False, log=False, **kwargs)  # `vae-augment train`'s defaults
    vae = load_vae(vae_dir)
    return {"x": x, "y": y, "pool": 50_000, "vae": vae, "steps": steps, "build": defaults_build,
            "validation": (x[50_000:], y[50_000:]), "test": mnist(root, False, "FashionMNIST")}


def run_fashion(args, out: dict, steps: int) -> None:
    state = {"fashion": fashion_state(args.fashion_root, Path(args.fashion_vae), steps, 1 if args.quick else None)}
    seeds = {k: 2 if args.quick else v for k, v in FASHION_SEEDS.items()}
    out["checkpoint"] = chosen_settings(state["fashion"]["vae"])
    out["vae"] = f"vae-augment train --dataset FashionMNIST (every default{', 1 epoch' if args.quick else ''})"
    if args.phase in ("figures", "all"):
        f = state["fashion"]
        out["neighbour_figures"] = neighbour_figures(f["vae"], f["x"][:20_000], f["test"][0][:1000])
    if args.phase in ("validation", "all"):
        val: dict = {}
        classic = best_of(["none", *CLASSIC], val, 10, seeds["validation"], state, args.workers, dataset="fashion")
        val.update(scored([f"{classic} + {n}" for n in VALIDATION_CANDIDATES], "fashion", 10, seeds["validation"], "validation",
                          state, args.workers))
        out["classic"] = classic
        out["validation"] = val
        out["validation_gains"] = {f"{n} - {classic}": paired(val[n], val[classic]) for n in val if n.startswith(f"{classic} + ")}
    if args.phase in ("test", "all"):
        if "classic" not in out:
            raise SystemExit("run --phase validation first: the classic is chosen there")
        classic = out["classic"]
        names = ["none", classic, "default", f"{classic} + default"]
        test = scored(names, "fashion", 10, seeds["test"], "test", state, args.workers, seed0=TEST_SEED0)
        out["test"] = test
        out["gains"] = {"default - none": paired(test["default"], test["none"]),
                        f"{classic} + default - {classic}": paired(test[f"{classic} + default"], test[classic])}


def run_mnist(args, out: dict, steps: int) -> None:
    from utility import mnist_state
    utility = json.loads((RESULTS / "utility.json").read_text())["mnist"]
    state = {"mnist": {**mnist_state(args.root, steps), "build": defaults_build}}
    out["checkpoint"] = chosen_settings(state["mnist"]["vae"])
    m = state["mnist"]
    if args.phase in ("figures", "all"):
        out["neighbour_figures"] = neighbour_figures(m["vae"], m["x"][:20_000], m["test"][0][:1000])
    if args.phase not in ("test", "all"):  # MNIST's choices were made in benchmarks/utility.py: only its test runs here
        return
    for labels, key, seeds in (("100", "chosen", 10), ("1000", "chosen_1000", 5)):
        seeds = 2 if args.quick else seeds
        classic = utility[key]["classic"]["condition"]
        rows = scored(["default", f"{classic} + default"], "mnist", int(labels) // 10, seeds, "test", state, args.workers,
                      seed0=TEST_SEED0)
        pairs = utility["test"][labels]  # the same seeds' none and classic runs of benchmarks/utility.py
        none, classic_runs = ({**pairs[a], "runs": pairs[a]["runs"][:seeds]} for a in ("none", "classic"))
        out[labels] = {"classic": classic, "test": rows,
                       "gains": {"default - none": paired(rows["default"], none),
                                 f"{classic} + default - {classic}": paired(rows[f"{classic} + default"], classic_runs)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=DEFAULT_ROOT, help="MNIST's data root")
    parser.add_argument("--fashion-root", help="Fashion-MNIST's data root (FashionMNIST/raw/; benchmarks/fashion_data.py)")
    parser.add_argument("--fashion-vae", default="runs/fashion_vae", help="its VAE's folder: trained there by the defaults if empty")
    parser.add_argument("--datasets", default="fashion,mnist")
    parser.add_argument("--phase", choices=["figures", "validation", "test", "all"], default="all")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="CI: 2 seeds, 40 steps, a 1-epoch VAE")
    parser.add_argument("--out", default=str(RESULTS / "defaults.json"))
    args = parser.parse_args()
    start, steps = time.time(), 40 if args.quick else args.steps
    out = Path(args.out)
    result = json.loads(out.read_text()) if out.is_file() and not args.quick else {}
    parts = result.get("protocol", {}).get("seconds_parts", {})  # of each phase run, for the total
    result["protocol"] = {"quick": args.quick, "steps": steps, "labels": "10 per class (and 100 per class on MNIST)",
                          "pairing": "seed s: the same labelled images, classifier initialisation and batch order"}
    datasets = args.datasets.split(",")
    if "fashion" in datasets:
        if args.fashion_root and (Path(args.fashion_root) / "FashionMNIST" / "raw").is_dir():
            run_fashion(args, result.setdefault("fashion", {}), steps)
        else:
            print("Fashion-MNIST skipped: --fashion-root does not hold FashionMNIST/raw (benchmarks/fashion_data.py)")
    if "mnist" in datasets:
        if (Path(args.root) / "MNIST" / "raw").is_dir() and (RESULTS / "utility.json").is_file():
            run_mnist(args, result.setdefault("mnist", {}), steps)
        else:
            print("MNIST skipped: no MNIST/raw under --root, or no benchmarks/results/utility.json to pair with")
    parts[f"{args.phase} {args.datasets}"] = round(time.time() - start)
    result["protocol"].update(seconds_parts=parts, seconds=sum(parts.values()))
    write_json(out, result)
    print(f"wrote {out} in {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
