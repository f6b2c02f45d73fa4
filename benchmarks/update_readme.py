"""Render the benchmark tables from the committed results files (never typed by hand).

    python benchmarks/update_readme.py          # rewrite the marked sections of README.md and docs/benchmarks.md
    python benchmarks/update_readme.py --check  # exit 1 if either file is out of date

Sections between ``<!-- name:start -->`` and ``<!-- name:end -->`` are replaced. `FILES` says which
file holds which section: the README the checkpoints table and the short summaries (``summary``,
``strengths``), docs/benchmarks.md the full tables (``utility``, ``quality``, ``throughput``,
``backbone_strength``, ``backbones``), each from benchmarks/results/<name>.json (the checkpoints
table from checkpoints/*/metrics.json). A file that lacks one of its sections' markers is an error.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
BENCHMARKS_DOC = "docs/benchmarks.md"  # the README links to its sections
FIDELITY_WARNING = 0.7  # vae_augment.augment.FIDELITY_WARNING (this script reads results files only, not the package)
SMALL_DATA_IMAGES = 10_000  # vae_augment.augment.SMALL_DATA_IMAGES
CAREFUL_STRENGTH = 0.1  # vae_augment.augment.CAREFUL_STRENGTH

# The project's goals, as the README has stated them; the summary says whether the latest run meets each.
# paired gains on the test split (issue 12): labels -> gain -> (points, what it is); met when the mean reaches the goal
# and the 95% interval is above 0
UTILITY_GOALS = {"100": {"vae - none": (8, "VAE alone, over no augmentation"),
                         "classic+vae - classic": (2, "VAE then the best classic augmentation, over that classic alone")},
                 "1000": {"classic+vae - classic": (0.5, "VAE then the best classic augmentation, over that classic alone")}}
SPEED_GOALS = {  # the speed issue's goals (benchmarks/throughput.py measures and judges them): figure -> its words
    "efficiency_fp32": "VAEAugment, batches of 256, float32: share of the float32 matmul peak",
    "efficiency_bf16": "VAEAugment(precision=\"bf16\"), batches of 256: share of the bf16 matmul peak",
    "vae_per_sample_img_s": "VAEAugment one image at a time (uint8 tensor), images/s",
    "per_sample_over_floor": "Epoch with VAEAugment per sample in 2 workers, over its FLOP floor",
    "worker_batched_over_floor": "Epoch with `AugmentCollate` (batches in the workers), over its FLOP floor",
    "worker_batched_cached_over_floor": "Epoch with batched `PosteriorCache`, over its FLOP floor",
}


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def checkpoints_table() -> str:
    rows = ["| name | data | config | test -ELBO (nats) | bits/dim | IW-NLL (nats) | binarized IW-NLL (nats) | size |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for folder in sorted((REPO / "checkpoints").glob("*/")):
        metrics, config = _load(folder / "metrics.json"), _load(folder / "config.json")
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


def _over_floor(t: dict, key: str) -> str:
    return f", {t[key]:.2f}x its FLOP floor" if key in t else ""


def throughput_table() -> str:
    t = _load(RESULTS / "throughput.json")
    if not t:
        return "_not measured yet: run `python benchmarks/throughput.py`_"
    e = t["epoch_seconds"]
    lines = [
        f"Measured by `python benchmarks/throughput.py` ({t['threads']} CPU threads, {t['images']}, torch {t['torch']}, "
        f"default strength {t['default_strength']:g} in mode `{t['default_mode']}`):",
        "",
        "| figure | value |",
        "| --- | --- |",
        f"| VAEAugment, batches of 256 | {t['vae_batch_img_s']:,.0f} images/s |",
        *([f"| VAEAugment(precision=\"bf16\"), batches of 256 | {t['vae_batch_bf16_img_s']:,.0f} images/s |"]
          if "vae_batch_bf16_img_s" in t else []),
        f"| bare encode-sample-decode, same batch | {t['bare_batch_img_s']:,.0f} images/s (VAEAugment takes {t['augment_vs_bare_ratio']:.2f}x its time) |",
        f"| VAEAugment one sample at a time (uint8 tensor) | {t['vae_per_sample_img_s']:,.0f} images/s |",
        *([f"| VAEAugment(precision=\"bf16\") one sample at a time | {t['vae_per_sample_bf16_img_s']:,.0f} images/s |"]
          if "vae_per_sample_bf16_img_s" in t else []),
        f"| VAEAugment one sample at a time (PIL) | {t['vae_per_sample_pil_img_s']:,.0f} images/s |",
        *([f"| decoding alone (what a cached epoch does), batches of 256, float32 / bf16 | {t['decode_batch_img_s']:,.0f} / "
           f"{t['decode_batch_bf16_img_s']:,.0f} images/s |"] if "decode_batch_img_s" in t else []),
        *([f"| the machine's peak in the same run: {1536}x{1536} matrix multiply, float32 / bf16 | {t['peak_fp32_gflop_s']:,.0f} / "
           f"{t['peak_bf16_gflop_s']:,.0f} GFLOP/s |",
           f"| the VAE's arithmetic: encode + decode per image | {t['vae_mflop_per_image']:.2f} MFLOP |",
           f"| VAEAugment on batches of 256 as a share of the peak, float32 / bf16 | {t['efficiency_fp32']:.0%} / "
           f"{t['efficiency_bf16']:.0%} |",
           f"| one image at a time: time beyond its arithmetic (at the float32 peak, {t['per_sample_arithmetic_us']:.0f} us) | "
           f"{t['per_sample_overhead_us']:.0f} us per image |",
           f"| the classifier's training step (forward + backward) per image | {t['classifier_step_mflop_per_image']:.2f} MFLOP |",
           f"| FLOP floor of an epoch ratio: 1 + VAE / classifier-step FLOPs | {t['epoch_ratio_floor']:.2f}x |"]
          if "peak_fp32_gflop_s" in t else []),
        f"| albumentations `Affine`, per sample (reference) | {t['albumentations_affine_img_s']:,.0f} images/s |",
        f"| torchvision `RandomAffine`, per sample (reference) | {t['torchvision_random_affine_img_s']:,.0f} images/s |",
        f"| training epoch, 2 workers, VAEAugment per sample / without | {t['dataloader_epoch_ratio']:.2f}x ({e['vae']:.1f} s / {e['plain']:.1f} s)"
        f"{_over_floor(t, 'per_sample_over_floor')} |",
        f"| same, with `PosteriorCache` | {t['dataloader_epoch_ratio_cached']:.2f}x ({e['cached']:.1f} s) |",
        f"| same, VAEAugment on collated batches in the main process | {t['dataloader_epoch_ratio_batched']:.2f}x ({e['batched']:.1f} s) |",
        *([f"| same, `AugmentCollate` (whole batches inside the workers) | {t['dataloader_epoch_ratio_worker_batched']:.2f}x "
           f"({e['worker_batched']:.1f} s){_over_floor(t, 'worker_batched_over_floor')} |"] if "dataloader_epoch_ratio_worker_batched" in t else []),
        *([f"| same, `PosteriorCache(..., batched=True)` (whole batches in the workers, decode only) | "
           f"{t['dataloader_epoch_ratio_worker_batched_cached']:.2f}x ({e['worker_batched_cached']:.1f} s)"
           f"{_over_floor(t, 'worker_batched_cached_over_floor')} |"]
          if "dataloader_epoch_ratio_worker_batched_cached" in t else []),
        *([f"| same, batches in the main process, `precision=\"bf16\"` | {t['dataloader_epoch_ratio_batched_bf16']:.2f}x "
           f"({e['batched_bf16']:.1f} s) |",
           f"| same, batched `PosteriorCache` in the workers, `precision=\"bf16\"` | "
           f"{t['dataloader_epoch_ratio_worker_batched_cached_bf16']:.2f}x ({e['worker_batched_cached_bf16']:.1f} s) |"]
          if "dataloader_epoch_ratio_batched_bf16" in t else []),
        f"| loading only (no training step), per sample / cached / batched | {t['loading_only_dataloader_epoch_ratio']:.2f}x / "
        f"{t['loading_only_dataloader_epoch_ratio_cached']:.2f}x / {t['loading_only_dataloader_epoch_ratio_batched']:.2f}x |",
    ]
    for key in sorted(k for k in t if k.startswith("gpu_batch")):
        lines.append(f"| GPU ({t['gpu']}), {key[9:-6]} images per batch | {t[key]:,.0f} images/s |")
    return "\n".join(lines)


def quality_table() -> str:
    q = _load(RESULTS / "quality.json")
    if not q:
        return "_not measured yet: run `python benchmarks/quality.py`_"
    p = q["protocol"]
    lines = [
        f"Measured by `python benchmarks/quality.py`: {p['sweep_images']} MNIST test digits x {p['variants_per_image']} variants, "
        f"judged by a CNN trained on the full training set (test accuracy {p['judge_test_accuracy']:.4f}). "
        "'kept' is the fraction of variants the judge assigns the source digit's label; 'change' the mean absolute "
        "pixel difference from the source; 'spread' the mean absolute difference between two variants of one source.",
        "",
        "| strength | " + " | ".join(f"{k}: kept / change / spread" for k in q["sweep"]) + " |",
        "| --- | " + " | ".join("---" for _ in q["sweep"]) + " |",
    ]
    strengths = list(next(iter(q["sweep"].values())))
    for s in strengths:
        cells = [f"{r[s]['label_preservation']:.3f} / {r[s]['mean_abs_change']:.3f} / {r[s]['mean_abs_between_variants']:.3f}"
                 for r in q["sweep"].values()]
        bold = "**" if float(s) == p["default_strength"] else ""
        lines.append(f"| {bold}{s}{bold} | " + " | ".join(cells) + " |")
    if "bf16_default" in q:
        f = q["bf16_default"]
        lines += ["", f"With `precision=\"bf16\"` at the default strength {f['strength']:g}: {f['label_preservation']:.3f} kept, "
                      f"change {f['mean_abs_change']:.3f}."]
    return "\n".join(lines)


def _gain(g: dict) -> str:
    """A paired gain: mean, std and 95% interval over seeds, in points."""
    lo, hi = g["ci95"]
    return f"{g['mean']:+.1f} +- {g['std']:.1f} [{lo:+.1f}, {hi:+.1f}]"


def _acc(r: dict) -> str:
    return f"{100 * r['mean']:.1f} +- {100 * r['std']:.1f} %"


def _minutes(u: dict) -> str:
    """How long the runs behind the results took."""
    parts = [f"{name}: {u[name]['seconds'] / 60:.0f} minutes" for name in ("mnist", *sorted(k for k in u if k.startswith("digits")))
             if "seconds" in u.get(name, {})]
    parts += [f"mnist re-run, phase {part}: {seconds / 60:.0f} minutes" for part, seconds in u.get("mnist", {}).get("seconds_parts", {}).items()]
    if "seconds_both" in u["protocol"]:  # a run of both datasets, one of them re-run since
        parts.insert(0, f"both datasets in one run: {u['protocol']['seconds_both'] / 60:.0f} minutes")
    return "; ".join(parts) or f"{u['protocol']['seconds'] / 60:.0f} minutes"


def _chosen_lines(chosen: dict) -> list[str]:
    return [f"- `{alias}`: {c['condition']}" + (f" = `{c['code']}`" if c["code"] != c["condition"] else "") for alias, c in chosen.items()]


def _validation_rows(val: dict, gains: dict) -> list[str]:
    return ["| condition | accuracy | paired gain |", "| --- | --- | --- |",
            *(f"| {name} | {_acc(r)} | {_gain(gains[name]) if name in gains else '-'} |" for name, r in val.items())]


def utility_table() -> str:
    u = _load(RESULTS / "utility.json")
    if not u or "mnist" not in u or "test" not in u["mnist"]:
        return "_not measured yet: run `python benchmarks/utility.py`_"
    p, m = u["protocol"], u["mnist"]
    seeds = p["seeds"]
    lines = [
        f"Measured by `python benchmarks/utility.py` on 2 CPU cores ({_minutes(u)}). The small CNN of "
        f"`benchmarks/common.py`, {p['steps']} steps of batch {p['batch_size']}, {p['optimizer']}. Paired seeds: {p['pairing']}; "
        f"gains are in points of accuracy, mean +- std [{p['interval']}].",
        "",
        f"**MNIST**, the bundled `mnist` VAE. Chosen on the validation split (training images 50,000-59,999, 100 labels, "
        f"{seeds['select']} seeds):",
        "",
        *_chosen_lines(m["chosen"]),
        *(["", f"Chosen afresh at 1,000 labels (the same split and {seeds['select']} seeds; `vae` is the VAE step of the chosen "
               "`classic+vae`):", "", *_chosen_lines(m["chosen_1000"])] if "chosen_1000" in m else []),
        "",
        f"Test split, used once for these settings ({seeds['100']} seeds at 100 labels, {seeds['1000']} at 1,000"
        + (", each with its own choice):" if "chosen_1000" in m else "; both with the choice made at 100 labels):"),
        "",
        "| condition | " + " | ".join(f"{n} labels" for n in m["test"]) + " |",
        "| --- | " + " | ".join("---" for _ in m["test"]) + " |",
    ]
    for alias in next(iter(m["test"].values())):
        lines.append(f"| {alias} | " + " | ".join(_acc(rows[alias]) for rows in m["test"].values()) + " |")
    lines += ["", "| paired gain | goal | " + " | ".join(f"{n} labels" for n in m["gains"]) + " |",
              "| --- | --- | " + " | ".join("---" for _ in m["gains"]) + " |"]
    for name in next(iter(m["gains"].values())):
        goal = {"vae - none": "+8 at 100 labels", "classic+vae - classic": "+2 at 100, +0.5 at 1,000"}.get(name, "-")
        lines.append(f"| {name} | {goal} | " + " | ".join(_gain(g[name]) for g in m["gains"].values()) + " |")
    cas = m.get("cas_100")
    if cas:
        lines += ["", f"Classification accuracy score (Ravuri & Vinyals, 2019), 100 labels, {cas['seeds']} seeds: a classifier "
                  f"trained only on variants of `{cas['condition']}` (every training image a variant) reaches "
                  f"{_acc(cas['variants_only'])} on the real test images; trained on the real labelled images, {_acc(cas['real'])} "
                  f"(the same seeds; paired gain {_gain(cas['gain'])} points)." if "gain" in cas else "."]
    lines += ["", f"Every condition explored on the validation split (100 labels, {seeds['select']} seeds; gains over `none`, "
              "or over the chosen classic for `X + vae`):", "", *_validation_rows(m["validation_100"], m["validation_gains"])]
    if "validation_1000" in m:
        lines += ["", f"The same at 1,000 labels ({seeds['select']} seeds):", "",
                  *_validation_rows(m["validation_1000"], m["validation_gains_1000"])]
    for key in sorted(k for k in u if k.startswith("digits")):
        d, dp = u[key], u[key]["protocol"]
        how = (("below the warning's threshold" if dp["vae_reconstruction_r2"] < FIDELITY_WARNING else "above the warning's threshold")
               + f", trained on fewer than {SMALL_DATA_IMAGES:,} images, so `VAEAugment(vae)` chooses residual=True, p=0.5 and "
               f"strength={CAREFUL_STRENGTH} and warns")
        command = dp.get("command", "python benchmarks/utility.py --datasets digits")  # older results: the default run
        epochs = f", {dp['vae_epochs']} epochs" if dp.get("vae_epochs") else ""
        lines += ["", f"**Digits**, a second small dataset: {dp['data']}; {dp['labelled']}, {seeds['digits']} seeds; the VAE: "
                  f"{dp['vae']}{epochs} (held-out reconstruction_r2 {dp['vae_reconstruction_r2']:.2f}, {how}; `{command}`). "
                  "Chosen on the validation split:", "", *_chosen_lines(d["chosen"]), "",
                  "Every condition explored on validation (gains over `none`, or over the classic before ` + `), and the test "
                  "split for the chosen settings and the library's default:", "",
                  "| condition | validation | paired gain (validation) | test | paired gain (test) |", "| --- | --- | --- | --- | --- |"]
        def cells(rows: dict, gains: dict, name: str) -> str:  # accuracy and paired gain of ``name`` ("-" where not run)
            g = next((g for k, g in gains.items() if k.rsplit(" - ", 1)[0] == name), None)
            return f"{_acc(rows[name]) if name in rows else '-'} | {_gain(g) if g else '-'}"

        for name in [*d["validation"], *(n for n in d["test"] if n not in d["validation"])]:  # then the default before the classic, if not explored
            lines.append(f"| {name} | {cells(d['validation'], d['validation_gains'], name)} | {cells(d['test'], d['gains'], name)} |")
    return "\n".join(lines)


BORROW_LEVERS = ("propres s=1 p=0.5", "propres s=0.75 p=0.5", "propres s=1.25 p=0.5", "propres s=1 p=0.75",
                 "propres s=1 p=0.5 keep=0.25", "propres s=1 p=0.5 keep=1")
BORROW_COMMAND = ("python benchmarks/levers.py --out benchmarks/results/levers_borrow.json --levers "
                  + " ".join(f'"{lever}"' for lever in BORROW_LEVERS))


def levers_borrow_table() -> str:
    """The borrowed-variation levers (label propagation over the latent bank), a run of their own with its own baselines."""
    return levers_table("levers_borrow.json", BORROW_COMMAND)


def levers_table(file: str = "levers.json", command: str = "python benchmarks/levers.py") -> str:
    """The levers tried on the validation split (benchmarks/levers.py)."""
    lv = _load(RESULTS / file)
    if not lv:
        return f"_not measured yet: run `{command}`_"
    p = lv["protocol"]
    lines = [f"Measured by `{command}` ({p['seconds'] / 60:.0f} minutes): validation split, {p['labelled']} labels, "
             f"{p['seeds']} paired seeds (those of the selection above), {p['steps']} classifier steps unless marked; paired gains in "
             f"points over `{p['classic']}` alone and over the chosen `{p['chosen']}`.", "",
             "| condition | accuracy | over the classic alone | over the chosen |", "| --- | --- | --- | --- |"]
    for name, r in lv["runs"].items():
        g = lv["gains"].get(name, {})
        over_classic = _gain(g["over classic"]) if "over classic" in g else "-"
        over_chosen = _gain(g["over chosen"]) if "over chosen" in g else "-"
        lines.append(f"| {name} | {_acc(r)} | {over_classic} | {over_chosen} |")
    other = p.get("other_metrics")
    if other:
        t = other["test"]
        bundled = (_load(REPO / "checkpoints" / "mnist" / "metrics.json") or {}).get("test", {})
        lines += ["", f"The rows `with ...` use `--other-vae`: the chosen noise with a checkpoint trained by `{other['command']}`: "
                  f"test -ELBO {t['neg_elbo_nats']:.2f} nats on gray digits, reconstruction R^2 {t['reconstruction_r2']:.3f}"
                  + (f", binarized IW-NLL {t['binarized_iw_nll_nats']:.2f} nats (k={t['binarized_iw_k']})" if "binarized_iw_nll_nats" in t else "")
                  + (f" (the bundled mnist: {bundled['binarized_iw_nll_nats']:.2f} nats)." if "binarized_iw_nll_nats" in bundled else ".")]
    return "\n".join(lines)


def density_table() -> str:
    """MNIST as a density model (benchmarks/density.py): the trained model with N(0, I) and with the fitted mixture prior."""
    d = _load(RESULTS / "density.json")
    if not d:
        return "_not measured yet: run `python benchmarks/density.py`_"
    p = d["protocol"]
    bundled = (_load(REPO / "checkpoints" / "mnist" / "metrics.json") or {}).get("test", {})
    rows = [f"Measured by `python benchmarks/density.py`{' --quick' if p['quick'] else ''}: {p['data']}. The model: `{p['train_command']}`; "
            f"its prior: `{p['prior_command']}`" + (f"; then trained on with its prior: `{p['tune_command']}`." if "tune_command" in p else "."), "",
            "| model | binarized IW-NLL (nats) | gray-digit -ELBO (nats) | reconstruction R^2 |", "| --- | --- | --- | --- |"]
    if "binarized_iw_nll_nats" in bundled:
        rows.append(f"| bundled `mnist` (N(0, I) prior) | {bundled['binarized_iw_nll_nats']:.2f} (k={bundled['binarized_iw_k']}) | "
                    f"{bundled['neg_elbo_nats']:.2f} | {bundled['reconstruction_r2']:.3f} |")
    for name, t in (("64 latents, binarized training, N(0, I) prior", d["standard_prior"]),
                    (f"the same with the {d['prior_fit']['components']}-component mixture prior", d["mixture_prior"]),
                    *((("the same, then trained on with that prior (encoder, decoder, prior)", d["trained_with_prior"]),)
                      if "trained_with_prior" in d else ())):
        elbo = f"{t['neg_elbo_nats']:.2f}" if "neg_elbo_nats" in t else "-"
        r2 = f"{t['reconstruction_r2']:.3f}" if "reconstruction_r2" in t else "-"
        rows.append(f"| {name} | {t['binarized_iw_nll_nats']:.2f} (k={t['binarized_iw_k']}) | {elbo} | {r2} |")
    rows += [f"| {name} | {nats:.2f} | - | - |" for name, nats in p["literature_nats"].items()]
    fit = d["prior_fit"]
    rows += ["", f"The mixture was fitted in {fit['steps']:,} Adam steps to {fit['codes']:,} codes of the training digits: their "
             f"cross-entropy under the prior fell from {fit['standard_normal_cross_entropy_nats']:.2f} nats (N(0, I)) to "
             f"{fit['cross_entropy_nats']:.2f}; the NLL gained {d['gain_nats']:.2f} nats"
             + (f", and training on with the prior {d['tune_gain_nats']:+.2f} more." if "tune_gain_nats" in d else ".")]
    return "\n".join(rows)


def backbones_table() -> str:
    b = _load(RESULTS / "backbones.json")
    if not b:
        return "_not measured yet: run `python benchmarks/backbones.py`_"
    sizes = sorted({int(k.split("px")[0]) for r in b["results"].values() for k in r if k.endswith("px_img_s")})
    command = "python benchmarks/backbones.py" + (" --device cpu" if b["device"].startswith("CPU") else "") \
        + (f" --sizes {' '.join(map(str, sizes))}" if sizes != [256, 512] else "")  # the run's own arguments
    lines = [f"VAEAugment throughput with randomly initialised autoencoders of the real architectures, measured by "
             f"`{command}` on {b['device']} ({b['dtype']}, batches of {b['batch']}, torch {b['torch']}):",
             "", "| autoencoder | parameters | " + " | ".join(f"{s}x{s} images/s" for s in sizes) + " |",
             "| --- | --- | " + " | ".join("---" for _ in sizes) + " |"]
    for name, r in b["results"].items():
        cells = [f"{r[f'{s}px_img_s']:,.2f}" if f"{s}px_img_s" in r else "-" for s in sizes]
        upcast = " (overflowed float16: measured in float32)" if r.get("dtype", b["dtype"]) != b["dtype"] else ""
        lines.append(f"| `{name}`{upcast} | {r['parameters_m']}M | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def backbone_strength_table() -> str:
    b = _load(RESULTS / "backbone_strength.json")
    if not b:
        return "_not measured yet: run `python benchmarks/backbone_strength.py`_"
    p = b["protocol"]
    lines = [f"Measured by `python benchmarks/backbone_strength.py` ({p['autoencoder']}, trained {p['steps']} steps with "
             f"{p['loss']}; judge test accuracy {p['judge_test_accuracy']:.3f}; its reconstructions keep "
             f"{p['reconstruction_label_preservation']:.1%} of labels):", "",
             "| strength | label kept | mean abs change | between two variants | residual: label kept | residual: change |",
             "| --- | --- | --- | --- | --- | --- |"]
    plain, residual = b["sweep"]["data"], b["sweep"]["data+residual"]
    for strength, row in plain.items():
        r = residual[strength]
        lines.append(f"| {strength} | {row['label_preservation']:.3f} | {row['mean_abs_change']:.4f} | "
                     f"{row['mean_abs_between_variants']:.4f} | {r['label_preservation']:.3f} | {r['mean_abs_change']:.4f} |")
    return "\n".join(lines)


def _harm(*gains: dict) -> str:
    """The "do no harm" goal: met when no interval lies wholly below 0, and whether the means say more."""
    if any(g["ci95"][1] < 0 for g in gains):
        return "**missed**: it hurts"
    if all(g["ci95"][0] > 0 for g in gains):
        return "met: it helps"
    return "met: no measurable harm (the intervals span 0), and no measurable help"


def _met(ok: bool) -> str:
    return "met" if ok else "**missed**"


BINARIZED_NLL_GOAL = 82.0  # nats, issue 12's goal for the bundled model


def summary_table() -> str:
    """The headline figures of every results file, for the README, each row linked to its full table."""
    doc = BENCHMARKS_DOC
    rows = ["| figure | latest run | goal | status |", "| --- | --- | --- | --- |"]
    u = _load(RESULTS / "utility.json")
    if u and "gains" in u.get("mnist", {}):
        for labels, gains in u["mnist"]["gains"].items():
            for name, (goal, what) in UTILITY_GOALS.get(labels, {}).items():
                g = gains[name]
                rows.append(f"| [{what}]({doc}#does-it-help): paired gain in test accuracy, {int(labels):,} MNIST labels | "
                            f"{_gain(g)} points | +{goal:g} | {_met(g['mean'] >= goal and g['ci95'][0] > 0)} |")
    for key in sorted(k for k in (u or {}) if k.startswith("digits")):  # the small dataset of one's own
        d = u[key]
        classic = d["chosen"]["classic"]["condition"]
        vae = (f"VAE fine-tuned from `{d['protocol']['init']}` with `vae-augment train --init`" if d["protocol"].get("init")
               else f"VAE trained {d['protocol']['vae_epochs']} epochs by `vae-augment train`'s defaults")
        g, g_classic = d["gains"]["default - none"], d["gains"][f"{classic} + default - {classic}"]
        rows.append(f"| [Default `VAEAugment(vae)` on a small dataset of one's own]({doc}#does-it-help) (digits, {vae}), over none / "
                    f"before the classic (`{classic}`), over it | {_gain(g)} / {_gain(g_classic)} points | not below 0 | "
                    f"{_harm(g, g_classic)} |")
        best = d["chosen"]["classic+vae"]["condition"]  # chosen on the validation split
        g = d["gains"][f"{best} - {classic}"]
        rows.append(f"| [Recommended VAE then the classic, over the classic alone]({doc}#does-it-help) (digits, {vae}: "
                    f"`{best}`, chosen on validation) | {_gain(g)} points | > 0 | {_met(g['ci95'][0] > 0)} |")
    d = _load(RESULTS / "density.json")
    if d and not d["protocol"]["quick"]:
        t = d.get("trained_with_prior", d["mixture_prior"])  # the last step of the protocol, better or worse
        trained_on = ", trained on with it" if "trained_with_prior" in d else ""
        rows.append(f"| [MNIST density model with a learned prior]({doc}#mnist-as-a-density-model) (`benchmarks/density.py`: 64 latents, "
                    f"{d['prior_fit']['components']}-component mixture prior{trained_on}; not bundled): NLL of dynamically binarized test digits "
                    f"(k={t['binarized_iw_k']}) | {t['binarized_iw_nll_nats']:.2f} nats | <= {BINARIZED_NLL_GOAL:g} | "
                    f"{_met(t['binarized_iw_nll_nats'] <= BINARIZED_NLL_GOAL)} |")
    test = (_load(REPO / "checkpoints" / "mnist" / "metrics.json") or {}).get("test", {})
    if "binarized_iw_nll_nats" in test:
        rows.append(f"| [Bundled `mnist` as a density model](#bundled-checkpoints): NLL of dynamically binarized test digits "
                    f"(importance-weighted, k={test['binarized_iw_k']}; IWAE 84.78, 2-layer 82.90) | {test['binarized_iw_nll_nats']:.2f} nats "
                    f"| <= {BINARIZED_NLL_GOAL:g} | {_met(test['binarized_iw_nll_nats'] <= BINARIZED_NLL_GOAL)} |")
    q = _load(RESULTS / "quality.json")
    if q:
        p = q["protocol"]
        kept = q["sweep"][p["default_mode"]][f"{p['default_strength']:g}"]["label_preservation"]
        rows.append(f"| [Variants that keep their label]({doc}#choosing-a-strength), MNIST, default strength {p['default_strength']:g} "
                    f"| {kept:.1%} (the judge on originals: {p['judge_test_accuracy']:.1%}) | - | |")
    b = _load(RESULTS / "backbone_strength.json")
    if b:
        kept = b["sweep"]["data"]["0.2"]["label_preservation"]
        rows.append(f"| [The same, calibrated diffusers AutoencoderKL]({doc}#pretrained-diffusers-autoencoders) (a small proxy "
                    f"trained here), strength 0.2 | {kept:.1%} (reconstructions: "
                    f"{b['protocol']['reconstruction_label_preservation']:.1%}) | - | |")
    t = _load(RESULTS / "throughput.json")
    if t:
        for name, goal in t.get("goals", {}).items():
            value = f"{goal['measured']:,.0f}" if goal["measured"] >= 100 else f"{goal['measured']:.2f}"
            rows.append(f"| [{SPEED_GOALS.get(name, name)}]({doc}#speed), {t['threads']} CPU threads | {value} | "
                        f"{goal['direction']} {goal['target']:g} | {_met(goal['met'])} |")
    bb = _load(RESULTS / "backbones.json")
    if bb:
        sd = bb["results"].get("sd-vae-ft-mse", {})
        if "256px_img_s" in sd:
            gpu = "no GPU figure yet" if bb["device"].startswith("CPU") else ""
            rows.append(f"| [SD autoencoder architecture (random weights), 256x256]({doc}#pretrained-diffusers-autoencoders), "
                        f"{bb['device']} | {sd['256px_img_s']:,.2f} images/s | - | {gpu} |")
    return "\n".join(rows)


def strengths_table() -> str:
    """A few rows of the quality sweep in the default mode, for the README."""
    q = _load(RESULTS / "quality.json")
    if not q:
        return "_not measured yet: run `python benchmarks/quality.py`_"
    p = q["protocol"]
    sweep = q["sweep"][p["default_mode"]]
    lines = [f"MNIST test digits, mode `{p['default_mode']}` (`python benchmarks/quality.py`; all modes in "
             f"[{BENCHMARKS_DOC}]({BENCHMARKS_DOC}#choosing-a-strength)):", "",
             "| strength | label kept | change from the source | between two variants |", "| --- | --- | --- | --- |"]
    for s in ("0", "0.1", "0.2", "0.3", "0.5", "1", "2"):
        if s in sweep:
            r = sweep[s]
            bold = "**" if float(s) == p["default_strength"] else ""
            lines.append(f"| {bold}{s}{bold} | {r['label_preservation']:.3f} | {r['mean_abs_change']:.3f} | "
                         f"{r['mean_abs_between_variants']:.3f} |")
    return "\n".join(lines)


SECTIONS = {"checkpoints": checkpoints_table, "summary": summary_table, "strengths": strengths_table,
            "throughput": throughput_table, "quality": quality_table, "utility": utility_table, "levers": levers_table, "levers_borrow": levers_borrow_table,
            "density": density_table,
            "backbones": backbones_table, "backbone_strength": backbone_strength_table}
FILES = {"README.md": ("checkpoints", "summary", "strengths"),
         BENCHMARKS_DOC: ("utility", "levers", "levers_borrow", "density", "quality", "throughput", "backbone_strength", "backbones")}


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
