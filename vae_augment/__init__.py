"""vae-augment: a variational autoencoder as a data-augmentation plugin for PyTorch.

Layers, lowest first; each module imports only from those above it in this list:

1. ``pixels`` (conversion at the edges), ``latent`` (the latent perturbations), ``losses``,
   ``seeding`` (re-seeding inside DataLoader workers)
2. ``atomic`` (atomic writes), ``checkpoint`` (the checkpoint folder format: file names, reading with
   validation), ``card`` (the model card), ``hub`` (Hub transfers); none knows the model classes
3. ``models`` (the `Autoencoder` interface, the conv `VAE` with its networks and its persistence,
   the `DiffusersVAE` wrapper)
4. ``loader`` (the kind table, `load_vae`)
5. ``policy`` (the default strength, residual mode and p for a checkpoint, and why), ``augment`` (the
   functional core on an `Autoencoder`: one image <-> model-space round trip; it loads no model),
   ``transform_base`` (what the transforms share: model resolution, argument checks, seeding,
   ``repr``, statistics files), ``transforms`` (torchvision v2: `VAEAugment`, `LatentMix`,
   `LatentBorrow`), ``albu`` (albumentations), ``loaders`` (DataLoader helpers, above the transforms
   they call)
6. ``data``; ``evaluation`` (held-out figures, reference statistics), ``run_folder`` (the trainer state, which
   folders training may write), ``devices`` (device choice, DistributedDataParallel); then ``training``
   (`TrainConfig` and the phases of `train`), ``generate``, ``preview``, ``pseudo`` (pseudo-labels
   by propagation over the codes); then ``prior`` (`fit_prior`)
7. ``cli``, ``app`` (Gradio: ``app.support``, the work without Gradio; ``app.handlers``, the requests;
   ``app``, one builder per tab)

``tests/test_layers.py`` checks this order.
"""

from .augment import augment_batch
from .checkpoint import CheckpointError, bundled_names
from .evaluation import evaluate
from .loader import load_vae
from .loaders import AugmentCollate, PosteriorCache, worker_init_fn
from .losses import elbo
from .models import VAE, Autoencoder, DiagonalGaussian, DiffusersVAE
from .prior import fit_prior
from .pseudo import PseudoLabels, pseudo_label
from .training import train
from .transforms import LatentBorrow, LatentMix, VAEAugment

__version__ = "0.1.0"

__all__ = [
    "Autoencoder", "VAE", "DiagonalGaussian", "DiffusersVAE", "CheckpointError", "load_vae", "bundled_names", "train", "fit_prior", "evaluate",
    "elbo", "pseudo_label", "PseudoLabels", "VAEAugment", "AugmentCollate", "LatentMix", "LatentBorrow", "PosteriorCache", "augment_batch", "worker_init_fn", "__version__",
]


def __getattr__(name: str):  # AlbuVAEAugment, kept out of __all__ so `import *` works without albumentations
    if name == "AlbuVAEAugment":  # albumentations is an optional extra; import it only when asked for
        from .albu import AlbuVAEAugment

        return AlbuVAEAugment
    raise AttributeError(f"module 'vae_augment' has no attribute {name!r}")
