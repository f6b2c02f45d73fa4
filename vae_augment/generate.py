"""Offline augmentation: write K variants of every image of a data set as PNGs in an ImageFolder tree.

The output folder is treated as `train` treats its run folder: `generate_variants` writes only into an
empty or new folder, or continues a run of its own. A run records how it was made in ``generate.json``
(`MANIFEST_NAME`: the command, checkpoint, data, strength, mode, seed and counts), written before the
first image; a second run into that folder with the same settings resumes it, skipping the images
already written, and one with other settings is refused. Each PNG is written to a temporary file and
renamed, so a run killed at any point leaves only whole images, and each batch's draws come from its
own seed, so a resumed run writes exactly the images an uninterrupted one would have.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from . import atomic, checkpoint
from .data import TORCHVISION_DATASETS, ImageFolderDataset, torchvision_dataset
from .loader import load_vae
from .pixels import to_pil
from .transforms import VAEAugment

MANIFEST_NAME = "generate.json"  # the run's settings and counts, beside the class folders
MADE_BY = "vae-augment generate"
# the manifest's entries that make a run: a second run into the folder resumes it only if all of them agree
SETTINGS = ("checkpoint", "data", "root", "split", "limit", "image_size", "images", "per_image", "strength", "mode", "residual",
            "seed", "batch_size")


def generate_variants(checkpoint, data, out: str | Path, per_image: int = 4, root=None, strength: float | None = None,
                      mode: str = "data", residual: bool | None = None, seed: int = 0, batch_size: int = 256,
                      limit: int | None = None, split: str = "train", image_size: int | None = None,
                      progress: bool = True, device: str | torch.device | None = None, command: str | None = None) -> int:
    """Write ``per_image`` variants of every image of ``data`` to ``out/<class>/<name>_<k>.png``.

    ``data`` is a folder of images (every image in it; class subfolders become class folders, a
    flat folder gives ``all/``) or a torchvision dataset name (its ``split``, class folders named
    by label). Names come from the source files (or the index in the data set). Gray images are
    written as 8-bit gray PNGs, RGB as RGB; the images keep their size unless ``image_size`` is
    given (a folder of mixed sizes is then taken one image at a time). The model runs on ``device``
    (default: cpu). The run repeats exactly for the same ``seed``.

    ``out`` must be empty or new, or hold a run of this function with the same settings, which is
    resumed (the images it wrote are kept, the rest written); anything else is refused before
    anything is written. ``out/generate.json`` records the settings, ``command`` and the counts.
    Returns the number of files written by this call.
    """
    if not isinstance(per_image, int) or isinstance(per_image, bool) or per_image < 1:
        raise ValueError(f"per_image must be an int >= 1, got {per_image!r}")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    out = Path(out)
    saved = check_out_folder(out)  # before the model and the data are read: refused at once, nothing written
    vae = load_vae(checkpoint, device=device)
    dataset, classes, names, one_at_a_time = _source(data, root, split, image_size, limit)
    augment = VAEAugment(vae, strength=strength, mode=mode, residual=residual, p=1.0, generator=torch.Generator())  # all variants
    manifest = {"generated_by": MADE_BY, "command": command, "checkpoint": _spec(checkpoint), "data": _spec(data), "root": _spec(root),
                "split": split, "limit": limit, "image_size": image_size, "images": len(dataset), "per_image": per_image,
                "strength": augment.strength, "mode": mode, "residual": augment.residual, "seed": seed, "batch_size": batch_size,
                "files": len(dataset) * per_image, "complete": False}
    manifest = json.loads(json.dumps(manifest))  # as read back from the file (tuples as lists)
    if saved is not None:
        _check_same_run(out, saved, manifest)
        manifest["command"] = saved.get("command")  # the command that started the run
    out.mkdir(parents=True, exist_ok=True)
    atomic.remove_save_debris(out)  # a manifest cut short by a kill
    atomic.atomic_write_json(out / MANIFEST_NAME, manifest)
    if progress:
        print(("resuming" if saved is not None else "writing") + f" {len(dataset) * per_image:,} images "
              f"({len(dataset):,} x {per_image} variants) in {out}", flush=True)
    loader = DataLoader(dataset, batch_size=1 if one_at_a_time else batch_size)
    with tqdm(total=len(dataset) * per_image, desc="generate", disable=not progress, unit="img") as bar:
        written = _write_variants(loader, augment, out, classes, names, per_image, seed, bar)
    atomic.atomic_write_json(out / MANIFEST_NAME, {**manifest, "complete": True})
    return written


def _source(data, root, split: str, image_size: int | None, limit: int | None) -> tuple[Dataset, list[str], list[str], bool]:
    """The images to vary, their class names, their file names, and whether they must be taken one at a time (mixed sizes)."""
    key = str(data).lower().replace("-", "").replace("_", "")
    one_at_a_time = False
    if key in TORCHVISION_DATASETS and not Path(str(data)).is_dir():
        if root is None:
            raise ValueError(f"dataset {data!r} needs root (--root)")
        dataset = torchvision_dataset(str(data), root, split == "train", image_size=image_size)
        classes = [str(i) for i in range(int(dataset.tensors[1].max()) + 1)]
        names = [f"{i:06d}" for i in range(len(dataset))]
    else:
        dataset = ImageFolderDataset(data, image_size, any_size=True)
        one_at_a_time = dataset.size is None  # photos of different sizes, each kept at its own size
        classes = dataset.classes
        names = [p.stem for p in dataset.files]
    if limit is not None:
        dataset = Subset(dataset, range(min(limit, len(dataset))))
    return dataset, classes, names, one_at_a_time


def _write_variants(loader: DataLoader, augment: VAEAugment, out: Path, classes: list[str], names: list[str], per_image: int,
                    seed: int, bar) -> int:
    """Write the variants the folder lacks; the draws of batch ``b``, variant ``k`` come from their own seed, so a batch
    whose files are all there is skipped without changing the others. Returns the number of files written."""
    written, index, cleared = 0, 0, set()
    for b, (images, labels) in enumerate(loader):
        folders = [out / (classes[int(label)] if 0 <= int(label) < len(classes) else "all") for label in labels]
        for folder in set(folders) - cleared:
            folder.mkdir(parents=True, exist_ok=True)
            atomic.remove_save_debris(folder)  # PNGs cut short by a kill: rewritten below
            cleared.add(folder)
        for k in range(per_image):
            paths = [folder / f"{names[index + i]}_{k}.png" for i, folder in enumerate(folders)]
            missing = [i for i, path in enumerate(paths) if not path.exists()]
            if missing:
                augment.generator.manual_seed(draw_seed(seed, b, k))
                variants = augment(images)
                for i in missing:
                    buffer = io.BytesIO()
                    to_pil(variants[i]).save(buffer, format="PNG")
                    # whole or absent after a kill; not fsynced (one per image would be slow), so a power loss may lose some
                    atomic.atomic_write_bytes(paths[i], buffer.getvalue(), durable=False)
                written += len(missing)
            bar.update(len(paths))
        index += images.shape[0]
    return written


def draw_seed(seed: int, batch: int, variant: int) -> int:
    """The seed of the draws for ``batch``'s ``variant`` in a run seeded by ``seed`` (64 bits of a hash: no two collide in practice)."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{batch}/{variant}".encode()).digest()[:8], "little") >> 1


def _spec(value: Any) -> Any:
    """A checkpoint or data spec as the manifest records it: a local path made absolute, a name or repo id as given."""
    if value is None or isinstance(value, (int, float)):
        return value
    if isinstance(value, (str, os.PathLike)):
        return str(Path(value).resolve()) if Path(value).exists() else os.fspath(value)
    return getattr(value, "name_or_path", None) or f"a {type(value).__name__} object"


def check_out_folder(out: Path) -> dict[str, Any] | None:
    """Refuse an output folder `generate_variants` must not write into: a file, a dead symlink, or a folder that
    holds anything but a run of its own (``generate.json``; leftovers of interrupted writes count as nothing).
    Returns the run's manifest, or None for an empty or new folder."""
    if checkpoint.is_dead_link(out):
        raise FileExistsError(f"output folder {str(out)!r} is a symlink that cannot be followed "
                              f"({checkpoint.dead_link_reason(out)}); choose another output folder (nothing was written)")
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"output folder {str(out)!r} is a file, not a folder; generate writes PNGs into class folders "
                              "inside a folder: choose another output folder (nothing was written)")
    found = [p.name + ("/" if p.is_dir() else "") for p in sorted(out.iterdir()) if not atomic.is_save_debris(p.name)] \
        if out.is_dir() else []
    manifest = _read_manifest(out / MANIFEST_NAME)
    if manifest is not None:
        return manifest
    if found:
        listing = ", ".join(found[:8]) + (f" and {len(found) - 8} more" if len(found) > 8 else "")
        raise FileExistsError(f"output folder {str(out)!r} holds files that generate did not write ({listing}); generate writes "
                              f"only into an empty or new folder, or resumes a run of its own ({MANIFEST_NAME}), so that no "
                              "one's files are overwritten: choose another output folder or empty this one (nothing was written)")
    return None


def _read_manifest(path: Path) -> dict[str, Any] | None:
    """The manifest of a generate run at ``path``, or None where there is none (or the file is not one: someone else's)."""
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("generated_by") == MADE_BY else None


def _check_same_run(out: Path, saved: dict[str, Any], manifest: dict[str, Any]) -> None:
    """Refuse to resume the run in ``out`` with other settings than it was started with."""
    differ = [f"{name} {saved.get(name)!r}, now {manifest[name]!r}" for name in SETTINGS if saved.get(name) != manifest[name]]
    if differ:
        raise FileExistsError(f"{str(out)!r} holds a generate run made with other settings ({'; '.join(differ)}; see "
                              f"{MANIFEST_NAME}); a second run into its folder resumes it, and only with the same settings, so "
                              "that the images all come from one run: repeat its settings or choose another output folder "
                              "(nothing was written)")
