"""Throughput of VAEAugment on pretrained-size diffusers autoencoders (randomly initialised).

    python benchmarks/backbones.py [--quick] [--device cuda|cpu] [--threads 2]

The architectures are those of ``stabilityai/sd-vae-ft-mse`` (AutoencoderKL, 83.7M parameters,
latents 4 x H/8 x W/8) and ``madebyollin/taesd`` (AutoencoderTiny, 2.4M); random weights cost the
same time as trained ones, and nothing is downloaded. For each, VAEAugment (data mode, one draw per
image) on RGB batches of 256x256 and 512x512 images, float16 on CUDA and float32 on CPU. Prints and
writes benchmarks/results/backbones.json (the README's figures come from it). On CPU the batches are
small and the sizes may be reduced with --sizes; --quick uses 64x64 images and one repeat.
"""

from __future__ import annotations

import argparse
import platform

from common import RESULTS, rate, write_json  # noqa: I001  (puts the repo on sys.path, sets OMP_WAIT_POLICY before torch loads)
import torch

from vae_augment import VAEAugment
from vae_augment import DiffusersVAE

# stabilityai/sd-vae-ft-mse's config.json (the SD 1.x/2.x autoencoder)
SD_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512), layers_per_block=2,
              down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=32,
              act_fn="silu", sample_size=256, scaling_factor=0.18215)


def build(kind: str):
    import diffusers

    torch.manual_seed(0)
    if kind == "sd-vae-ft-mse":
        return diffusers.AutoencoderKL(**SD_VAE)
    return diffusers.AutoencoderTiny()  # its defaults are TAESD's architecture


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="64x64 images, one repeat: checks that it runs")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--batch", type=int, default=None, help="images per batch (default: 16 on CUDA, 2 on CPU)")
    parser.add_argument("--root", default=None, help="unused (no data needed); accepted like the other benchmarks'")
    parser.add_argument("--out", default=str(RESULTS / "backbones.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    sizes = [64] if args.quick else args.sizes
    batch = args.batch or (16 if cuda else 2)
    repeat = 1 if args.quick else 3
    sync = torch.cuda.synchronize if cuda else None
    figures: dict = {"device": torch.cuda.get_device_name(device) if cuda else f"CPU ({platform.machine()}, {args.threads} threads)",
                     "dtype": "float16" if cuda else "float32", "batch": batch, "torch": torch.__version__, "quick": args.quick,
                     "results": {}}
    for kind in ("sd-vae-ft-mse", "taesd"):
        vae = DiffusersVAE(build(kind).to(device))  # float16 on CUDA (with the float32 fallback), float32 on CPU
        figures["results"][kind] = {"parameters_m": round(sum(p.numel() for p in vae.parameters()) / 1e6, 1)}
        augment = VAEAugment(vae, generator=torch.Generator().manual_seed(0))
        for size in sizes:
            x = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(1)).to(device)
            figures["results"][kind][f"{size}px_img_s"] = rate(lambda augment=augment, x=x: augment(x), batch, repeat, warmup=1, sync=sync)
            if cuda:
                figures["results"][kind][f"{size}px_peak_mem_gb"] = torch.cuda.max_memory_allocated(device) / 1e9
                torch.cuda.reset_peak_memory_stats(device)
            print(f"{kind:<14} {size}x{size}  {figures['results'][kind][f'{size}px_img_s']:8.2f} images/s", flush=True)
        figures["results"][kind]["dtype"] = str(vae.dtype).removeprefix("torch.")  # float32 if a float16 overflow upcast it
        del vae, augment
    out = write_json(args.out, figures)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
