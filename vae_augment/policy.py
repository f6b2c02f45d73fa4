"""The default policy: which strength, residual mode and ``p`` an augmentation gets when the user
leaves them to the library, and why.

`VAEAugment` (and its albumentations adapter) return the image plus the decoded change
(``residual=True``) unless told otherwise, for every checkpoint: a variant keeps the user's pixels
and moves them by what the VAE learnt varies, instead of replacing them with the decoder's
reconstruction. The rule carries across datasets because it does not depend on how well a decoder
reconstructs one: a reconstruction loses whatever detail the decoder cannot draw, and that loss,
small on MNIST, is most of a plain variant's change on a dataset with texture (Fashion-MNIST).

A checkpoint is further *handled with care* when its held-out reconstructions are blurry
(``reconstruction_r2`` below `FIDELITY_WARNING`) or it was trained on fewer than
`SMALL_DATA_IMAGES` images: half of the images stay real (``p=0.5``) and latents move less
(`CAREFUL_STRENGTH`), with a warning that says so. Elsewhere ``p=1`` and `DEFAULT_STRENGTH`.
The label-aware transforms (`LatentMix`, `LatentBorrow`) keep the plain mode except on such a
checkpoint (`choose_residual`): that is how they were measured. How each choice measured is in
docs/benchmarks.md ("Does it help?", "The default on data nobody tuned on" and "Choosing a
strength"); this module only states the rule.
"""

from __future__ import annotations

import math
import warnings

from .models import Autoencoder

__all__ = ["DEFAULT_STRENGTH", "CAREFUL_STRENGTH", "FIDELITY_WARNING", "SMALL_DATA_IMAGES", "choose_defaults",
           "choose_residual", "reconstruction_fidelity", "training_images"]

DEFAULT_STRENGTH = 0.2  # data-relative units; label preservation per strength: docs/benchmarks.md#choosing-a-strength
FIDELITY_WARNING = 0.7  # held-out reconstruction_r2 (`training.evaluate`) below which a checkpoint counts as blurry
SMALL_DATA_IMAGES = 10_000  # fewer training images than this: handled with care (a judgement between measured cases)
CAREFUL_STRENGTH = 0.1  # the strength of a checkpoint handled with care (docs/benchmarks.md#does-it-help)
_DOCS = "docs/benchmarks.md#does-it-help"


def reconstruction_fidelity(vae: Autoencoder) -> float | None:
    """The checkpoint's held-out ``reconstruction_r2`` (measured by `vae_augment.train`), or None when unmeasured."""
    fidelity = (vae.metrics.get("test") or {}).get("reconstruction_r2")
    return float(fidelity) if isinstance(fidelity, (int, float)) and math.isfinite(fidelity) else None


def training_images(vae: Autoencoder) -> int | None:
    """How many images the checkpoint was trained on (``train_images`` in its metrics), or None when unrecorded."""
    n = vae.metrics.get("train_images")
    return n if isinstance(n, int) and not isinstance(n, bool) else None


def handled_with_care(vae: Autoencoder) -> str | None:
    """Why ``vae`` is handled with care (a sentence for the warning), or None when it is not."""
    fidelity = reconstruction_fidelity(vae)
    if fidelity is not None and fidelity < FIDELITY_WARNING:
        # R^2 is 1 for exact reconstructions, 0 for the mean image and negative below that: said as a number, not a share
        return (f"this checkpoint reconstructs its held-out images poorly (reconstruction_r2 {fidelity:.2f}, below "
                f"{FIDELITY_WARNING:g}; 1 is exact, 0 no better than the mean image), so its variants are blurrier than the "
                "images and can make a classifier worse")
    images = training_images(vae)
    if images is not None and images < SMALL_DATA_IMAGES:
        return (f"this checkpoint was trained on {images:,} images (fewer than {SMALL_DATA_IMAGES:,}): on a small dataset of "
                f"one's own a VAE's variants measured below no augmentation ({_DOCS})")
    return None


def _advice(residual: bool | None, p: float | None, strength: float | None) -> str:
    """What the careful defaults chose for the user (the arguments left as None), and what to change."""
    reasons = {"residual=True": "only the decoded change is added, so your images' detail survives",
               "p=0.5": "half of the images stay real", f"strength={CAREFUL_STRENGTH}": "variants stay close to your images"}
    chosen = [name for name, value in (("residual=True", residual), ("p=0.5", p), (f"strength={CAREFUL_STRENGTH}", strength))
              if value is None]
    advice = (f"{' and '.join(filter(None, [', '.join(chosen[:-1]), chosen[-1]]))} {'was' if len(chosen) == 1 else 'were'} chosen for you "
              f"({'; '.join(reasons[name] for name in chosen)}); " if chosen else "")
    if residual is False:
        advice += f"use residual=True ({reasons['residual=True']}), "
    return advice


def _check_residual(residual) -> None:
    if residual is not None and not isinstance(residual, bool):  # bool("no") is True: refuse rather than guess
        raise TypeError(f"residual must be True, False or None (chosen from the checkpoint), got {residual!r}")


def _warn_if_careful(vae: Autoencoder, residual: bool | None, p: float | None, strength: float | None, stacklevel: int) -> bool:
    """Whether ``vae`` is handled with care; if so, a warning says why and what was chosen."""
    why = handled_with_care(vae)
    if why is not None:
        warnings.warn(f"{why}: {_advice(residual, p, strength)}lower the strength, or train the VAE longer, on more images or "
                      "from one trained on similar images (vae-augment train --init), and compare "
                      "against no augmentation on a validation split", UserWarning, stacklevel=stacklevel + 1)
    return why is not None


def choose_defaults(vae: Autoencoder, residual: bool | None, p: float | None = 1.0,
                    strength: float | None = DEFAULT_STRENGTH, stacklevel: int = 2) -> tuple[bool, float, float]:
    """``residual``, ``p`` and ``strength`` of `VAEAugment` as given; None chooses them from the checkpoint.

    ``residual=None`` becomes True (see the module docstring). For a checkpoint handled with care ``p=None``
    becomes 0.5 and ``strength=None`` `CAREFUL_STRENGTH`, and a warning says why; elsewhere 1 and
    `DEFAULT_STRENGTH`. ``stacklevel``: the warning's, counted from the caller of this function."""
    _check_residual(residual)
    careful = _warn_if_careful(vae, residual, p, strength, stacklevel + 1)
    return (True if residual is None else residual, ((0.5 if careful else 1.0) if p is None else p),
            ((CAREFUL_STRENGTH if careful else DEFAULT_STRENGTH) if strength is None else strength))


def choose_residual(vae: Autoencoder, residual: bool | None, stacklevel: int = 2) -> bool:
    """``residual`` of a label-aware transform (`LatentMix`, `LatentBorrow`) as given, or None: True for a checkpoint
    handled with care (with its warning), else False, the plain mode they were measured in."""
    _check_residual(residual)
    careful = _warn_if_careful(vae, residual, 1.0, DEFAULT_STRENGTH, stacklevel + 1)
    return careful if residual is None else residual
