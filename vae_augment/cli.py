"""Command line: ``vae-augment train | fit-prior | eval | preview | generate | pseudo-label | push | demo``."""

from __future__ import annotations

import argparse
import csv
import io
import json
import shlex
import sys
from pathlib import Path

import torch
from torch.utils.data import Subset

from .atomic import atomic_write_text, is_save_debris, new_folder
from .checkpoint import check_folder, is_diffusers_config, read_config
from .data import load_splits
from .devices import default_device
from .evaluation import evaluate, reference_statistics
from .generate import MANIFEST_NAME, generate_variants
from .hub import push
from .latent import MODES
from .loader import load_vae
from .policy import DEFAULT_STRENGTH
from .preview import preview_grid
from .prior import fit_prior
from .pseudo import DEFAULT_NEIGHBOURS, pseudo_label_folders
from .training import DEFAULT_EPOCHS, MIN_STEPS, train


def _int_list(text: str) -> list[int]:
    try:
        return [int(t) for t in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated ints such as 32,64, got {text!r}") from None


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a VAE on a torchvision dataset or an image folder",
                       description="Train a VAE; a checkpoint is written to --out after every epoch.")
    p.add_argument("--dataset", "--data", dest="data", required=True,
                   help="a torchvision dataset name (MNIST, FashionMNIST, KMNIST, CIFAR10, CIFAR100, SVHN) or a folder of images")
    p.add_argument("--root", help="folder holding the torchvision dataset (e.g. data; with --download it is fetched there)")
    p.add_argument("--download", action="store_true", help="download the torchvision dataset if missing")
    p.add_argument("--out", default="runs/vae", help="checkpoint folder (default: runs/vae)")
    p.add_argument("--epochs", type=int, help=f"default: {DEFAULT_EPOCHS}, or as many as make {MIN_STEPS:,} optimizer steps on a "
                   "small dataset (see docs/benchmarks.md#does-it-help for what that measured)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--lr-schedule", choices=["cosine", "constant"], default="cosine")
    p.add_argument("--beta", type=float, default=1.0, help="weight of the KL term (1 = the ELBO)")
    p.add_argument("--warmup-epochs", type=float, default=0.0, help="epochs over which the KL weight rises from 0 to beta")
    p.add_argument("--latent-dim", type=int, help="default: 16 (with --init: its own)")
    p.add_argument("--widths", type=_int_list, help="conv stage widths, e.g. 32,64 (default: 32,64; with --init: its own)")
    p.add_argument("--hidden", type=int, help="default: 256 (with --init: its own)")
    p.add_argument("--likelihood", choices=["bernoulli", "gaussian"], help="default: bernoulli for gray, gaussian for RGB")
    p.add_argument("--binarize", action="store_true", help="train on dynamically binarized images (bernoulli only): "
                   "the setting of binarized-MNIST density models")
    p.add_argument("--image-size", type=int, help="resize images to this size (required for folders of mixed sizes)")
    p.add_argument("--channels", type=int, choices=[1, 3], help="convert images to 1 (gray) or 3 (RGB) channels")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", help="cuda, mps or cpu (default: the first available)")
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--iw-k", type=int, default=64, help="samples for the final importance-weighted NLL (0 = skip)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last finished epoch")
    p.add_argument("--init", metavar="CHECKPOINT", help="start from this trained VAE (bundled name, folder or Hub repo id) with its "
                   "architecture and prior, e.g. the output of fit-prior, to train encoder, decoder and prior together")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto", help="auto: bf16 autocast on CUDA, else fp32")
    p.add_argument("--compile", action="store_true", help="wrap the model in torch.compile")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _run_train(args, argv: list[str]) -> int:
    train(args.data, args.out, root=args.root, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
          lr_schedule=args.lr_schedule, beta=args.beta, warmup_epochs=args.warmup_epochs, latent_dim=args.latent_dim,
          widths=args.widths, hidden=args.hidden, likelihood=args.likelihood, binarize=args.binarize, image_size=args.image_size,
          channels=args.channels, seed=args.seed, device=args.device, num_workers=args.num_workers, iw_k=args.iw_k,
          resume=args.resume, download=args.download, progress=not args.quiet, precision=args.precision, compile=args.compile,
          init=args.init, command="vae-augment " + " ".join(shlex.quote(a) for a in argv))
    return 0


def _add_fit_prior(sub) -> None:
    p = sub.add_parser("fit-prior", help="give a trained VAE a learned mixture prior (a tighter ELBO and NLL, better prior samples)",
                       description="Fit a mixture-of-Gaussians prior to a trained VAE's codes on its training images and write "
                       "the model with it, re-evaluated, to --out (the encoder and decoder are unchanged).")
    p.add_argument("--checkpoint", required=True, help="bundled name, folder or Hub repo id of a vae-augment VAE")
    p.add_argument("--dataset", "--data", dest="data", required=True, help="the data it was trained on: a torchvision name or a folder")
    p.add_argument("--root", help="folder holding the torchvision dataset")
    p.add_argument("--out", required=True, help="new checkpoint folder (must be new or empty)")
    p.add_argument("--components", type=int, default=1024, help="mixture components (default: 1024)")
    p.add_argument("--steps", type=int, default=6000, help="Adam steps (default: 6000)")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--binarize", action="store_true", help="encode dynamically binarized images (for models trained with --binarize)")
    p.add_argument("--passes", type=int, default=1, help="encode each training image this many times (with --binarize: fresh "
                   "pixels each time; default: 1)")
    p.add_argument("--iw-k", type=int, default=64, help="samples for the held-out importance-weighted NLL (0 = skip)")
    p.add_argument("--binarized-k", type=int, help="samples for the NLL of dynamically binarized held-out images (default: --iw-k)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _run_fit_prior(args, argv: list[str]) -> int:
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(not is_save_debris(p.name) for p in out.iterdir())):
        raise FileExistsError(f"--out {str(out)!r} exists and is not an empty folder; fit-prior writes a new checkpoint, so that the "
                              "source and no one else's files are overwritten: choose a new folder (nothing was written)")
    device = torch.device(args.device) if args.device else default_device()
    vae = load_vae(args.checkpoint, device=device)
    height, width = vae.sample_size
    train_set, test_set, info = load_splits(args.data, args.root, image_size=height if height == width else None,
                                            channels=vae.channels, seed=args.seed)
    fitted = fit_prior(vae, train_set, components=args.components, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                       binarize=args.binarize, passes=args.passes, seed=args.seed, progress=not args.quiet)
    before = (vae.metrics or {}).get("test", {})
    reference = reference_statistics(fitted, train_set)  # the anomaly percentiles move with the prior
    test = evaluate(fitted, test_set, iw_k=args.iw_k, batch_size=100, seed=args.seed, progress=not args.quiet,
                    binarized_k=args.binarized_k)
    fitted.metrics = {**fitted.metrics, **reference, "test": test, "test_before_prior": before, "holdout": info.get("holdout", "test split"),
                      "prior_command": "vae-augment " + " ".join(shlex.quote(a) for a in argv)}
    with new_folder(out) as stage:  # a kill leaves no half checkpoint in --out: the same command runs again
        fitted.save_pretrained(stage, refresh_card=True)
    prior = fitted.metrics["prior"]
    print(f"{args.components}-component prior: codes' cross-entropy {prior['cross_entropy_nats']:.2f} nats "
          f"(N(0, I): {prior['standard_normal_cross_entropy_nats']:.2f}); held-out -ELBO {test['neg_elbo_nats']:.2f} nats"
          + (f" (was {before['neg_elbo_nats']:.2f})" if "neg_elbo_nats" in before else "")
          + (f", binarized IW-NLL (k={test['binarized_iw_k']}) {test['binarized_iw_nll_nats']:.2f}" if "binarized_iw_nll_nats" in test else "")
          + f"; saved to {out}")
    return 0


def _add_eval(sub) -> None:
    p = sub.add_parser("eval", help="test -ELBO and importance-weighted NLL of a checkpoint")
    p.add_argument("--checkpoint", required=True, help="bundled name, folder or Hub repo id")
    p.add_argument("--dataset", "--data", dest="data", required=True, help="torchvision dataset name or image folder")
    p.add_argument("--root", help="folder holding the torchvision dataset")
    p.add_argument("--iw-k", type=int, default=100, help="importance samples per image (0 = skip)")
    p.add_argument("--binarized-k", type=int, help="importance samples for the NLL of dynamically binarized images, the "
                   "figure MNIST papers report (default: --iw-k; 0 = skip; Bernoulli models only)")
    p.add_argument("--limit", type=int, help="evaluate only the first N held-out images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")


def _run_eval(args) -> int:
    device = torch.device(args.device) if args.device else default_device()
    vae = load_vae(args.checkpoint, device=device)
    if not vae.has_elbo:
        raise ValueError(f"{args.checkpoint!r} is a {vae.kind}, which has no ELBO (a pretrained diffusers autoencoder was trained "
                         "with a near-zero KL weight); eval measures the ELBO of vae-augment's own VAEs")
    height, width = vae.sample_size
    _, test_set, info = load_splits(args.data, args.root, image_size=height if height == width else None,
                                    channels=vae.channels, seed=args.seed)
    if args.limit:
        test_set = Subset(test_set, range(min(args.limit, len(test_set))))
    figures = evaluate(vae, test_set, iw_k=args.iw_k, batch_size=100, seed=args.seed, progress=not args.json,
                       binarized_k=args.binarized_k)
    figures["dataset"] = info["dataset"]
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        print(f"{info['dataset']} held-out ({figures['images']} images): -ELBO {figures['neg_elbo_nats']:.2f} nats/image, "
              f"{figures['neg_elbo_bits_per_dim']:.4f} bits/dim")
        print(f"reconstruction R^2 {figures['reconstruction_r2']:.3f} (1 is exact, 0 no better than the mean image; "
              f"mean absolute pixel error {figures['reconstruction_mae']:.4f})")
        if args.iw_k:
            print(f"importance-weighted NLL (k={args.iw_k}): {figures['iw_nll_nats']:.2f} nats/image, "
                  f"{figures['iw_nll_bits_per_dim']:.4f} bits/dim")
        if "binarized_iw_nll_nats" in figures:
            print(f"dynamically binarized images, importance-weighted NLL (k={figures['binarized_iw_k']}): "
                  f"{figures['binarized_iw_nll_nats']:.2f} nats/image (the figure MNIST papers report: IWAE 84.78)")
    return 0


def _add_preview(sub) -> None:
    p = sub.add_parser("preview", help="write a labelled PNG grid: your images, their reconstructions, variants, an interpolation")
    p.add_argument("--checkpoint", default="mnist", help="bundled name, folder or Hub repo id (default: mnist)")
    p.add_argument("--data", "--dataset", dest="data", help="torchvision dataset name (with --root) or image folder; "
                   "default: the model's own prior samples")
    p.add_argument("--root", help="folder holding the torchvision dataset")
    p.add_argument("--strength", type=float, default=DEFAULT_STRENGTH)
    p.add_argument("--mode", default="data", choices=[m for m in MODES if m != "class"])
    p.add_argument("--residual", action=argparse.BooleanOptionalAction, default=None,
                   help="add only the decoded change to each image (default: on, as VAEAugment; --no-residual shows the decoded variants)")
    p.add_argument("--variants", type=int, default=3, help="rows of variants (default: 3)")
    p.add_argument("-n", type=int, default=8, help="images per row (default: 8)")
    p.add_argument("--image-size", type=int, help="resize --data images to this size (needed for folders of mixed sizes)")
    p.add_argument("--out", default="preview.png")
    p.add_argument("--seed", type=int, default=0)


def _run_preview(args) -> int:
    path = preview_grid(args.checkpoint, args.out, n=args.n, seed=args.seed, data=args.data, root=args.root,
                        strength=args.strength, mode=args.mode, variants=args.variants, image_size=args.image_size,
                        residual=args.residual)
    print(f"wrote {path}")
    return 0


def _add_generate(sub) -> None:
    p = sub.add_parser("generate", help="write K augmented variants per image as PNGs in an ImageFolder tree")
    p.add_argument("--checkpoint", default="mnist", help="bundled name, folder or Hub repo id (default: mnist)")
    p.add_argument("--data", "--dataset", dest="data", required=True, help="torchvision dataset name or image folder")
    p.add_argument("--root", help="folder holding the torchvision dataset")
    p.add_argument("--per-image", type=int, default=4, help="variants per image (default: 4)")
    p.add_argument("--out", required=True, help="output folder (ImageFolder layout: OUT/<class>/<index>_<k>.png, "
                   "with the run's settings in OUT/generate.json): new or empty, or a run of its own to resume with the same settings")
    p.add_argument("--strength", type=float, default=None, help="default: the transform's default")
    p.add_argument("--mode", choices=[m for m in MODES if m != "class"], default="data",
                   help="'class' needs labelled images to fit on: use VAEAugment(..., mode='class').fit in Python")
    p.add_argument("--residual", action=argparse.BooleanOptionalAction, default=None,
                   help="add only the decoded change to each image (default: on; --no-residual writes the decoded variants themselves)")
    p.add_argument("--split", choices=["train", "test"], default="train", help="split of a torchvision dataset")
    p.add_argument("--image-size", type=int, help="resize images to this size (needed for folders of mixed sizes)")
    p.add_argument("--limit", type=int, help="only the first N images")
    p.add_argument("--batch-size", type=int, default=256, help="images per VAE call (default: 256)")
    p.add_argument("--device", help="where the model runs, e.g. cuda (default: cpu)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true")


def _run_generate(args, argv: list[str]) -> int:
    n = generate_variants(args.checkpoint, args.data, args.out, per_image=args.per_image, root=args.root,
                          strength=args.strength, mode=args.mode,
                          residual=args.residual, seed=args.seed, limit=args.limit, split=args.split,
                          image_size=args.image_size, progress=not args.quiet, batch_size=args.batch_size, device=args.device,
                          command="vae-augment " + " ".join(shlex.quote(a) for a in argv))
    files = json.loads((Path(args.out) / MANIFEST_NAME).read_text())["files"]
    print(f"wrote {n} images to {args.out}" + (f" (the other {files - n} of the run's {files} were written before)" if n < files else "")
          + f"; how they were made is in {Path(args.out) / MANIFEST_NAME}")
    return 0


def _add_pseudo_label(sub) -> None:
    p = sub.add_parser("pseudo-label", help="label a folder of unlabelled images from a few labelled ones, over the VAE's codes",
                       description="Write OUT, a CSV of path,label,confidence: one row per unlabelled image that label propagation "
                                   "over the VAE's codes labelled (from LABELLED/<class>/ images).")
    p.add_argument("--checkpoint", default="mnist", help="bundled name, folder or Hub repo id (default: mnist)")
    p.add_argument("--labelled", required=True, help="folder of labelled images, one subfolder per class")
    p.add_argument("--unlabelled", required=True, help="folder of unlabelled images (read recursively)")
    p.add_argument("--out", required=True, help="CSV file to write (refused if it exists, unless --overwrite)")
    p.add_argument("--k", type=int, default=DEFAULT_NEIGHBOURS, help=f"neighbours per code (default: {DEFAULT_NEIGHBOURS})")
    p.add_argument("--threshold", type=float, default=0.0, help="leave out images labelled with a lower confidence (default: 0)")
    p.add_argument("--image-size", type=int, help="resize every image to this size")
    p.add_argument("--channels", type=int, choices=[1, 3], help="convert every image to 1 (gray) or 3 (RGB) channels")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", help="where the model runs, e.g. cuda (default: cpu)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT")


def _run_pseudo_label(args) -> int:
    out = Path(args.out)
    if out.is_dir():
        raise ValueError(f"--out {args.out!r} is a folder; give the path of a CSV file to write")
    if out.exists() and not args.overwrite:
        raise FileExistsError(f"--out {args.out!r} exists; pass --overwrite to replace it, or choose another file")
    rows = pseudo_label_folders(args.checkpoint, args.labelled, args.unlabelled, k=args.k, threshold=args.threshold,
                                image_size=args.image_size, channels=args.channels, batch_size=args.batch_size, device=args.device)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["path", "label", "confidence"], lineterminator="\n")
    writer.writeheader()
    writer.writerows({**row, "confidence": f"{row['confidence']:.4f}"} for row in rows)
    atomic_write_text(out, buffer.getvalue())
    print(f"wrote {len(rows)} pseudo-labels to {args.out}")
    return 0


def _add_push(sub) -> None:
    p = sub.add_parser("push", help="upload a checkpoint and its model card to the Hugging Face Hub")
    p.add_argument("--checkpoint", required=True, help="local checkpoint folder")
    p.add_argument("--repo-id", required=True, help="org/name on the Hub")
    p.add_argument("--private", action="store_true")
    p.add_argument("--revision", help="branch to push to")


def _run_push(args) -> int:
    folder = check_folder(args.checkpoint)  # a local folder: push never downloads
    if not is_diffusers_config(read_config(folder)):  # push refuses those itself, with what to do instead
        load_vae(folder)  # what cannot be loaded is not shared: the checks every user of the repo would meet
    url = push(args.checkpoint, args.repo_id, private=args.private or None, revision=args.revision)
    print(f"pushed {args.checkpoint} to {args.repo_id}: {url}")
    return 0


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="serve the Gradio app to preview augmentations in a browser")
    p.add_argument("--host", help="default: GRADIO_SERVER_NAME or 127.0.0.1")
    p.add_argument("--port", type=int, help="default: GRADIO_SERVER_PORT or 7860")


def _run_demo(args) -> int:
    try:
        from .app import main as serve  # gradio is an optional extra: imported only for the demo
    except ImportError as err:
        print(f"vae-augment demo: error: {err}", file=sys.stderr)
        return 2
    serve(args.host, args.port)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vae-augment", description="VAE data augmentation for PyTorch")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)
    _add_fit_prior(sub)
    _add_eval(sub)
    _add_preview(sub)
    _add_generate(sub)
    _add_pseudo_label(sub)
    _add_push(sub)
    _add_demo(sub)
    return parser


# what an interrupted command leaves (for those that write files)
INTERRUPTED = {"train": "; the last finished epoch's checkpoint is intact, and --resume continues from it",
               "generate": "; the images written so far are whole, and the same command resumes the run",
               "fit-prior": "; nothing was written", "pseudo-label": "; nothing was written"}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        if args.command == "train":
            return _run_train(args, argv)
        if args.command == "fit-prior":
            return _run_fit_prior(args, argv)
        if args.command == "eval":
            return _run_eval(args)
        if args.command == "preview":
            return _run_preview(args)
        if args.command == "generate":
            return _run_generate(args, argv)
        if args.command == "pseudo-label":
            return _run_pseudo_label(args)
        if args.command == "push":
            return _run_push(args)
        if args.command == "demo":
            return _run_demo(args)
    # OSError: a file that cannot be read or written (FileExistsError, ...); FloatingPointError: a run that diverged
    except (ValueError, TypeError, OSError, FloatingPointError) as err:
        print(f"vae-augment {args.command}: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"vae-augment {args.command}: interrupted{INTERRUPTED.get(args.command, '')}", file=sys.stderr)
        return 130
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
