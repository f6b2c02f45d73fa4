"""Levers tried for issue 12 on the MNIST validation split, on top of the best classic pipeline.

    python benchmarks/levers.py [--quick] [--root ../shared/data] [--seeds 5] [--workers 2]
                                [--levers LEVER ...] [--other-vae CHECKPOINT --other-name NAME]

The protocol of benchmarks/utility.py's selection phase (100 labels, the same paired seeds 0-4,
the validation images 50,000-59,999, the small CNN for 1,000 steps): each lever runs as
"affine+elastic + X" (X, then the affine and elastic transform) and is compared with the classic
pipeline alone and with the chosen `class s=0.75 p=0.5`. Validation only: none of these is used on
the test split unless it beats the chosen setting here.

- ``class s=1 p=0.5``, ``class s=0.75 p=0.75``: more of the chosen noise.
- ``bank s=1 p=0.5``: residuals borrowed from unlabelled codes, z' = mean + s (b - c(b)), b a random
  code of the checkpoint's latent bank (20,000 unlabelled training images), c(b) the nearest class
  centre of the labelled codes: real writers' variation instead of a Gaussian's.
- ``bankcls s=1 p=0.5``: the same, b drawn among bank codes assigned to the image's own class.
- ``neighbour s=1 p=0.5``: the library's mode "neighbour" (towards one of the 10 nearest bank codes).
- ``sharp s=0.75 g=G``: the chosen class noise, the decoded probabilities sharpened as
  sigmoid(G logit(p)) (G = 1.5 matches the share of mid-gray pixels of real digits), against blur.
- ``noaffine s=S k=8``: the class noise with the 8 latent directions an affine moves most taken
  out (from the codes of 16 RandomAffine copies of each labelled image), so the VAE adds only what
  the affine cannot; ``noaffine+residual``: the same in residual mode.
- ``... with NAME`` (``--other-vae``): the chosen setting and ``class s=1`` with another checkpoint
  in place of the bundled mnist (a retrained, sharper model), on the same seeds and images.
- ``@2000``: the classic pipeline and the chosen setting with 2,000 classifier steps (underfitting?).

Writes benchmarks/results/levers.json; docs/benchmarks.md renders it (benchmarks/update_readme.py).
"""

from __future__ import annotations

import argparse
import time

from common import DEFAULT_ROOT, RESULTS, mnist, write_json  # noqa: I001  (sets OMP_WAIT_POLICY before torch loads)
import torch

import utility as U
from vae_augment import VAEAugment, load_vae
from vae_augment.augment import to_model_space

CLASSIC = "affine+elastic"
CHOSEN = f"{CLASSIC} + class s=0.75 p=0.5"


class BankResidual:
    """z' = mean + strength * (b - centre(b)) for a random latent-bank code b (see the module docstring)."""

    def __init__(self, vae, x_lab, y_lab, strength=1.0, p=0.5, same_class=False):
        self.vae, self.strength, self.p, self.same_class = vae, strength, p, same_class
        with torch.inference_mode():
            codes = vae.encode(to_model_space(vae, x_lab)).mean
        classes = int(y_lab.max()) + 1
        centres = torch.stack([codes[y_lab == c].mean(0) for c in range(classes)])
        assign = torch.cdist(vae.latent_bank, centres).argmin(1)
        self.residuals = vae.latent_bank - centres[assign]
        self.by_class = [torch.nonzero(assign == c).squeeze(1) for c in range(classes)]

    def __call__(self, x, y):
        n = x.shape[0]
        apply = torch.rand(n) < self.p
        if self.same_class:
            idx = torch.stack([self.by_class[int(c)][torch.randint(len(self.by_class[int(c)]), ())] for c in y])
        else:
            idx = torch.randint(len(self.residuals), (n,))
        with torch.inference_mode():
            mean = self.vae.encode(to_model_space(self.vae, x)).mean
            out = self.vae.decode(mean + self.strength * self.residuals[idx])
        return torch.where(apply.view(-1, 1, 1, 1), out, x).clone()


class Sharp:
    """VAEAugment(mode="class", p=1) on every image, decoded probabilities sharpened as sigmoid(gamma * logit(p)),
    kept for a share p of the images."""

    def __init__(self, vae, x_lab, y_lab, strength=0.75, p=0.5, gamma=1.5):
        self.augment = VAEAugment(vae, mode="class", strength=strength, p=1.0, residual=False).fit(x_lab, y_lab)
        self.p, self.gamma = p, gamma

    def __call__(self, x, y):
        out = torch.sigmoid(self.gamma * torch.logit(self.augment(x).clamp(1e-4, 1 - 1e-4)))
        apply = torch.rand(x.shape[0]) < self.p
        return torch.where(apply.view(-1, 1, 1, 1), out, x)


class NoAffine:
    """The chosen class noise with the latent directions an affine moves taken out: the top ``k``
    eigenvectors of the spread of codes of ``variants`` RandomAffine copies of each labelled image
    (around that image's mean code) are projected out of the within-class factor, so the noise adds
    only what the affine cannot (stroke, shape, style)."""

    def __init__(self, vae, x_lab, y_lab, strength=1.0, p=0.5, k=8, variants=16, residual=False):
        self.augment = VAEAugment(vae, mode="class", strength=strength, p=p, residual=residual).fit(x_lab, y_lab)
        with torch.random.fork_rng(), torch.inference_mode():
            torch.manual_seed(0)  # the same affine copies whatever ran before in this worker
            copies = U.RandomAffineBatch()(x_lab.repeat_interleave(variants, 0), None)
            codes = vae.encode(to_model_space(vae, copies)).mean.double().view(len(x_lab), variants, -1)
        spread = (codes - codes.mean(1, keepdim=True)).flatten(0, 1)
        directions = torch.linalg.eigh(spread.T @ spread)[1][:, -k:]  # eigh sorts ascending: the top k
        keep = torch.eye(codes.shape[-1], dtype=torch.float64) - directions @ directions.T
        self.augment.class_factor = (keep @ self.augment.class_factor.double()).float()

    def __call__(self, x, y):
        return self.augment(x)


LEVERS = {
    "bank s=1 p=0.5": lambda vae, x, y: BankResidual(vae, x, y, strength=1.0),
    "bankcls s=1 p=0.5": lambda vae, x, y: BankResidual(vae, x, y, strength=1.0, same_class=True),
    "sharp s=0.75 g=1.5": lambda vae, x, y: Sharp(vae, x, y, gamma=1.5),
    "sharp s=0.75 g=2": lambda vae, x, y: Sharp(vae, x, y, gamma=2.0),
    "sharp s=1 g=1.5": lambda vae, x, y: Sharp(vae, x, y, strength=1.0, gamma=1.5),
    "noaffine s=1 k=8": lambda vae, x, y: NoAffine(vae, x, y, strength=1.0),
    "noaffine s=1.5 k=8": lambda vae, x, y: NoAffine(vae, x, y, strength=1.5),
    "noaffine+residual s=1 k=8": lambda vae, x, y: NoAffine(vae, x, y, strength=1.0, residual=True),
}
CANDIDATES = {**U.VAE_CANDIDATES,
              "class s=1 p=0.5": dict(mode="class", strength=1.0, p=0.5),
              "class s=0.75 p=0.75": dict(mode="class", strength=0.75, p=0.75),
              "neighbour s=1 p=0.5": dict(mode="neighbour", strength=1.0, p=0.5)}


def build(name, vae, x_lab, y_lab):
    """utility.build with the levers: "classic + lever" chains the lever, then the classic."""
    classic, _, lever = name.partition(" + ")
    if lever in LEVERS:
        return U.Chain(LEVERS[lever](vae, x_lab, y_lab), U.build(classic, vae, x_lab, y_lab, CANDIDATES))
    return U.build(name, vae, x_lab, y_lab, CANDIDATES)


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
    args = parser.parse_args()
    start = time.time()
    seeds, steps = (1, 40) if args.quick else (args.seeds, 1000)
    x, y = mnist(args.root, train=True)
    state = {"mnist": {"x": x, "y": y, "pool": U.POOL, "vae": load_vae("mnist"), "steps": steps,
                       "validation": (x[U.VALIDATION], y[U.VALIDATION]), "build": build}}
    every = [*LEVERS, *(name for name in CANDIDATES if name not in U.VAE_CANDIDATES)]
    unknown = sorted(set(args.levers or ()) - set(every))
    if unknown:
        parser.error(f"unknown levers {unknown}; known: {every}")
    levers = args.levers or (["bank s=1 p=0.5"] if args.quick else every)
    names = [CLASSIC, CHOSEN, *(f"{CLASSIC} + {lever}" for lever in levers)]
    rows = U.scored(names, "mnist", 10, seeds, "validation", state, args.workers)
    others, other_metrics = [], None
    if args.other_vae:  # the same labelled images, seeds and classifier; only the checkpoint differs
        state["mnist-other"] = {**state["mnist"], "vae": load_vae(args.other_vae)}
        metrics = state["mnist-other"]["vae"].metrics or {}
        other_metrics = {"command": metrics.get("command"), "test": metrics.get("test")}
        other = U.scored([CHOSEN, f"{CLASSIC} + class s=1 p=0.5"], "mnist-other", 10, seeds, "validation", state, args.workers)
        others = [f"{name} with {args.other_name}" for name in other]
        rows.update(zip(others, other.values()))
    state["mnist"]["steps"] = 2 * steps
    longer = U.scored([CLASSIC, CHOSEN], "mnist", 10, seeds, "validation", state, args.workers)
    rows.update({f"{name} @{2 * steps}": r for name, r in longer.items()})
    gains = {name: {"over classic": U.paired(r, rows[CLASSIC]), "over chosen": U.paired(r, rows[CHOSEN])}
             for name, r in rows.items() if "@" not in name and name not in (CLASSIC, CHOSEN)}
    gains[f"{CHOSEN} @{2 * steps}"] = {"over classic": U.paired(rows[f"{CHOSEN} @{2 * steps}"], rows[f"{CLASSIC} @{2 * steps}"])}
    gains[CHOSEN] = {"over classic": U.paired(rows[CHOSEN], rows[CLASSIC])}
    result = {"protocol": {"split": "validation (training images 50,000-59,999)", "labelled": 100, "seeds": seeds, "steps": steps,
                           "quick": args.quick, "other_vae": args.other_vae, "other_metrics": other_metrics, "classic": CLASSIC, "chosen": CHOSEN, "seconds": round(time.time() - start, 1)},
              "runs": rows, "gains": gains}
    out = write_json(args.out, result)
    print(f"wrote {out} in {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
