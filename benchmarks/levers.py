"""Levers tried for issue 12 on the MNIST validation split, on top of the best classic pipeline.

    python benchmarks/levers.py [--quick] [--root ../shared/data] [--seeds 5] [--workers 2]
                                [--levers LEVER ...] [--add] [--other-vae CHECKPOINT --other-name NAME]

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
- ``perclass keep=K p=0.5``: the class noise with a strength per class, the largest of 0.25-1.5 at which
  a share K of the class's labelled codes, moved by the noise, stay nearest its own centre (in the
  within-class metric): less noise for classes close to others.
- ``affine, class s=0.75 p=0.5, elastic`` (and ``class+residual``): the VAE between the two classic
  steps, varying the digit after the affine has moved it, instead of before.
- ``... with NAME`` (``--other-vae``): the chosen setting and ``class s=1`` with another checkpoint
  in place of the bundled mnist (a retrained, sharper model), on the same seeds and images.
- ``classextra s=S lam=L p=0.5``: the class noise added to a same-class extrapolation (LatentMix,
  DeVries & Taylor 2017) on the classifier's batch: z' = c_j + lam (c_j - c_k) + S L eps, c_k the code
  of another labelled image of the same class in the batch, lam drawn uniformly in [0, L]; ``extra
  lam=L p=0.5`` the extrapolation alone (S = 0).
- ``propres s=S p=P keep=K`` (the prototype of `vae_augment.LatentBorrow`): the bank's codes of pool images
  pseudo-labelled by label propagation from the labelled codes, the most confident share K of each class
  kept; z' = mean + S (b - c_y), b a kept code of the image's class y, c_y its labelled centre.
  ``propswap p=P``: z' = b (the donor itself); ``propmix lo=0 p=P``: z' = mean + u (b - mean), u in [0, 1].
- ``@2000``: the classic pipeline and the chosen setting with 2,000 classifier steps (underfitting?).

Writes benchmarks/results/levers.json; docs/benchmarks.md renders it (benchmarks/update_readme.py).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from common import DEFAULT_ROOT, RESULTS, mnist, write_json  # noqa: I001  (sets OMP_WAIT_POLICY before torch loads)
import torch

import utility as U
from vae_augment import VAEAugment, augment_batch, load_vae
from vae_augment.augment import to_model_space
from vae_augment.latent import propagate_labels, same_class_partners
from vae_augment.models.base import DiagonalGaussian

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


class PerClass:
    """The class noise with a strength per class: for each class the largest of ``grid`` at which ``keep`` of
    its labelled codes, moved by the noise, stay nearest (in the within-class metric) to their own class
    centre; classes that lie close to others get less noise, isolated ones more."""

    def __init__(self, vae, x_lab, y_lab, grid=(0.25, 0.5, 0.75, 1.0, 1.25, 1.5), keep=0.95, p=0.5, draws=50):
        self.vae, self.p = vae, p
        self.augment = VAEAugment(vae, mode="class", strength=1.0, p=1.0, residual=False).fit(x_lab, y_lab)
        factor = self.augment.class_factor.double()
        with torch.inference_mode():
            codes = vae.encode(to_model_space(vae, x_lab)).mean.double()
        classes = int(y_lab.max()) + 1
        centres = torch.stack([codes[y_lab == c].mean(0) for c in range(classes)])
        precision = torch.linalg.inv(factor @ factor.T)
        generator = torch.Generator().manual_seed(0)
        noise = torch.randn(draws, *codes.shape, generator=generator, dtype=torch.float64) @ factor.T  # [draws, N, D]
        self.strength = torch.empty(classes)
        for c in range(classes):
            own = codes[y_lab == c]
            best = grid[0]
            for s in grid:
                moved = (own + s * noise[:, y_lab == c]).reshape(-1, codes.shape[1])
                diff = moved.unsqueeze(1) - centres  # [M, classes, D]
                distance = torch.einsum("mcd,de,mce->mc", diff, precision, diff)
                if (distance.argmin(1) == c).double().mean() >= keep:
                    best = s
            self.strength[c] = best

    def __call__(self, x, y):
        n = x.shape[0]
        noise = torch.randn(n, self.vae.latent_dim) * self.strength[y].unsqueeze(1)
        apply = torch.rand(n) < self.p
        return augment_batch(self.vae, x, noise, mode="class", strength=1.0, apply=apply, class_factor=self.augment.class_factor)


class Between:
    """The affine first, then the chosen class noise on the moved digits (the encoder sees them as they
    are), then the elastic: the VAE varies the digit after the affine placed it."""

    def __init__(self, vae, x_lab, y_lab, strength=0.75, p=0.5, residual=False):
        self.affine, self.elastic = U.RandomAffineBatch(), U.ElasticBatch(34.0, 4.0)
        self.augment = VAEAugment(vae, mode="class", strength=strength, p=p, residual=residual).fit(x_lab, y_lab)

    def __call__(self, x, y):
        return self.elastic(self.augment(self.affine(x, y)), y)


class ClassExtrapolate:
    """The chosen class noise on top of a same-class extrapolation in the batch (LatentMix's
    "extrapolate"): z' = c_j + lam (c_j - c_k) + strength * L eps for a share p of the images."""

    def __init__(self, vae, x_lab, y_lab, strength=0.75, lam=0.5, p=0.5):
        self.augment = VAEAugment(vae, mode="class", strength=strength, p=p, residual=False).fit(x_lab, y_lab)
        self.vae, self.strength, self.lam, self.p = vae, strength, lam, p

    def __call__(self, x, y):
        n = x.shape[0]
        with torch.inference_mode():
            posterior = self.vae.encode(to_model_space(self.vae, x))
        partner = same_class_partners(y, torch.rand(n))
        lam = self.lam * torch.rand(n, 1)
        shifted = DiagonalGaussian(posterior.mean + lam * (posterior.mean - posterior.mean[partner]), posterior.logvar)
        noise = torch.randn(n, self.vae.latent_dim)
        return augment_batch(self.vae, x, noise, mode="class", strength=self.strength, apply=torch.rand(n) < self.p,
                             posterior=shifted, class_factor=self.augment.class_factor)


class PropagatedBank:
    """Codes of unlabelled images (the bank without validation images), pseudo-labelled by label propagation
    from the labelled codes (`vae_augment.latent.propagate_labels`), the most confident share ``keep`` of
    each pseudo-class kept; the prototype of `vae_augment.LatentBorrow` (its ``residual`` kind). For a share p of the images, of label c:
    ``swap``: z' = mean + u (b - mean), b a kept code of class c, u uniform in [lo, 1] (lo = 1: b itself);
    ``residual``: z' = mean + strength (b - centre_c), centre_c the mean labelled code of class c."""

    def __init__(self, vae, x_lab, y_lab, kind="swap", keep=0.5, lo=1.0, strength=1.0, p=0.5):
        self.vae, self.kind, self.lo, self.strength, self.p = vae, kind, lo, strength, p
        with torch.inference_mode():
            codes = vae.encode(to_model_space(vae, x_lab)).mean
        bank = U.pool_bank(vae)
        pseudo, confidence = propagate_labels(codes, y_lab, bank)
        classes = int(y_lab.max()) + 1
        self.centres = torch.stack([codes[y_lab == c].mean(0) for c in range(classes)])
        self.by_class = []
        for c in range(classes):
            members = torch.nonzero(pseudo == c).squeeze(1)
            top = confidence[members].argsort(descending=True)[: max(1, int(keep * len(members)))]
            self.by_class.append(bank[members[top]])

    def __call__(self, x, y):
        n = x.shape[0]
        b = torch.stack([self.by_class[int(c)][torch.randint(len(self.by_class[int(c)]), ())] for c in y])
        with torch.inference_mode():
            mean = self.vae.encode(to_model_space(self.vae, x)).mean
            if self.kind == "swap":
                u = self.lo + (1 - self.lo) * torch.rand(n, 1)
                z = mean + u * (b - mean)
            else:
                z = mean + self.strength * (b - self.centres[y])
            out = self.vae.decode(z)
        apply = torch.rand(n) < self.p
        return torch.where(apply.view(-1, 1, 1, 1), out, x).clone()


# pipelines replacing the classic one (not chained before it)
PIPELINES = {
    "affine, class s=0.75 p=0.5, elastic": lambda vae, x, y: Between(vae, x, y),
    "affine, class+residual s=0.75 p=0.5, elastic": lambda vae, x, y: Between(vae, x, y, residual=True),
}
LEVERS = {
    "bank s=1 p=0.5": lambda vae, x, y: BankResidual(vae, x, y, strength=1.0),
    "bankcls s=1 p=0.5": lambda vae, x, y: BankResidual(vae, x, y, strength=1.0, same_class=True),
    "sharp s=0.75 g=1.5": lambda vae, x, y: Sharp(vae, x, y, gamma=1.5),
    "sharp s=0.75 g=2": lambda vae, x, y: Sharp(vae, x, y, gamma=2.0),
    "sharp s=1 g=1.5": lambda vae, x, y: Sharp(vae, x, y, strength=1.0, gamma=1.5),
    "noaffine s=1 k=8": lambda vae, x, y: NoAffine(vae, x, y, strength=1.0),
    "noaffine s=1.5 k=8": lambda vae, x, y: NoAffine(vae, x, y, strength=1.5),
    "noaffine+residual s=1 k=8": lambda vae, x, y: NoAffine(vae, x, y, strength=1.0, residual=True),
    "perclass keep=0.95 p=0.5": lambda vae, x, y: PerClass(vae, x, y, keep=0.95),
    "perclass keep=0.9 p=0.5": lambda vae, x, y: PerClass(vae, x, y, keep=0.9),
    "classextra s=0.75 lam=0.5 p=0.5": lambda vae, x, y: ClassExtrapolate(vae, x, y, lam=0.5),
    "classextra s=0.75 lam=1 p=0.5": lambda vae, x, y: ClassExtrapolate(vae, x, y, lam=1.0),
    "extra lam=0.5 p=0.5": lambda vae, x, y: ClassExtrapolate(vae, x, y, strength=0.0, lam=0.5),
    "propswap p=0.5": lambda vae, x, y: PropagatedBank(vae, x, y),
    "propmix lo=0 p=0.5": lambda vae, x, y: PropagatedBank(vae, x, y, lo=0.0),
    "propres s=1 p=0.5": lambda vae, x, y: PropagatedBank(vae, x, y, kind="residual"),
    "propres s=0.75 p=0.5": lambda vae, x, y: PropagatedBank(vae, x, y, kind="residual", strength=0.75),
    "propres s=1.25 p=0.5": lambda vae, x, y: PropagatedBank(vae, x, y, kind="residual", strength=1.25),
    "propres s=1 p=0.75": lambda vae, x, y: PropagatedBank(vae, x, y, kind="residual", p=0.75),
    "propres s=1 p=0.5 keep=0.25": lambda vae, x, y: PropagatedBank(vae, x, y, kind="residual", keep=0.25),
    "propres s=1 p=0.5 keep=1": lambda vae, x, y: PropagatedBank(vae, x, y, kind="residual", keep=1.0),
}
CANDIDATES = {**U.VAE_CANDIDATES,
              "class s=1 p=0.5": dict(mode="class", strength=1.0, p=0.5),
              "class s=0.75 p=0.75": dict(mode="class", strength=0.75, p=0.75),
              "neighbour s=1 p=0.5": dict(mode="neighbour", strength=1.0, p=0.5)}


def build(name, vae, x_lab, y_lab):
    """utility.build with the levers: "classic + lever" chains the lever, then the classic."""
    if name in PIPELINES:
        return PIPELINES[name](vae, x_lab, y_lab)
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
    parser.add_argument("--add", action="store_true", help="add these levers' rows to the existing --out (whose classic and chosen "
                        "runs this run must repeat exactly) instead of writing it afresh; seconds add up")
    args = parser.parse_args()
    if args.add and (args.quick or not Path(args.out).is_file()):
        parser.error("--add extends an existing full run's --out file")
    start = time.time()
    seeds, steps = (1, 40) if args.quick else (args.seeds, 1000)
    x, y = mnist(args.root, train=True)
    state = {"mnist": {"x": x, "y": y, "pool": U.POOL, "vae": load_vae("mnist"), "steps": steps,
                       "validation": (x[U.VALIDATION], y[U.VALIDATION]), "build": build}}
    every = [*LEVERS, *(name for name in CANDIDATES if name not in U.VAE_CANDIDATES), *PIPELINES]
    unknown = sorted(set(args.levers or ()) - set(every))
    if unknown:
        parser.error(f"unknown levers {unknown}; known: {every}")
    levers = args.levers or (["bank s=1 p=0.5"] if args.quick else every)
    names = [CLASSIC, CHOSEN, *(lever if lever in PIPELINES else f"{CLASSIC} + {lever}" for lever in levers)]
    rows = U.scored(names, "mnist", 10, seeds, "validation", state, args.workers)
    others, other_metrics = [], None
    if args.other_vae:  # the same labelled images, seeds and classifier; only the checkpoint differs
        state["mnist-other"] = {**state["mnist"], "vae": load_vae(args.other_vae)}
        metrics = state["mnist-other"]["vae"].metrics or {}
        other_metrics = {"command": metrics.get("command"), "test": metrics.get("test")}
        other = U.scored([CHOSEN, f"{CLASSIC} + class s=1 p=0.5"], "mnist-other", 10, seeds, "validation", state, args.workers)
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
        longer = U.scored([CLASSIC, CHOSEN], "mnist", 10, seeds, "validation", state, args.workers)
        rows.update({f"{name} @{2 * steps}": r for name, r in longer.items()})
        seconds = 0.0
    gains = {name: {"over classic": U.paired(r, rows[CLASSIC]), "over chosen": U.paired(r, rows[CHOSEN])}
             for name, r in rows.items() if "@" not in name and name not in (CLASSIC, CHOSEN)}
    gains[f"{CHOSEN} @{2 * steps}"] = {"over classic": U.paired(rows[f"{CHOSEN} @{2 * steps}"], rows[f"{CLASSIC} @{2 * steps}"])}
    gains[CHOSEN] = {"over classic": U.paired(rows[CHOSEN], rows[CLASSIC])}
    result = {"protocol": {"split": "validation (training images 50,000-59,999)", "labelled": 100, "seeds": seeds, "steps": steps,
                           "quick": args.quick, "other_vae": args.other_vae, "other_metrics": other_metrics, "classic": CLASSIC, "chosen": CHOSEN,
                           "seconds": round(seconds + time.time() - start, 1)},
              "runs": rows, "gains": gains}
    out = write_json(args.out, result)
    print(f"wrote {out} in {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
