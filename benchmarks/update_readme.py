"""Render the README's tables from the committed results files (never typed by hand).

    python benchmarks/update_readme.py          # rewrite the marked sections of README.md
    python benchmarks/update_readme.py --check  # exit 1 if README.md is out of date

Sections between ``<!-- name:start -->`` and ``<!-- name:end -->`` are replaced: ``checkpoints``
(from checkpoints/*/metrics.json), ``throughput``, ``quality``, ``utility``, ``backbones`` and
``backbone_strength`` (benchmarks/results/<name>.json).
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


def _paired_gain(row: dict, base: dict) -> str:
    """Mean +- std over seeds of a condition's accuracy minus its baseline's on the same seed, in points."""
    if len(row["runs"]) != len(base["runs"]):
        return "-"  # not measured on the same seeds
    d = [100 * (a - b) for a, b in zip(row["runs"], base["runs"])]
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
    gains = [(name, base, goal) for name, base, goal in (("vae", "none", 6), ("classic+vae", "classic", 1)) if name in names and base in names]
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


SECTIONS = {"checkpoints": checkpoints_table, "throughput": throughput_table, "quality": quality_table,
            "utility": utility_table, "backbones": backbones_table, "backbone_strength": backbone_strength_table}


def render(text: str) -> str:
    for name, make in SECTIONS.items():
        pattern = re.compile(rf"(<!-- {name}:start -->\n)(?:.*?\n)?(<!-- {name}:end -->)", re.S)
        if pattern.search(text):
            text = pattern.sub(lambda m, body=make(): m.group(1) + body + "\n" + m.group(2), text)
    return text


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    readme = REPO / "README.md"
    old = readme.read_text()
    new = render(old)
    if args.check:
        if new != old:
            print("README.md is out of date: run python benchmarks/update_readme.py", file=sys.stderr)
            return 1
        return 0
    readme.write_text(new)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
