"""vae-augment: a variational autoencoder as a data-augmentation plugin for PyTorch."""

from .hub import CheckpointError, bundled_names, load_vae
from .losses import elbo
from .model import VAE, DiagonalGaussian
from .training import evaluate, train

__version__ = "0.1.0"

__all__ = ["VAE", "DiagonalGaussian", "CheckpointError", "load_vae", "bundled_names", "train", "evaluate", "elbo", "__version__"]
