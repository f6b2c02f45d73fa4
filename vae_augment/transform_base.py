"""What the package's transforms share: `VAETransform` (a torchvision v2 transform around a model)
and `LabelledBatchTransform` (one used like ``v2.MixUp``, on labelled batches).

The base owns, once for every transform: resolving the model (a model, a checkpoint spec or a
diffusers autoencoder object, on a device), the validation of ``p``, ``strength``-like ranges and
``generator``, worker seeding, ``last_params``, a ``repr`` derived from the settings, and the
statistics files that `fit` results are saved to. Each transform keeps only what is its own: its
settings, how it draws its parameters and the functional-core call that applies them
(`vae_augment.augment`).
"""

from __future__ import annotations

import copy
import os
from typing import Any

import numpy as np
import PIL.Image
import torch
from torch.utils._pytree import tree_flatten, tree_unflatten
from torchvision import tv_tensors
from torchvision.transforms.v2 import Transform
from torchvision.transforms.v2._utils import _parse_labels_getter, has_any, is_pure_tensor

from .atomic import atomic_save_tensors
from .checkpoint import CheckpointError, read_tensors
from .loader import MODEL_KINDS, load_vae
from .models import Autoencoder
from .seeding import WorkerSeed, reseed_in_worker

__all__ = ["VAETransform", "LabelledBatchTransform", "prepare_model", "check_device", "check_probability",
           "check_range", "check_generator"]
_KEYPOINTS = (tv_tensors.KeyPoints,) if hasattr(tv_tensors, "KeyPoints") else ()  # torchvision >= 0.23


# ------------------------------------------------------------------ the model
def as_model(vae) -> Autoencoder:
    """A model, a checkpoint spec (bundled name, folder, Hub id) or a diffusers autoencoder object (of
    which a copy is wrapped, so the caller's keeps its mode and dtype) -> an `Autoencoder`."""
    if isinstance(vae, Autoencoder):
        return vae
    if isinstance(vae, (str, os.PathLike)):
        return load_vae(vae)
    if any(kind.wraps(vae) for kind in MODEL_KINDS):
        return load_vae(copy.deepcopy(vae))
    raise TypeError("vae must be a vae_augment model (VAE, DiffusersVAE), a diffusers AutoencoderKL/AutoencoderTiny, or a "
                    f"checkpoint name/folder/Hub id, got {type(vae).__name__}")


def check_device(device) -> torch.device:
    """``device`` as a `torch.device`, if it names one that exists on this machine; else a ValueError."""
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"device must be a torch device such as 'cpu' or 'cuda:0', got {device!r}") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (device.index or 0) >= count:
            here = f"cuda:0 to cuda:{count - 1}" if count else "no CUDA device"
            raise ValueError(f"device {str(device)!r} is not available on this machine (it has {here}; 'cpu' always works)")
        return device
    try:
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as err:
        raise ValueError(f"device {str(device)!r} is not available on this machine ({err}); 'cpu' always works") from None
    return device


def prepare_model(vae, device=None) -> Autoencoder:
    """The model to run; a model given for another device is copied there, never moved in place,
    so the caller's model (perhaps used elsewhere, or still training) is left as it was."""
    device = None if device is None else check_device(device)
    vae = as_model(vae)
    if device is not None and device != vae.device:
        vae = copy.deepcopy(vae).to(device)
    return vae


# ------------------------------------------------------------------ argument checks
def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_probability(p, name: str = "p", hint: str = "") -> float:
    """``p`` as a float, if it is a probability in [0, 1]; else a ValueError that says what was received."""
    if not _is_number(p) or not 0 <= p <= 1:
        raise ValueError(f"{name} must be a probability in [0, 1], got {p!r}{hint}")
    return float(p)


def check_range(name: str, value, low: float, high: float, low_closed: bool = True) -> float:
    """``value`` as a float, if it is a number in [low, high] (or (low, high] when not ``low_closed``)."""
    if not _is_number(value) or not (low <= value if low_closed else low < value) or not value <= high:
        raise ValueError(f"{name} must be a number in {'[' if low_closed else '('}{low}, {high}], got {value!r}")
    return float(value)


def check_generator(generator) -> torch.Generator | None:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    return generator


def has_numpy_image(flat_inputs: list[Any]) -> bool:
    return any(isinstance(inpt, np.ndarray) and inpt.ndim >= 2 for inpt in flat_inputs)


# ------------------------------------------------------------------ the base
class VAETransform(Transform):
    """A torchvision v2 transform around an `Autoencoder`.

    Subclasses call ``super().__init__(vae, generator, device)``, set their own settings, list in
    ``_repr_fields`` the attributes their ``repr`` shows (an entry is a name, or ``(label, attribute)``;
    None values are left out), and define ``draw`` (the parameters of a call) and
    ``_apply_params(inpt, params)`` (what `apply` does with them). A transform with a `fit` lists the tensors it saves in
    ``_statistics_names`` and implements ``_statistics`` (what to save) and ``_set_statistics`` (check
    and take what was read); `save_statistics` and `load_statistics` do the rest.
    """

    _repr_fields: tuple = ()
    _statistics_names: tuple[str, ...] = ()

    def __init__(self, vae, generator: torch.Generator | None = None, device: str | torch.device | None = None):
        super().__init__()
        self.generator = check_generator(generator)
        self.vae = prepare_model(vae, device)
        self.last_params: dict[str, Any] | None = None
        self._worker_seed = WorkerSeed()

    def _generator(self) -> torch.Generator | None:
        """The generator for this call's draws: the user's (re-seeded once in each DataLoader worker) or None (global RNG)."""
        return reseed_in_worker(self.generator, self._worker_seed)

    def extra_repr(self) -> str:
        fields = [(field, field) if isinstance(field, str) else field for field in self._repr_fields]
        return ", ".join(f"{label}={getattr(self, name)!r}" for label, name in fields if getattr(self, name) is not None)

    # ------------------------------------------------------------------ statistics files
    def _statistics(self) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        """The tensors and metadata `fit` learnt (empty tensors: nothing fitted yet)."""
        return {}, {}

    def _set_statistics(self, tensors: dict[str, torch.Tensor], metadata: dict[str, str], path) -> None:
        """Check and take statistics read from ``path`` (a transform with a `fit` overrides this)."""
        raise ValueError(f"{type(self).__name__} learns no statistics (it has no fit), so there are none to load")

    def save_statistics(self, path) -> None:
        """Write what `fit` learnt to a safetensors file (atomically); `load_statistics` reads it back."""
        if not self._statistics_names:
            raise ValueError(f"{type(self).__name__} learns no statistics (it has no fit), so there are none to save")
        tensors, metadata = self._statistics()
        if not tensors:
            raise ValueError("nothing to save: call fit(images, labels) first")
        atomic_save_tensors(path, tensors, metadata=metadata)

    def load_statistics(self, path):
        """Read statistics written by `save_statistics` (for a model with the same latent size); returns ``self``."""
        if not self._statistics_names:
            self._set_statistics({}, {}, path)  # says there are none
        tensors, metadata = read_tensors(path, self._statistics_names)
        self._set_statistics(tensors, metadata, path)
        return self

    def _check_latent_size(self, path, tensors: dict[str, torch.Tensor], square: tuple[str, ...] = (),
                           rows: tuple[str, ...] = ()) -> None:
        """Refuse statistics of another code size: ``square`` tensors must be ``[D, D]``, ``rows`` ones ``[N, D]``,
        D = ``vae.code_size()``."""
        size = self.vae.code_size()
        for name in (*square, *rows):
            shape = tuple(tensors[name].shape)
            if shape[1:] != (size,) or (name in square and shape[0] != size):
                raise CheckpointError(f"{str(path)!r} holds statistics of {shape[-1] if shape else 0}-dimensional latents; "
                                      f"this {self.vae.kind} has {size}")

    # ------------------------------------------------------------------ applying drawn parameters
    def apply(self, inpt: Any, params: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        """Apply parameters drawn by ``draw`` to ``inpt`` (one image or a batch, of a type the transform
        accepts); returns the same type. Called with a function only, it is ``nn.Module.apply(fn)``."""
        if params is None and callable(inpt) and not isinstance(inpt, (torch.Tensor, PIL.Image.Image)):
            return super().apply(inpt)
        if params is None:
            raise TypeError(f"{type(self).__name__}.apply needs the parameters to apply: apply(images, params), params from draw()")
        return self._apply_params(inpt, params, **kwargs)


class LabelledBatchTransform(VAETransform):
    """A transform on labelled batches, used like ``v2.MixUp``: finds the labels (``labels_getter``), draws
    parameters for them (``draw(labels)``) and changes the images (``apply``); labels pass unchanged."""

    _transformed_types = (is_pure_tensor, tv_tensors.Image)

    def __init__(self, vae, generator: torch.Generator | None = None, labels_getter="default"):
        super().__init__(vae, generator)
        self._labels_getter = _parse_labels_getter(labels_getter)

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        n = params["labels"].shape[0]
        if inpt.ndim != 4 or inpt.shape[0] != n:
            raise ValueError(f"images must be [B, C, H, W] with B = len(labels) = {n}, got {tuple(inpt.shape)}")
        return self.apply(inpt, params)

    def _labels(self, inputs) -> torch.Tensor:
        labels = self._labels_getter(inputs)
        if not isinstance(labels, torch.Tensor) or labels.ndim != 1 or labels.is_floating_point() or labels.is_complex():
            got = (f"a {labels.dtype} tensor of shape {tuple(labels.shape)}" if isinstance(labels, torch.Tensor)
                   else type(labels).__name__)
            raise ValueError(f"labels must be a 1-D integer tensor of class indices, one per image, got {got}; for one-hot "
                             "or soft labels [B, classes] pass labels.argmax(1), for whole-number floats labels.long()")
        return labels

    def forward(self, *inputs):
        """``t(images, labels)`` or ``t((images, labels))`` (or a dict with "labels") -> the same structure."""
        inputs = inputs if len(inputs) > 1 else inputs[0]
        flat_inputs, spec = tree_flatten(inputs)
        if has_any(flat_inputs, PIL.Image.Image, tv_tensors.BoundingBoxes, tv_tensors.Mask, *_KEYPOINTS):
            raise ValueError(f"{type(self).__name__}() does not support PIL images, bounding boxes, keypoints and masks; "
                             "apply it after batching, to (images [B, C, H, W], labels [B])")
        if has_numpy_image(flat_inputs):
            raise TypeError(f"{type(self).__name__} takes image tensors [B, C, H, W], got a numpy array (which it would return "
                            "unchanged): pass torch.from_numpy(images)")
        labels = self._labels(inputs)
        needs_transform = self._needs_transform_list(flat_inputs)
        params = {"labels": labels, **self.draw(labels)}
        self.last_params = params
        flat_outputs = [self.transform(inpt, params) if needed and inpt is not labels else inpt
                        for inpt, needed in zip(flat_inputs, needs_transform)]
        return tree_unflatten(flat_outputs, spec)
