"""vae-augment: a variational autoencoder as a data-augmentation plugin for PyTorch."""

from .backbones import DiffusersVAE
from .data import PosteriorCache
from .hub import CheckpointError, bundled_names, load_vae
from .losses import elbo
from .model import VAE, DiagonalGaussian
from .training import evaluate, train
from .transforms import AugmentCollate, LatentMix, VAEAugment, augment_batch, worker_init_fn

__version__ = "0.1.0"

__all__ = [
    "VAE", "DiagonalGaussian", "DiffusersVAE", "CheckpointError", "load_vae", "bundled_names", "train", "evaluate", "elbo",
    "VAEAugment", "AugmentCollate", "LatentMix", "PosteriorCache", "augment_batch", "worker_init_fn", "__version__",
]


def __getattr__(name: str):  # AlbuVAEAugment, kept out of __all__ so `import *` works without albumentations
    if name == "AlbuVAEAugment":  # albumentations is an optional extra; import it only when asked for
        from .albu import AlbuVAEAugment

        return AlbuVAEAugment
    raise AttributeError(f"module 'vae_augment' has no attribute {name!r}")
