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

# The project's goals, as the README has stated them; the summary says whether the latest run meets each.
UTILITY_GOALS = {"vae": ("none", 6), "classic+vae": ("classic", 1)}  # condition: (baseline, points gained at 100 labels)
BATCH_GOAL_IMG_S = 10_000  # VAEAugment on batches of 256, 2 CPU threads
PER_SAMPLE_GOAL_IMG_S = 1_500  # VAEAugment one image at a time
EPOCH_GOAL, CACHED_EPOCH_GOAL = 1.3, 1.15  # a training epoch with the VAE / plain epoch, without and with PosteriorCache
UNCACHED_EPOCHS = ("dataloader_epoch_ratio", "dataloader_epoch_ratio_batched", "dataloader_epoch_ratio_worker_batched",
                   "dataloader_epoch_ratio_batched_bf16")
CACHED_EPOCHS = ("dataloader_epoch_ratio_cached", "dataloader_epoch_ratio_worker_batched_cached",
                 "dataloader_epoch_ratio_worker_batched_cached_bf16")


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def checkpoints_table() -> str:
    rows = ["| name | data | config | test -ELBO (nats) | bits/dim | IW-NLL (nats) | size |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for folder in sorted((REPO / "checkpoints").glob("*/")):
        metrics, config = _load(folder / "metrics.json"), _load(folder / "config.json")
        if not metrics or not config:
            continue
        test = metrics["test"]
        size_mb = (folder / "model.safetensors").stat().st_size / 1e6
        cfg = f"latent {config['latent_dim']}, widths {config['widths']}, {config['likelihood']}"
        iw = f"{test['iw_nll_nats']:.2f} (k={test['iw_k']})" if "iw_nll_nats" in test else "-"
        rows.append(f"| `{folder.name}` | {metrics['dataset']} ({metrics['epochs']} epochs) | {cfg} | {test['neg_elbo_nats']:.2f} | "
                    f"{test['neg_elbo_bits_per_dim']:.4f} | {iw} | {size_mb:.1f} MB |")
    return "\n".join(rows)


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
           f"{t['decode_batch_bf16_img_s']:,.0f} images/s |",
           f"| what the epoch targets call for: encode+decode within 1.3x / decode within 1.15x of the plain epoch | "
           f"{t['needed_img_s_for_1.3x']:,.0f} / {t['needed_decode_img_s_for_1.15x']:,.0f} images/s |"]
          if "decode_batch_img_s" in t else []),
        f"| albumentations `Affine`, per sample (reference) | {t['albumentations_affine_img_s']:,.0f} images/s |",
        f"| torchvision `RandomAffine`, per sample (reference) | {t['torchvision_random_affine_img_s']:,.0f} images/s |",
        f"| training epoch, 2 workers, VAEAugment per sample / without | {t['dataloader_epoch_ratio']:.2f}x ({e['vae']:.1f} s / {e['plain']:.1f} s) |",
        f"| same, with `PosteriorCache` | {t['dataloader_epoch_ratio_cached']:.2f}x ({e['cached']:.1f} s) |",
        f"| same, VAEAugment on collated batches in the main process | {t['dataloader_epoch_ratio_batched']:.2f}x ({e['batched']:.1f} s) |",
        *([f"| same, `AugmentCollate` (whole batches inside the workers) | {t['dataloader_epoch_ratio_worker_batched']:.2f}x "
           f"({e['worker_batched']:.1f} s) |"] if "dataloader_epoch_ratio_worker_batched" in t else []),
        *([f"| same, `PosteriorCache(..., batched=True)` (whole batches in the workers, decode only) | "
           f"{t['dataloader_epoch_ratio_worker_batched_cached']:.2f}x ({e['worker_batched_cached']:.1f} s) |"]
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


def _seeds(rows: list[dict]) -> str:
    """The number of seeds behind results rows ("2-3" when they differ)."""
    counts = sorted({len(r["runs"]) for r in rows})
    return str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"


def _paired_diffs(row: dict, base: dict) -> list[float] | None:
    """A condition's accuracy minus its baseline's on the same seed, in points, per seed (None if the seeds differ)."""
    if len(row["runs"]) != len(base["runs"]):
        return None
    return [100 * (a - b) for a, b in zip(row["runs"], base["runs"])]


def _paired_gain(row: dict, base: dict) -> str:
    """Mean +- std over seeds of `_paired_diffs`."""
    d = _paired_diffs(row, base)
    if d is None:
        return "-"  # not measured on the same seeds
    return f"{statistics.fmean(d):+.1f} +- {statistics.stdev(d) if len(d) > 1 else 0:.1f}"


def utility_table() -> str:
    u = _load(RESULTS / "utility.json")
    if not u or "results" not in u:
        return "_not measured yet: run `python benchmarks/utility.py --phase select` then `python benchmarks/utility.py`_"
    p = u["protocol"]
    chosen = p.get("chosen", {})
    lines = [
        f"Measured by `python benchmarks/utility.py` (test split, {_seeds([r for rows in u['results'].values() for r in rows.values()])} "
        f"seeds, mean +- std; {p['classifier']}, {p['steps']} steps of batch {p['batch_size']}). `classic` is a RandomAffine "
        "(15 degrees, 10% shift, 0.9-1.1 scale, 10 degrees shear); `vae` is the best VAE-only condition on the validation split, "
        "`classic+vae` the best combination with the affine (table below):",
        "",
        *(f"- `{alias}`: {c['condition']}, {c['code']}" + ("" if c.get("source", "validation split") == "validation split"
          else f" ({c['source']})") for alias, c in chosen.items()),
        "",
        "| condition | " + " | ".join(f"{n} labels" for n in u["results"]) + " |",
        "| --- | " + " | ".join("---" for _ in u["results"]) + " |",
    ]
    names = list(next(iter(u["results"].values())))
    for name in names:
        cells = []
        for rows in u["results"].values():
            r = rows.get(name)
            cells.append(f"{100 * r['mean']:.1f} +- {100 * r['std']:.1f} %" if r else "-")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    gains = [(name, base, goal) for name, (base, goal) in UTILITY_GOALS.items() if name in names and base in names]
    if gains:
        lines += ["", "The goal's measure, paired by seed (each seed draws the same labelled images and the same classifier "
                  "initialisation for every condition), in points of accuracy, mean +- std over seeds:", "",
                  "| gain | goal | " + " | ".join(f"{n} labels" for n in u["results"]) + " |",
                  "| --- | --- | " + " | ".join("---" for _ in u["results"]) + " |"]
        for name, base, goal in gains:
            cells = []
            for rows in u["results"].values():
                cells.append(_paired_gain(rows[name], rows[base]) if name in rows and base in rows else "-")
            lines.append(f"| {name} - {base} | +{goal} at 100 labels | " + " | ".join(cells) + " |")
    if "validation_100" in u:
        lines += ["", f"Every condition explored, on the validation split (training images 50,000-59,999), 100 labels, {_seeds(list(u['validation_100'].values()))} seeds "
                  "(`python benchmarks/utility.py --phase select`):", "",
                  "| condition | validation accuracy | paired gain over none (over classic for classic+...) |", "| --- | --- | --- |"]
        val = u["validation_100"]
        for name, r in val.items():
            base = "classic" if name.startswith("classic+") else "none"
            gain = "-"
            if name not in ("none", "classic") and base in val:
                gain = _paired_gain(r, val[base])
            lines.append(f"| {name} | {100 * r['mean']:.1f} +- {100 * r['std']:.1f} % | {gain} |")
    return "\n".join(lines)


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


def _met(ok: bool) -> str:
    return "met" if ok else "**missed**"


def summary_table() -> str:
    """The headline figures of every results file, for the README, each row linked to its full table."""
    doc = BENCHMARKS_DOC
    rows = ["| figure | latest run | goal | status |", "| --- | --- | --- | --- |"]
    u = _load(RESULTS / "utility.json")
    if u and "100" in u.get("results", {}):
        runs = u["results"]["100"]
        for name, (base, goal) in UTILITY_GOALS.items():
            d = _paired_diffs(runs[name], runs[base]) if name in runs and base in runs else None
            if d is None:
                continue
            what = "VAE alone, over no augmentation" if base == "none" else "VAE after a classic affine, over the affine alone"
            rows.append(f"| [{what}]({doc}#does-it-help): test accuracy, 100 MNIST labels | {_paired_gain(runs[name], runs[base])} "
                        f"points ({100 * runs[base]['mean']:.1f}% -> {100 * runs[name]['mean']:.1f}%) | +{goal} | "
                        f"{_met(statistics.fmean(d) >= goal)} |")
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
        bf16 = f" (bf16: {t['vae_batch_bf16_img_s']:,.0f})" if "vae_batch_bf16_img_s" in t else ""
        rows.append(f"| [VAEAugment on batches of 256]({doc}#speed), {t['threads']} CPU threads | {t['vae_batch_img_s']:,.0f} "
                    f"images/s{bf16} | {BATCH_GOAL_IMG_S:,} | {_met(t['vae_batch_img_s'] >= BATCH_GOAL_IMG_S)} |")
        rows.append(f"| [VAEAugment one image at a time]({doc}#speed) | {t['vae_per_sample_img_s']:,.0f} images/s | "
                    f"{PER_SAMPLE_GOAL_IMG_S:,} | {_met(t['vae_per_sample_img_s'] >= PER_SAMPLE_GOAL_IMG_S)} |")
        best = min(t[k] for k in UNCACHED_EPOCHS if k in t)
        best_cached = min(t[k] for k in CACHED_EPOCHS if k in t)
        rows.append(f"| [Training epoch with the VAE / plain epoch]({doc}#speed), best pipeline without / with "
                    f"`PosteriorCache` | {best:.2f}x / {best_cached:.2f}x | {EPOCH_GOAL:g}x / {CACHED_EPOCH_GOAL:g}x | "
                    f"{_met(best <= EPOCH_GOAL)} / {_met(best_cached <= CACHED_EPOCH_GOAL)} |")
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
            "throughput": throughput_table, "quality": quality_table, "utility": utility_table,
            "backbones": backbones_table, "backbone_strength": backbone_strength_table}
FILES = {"README.md": ("checkpoints", "summary", "strengths"),
         BENCHMARKS_DOC: ("utility", "quality", "throughput", "backbone_strength", "backbones")}


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
