"""Pseudo-labels over the VAE's codes: `pseudo_label` (a dataset of (image, label, confidence)),
`pseudo_label_folders` and ``vae-augment pseudo-label``; their errors; and, on MNIST with the bundled
checkpoint, that the codes label better than raw pixels."""

from __future__ import annotations

import csv

import pytest
import torch
from torch.utils.data import DataLoader

from conftest import TINY, write_pngs
from vae_augment import VAE, PseudoLabels, pseudo_label
from vae_augment.cli import main
from vae_augment.latent import propagate_labels
from vae_augment.pseudo import pseudo_label_folders


def halves(n: int, seed: int = 0, size: int = 28, channels: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` images of two kinds, easy to tell apart: class 0 bright on the left half, class 1 on the right."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    images = torch.rand(n, channels, size, size, generator=g) * 0.2
    for i, label in enumerate(labels.tolist()):
        columns = slice(0, size // 2) if label == 0 else slice(size // 2, size)
        images[i, :, :, columns] += 0.7
    return images.clamp(0, 1), labels


@pytest.fixture(scope="module")
def vae() -> VAE:
    torch.manual_seed(0)
    return VAE(**TINY).eval()


def test_unlabelled_images_get_their_class_and_the_dataset_feeds_a_dataloader(vae):
    images, labels = halves(6, seed=0)
    unlabelled, truth = halves(40, seed=1)
    result = pseudo_label(vae, images, labels + 5, unlabelled)  # class ids of the caller's own (5, 6) come back
    assert isinstance(result, PseudoLabels) and len(result) == 6 + 40 and result.dropped == 0
    assert result.accuracy(truth + 5) == 1.0
    image, label, confidence = result[0]
    assert torch.equal(image, images[0]) and label == int(labels[0]) + 5 and confidence == 1.0  # labelled first, trusted
    image, label, confidence = result[6]
    assert torch.equal(image, unlabelled[int(result.source[6])]) and label in (5, 6) and 0.5 <= confidence <= 1.0
    batch = next(iter(DataLoader(result, batch_size=16, shuffle=False)))
    assert batch[0].shape == (16, 1, 28, 28) and batch[1].dtype == torch.long and batch[2].dtype == torch.float64


def test_a_threshold_leaves_out_the_least_confident_and_says_how_many(vae):
    images, labels = halves(4, seed=0)
    unlabelled = torch.cat([halves(20, seed=1)[0], torch.rand(20, 1, 28, 28, generator=torch.Generator().manual_seed(2))])
    everything = pseudo_label(vae, images, labels, unlabelled)
    cut = float(everything.confidence[~everything.labelled].median())
    confident = pseudo_label(vae, images, labels, unlabelled, threshold=cut)
    assert 0 < confident.dropped < 40 and len(confident) == 4 + 40 - confident.dropped
    assert bool((confident.confidence[~confident.labelled] >= cut).all())
    assert "left out" in repr(confident)


def test_the_result_matches_propagation_over_the_codes(vae):
    images, labels = halves(6, seed=3)
    unlabelled, _ = halves(12, seed=4)
    result = pseudo_label(vae, images, labels, unlabelled, k=4)
    with torch.inference_mode():
        codes, bank = vae.encode(images).mean, vae.encode(unlabelled).mean
    expected, confidence = propagate_labels(codes, labels, bank, k=4)
    assert torch.equal(result.labels[6:], expected[result.source[6:]])
    torch.testing.assert_close(result.confidence[6:], confidence[result.source[6:]])


def test_datasets_and_sequences_of_pil_images_are_accepted(vae):
    from torchvision.transforms.v2.functional import to_pil_image

    images, labels = halves(6, seed=0)
    unlabelled, truth = halves(30, seed=5)
    dataset = [(image, int(label)) for image, label in zip(images, labels)]
    pil = [to_pil_image(image) for image in unlabelled]
    result = pseudo_label(vae, dataset, None, pil, k=5, transform=lambda image: "seen")
    assert result.accuracy(truth) >= 0.9 and result[5][0] == "seen"


@pytest.mark.parametrize("call, message", [
    (lambda vae, x, y: pseudo_label(vae, x, y, x, classes=[0, 1, 2]), r"class 2 has no labelled image"),
    (lambda vae, x, y: pseudo_label(vae, x, y, halves(3, size=32)[0]), r"unlabelled image 0 has 1 channels and size 32x32, .*size differs"),
    (lambda vae, x, y: pseudo_label(vae, x, y, halves(3, channels=3)[0]), r"has 3 channels .* its channels differs"),
    (lambda vae, x, y: pseudo_label(vae, x, torch.zeros(4, dtype=torch.long), x), r"at least 2 classes, got only class \[0\]"),
    (lambda vae, x, y: pseudo_label(vae, x, y, None), r"needs the unlabelled images"),
    (lambda vae, x, y: pseudo_label(vae, x, y, x, k=0), r"k must be a whole number of neighbours >= 1, got 0"),
    (lambda vae, x, y: pseudo_label(vae, x, y, x, threshold=1.0), r"threshold must be a confidence in \[0, 1\), got 1.0"),
    (lambda vae, x, y: pseudo_label(vae, x, y.float(), x), r"integer class indices"),
    (lambda vae, x, y: pseudo_label(vae, x, y, x[:0]), r"got 4 labelled and 0 unlabelled images"),
])
def test_bad_input_gets_a_clear_error(vae, call, message):
    images, labels = halves(4)
    with pytest.raises(ValueError, match=message):
        call(vae, images, labels)


# ------------------------------------------------------------------ folders and the command line
def folders(tmp_path, unlabelled_size: int = 28):
    images, labels = halves(6, seed=0)
    for name, label in (("left", 0), ("right", 1)):
        write_pngs(tmp_path / "labelled" / name, images[labels == label])
    unlabelled, truth = halves(10, seed=1, size=unlabelled_size)
    write_pngs(tmp_path / "unlabelled", unlabelled)
    return truth


def test_folders_are_labelled_with_their_class_names(vae, tmp_path):
    truth = folders(tmp_path)
    vae.save_pretrained(tmp_path / "vae")
    rows = pseudo_label_folders(tmp_path / "vae", tmp_path / "labelled", tmp_path / "unlabelled")
    assert [row["path"].rsplit("/", 1)[1] for row in rows] == [f"img{i:03d}.png" for i in range(10)]
    assert [row["label"] for row in rows] == [["left", "right"][t] for t in truth.tolist()]


def test_the_command_writes_a_csv_and_refuses_to_overwrite_it(vae, tmp_path, capsys):
    folders(tmp_path)
    vae.save_pretrained(tmp_path / "vae")
    out = tmp_path / "labels.csv"
    argv = ["pseudo-label", "--checkpoint", str(tmp_path / "vae"), "--labelled", str(tmp_path / "labelled"),
            "--unlabelled", str(tmp_path / "unlabelled"), "--out", str(out)]
    assert main(argv) == 0 and "wrote 10 pseudo-labels" in capsys.readouterr().out
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 10 and set(rows[0]) == {"path", "label", "confidence"} and {r["label"] for r in rows} == {"left", "right"}
    before = out.read_text()
    assert main(argv) == 2 and "exists; pass --overwrite" in capsys.readouterr().err and out.read_text() == before
    assert main([*argv, "--overwrite", "--threshold", "0.999999"]) == 0 and len(list(csv.DictReader(out.open()))) <= 10


def test_the_command_names_what_is_wrong_with_the_folders(vae, tmp_path, capsys):
    folders(tmp_path, unlabelled_size=32)
    vae.save_pretrained(tmp_path / "vae")
    argv = ["pseudo-label", "--checkpoint", str(tmp_path / "vae"), "--labelled", str(tmp_path / "labelled"),
            "--unlabelled", str(tmp_path / "unlabelled"), "--out", str(tmp_path / "labels.csv")]
    assert main(argv) == 2
    assert "the unlabelled images are 32x32, the labelled ones 28x28: pass --image-size" in capsys.readouterr().err
    assert main([*argv, "--image-size", "28"]) == 0
    (tmp_path / "labelled" / "empty").mkdir()
    assert main([*argv, "--image-size", "28", "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "class folder 'empty'" in err and "hold no image" in err


# ------------------------------------------------------------------ MNIST: the codes label better than pixels
def test_on_mnist_the_codes_label_better_than_pixels(mnist_root):
    from torchvision.datasets import MNIST

    train = MNIST(str(mnist_root), train=True, download=False)
    x = train.data[:3000].unsqueeze(1)
    y = train.targets[:3000]
    g = torch.Generator().manual_seed(0)
    labelled = torch.cat([torch.nonzero(y == c).squeeze(1)[torch.randperm(int((y == c).sum()), generator=g)[:10]] for c in range(10)])
    rest = torch.ones(len(y), dtype=torch.bool)
    rest[labelled] = False
    result = pseudo_label("mnist", x[labelled], y[labelled], x[rest])
    pixels, _ = propagate_labels(x[labelled].flatten(1).float(), y[labelled], x[rest].flatten(1).float())
    codes_right = result.accuracy(y[rest])
    pixels_right = float((pixels == y[rest]).float().mean())
    assert codes_right > 0.85 and codes_right > pixels_right + 0.02


def test_features_replace_the_codes_for_a_round_of_self_training(vae):
    images, labels = halves(6, seed=0)
    unlabelled, truth = halves(30, seed=1)
    left_brightness = lambda x: x[:, :, :, :14].mean((1, 2, 3)).unsqueeze(1)  # noqa: E731  (tells the halves apart)
    by_features = pseudo_label(vae, images, labels, unlabelled, k=5, features=lambda x: torch.cat([left_brightness(x), 1 - left_brightness(x)], 1))
    assert by_features.accuracy(truth) == 1.0
    seen = []
    pseudo_label(vae, images, labels, unlabelled, features=lambda x: seen.append((x.dtype, x.shape[1:])) or x.flatten(1))
    assert seen and all(item == (torch.float32, (1, 28, 28)) for item in seen)  # float images in [0, 1], batched
    flipped = pseudo_label(vae, images, labels, unlabelled, k=5, features=lambda x: x.flip(-1).flatten(1))
    assert flipped.accuracy(truth) == 1.0  # the features decide, not the VAE's codes
