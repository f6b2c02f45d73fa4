"""Does VAE augmentation raise accuracy when labels are scarce?

    python benchmarks/utility.py [--quick] [--root ../shared/data] [--phase select|test|all]   (default: test)

Protocol: MNIST with 100 and 1,000 labelled training images (class-balanced, drawn from the first
50,000 training images), the small CNN of benchmarks/common.py trained for a fixed budget (1,500
steps of batch 64, Adam), test accuracy on the 10,000 test images, 3 seeds (mean and standard
deviation). The VAE is the bundled `mnist` checkpoint, trained on the (unlabelled) MNIST training
images. Settings are chosen on a validation split (training images 50,000-59,999), never on the
test split: phase `select` scores every explored condition there at 100 labels (about 40 minutes);
phase `test` then reports the four headline conditions on the test split once (about 15 minutes):
`none`, `classic` (a RandomAffine), `vae` (the best VAE-only condition on the validation split)
and `classic+vae` (the best combination with the affine); --test-explored adds the rest. Writes
benchmarks/results/utility.json and benchmarks/results/utility.png.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from common import DEFAULT_ROOT, RESULTS, mnist, predict, train_classifier, write_json  # noqa: I001  (sets OMP_WAIT_POLICY before torch loads)
import torch

from vae_augment import LatentMix, VAEAugment, load_vae

VALIDATION = slice(50_000, 60_000)
HEADLINE = ("none", "classic", "vae", "classic+vae")
# Used by --quick and until `--phase select` has scored the candidates on the validation split;
# after that, `vae` is the best VAE-only condition there and `classic+vae` the best combination.
FALLBACK = {"vae": "posterior s=1.5", "classic+vae": "classic+data s=0.2"}

# The VAE conditions explored: name -> (transform, keyword arguments).
VAE_CONDITIONS = {
    "posterior s=1.5": ("VAEAugment", dict(mode="posterior", strength=1.5)),
    "posterior s=1.5 p=0.5": ("VAEAugment", dict(mode="posterior", strength=1.5, p=0.5)),
    "posterior s=3 p=0.5": ("VAEAugment", dict(mode="posterior", strength=3.0, p=0.5)),
    "data s=0.2": ("VAEAugment", dict(strength=0.2)),
    "data s=0.35": ("VAEAugment", dict(strength=0.35)),
    "data s=0.35 p=0.5": ("VAEAugment", dict(strength=0.35, p=0.5)),
    "data s=0.5 p=0.5": ("VAEAugment", dict(strength=0.5, p=0.5)),
    "residual s=0.35": ("VAEAugment", dict(strength=0.35, residual=True)),
    "residual s=0.5 p=0.5": ("VAEAugment", dict(strength=0.5, residual=True, p=0.5)),
    "extrapolate lam=0.5": ("LatentMix", dict(method="extrapolate", lam=0.5, p=0.5)),
    "interpolate lam=0-1": ("LatentMix", dict(method="interpolate", lam=(0.0, 1.0), p=0.5)),
    "neighbour s=0.5": ("VAEAugment", dict(mode="neighbour", strength=0.5)),
    "neighbour s=0.5 p=0.5": ("VAEAugment", dict(mode="neighbour", strength=0.5, p=0.5)),
    "neighbour s=1": ("VAEAugment", dict(mode="neighbour", strength=1.0)),
    "neighbour s=1 p=0.5": ("VAEAugment", dict(mode="neighbour", strength=1.0, p=0.5)),
}
# Each of these is also combined with the affine (VAE first, then the affine): "classic+<name>".
COMBINED = ("posterior s=1.5", "posterior s=1.5 p=0.5", "data s=0.2", "data s=0.35 p=0.5", "extrapolate lam=0.5",
            "neighbour s=0.5", "neighbour s=1 p=0.5")


def code(name: str) -> str:
    """The library call behind a condition, for the README."""
    if name.startswith("classic+"):
        return f"{code(name[len('classic+'):])}, then the affine"
    kind, kwargs = VAE_CONDITIONS[name]
    return f"`{kind}(vae, {', '.join(f'{k}={v!r}' for k, v in kwargs.items())})`"


def choose(validation: dict | None) -> dict[str, dict[str, str]]:
    """The headline `vae` and `classic+vae` conditions: the best of each group on the validation
    split, or `FALLBACK` where that split has no scores for the group (recorded as the source)."""
    validation = validation or {}
    groups = {"vae": [n for n in validation if n in VAE_CONDITIONS],
              "classic+vae": [n for n in validation if n.removeprefix("classic+") in COMBINED and n.startswith("classic+")]}
    chosen = {}
    for alias, names in groups.items():
        best = max(names, key=lambda n: validation[n]["mean"], default=None)
        name = best or FALLBACK[alias]
        chosen[alias] = {"condition": name, "code": code(name), "source": "validation split" if best else "fallback (no validation scores)"}
    return chosen


def balanced_subset(y: torch.Tensor, per_class: int, seed: int, pool: int = 50_000) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    picks = []
    for c in range(10):
        idx = (y[:pool] == c).nonzero().squeeze(1)
        picks.append(idx[torch.randperm(len(idx), generator=g)[:per_class]])
    return torch.cat(picks)


class RandomAffineBatch:
    """RandomAffine(degrees=15, translate=0.1, scale=(0.9, 1.1), shear=10) with one draw per image,
    done for the whole batch at once with affine_grid/grid_sample (a per-image loop over
    v2.RandomAffine gives the same distribution, 20x slower)."""

    def __init__(self, degrees=15.0, translate=0.1, scale=(0.9, 1.1), shear=10.0):
        self.degrees, self.translate, self.scale, self.shear = degrees, translate, scale, shear

    def __call__(self, x, y):
        n = x.shape[0]
        u = torch.rand(n, 5)
        angle = torch.deg2rad((u[:, 0] * 2 - 1) * self.degrees)
        shear = torch.deg2rad((u[:, 1] * 2 - 1) * self.shear)
        scale = self.scale[0] + u[:, 2] * (self.scale[1] - self.scale[0])
        tx, ty = (u[:, 3] * 2 - 1) * self.translate * 2, (u[:, 4] * 2 - 1) * self.translate * 2  # grid units span 2
        cos, sin = torch.cos(angle), torch.sin(angle)
        # rotation * shear (x-shear), scaled; inverse map for grid_sample
        a = torch.stack([torch.stack([cos, -sin + cos * torch.tan(shear)], 1), torch.stack([sin, cos + sin * torch.tan(shear)], 1)], 1)
        a = a * scale.view(-1, 1, 1)
        inverse = torch.linalg.inv(a)
        t = torch.stack([tx, ty], 1).unsqueeze(2)
        theta = torch.cat([inverse, -inverse @ t], 2)
        grid = torch.nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
        return torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class Chain:
    def __init__(self, *steps):
        self.steps = steps

    def __call__(self, x, y):
        for step in self.steps:
            x = step(x, y)
        return x


class Batch:
    """A VAEAugment on the whole batch (one draw per image)."""

    def __init__(self, augment):
        self.augment = augment

    def __call__(self, x, y):
        return self.augment(x)


class Mix:
    """Same-class latent interpolation / extrapolation on (images, labels)."""

    def __init__(self, mix):
        self.mix = mix

    def __call__(self, x, y):
        return self.mix(x, y)[0]


def conditions(vae) -> dict[str, object]:
    """Every augmentation compared, by name: none, classic, each VAE condition and each combination."""
    classic = RandomAffineBatch()

    def build(name):
        kind, kwargs = VAE_CONDITIONS[name]
        return Batch(VAEAugment(vae, **kwargs)) if kind == "VAEAugment" else Mix(LatentMix(vae, **kwargs))

    out = {"none": None, "classic": classic}
    out.update({name: build(name) for name in VAE_CONDITIONS})
    out.update({f"classic+{name}": Chain(build(name), classic) for name in COMBINED})
    return out


def run(x, y, x_eval, y_eval, labels: int, augment, seed: int, steps: int) -> float:
    idx = balanced_subset(y, labels // 10, seed)
    torch.manual_seed(seed)
    model = train_classifier(x[idx], y[idx], steps=steps, batch_size=64, seed=seed, augment=augment)
    return (predict(model, x_eval) == y_eval).float().mean().item()


def summarize(runs: list[float]) -> dict:
    return {"mean": statistics.fmean(runs), "std": statistics.stdev(runs) if len(runs) > 1 else 0.0, "runs": runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--root", default=DEFAULT_ROOT)
    parser.add_argument("--phase", choices=["all", "select", "test"], default="test")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--conditions", help="comma-separated subset of conditions to run (results are merged into the file)")
    parser.add_argument("--test-explored", action="store_true", help="also report every explored condition on the test split")
    parser.add_argument("--out", default=str(RESULTS / "utility.json"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    start = time.time()
    steps, seeds = (60, 1) if args.quick else (args.steps, args.seeds)

    x, y = mnist(args.root, train=True)
    x_test, y_test = mnist(args.root, train=False)
    x_val, y_val = x[VALIDATION], y[VALIDATION]
    vae = load_vae("mnist")
    candidates = conditions(vae)
    explored = list(candidates)
    if args.quick:
        explored = ["none", "classic", *FALLBACK.values()]
    if args.conditions:
        explored = [c.strip() for c in args.conditions.split(",")]
        unknown = [c for c in explored if c not in candidates and c not in HEADLINE]
        if unknown:
            raise SystemExit(f"unknown conditions {unknown}; known: {list(HEADLINE) + list(candidates)}")

    out = Path(args.out)
    result = json.loads(out.read_text()) if out.is_file() and not args.quick else {}
    protocol = {
        "dataset": "MNIST", "labelled": [100, 1000], "pool": "training images 0-49,999 (class-balanced draw per seed)",
        "validation": "training images 50,000-59,999", "test": "MNIST test split (10,000)", "classifier": "SmallCNN (benchmarks/common.py)",
        "steps": steps, "batch_size": 64, "optimizer": "Adam lr 1e-3", "seeds": seeds,
        "vae": "bundled checkpoint 'mnist', trained on the unlabelled MNIST training images", "quick": args.quick,
    }
    result["protocol"] = {**result.get("protocol", {}), **protocol}

    if args.phase in ("all", "select"):
        selection = dict(result.get("validation_100", {})) if args.conditions else {}
        for name in explored:
            if name not in candidates:
                continue  # the headline aliases are resolved from this table, not scored in it
            accs = [run(x, y, x_val, y_val, 100, candidates[name], seed, steps) for seed in range(seeds)]
            selection[name] = summarize(accs)
            print(f"[validation, 100 labels] {name:<32} {selection[name]['mean']:.4f} +- {selection[name]['std']:.4f}", flush=True)
        result["validation_100"] = selection

    if args.phase in ("all", "test"):
        chosen = choose(result.get("validation_100"))
        resolved = {**candidates, **{alias: candidates[c["condition"]] for alias, c in chosen.items()}}
        headline = [n for n in HEADLINE if not args.conditions or n in explored]
        # the description of an alias changes only when its test results are re-measured
        result["protocol"]["chosen"] = {**result["protocol"].get("chosen", {}), **{a: c for a, c in chosen.items() if a in headline}}
        tested = result.get("results", {}) if args.conditions else {}
        for labels in (100, 1000):
            tested.setdefault(str(labels), {})
            # other conditions reach the test split only when asked for (never while choosing)
            names = headline + [n for n in explored if n not in HEADLINE and labels == 100 and args.test_explored]
            for name in names:
                # test seeds differ from selection seeds
                accs = [run(x, y, x_test, y_test, labels, resolved[name], 100 + seed, steps) for seed in range(seeds)]
                tested[str(labels)][name] = summarize(accs)
                r = tested[str(labels)][name]
                print(f"[test, {labels} labels] {name:<32} {r['mean']:.4f} +- {r['std']:.4f}", flush=True)
        result["results"] = tested

    result["protocol"]["seconds"] = round(time.time() - start, 1)
    write_json(out, result)
    if "results" in result:
        plot(result["results"], out.with_suffix(".png"))
    print(f"wrote {out} in {time.time() - start:.0f} s")


def plot(results, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot")
        return
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    for ax, (labels, rows) in zip(axes, results.items()):
        names = list(rows)
        means = [rows[n]["mean"] * 100 for n in names]
        stds = [rows[n]["std"] * 100 for n in names]
        ax.barh(names, means, xerr=stds, color=["#888" if n in ("none", "classic") else "#4a7" for n in names])
        ax.set_xlim(min(means) - 5, 100)
        ax.invert_yaxis()
        ax.set_title(f"MNIST, {labels} labels: test accuracy (%)")
        ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
