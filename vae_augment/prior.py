"""A learned prior for a trained VAE: `fit_prior` fits a mixture of diagonal Gaussians to its codes
(``vae-augment fit-prior``); the encoder and decoder stay as they are."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from . import losses
from .evaluation import batch_images
from .models import VAE, Autoencoder
from .training import lr_at


def fit_prior(vae: Autoencoder, data: Dataset, *, components: int = 1024, steps: int = 6000, batch_size: int = 512, lr: float = 3e-3,
              binarize: bool = False, passes: int = 1, seed: int = 0, progress: bool = False) -> VAE:
    """A copy of the trained ``vae`` whose prior is a mixture of ``components`` diagonal Gaussians fitted to its codes.

    The encoder and decoder are kept as they are; the mixture maximises E_x E_q(z|x) log p(z) over the
    training images ``data`` (a `Dataset` of ``(image, label)`` or of images), the only part of the
    ELBO the prior enters, so the ELBO and the NLL can only improve on the data it was fitted to. A
    N(0, I) prior wastes density on codes no image has (the "holes" between the classes); the mixture
    puts it where the aggregate posterior is (Tomczak & Welling, 2018, "VAE with a VampPrior", who
    learn such priors jointly; fitting it afterwards trains the prior alone, which is quick: what it
    took and gained on MNIST is in docs/benchmarks.md#mnist-as-a-density-model). Prior samples then
    look like the data, and posterior-based augmentation is unchanged. ``binarize`` encodes a dynamic
    binarization of each image (for models trained with ``binarize=True``), ``passes`` times with fresh
    pixels (more codes to fit: a larger mixture overfits less). Adam with a cosine decay,
    ``steps`` batches of ``batch_size`` codes drawn from the posteriors (seeded by ``seed``); the
    components start at the posterior means of random training images with unit scales.

    The fit's figures are in ``metrics["prior"]``: the cross-entropy of the codes under the mixture and
    under N(0, I) (nats per image; their difference is what the KL term, and so the -ELBO, gains). A non-finite
    loss stops the fit with a `FloatingPointError` that names the step.
    """
    if not callable(getattr(vae, "with_mixture_prior", None)):
        raise TypeError(f"fit_prior needs a model whose prior can be replaced by a mixture (vae-augment's VAE), got {type(vae).__name__}")
    for name, value in (("components", components), ("steps", steps), ("batch_size", batch_size), ("passes", passes)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr!r}")
    if binarize and vae.likelihood != "bernoulli":
        raise ValueError(f"binarize=True needs a bernoulli model (binary pixels), this one is {vae.likelihood!r}")
    if len(data) == 0:
        raise ValueError("the training data is empty")
    device, generator = vae.device, torch.Generator().manual_seed(seed)
    means, logvars = [], []
    with torch.no_grad():
        for batch in (b for _ in range(passes) for b in DataLoader(data, batch_size=500)):
            x = batch_images(batch)
            x = torch.bernoulli(x.clamp(0, 1), generator=generator) if binarize else x
            posterior = vae.encode(x.to(device, vae.dtype))
            means.append(posterior.mean.float().cpu())
            logvars.append(posterior.logvar.float().cpu())
    mean, std = torch.cat(means), torch.exp(0.5 * torch.cat(logvars))
    fitted = vae.with_mixture_prior(components).float().cpu()
    start = torch.randint(len(mean), (components,), generator=generator) if components > len(mean) else \
        torch.randperm(len(mean), generator=generator)[:components]
    with torch.no_grad():
        fitted.prior_loc.copy_(mean[start])
    prior = [fitted.prior_logits, fitted.prior_loc, fitted.prior_log_scale]
    optimizer = torch.optim.Adam(prior, lr=lr)
    mixture_ce, normal_ce = [], []
    for step in tqdm(range(steps), desc="fit prior", disable=not progress, leave=False):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, steps, lr, "cosine")
        rows = torch.randint(len(mean), (batch_size,), generator=generator)
        z = mean[rows] + std[rows] * torch.randn(batch_size, mean.shape[1], generator=generator)
        loss = -losses.mixture_log_prob(z, *prior).mean()
        if not torch.isfinite(loss):  # the source checkpoint is untouched, and nothing is returned to be saved
            raise FloatingPointError(f"fitting the prior diverged: the codes' cross-entropy was {loss.item()} at step {step + 1} of "
                                     f"{steps}; nothing was saved; retry with a lower learning rate (--lr, e.g. {lr / 10:g}; this run: {lr:g})")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step >= steps - max(1, steps // 20):  # the last 5% of the fit, for the figures
            mixture_ce.append(loss.item())
            normal_ce.append(-losses.standard_normal_log_prob(z).mean().item())
    fitted.metrics = {**fitted.metrics, "prior": {
        "components": components, "steps": steps, "batch_size": batch_size, "lr": lr, "binarize": binarize, "passes": passes,
        "seed": seed, "codes": len(mean), "cross_entropy_nats": sum(mixture_ce) / len(mixture_ce),
        "standard_normal_cross_entropy_nats": sum(normal_ce) / len(normal_ce)}}
    return fitted.to(device).eval()
