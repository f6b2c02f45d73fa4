"""Render the benchmark tables from the committed results files (never typed by hand).

    python benchmarks/update_readme.py          # rewrite the marked sections of README.md and docs/
    python benchmarks/update_readme.py --check  # exit 1 if a file is out of date

Sections between ``<!-- name:start -->`` and ``<!-- name:end -->`` are replaced. `FILES` says which
file holds which section: the README the few plain rows of its results (``results``), docs/benchmarks.md
the goals and their status (``summary``) and the full tables (``utility``, ``levers``, ``density``,
``quality``, ``throughput``, ``backbone_strength``, ``backbones``: benchmarks/tables.py), docs/usage.md
the strengths (``strengths``) and docs/checkpoints.md the bundled checkpoints (``checkpoints``), each
from benchmarks/results/<name>.json (the checkpoints table from checkpoints/*/metrics.json). The results'
keys and the goals the summary judges come from benchmarks/goals.py. A file that lacks one of its
sections' markers is an error. Links are written relative to the file the section sits in.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository's vae_augment, as the other scripts use

from goals import (BENCHMARKS_DOC, BINARIZED_NLL_GOAL, DIGITS_DEFAULT_GOAL, DIGITS_RECOMMENDED_GOAL, DIGITS_SEMI_GOAL, LIBRARY_DEFAULT,  # noqa: E402
                   RECOMMENDED_ACCURACY_GOAL, RESULTS, SPEED_GOALS, UTILITY_GOALS)
from tables import (REPO, accuracy_text, chosen_long_training, gain_text, load_results, backbone_strength_table, backbones_table,  # noqa: E402
                    defaults_table, density_table, pseudo_choice_table, validation_vae_table, long_training_table, levers_borrow_table, levers_table, quality_table, throughput_table, utility_table)


def checkpoints_table() -> str:
    rows = ["| name | data | config | test -ELBO (nats) | bits/dim | IW-NLL (nats) | binarized IW-NLL (nats) | size |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for folder in sorted((REPO / "checkpoints").glob("*/")):
        metrics, config = load_results(folder / "metrics.json"), load_results(folder / "config.json")
        if not metrics or not config:
            continue
        test = metrics["test"]
        size_mb = (folder / "model.safetensors").stat().st_size / 1e6
        cfg = f"latent {config['latent_dim']}, widths {config['widths']}, {config['likelihood']}"
        iw = f"{test['iw_nll_nats']:.2f} (k={test['iw_k']})" if "iw_nll_nats" in test else "-"
        binarized = f"{test['binarized_iw_nll_nats']:.2f} (k={test['binarized_iw_k']})" if "binarized_iw_nll_nats" in test else "-"
        rows.append(f"| `{folder.name}` | {metrics['dataset']} ({metrics['epochs']} epochs) | {cfg} | {test['neg_elbo_nats']:.2f} | "
                    f"{test['neg_elbo_bits_per_dim']:.4f} | {iw} | {binarized} | {size_mb:.1f} MB |")
    return "\n".join(rows)


def _harm(*gains: dict) -> str:
    """The "do no harm" goal: met when no interval lies wholly below 0, and whether the means say more."""
    if any(g["ci95"][1] < 0 for g in gains):
        return "**missed**: it hurts"
    if all(g["ci95"][0] > 0 for g in gains):
        return "met: it helps"
    return "met: no measurable harm (the intervals span 0), and no measurable help"


def _met(ok: bool) -> str:
    return "met" if ok else "**missed**"


def _digits_recommended_rows(d: dict, classic: str, vae: str, doc: str) -> list[str]:
    """The digits' recommended pipeline against the classic alone and, once its semi phase ran, against pseudo+classic
    (goal: never below it) and without its decoded variants."""
    best = d["chosen"]["classic+vae"]["condition"]  # chosen on the validation split
    semi = d.get("semi_gains")
    g = semi["classic+vae - classic"] if semi else d["gains"][f"{best} - {classic}"]
    where = f"(digits, {vae}: `{best}`)"
    rows = [f"| [Recommended pipeline over the classic alone]({doc}#does-it-help) {where} | {gain_text(g)} points | "
            f"{DIGITS_RECOMMENDED_GOAL} | {_met(g['ci95'][0] > 0)} |"]
    if semi:
        g = semi["classic+vae - pseudo+classic"]
        rows.append(f"| [Recommended pipeline over pseudo+classic]({doc}#does-it-help) {where} | {gain_text(g)} points | "
                    f"{DIGITS_SEMI_GOAL} | {_met(g['ci95'][1] >= 0)} |")
        g = semi["classic+vae - classic+vae-without-variants"]
        rows.append(f"| [The decoded variants' share of it]({doc}#does-it-help) {where} | {gain_text(g)} points | - | |")
    return rows


def _default_rows(doc: str) -> list[str]:
    """`VAEAugment(vae)` with no arguments (benchmarks/defaults.py) on MNIST and on Fashion-MNIST, which nothing was
    tuned on: over none and before the classic over it; goal: never measurably below."""
    d, rows = load_results(RESULTS / "defaults.json"), []
    if not d or d["protocol"].get("quick"):
        return rows
    where = "#the-default-on-data-nobody-tuned-on"
    parts = [(f"MNIST, {int(n):,} labels", d["mnist"][n]) for n in ("100", "1000") if n in d.get("mnist", {})]
    parts += [("Fashion-MNIST (its VAE by `vae-augment train`'s defaults), 100 labels", d["fashion"])] if "gains" in d.get("fashion", {}) else []
    for what, part in parts:
        classic = part["classic"]
        g, g_classic = part["gains"]["default - none"], part["gains"][f"{classic} + default - {classic}"]
        rows.append(f"| [Default `VAEAugment(vae)`]({doc}{where}), {what}: over none / before the classic (`{classic}`), over it | "
                    f"{gain_text(g)} / {gain_text(g_classic)} points | before the classic: {DIGITS_DEFAULT_GOAL} | {_harm(g_classic)} |")
    return rows


def _long_rows(doc: str) -> list[str]:
    """The recommended pipeline trained longer (benchmarks/long_training.py): its test accuracy and its gains over
    pseudo-labels and over itself without the decoded variants (all trained as long), against the 100-label goals."""
    c = chosen_long_training()
    if not c:
        return []
    where, steps = f"[Recommended pipeline trained longer]({doc}#training-longer)", f"{c['protocol']['steps']:,} steps"
    best, g = c["test"]["100"]["classic+vae"], c["gains"]
    over, share = g["classic+vae - pseudo+classic"], g["classic+vae - classic+vae-without-variants"]
    goal_over = UTILITY_GOALS["100"]["classic+vae - pseudo+classic"].points
    p = c["protocol"]
    shared = sorted(set(range(p["test_seed0"], p["test_seed0"] + c["test"]["seeds"]))
                    & set(range(p["val_seed0"], p["val_seed0"] + c["validation"]["seeds"])))
    status = _met(share["mean"] > 0 and share["ci95"][0] > 0)
    if shared and share["ci95"][0] > 0:  # test seeds that draw the validation seeds' labelled images
        status = f"**not claimed**: test seeds {shared[0]}-{shared[-1]} draw the validation seeds' labelled images (see Training longer)"
    return [f"| {where} (`classic+vae`, {steps}): test accuracy, 100 MNIST labels | {accuracy_text(best)} | "
            f">= {RECOMMENDED_ACCURACY_GOAL:.1%} | {_met(best['mean'] >= RECOMMENDED_ACCURACY_GOAL)} |",
            f"| {where}: over pseudo+classic ({steps} too), 100 MNIST labels | {gain_text(over)} points | +{goal_over:g} | "
            f"{_met(over['mean'] >= goal_over and over['ci95'][0] > 0)} |",
            f"| {where}: the decoded variants' share ({steps}), 100 MNIST labels | {gain_text(share)} points | > 0 | "
            f"{status} |"]


def summary_table() -> str:
    """The headline figures of every results file against their goals, each row linked to its full table (all in
    docs/benchmarks.md, so the links are to its own sections)."""
    doc = ""
    rows = ["| figure | latest run | goal | status |", "| --- | --- | --- | --- |"]
    u = load_results(RESULTS / "utility.json")
    if u and "gains" in u.get("mnist", {}):
        for labels, gains in u["mnist"]["gains"].items():
            for name, (goal, what) in UTILITY_GOALS.get(labels, {}).items():
                if name not in gains:  # a goal whose conditions were not run yet
                    continue
                g = gains[name]
                rows.append(f"| [{what}]({doc}#does-it-help): paired gain in test accuracy, {int(labels):,} MNIST labels | "
                            f"{gain_text(g)} points | {f'+{goal:g}' if goal else '> 0'} | {_met(g['mean'] >= goal and g['ci95'][0] > 0)} |")
        recommended = u["mnist"].get("test", {}).get("100", {}).get("classic+vae")
        if recommended and "pseudo+classic" in u["mnist"]["test"]["100"]:  # the recommended pipeline, since it uses the unlabelled images
            rows.append(f"| [Recommended pipeline]({doc}#does-it-help) (`classic+vae`): test accuracy, 100 MNIST labels | "
                        f"{accuracy_text(recommended)} | >= {RECOMMENDED_ACCURACY_GOAL:.1%} | "
                        f"{_met(recommended['mean'] >= RECOMMENDED_ACCURACY_GOAL)} |")
        rows.extend(_long_rows(doc))
    for key in sorted(k for k in (u or {}) if k.startswith("digits")):  # the small dataset of one's own
        d = u[key]
        classic = d["chosen"]["classic"]["condition"]
        vae = (f"VAE fine-tuned from `{d['protocol']['init']}` with `vae-augment train --init`" if d["protocol"].get("init")
               else f"VAE trained {d['protocol']['vae_epochs']} epochs by `vae-augment train`'s defaults")
        g, g_classic = d["gains"][f"{LIBRARY_DEFAULT} - none"], d["gains"][f"{classic} + {LIBRARY_DEFAULT} - {classic}"]
        rows.append(f"| [Default `VAEAugment(vae)` on a small dataset of one's own]({doc}#does-it-help) (digits, {vae}), over none / "
                    f"before the classic (`{classic}`), over it | {gain_text(g)} / {gain_text(g_classic)} points | {DIGITS_DEFAULT_GOAL} | "
                    f"{_harm(g, g_classic)} |")
        rows.extend(_digits_recommended_rows(d, classic, vae, doc))
    rows.extend(_default_rows(doc))
    d = load_results(RESULTS / "density.json")
    if d and not d["protocol"]["quick"]:
        t = d.get("trained_with_prior", d["mixture_prior"])  # the last step of the protocol, better or worse
        trained_on = ", trained on with it" if "trained_with_prior" in d else ""
        rows.append(f"| [MNIST density model with a learned prior]({doc}#mnist-as-a-density-model) (`benchmarks/density.py`: 64 latents, "
                    f"{d['prior_fit']['components']}-component mixture prior{trained_on}; not bundled): NLL of dynamically binarized test digits "
                    f"(k={t['binarized_iw_k']}) | {t['binarized_iw_nll_nats']:.2f} nats | <= {BINARIZED_NLL_GOAL:g} | "
                    f"{_met(t['binarized_iw_nll_nats'] <= BINARIZED_NLL_GOAL)} |")
    test = (load_results(REPO / "checkpoints" / "mnist" / "metrics.json") or {}).get("test", {})
    if "binarized_iw_nll_nats" in test:
        rows.append(f"| [Bundled `mnist` as a density model](checkpoints.md#bundled-checkpoints): NLL of dynamically binarized test digits "
                    f"(importance-weighted, k={test['binarized_iw_k']}; IWAE 84.78, 2-layer 82.90) | {test['binarized_iw_nll_nats']:.2f} nats "
                    f"| <= {BINARIZED_NLL_GOAL:g} | {_met(test['binarized_iw_nll_nats'] <= BINARIZED_NLL_GOAL)} |")
    q = load_results(RESULTS / "quality.json")
    if q:
        p = q["protocol"]
        kept = q["sweep"][p["default_mode"]][f"{p['default_strength']:g}"]["label_preservation"]
        rows.append(f"| [Variants that keep their label]({doc}#choosing-a-strength), MNIST, default strength {p['default_strength']:g} "
                    f"| {kept:.1%} (the judge on originals: {p['judge_test_accuracy']:.1%}) | - | |")
    b = load_results(RESULTS / "backbone_strength.json")
    if b:
        kept = b["sweep"]["data"]["0.2"]["label_preservation"]
        rows.append(f"| [The same, calibrated diffusers AutoencoderKL]({doc}#pretrained-diffusers-autoencoders) (a small proxy "
                    f"trained here), strength 0.2 | {kept:.1%} (reconstructions: "
                    f"{b['protocol']['reconstruction_label_preservation']:.1%}) | - | |")
    t = load_results(RESULTS / "throughput.json")
    if t:
        for name, goal in t.get("goals", {}).items():
            value = f"{goal['measured']:,.0f}" if goal["measured"] >= 100 else f"{goal['measured']:.2f}"
            rows.append(f"| [{SPEED_GOALS[name].what if name in SPEED_GOALS else name}]({doc}#speed), {t['threads']} CPU threads | {value} | "
                        f"{goal['direction']} {goal['target']:g} | {_met(goal['met'])} |")
    bb = load_results(RESULTS / "backbones.json")
    if bb:
        sd = bb["results"].get("sd-vae-ft-mse", {})
        if "256px_img_s" in sd:
            gpu = "no GPU figure yet" if bb["device"].startswith("CPU") else ""
            rows.append(f"| [SD autoencoder architecture (random weights), 256x256]({doc}#pretrained-diffusers-autoencoders), "
                        f"{bb['device']} | {sd['256px_img_s']:,.2f} images/s | - | {gpu} |")
    return "\n".join(rows)


def strengths_table() -> str:
    """A few rows of the quality sweep in the default mode, for docs/usage.md."""
    q = load_results(RESULTS / "quality.json")
    if not q:
        return "_not measured yet: run `python benchmarks/quality.py`_"
    p = q["protocol"]
    sweep = q["sweep"][p["default_mode"]]
    lines = [f"MNIST test digits, mode `{p['default_mode']}` (`python benchmarks/quality.py`; all modes in "
             "[benchmarks.md](benchmarks.md#choosing-a-strength)):", "",
             "| strength | label kept | change from the source | between two variants |", "| --- | --- | --- | --- |"]
    for s in ("0", "0.1", "0.2", "0.3", "0.5", "1", "2"):
        if s in sweep:
            r = sweep[s]
            bold = "**" if float(s) == p["default_strength"] else ""
            lines.append(f"| {bold}{s}{bold} | {r['label_preservation']:.3f} | {r['mean_abs_change']:.3f} | "
                         f"{r['mean_abs_between_variants']:.3f} |")
    return "\n".join(lines)


def _percent(r: dict | None) -> str:
    return f"{100 * r['mean']:.1f}%" if r else "-"


def results_table() -> str:
    """The README's results in a few plain rows: test accuracy with few labels, per data set and augmentation, each
    row linked to the full table. Columns: no augmentation, the classic chosen on validation, pseudo-labels then the
    classic, and the recommended pipeline (`classic+vae`: chosen on validation, see the README)."""
    link = f"{BENCHMARKS_DOC}#does-it-help"
    rows = ["| data, labelled images (seeds) | none | classic | pseudo+classic | recommended pipeline |",
            "| --- | --- | --- | --- | --- |"]
    u = load_results(RESULTS / "utility.json")
    if not u:
        return "_not measured yet: run `python benchmarks/utility.py`_"
    for labels, test in (u.get("mnist", {}).get("test") or {}).items():
        best = test.get("classic+vae")
        seeds = f" ({len(best['runs'])} seeds)" if best and "runs" in best else ""
        rows.append(f"| [MNIST, {int(labels):,} labels]({link}){seeds} | {_percent(test.get('none'))} | "
                    f"{_percent(test.get('classic'))} | {_percent(test.get('pseudo+classic'))} | {_percent(best)} |")
    for key in sorted((k for k in u if k.startswith("digits")), key=lambda k: not u[k]["protocol"].get("init")):
        d = u[key]
        vae = (f"VAE fine-tuned from `{d['protocol']['init']}`" if d["protocol"].get("init")
               else "VAE trained on them alone")
        best = d["test"].get(d["chosen"]["classic+vae"]["condition"])
        seeds = f" ({len(best['runs'])} seeds)" if best and "runs" in best else ""
        rows.append(f"| [Small dataset of one's own: 1,258 digits, labels {d['protocol']['labelled']}; {vae}]({link}){seeds} | "
                    f"{_percent(d['test'].get('none'))} | {_percent(d['test'].get(d['chosen']['classic']['condition']))} | "
                    f"{_percent(d['test'].get('pseudo+classic'))} | {_percent(best)} |")
    if all(row.split(" | ")[3] == "-" for row in rows[2:]):
        rows += ["", "`pseudo+classic`: not measured yet (`python benchmarks/utility.py --phase semi`)."]
    return "\n".join(rows)


SECTIONS = {"results": results_table, "checkpoints": checkpoints_table, "summary": summary_table, "strengths": strengths_table,
            "throughput": throughput_table, "quality": quality_table, "utility": utility_table, "levers": levers_table, "levers_borrow": levers_borrow_table,
            "density": density_table,
            "backbones": backbones_table, "backbone_strength": backbone_strength_table, "pseudo_choice": pseudo_choice_table,
            "defaults": defaults_table, "validation_vae": validation_vae_table,
            "long_training": long_training_table}
FILES = {"README.md": ("results",),
         BENCHMARKS_DOC: ("summary", "utility", "defaults", "levers", "levers_borrow", "pseudo_choice", "validation_vae", "long_training", "density", "quality", "throughput",
                          "backbone_strength", "backbones"),
         "docs/usage.md": ("strengths",), "docs/checkpoints.md": ("checkpoints",)}


def render(text: str, names, where: str = "text") -> str:
    """``text`` with the sections ``names`` rendered between their markers."""
    for name in names:
        pattern = re.compile(rf"(<!-- {name}:start -->\n)(?:.*?\n)?(<!-- {name}:end -->)", re.S)
        if not pattern.search(text):
            raise SystemExit(f"{where} has no <!-- {name}:start --> ... <!-- {name}:end --> markers")
        text = pattern.sub(lambda m, body=SECTIONS[name](): m.group(1) + body + "\n" + m.group(2), text)
    return text


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--check", action="store_true", help="exit 1 if a file is out of date, writing nothing")
    args = parser.parse_args()
    stale = []
    for name, sections in FILES.items():
        path = REPO / name
        old = path.read_text()
        new = render(old, sections, name)
        if new != old:
            stale.append(name)
            if not args.check:
                path.write_text(new)
    if args.check and stale:
        print(f"{', '.join(stale)} out of date: run python benchmarks/update_readme.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
