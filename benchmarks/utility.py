"""Does VAE augmentation raise accuracy when labels are scarce, on top of the best classic augmentation?

    python benchmarks/utility.py [--quick] [--root ../shared/data] [--phase select|test|all|semi] [--workers 2]
                                 [--datasets mnist,digits] [--labels 100,1000] [--digits-epochs N]

Protocol (issue 12). Every figure is a paired comparison: seed ``s`` draws the same class-balanced
labelled images and the same classifier initialisation and batch order for every condition, so
the gain of A over B is the mean over seeds of acc_A(s) - acc_B(s), reported with its standard
deviation and a 95% t-interval.

MNIST. 100 and 1,000 labelled training images (drawn from the first 50,000), the small CNN of
benchmarks/common.py for a fixed budget (``--steps`` of batch 64, Adam), the bundled `mnist` VAE
(trained on the unlabelled training images).
- ``--phase select`` scores every explored condition on a validation split (training images
  50,000-59,999) at 100 labels: first the classic candidates (RandomAffine at three magnitudes,
  an ElasticTransform, affine + elastic), whose best is `classic`; then the VAE-only candidates
  (VAEAugment settings, and LatentBorrow: within-class variation borrowed from unlabelled codes,
  its donors from the checkpoint's latent bank restricted to pool images), whose best is `vae`; then each VAE candidate followed by the best classic, whose best is
  `classic+vae`. The choice and where it came from are recorded in ``chosen``. The same choice is made
  afresh at 1,000 labels (``chosen_1000``: the best classic there, then that classic after each of
  SELECT_1000's LatentBorrow settings), since what pays with 100 labels need not with 1,000.
- ``--phase test`` runs `none`, `classic`, `vae` and `classic+vae` once on the test split (other
  seeds than selection), each label count with its own choice: 10 seeds at 100 labels, 5 at 1,000
  (at 1,000, `vae` is the VAE step of the chosen `classic+vae`). ``--labels 1000`` (or 100) runs one
  label count's selection and test and keeps the other's figures in ``--out``. And the classification accuracy
  score (Ravuri & Vinyals, 2019) of the chosen VAE setting: a classifier trained only on its
  variants of the labelled images (p = 1), tested on real test images, next to `none`.
- ``--phase semi`` (after ``select`` and ``test``) adds what a user with the same unlabelled images would do
  instead (benchmarks/semi.py): `pseudo+classic` (the pool labelled by propagation over the VAE's codes, with
  the chosen classic), `pixel-pseudo+classic` (the same over pixels), and the FixMatch pipelines whose strong
  view is a VAE variant (LatentBorrow's, or the latent adversary's) then the classic. Chosen on validation at
  100 labels (`semi.VALIDATION_SEEDS` seeds): if a FixMatch pipeline with the VAE's variants beats the earlier
  `classic+vae` there, it becomes `classic+vae`, and `classic+vae-without-variants` is it with the generator
  off. Then the test split for these aliases at both label counts (the others keep their figures, on the
  same seeds: the gains stay paired).

Digits (a second, small dataset a user could have: the 1,797 8x8 handwritten digits that ship
with scikit-learn, scaled to 16x16). The VAE is trained the way a user trains one on a folder of
their own: the unlabelled training images are written as PNGs and `vae-augment train`'s function
is called with its defaults (``--digits-epochs`` for another length). 5 labelled images per
class, 12 seeds. Test split: 30% of the digits; validation: a quarter of the rest, kept out of the
labelled pool (other seeds than the test runs). Chosen on validation as at 100 MNIST labels: the
best classic (DIGITS_CLASSIC: the affine at three magnitudes, an ElasticTransform sized for 16
pixels, affine + elastic), the best VAE condition alone (the library's default `VAEAugment(vae)`,
which for a checkpoint trained on few images is ``residual=True, p=0.5, strength=0.1``; the earlier
defaults ``residual=True, p=0.5`` at strength 0.2, ``residual=False, p=1`` and ``residual=True, p=1``;
class-aware noise; LatentBorrow, its donors the labelled pool's codes), and the best VAE condition followed by that classic. The test split runs
`none`, the chosen classic, the chosen settings, and the library's default alone and before the
classic: the default is judged as a user gets it, not chosen.

The classic candidates are torchvision's RandomAffine and ElasticTransform with one draw per image, batched
(benchmarks/classic.py measures how much faster than torchvision's per-image loop). A test
condition is an alias of benchmarks/goals.py's TEST_CONDITIONS (with its paired gains in TEST_GAINS): to add
one, name it there, say which condition it runs in `test_names`, and how that condition is built in `build`.
Training runs: benchmarks/runs.py; paired statistics: benchmarks/stats.py. Writes benchmarks/results/utility.json;
docs/benchmarks.md renders it (benchmarks/update_readme.py).
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

from common import DEFAULT_ROOT, RESULTS, mnist, write_json  # noqa: I001  (sets OMP_WAIT_POLICY before torch loads)
import torch

from classic import Chain, ElasticBatch, RandomAffineBatch
import semi
from goals import LABEL_COUNTS, SEMI_CONDITIONS, TEST_CONDITIONS, TEST_GAINS
from runs import best_of, scored
from stats import gains_over, paired, summarize
from digits_data import digits_state
from vae_augment import LatentBorrow, VAEAugment, load_vae

VALIDATION = slice(50_000, 60_000)
POOL = 50_000


# ------------------------------------------------------------------ the conditions
class Batch:
    """A VAEAugment on the whole batch (one draw per image)."""

    def __init__(self, augment):
        self.augment = augment

    def __call__(self, x, y):
        return self.augment(x)


class Labelled(Batch):
    """A label-aware transform (LatentBorrow) on the whole batch and its labels."""

    def __call__(self, x, y):
        return self.augment(x, y)[0]


def pool_bank(vae) -> torch.Tensor:
    """The bundled mnist checkpoint's latent bank without the codes of validation images: the bank holds a
    fixed random 20,000 of the 60,000 training images (`vae_augment.training.latent_bank`, seed 0) and
    the validation split is images 50,000-59,999, which no donor may come from. (The VAE itself was trained
    on all 60,000 training images, validation ones included, unlabelled; the test images it never saw.)"""
    return vae.latent_bank[semi.bank_images(vae) < POOL]


CLASSIC = {
    "affine mild": lambda: RandomAffineBatch(8.0, 0.05, (0.95, 1.05), 5.0),
    "affine": lambda: RandomAffineBatch(),
    "affine strong": lambda: RandomAffineBatch(25.0, 0.15, (0.8, 1.2), 15.0),
    "elastic": lambda: ElasticBatch(34.0, 4.0),
    "affine+elastic": lambda: Chain(RandomAffineBatch(), ElasticBatch(34.0, 4.0)),
}
# VAE-only candidates: name -> VAEAugment keyword arguments ("class" is fitted on the run's labelled images)
VAE_CANDIDATES = {
    "data s=0.35 p=0.5": dict(strength=0.35, p=0.5),
    "class s=0.5 p=0.5": dict(mode="class", strength=0.5, p=0.5),
    "class s=0.75 p=0.5": dict(mode="class", strength=0.75, p=0.5),
    "class+residual s=0.75 p=0.5": dict(mode="class", strength=0.75, p=0.5, residual=True),
}
# label-aware candidates: name -> LatentBorrow keyword arguments (fitted on the run's labelled images; its donors come from
# the latent bank, restricted to the labelled pool's images: validation and test images are never among them)
BORROW_CANDIDATES = {
    "borrow s=1 p=0.5 keep=0.5": dict(strength=1.0, p=0.5, keep=0.5),
    "borrow s=1 p=0.5 keep=1": dict(strength=1.0, p=0.5, keep=1.0),
    "borrow s=1 p=0.75 keep=1": dict(strength=1.0, p=0.75, keep=1.0),
}
# VAE candidates explored at 1,000 labels (before that count's best classic), chosen there rather than at 100 labels
SELECT_1000 = {
    "borrow s=1 p=0.75 keep=1": BORROW_CANDIDATES["borrow s=1 p=0.75 keep=1"],
    "borrow s=1 p=0.25 keep=1": dict(strength=1.0, p=0.25, keep=1.0),
    "borrow s=0.5 p=0.5 keep=1": dict(strength=0.5, p=0.5, keep=1.0),
    "borrow residual s=1 p=0.5 keep=1": dict(strength=1.0, p=0.5, keep=1.0, residual=True),
    "borrow residual s=1 p=0.25 keep=1": dict(strength=1.0, p=0.25, keep=1.0, residual=True),
}
LATENT_BORROW = {**BORROW_CANDIDATES, **SELECT_1000}  # every LatentBorrow condition by its name (build, code_of)
# "default" is VAEAugment(vae) as a user writes it (for a checkpoint trained on few images the library chooses
# residual=True, p=0.5, strength=0.1); "residual s=0.2 p=0.5" the default of the version before this one; "plain" the
# default of earlier versions (residual=False, p=1, strength 0.2); "residual" the one before that for a blurry checkpoint
# (residual=True, p=1, strength 0.2). (LatentBorrow needs no residual variant here: for a checkpoint trained on few
# images it chooses residual=True itself.)
DIGITS_VAE = {"default": dict(), "residual s=0.2 p=0.5": dict(residual=True, p=0.5, strength=0.2),
              "plain": dict(residual=False, p=1.0, strength=0.2), "residual": dict(residual=True, p=1.0, strength=0.2),
              "class s=0.5 p=0.5": dict(mode="class", strength=0.5, p=0.5),
              "class s=0.75 p=0.5": dict(mode="class", strength=0.75, p=0.5)}
# classic candidates for the 16x16 digits: the affine at three magnitudes, and the ElasticTransform sized for 16 pixels
# (sigma 4 * 16/28; the blurred field's amplitude goes as alpha / sigma, so alpha 34 * (16/28) * (2.3/4) = 11 keeps the
# displacement at the same share of the image as MNIST's (34, 4) on 28 pixels)
DIGITS_CLASSIC = {
    "affine mild": CLASSIC["affine mild"], "affine": CLASSIC["affine"], "affine strong": CLASSIC["affine strong"],
    "elastic a=11 s=2.3": lambda: ElasticBatch(11.0, 2.3),
    "affine+elastic a=11 s=2.3": lambda: Chain(RandomAffineBatch(), ElasticBatch(11.0, 2.3)),
}


def code(kwargs: dict, transform: str = "VAEAugment") -> str:
    return f"{transform}(vae{''.join(f', {k}={v!r}' for k, v in kwargs.items())})"


def code_of(name: str, candidates: dict) -> str:
    """The code of VAE condition ``name``: a VAEAugment of ``candidates``, or a LatentBorrow."""
    if name in LATENT_BORROW:
        return f"{code(LATENT_BORROW[name], 'LatentBorrow')}.fit(images, labels)"
    return code(candidates[name])


def build(name: str, vae, x_lab, y_lab, candidates: dict | None = None, classics: dict | None = None):
    """The augmentation of condition ``name`` (None for "none"); "classic X+vae Y" chains the VAE, then the classic.
    ``candidates`` maps VAE condition names to VAEAugment's arguments, ``classics`` classic names to their
    constructors (default: this benchmark's MNIST ones)."""
    if name == "none":
        return None
    classics = CLASSIC if classics is None else classics
    if name in classics:
        return classics[name]()
    classic, _, vae_name = name.partition(" + ")
    if vae_name:
        return Chain(build(vae_name, vae, x_lab, y_lab, candidates, classics), build(classic, vae, x_lab, y_lab, candidates, classics))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the fidelity warning: it is part of what is measured
        if name in LATENT_BORROW:
            return Labelled(LatentBorrow(vae, **LATENT_BORROW[name]).fit(x_lab, y_lab))
        augment = VAEAugment(vae, **(candidates or {**VAE_CANDIDATES, **DIGITS_VAE})[name])
    if augment.mode == "class":
        augment.fit(x_lab, y_lab)
    return Batch(augment)


def digits_build(name: str, vae, x_lab, y_lab):
    """`build` with the digits' classic and VAE candidates."""
    return build(name, vae, x_lab, y_lab, DIGITS_VAE, DIGITS_CLASSIC)


# ------------------------------------------------------------------ the two datasets
def mnist_state(root: str, steps: int) -> dict:
    """MNIST's pool, validation and test splits, and the bundled VAE with LatentBorrow's donors from the pool only."""
    x, y = mnist(root, train=True)
    x_test, y_test = mnist(root, train=False)
    vae = load_vae("mnist")
    pool_index = semi.pool_indices(vae, POOL)  # the images of pool_bank's codes, in its order
    vae.latent_bank = pool_bank(vae)  # LatentBorrow's donors: codes of pool images only
    return {"x": x, "y": y, "pool": POOL, "vae": vae, "steps": steps, "build": build,
            "validation": (x[VALIDATION], y[VALIDATION]), "test": (x_test, y_test),
            # the semi-supervised conditions' unlabelled pool: the pool images whose codes the bank holds
            "pool_index": pool_index, "pool_codes": vae.latent_bank, "trainer": semi.train_semi}


# ------------------------------------------------------------------ MNIST: choose on validation, then test once
def chosen_entry(best_classic: str, best_vae: str, best_combined: str, source: str, candidates: dict, vae_source: str | None = None) -> dict:
    """The record of a choice: alias -> the condition, where it was chosen, and its code."""
    vae_code = code_of(best_combined.split(" + ")[1], candidates)
    return {"classic": {"condition": best_classic, "source": source, "code": best_classic},
            "vae": {"condition": best_vae, "source": vae_source or source, "code": code_of(best_vae, candidates)},
            "classic+vae": {"condition": best_combined, "source": source, "code": f"{vae_code}, then {best_classic}"}}


def select_100(m: dict, state: dict, classic_names: list, vae_names: list, seeds: int, workers: int) -> None:
    """At 100 labels: the best classic, the best VAE condition alone, and the best VAE condition before that classic."""
    val: dict = {}
    choose = dict(val=val, per_class=10, seeds=seeds, state=state, workers=workers)
    best_classic = best_of(["none", *classic_names], **choose)
    best_vae = best_of(vae_names, **choose)
    best_combined = best_of([f"{best_classic} + {n}" for n in vae_names], **choose)
    m["validation_100"] = val
    m["validation_gains"] = {n: paired(val[n], val[best_classic] if " + " in n else val["none"]) for n in val if n != "none"}
    m["chosen"] = chosen_entry(best_classic, best_vae, best_combined, "validation split, 100 labels", VAE_CANDIDATES)


def select_1000(m: dict, state: dict, classic_names: list, vae_names: list, seeds: int, workers: int) -> None:
    """The same choice made afresh at 1,000 labels: the best classic, then each of ``vae_names`` before it."""
    val: dict = {}
    choose = dict(val=val, per_class=100, seeds=seeds, state=state, workers=workers)
    best_classic = best_of(["none", *classic_names], **choose)
    best_combined = best_of([f"{best_classic} + {n}" for n in vae_names], **choose)
    best_vae = best_combined.split(" + ")[1]
    m["validation_1000"] = val
    m["validation_gains_1000"] = {n: paired(val[n], val[best_classic] if " + " in n else val["none"]) for n in val if n != "none"}
    source = "validation split, 1,000 labels"
    m["chosen_1000"] = chosen_entry(best_classic, best_vae, best_combined, source, SELECT_1000,
                                    vae_source=f"{source}: the VAE step of the chosen classic+vae")


def test_names(chosen: dict, aliases=TEST_CONDITIONS) -> dict:
    """Each test condition's alias (goals.TEST_CONDITIONS, and SEMI_CONDITIONS once chosen) -> the condition it runs:
    "none", or the one chosen under its alias."""
    aliases = [*aliases, *(a for a in SEMI_CONDITIONS if a in chosen and aliases is TEST_CONDITIONS)]
    return {alias: "none" if alias == "none" else chosen[alias]["condition"] for alias in aliases}


def tested(m: dict) -> dict:
    """The test rows ``m`` holds by the condition they ran: label count -> condition -> row."""
    out: dict = {}
    for labels, rows in m.get("test", {}).items():
        chosen = m.get("chosen" if labels == "100" else "chosen_1000", {})
        out[labels] = {chosen[alias]["condition"] if alias in chosen else alias: row for alias, row in rows.items()}
    return out


def test_mnist(m: dict, state: dict, label_counts: list, seeds: dict, workers: int, aliases=TEST_CONDITIONS,
               earlier: dict | None = None) -> None:
    """The test split, used once for each label count's chosen settings (of ``aliases``; the others keep their figures),
    and the paired gains of goals.TEST_GAINS. ``earlier``: label count -> condition -> its row from an earlier test
    phase (`tested`), whose runs are reused for the seeds they cover (`runs.scored`'s ``done``)."""
    test, gains = m.get("test", {}), m.get("gains", {})  # a label count not run here keeps its earlier figures
    for labels in label_counts:
        key = "chosen" if labels == 100 else "chosen_1000"
        if key not in m:
            raise SystemExit(f"run --phase select --labels {labels} first: the test split is used for the settings "
                             "chosen on validation only")
        names = test_names(m[key], aliases)
        rows = scored(list(dict.fromkeys(names.values())), "mnist", labels // 10, seeds[str(labels)], "test", state, workers,
                      seed0=100, done=(earlier or {}).get(str(labels)))
        rows = test[str(labels)] = {**test.get(str(labels), {}), **{alias: rows[name] for alias, name in names.items()}}
        gains[str(labels)] = {gain: paired(rows[a], rows[b]) for gain, (a, b) in TEST_GAINS.items() if a in rows and b in rows}
    m["test"] = {n: test[n] for n in LABEL_COUNTS if n in test}
    m["gains"] = {n: gains[n] for n in LABEL_COUNTS if n in gains}


def cas_100(m: dict, state: dict, seeds: int, workers: int) -> None:
    """Classification accuracy score at 100 labels: the chosen VAE setting's variants only (p = 1), against the real images."""
    vae = m["chosen"]["vae"]["condition"]
    cas = scored([vae], "mnist", 10, seeds, "test", state, workers, seed0=100, only_variants=True)
    real = summarize(m["test"]["100"]["none"]["runs"][:seeds])  # the same seeds as the variants-only runs
    m["cas_100"] = {"variants_only": cas[vae], "real": real, "gain": paired(cas[vae], real), "condition": vae, "seeds": seeds}


def run_mnist(args, m: dict, steps: int, seeds: dict) -> None:
    """Every MNIST step of ``--phase`` at ``--labels`` into ``m`` (the results' "mnist")."""
    mnist_start = time.time()
    state = {"mnist": mnist_state(args.root, steps)}
    m["protocol"] = {"labelled": [100, 1000], "pool": "training images 0-49,999", "validation": "training images 50,000-59,999",
                     "test": "MNIST test split (10,000)", "classifier": "SmallCNN (benchmarks/common.py)",
                     "vae": "bundled checkpoint 'mnist'", "bank": "its latent bank's codes of pool images (LatentBorrow's donors)"}
    classic_names = ["affine", "elastic"] if args.quick else list(CLASSIC)
    select, test = args.phase in ("all", "select"), args.phase in ("all", "test")
    if select and 100 in args.label_counts:
        vae_names = ["class s=0.5 p=0.5", "borrow s=1 p=0.5 keep=1"] if args.quick else [*VAE_CANDIDATES, *BORROW_CANDIDATES]
        select_100(m, state, classic_names, vae_names, seeds["select"], args.workers)
    if select and 1000 in args.label_counts:
        vae_names = ["borrow s=1 p=0.25 keep=1"] if args.quick else list(SELECT_1000)
        select_1000(m, state, classic_names, vae_names, seeds["select"], args.workers)
    if args.phase == "semi":  # the semi-supervised pipelines: chosen on validation at 100 labels, then tested
        if "chosen" not in m:
            raise SystemExit("run --phase select --labels 100 first: the semi phase builds on the classic chosen there")
        earlier = tested(m) if args.reuse else None
        semi.choose(m, state, semi.VALIDATION_SEEDS if not args.quick else 1, args.workers, args.reuse)
        aliases = ("classic+vae", *SEMI_CONDITIONS)
        test_mnist(m, state, args.label_counts, seeds, args.workers, aliases=aliases, earlier=earlier)
    if test:
        test_mnist(m, state, args.label_counts, seeds, args.workers)
    if test and 100 in args.label_counts:
        cas_100(m, state, seeds["1000"], args.workers)
    if args.phase == "all" and args.label_counts == [100, 1000]:
        m["seconds"] = round(time.time() - mnist_start, 1)
        m.pop("seconds_parts", None)  # every figure is this run's now
    else:  # a part re-run on its own: the whole run's time stays, and the part's is kept beside it
        m.setdefault("seconds_parts", {})[f"{args.phase}, {args.labels} labels"] = round(time.time() - mnist_start, 1)


# ------------------------------------------------------------------ digits: the same, on a small dataset of one's own
def select_digits(state: dict, classic_names: list, vae_names: list, seeds: int, workers: int) -> tuple[dict, dict]:
    """As at 100 MNIST labels: the best classic, the best VAE condition, the best VAE condition then that classic."""
    validation: dict = {}
    choose = dict(val=validation, per_class=5, seeds=seeds, state=state, workers=workers, dataset="digits", seed0=1000)
    best_classic = best_of(["none", *classic_names], **choose)
    best_alone = best_of(vae_names, **choose)
    best = best_of([f"{best_classic} + {n}" for n in vae_names], **choose)
    source = "validation split (25% of the non-test digits), 5 per class"
    return validation, chosen_entry(best_classic, best_alone, best, source, DIGITS_VAE)


def digits_key(args) -> str:
    """The results' key of this digits run: the CLI-default VAE, or another length, or one fine-tuned from a trained VAE."""
    return "digits" + (f"_e{args.digits_epochs}" if args.digits_epochs else "") + (f"_init_{args.digits_init}" if args.digits_init else "")


def digits_vae_words(args, vae) -> tuple[str, str]:
    """The command that repeats this digits run, and how its VAE ``vae`` was trained."""
    epochs, init = args.digits_epochs, args.digits_init
    command = ("python benchmarks/utility.py --datasets digits" + (f" --digits-epochs {epochs}" if epochs else "")
               + (f" --digits-init {init}" if init else ""))
    how = "train(folder" + (f", epochs={epochs}" if epochs else "") + (f", init={init!r}, image_size={vae.image_size[-1]}" if init else "") + ")"
    return command, how


def run_digits(args, previous: dict, steps: int, seeds: dict) -> dict:
    """The digits run of ``--phase``: its entry in the results (``previous``: the same key's earlier entry)."""
    digits_start = time.time()
    state = {"digits": digits_state(steps, 2 if args.quick else args.digits_epochs, digits_build, init=args.digits_init)}
    vae_names = ["default", "class s=0.5 p=0.5", "borrow s=1 p=0.5 keep=1"] if args.quick else [*DIGITS_VAE, *BORROW_CANDIDATES]
    if args.digits_init and not args.quick:  # the earlier defaults and the strongest class noise only matter from scratch
        vae_names = [n for n in vae_names if n not in ("plain", "residual", "class s=0.75 p=0.5")]
    classic_names = ["affine", "elastic a=11 s=2.3"] if args.quick else list(DIGITS_CLASSIC)
    command, how = digits_vae_words(args, state["digits"]["vae"])
    chosen, validation = previous.get("chosen"), previous.get("validation")
    if args.phase == "semi":
        if not chosen:
            raise SystemExit("run --datasets digits (select and test) first: the semi phase uses the classic chosen there")
        return semi.digits_phase(previous, state, seeds["digits"], args.workers, time.time() - digits_start, args.reuse)
    if args.phase in ("all", "select"):
        validation, chosen = select_digits(state, classic_names, vae_names, seeds["digits"], args.workers)
    if args.phase == "test" and not chosen:
        raise SystemExit("run --phase select --datasets digits first: the test split is used for the chosen settings only")
    # the test split: the chosen settings, and the library's default as a user writes it (alone and before the classic)
    classic = chosen["classic"]["condition"]
    names = list(dict.fromkeys(["none", classic, "default", f"{classic} + default", chosen["vae"]["condition"],
                                chosen["classic+vae"]["condition"]]))
    rows = scored(names, "digits", 5, seeds["digits"], "test", state, args.workers) if args.phase in ("all", "test") else None
    metrics = state["digits"]["metrics"]
    fidelity = metrics.get("test", {})
    return {
        "protocol": {"data": "scikit-learn load_digits (1,797 8x8 digits) at 16x16; test: 30%; validation: 25% of the rest "
                             "(out of the labelled pool)", "labelled": "5 per class", "classic_candidates": classic_names,
                     "vae_candidates": vae_names,
                     "vae": f"{how} on the unlabelled training images" + ("" if args.digits_epochs else ", vae-augment train's default epochs"),
                     "command": command, "init": args.digits_init, "vae_reconstruction_r2": fidelity.get("reconstruction_r2"),
                     "vae_epochs": metrics.get("epochs"), "classifier": "SmallCNN for 16x16"},
        "validation": validation, "chosen": chosen,
        "validation_gains": gains_over(validation) if validation else None,
        "test": rows if rows is not None else previous.get("test"),
        "gains": gains_over(rows) if rows is not None else previous.get("gains"),
        "seconds": round(time.time() - digits_start, 1),
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--root", default=DEFAULT_ROOT)
    parser.add_argument("--phase", choices=["all", "select", "test", "semi"], default="all")
    parser.add_argument("--datasets", default="mnist,digits")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--select-seeds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2, help="training runs at once (one thread each)")
    parser.add_argument("--digits-epochs", type=int, help="train the digits VAE this long (default: vae-augment train's default)")
    parser.add_argument("--digits-init", help="fine-tune the digits VAE from this trained VAE (e.g. mnist), at its image size")
    parser.add_argument("--labels", default="100,1000", help="MNIST label counts to choose settings at and test (comma-separated; "
                        "the other's figures are kept from --out)")
    parser.add_argument("--out", default=str(RESULTS / "utility.json"))
    args = parser.parse_args()
    label_names = {n.strip() for n in args.labels.split(",")}
    if not label_names <= set(LABEL_COUNTS):
        parser.error(f"--labels takes 100 and/or 1000 (comma-separated), not {args.labels!r}")
    args.label_counts = sorted(int(n) for n in label_names)
    return args


def main() -> None:
    args = parse_args()
    start = time.time()
    quick = args.quick
    steps = 40 if quick else args.steps
    seeds = {"select": 1 if quick else args.select_seeds, "100": 2 if quick else 10, "1000": 1 if quick else 5, "digits": 2 if quick else 12}
    out = Path(args.out)
    fresh = quick and args.phase in ("all", "select")  # a quick test or semi phase reads the quick selection before it
    result = {} if fresh or not out.is_file() else json.loads(out.read_text())
    datasets = [d.strip() for d in args.datasets.split(",")]
    protocol = {"quick": quick, "steps": steps, "batch_size": 64, "optimizer": "Adam lr 1e-3", "seeds": seeds,
                "pairing": "seed s: the same labelled images, classifier initialisation and batch order for every condition",
                "interval": "95% t-interval of the mean paired gain over seeds"}
    args.reuse = result.get("protocol", {}).get("steps") == steps  # earlier test runs of the same length can be reused
    result["protocol"] = {**result.get("protocol", {}), **protocol}  # "seconds": of the last invocation
    if "mnist" in datasets:
        run_mnist(args, result.setdefault("mnist", {}), steps, seeds)
    if "digits" in datasets:
        key = digits_key(args)
        result[key] = run_digits(args, result.get(key, {}), steps, seeds)
    result["protocol"]["seconds"] = round(time.time() - start, 1)
    write_json(out, result)
    print(f"wrote {out} in {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
