"""The recipes of docs/integrations.md on the tiny VAE: a Hugging Face `datasets.Dataset` augmented on the fly
(per example and per batch, new variants each epoch, a seed repeats them) and a Lightning `Trainer` whose
DataModule augments training batches in ``on_after_batch_transfer`` (`VAEAugment`, and `LatentBorrow` on
``(images, labels)``). Each half skips without its extra (``datasets``, ``lightning``)."""

from __future__ import annotations

import PIL.Image
import pytest
import torch
from conftest import make_images
from torch.utils.data import DataLoader, TensorDataset
from torchvision.transforms.v2.functional import pil_to_tensor, to_pil_image

from vae_augment import LatentBorrow, VAEAugment

N = 24  # images in the datasets here


def uint8_images(n: int = N, seed: int = 0) -> torch.Tensor:
    return (make_images(n, seed=seed) * 255).round().to(torch.uint8)


# ------------------------------------------------------------------ Hugging Face datasets
def hf_dataset():
    datasets = pytest.importorskip("datasets")
    images = uint8_images()
    return datasets.Dataset.from_dict({"image": [to_pil_image(image) for image in images], "label": [i % 3 for i in range(N)]}), images


def per_batch_transform(augment, calls=None):
    """The recipe's per-batch function: the batch's PIL images as one uint8 tensor, one call of ``augment``."""
    def per_batch(batch):
        if calls is not None:
            calls.append(len(batch["image"]))
        images = torch.stack([pil_to_tensor(image) for image in batch["image"]])
        return {"pixel_values": augment(images), "label": torch.tensor(batch["label"])}
    return per_batch


def test_per_example_transform_returns_pil_images_of_the_same_size_and_mode(vae):
    dataset, images = hf_dataset()
    augment = VAEAugment(vae, strength=1.0, generator=torch.Generator().manual_seed(0))
    view = dataset.with_transform(lambda batch: {**batch, "image": [augment(image) for image in batch["image"]]})
    items = [view[i] for i in range(4)]
    assert all(isinstance(item["image"], PIL.Image.Image) and item["image"].size == (28, 28) and item["image"].mode == "L"
               for item in items)
    assert [item["label"] for item in items] == [0, 1, 2, 0]  # labels pass untouched
    changed = torch.stack([pil_to_tensor(item["image"]) for item in items])
    assert not torch.equal(changed, images[:4]), "the images were not augmented"
    assert torch.equal(pil_to_tensor(dataset[0]["image"]), images[0]), "the dataset itself must stay as it was"


def test_per_batch_transform_runs_once_per_dataloader_batch(vae):
    dataset, images = hf_dataset()
    calls: list[int] = []
    loader = DataLoader(dataset.with_transform(per_batch_transform(VAEAugment(vae, strength=1.0), calls)), batch_size=8)
    batches = list(loader)
    assert calls == [8, 8, 8], "a DataLoader reads a batch of items in one call (Dataset.__getitems__)"
    pixels = torch.cat([batch["pixel_values"] for batch in batches])
    assert pixels.dtype == torch.uint8 and pixels.shape == images.shape
    assert not torch.equal(pixels, images)
    assert torch.equal(torch.cat([batch["label"] for batch in batches]), torch.arange(N) % 3)


def test_each_epoch_draws_new_variants_and_a_seed_repeats_them(vae):
    dataset, _ = hf_dataset()

    def epochs(seed: int, count: int = 2) -> list[torch.Tensor]:
        augment = VAEAugment(vae, strength=1.0, generator=torch.Generator().manual_seed(seed))
        loader = DataLoader(dataset.with_transform(per_batch_transform(augment)), batch_size=8)
        return [torch.cat([batch["pixel_values"] for batch in loader]) for _ in range(count)]

    run, again, other = epochs(0), epochs(0), epochs(1)
    assert not torch.equal(run[0], run[1]), "the second epoch repeated the first one's variants"
    assert all(torch.equal(a, b) for a, b in zip(run, again)), "the same seed must repeat every epoch"
    assert not torch.equal(run[0], other[0])


def test_global_seed_repeats_a_shuffled_run_in_two_workers(vae):
    """The recipe's default: the global RNG (torch.manual_seed) seeds the shuffle and, in each worker, the variants."""
    dataset, _ = hf_dataset()
    loader = DataLoader(dataset.with_transform(per_batch_transform(VAEAugment(vae, strength=1.0))), batch_size=6, shuffle=True,
                        num_workers=2)

    def epoch(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        torch.manual_seed(seed)
        batches = list(loader)
        return torch.cat([b["pixel_values"] for b in batches]), torch.cat([b["label"] for b in batches])

    (pixels, labels), (pixels_again, labels_again) = epoch(3), epoch(3)
    assert torch.equal(pixels, pixels_again) and torch.equal(labels, labels_again)
    assert not torch.equal(epoch(4)[0], pixels)


# ------------------------------------------------------------------ Lightning
def lightning_classes():
    """The recipe's DataModule (with the model and transform passed in, for the tiny VAE) and a classifier that
    records what each step received."""
    L = pytest.importorskip("lightning")

    class AugmentedData(L.LightningDataModule):
        def __init__(self, images, labels, make_transform, vae):
            super().__init__()
            self.images, self.labels, self.make_transform, self.vae = images, labels, make_transform, vae

        def setup(self, stage):
            self.vae = self.vae.to(self.trainer.strategy.root_device)  # once, for the whole fit
            self.augment = self.make_transform(self.vae)

        def train_dataloader(self):
            return DataLoader(TensorDataset(self.images, self.labels), batch_size=8)

        def val_dataloader(self):
            return DataLoader(TensorDataset(self.images, self.labels), batch_size=8)

        def on_after_batch_transfer(self, batch, dataloader_idx):
            images, labels = batch
            if self.trainer.training:
                if isinstance(self.augment, LatentBorrow):
                    images, labels = self.augment(images, labels)
                else:
                    images = self.augment(images)
            return images, labels

    class Classifier(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(28 * 28, 3))
            self.seen: dict[str, list] = {"train": [], "val": []}

        def training_step(self, batch, batch_idx):
            images, labels = batch
            self.seen["train"].append((images.clone(), labels.clone()))
            return torch.nn.functional.cross_entropy(self.net(images.float() / 255), labels)

        def validation_step(self, batch, batch_idx):
            self.seen["val"].append((batch[0].clone(), batch[1].clone()))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    return L, AugmentedData, Classifier


def fit(make_transform, vae, steps: int = 3):
    L, AugmentedData, Classifier = lightning_classes()
    images, labels = uint8_images(), torch.arange(N) % 3
    L.seed_everything(0, verbose=False)
    model, data = Classifier(), AugmentedData(images, labels, make_transform, vae)
    weights = {name: value.clone() for name, value in vae.state_dict().items()}
    trainer = L.Trainer(max_steps=steps, limit_val_batches=1, num_sanity_val_steps=0, val_check_interval=steps, accelerator="cpu",
                        devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, datamodule=data)
    return trainer, model, data, images, labels, weights


def check_fit(trainer, model, data, images, labels, weights, steps: int = 3):
    """What both recipes promise: training batches changed, labels and validation batches untouched, the VAE
    on the trainer's device, not trained and not among the classifier's parameters."""
    assert trainer.global_step == steps and len(model.seen["train"]) == steps
    for step, (seen, seen_labels) in enumerate(model.seen["train"]):
        rows = slice(8 * step, 8 * step + 8)
        assert seen.dtype == torch.uint8 and seen.shape == images[rows].shape
        assert torch.equal(seen_labels, labels[rows])
    assert not torch.equal(torch.cat([seen for seen, _ in model.seen["train"]]), images[: 8 * steps]), "no batch was augmented"
    val_images, val_labels = model.seen["val"][0]
    assert torch.equal(val_images, images[:8]) and torch.equal(val_labels, labels[:8]), "validation batches must stay real"
    assert data.augment.vae.device == trainer.strategy.root_device
    assert all(torch.equal(value, weights[name]) for name, value in data.augment.vae.state_dict().items()), "the VAE was trained"
    vae_parameters = {id(p) for p in data.augment.vae.parameters()}
    assert not any(id(p) in vae_parameters for group in trainer.optimizers[0].param_groups for p in group["params"])


def test_trainer_augments_training_batches_in_on_after_batch_transfer(vae):
    made: list[VAEAugment] = []

    def make(model):
        made.append(VAEAugment(model, strength=1.0, generator=torch.Generator().manual_seed(0)))
        return made[-1]

    result = fit(make, vae)
    check_fit(*result)
    assert len(made) == 1 and made[0].vae is result[2].vae, "one transform, sharing the model moved in setup (no copy)"


def test_trainer_with_latent_borrow_on_images_and_labels(vae):
    images, labels = uint8_images(), torch.arange(N) % 3
    noise = torch.randn(3 * N, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    unlabelled = (images.repeat(3, 1, 1, 1) / 255 + 0.02 * noise).clamp(0, 1)  # near the labelled ones: every class gets donors

    def make(model):
        with pytest.warns(UserWarning, match="LatentBorrow borrows from 72 unlabelled images"):
            return LatentBorrow(model, strength=1.0, p=1.0, generator=torch.Generator().manual_seed(0)).fit(images, labels, unlabelled)

    check_fit(*fit(make, vae))
