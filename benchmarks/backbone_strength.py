"""What strength means for a latent-diffusion-style autoencoder backbone: a proxy measured on MNIST.

    python benchmarks/backbone_strength.py [--quick] [--root ../shared/data] [--steps 2500]

Real Hub weights (stabilityai/sd-vae-ft-mse, madebyollin/taesd) cannot be downloaded where this was
built, so this trains a small diffusers ``AutoencoderKL`` the way the SD autoencoder was trained as
far as the loss goes (reconstruction in [-1, 1] plus a KL weight of 1e-6, which leaves the
posterior almost a point), with the SD layout's downscale factor 8 and 4 latent channels, on the
MNIST training digits (as RGB, 28x28 padded to 32x32 by `DiffusersVAE`). It then calibrates the
latent spread on training digits (`DiffusersVAE.calibrate`) and sweeps `VAEAugment` strength in
``"data"`` mode, plain and residual, on test digits: the label preservation rate by a classifier
trained on the full training set, against the mean absolute pixel change, as `quality.py` does for
the bundled VAE. Then the label-aware modes on spatial latents (issue 32), which work on the latents'
pooled codes (`latent.pooled_codes`, per channel on a 4x4 grid): `VAEAugment(mode="class")` fitted on
``--labelled`` training digits per class, and `LatentBorrow` fitted on those and ``--unlabelled``
other training digits, swept in strength the same way (p = 1, plain decoding), so each can be read
against ``"data"`` mode at the same mean change. Writes benchmarks/results/backbone_strength.json.
"""

from __future__ import annotations

import argparse
import time

from common import DEFAULT_ROOT, RESULTS, mnist, predict, train_classifier, write_json  # noqa: I001  (sets OMP_WAIT_POLICY before torch loads)
import torch

from vae_augment import DiffusersVAE, LatentBorrow, VAEAugment

STRENGTHS = [0.0, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0]
CLASS_STRENGTHS = [0.5, 1.0, 1.5, 2.0, 3.0]
BORROW_STRENGTHS = [0.5, 1.0, 1.5, 2.0]
KL_WEIGHT = 1e-6  # the SD autoencoder's


def train_autoencoder(x: torch.Tensor, steps: int, batch_size: int = 64, seed: int = 0):
    """A small AutoencoderKL (downscale 8, 4 latent channels) on ``x: [N, 1, 28, 28]`` in [0, 1], as RGB at 32x32."""
    import diffusers

    torch.manual_seed(seed)
    model = diffusers.AutoencoderKL(block_out_channels=(16, 32, 32, 32), layers_per_block=1, latent_channels=4,
                                    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                                    norm_num_groups=16, mid_block_add_attention=False, sample_size=32)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for step in range(steps):
        batch = x[torch.randint(0, len(x), (batch_size,), generator=g)]
        batch = torch.nn.functional.pad(batch, (2, 2, 2, 2), mode="replicate").expand(-1, 3, -1, -1) * 2 - 1
        posterior = model.encode(batch).latent_dist
        out = model.decode(posterior.sample()).sample
        loss = (out - batch).abs().mean() + (out - batch).square().mean() + KL_WEIGHT * posterior.kl().mean() / batch[0].numel()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 500 == 0 or step == steps - 1:
            print(f"autoencoder step {step}: loss {loss.item():.4f}", flush=True)
    return model.eval().requires_grad_(False)


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def labelled_split(y: torch.Tensor, per_class: int, unlabelled: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``per_class`` training digits of each class (labelled), and the next ``unlabelled`` others."""
    labelled = torch.cat([torch.nonzero(y == c).squeeze(1)[:per_class] for c in range(10)])
    others = torch.ones(len(y), dtype=torch.bool)
    others[labelled] = False
    return labelled, torch.nonzero(others).squeeze(1)[:unlabelled]


def measure(augment, judge, x: torch.Tensor, y: torch.Tensor, key: str, strength: float) -> dict[str, float]:
    """Two variants of each of ``x`` by ``augment`` (a callable on the batch): the share whose label the judge keeps,
    their mean absolute change and how far the two variants are apart."""
    first, second = augment(x), augment(x)
    row = {
        "label_preservation": torch.cat([predict(judge, v) == y for v in (first, second)]).float().mean().item(),
        "mean_abs_change": torch.cat([(v - x).abs().flatten(1).mean(1) for v in (first, second)]).mean().item(),
        "mean_abs_between_variants": (first - second).abs().mean().item(),
    }
    print(f"{key:<14} strength {strength:<5g} label kept {row['label_preservation']:.3f}  mean |change| "
          f"{row['mean_abs_change']:.4f}  between variants {row['mean_abs_between_variants']:.4f}", flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--root", default=DEFAULT_ROOT)
    parser.add_argument("--steps", type=int, default=2500, help="autoencoder training steps (batch 64)")
    parser.add_argument("--images", type=int, default=2000, help="test digits in the sweep")
    parser.add_argument("--labelled", type=int, default=10, help="labelled training digits per class for class mode and LatentBorrow")
    parser.add_argument("--unlabelled", type=int, default=5000, help="unlabelled training digits LatentBorrow's donors come from")
    parser.add_argument("--out", default=str(RESULTS / "backbone_strength.json"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    start = time.time()
    steps, n_images, judge_steps = (30, 100, 100) if args.quick else (args.steps, args.images, 2000)

    x_train, y_train = mnist(args.root, train=True)
    x_test, y_test = mnist(args.root, train=False)
    vae = DiffusersVAE(train_autoencoder(x_train, steps))
    scaled_std = vae.encode(vae.to_model(x_train[:1000])).mean.std().item()
    loc, scale = vae.calibrate(x_train[i : i + 500] for i in range(0, 5000, 500))
    print(f"latent spread before calibration {scaled_std:.3f} (x scaling_factor); per channel after: "
          f"{[round(v, 3) for v in scale.flatten().tolist()]}", flush=True)

    judge = train_classifier(x_train, y_train, steps=judge_steps, batch_size=128, seed=0)
    accuracy = (predict(judge, x_test) == y_test).float().mean().item()
    x, y = x_test[:n_images], y_test[:n_images]
    reconstruction = vae.reconstruct(x).mean(1, keepdim=True)
    sweep: dict[str, dict[str, dict[str, float]]] = {}
    for residual in (False, True):
        key = "data+residual" if residual else "data"
        sweep[key] = {f"{s:g}": measure(VAEAugment(vae, strength=s, residual=residual, generator=seeded()), judge, x, y, key, s)
                      for s in STRENGTHS}
    labelled, unlabelled = labelled_split(y_train, args.labelled, 1000 if args.quick else args.unlabelled)
    x_l, y_l = x_train[labelled], y_train[labelled]
    sweep["class"] = {f"{s:g}": measure(VAEAugment(vae, mode="class", strength=s, p=1.0, residual=False, generator=seeded()).fit(x_l, y_l),
                                        judge, x, y, "class", s) for s in CLASS_STRENGTHS}
    donors = LatentBorrow(vae, p=1.0, residual=False).fit(x_l, y_l, unlabelled=x_train[unlabelled]).statistics
    sweep["borrow"] = {}
    for s in BORROW_STRENGTHS:
        borrow = LatentBorrow(vae, strength=s, p=1.0, residual=False, generator=seeded())
        borrow.statistics = donors  # one fit: the donors do not depend on the strength
        sweep["borrow"][f"{s:g}"] = measure(lambda v, b=borrow: b(v, y)[0], judge, x, y, "borrow", s)
    result = {
        "protocol": {"autoencoder": "diffusers AutoencoderKL, block_out_channels (16, 32, 32, 32), 4 latent channels, downscale 8",
                     "loss": f"L1 + MSE in [-1, 1] + {KL_WEIGHT:g} KL", "steps": steps, "batch_size": 64, "quick": args.quick,
                     "sweep_images": n_images, "labelled_per_class": args.labelled, "unlabelled": len(unlabelled),
                     "label_aware": "mode 'class' and LatentBorrow on the pooled codes (4 channels x 4x4 grid), p = 1, residual off", "judge_steps": judge_steps, "judge_test_accuracy": accuracy,
                     "latent_std_before_calibration": scaled_std, "calibrated_latent_scale": scale.flatten().tolist(),
                     "reconstruction_label_preservation": (predict(judge, reconstruction) == y).float().mean().item(),
                     "reconstruction_mean_abs_error": (reconstruction - x).abs().mean().item(),
                     "seconds": round(time.time() - start, 1)},
        "sweep": sweep,
    }
    out = write_json(args.out, result)
    print(f"wrote {out} in {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
