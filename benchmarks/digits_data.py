"""The digits dataset of benchmarks/utility.py: scikit-learn's 1,797 8x8 handwritten digits at 16x16, split into a
labelled pool, a validation part and a test split, with a VAE trained on the unlabelled images as a user would."""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

import semi
from vae_augment import load_vae, train
from vae_augment.augment import to_model_space
from vae_augment.pixels import resize, to_pil

DIGITS_VALIDATION = 0.25  # of the non-test digits, kept out of the labelled pool for choosing


def digits_state(steps: int, epochs: int | None, build, seed: int = 0, init: str | None = None) -> dict:
    """scikit-learn's 8x8 digits at 16x16, a VAE trained on the unlabelled training images as a user would: from
    scratch, or with ``init`` from a trained VAE (`vae-augment train --init`) at that VAE's image size. ``build``: the
    benchmark's condition builder (benchmarks/runs.py)."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise SystemExit("the digits dataset needs scikit-learn: pip install scikit-learn") from None
    digits = load_digits()
    x = resize(torch.tensor(digits.images, dtype=torch.float32).div(16).unsqueeze(1), (16, 16))
    y = torch.tensor(digits.target)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    n_test = int(0.3 * len(x))
    test, rest = order[:n_test], order[n_test:]  # rest: the labelled pool first, then the validation images
    pool = len(rest) - int(DIGITS_VALIDATION * len(rest))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "digits"
        for i in rest.tolist():  # a flat folder of PNGs, labels unknown to the VAE
            folder.mkdir(exist_ok=True)
            to_pil(x[i]).save(folder / f"{i:04d}.png")
        kwargs = {} if epochs is None else {"epochs": epochs}
        if init is not None:  # a run from init keeps its architecture: the images are resized to its size
            kwargs.update(init=init, image_size=load_vae(init).image_size[-1])
        train(folder, Path(tmp) / "vae", progress=False, log=False, seed=seed, **kwargs)  # the defaults of `vae-augment train`
        vae = load_vae(Path(tmp) / "vae")
    with torch.inference_mode():  # LatentBorrow's donors: the codes of the labelled pool's images (not the validation ones)
        vae.latent_bank = vae.encode(to_model_space(vae, x[rest[:pool]])).mean
    return {"x": x[rest], "y": y[rest], "pool": pool, "vae": vae, "steps": steps, "build": build,
            "validation": (x[rest[pool:]], y[rest[pool:]]), "test": (x[test], y[test]), "metrics": vae.metrics,
            # the semi-supervised conditions' unlabelled pool: the labelled pool's images, whose codes the bank holds
            "pool_index": torch.arange(pool), "pool_codes": vae.latent_bank, "trainer": semi.train_semi}
