"""How good is the bundled model, and which strength to pick.

    python benchmarks/quality.py [--quick] [--root ../shared/data] [--checkpoint mnist]

1. Test -ELBO and importance-weighted NLL of the checkpoint on the MNIST test split.
2. For each mode (data-relative noise, posterior noise, class-aware noise; plain and residual) and
   strengths from 0 to the maximum: the label preservation rate (the fraction of variants that a classifier trained on
   the full MNIST training set assigns the source digit's label) against diversity (mean absolute
   pixel change and mean L2 distance of variants from their source, and the mean absolute
   difference between two variants of the same source). Class-aware noise ("class") draws from the
   within-class covariance of the codes of 10 labelled training digits per class (`VAEAugment.fit`),
   the few labels a user of this library has.
Writes benchmarks/results/quality.json (``label_preservation`` keyed by strength for the default
mode) and benchmarks/results/quality.png.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from common import DEFAULT_ROOT, RESULTS, mnist, predict, train_classifier, write_json  # noqa: I001  (sets OMP_WAIT_POLICY before torch loads)
import torch

from vae_augment import evaluate, load_vae
from vae_augment.transforms import DEFAULT_STRENGTH, VAEAugment

STRENGTHS = [0.0, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0]
SETTINGS = [("data", False), ("data", True), ("posterior", False), ("posterior", True), ("class", False), ("class", True)]
LABELLED_PER_CLASS = 10  # labelled training digits per class that "class" mode learns its covariance from


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--root", default=DEFAULT_ROOT)
    parser.add_argument("--checkpoint", default="mnist")
    parser.add_argument("--images", type=int, default=2000, help="test digits used for the strength sweep")
    parser.add_argument("--variants", type=int, default=4, help="variants per digit")
    parser.add_argument("--iw-k", type=int, default=500)
    parser.add_argument("--iw-images", type=int, default=2000, help="test images for the IW-NLL (the model card has all 10,000)")
    parser.add_argument("--out", default=str(RESULTS / "quality.json"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    start = time.time()
    n_images = 200 if args.quick else args.images
    iw_images, iw_k = (200, 20) if args.quick else (args.iw_images, args.iw_k)

    x_train, y_train = mnist(args.root, train=True)
    x_test, y_test = mnist(args.root, train=False)
    vae = load_vae(args.checkpoint)

    print(f"computing the IW-NLL (k={iw_k}) on {iw_images} test images...", flush=True)
    figures = evaluate(vae, torch.utils.data.TensorDataset(x_test[:iw_images], y_test[:iw_images]), iw_k=iw_k, batch_size=50)
    print(f"test -ELBO {figures['neg_elbo_nats']:.2f} nats ({figures['neg_elbo_bits_per_dim']:.4f} bits/dim), "
          f"IW-NLL k={iw_k} {figures['iw_nll_nats']:.2f} nats on {iw_images} images", flush=True)

    steps = 300 if args.quick else 2000
    classifier = train_classifier(x_train, y_train, steps=steps, batch_size=128, seed=0)
    accuracy = (predict(classifier, x_test) == y_test).float().mean().item()
    print(f"judge classifier: {steps} steps on the full training set, test accuracy {accuracy:.4f}", flush=True)

    x, y = x_test[:n_images], y_test[:n_images]
    labelled = torch.cat([torch.nonzero(y_train == c)[:LABELLED_PER_CLASS, 0] for c in range(10)])
    sweep: dict[str, dict[str, dict[str, float]]] = {}
    for mode, residual in SETTINGS:
        key = f"{mode}{'+residual' if residual else ''}"
        sweep[key] = {}
        for strength in STRENGTHS:
            augment = VAEAugment(vae, strength=strength, mode=mode, residual=residual, generator=torch.Generator().manual_seed(0))
            if mode == "class":
                augment.fit(x_train[labelled], y_train[labelled])
            kept, change, l2, outputs = [], [], [], []
            for _ in range(args.variants):
                variants = augment(x)
                outputs.append(variants)
                kept.append((predict(classifier, variants) == y).float())
                change.append((variants - x).abs().flatten(1).mean(1))
                l2.append((variants - x).flatten(1).norm(dim=1))
            sweep[key][f"{strength:g}"] = {
                "label_preservation": torch.cat(kept).mean().item(),
                "mean_abs_change": torch.cat(change).mean().item(),
                "mean_l2_distance": torch.cat(l2).mean().item(),
                # spread among variants of one source: 0 when every variant is the same image
                "mean_abs_between_variants": torch.stack([(outputs[i] - outputs[i - 1]).abs().mean() for i in range(1, len(outputs))]).mean().item(),
            }
            row = sweep[key][f"{strength:g}"]
            print(f"{key:<20} strength {strength:<5g} label kept {row['label_preservation']:.3f}  "
                  f"mean |change| {row['mean_abs_change']:.4f}  between variants {row['mean_abs_between_variants']:.4f}", flush=True)

    # the default setting again, with the VAE under bfloat16 autocast (precision="bf16")
    fast = VAEAugment(vae, precision="bf16", generator=torch.Generator().manual_seed(0))
    variants = [fast(x) for _ in range(args.variants)]
    bf16_default = {"strength": DEFAULT_STRENGTH,
                    "label_preservation": torch.cat([(predict(classifier, v) == y).float() for v in variants]).mean().item(),
                    "mean_abs_change": torch.cat([(v - x).abs().flatten(1).mean(1) for v in variants]).mean().item()}
    print(f"data (bf16)          strength {DEFAULT_STRENGTH:<5g} label kept {bf16_default['label_preservation']:.3f}  "
          f"mean |change| {bf16_default['mean_abs_change']:.4f}", flush=True)

    result = {
        "protocol": {"checkpoint": args.checkpoint, "quick": args.quick, "sweep_images": n_images, "variants_per_image": args.variants,
                     "iw_images": iw_images, "judge_steps": steps, "class_labelled_per_class": LABELLED_PER_CLASS, "judge_test_accuracy": accuracy,
                     "default_mode": "data", "default_strength": DEFAULT_STRENGTH, "seconds": round(time.time() - start, 1)},
        "test": figures,
        "label_preservation": {s: v["label_preservation"] for s, v in sweep["data"].items()},
        "sweep": sweep,
        "bf16_default": bf16_default,
    }
    out = write_json(args.out, result)
    plot(sweep, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')} in {time.time() - start:.0f} s")


def plot(sweep, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot (pip install matplotlib)")
        return
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for key, rows in sweep.items():
        change = [r["mean_abs_change"] for r in rows.values()]
        kept = [r["label_preservation"] for r in rows.values()]
        ax.plot(change, kept, marker="o", label=key)
        for strength, cx, ky in zip(rows, change, kept):
            if key == "data" and strength in ("0.5", "1", "2", "3", "4"):
                ax.annotate(strength, (cx, ky), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel("diversity: mean absolute pixel change from the source")
    ax.set_ylabel("label preservation (judge classifier)")
    ax.set_title("VAEAugment on MNIST test digits: strength trade-off")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
