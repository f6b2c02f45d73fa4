"""The full tables of docs/benchmarks.md, each rendered from its results file in benchmarks/results/
(`update_readme.py` puts them between their markers): utility, levers, density, quality, throughput,
backbones. Each returns the Markdown of its section, or a line saying how to measure it when the file is absent.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from goals import RESULTS, SEMI_CONDITIONS, utility_goal_words
from stats import paired
from vae_augment.policy import CAREFUL_STRENGTH, FIDELITY_WARNING, SMALL_DATA_IMAGES

REPO = RESULTS.parents[1]


def portable(command: str) -> str:
    """A recorded command as a user runs it: the machine's data folder (``--root /somewhere/data``) shown as
    ``--root "$VAE_AUGMENT_DATA"``, the variable the README's examples read."""
    return re.sub(r"--root \S+", '--root "$VAE_AUGMENT_DATA"', command)


def load_results(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _over_floor(t: dict, key: str) -> str:
    return f", {t[key]:.2f}x its FLOP floor" if key in t else ""


def throughput_table() -> str:
    t = load_results(RESULTS / "throughput.json")
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
        *[f"| VAEAugment, batches of {n}, encoder and decoder `compile(fullgraph=True)` / eager | "
          f"{t[f'compiled_batch{n}_img_s']:,.0f} / {t[f'eager_batch{n}_img_s']:,.0f} images/s "
          f"({t[f'compiled_vs_eager_batch{n}']:.2f}x; compiling {t[f'compile_seconds_batch{n}']:.0f} s) |"
          for n in (16, 256) if f"compiled_batch{n}_img_s" in t],
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
    q = load_results(RESULTS / "quality.json")
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


def gain_text(g: dict) -> str:
    """A paired gain: mean, std and 95% interval over seeds, in points."""
    lo, hi = g["ci95"]
    return f"{g['mean']:+.1f} +- {g['std']:.1f} [{lo:+.1f}, {hi:+.1f}]"


def accuracy_text(r: dict) -> str:
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
            *(f"| {name} | {accuracy_text(r)} | {gain_text(gains[name]) if name in gains else '-'} |" for name, r in val.items())]


def utility_table() -> str:
    u = load_results(RESULTS / "utility.json")
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
        lines.append(f"| {alias} | " + " | ".join(accuracy_text(rows[alias]) if alias in rows else "-" for rows in m["test"].values()) + " |")
    lines += ["", "| paired gain | goal | " + " | ".join(f"{n} labels" for n in m["gains"]) + " |",
              "| --- | --- | " + " | ".join("---" for _ in m["gains"]) + " |"]
    for name in next(iter(m["gains"].values())):
        lines.append(f"| {name} | {utility_goal_words(name)} | " + " | ".join(gain_text(g[name]) if name in g else "-" for g in m["gains"].values()) + " |")
    cas = m.get("cas_100")
    if cas:
        lines += ["", f"Classification accuracy score (Ravuri & Vinyals, 2019), 100 labels, {cas['seeds']} seeds: a classifier "
                  f"trained only on variants of `{cas['condition']}` (every training image a variant) reaches "
                  f"{accuracy_text(cas['variants_only'])} on the real test images; trained on the real labelled images, {accuracy_text(cas['real'])} "
                  f"(the same seeds; paired gain {gain_text(cas['gain'])} points)." if "gain" in cas else "."]
    lines += ["", f"Every condition explored on the validation split (100 labels, {seeds['select']} seeds; gains over `none`, "
              "or over the chosen classic for `X + vae`):", "", *_validation_rows(m["validation_100"], m["validation_gains"])]
    if "validation_1000" in m:
        lines += ["", f"The same at 1,000 labels ({seeds['select']} seeds):", "",
                  *_validation_rows(m["validation_1000"], m["validation_gains_1000"])]
    if "validation_semi" in m:  # `--phase semi`: the pipelines that use the unlabelled pool (benchmarks/semi.py)
        v = m["validation_semi"]
        earlier = v["earlier classic+vae"]
        rows = {n: r for n, r in v.items() if isinstance(r, dict) and "runs" in r and n != "earlier classic+vae"}
        lines += ["", f"The semi-supervised pipelines on the validation split (100 labels, the first {v['seeds']} seeds; gains over "
                  f"the first row, pseudo-labels with the classic). The earlier `classic+vae`, `{earlier['condition']}`, measured "
                  f"{100 * earlier['mean']:.1f} % on the same seeds:", "", *_validation_rows(rows, v["gains"])]
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
            return f"{accuracy_text(rows[name]) if name in rows else '-'} | {gain_text(g) if g else '-'}"

        shown = [*d["validation"], *(n for n in d["test"] if n not in d["validation"] and n not in SEMI_CONDITIONS)]
        for name in shown:  # then the default before the classic, and the semi pipelines, if not explored
            lines.append(f"| {name} | {cells(d['validation'], d['validation_gains'], name)} | {cells(d['test'], d['gains'], name)} |")
        if "semi_gains" in d:
            lines += ["", f"The semi-supervised rows (`utility.py --phase semi`): `classic+vae` is now `{d['chosen']['classic+vae']['condition']}`, "
                      f"{d['chosen']['classic+vae']['source']}; the earlier one was `{d['chosen']['earlier classic+vae']['condition']}`. "
                      "Paired gains on the test split, same seeds:", "", "| gain | points |", "| --- | --- |",
                      *(f"| {gain} | {gain_text(g)} |" for gain, g in d["semi_gains"].items())]
    return "\n".join(lines)


# the command that measured levers_borrow.json (its levers are retired prototypes: see benchmarks/levers.py)
BORROW_LEVERS = ("propres s=1 p=0.5", "propres s=0.75 p=0.5", "propres s=1.25 p=0.5", "propres s=1 p=0.75",
                 "propres s=1 p=0.5 keep=0.25", "propres s=1 p=0.5 keep=1")
BORROW_COMMAND = ("python benchmarks/levers.py --out benchmarks/results/levers_borrow.json --levers "
                  + " ".join(f'"{lever}"' for lever in BORROW_LEVERS))


def levers_borrow_table() -> str:
    """The borrowed-variation levers (label propagation over the latent bank), a run of their own with its own baselines."""
    return levers_table("levers_borrow.json", BORROW_COMMAND)


def levers_table(file: str = "levers.json", command: str = "python benchmarks/levers.py") -> str:
    """The levers tried on the validation split (benchmarks/levers.py)."""
    lv = load_results(RESULTS / file)
    if not lv:
        return f"_not measured yet: run `{command}`_"
    p = lv["protocol"]
    lines = [f"Measured by `{command}` ({p['seconds'] / 60:.0f} minutes): validation split, {p['labelled']} labels, "
             f"{p['seeds']} paired seeds (those of the selection above), {p['steps']} classifier steps unless marked; paired gains in "
             f"points over `{p['classic']}` alone and over the chosen `{p['chosen']}`.", "",
             "| condition | accuracy | over the classic alone | over the chosen |", "| --- | --- | --- | --- |"]
    for name, r in lv["runs"].items():
        g = lv["gains"].get(name, {})
        over_classic = gain_text(g["over classic"]) if "over classic" in g else "-"
        over_chosen = gain_text(g["over chosen"]) if "over chosen" in g else "-"
        lines.append(f"| {name} | {accuracy_text(r)} | {over_classic} | {over_chosen} |")
    other = p.get("other_metrics")
    if other:
        t = other["test"]
        bundled = (load_results(REPO / "checkpoints" / "mnist" / "metrics.json") or {}).get("test", {})
        lines += ["", f"The rows `with ...` use `--other-vae`: the chosen noise with a checkpoint trained by `{portable(other['command'])}`: "
                  f"test -ELBO {t['neg_elbo_nats']:.2f} nats on gray digits, reconstruction R^2 {t['reconstruction_r2']:.3f}"
                  + (f", binarized IW-NLL {t['binarized_iw_nll_nats']:.2f} nats (k={t['binarized_iw_k']})" if "binarized_iw_nll_nats" in t else "")
                  + (f" (the bundled mnist: {bundled['binarized_iw_nll_nats']:.2f} nats)." if "binarized_iw_nll_nats" in bundled else ".")]
    return "\n".join(lines)


def density_table() -> str:
    """MNIST as a density model (benchmarks/density.py): the trained model with N(0, I) and with the fitted mixture prior."""
    d = load_results(RESULTS / "density.json")
    if not d:
        return "_not measured yet: run `python benchmarks/density.py`_"
    p = d["protocol"]
    bundled = (load_results(REPO / "checkpoints" / "mnist" / "metrics.json") or {}).get("test", {})
    rows = [f"Measured by `python benchmarks/density.py`{' --quick' if p['quick'] else ''}: {p['data']}. The model: `{portable(p['train_command'])}`; "
            f"its prior: `{portable(p['prior_command'])}`" + (f"; then trained on with its prior: `{portable(p['tune_command'])}`." if "tune_command" in p else "."), "",
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
    b = load_results(RESULTS / "backbones.json")
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
    b = load_results(RESULTS / "backbone_strength.json")
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
    if "class" in b["sweep"]:  # the label-aware modes on the pooled codes of the spatial latents
        lines += ["", f"The label-aware modes on the same backbone ({p['label_aware']}; fitted on {p['labelled_per_class']} "
                  f"labelled training digits per class, LatentBorrow's donors from {p['unlabelled']:,} unlabelled ones); read "
                  "each against `data` mode at the same mean change:", "",
                  "| mode | strength | label kept | mean abs change | between two variants |", "| --- | --- | --- | --- | --- |"]
        for mode, label in (("class", '`VAEAugment(mode="class")`'), ("borrow", "`LatentBorrow`")):
            for strength, row in b["sweep"][mode].items():
                lines.append(f"| {label} | {strength} | {row['label_preservation']:.3f} | {row['mean_abs_change']:.4f} | "
                             f"{row['mean_abs_between_variants']:.4f} |")
    return "\n".join(lines)


def pseudo_choice_table() -> str:
    """`pseudo_label`'s k and confidence threshold (benchmarks/pseudo_choice.py): the pool's labels, and the validation runs."""
    c = load_results(RESULTS / "pseudo_choice.json")
    if not c:
        return "_not measured yet: run `python benchmarks/pseudo_choice.py`_"
    p, v = c["protocol"], c["validation"]
    lines = [f"Measured by `python benchmarks/pseudo_choice.py` ({p['seconds'] / 60:.0f} minutes; 100 labels, {p['pool']}; the "
             f"classic `{p['classic']}`). How many pool images keep a label at each confidence threshold, and how many of "
             f"those labels are right (mean of {p['label_seeds']} labelled draws):", "",
             "| k | " + " | ".join(f"threshold {t}: kept / right" for t in next(iter(c["labels"].values()))) + " |",
             "| --- |" + " --- |" * len(next(iter(c["labels"].values())))]
    for k, rows in c["labels"].items():
        lines.append(f"| {k} | " + " | ".join(f"{r['kept']:.1%} / {r['right']:.1%}" for r in rows.values()) + " |")
    default = next(n for n in v if n != "gains")
    lines += ["", f"The classifier trained on the labelled images and the kept pseudo-labels, with the classic, on the validation "
              f"split ({p['seeds']} paired seeds; gains over the default, `{default}`: k = {p['default']['k']}, no threshold):", "",
              "| setting | validation | over the default |", "| --- | --- | --- |"]
    for name, r in v.items():
        if name != "gains":
            lines.append(f"| {name} | {accuracy_text(r)} | {gain_text(v['gains'][name]) if name in v['gains'] else '-'} |")
    return "\n".join(lines)


def validation_vae_table() -> str:
    """Is the validation split out of sample for the VAE (benchmarks/validation_vae.py): reconstruction errors of the
    bundled VAE and of one trained on the pool only, and the semi pipelines on validation with each."""
    c = load_results(RESULTS / "validation_vae.json")
    if not c:
        return "_not measured yet: run `python benchmarks/validation_vae.py`_"
    p, r, v = c["protocol"], c["reconstruction"], c["validation"]
    lines = [f"Measured by `python benchmarks/validation_vae.py` ({p['seconds'] / 60:.0f} minutes). Mean squared error of "
             f"reconstruction (x 1,000, pixels in [0, 1]) on the first {p['images']:,} images of each split:", "",
             "| VAE | pool | validation | test |", "| --- | --- | --- | --- |"]
    for name, errors in r.items():
        lines.append(f"| {name} | " + " | ".join(f"{1000 * errors[split]:.2f}" for split in ("pool", "validation", "test")) + " |")
    lines += ["", f"The semi-supervised pipelines on the validation split ({p['seeds']} paired seeds, {p['steps']} steps), with "
              "each VAE's codes for the pseudo-labels and its variants as the strong view:", "",
              "| condition | bundled VAE | pool-only VAE |", "| --- | --- | --- |"]
    for name, row in v["pool-only"].items():
        bundled = v["bundled"].get(name)
        lines.append(f"| {name} | {accuracy_text(bundled) if bundled else '-'} | {accuracy_text(row)} |")
    lines += ["", "| paired gain | bundled VAE | pool-only VAE |", "| --- | --- | --- |"]
    for key, label in (("share", "the decoded variants' share (against the twin without them)"), ("over pseudo", "over pseudo-labels")):
        lines.append(f"| {label} | " + " | ".join(gain_text(v[key][vae]) if vae in v[key] else "-" for vae in ("bundled", "pool-only")) + " |")
    return "\n".join(lines)


def long_training_results() -> list[dict]:
    """The full runs of benchmarks/long_training.py, one results file per length (long_training_<steps>.json), by length."""
    found = (load_results(path) for path in RESULTS.glob("long_training_*.json"))
    return sorted((c for c in found if c and not c["protocol"].get("quick")), key=lambda c: c["protocol"]["steps"])


def chosen_long_training() -> dict | None:
    """Of the lengths with a test phase, the one chosen on validation (the length is a setting, like the pipeline):
    the shortest, unless a longer one's ``classic+vae`` beats it there with a paired interval above 0."""
    chosen = None
    for c in (c for c in long_training_results() if "gains" in c and "validation" in c):
        if chosen is None or paired(_validated(c), _validated(chosen))["ci95"][0] > 0:
            chosen = c
    return chosen


def _validated(c: dict) -> dict:
    return c["validation"][c["chosen"]["classic+vae"]]


def _long_training_part(c: dict) -> list[str]:
    p, v = c["protocol"], c.get("validation", {})
    minutes = " and ".join(f"{phase} phase {seconds / 60:.0f} minutes" for phase, seconds in p["seconds"].items())
    lines = [f"**{p['steps']:,} steps.** Measured by `python benchmarks/long_training.py --steps {p['steps']}"
             f"{' --test-seed0 0' if p.get('test_seed0') == 0 else ''}` ({minutes}): {p['steps']:,} classifier steps of "
             f"{p['batch_size']} images, {p['labels']} labels, the classic `{p['classic']}`.", ""]
    if v:
        lines += [f"Validation split, {v['seeds']} paired seeds, the pool-only VAE:", "",
                  "| condition | accuracy | paired gain over pseudo-labels |", "| --- | --- | --- |"]
        names = [n for n in v if n not in ("vae", "seeds", "gains")]
        for name in names:
            gain = v["gains"].get(f"{name} - {names[0]}")
            lines.append(f"| {name} | {accuracy_text(v[name])} | {gain_text(gain) if gain else '-'} |")
        share = v["gains"]["variants' share"]
        lines += ["", f"The decoded variants' share on validation: {gain_text(share)}."]
    t = c.get("test", {}).get("100")
    if t:
        short = c.get("against_1000_steps", {})
        n, seed0 = c["test"]["seeds"], p["test_seed0"]
        how = "other seeds, unpaired" if any(g.get("paired") is False for g in short.values()) else "the same seeds, paired"
        lines += ["", f"Test split, {n} paired seeds ({seed0}-{seed0 + n - 1}), the bundled VAE:", "",
                  f"| condition | pipeline | accuracy | against its 1,000-step runs ({how}) |", "| --- | --- | --- | --- |"]
        for alias, row in t.items():
            g = short.get(alias)
            against = f"{g['mean']:+.1f} [{g['ci95'][0]:+.1f}, {g['ci95'][1]:+.1f}]" if g else "-"
            lines.append(f"| `{alias}` | {row['condition']} | {accuracy_text(row)} | {against} |")
        lines += ["", "| paired gain (test) | points |", "| --- | --- |"]
        lines += [f"| {name} | {gain_text(g)} |" for name, g in c["gains"].items()]
    return lines


def long_training_table() -> str:
    """The semi-supervised pipelines trained longer (benchmarks/long_training.py), one part per length: validation
    with the pool-only VAE, the test split with the bundled one, paired gains, and each against its 1,000-step runs."""
    found = long_training_results()
    if not found:
        return "_not measured yet: run `python benchmarks/long_training.py --vae-dir DIR`_"
    chosen = chosen_long_training()
    lines = []
    if chosen:
        lines += [f"The length chosen on validation (the shortest, unless a longer one's `classic+vae` beats it there with a "
                  f"paired interval above 0): {chosen['protocol']['steps']:,} steps.", ""]
    for c in found:
        lines += _long_training_part(c) + [""]
    return "\n".join(lines[:-1])


def _settings_text(c: dict) -> str:
    return f"residual={c['residual']}, p={c['p']:g}, strength={c['strength']:g}"


def defaults_table() -> str:
    """`VAEAugment(vae)` with no arguments on data nobody tuned it on (benchmarks/defaults.py): Fashion-MNIST's
    validation candidates and test split, and MNIST's test split, paired gains over none and over the classic."""
    d = load_results(RESULTS / "defaults.json")
    if not d:
        return "_not measured yet: run `python benchmarks/defaults.py --fashion-root DIR`_"
    p = d["protocol"]
    lines = [f"Measured by `python benchmarks/defaults.py` ({p['seconds'] / 60:.0f} minutes; {p['steps']} classifier steps; "
             "paired seeds, 95% intervals).", ""]
    f = d.get("fashion")
    if f:
        c = f["checkpoint"]
        lines += [f"**Fashion-MNIST**, its VAE trained by `{f['vae']}` on the 60,000 training images (held-out "
                  f"reconstruction_r2 {c['reconstruction_r2']:.2f}); `VAEAugment(vae)` chooses {_settings_text(c)}. "
                  f"The classic chosen on the validation split: `{f['classic']}`. Validation (100 labels):", "",
                  "| condition | validation | over the classic |", "| --- | --- | --- |"]
        for name, r in f.get("validation", {}).items():
            g = f["validation_gains"].get(f"{name} - {f['classic']}")
            lines.append(f"| {name} | {accuracy_text(r)} | {gain_text(g) if g else '-'} |")
        if "test" in f:
            lines += ["", "Test split (100 labels, once):", "", "| condition | test | paired gain |", "| --- | --- | --- |"]
            lines += [f"| {name} | {accuracy_text(r)} | {_gain_cell(f['gains'], name)} |" for name, r in f["test"].items()]
    figures = [(name, d[key]["neighbour_figures"]) for key, name in (("mnist", "MNIST"), ("fashion", "Fashion-MNIST"))
               if "neighbour_figures" in d.get(key, {})]
    if figures:
        lines += ["", "Why (`--phase figures`): how far an image moves, as a share of the distance to its nearest neighbour among "
                  "20,000 training images (1,000 test images; mean absolute difference per pixel; variants at the default strength):", "",
                  "| dataset | nearest neighbour | reconstruction | plain variant | residual variant |", "| --- | --- | --- | --- | --- |"]
        lines += [f"| {name} | {f['nearest_neighbour_distance']:.4f} | {f['reconstruction']:.0%} | {f['plain variant']:.0%} | "
                  f"{f['residual variant']:.0%} |" for name, f in figures]
    m = d.get("mnist")
    if m:
        lines += ["", f"**MNIST**, the bundled checkpoint: `VAEAugment(vae)` chooses {_settings_text(m['checkpoint'])}. "
                  "Test split, the seeds of the utility benchmark (its `none` and `classic` runs are the pairs):", "",
                  "| labels | condition | test | paired gain |", "| --- | --- | --- | --- |"]
        for labels in ("100", "1000"):
            lines += [f"| {int(labels):,} | {name} | {accuracy_text(r)} | {_gain_cell(m[labels]['gains'], name)} |"
                      for name, r in m.get(labels, {}).get("test", {}).items()]
    return "\n".join(lines)


def _gain_cell(gains: dict, name: str) -> str:
    """The paired gain of condition ``name`` (its ``"name - other"`` key) and what it is over, or "-" without one."""
    key = next((k for k in gains if k.startswith(f"{name} - ")), None)
    return f"{gain_text(gains[key])} over `{key.split(' - ', 1)[1]}`" if key else "-"
