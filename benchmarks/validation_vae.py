"""Is the validation split out of sample for the VAE, as the test split is? (issue 30)

    python benchmarks/validation_vae.py [--quick] [--root ../shared/data] [--workers 2] [--seeds 5] [--vae-dir DIR]

The bundled `mnist` VAE was trained on all 60,000 MNIST training images, so the utility benchmark's validation
split (training images 50,000-59,999) is among its training images, while the test split is not. A choice made
on validation for anything the decoder draws may then be made on images the decoder knows. This script:

- trains a VAE with the bundled one's recipe (checkpoints/mnist/README.md: 30 epochs, 32 latent dimensions,
  widths 32,64, hidden 256, batch 128, lr 2e-3, seed 0) on the unlabelled pool only (training images
  0-49,999), into ``--vae-dir`` (a rerun with that folder holding a model reuses it);
- ``reconstruction``: each VAE's mean squared error of reconstruction (`reconstruct`: decoded posterior means, pixels in [0, 1])
  on the first `IMAGES` pool, validation and test images;
- ``validation``: the semi-supervised pipelines `CONDITIONS` (benchmarks/semi.py, with the classic chosen in
  results/utility.json) on the validation split with the pool-only VAE (its codes for the pseudo-labels and as
  LatentBorrow's donors, of the same pool images), beside the utility benchmark's runs with the bundled VAE on
  the same seeds; and, with each VAE, the decoded variants' share (the pipeline against its twin without them).

Writes benchmarks/results/validation_vae.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from common import DEFAULT_ROOT, RESULTS, write_json  # noqa: I001  (sets OMP_WAIT_POLICY before torch loads)
from torch.utils.data import TensorDataset

from runs import scored
from semi import without_variants
from stats import paired, summarize
from utility import POOL, mnist_state
from vae_augment import load_vae
from vae_augment.augment import encode_means
from vae_augment.training import train

IMAGES = 3000
CONDITIONS = ("pseudo", "self fixmatch", "self fixmatch rborrow")  # the kinds, before " + <the chosen classic>"
RECIPE = dict(epochs=30, latent_dim=32, widths=(32, 64), hidden=256, batch_size=128, lr=2e-3, seed=0, iw_k=0,
              likelihood="bernoulli", progress=False)


def pool_vae(state: dict, folder: Path, quick: bool):
    """The VAE trained on the pool of ``state`` (`utility.mnist_state`) only (``quick``: one epoch on 2,000 images),
    or the one ``folder`` holds."""
    if (folder / "model.safetensors").is_file():
        return load_vae(folder)
    (x, y), (x_test, y_test) = (state["x"], state["y"]), state["test"]
    n, recipe = (2000, {**RECIPE, "epochs": 1}) if quick else (POOL, RECIPE)
    return train(TensorDataset(x[:n], y[:n]), folder, test_data=TensorDataset(x_test[:2000], y_test[:2000]), **recipe)


def with_vae(state: dict, vae) -> dict:
    """``state`` (`utility.mnist_state`) with ``vae`` in the bundled VAE's place: its codes of the same pool images
    (its latent bank) for the pseudo-labels and as LatentBorrow's donors."""
    vae.latent_bank = encode_means(vae, state["x"][state["pool_index"]])
    return {**state, "vae": vae, "pool_codes": vae.latent_bank}


def gains(rows: dict, names: list) -> dict:
    """The decoded variants' share (the pipeline ``names[-1]`` against its twin without them) and its lead over
    pseudo-labels (``names[0]``), paired by seed."""
    best = rows[names[-1]]
    return {"share": paired(best, rows[without_variants(names[-1])]), "over pseudo": paired(best, rows[names[0]])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--root", default=DEFAULT_ROOT)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=5, help="validation seeds (the utility benchmark's semi phase: 5)")
    parser.add_argument("--steps", type=int, default=1000, help="classifier steps (the utility benchmark's)")
    parser.add_argument("--vae-dir", help="where the pool-only VAE is written, or read when it holds one")
    parser.add_argument("--out", default=str(RESULTS / "validation_vae.json"))
    args = parser.parse_args()
    start = time.time()
    seeds, steps, images = (1, 40, 200) if args.quick else (args.seeds, args.steps, IMAGES)
    folder = Path(args.vae_dir or tempfile.mkdtemp(prefix="vae-augment-pool-vae-"))
    state = mnist_state(args.root, steps)
    bundled, own = state["vae"], pool_vae(state, folder, args.quick)
    x, (x_test, _) = state["x"], state["test"]
    splits = {"pool": x[:images], "validation": x[POOL:POOL + images], "test": x_test[:images]}
    result: dict = {"protocol": {"seeds": seeds, "steps": steps, "images": images, "quick": args.quick,
                                 "pool-only VAE": {"images": "training images 0-49,999", **RECIPE, "widths": list(RECIPE["widths"])}},
                    "reconstruction": {name: {split: (vae.reconstruct(imgs) - imgs).pow(2).mean().item() for split, imgs in splits.items()}
                                       for name, vae in (("bundled", bundled), ("pool-only", own))}}
    print(json.dumps(result["reconstruction"], indent=1), flush=True)
    utility = json.loads((RESULTS / "utility.json").read_text())["mnist"]
    classic = utility["chosen"]["classic"]["condition"]
    names = [f"{kind} + {classic}" for kind in CONDITIONS]
    val = scored(names, "mnist", 10, seeds, "validation", {"mnist": with_vae(state, own)}, args.workers)
    earlier = {n: summarize(utility["validation_semi"][n]["runs"][:seeds]) for n in names if not args.quick}
    measured = {vae: gains(rows, names) for vae, rows in (("pool-only", val), ("bundled", earlier)) if rows}
    result["validation"] = {"pool-only": val, "bundled": earlier,
                            **{key: {vae: g[key] for vae, g in measured.items()} for key in ("share", "over pseudo")}}
    result["protocol"]["seconds"] = round(time.time() - start, 1)
    out = write_json(args.out, result)
    print(json.dumps({k: result["validation"][k] for k in ("share", "over pseudo")}, indent=1))
    print(f"wrote {out} in {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
