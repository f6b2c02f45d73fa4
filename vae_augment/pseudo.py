"""Pseudo-labels from the VAE's latent space: the unlabelled images get the labels that label
propagation over the codes of labelled and unlabelled images gives them (`latent.propagate_labels`).

The VAE serves here as a representation: its posterior means place images of one class near each
other, so labels spread from a few labelled images to many unlabelled ones more reliably than over
raw pixels (docs/benchmarks.md compares the two). `pseudo_label` returns a `PseudoLabels`
dataset of ``(image, label, confidence)`` items that a DataLoader can use directly;
`pseudo_label_folders` does the same for a folder of labelled images (one subfolder per class) and
a folder of unlabelled ones, which is what ``vae-augment pseudo-label`` writes to a CSV file.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import PIL.Image
import torch
from torch.utils.data import Dataset

from .augment import encode_means, labelled_codes
from .pixels import image_to_float
from .data import ImageFolderDataset
from .latent import propagate_labels
from .transform_base import prepare_model

__all__ = ["PseudoLabels", "pseudo_label", "pseudo_label_folders", "DEFAULT_NEIGHBOURS"]

DEFAULT_NEIGHBOURS = 10  # k of the nearest-neighbour graph (docs/benchmarks.md says how it was chosen)


class PseudoLabels(Dataset):
    """A dataset of ``(image, label, confidence)``: the labelled images (confidence 1) followed by the
    unlabelled images that propagation labelled with at least the threshold's confidence.

    Attributes: ``labels [N]`` (the caller's class indices), ``confidence [N]`` in [0, 1], ``labelled [N]``
    (bool: given, not propagated), ``source [N]`` (each item's index in the labelled or unlabelled input
    it came from), ``dropped`` (unlabelled images left out: below the threshold or unreached).
    ``transform`` is applied to each image as it is read. Weight a loss by ``confidence`` to trust the
    propagated labels less than the given ones.
    """

    def __init__(self, labelled, unlabelled, labels: torch.Tensor, confidence: torch.Tensor, is_labelled: torch.Tensor,
                 source: torch.Tensor, dropped: int = 0, transform: Callable | None = None):
        self._inputs = (unlabelled, labelled)  # indexed by is_labelled
        self.labels, self.confidence, self.labelled, self.source = labels, confidence, is_labelled, source
        self.dropped, self.transform = int(dropped), transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} is out of range for {len(self)} items")
        image = _image(self._inputs[int(self.labelled[index])], int(self.source[index]))
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.labels[index]), float(self.confidence[index])

    def accuracy(self, true_labels) -> float:
        """The share of propagated labels that are right, given the unlabelled images' true labels ``[M]``
        (for checking the pseudo-labels on data whose labels are known, such as a validation split)."""
        true_labels = torch.as_tensor(true_labels).reshape(-1)
        rows = ~self.labelled
        if not bool(rows.any()):
            raise ValueError("no unlabelled image was labelled (all were below the threshold or unreached)")
        return float((true_labels[self.source[rows]] == self.labels[rows]).float().mean())

    def __repr__(self) -> str:
        return (f"PseudoLabels({int(self.labelled.sum())} labelled + {int((~self.labelled).sum())} pseudo-labelled images, "
                f"{self.dropped} left out)")


def _image(images, index: int):
    """Item ``index`` of images given as a tensor, a sequence, or a dataset of images or of (image, ...) items."""
    item = images[index]
    return item[0] if isinstance(item, (tuple, list)) else item


def _count(images) -> int:
    return images.shape[0] if isinstance(images, torch.Tensor) and images.ndim == 4 else len(images)


def _shape(image) -> tuple[int, int, int]:
    """``(C, H, W)`` of a PIL image or an image tensor ``[H, W]`` / ``[C, H, W]``."""
    if isinstance(image, PIL.Image.Image):
        return len(image.getbands()), image.height, image.width
    if isinstance(image, torch.Tensor) and image.ndim in (2, 3):
        return (1, *image.shape) if image.ndim == 2 else tuple(image.shape)
    raise TypeError(f"images must be PIL images or image tensors [C, H, W] (uint8 or float in [0, 1]), got "
                    f"{type(image).__name__}{'' if not isinstance(image, torch.Tensor) else f' of shape {tuple(image.shape)}'}")


def _check_like(labelled, unlabelled) -> None:
    """Refuse unlabelled images of another size or channel count than the labelled ones (which share one)."""
    first = _shape(_image(labelled, 0))
    if isinstance(unlabelled, torch.Tensor) and unlabelled.ndim == 4:
        shapes = [tuple(unlabelled.shape[1:])] * (len(unlabelled) > 0)
    else:
        shapes = [_shape(_image(unlabelled, i)) for i in range(len(unlabelled))]
    for index, shape in enumerate(shapes):
        if shape != first:
            what = "channels" if shape[0] != first[0] else "size"
            raise ValueError(f"unlabelled image {index} has {shape[0]} channels and size {shape[1]}x{shape[2]}, the labelled images "
                             f"{first[0]} channels and size {first[1]}x{first[2]}: its {what} differs. Give images of one kind "
                             "(resize or convert them first; the CLI's --image-size and --channels do it for folders)")


def _check_classes(labels: torch.Tensor, classes) -> torch.Tensor:
    """The classes to label with: ``classes`` (each with a labelled image) or those ``labels`` holds; at least 2."""
    present = torch.unique(labels)
    if classes is not None:
        classes = torch.as_tensor(list(classes)).reshape(-1).long()
        missing = sorted(set(classes.tolist()) - set(present.tolist()))
        if missing:
            raise ValueError(f"class{'es' if len(missing) > 1 else ''} {', '.join(map(str, missing))} "
                             f"{'have' if len(missing) > 1 else 'has'} no labelled image: propagation can only give a class "
                             "that at least one labelled image has; add one, or leave the class out")
        extra = sorted(set(present.tolist()) - set(classes.tolist()))
        if extra:
            raise ValueError(f"labels {extra} are not among classes {classes.tolist()}")
        present = torch.unique(classes)
    if present.numel() < 2:
        raise ValueError(f"pseudo-labels need labelled images of at least 2 classes, got only class {present.tolist()}")
    return present


def _check_settings(k, threshold) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a whole number of neighbours >= 1, got {k!r}")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold < 1:
        raise ValueError(f"threshold must be a confidence in [0, 1), got {threshold!r}")


def _features_of(features: Callable, images, batch_size: int) -> torch.Tensor:
    """``features`` (images ``[B, C, H, W]`` float in [0, 1] -> ``[B, F]``) of ``images``, in batches, without gradients."""
    rows = images if isinstance(images, torch.Tensor) and images.ndim == 4 else [_image(images, i) for i in range(len(images))]
    out = []
    with torch.no_grad():
        for start in range(0, _count(rows), batch_size):
            chunk = rows[start:start + batch_size]
            x = image_to_float(chunk)[0] if isinstance(chunk, torch.Tensor) else torch.cat([image_to_float(i)[0] for i in chunk])
            out.append(features(x).float().flatten(1).cpu())
    return torch.cat(out)


def pseudo_label(vae, images, labels=None, unlabelled=None, *, k: int = DEFAULT_NEIGHBOURS, threshold: float = 0.0,
                 classes: Sequence[int] | None = None, transform: Callable | None = None, batch_size: int = 256,
                 device: str | torch.device | None = None, features: Callable | None = None) -> PseudoLabels:
    """Label ``unlabelled`` images by propagation over the VAE's codes from labelled ``images``.

    ``images``: ``[N, C, H, W]`` (uint8 or float in [0, 1]) or a sequence of PIL images / image tensors,
    with ``labels: [N]`` integer class indices; or a dataset of ``(image, label)`` items (``labels`` None).
    ``unlabelled``: ``[M, C, H, W]``, a sequence of images, or a dataset of images or of ``(image, ...)``
    items (their labels are ignored), of the labelled images' size and channels. ``k``: neighbours per
    code in the graph. ``threshold``: unlabelled images whose label has a lower confidence (the share of
    the propagated score it holds) are left out. The defaults (k = 10, no threshold) were chosen on MNIST's
    validation split (`benchmarks/pseudo_choice.py`; docs/benchmarks.md has the figures): a threshold makes the
    kept labels more often right but leaves out the hard images. ``classes``: the classes expected (each needs a
    labelled image; default: those in ``labels``). ``vae``: a model or a checkpoint spec (as for `VAEAugment`).
    ``features``: propagate over these instead of the VAE's codes: a function of images ``[B, C, H, W]``
    (float in [0, 1]) to ``[B, F]``, such as a classifier's penultimate layer trained on an earlier round of
    these pseudo-labels (self-training: its features separate the classes better than the codes it learnt from).
    Returns a `PseudoLabels` dataset; ``transform`` is applied to its images as they are read.
    """
    _check_settings(k, threshold)
    if unlabelled is None:
        raise ValueError("pseudo_label needs the unlabelled images to label: pass unlabelled=images (a tensor [M, C, H, W], "
                         "a sequence of images or a dataset)")
    vae = prepare_model(vae, device)
    if _count(images) == 0 or _count(unlabelled) == 0:
        raise ValueError(f"got {_count(images)} labelled and {_count(unlabelled)} unlabelled images; both must be non-empty")
    codes, labels = labelled_codes(vae, images, labels, batch_size)
    if labels.is_floating_point() or labels.is_complex():
        raise ValueError(f"labels must be integer class indices, got dtype {labels.dtype}")
    labelled_images = images
    classes = _check_classes(labels, classes)
    _check_like(labelled_images, unlabelled)
    rows = unlabelled if isinstance(unlabelled, torch.Tensor) else [_image(unlabelled, i) for i in range(len(unlabelled))]
    if features is None:
        bank = encode_means(vae, rows, batch_size)
    else:
        codes, bank = _features_of(features, labelled_images, batch_size), _features_of(features, rows, batch_size)
    if not (bool(torch.isfinite(codes).all()) and bool(torch.isfinite(bank).all())):
        raise ValueError("the codes of these images contain NaN or infinite values; check the images and the model")
    index = torch.searchsorted(classes, labels)
    pseudo, confidence = propagate_labels(codes, index, bank, k=k)
    keep = (pseudo >= 0) & (confidence >= threshold)
    kept = keep.nonzero().squeeze(1)
    n = len(labels)
    return PseudoLabels(
        labelled_images, unlabelled,
        labels=torch.cat([labels.long(), classes[pseudo[kept]]]),
        confidence=torch.cat([torch.ones(n), confidence[kept].float()]),
        is_labelled=torch.cat([torch.ones(n, dtype=torch.bool), torch.zeros(len(kept), dtype=torch.bool)]),
        source=torch.cat([torch.arange(n), kept]), dropped=int((~keep).sum()), transform=transform)


def pseudo_label_folders(vae, labelled: str | os.PathLike, unlabelled: str | os.PathLike, *, k: int = DEFAULT_NEIGHBOURS,
                         threshold: float = 0.0, image_size: int | None = None, channels: int | None = None,
                         batch_size: int = 256, device: str | torch.device | None = None) -> list[dict[str, Any]]:
    """Pseudo-labels for the images in the folder ``unlabelled`` (read recursively) from those in ``labelled``
    (one subfolder per class, the ImageFolder layout). Returns one row per unlabelled image that got a
    label: ``{"path", "label" (the class folder's name), "confidence"}``, in the folder's order."""
    known = ImageFolderDataset(labelled, image_size=image_size, channels=channels)
    if not known.classes:
        raise ValueError(f"{str(labelled)!r} has no class subfolders: put the labelled images in one folder per class "
                         "(labelled/<class>/*.png)")
    empty = [name for index, name in enumerate(known.classes) if index not in set(known.labels)]
    if empty:
        raise ValueError(f"class folder{'s' if len(empty) > 1 else ''} {', '.join(map(repr, empty))} in {str(labelled)!r} "
                         "hold no image: every class needs at least one labelled image (or remove the empty folder)")
    size = known.size if image_size is None else image_size
    other = ImageFolderDataset(unlabelled, image_size=image_size, channels=channels)
    if image_size is None and other.size != known.size:
        raise ValueError(f"the unlabelled images are {other.size[0]}x{other.size[1]}, the labelled ones {size[0]}x{size[1]}: "
                         "pass --image-size (image_size=) to resize both to one size")
    if other.channels != known.channels:
        raise ValueError(f"the unlabelled images have {other.channels} channels, the labelled ones {known.channels}: pass --channels "
                         "(channels=) to convert both to 1 (gray) or 3 (RGB)")
    result = pseudo_label(vae, known, None, other, k=k, threshold=threshold, classes=range(len(known.classes)),
                          batch_size=batch_size, device=device)
    rows = (~result.labelled).nonzero().squeeze(1)
    return [{"path": str(Path(other.files[int(result.source[i])])), "label": known.classes[int(result.labels[i])],
             "confidence": float(result.confidence[i])} for i in rows]
