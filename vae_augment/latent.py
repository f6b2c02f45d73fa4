"""The functional core of augmentation: posteriors + drawn noise -> perturbed latents.

Nothing here draws random numbers; callers draw ``noise`` (and partners) and pass them in, so a
draw can be replayed, logged or applied to several inputs. Shapes: ``[B, D]`` latents, or spatial
``[B, C, h, w]`` ones (diffusers backbones; ``latent_scale`` is then ``[C, 1, 1]``).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch.nn import functional as F

MODES = ("data", "posterior", "prior", "neighbour", "class")
MAX_STRENGTH = {"data": 4.0, "posterior": 4.0, "prior": 1.0, "neighbour": 1.0, "class": 4.0}
DEFAULT_SHRINKAGE = 0.1  # of the within-class covariance towards its diagonal
NEIGHBOURS = 10  # candidates for the "neighbour" mode
CODE_GRID = 4  # spatial latents [C, h, w] are summarized per channel on a CODE_GRID x CODE_GRID grid (`pooled_codes`)


def check_mode_strength(mode: str, strength: float) -> None:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0 <= strength <= MAX_STRENGTH[mode]:
        raise ValueError(f"strength for mode {mode!r} must be a number in [0, {MAX_STRENGTH[mode]:g}], got {strength!r}")


def perturb(mean: torch.Tensor, std: torch.Tensor, noise: torch.Tensor, mode: str, strength: float,
            latent_scale: torch.Tensor | None = None, bank: torch.Tensor | None = None,
            class_factor: torch.Tensor | None = None) -> torch.Tensor:
    """Latents near the posteriors N(mean, std^2).

    - ``"data"``: z = mean + strength * latent_scale * noise, where ``latent_scale: [D]`` is the spread
      of posterior means over the training set; strength is in units of the data's own variation,
      so it means a similar amount of change across checkpoints.
    - ``"posterior"``: z = mean + strength * std * noise (strength 1 samples the posterior itself).
    - ``"prior"``: z = mean + strength * (noise - mean), a blend towards the prior sample ``noise``;
      strength 1 ignores the image.
    - ``"neighbour"``: z = mean + strength * (z_nn - mean), towards one of the `NEIGHBOURS` nearest
      codes in ``bank: [N, D]`` (posterior means of training images, the image itself excluded),
      chosen by Phi(noise[:, 0]); strength 1 decodes that training image's code. It moves along the
      data manifold the VAE learnt from unlabelled data, assuming near codes share the label.
    - ``"class"``: z = mean + strength * L noise, where ``class_factor`` L ``[D, D]`` is a square root
      (L L^T) of the pooled within-class covariance of labelled codes (`within_class_covariance`):
      the noise follows the directions in which codes vary *within* a class (slant, width, style)
      rather than towards another class (the idea of ISDA, Wang et al., NeurIPS 2019, in a VAE's
      latent space). Strength 1 is one within-class standard deviation along each direction.

    ``noise: [B, D]`` standard normal draws. Strength 0 returns ``mean`` (the reconstruction). For
    spatial latents ``[B, C, h, w]``, ``noise`` has their shape, except in ``"class"`` mode, where it is
    ``[B, C * CODE_GRID**2]``: the covariance is of `pooled_codes`, and the drawn offset is spread back
    over the positions by `spread_codes` (a smooth change of shape and colour at any image size).
    """
    if mode == "data":
        scale = torch.ones_like(mean[:1]) if latent_scale is None else latent_scale.to(mean)
        return mean + strength * scale * noise
    if mode == "posterior":
        return mean + strength * std * noise
    if mode == "prior":
        return mean + strength * (noise - mean)
    if mode == "neighbour":
        if bank is None:
            raise ValueError("mode 'neighbour' needs the checkpoint's latent bank (latent_bank.safetensors, written by "
                             "vae-augment train); this model has none")
        return mean + strength * (nearest_codes(mean, bank.to(mean), noise) - mean)
    if mode == "class":
        if class_factor is None:
            raise ValueError("mode 'class' needs the within-class covariance of labelled codes: call fit(images, labels) "
                             "on the transform first")
        return mean + strength * spread_codes(noise @ class_factor.to(mean).T, mean)
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
    if lam.ndim == 1:  # one per sample, broadcast over [D] or spatial [C, h, w] latents
        lam = lam.view(-1, *[1] * (z.ndim - 1))
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


def nearest_codes(mean: torch.Tensor, bank: torch.Tensor, noise: torch.Tensor, k: int = NEIGHBOURS) -> torch.Tensor:
    """For each row of ``mean: [B, D]``, one of its ``k`` nearest rows of ``bank: [N, D]`` (exact
    duplicates, i.e. the image itself, excluded), picked by the uniform Phi(noise[:, 0])."""
    if mean.shape[0] == 0:
        return mean
    distance = torch.cdist(mean, bank)
    distance = distance.masked_fill(distance < 1e-4, float("inf"))
    k = min(k, bank.shape[0])
    candidates = distance.topk(k, dim=1, largest=False).indices  # [B, k]
    uniform = 0.5 * (1 + torch.erf(noise[:, 0] / 2**0.5))
    pick = (uniform * k).long().clamp_(0, k - 1)
    return bank[candidates[torch.arange(mean.shape[0], device=mean.device), pick]]


# ------------------------------------------------------------------ paths and statistics in latent space
def column_mean_std(rows, too_few: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-column mean and (unbiased) standard deviation over an iterable of ``[N, K]`` tensors,
    accumulated in float64 without holding them all; ``ValueError(too_few)`` for fewer than 2 rows."""
    total, total_sq, count = 0.0, 0.0, 0
    for r in rows:
        r = r.double()
        total, total_sq, count = total + r.sum(0), total_sq + r.square().sum(0), count + r.shape[0]
    if count < 2:
        raise ValueError(too_few)
    loc = total / count
    return loc, (total_sq / count - loc.square()).clamp_min(0).mul(count / (count - 1)).sqrt()


def check_dims(dims: Sequence[int], size: int, what: str) -> None:
    if not dims or not all(0 <= int(d) < size for d in dims):
        raise ValueError(f"dims must be a non-empty list of {what} in [0, {size}), got {[int(d) for d in dims]}")


def shift_latents(mean: torch.Tensor, dims: Sequence[int], values) -> torch.Tensor:
    """One latent ``mean`` (``[D]``, or spatial ``[C, h, w]``) -> ``[K, T, *mean.shape]``: for each of the K
    ``dims`` (a dimension, or a channel at every position), the mean with that one moved by each of
    ``values`` (``[T]``, the same for every dimension, or ``[K, T]``)."""
    dims = [int(d) for d in dims]
    values = torch.as_tensor(values, dtype=mean.dtype, device=mean.device)
    values = values.expand(len(dims), -1) if values.ndim == 1 else values
    if values.ndim != 2 or values.shape[0] != len(dims):
        raise ValueError(f"values must have shape [T] or [{len(dims)}, T], got {tuple(values.shape)}")
    z = mean.repeat(len(dims), values.shape[1], *[1] * mean.ndim)
    rows = torch.arange(len(dims), device=mean.device)
    z[rows, :, dims] += values.view(*values.shape, *[1] * (mean.ndim - 1))
    return z


def lerp_latents(z0: torch.Tensor, z1: torch.Tensor, t: torch.Tensor, method: str = "linear") -> torch.Tensor:
    """Points between ``z0, z1: [B, D]`` at fractions ``t: [T]`` -> ``[B, T, D]``."""
    if method not in ("linear", "slerp"):
        raise ValueError(f"method must be 'linear' or 'slerp', got {method!r}")
    t = t.view(1, -1, 1)
    a, b = z0.unsqueeze(1), z1.unsqueeze(1)
    if method == "linear":
        return a + t * (b - a)
    cos = F.cosine_similarity(z0, z1, dim=-1).clamp(-1 + 1e-7, 1 - 1e-7).view(-1, 1, 1)
    omega = torch.acos(cos)
    so = torch.sin(omega)
    return (torch.sin((1 - t) * omega) / so) * a + (torch.sin(t * omega) / so) * b


# ------------------------------------------------------------------ codes: one flat vector per image
def pooled_codes(mean: torch.Tensor) -> torch.Tensor:
    """The flat code of each latent that class statistics, donors and pseudo-labels work on: ``[B, D]``
    latents as they are; spatial ``[B, C, h, w]`` ones averaged per channel over a `CODE_GRID` x `CODE_GRID`
    grid of regions, ``[B, C * CODE_GRID**2]``, the same size whatever the image's, so statistics fitted
    on images of one size apply to another."""
    if mean.ndim == 2:
        return mean
    return F.adaptive_avg_pool2d(mean, CODE_GRID).flatten(1)


def spread_codes(offset: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """An offset in the space of `pooled_codes` -> one for latents shaped like ``like``: unchanged for flat
    latents; for spatial ones each channel's grid upsampled bilinearly to ``like``'s ``h x w``, so that
    pooling ``like + offset`` gives about ``pooled_codes(like) + offset``."""
    if like.ndim == 2:
        return offset
    grid = offset.reshape(offset.shape[0], like.shape[1], CODE_GRID, CODE_GRID)
    return F.interpolate(grid, size=tuple(like.shape[-2:]), mode="bilinear", align_corners=False)


# ------------------------------------------------------------------ class-aware noise
def within_class_covariance(codes: torch.Tensor, labels: torch.Tensor, shrinkage: float = DEFAULT_SHRINKAGE) -> torch.Tensor:
    """Pooled within-class covariance of ``codes: [N, D]`` with class ``labels: [N]``, ``[D, D]`` (float64).

    S = sum_k sum_{i in k} (c_i - m_k)(c_i - m_k)^T / (N - K), shrunk towards its diagonal:
    (1 - shrinkage) S + shrinkage diag(S), which keeps it well conditioned when there are fewer
    labelled codes than dimensions. Every class needs at least 2 codes, and there must be 2 classes.
    """
    if not isinstance(codes, torch.Tensor) or codes.ndim != 2:
        raise ValueError(f"codes must be a [N, D] tensor of flat latents, got {getattr(codes, 'shape', type(codes).__name__)}")
    labels = torch.as_tensor(labels).reshape(-1)
    if labels.shape[0] != codes.shape[0]:
        raise ValueError(f"got {codes.shape[0]} images but {labels.shape[0]} labels; give one label per image")
    if labels.is_floating_point() or labels.is_complex():
        raise ValueError(f"labels must be integer class indices, got dtype {labels.dtype}")
    if not bool(torch.isfinite(codes).all()):
        raise ValueError("the codes of these images contain NaN or infinite values; check the images and the model")
    if not 0 <= shrinkage <= 1:
        raise ValueError(f"shrinkage must be in [0, 1], got {shrinkage!r}")
    classes, inverse, counts = torch.unique(labels.to(codes.device), return_inverse=True, return_counts=True)
    if classes.numel() < 2:
        raise ValueError(f"the within-class covariance needs labelled images of at least 2 classes, got only class {classes.tolist()}")
    if int(counts.min()) < 2:
        few = classes[counts < 2].tolist()
        raise ValueError(f"every class needs at least 2 labelled images for its within-class spread; classes {few} have 1")
    c = codes.double()
    centres = torch.zeros(classes.numel(), c.shape[1], dtype=c.dtype, device=c.device).index_add_(0, inverse, c)
    centred = c - (centres / counts.unsqueeze(1).to(c))[inverse]
    covariance = centred.T @ centred / (c.shape[0] - classes.numel())
    return (1 - shrinkage) * covariance + shrinkage * torch.diag(torch.diagonal(covariance))


def covariance_factor(covariance: torch.Tensor) -> torch.Tensor:
    """A square root L (L L^T = covariance) of a symmetric positive semi-definite ``[D, D]`` matrix, float32;
    from its eigendecomposition, so a rank-deficient covariance (a latent dimension the data never uses) works."""
    values, vectors = torch.linalg.eigh(covariance.double())
    return (vectors * values.clamp_min(0).sqrt()).float()


# ------------------------------------------------------------------ variation borrowed from unlabelled codes
def propagate_labels(codes: torch.Tensor, labels: torch.Tensor, bank: torch.Tensor, k: int = 10, alpha: float = 0.9,
                     steps: int = 30, chunk: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """Pseudo-labels for the unlabelled codes ``bank: [M, D]`` from the labelled ``codes: [N, D]``
    with class indices ``labels: [N]`` in [0, K): label propagation (Zhou et al., 2004, "Learning with
    Local and Global Consistency") over the graph of each code's ``k`` nearest codes by cosine
    similarity: F <- alpha * (mean F of its neighbours) + Y, ``steps`` times from F = Y (one-hot
    labels, zero for the bank). Returns each bank code's label ``[M]`` (long; -1 for a code that no
    labelled code reaches in ``steps`` links) and its confidence ``[M]``, the share of its score that
    label has (1: every path leads to that class; 0 for -1). The links are one-way (a code's own
    neighbours), which measured a little better than the symmetric graph; how many labels come out
    right is in docs/benchmarks.md."""
    labels = torch.as_tensor(labels).reshape(-1)
    if labels.numel() == 0 or labels.shape[0] != codes.shape[0] or int(labels.min()) < 0:
        raise ValueError(f"labels must be one class index in [0, K) per labelled code ({codes.shape[0]}), got {labels.tolist()[:10]}")
    nodes = F.normalize(torch.cat([codes, bank]).float(), dim=1)
    k = min(k, len(nodes) - 1)
    # a code's best match, normally itself, is dropped; where a near-duplicate matches as well, that one may be
    # dropped instead, and the code counts itself among its k neighbours (the behaviour the benchmarks measured)
    near = torch.cat([(nodes[i:i + chunk] @ nodes.T).topk(k + 1, dim=1).indices[:, 1:] for i in range(0, len(nodes), chunk)])
    seeds = torch.zeros(len(nodes), int(labels.max()) + 1, device=nodes.device)
    seeds[torch.arange(len(codes), device=nodes.device), labels.to(nodes.device)] = 1.0
    scores = seeds
    for _ in range(steps):  # in chunks of nodes: [chunk, k, K] at a time, not [N, k, K]
        scores = torch.cat([scores[near[i:i + chunk]].mean(1) for i in range(0, len(nodes), chunk)]).mul_(alpha).add_(seeds)
    scores = scores[len(codes):]
    total = scores.sum(1)
    confidence, pseudo = (scores / total.clamp_min(1e-30).unsqueeze(1)).max(1)
    reached = total > 0
    return torch.where(reached, pseudo, -1), torch.where(reached, confidence, 0.0)


def borrow_residual(mean: torch.Tensor, donor: torch.Tensor, centre: torch.Tensor, strength: float) -> torch.Tensor:
    """z = mean + strength * (donor - centre): an image's code plus the offset of a code of its class
    (``donor``, e.g. an unlabelled image pseudo-labelled with that class) from the class centre, so a
    variant takes on a real writer's variation (slant, width, style) while keeping its own class.
    ``donor`` and ``centre`` are ``[B, D]`` codes (`pooled_codes`), ``mean`` the ``[B, D]`` latents (or
    spatial ``[B, C, h, w]`` ones, which get the offset spread over their positions by `spread_codes`);
    strength 0 returns ``mean``."""
    return mean + strength * spread_codes(donor - centre, mean)


def borrow_donors(bank: torch.Tensor, pseudo: torch.Tensor, confidence: torch.Tensor, classes: torch.Tensor,
                  keep: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The donors of `borrow_residual`: of each class ``c`` (an index into ``classes``) the share ``keep`` of
    the bank codes propagated to it (``pseudo``, from `propagate_labels`) that it is most confident of.
    Returns the donors ``[M', D]``, sorted by class, and the count of each class ``[K]``."""
    donors, counts = [], []
    for c in range(classes.numel()):
        members = torch.nonzero(pseudo == c).squeeze(1)
        if members.numel() == 0:
            raise ValueError(f"no unlabelled image was assigned to class {classes[c].item()}; give more unlabelled "
                             "images (or labelled ones of that class)")
        top = confidence[members].argsort(descending=True)[: max(1, int(keep * members.numel()))]
        donors.append(bank[members[top]])
        counts.append(len(top))
    return torch.cat(donors), torch.tensor(counts)
