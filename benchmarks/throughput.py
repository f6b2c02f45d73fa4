"""Throughput of VAE augmentation, measured side by side in one run.

    python benchmarks/throughput.py [--quick] [--root ../shared/data] [--threads 2]

Prints and writes benchmarks/results/throughput.json:
- vae_batch_img_s: VAEAugment on float batches of 256 (one process, --threads intra-op threads);
- bare_batch_img_s and augment_vs_bare_ratio: the bare encode -> sample -> decode on the same batch;
- vae_per_sample_img_s: VAEAugment called on one [1, 28, 28] uint8 tensor at a time;
- dataloader_epoch_ratio (and _cached, _batched): an epoch of a training pipeline (DataLoader with
  2 workers, uint8 -> float, a small CNN classifier step per batch) with VAEAugment in the workers,
  divided by the same epoch without it; _cached uses the posterior cache (second epoch), _batched
  applies VAEAugment to collated batches in the main process, _worker_batched to collated batches
  inside the workers (AugmentCollate), _worker_batched_cached the same with a batched PosteriorCache;
  the _bf16 variants run the VAE under bfloat16 autocast (precision="bf16");
- loading_only_*: the same epoch ratios without the classifier step (pure data loading, the harshest view);
- vae_batch_bf16_img_s, vae_per_sample_bf16_img_s: VAEAugment(precision="bf16") on the batches of 256
  and one sample at a time;
- decode_batch_img_s (and _bf16): decoding alone, batches of 256 (what a cached epoch does per image);
- peak_fp32_gflop_s, peak_bf16_gflop_s: the machine's own peak in the same run (a 1536x1536 matrix
  multiply in float32 and in bfloat16 on the same threads, best of rounds interleaved with the VAE's);
- vae_mflop_per_image (encode + decode, torch.utils.flop_counter), classifier_step_mflop_per_image (the
  small CNN's forward and backward), and from them efficiency_fp32 / efficiency_bf16 (the VAE's batches
  as a fraction of the matching peak), per_sample_overhead_us (one image's time beyond its arithmetic at
  the float32 peak) and epoch_ratio_floor = 1 + VAE FLOPs / classifier-step FLOPs (what the arithmetic
  allows an epoch ratio to be when both models share the processor), with each recipe's ratio over it;
- goals: each goal of the speed issue with its measured figure and whether it is met;
- compiled_batch{16,256}_img_s, eager_batch{16,256}_img_s, compiled_vs_eager_batch{16,256} and
  compile_seconds_batch{16,256}: VAEAugment with the conv VAE's encoder and decoder compiled
  (``nn.Module.compile(fullgraph=True)``) against the same model eager, in interleaved rounds, and what the
  first compiled call of each batch size took beyond an eager call (skipped with --no-compile);
- albumentations Affine and torchvision RandomAffine per-sample img/s as the classic reference;
- where CUDA is available, batched GPU throughput (and the GPU's name).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

os.environ["VAE_AUGMENT_DEFAULT_OMP"] = "1"  # measure torch's default OpenMP behaviour, see common.py
from common import DEFAULT_ROOT, RESULTS, SmallCNN, rate, write_json  # noqa: I001,E402  (sets OMP_WAIT_POLICY before torch loads; puts the repo on sys.path)
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from vae_augment import load_vae  # noqa: E402
from vae_augment import PosteriorCache  # noqa: E402
from vae_augment.latent import perturb  # noqa: E402
from vae_augment import AugmentCollate, VAEAugment, worker_init_fn  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from goals import SPEED_GOALS, speed_goal_met  # noqa: E402

PEAK_SIDE = 1536  # the matrix multiply that measures the machine's peak


def flops(fn) -> float:
    """FLOPs that ``fn()`` performs (matrix products and convolutions, as torch.utils.flop_counter counts them)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def matmul_gflop_s(dtype: torch.dtype, repeat: int) -> float:
    a, b = torch.randn(PEAK_SIDE, PEAK_SIDE, dtype=dtype), torch.randn(PEAK_SIDE, PEAK_SIDE, dtype=dtype)
    return rate(lambda: a @ b, 2 * PEAK_SIDE**3, repeat) / 1e9


def images(root: str, n: int) -> tuple[torch.Tensor, str]:
    """``n`` MNIST training digits as uint8 [n, 1, 28, 28], or decoded prior samples when MNIST is absent."""
    raw = Path(root) / "MNIST" / "raw" / "train-images-idx3-ubyte"
    if raw.is_file():
        import torchvision

        data = torchvision.datasets.MNIST(root, train=True, download=False).data[:n]
        return data.unsqueeze(1).clone(), "MNIST train"
    vae = load_vae("mnist")
    x = vae.sample(n, generator=torch.Generator().manual_seed(0))
    return (x * 255).round().to(torch.uint8), "prior samples (MNIST not found)"


class TensorImages(Dataset):
    def __init__(self, x: torch.Tensor, labels: torch.Tensor, transform=None):
        self.x, self.labels, self.transform = x, labels, transform

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        image = self.x[i]
        if self.transform is not None:
            image = self.transform(image)
        return image, self.labels[i]


def to_float(x: torch.Tensor) -> torch.Tensor:
    return x.float().div(255.0)


def epoch_seconds(dataset: Dataset, train_step: bool, batch_transform=None, batch_size: int = 64, collate_fn=None) -> float:
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=2, worker_init_fn=worker_init_fn,
                        generator=torch.Generator().manual_seed(0), collate_fn=collate_fn)
    model = SmallCNN()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    start = time.perf_counter()
    for x, y in loader:
        x = x.float()
        if batch_transform is not None:
            x = batch_transform(x)
        if train_step:
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return time.perf_counter() - start


def batch_figures(vae, augment, fast, data: torch.Tensor, repeat: int) -> dict:
    """VAEAugment on batches of 256 against the bare model and the machine's matmul peak, and decoding alone."""
    figures: dict = {}
    batch = data[:256].float().div(255)
    noise = torch.randn(256, vae.latent_dim)

    def bare():
        with torch.inference_mode():
            posterior = vae.encode(batch)
            return vae.decode(perturb(posterior.mean, posterior.std, noise, "data", augment.strength, vae.latent_scale))

    # rounds interleaved so the VAE and the machine's peak see the same machine state; best of each
    rates: dict[str, list[float]] = {"bare": [], "fp32": [], "bf16": [], "peak_fp32": [], "peak_bf16": []}
    for _ in range(3):
        rates["peak_fp32"].append(matmul_gflop_s(torch.float32, repeat))
        rates["bare"].append(rate(bare, 256, repeat))
        rates["fp32"].append(rate(lambda: augment(batch), 256, repeat))
        rates["peak_bf16"].append(matmul_gflop_s(torch.bfloat16, repeat))
        rates["bf16"].append(rate(lambda: fast(batch), 256, repeat))
    figures["bare_batch_img_s"] = max(rates["bare"])
    figures["vae_batch_img_s"] = max(rates["fp32"])
    figures["vae_batch_bf16_img_s"] = max(rates["bf16"])
    figures["peak_fp32_gflop_s"] = max(rates["peak_fp32"])
    figures["peak_bf16_gflop_s"] = max(rates["peak_bf16"])
    with torch.inference_mode():
        vae_flops = flops(lambda: vae.decode(vae.encode(batch).mean)) / len(batch)
    figures["vae_mflop_per_image"] = vae_flops / 1e6
    figures["efficiency_fp32"] = figures["vae_batch_img_s"] * vae_flops / 1e9 / figures["peak_fp32_gflop_s"]
    figures["efficiency_bf16"] = figures["vae_batch_bf16_img_s"] * vae_flops / 1e9 / figures["peak_bf16_gflop_s"]
    figures["augment_vs_bare_ratio"] = figures["bare_batch_img_s"] / figures["vae_batch_img_s"]
    # decoding alone: all that an epoch with the posterior cache does per image
    codes = torch.randn(256, vae.latent_dim)

    def decode(precision=None):
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            return vae.decode(codes)

    figures["decode_batch_img_s"] = max(rate(decode, 256, repeat) for _ in range(3))
    figures["decode_batch_bf16_img_s"] = max(rate(lambda: decode("bf16"), 256, repeat) for _ in range(3))
    return figures


def compile_figures(checkpoint: str, data: torch.Tensor, repeat: int, sizes=(16, 256)) -> dict:
    """The conv VAE's encoder and decoder compiled (``nn.Module.compile(fullgraph=True)``, docs/integrations.md)
    against the same model eager, `VAEAugment` on float batches of each of ``sizes``, in interleaved rounds; and
    the compile time: the first call of each batch size, less an eager call's time."""
    eager_vae, compiled_vae = load_vae(checkpoint), load_vae(checkpoint)
    compiled_vae.encoder.compile(fullgraph=True)
    compiled_vae.decoder.compile(fullgraph=True)
    eager, compiled = VAEAugment(eager_vae, p=1.0), VAEAugment(compiled_vae, p=1.0)
    figures: dict = {}
    for n in sizes:
        batch = data[:n].float().div(255)
        start = time.perf_counter()
        compiled(batch)
        first = time.perf_counter() - start
        rates: dict[str, list[float]] = {"eager": [], "compiled": []}
        for _ in range(3):
            rates["eager"].append(rate(lambda: eager(batch), n, repeat))
            rates["compiled"].append(rate(lambda: compiled(batch), n, repeat))
        figures[f"compiled_batch{n}_img_s"] = max(rates["compiled"])
        figures[f"eager_batch{n}_img_s"] = max(rates["eager"])
        figures[f"compiled_vs_eager_batch{n}"] = figures[f"compiled_batch{n}_img_s"] / figures[f"eager_batch{n}_img_s"]
        figures[f"compile_seconds_batch{n}"] = first - n / figures[f"eager_batch{n}_img_s"]
        print(f"batch {n}: eager {figures[f'eager_batch{n}_img_s']:.0f} img/s, compiled {figures[f'compiled_batch{n}_img_s']:.0f} "
              f"img/s (x{figures[f'compiled_vs_eager_batch{n}']:.2f}), compiling took {figures[f'compile_seconds_batch{n}']:.1f} s",
              flush=True)
    return figures


def per_sample_figures(augment, fast, singles: list, quick: bool, figures: dict) -> dict:
    """One uint8 ``[1, 28, 28]`` sample at a time, as a Dataset would hand it over (and as PIL); ``figures``: the batch ones."""
    out = {"vae_per_sample_img_s": rate(lambda: [augment(s) for s in singles], len(singles), 3 if quick else 5, warmup=1),
           "vae_per_sample_bf16_img_s": rate(lambda: [fast(s) for s in singles], len(singles), 3 if quick else 5, warmup=1)}
    pil_singles = [__import__("PIL.Image").Image.fromarray(s[0].numpy()) for s in singles]
    out["vae_per_sample_pil_img_s"] = rate(lambda: [augment(s) for s in pil_singles], len(pil_singles), 3, warmup=1)
    arithmetic_us = figures["vae_mflop_per_image"] * 1e6 / (figures["peak_fp32_gflop_s"] * 1e9) * 1e6
    out["per_sample_arithmetic_us"] = arithmetic_us
    out["per_sample_overhead_us"] = 1e6 / out["vae_per_sample_img_s"] - arithmetic_us
    return out


def classic_figures(singles: list) -> dict:
    """albumentations' Affine and torchvision's RandomAffine on the same images, per sample: the classic reference."""
    import albumentations as A
    from torchvision.transforms import v2

    affine = A.Affine(rotate=(-15, 15), translate_percent=(-0.1, 0.1), scale=(0.9, 1.1), p=1.0)
    arrays = [s[0].numpy() for s in singles]
    random_affine = v2.RandomAffine(degrees=15, translate=(0.1, 0.1), scale=(0.9, 1.1))
    return {"albumentations_affine_img_s": rate(lambda: [affine(image=a)["image"] for a in arrays], len(arrays), 3, warmup=1),
            "torchvision_random_affine_img_s": rate(lambda: [random_affine(s) for s in singles], len(singles), 3, warmup=1)}


def epoch_figures(augment, fast, subset: torch.Tensor, labels: torch.Tensor, quick: bool) -> dict:
    """DataLoader epochs, 2 workers, each recipe over the same epoch without the VAE; with and without the training step."""
    plain = TensorImages(subset, labels, transform=to_float)
    per_sample = TensorImages(subset, labels, transform=lambda x: augment(x).float().div(255))
    cached = PosteriorCache(TensorImages(subset, labels), augment)
    raw = TensorImages(subset, labels)  # uint8; AugmentCollate converts and augments whole batches in the workers
    cached_batches = PosteriorCache(raw, augment, batched=True)  # whole batches in the workers, decode only
    cached_batches_bf16 = PosteriorCache(raw, fast, batched=True)
    recipes = {  # name -> (dataset, keyword arguments of epoch_seconds)
        "plain": (plain, {}), "vae": (per_sample, {}), "cached": (cached, {}), "batched": (plain, {"batch_transform": augment}),
        "worker_batched": (raw, {"collate_fn": AugmentCollate(augment)}),
        "worker_batched_cached": (cached_batches, {"collate_fn": cached_batches.collate}),
        "batched_bf16": (plain, {"batch_transform": fast}),
        "worker_batched_cached_bf16": (cached_batches_bf16, {"collate_fn": cached_batches_bf16.collate})}
    figures: dict = {}
    for train_step, prefix in ((True, ""), (False, "loading_only_")):
        times: dict[str, list[float]] = {name: [] for name in recipes}
        epoch_seconds(cached, train_step)  # first epoch fills the cache; later ones only decode
        epoch_seconds(cached_batches, train_step, collate_fn=cached_batches.collate)
        epoch_seconds(cached_batches_bf16, train_step, collate_fn=cached_batches_bf16.collate)
        for _ in range(2 if quick else 3):  # interleaved, best of each
            for name, (dataset, kwargs) in recipes.items():
                times[name].append(epoch_seconds(dataset, train_step, **kwargs))
        best = {k: min(v) for k, v in times.items()}
        figures[f"{prefix}epoch_seconds"] = best
        figures[f"{prefix}dataloader_epoch_ratio"] = best["vae"] / best["plain"]
        for name in list(recipes)[2:]:
            figures[f"{prefix}dataloader_epoch_ratio_{name}"] = best[name] / best["plain"]
    figures["dataloader_images"] = len(subset)
    return figures


def floor_figures(data: torch.Tensor, labels: torch.Tensor, figures: dict) -> dict:
    """The floor of an epoch ratio when the VAE and the classifier share the processor: the VAE's FLOPs per image over
    the classifier's training step's (forward and backward), plus the step itself; each recipe's ratio over it."""
    classifier = SmallCNN()
    step = data[:64].float().div(255)
    out = {"classifier_step_mflop_per_image": flops(
        lambda: nn.functional.cross_entropy(classifier(step), labels[:64]).backward()) / len(step) / 1e6}
    floor = 1 + figures["vae_mflop_per_image"] / out["classifier_step_mflop_per_image"]
    out["epoch_ratio_floor"] = floor
    out["per_sample_over_floor"] = figures["dataloader_epoch_ratio"] / floor
    out["worker_batched_over_floor"] = figures["dataloader_epoch_ratio_worker_batched"] / floor
    out["worker_batched_cached_over_floor"] = figures["dataloader_epoch_ratio_worker_batched_cached"] / floor
    return out


def gpu_figures(checkpoint: str, data: torch.Tensor, repeat: int) -> dict:
    """Batched throughput on the GPU, where there is one."""
    if not torch.cuda.is_available():
        return {}
    gpu_augment = VAEAugment(load_vae(checkpoint, device="cuda"))
    figures: dict = {}
    for size in (256, 4096):
        x = data[:256].repeat(size // 256, 1, 1, 1).float().div(255).cuda()
        figures[f"gpu_batch{size}_img_s"] = rate(lambda x=x: gpu_augment(x), size, repeat, sync=torch.cuda.synchronize)
    figures["gpu"] = torch.cuda.get_device_name()
    return figures


def report(figures: dict, out: Path) -> None:
    width = max(len(k) for k in figures)
    for key, value in figures.items():
        if key != "goals":
            print(f"{key:<{width}}  {value:.3f}" if isinstance(value, float) else f"{key:<{width}}  {value}")
    for name, goal in figures["goals"].items():
        print(f"goal: {name} {goal['direction']} {goal['target']:g}: measured {goal['measured']:.3f}, "
              f"{'met' if goal['met'] else 'MISSED'}")
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes; finishes in well under a minute")
    parser.add_argument("--root", default=DEFAULT_ROOT)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--checkpoint", default="mnist")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile figures (compiling takes a minute or two)")
    parser.add_argument("--out", default=str(RESULTS / "throughput.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    n_loader = 2_000 if args.quick else 20_000
    repeat = 3 if args.quick else 7
    data, source = images(args.root, max(n_loader, 2_048))
    labels = torch.zeros(len(data), dtype=torch.long)
    vae = load_vae(args.checkpoint)
    augment = VAEAugment(vae)
    fast = VAEAugment(vae, precision="bf16")  # autocast; ~2x on CPUs with AVX512-BF16/AMX
    figures: dict = {"checkpoint": args.checkpoint, "images": source, "threads": args.threads, "quick": args.quick,
                     "cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
                     "default_strength": augment.strength, "default_mode": augment.mode}
    figures.update(batch_figures(vae, augment, fast, data, repeat))
    singles = [data[i] for i in range(200 if args.quick else 1_000)]
    figures.update(per_sample_figures(augment, fast, singles, args.quick, figures))
    figures.update(classic_figures(singles))
    figures.update(epoch_figures(augment, fast, data[:n_loader], labels[:n_loader], args.quick))
    figures.update(floor_figures(data, labels, figures))
    figures["goals"] = {name: {"target": goal.target, "direction": goal.direction, "measured": figures[name],
                               "met": speed_goal_met(figures[name], goal)} for name, goal in SPEED_GOALS.items()}
    if not args.no_compile:
        figures.update(compile_figures(args.checkpoint, data, repeat))
    figures.update(gpu_figures(args.checkpoint, data, repeat))
    out = write_json(args.out, figures)
    report(figures, out)


if __name__ == "__main__":
    main()
