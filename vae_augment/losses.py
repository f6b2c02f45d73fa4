"""The ELBO and its likelihoods.

All figures are in nats per image unless a name says otherwise; ``bits_per_dim`` converts.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F


def bernoulli_log_likelihood(x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """log p(x|z) = sum_i x_i log p_i + (1 - x_i) log(1 - p_i), nats per image.

    ``x`` may hold gray values in [0, 1] (the continuous-Bernoulli-free convention of most VAE
    papers and pytorch/examples); shapes ``[..., B, C, H, W]`` -> ``[..., B]``.
    """
    x = x.expand_as(logits)
    return -F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(-3).sum(-1)


def gaussian_log_likelihood(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """log N(x; mean, exp(log_scale)^2) summed over pixels, nats per image; ``log_scale: [C]`` per channel."""
    log_scale = log_scale.view(-1, 1, 1)
    x = x.expand_as(mean)
    log_p = -0.5 * ((x - mean) * torch.exp(-log_scale)).square() - log_scale - 0.5 * math.log(2 * math.pi)
    return log_p.flatten(-3).sum(-1)


def elbo(log_likelihood: torch.Tensor, kl: torch.Tensor, beta: float = 1.0) -> dict[str, torch.Tensor]:
    """The (beta-weighted) evidence lower bound, averaged over a batch.

    ELBO(x) = E_q(z|x)[log p(x|z)] - KL(q(z|x) || N(0, I)), in nats per image, estimated with one
    reparameterized sample; the KL term is the closed form of Kingma & Welling (2013), Appendix B.
    With ``beta != 1`` the KL is weighted by beta (Higgins et al., 2017; KL warm-up ramps beta
    from 0). Returns ``loss`` (the quantity to minimise, -(log_lik - beta * KL), batch mean),
    ``elbo`` (the true beta = 1 ELBO, batch mean), ``log_likelihood`` and ``kl`` (batch means).
    """
    loss = -(log_likelihood - beta * kl).mean()
    return {
        "loss": loss,
        "elbo": (log_likelihood - kl).mean().detach(),
        "log_likelihood": log_likelihood.mean().detach(),
        "kl": kl.mean().detach(),
    }


def bits_per_dim(nats: torch.Tensor | float, num_dims: int, likelihood: str = "bernoulli") -> torch.Tensor | float:
    """Nats per image -> bits per dimension.

    For the Bernoulli likelihood this is nats / (D ln 2). For the Gaussian, a density on [0, 1],
    ``D ln 256`` is added first so the figure refers to 8-bit pixel values as in the literature.
    """
    if likelihood == "gaussian":
        nats = nats + num_dims * math.log(256)
    return nats / (num_dims * math.log(2))


def kl_warmup(step: int, warmup_steps: int, beta: float = 1.0) -> float:
    """KL weight at ``step``: rises linearly from 0 to ``beta`` over ``warmup_steps`` (Bowman et al., 2016)."""
    if warmup_steps <= 0:
        return beta
    return beta * min(1.0, step / warmup_steps)
