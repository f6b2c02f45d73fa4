"""The albumentations adapter inside A.Compose: types, seeding, serialization."""

from __future__ import annotations

import albumentations as A
import numpy as np
import pytest
import torch

from vae_augment.albu import AlbuVAEAugment


@pytest.fixture(scope="module")
def checkpoint(vae, tmp_path_factory) -> str:
    """conftest.py's tiny VAE, saved."""
    folder = tmp_path_factory.mktemp("ckpt")
    vae.save_pretrained(folder)
    return str(folder)


def pipeline(checkpoint, seed, **kwargs):
    return A.Compose([AlbuVAEAugment(checkpoint=checkpoint, strength=2.0, **kwargs)],
                     bbox_params=A.BboxParams(format="pascal_voc", label_fields=["labels"]), seed=seed)


def sample(dtype=np.uint8, channels=None):
    rng = np.random.default_rng(0)
    shape = (28, 28) if channels is None else (28, 28, channels)
    image = rng.random(shape).astype(np.float32)
    if dtype == np.uint8:
        image = (image * 255).astype(np.uint8)
    mask = rng.integers(0, 3, (28, 28)).astype(np.uint8)
    return {"image": image, "mask": mask, "bboxes": np.array([[2, 3, 20, 22]], dtype=np.float32), "labels": [1]}


@pytest.mark.parametrize("dtype, channels", [(np.uint8, None), (np.uint8, 1), (np.uint8, 3), (np.float32, 3), (np.float32, None)])
def test_types_kept_and_targets_untouched(checkpoint, dtype, channels):
    data = sample(dtype, channels)
    out = pipeline(checkpoint, seed=1)(**data)
    assert out["image"].shape == data["image"].shape and out["image"].dtype == data["image"].dtype
    assert not np.array_equal(out["image"], data["image"])
    assert np.array_equal(out["mask"], data["mask"])
    assert np.allclose(np.asarray(out["bboxes"]), data["bboxes"]) and list(out["labels"]) == [1]


def test_seeded_compose_reproduces(checkpoint):
    data = sample()
    a = pipeline(checkpoint, seed=7)(**data)["image"]
    b = pipeline(checkpoint, seed=7)(**data)["image"]
    c = pipeline(checkpoint, seed=8)(**data)["image"]
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_to_dict_from_dict_round_trip(checkpoint):
    original = pipeline(checkpoint, seed=3, residual=True)
    serialized = A.to_dict(original)
    step = serialized["transform"]["transforms"][0]
    assert step["checkpoint"] == checkpoint and step["strength"] == 2.0 and step["residual"] is True
    restored = A.from_dict(serialized)
    restored.set_random_seed(3)
    data = sample()
    assert np.array_equal(original(**data)["image"], restored(**data)["image"])


def test_bad_input_and_arguments(checkpoint):
    with pytest.raises(ValueError, match="strength"):
        AlbuVAEAugment(checkpoint=checkpoint, strength=9)
    transform = A.Compose([AlbuVAEAugment(checkpoint=checkpoint)], seed=0)
    with pytest.raises(ValueError, match="must be in \\[0, 1\\]"):
        transform(image=np.full((28, 28, 1), 3.0, dtype=np.float32))
    with pytest.raises(ValueError, match="NaN or infinite"):
        transform(image=np.full((28, 28, 1), np.nan, dtype=np.float32))


def test_workers_draw_different_variants_and_seeded_runs_repeat(checkpoint):
    from torch.utils.data import DataLoader, Dataset

    class Same(Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return self.transform(image=sample()["image"])["image"]

    def epoch():
        data = Same()
        data.transform = A.Compose([AlbuVAEAugment(checkpoint=checkpoint, strength=2.0)], seed=137)
        torch.manual_seed(0)
        return torch.cat([torch.as_tensor(b) for b in DataLoader(data, batch_size=1, num_workers=2)])

    first, again = epoch(), epoch()
    assert torch.equal(first, again)
    assert not torch.equal(first[0], first[1]), "worker 0's and worker 1's first draws differ"
