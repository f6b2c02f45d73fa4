"""Measuring a trained VAE: held-out figures (`evaluate`) and the statistics of its training set that later
code measures against (`reference_statistics`: the latent spread, a bank of training codes, the anomaly
percentiles). Used by `train` at the end of a run, by ``vae-augment eval`` and ``fit-prior``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from .models import VAE, Autoencoder


def batch_images(batch) -> torch.Tensor:
    """The images of a DataLoader batch: the first item of ``(images, labels, ...)``, or the batch itself."""
    return batch[0] if isinstance(batch, (list, tuple)) else batch


@torch.no_grad()
def evaluate(vae: Autoencoder, data: Dataset | DataLoader, iw_k: int = 0, batch_size: int = 500, seed: int = 0,
             progress: bool = False, binarized_k: int | None = None) -> dict[str, float]:
    """Held-out figures: -ELBO (nats/image, bits/dim), with ``iw_k > 0`` the importance-weighted NLL, and
    the fidelity of reconstructions.

    ``binarized_iw_nll_nats`` is the figure the density-modelling literature reports for MNIST (IWAE,
    Burda et al. 2016: 84.78 nats; 2-layer 82.90): the importance-weighted NLL (``binarized_k``
    samples, by default ``iw_k``; 0 skips it) of *dynamically binarized* images, each pixel drawn as
    1 with probability its gray value (one draw per image, from the seeded generator), under the
    model's Bernoulli decoder. It is a true discrete NLL, comparable across papers; the gray-value
    figures above are not (a Bernoulli likelihood of gray values is not a normalised density).
    Computed for Bernoulli models only (a Gaussian decoder assigns densities, not probabilities, to
    binary images).

    ``reconstruction_r2`` is the share of the images' own variation that their reconstructions keep,
    1 - sum (x - recon)^2 / sum (x - mean image)^2 over pixels (1: perfect; 0: no better than the
    mean image); ``reconstruction_mae`` the mean absolute pixel error. A VAE trained on little data
    reconstructs blurrily, and its augmentations then teach a classifier images unlike its test
    images: `VAEAugment` warns when a checkpoint's ``reconstruction_r2`` is below
    `vae_augment.policy.FIDELITY_WARNING`.

    Sampling uses a generator seeded with ``seed``, so the figures repeat. Defined for models with an
    ELBO (``has_elbo``: vae-augment's own VAEs).
    """
    if not vae.has_elbo:
        raise ValueError(f"a {vae.kind} has no ELBO to evaluate (has_elbo is False: a pretrained diffusers autoencoder, for "
                         "one, was trained with a near-zero KL weight); evaluate measures vae-augment's own VAEs")
    loader = data if isinstance(data, DataLoader) else DataLoader(data, batch_size=batch_size)
    was_training = vae.training
    vae.eval()
    device = vae.device
    generator = torch.Generator(device=device).manual_seed(seed)
    binarized_k = iw_k if binarized_k is None else binarized_k
    if binarized_k < 0:
        raise ValueError(f"binarized_k must be >= 0 (0 skips the binarized NLL), got {binarized_k}")
    binarized_k = binarized_k if getattr(vae, "likelihood", None) == "bernoulli" else 0
    total_elbo, total_iw, total_binarized, count = 0.0, 0.0, 0.0, 0
    total_x, total_x2, squared_error, absolute_error = 0.0, 0.0, 0.0, 0.0  # per pixel sums, for the fidelity
    for batch in tqdm(loader, desc="eval", disable=not progress, leave=False):
        x = batch_images(batch).to(device)
        total_elbo += vae.elbo(x, generator=generator).double().sum().item()
        error = (vae.reconstruct(x) - x).double()
        squared_error, absolute_error = squared_error + error.square().sum().item(), absolute_error + error.abs().sum().item()
        total_x, total_x2 = total_x + x.double().sum(0), total_x2 + x.double().square().sum(0)
        if iw_k:
            total_iw += vae.iw_nll(x, k=iw_k, generator=generator).double().sum().item()
        if binarized_k:
            binary = torch.bernoulli(x.clamp(0, 1), generator=generator)
            total_binarized += vae.iw_nll(binary, k=binarized_k, generator=generator).double().sum().item()
        count += x.shape[0]
    vae.train(was_training)
    if count == 0:
        raise ValueError("evaluation data is empty")
    neg_elbo = -total_elbo / count
    variation = float((total_x2 - total_x.square() / count).sum())  # sum over pixels of (x - mean image)^2
    out = {"neg_elbo_nats": neg_elbo, "neg_elbo_bits_per_dim": float(vae.bits_per_dim(neg_elbo)), "images": count,
           "reconstruction_r2": 1 - squared_error / variation if variation > 0 else float("nan"),
           "reconstruction_mae": absolute_error / (count * vae.num_pixels)}
    if iw_k:
        out.update(iw_nll_nats=total_iw / count, iw_nll_bits_per_dim=float(vae.bits_per_dim(total_iw / count)), iw_k=iw_k)
    if binarized_k:
        out.update(binarized_iw_nll_nats=total_binarized / count, binarized_iw_k=binarized_k)
    return out


@torch.no_grad()
def reference_statistics(vae: VAE, train_set: Dataset, num_workers: int = 0) -> dict[str, Any]:
    """Statistics of the training set that later code measures against, computed in one pass:
    the per-dimension mean and spread of posterior means (stored in the model's ``latent_loc`` /
    ``latent_scale`` buffers: the augmentation's unit of strength), a bank of training codes
    (``vae.latent_bank``, see `latent_bank`) and the percentiles 0..100 of anomaly scores
    (returned as ``train_anomaly_percentiles``, saved in metrics.json)."""
    loader = DataLoader(train_set, batch_size=500, num_workers=num_workers)
    scores: list[torch.Tensor] = []

    def images():
        for batch in loader:
            x = batch_images(batch).to(vae.device)
            scores.append(vae.anomaly_score(x).cpu())
            yield x

    vae.calibrate(images())
    vae.latent_bank = latent_bank(vae, train_set, num_workers=num_workers)
    all_scores = torch.cat(scores).double()
    percentiles = torch.quantile(all_scores, torch.linspace(0, 1, 101, dtype=torch.float64))
    return {"train_anomaly_percentiles": [round(v, 4) for v in percentiles.tolist()]}


@torch.no_grad()
def latent_bank(vae: VAE, train_set: Dataset, size: int = 20_000, seed: int = 0, num_workers: int = 0) -> torch.Tensor:
    """Posterior means of ``size`` training images (a fixed random sample), ``[N, latent_dim]`` on the CPU:
    the codes the ``"neighbour"`` augmentation moves towards. Saved as latent_bank.safetensors."""
    order = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(seed))[:size].sort().values
    loader = DataLoader(torch.utils.data.Subset(train_set, order.tolist()), batch_size=500, num_workers=num_workers)
    return torch.cat([vae.encode(batch_images(b).to(vae.device)).mean.cpu() for b in loader])
