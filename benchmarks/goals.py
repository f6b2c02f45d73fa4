"""What the benchmarks record and what they aim for, named once: the results files, the keys that the
scripts write and `update_readme.py` reads, and the project's goals.

A benchmark script writes ``RESULTS / <its name>.json``; `update_readme.py` renders the tables from
those files only. Both take the names below from here, so that renaming a key or moving a goal is a
change in one place. (No torch here: `update_readme.py` imports it on its own.)
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

RESULTS = Path(__file__).resolve().parent / "results"
BENCHMARKS_DOC = "docs/benchmarks.md"  # the README links to its sections

# ------------------------------------------------------------------ utility.json (benchmarks/utility.py)
# The conditions of each MNIST test split, by alias ("mnist" -> "test" -> "<labels>" -> alias -> accuracy over seeds):
# "none" is no augmentation, the others are the settings chosen on the validation split under the same alias
# ("mnist" -> "chosen" / "chosen_1000" -> alias). To add a condition: add its alias here and its paired gain below,
# and say in utility.py how its condition is chosen (`test_names`) and built (`build`).
TEST_CONDITIONS = ("none", "classic", "vae", "classic+vae")
# The conditions that use the unlabelled pool beyond LatentBorrow's donors (benchmarks/semi.py, ``--phase semi``):
# pseudo-labels over the VAE's codes and over pixels, and the recommended pipeline without the VAE's decoded variants.
SEMI_CONDITIONS = ("pseudo+classic", "pixel-pseudo+classic", "classic+vae-without-variants")
# paired gain name -> (condition, baseline), both aliases of TEST_CONDITIONS ("mnist" -> "gains" -> "<labels>" -> name)
TEST_GAINS = {"vae - none": ("vae", "none"), "classic - none": ("classic", "none"), "classic+vae - classic": ("classic+vae", "classic"),
              "pseudo+classic - classic": ("pseudo+classic", "classic"),
              "pixel-pseudo+classic - classic": ("pixel-pseudo+classic", "classic"),
              "classic+vae - pseudo+classic": ("classic+vae", "pseudo+classic"),
              "classic+vae - classic+vae-without-variants": ("classic+vae", "classic+vae-without-variants")}
LABEL_COUNTS = ("100", "1000")  # MNIST labelled images, the keys of "test" and "gains"
# The digits' condition that is the library's default, `VAEAugment(vae)` as a user writes it; its gains are
# "default - none" and "<classic> + default - <classic>" ("digits..." -> "gains").
LIBRARY_DEFAULT = "default"


class UtilityGoal(NamedTuple):
    points: float  # met when the mean paired gain reaches it and the 95% interval is above 0
    what: str


# The project's goals for the paired gains on the MNIST test split (issue 12): labels -> gain name -> goal
# and issue 30's, against what a user with the same unlabelled images would do instead (pseudo-labels), and the share of
# the VAE's decoded variants in the recommended pipeline (`classic+vae`)
_OVER_PSEUDO = "The recommended pipeline over pseudo-labels + the classic (both use the unlabelled images)"
UTILITY_GOALS = {"100": {"vae - none": UtilityGoal(8, "VAE alone, over no augmentation"),
                         "classic+vae - classic": UtilityGoal(2, "VAE then the best classic augmentation, over that classic alone"),
                         "classic+vae - pseudo+classic": UtilityGoal(1.0, _OVER_PSEUDO),
                         "classic+vae - classic+vae-without-variants": UtilityGoal(
                             0, "The VAE's decoded variants' own share: the recommended pipeline over itself without them")},
                 "1000": {"classic+vae - classic": UtilityGoal(0.5, "VAE then the best classic augmentation, over that classic alone"),
                          "classic+vae - pseudo+classic": UtilityGoal(0.3, _OVER_PSEUDO)}}
RECOMMENDED_ACCURACY_GOAL = 0.98  # issue 30: mean test accuracy of `classic+vae` at 100 MNIST labels (M1+M2: 96.67%)
# On the digits (a small dataset of one's own): the library's default must do no harm (no interval wholly below 0),
# and the recommended VAE-then-classic must help (interval above 0).
DIGITS_DEFAULT_GOAL = "not below 0"
DIGITS_RECOMMENDED_GOAL = "> 0"
DIGITS_SEMI_GOAL = "not below 0 (interval reaching 0 at worst)"


def utility_goal_words(gain: str) -> str:
    """The goals of paired gain ``gain`` over the label counts, as the docs' table states them ("-" if none):
    "+8 at 100 labels", "+2 at 100, +0.5 at 1,000"."""
    goals = [f"{f'+{by_gain[gain].points:g}' if by_gain[gain].points else '> 0'} at {int(labels):,}"
             for labels, by_gain in UTILITY_GOALS.items() if gain in by_gain]
    if not goals:
        return "-"
    return ", ".join(goals) + (" labels" if len(goals) == 1 else "")


# ------------------------------------------------------------------ throughput.json (benchmarks/throughput.py)
class SpeedGoal(NamedTuple):
    target: float
    direction: str  # "at least" or "at most"
    what: str


# The speed issue's goals: figure (a key of throughput.json) -> goal. throughput.py records each under "goals"
# with its measured figure and whether it is met; the summary in docs/benchmarks.md states them in these words.
SPEED_GOALS = {
    "efficiency_fp32": SpeedGoal(0.60, "at least", "VAEAugment, batches of 256, float32: share of the float32 matmul peak"),
    "efficiency_bf16": SpeedGoal(0.40, "at least", "VAEAugment(precision=\"bf16\"), batches of 256: share of the bf16 matmul peak"),
    "vae_per_sample_img_s": SpeedGoal(4_000, "at least", "VAEAugment one image at a time (uint8 tensor), images/s"),
    "per_sample_over_floor": SpeedGoal(1.25, "at most", "Epoch with VAEAugment per sample in 2 workers, over its FLOP floor"),
    "worker_batched_over_floor": SpeedGoal(1.25, "at most", "Epoch with `AugmentCollate` (batches in the workers), over its FLOP floor"),
    "worker_batched_cached_over_floor": SpeedGoal(1.25, "at most", "Epoch with batched `PosteriorCache`, over its FLOP floor"),
}


def speed_goal_met(measured: float, goal: SpeedGoal) -> bool:
    return measured >= goal.target if goal.direction == "at least" else measured <= goal.target


# ------------------------------------------------------------------ density (benchmarks/density.py, checkpoints/mnist)
BINARIZED_NLL_GOAL = 82.0  # nats: NLL of dynamically binarized MNIST test digits, issue 12's goal for the bundled model
