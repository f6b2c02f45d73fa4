"""The model interface (`Autoencoder`) and its implementations: the library's conv `VAE` and the
`DiffusersVAE` wrapper of pretrained diffusers autoencoders (the only code that imports diffusers)."""

from .base import Autoencoder, DiagonalGaussian
from .conv import VAE
from .diffusers_vae import DiffusersVAE

__all__ = ["Autoencoder", "DiagonalGaussian", "VAE", "DiffusersVAE"]
