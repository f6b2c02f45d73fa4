"""Accuracies over seeds and paired gains between conditions, with their 95% t-intervals.

Every figure of the accuracy benchmarks is a paired comparison: seed ``s`` gives every condition the same
labelled images, classifier initialisation and batch order, so the gain of A over B is the mean over seeds
of acc_A(s) - acc_B(s), in points, with its standard deviation and a 95% t-interval.
"""

from __future__ import annotations

import math
import statistics

# t_{0.975, n-1} for the 95% interval of a mean over n paired seeds
T95 = {2: 12.706, 3: 4.303, 4: 3.182, 5: 2.776, 6: 2.571, 7: 2.447, 8: 2.365, 9: 2.306, 10: 2.262, 11: 2.228, 12: 2.201,
       15: 2.145, 20: 2.093}


def summarize(runs: list[float]) -> dict:
    """A condition's accuracies over seeds: ``{"mean", "std", "runs"}`` (``runs`` in seed order, for pairing)."""
    return {"mean": statistics.fmean(runs), "std": statistics.stdev(runs) if len(runs) > 1 else 0.0, "runs": runs}


def paired(a: dict, b: dict) -> dict:
    """Gain of a over b in points, paired by seed: mean, std and a 95% t-interval over the seeds."""
    d = [100 * (x - y) for x, y in zip(a["runs"], b["runs"])]
    mean = statistics.fmean(d)
    std = statistics.stdev(d) if len(d) > 1 else 0.0
    half = T95.get(len(d), 1.96) * std / math.sqrt(len(d)) if len(d) > 1 else float("nan")
    return {"mean": mean, "std": std, "ci95": [mean - half, mean + half], "seeds": len(d)}


def unpaired(a: dict, b: dict) -> dict:
    """Gain of a over b in points when their seeds differ (no pairing): the difference of the means, its standard
    error (Welch's) and a 95% t-interval with the smaller count's degrees of freedom (conservative)."""
    da, db = [100 * x for x in a["runs"]], [100 * x for x in b["runs"]]
    mean = statistics.fmean(da) - statistics.fmean(db)
    se = math.sqrt(statistics.variance(da) / len(da) + statistics.variance(db) / len(db))
    half = T95.get(min(len(da), len(db)), 1.96) * se
    return {"mean": mean, "se": se, "ci95": [mean - half, mean + half], "seeds": [len(da), len(db)], "paired": False}


def gains_over(rows: dict) -> dict:
    """Each condition over none, and each "C + X" over C alone."""
    base = {n: n.split(" + ")[0] if " + " in n else "none" for n in rows if n != "none"}
    return {f"{n} - {b}": paired(rows[n], rows[b]) for n, b in base.items()}
