"""The functional core of augmentation: posteriors + drawn noise -> perturbed latents.

Nothing here draws random numbers; callers draw ``noise`` (and partners) and pass them in, so a
draw can be replayed, logged or applied to several inputs. Shapes: ``[B, D]`` latents.
"""

from __future__ import annotations

import torch

MODES = ("data", "posterior", "prior")
MAX_STRENGTH = {"data": 4.0, "posterior": 4.0, "prior": 1.0}


def check_mode_strength(mode: str, strength: float) -> None:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0 <= strength <= MAX_STRENGTH[mode]:
        raise ValueError(f"strength for mode {mode!r} must be a number in [0, {MAX_STRENGTH[mode]:g}], got {strength!r}")


def perturb(mean: torch.Tensor, std: torch.Tensor, noise: torch.Tensor, mode: str, strength: float,
            latent_scale: torch.Tensor | None = None) -> torch.Tensor:
    """Latents near the posteriors N(mean, std^2).

    - ``"data"``: z = mean + strength * latent_scale * noise, where ``latent_scale: [D]`` is the spread
      of posterior means over the training set; strength is in units of the data's own variation,
      so it means a similar amount of change across checkpoints.
    - ``"posterior"``: z = mean + strength * std * noise (strength 1 samples the posterior itself).
    - ``"prior"``: z = mean + strength * (noise - mean), a blend towards the prior sample ``noise``;
      strength 1 ignores the image.

    ``noise: [B, D]`` standard normal draws. Strength 0 returns ``mean`` (the reconstruction).
    """
    if mode == "data":
        scale = torch.ones_like(mean[:1]) if latent_scale is None else latent_scale.to(mean)
        return mean + strength * scale * noise
    if mode == "posterior":
        return mean + strength * std * noise
    if mode == "prior":
        return mean + strength * (noise - mean)
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


def feature_space_mix(z: torch.Tensor, partner: torch.Tensor, lam: torch.Tensor | float, method: str = "extrapolate") -> torch.Tensor:
    """DeVries & Taylor (2017), "Dataset Augmentation in Feature Space".

    ``z[i]`` is moved relative to ``z[partner[i]]`` (a sample of the same class):
    extrapolation c' = c_j + lam (c_j - c_k), interpolation c' = c_j + lam (c_k - c_j).
    ``partner: [B]`` long indices, ``lam``: a float or ``[B]``.
    """
    if method not in ("extrapolate", "interpolate"):
        raise ValueError(f"method must be 'extrapolate' or 'interpolate', got {method!r}")
    lam = torch.as_tensor(lam, dtype=z.dtype, device=z.device)
    if lam.ndim == 1:
        lam = lam.unsqueeze(1)
    other = z[partner]
    return z + lam * (z - other) if method == "extrapolate" else z + lam * (other - z)


def same_class_partners(labels: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """For each sample, the index of another sample with the same label (itself when it is alone).

    ``uniform: [B]`` draws in [0, 1) choose among the candidates, so the choice is replayable.
    """
    labels = labels.reshape(-1)
    n = labels.shape[0]
    partners = torch.arange(n, device=labels.device)
    same = labels.unsqueeze(0) == labels.unsqueeze(1)
    same.fill_diagonal_(False)
    counts = same.sum(1)
    has = counts > 0
    if has.any():
        # the k-th True in row i, k = floor(u * count)
        k = (uniform.to(labels.device)[has] * counts[has]).long().clamp_max(counts[has] - 1)
        ranks = same[has].long().cumsum(1) - 1
        hit = (ranks == k.unsqueeze(1)) & same[has]
        partners[has] = hit.float().argmax(1)
    return partners
