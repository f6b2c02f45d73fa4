"""vae-augment: a variational autoencoder as a data-augmentation plugin for PyTorch.

Layers, lowest first; each module imports only from those above it in this list:

1. ``pixels`` (conversion at the edges), ``latent`` (the latent perturbations), ``losses``
2. ``checkpoint`` (the checkpoint folder format and Hub transfers; no model classes)
3. ``models`` (the `Autoencoder` interface, the conv `VAE`, the `DiffusersVAE` wrapper)
4. ``hub`` (the loader: the kind table, `load_vae`)
5. ``augment`` (the functional core), ``loaders`` (DataLoader helpers, worker seeding),
   ``transforms`` (torchvision v2), ``albu`` (albumentations)
6. ``data``, ``training``, ``generate``, ``preview``
7. ``cli``, ``app`` (Gradio)

``tests/test_layers.py`` checks this order.
"""

from .augment import augment_batch
from .checkpoint import CheckpointError, bundled_names
from .hub import load_vae
from .loaders import AugmentCollate, PosteriorCache, worker_init_fn
from .losses import elbo
from .models import VAE, Autoencoder, DiagonalGaussian, DiffusersVAE
from .training import evaluate, fit_prior, train
from .transforms import LatentBorrow, LatentMix, VAEAugment

__version__ = "0.1.0"

__all__ = [
    "Autoencoder", "VAE", "DiagonalGaussian", "DiffusersVAE", "CheckpointError", "load_vae", "bundled_names", "train", "fit_prior", "evaluate",
    "elbo", "VAEAugment", "AugmentCollate", "LatentMix", "LatentBorrow", "PosteriorCache", "augment_batch", "worker_init_fn", "__version__",
]


def __getattr__(name: str):  # AlbuVAEAugment, kept out of __all__ so `import *` works without albumentations
    if name == "AlbuVAEAugment":  # albumentations is an optional extra; import it only when asked for
        from .albu import AlbuVAEAugment

        return AlbuVAEAugment
    raise AttributeError(f"module 'vae_augment' has no attribute {name!r}")
