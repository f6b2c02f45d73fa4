"""The semi-supervised conditions of the utility benchmark: what a user with the same unlabelled images
would do instead of (or beside) the VAE's augmentation (issue 30).

- ``pseudo + C``: the classifier trained on the labelled images plus the unlabelled pool, labelled by
  label propagation over the VAE's codes (`vae_augment.pseudo_label`'s propagation), with the classic
  augmentation ``C`` on every batch.
- ``pixel-pseudo + C``: the same propagation over raw pixels (what the VAE's representation is worth).
- ``fixmatch borrow + C``: ``pseudo + C`` plus a consistency term on the unlabelled pool (FixMatch's
  structure, Sohn et al. 2020): the classifier's own prediction on an unlabelled image, where at least
  ``TAU`` confident, is the target for a strong view of it, the image's `LatentBorrow` variant towards
  that class (strength 1, every image) followed by ``C``. The VAE's decoded variants serve as the strong
  augmentation.
- ``fixmatch + C``: the same pipeline with the generator switched off (the strong view is ``C`` alone):
  the VAE's representation without its variants.
- ``self fixmatch borrow + C`` / ``self fixmatch + C``: one round of self-training first: ``pseudo + C`` is
  trained, the pool is labelled again by propagation over that classifier's penultimate features (from the
  same labelled images), and the FixMatch pipeline is trained afresh on those labels.

Every condition is paired by seed with the others: the same labelled images, classifier initialisation
and batch order of the supervised set (its extra draws come from generators of their own).
"""

from __future__ import annotations

import warnings

from common import SmallCNN  # noqa: I001  (sets OMP_WAIT_POLICY before torch loads)
import torch
from torch.nn import functional as F

from vae_augment import LatentBorrow
from vae_augment.augment import encode_means
from vae_augment.latent import propagate_labels

TAU = 0.95  # confidence above which a prediction on an unlabelled image is a target (FixMatch's default)
UNLABELLED_RATIO = 1  # unlabelled images per labelled one in a step (FixMatch's mu)
KINDS = ("pseudo", "pixel-pseudo", "fixmatch borrow", "fixmatch", "self fixmatch borrow", "self fixmatch")
CODES = {  # what each semi-supervised alias runs, for the results' ``chosen`` entries
    "pseudo+classic": "the labelled images plus the unlabelled pool labelled by propagation over the VAE's codes, then the classic",
    "pixel-pseudo+classic": "the labelled images plus the unlabelled pool labelled by propagation over pixels, then the classic",
    "classic+vae": "pseudo-labels, then FixMatch with LatentBorrow's variants as the strong view (benchmarks/semi.py)",
    "classic+vae-without-variants": "the same pipeline with the classic alone as the strong view (no decoded variants)",
}


def bank_images(vae) -> torch.Tensor:
    """The training images whose codes the bundled checkpoint's latent bank holds, in its order (a fixed random
    20,000 of the 60,000: `vae_augment.training.latent_bank` with seed 0)."""
    return torch.randperm(60_000, generator=torch.Generator().manual_seed(0))[: len(vae.latent_bank)].sort().values


def pool_indices(vae, pool: int) -> torch.Tensor:
    """The bank's images among the first ``pool``: the unlabelled pool."""
    order = bank_images(vae)
    return order[order < pool]


def parse_kind(text: str) -> tuple[str, dict]:
    """``"pseudo k=20 t=0.9"`` -> ``("pseudo", {"k": 20, "threshold": 0.9})``: a kind of `KINDS` and the options of
    its propagation (``k`` neighbours, confidence ``t``hreshold below which a pool image is left out)."""
    kind, options = text, {}
    while kind.rsplit(" ", 1)[-1][:2] in ("k=", "t="):
        kind, option = kind.rsplit(" ", 1)
        options["k" if option[0] == "k" else "threshold"] = int(option[2:]) if option[0] == "k" else float(option[2:])
    return kind, options


def pseudo_labels(kind: str, state: dict, idx: torch.Tensor, k: int = 10, threshold: float = 0.0
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """The pool's images other than the labelled ``idx`` (indices into ``state['x']``) and their labels propagated
    over the ``k`` nearest codes (or pixels, for ``pixel-pseudo``); images no labelled one reaches, or whose
    confidence is below ``threshold``, are left out."""
    x, y = state["x"], state["y"]
    keep = ~torch.isin(state["pool_index"], idx)
    rows = state["pool_index"][keep]
    if kind == "pixel-pseudo":
        labels, confidence = propagate_labels(x[idx].flatten(1), y[idx], x[rows].flatten(1), k=k)
    else:
        codes = encode_means(state["vae"], x[idx])  # in the model's space: the digits' VAE may be of another size
        labels, confidence = propagate_labels(codes, y[idx], state["pool_codes"][keep], k=k)
    kept = (labels >= 0) & (confidence >= threshold)
    return rows[kept], labels[kept]


def train_semi(name: str, state: dict, idx: torch.Tensor, seed: int):
    """The classifier of semi-supervised condition ``name`` on seed ``seed``'s labelled images ``idx`` (None when
    ``name`` is not one)."""
    kind, _, classic_name = name.partition(" + ")
    kind, options = parse_kind(kind)
    if kind not in KINDS:
        return None
    x, y, vae = state["x"], state["y"], state["vae"]
    classic = state["build"](classic_name, vae, x[idx], y[idx])
    rows, labels = pseudo_labels(kind, state, idx, **options)
    xs, ys = torch.cat([x[idx], x[rows]]), torch.cat([y[idx], labels])
    if kind.startswith("self "):  # one round of self-training: labels propagated again over the classifier's features
        features = train(xs, ys, state["steps"], seed, classic).net[:-1]
        with torch.no_grad():
            again, _ = propagate_labels(features(x[idx]), y[idx], torch.cat([features(x[rows][i:i + 1000]) for i in range(0, len(rows), 1000)]))
        ys = torch.cat([y[idx], torch.where(again >= 0, again, labels)])
    strong = None
    if "fixmatch" in kind:
        strong = classic
        if kind.endswith("fixmatch borrow"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                borrow = LatentBorrow(vae, strength=1.0, p=1.0, generator=torch.Generator().manual_seed(30_000 + seed))
                borrow.fit(x[idx], y[idx])  # donors: the latent bank's pool codes, as LatentBorrow's own default
            strong = lambda xb, yb: classic(borrow(xb, yb)[0], yb)  # noqa: E731
    return train(xs, ys, state["steps"], seed, classic, x[rows] if strong else None, strong)


def train(x, y, steps: int, seed: int, augment, unlabelled=None, strong=None, batch_size: int = 64) -> SmallCNN:
    """`common.train_classifier`'s loop (the same batches for the same seed), plus, with ``unlabelled`` images,
    FixMatch's term: cross-entropy of ``strong(images, targets)`` against the classifier's confident predictions."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    unlabelled_g = torch.Generator().manual_seed(40_000 + seed)
    model = SmallCNN(side=x.shape[-1])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(steps):
        batch = torch.randint(0, len(x), (batch_size,), generator=g)
        loss = F.cross_entropy(model(augment(x[batch], y[batch])), y[batch])
        if unlabelled is not None:
            xu = unlabelled[torch.randint(0, len(unlabelled), (UNLABELLED_RATIO * batch_size,), generator=unlabelled_g)]
            with torch.no_grad():
                model.eval()
                confidence, target = F.softmax(model(xu), 1).max(1)
                model.train()
            mask = (confidence >= TAU).float()
            loss = loss + (F.cross_entropy(model(strong(xu, target)), target, reduction="none") * mask).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model.eval()


# ------------------------------------------------------------------ the benchmark's phase: choose on validation, then test
def without_variants(condition: str) -> str:
    """The same pipeline with the VAE's generator switched off: ``fixmatch borrow + C`` -> ``fixmatch + C``;
    ``C + <VAE step>`` (the VAE, then the classic) -> ``C``."""
    kind, _, rest = condition.partition(" + ")
    if kind.endswith("fixmatch borrow"):
        return f"{kind.removesuffix(' borrow')} + {rest}"
    return kind if rest and kind not in KINDS else condition


def choose(m: dict, state: dict, seeds: int, workers: int) -> None:
    """At 100 labels, on the validation split: the semi-supervised pipelines with the chosen classic; of those that
    use the VAE's variants (``fixmatch borrow + C``, ``self fixmatch borrow + C``, and the chosen `classic+vae`:
    LatentBorrow, then the classic), the best becomes `classic+vae`. Records the aliases
    ``pseudo+classic``, ``pixel-pseudo+classic`` and ``classic+vae-without-variants`` in ``chosen`` (also at 1,000
    labels, with that count's classic and the pipeline kind chosen at 100)."""
    from runs import scored
    from stats import paired

    classic = m["chosen"]["classic"]["condition"]
    names = [f"{kind} + {classic}" for kind in ("pseudo", "fixmatch", "fixmatch borrow", "self fixmatch", "self fixmatch borrow")]
    earlier_val = m.get("validation_semi", {})
    if earlier_val.get("seeds") == seeds and all(n in earlier_val for n in names):  # a rerun for 1,000 labels: the
        val = {n: earlier_val[n] for n in names}  # same seeded runs were scored by an earlier semi phase; not redone
        print(f"[mnist validation, 100 labels] the semi pipelines' {seeds} seeds from the earlier semi phase", flush=True)
    else:
        val = scored(names, "mnist", 10, seeds, "validation", state, workers)
    m["validation_semi"] = {"seeds": seeds, **val,
                            "gains": {n: paired(val[n], val[names[0]]) for n in names[1:]}}  # over pseudo + classic
    best = max((names[2], names[4]), key=lambda n: val[n]["mean"])  # of the pipelines with the VAE's variants
    # the classic+vae chosen by --phase select (the best "C + <VAE step>" on validation), on the same seeds 0..seeds-1
    earlier = max((n for n in m["validation_100"] if n.startswith(f"{classic} + ")), key=lambda n: m["validation_100"][n]["mean"])
    earlier_runs = m["validation_100"][earlier]["runs"][:seeds]
    earlier_mean = sum(earlier_runs) / len(earlier_runs)
    m["validation_semi"]["earlier classic+vae"] = {"condition": earlier, "mean": earlier_mean, "runs": earlier_runs}
    source = f"validation split, 100 labels, {seeds} seeds: the semi-supervised pipelines and the earlier classic+vae"
    for key, labels_classic in (("chosen", classic), ("chosen_1000", m.get("chosen_1000", {}).get("classic", {}).get("condition"))):
        if key not in m or labels_classic is None:
            continue
        chosen = m[key]
        chosen["pseudo+classic"] = {"condition": f"pseudo + {labels_classic}", "source": source, "code": CODES["pseudo+classic"]}
        chosen["pixel-pseudo+classic"] = {"condition": f"pixel-pseudo + {labels_classic}", "source": source, "code": CODES["pixel-pseudo+classic"]}
        if val[best]["mean"] > earlier_mean:
            kind = best.partition(" + ")[0]
            chosen["classic+vae"] = {"condition": f"{kind} + {labels_classic}", "source": source,
                                     "code": CODES["classic+vae"]}
        chosen["classic+vae-without-variants"] = {"condition": without_variants(chosen["classic+vae"]["condition"]),
                                                  "source": "classic+vae without the VAE's decoded variants",
                                                  "code": CODES["classic+vae-without-variants"]}
