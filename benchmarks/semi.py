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
- ``fixmatch rborrow + C``: the same with LatentBorrow in the residual mode: the strong view is the image plus
  the decoded change the donor's offset makes (``residual=True``), not the decoder's drawing of the moved code.
  (``borrow`` leaves the mode to the checkpoint: plain for `mnist`, residual for a small or blurry one.)
- ``fixmatch lvat + C``: the strong view is the image moved along the direction of the VAE's latent space that most
  lowers the classifier's confidence in its target (VAT's power step, Miyato et al. 2018, taken in the latent space as
  in tangent adversarial training, Yu et al. 2019), by ``e`` (norm in code units; ``e=`` option), decoded in the
  residual mode, then ``C``: a variant on the data's manifold that the classic cannot draw.
- ``self fixmatch borrow + C`` / ``self fixmatch + C``: one round of self-training first: ``pseudo + C`` is
  trained, the pool is labelled again by propagation over that classifier's penultimate features (from the
  same labelled images), and the FixMatch pipeline is trained afresh on those labels. ``selfN``: N rounds.

Every condition is paired by seed with the others: the same labelled images, classifier initialisation
and batch order of the supervised set (its extra draws come from generators of their own).
"""

from __future__ import annotations

import time
import warnings

from common import SmallCNN  # noqa: I001  (sets OMP_WAIT_POLICY before torch loads)
import torch
from torch.nn import functional as F

from goals import SEMI_CONDITIONS
from runs import scored
from stats import paired

from vae_augment import LatentBorrow
from vae_augment.augment import decode_to_input, encode_images, encode_means
from vae_augment.latent import propagate_labels

LVAT_EPS = 1.0  # the latent adversary's step (code units; the mnist codes' offsets from their class centre: about 3)
TAU = 0.95  # confidence above which a prediction on an unlabelled image is a target (FixMatch's default)
UNLABELLED_RATIO = 1  # unlabelled images per labelled one in a step (FixMatch's mu)
KINDS = ("pseudo", "pixel-pseudo", "fixmatch borrow", "fixmatch rborrow", "fixmatch lvat", "fixmatch")  # each may follow "self" / "selfN"
CHOSEN_KIND = "self fixmatch rborrow"  # the kind chosen at 100 MNIST labels (mnist -> chosen -> classic+vae); the digits use it
VALIDATION_SEEDS = 5  # the semi pipelines are chosen on validation seeds 0-4 (as the select phase; 3 could not tell 0.2 apart)
VARIANT_KINDS = ("fixmatch borrow", "self fixmatch borrow", "self fixmatch rborrow", "self fixmatch lvat")  # the candidates for classic+vae
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


OPTIONS = {"k": ("k", int), "t": ("threshold", float), "e": ("eps", float)}


def parse_kind(text: str) -> tuple[str, dict]:
    """``"pseudo k=20 t=0.9"`` -> ``("pseudo", {"k": 20, "threshold": 0.9})``: a kind of `KINDS` and its options
    (``k`` neighbours and the confidence ``t``hreshold of its propagation, below which a pool image is left out; the
    latent adversary's ``e``, its step's norm)."""
    kind, options = text, {}
    while kind.rsplit(" ", 1)[-1][:2] in {f"{key}=" for key in OPTIONS}:
        kind, option = kind.rsplit(" ", 1)
        name, cast = OPTIONS[option[0]]
        options[name] = cast(option[2:])
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


def self_rounds(kind: str) -> tuple[int, str]:
    """``"self2 fixmatch borrow"`` -> ``(2, "fixmatch borrow")``: the rounds of self-training before the final
    training (``self`` alone: one) and the rest of the kind."""
    head, _, rest = kind.partition(" ")
    if head == "self" or (head.startswith("self") and head[4:].isdigit()):
        return int(head[4:] or 1), rest
    return 0, kind


def relabel(xs, ys, idx, rows, labels, state: dict, seed: int, classic) -> torch.Tensor:
    """One round of self-training: a classifier trained on ``xs, ys``; the pool's images ``rows`` labelled again by
    propagation over its penultimate features from the labelled ``idx`` (``labels`` kept where none reaches)."""
    x, y = state["x"], state["y"]
    features = train(xs, ys, state["steps"], seed, classic).net[:-1]
    with torch.no_grad():
        pool_features = torch.cat([features(x[rows][i:i + 1000]) for i in range(0, len(rows), 1000)])
        again, _ = propagate_labels(features(x[idx]), y[idx], pool_features)
    return torch.cat([y[idx], torch.where(again >= 0, again, labels)])


def train_semi(name: str, state: dict, idx: torch.Tensor, seed: int):
    """The classifier of semi-supervised condition ``name`` on seed ``seed``'s labelled images ``idx`` (None when
    ``name`` is not one)."""
    kind, _, classic_name = name.partition(" + ")
    kind, options = parse_kind(kind)
    rounds, final = self_rounds(kind)
    if final not in KINDS:
        return None
    x, y, vae = state["x"], state["y"], state["vae"]
    classic = state["build"](classic_name, vae, x[idx], y[idx])
    eps = options.pop("eps", LVAT_EPS)
    rows, labels = pseudo_labels(final, state, idx, **options)
    xs, ys = torch.cat([x[idx], x[rows]]), torch.cat([y[idx], labels])
    for _ in range(rounds):  # self-training: labels propagated again over the last classifier's features
        ys = relabel(xs, ys, idx, rows, labels, state, seed, classic)
    strong = None
    if "fixmatch" in final:
        strong = lambda xb, yb, model: classic(xb, yb)  # noqa: E731
        if final.endswith("lvat"):
            strong = latent_adversary(vae, classic, eps)
        if "borrow" in final:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                borrow = LatentBorrow(vae, strength=1.0, p=1.0, residual=True if final.endswith("rborrow") else None,
                                      generator=torch.Generator().manual_seed(30_000 + seed))
                borrow.fit(x[idx], y[idx])  # donors: the latent bank's pool codes, as LatentBorrow's own default
            strong = lambda xb, yb, model: classic(borrow(xb, yb)[0], yb)  # noqa: E731
    return train(xs, ys, state["steps"], seed, classic, x[rows] if strong else None, strong)


def latent_adversary(vae, classic, eps: float, xi: float = 0.5):
    """The strong view ``(images, targets, model) -> images`` of ``fixmatch lvat``: each image's code mean moved by
    ``eps`` along the direction that most raises ``model``'s loss on the target (one power step from a random
    direction of norm ``xi``), decoded in the residual mode (the image plus the decoded change), then ``classic``."""
    generator = torch.Generator().manual_seed(50_000)  # the random starts: one stream for every seed (the runs' own draws differ)

    def strong(xb: torch.Tensor, target: torch.Tensor, model) -> torch.Tensor:
        with torch.no_grad():
            mean = encode_images(vae, xb).mean
        step = torch.randn(mean.shape, generator=generator).to(mean)
        step = (xi * step / step.norm(dim=1, keepdim=True)).requires_grad_()
        loss = F.cross_entropy(model(decode_to_input(vae, mean + step, mean, xb, residual=True)), target)
        (grad,) = torch.autograd.grad(loss, step)
        with torch.no_grad():
            away = eps * grad / grad.norm(dim=1, keepdim=True).clamp_min(1e-12)
            return classic(decode_to_input(vae, mean + away, mean, xb, residual=True), target)
    return strong


def train(x, y, steps: int, seed: int, augment, unlabelled=None, strong=None, batch_size: int = 64) -> SmallCNN:
    """`common.train_classifier`'s loop (the same batches for the same seed), plus, with ``unlabelled`` images,
    FixMatch's term: cross-entropy of ``strong(images, targets, model)`` against the classifier's confident predictions."""
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
            loss = loss + (F.cross_entropy(model(strong(xu, target, model)), target, reduction="none") * mask).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model.eval()


# ------------------------------------------------------------------ the benchmark's phase: choose on validation, then test
def without_variants(condition: str) -> str:
    """The same pipeline with the VAE's generator switched off: ``fixmatch borrow + C`` -> ``fixmatch + C``;
    ``C + <VAE step>`` (the VAE, then the classic) -> ``C``."""
    kind, _, rest = condition.partition(" + ")
    if kind.endswith(("fixmatch borrow", "fixmatch rborrow", "fixmatch lvat")):
        return f"{kind.rsplit(' ', 1)[0]} + {rest}"
    return kind if rest and self_rounds(kind)[1] not in KINDS else condition


def choose(m: dict, state: dict, seeds: int, workers: int, reuse: bool = True) -> None:
    """At 100 labels, on the validation split: the semi-supervised pipelines with the chosen classic; of those that
    use the VAE's variants (`VARIANT_KINDS` with that classic, and the chosen `classic+vae`: LatentBorrow, then the
    classic), the best becomes `classic+vae`. With ``reuse``, runs ``m`` already holds (as many seeds, the same
    length) are not run again. Records the aliases
    ``pseudo+classic``, ``pixel-pseudo+classic`` and ``classic+vae-without-variants`` in ``chosen`` (also at 1,000
    labels, with that count's classic and the pipeline kind chosen at 100)."""
    classic = m["chosen"]["classic"]["condition"]
    names = [f"{kind} + {classic}" for kind in ("pseudo", "fixmatch", *VARIANT_KINDS[:1], "self fixmatch", *VARIANT_KINDS[1:])]
    earlier_val = m.get("validation_semi", {}) if reuse else {}  # the same seeded runs scored by an earlier semi phase
    val = scored(names, "mnist", 10, seeds, "validation", state, workers, done=earlier_val)
    m["validation_semi"] = {"seeds": seeds, **val,
                            "gains": {n: paired(val[n], val[names[0]]) for n in names[1:]}}  # over pseudo + classic
    best = max((f"{kind} + {classic}" for kind in VARIANT_KINDS), key=lambda n: val[n]["mean"])  # of those with the variants
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


def digits_phase(previous: dict, state: dict, seeds: int, workers: int, setup_seconds: float, reuse: bool = False) -> dict:
    """The digits' semi phase, on the test split (same seeds as the others): pseudo-labels then the classic chosen on
    the digits' validation split (over codes and over pixels), and the recommended pipeline, the one chosen on MNIST's
    validation split (benchmarks/semi.py), with that classic, with and without the VAE's variants. It becomes the
    digits' `classic+vae`; the earlier one (LatentBorrow, then the classic) stays in ``test`` under its condition. With
    ``reuse``, conditions ``previous`` holds with as many seeds (of the same length) are not run again."""
    start = time.time()
    chosen = dict(previous["chosen"])
    classic = chosen["classic"]["condition"]
    kind = CHOSEN_KIND
    names = {"pseudo+classic": f"pseudo + {classic}", "pixel-pseudo+classic": f"pixel-pseudo + {classic}",
             "classic+vae": f"{kind} + {classic}", "classic+vae-without-variants": without_variants(f"{kind} + {classic}")}
    rows = scored(list(names.values()), "digits", 5, seeds, "test", state, workers, done=previous["test"] if reuse else None)
    test = {**previous["test"], **rows, **{alias: rows[name] for alias, name in names.items() if alias != "classic+vae"}}
    chosen.setdefault("earlier classic+vae", chosen["classic+vae"])
    source = "the pipeline chosen on MNIST's validation split (100 labels), with the classic chosen on the digits' validation split"
    chosen["classic+vae"] = {"condition": names["classic+vae"], "source": source,
                             "code": CODES["classic+vae"]}
    for alias in SEMI_CONDITIONS:
        chosen[alias] = {"condition": names[alias], "source": source, "code": CODES[alias]}
    best, earlier = rows[names["classic+vae"]], test[chosen["earlier classic+vae"]["condition"]]
    semi_gains = {"classic+vae - pseudo+classic": paired(best, rows[names["pseudo+classic"]]),
                  "classic+vae - classic": paired(best, test[classic]),
                  "classic+vae - classic+vae-without-variants": paired(best, rows[names["classic+vae-without-variants"]]),
                  "pixel-pseudo+classic - classic": paired(rows[names["pixel-pseudo+classic"]], test[classic]),
                  "pseudo+classic - classic": paired(rows[names["pseudo+classic"]], test[classic]),
                  "classic+vae - earlier classic+vae": paired(best, earlier)}
    seconds = dict(previous.get("seconds_parts", {}), semi=round(time.time() - start + setup_seconds, 1))
    return {**previous, "chosen": chosen, "test": test, "semi_gains": semi_gains, "seconds_parts": seconds}
