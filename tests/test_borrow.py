"""LatentBorrow: within-class variation borrowed from unlabelled codes pseudo-labelled by label propagation."""

from __future__ import annotations

import pickle
import warnings

import pytest
import torch
from conftest import TINY_16
from torchvision.transforms import v2

from vae_augment import VAE, CheckpointError, LatentBorrow
from vae_augment.latent import borrow_residual, propagate_labels

pytestmark = pytest.mark.filterwarnings("ignore:LatentBorrow borrows from")  # the tiny banks here: the warning has its own test


@pytest.fixture(scope="module")
def vae():
    """A tiny 16x16 VAE with a latent bank (this module's own: it takes precedence over conftest.py's 28x28 one)."""
    torch.manual_seed(0)
    model = VAE(**TINY_16).eval()
    with torch.inference_mode():  # "training codes": 5 around each labelled image's
        codes = model.encode(labelled()[0]).mean
    model.latent_bank = codes.repeat(5, 1) + 0.5 * codes.std(0) * torch.randn(60, 4, generator=torch.Generator().manual_seed(5))
    return model


def labelled(n_per_class: int = 4, classes: int = 3, seed: int = 0):
    """Images of class c: a pattern of their own (c's rows bright) plus noise, so the classes' codes differ."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(classes).repeat_interleave(n_per_class)
    pattern = torch.zeros(classes, 1, 16, 16)
    for c in range(classes):
        pattern[c, :, c * 16 // classes : (c + 1) * 16 // classes] = 0.9
    return (pattern[labels] + 0.1 * torch.rand(len(labels), 1, 16, 16, generator=g)).clamp(0, 1), labels


def two_arcs(n: int = 200, seed: int = 0):
    """Two parallel arcs of directions (0.3 rad apart), densely sampled; one labelled code at opposite
    ends of them. Near the start of arc 1, the nearest labelled code is the one of class 0 (0.3 rad
    away, against 1.5 along its own arc), so only following the graph gets those right."""
    g = torch.Generator().manual_seed(seed)
    truth = torch.arange(n) % 2
    theta = (torch.arange(n) // 2 + torch.rand(n, generator=g)) * 1.5 / (n // 2)  # dense along each arc
    tilt = 0.3 * truth.float()
    bank = torch.stack([theta.cos() * tilt.cos(), theta.sin() * tilt.cos(), tilt.sin()], 1)
    codes = torch.tensor([[1.0, 0.0, 0.0], [torch.tensor(1.5).cos() * torch.tensor(0.3).cos(),
                                            torch.tensor(1.5).sin() * torch.tensor(0.3).cos(), torch.tensor(0.3).sin()]])
    return codes, torch.tensor([0, 1]), bank, truth


def test_propagation_follows_the_graph_of_unlabelled_codes():
    codes, labels, bank, truth = two_arcs()
    nearest = (bank @ codes.T).argmax(1)  # the nearest labelled code (cosine): wrong near arc 1's start
    assert (nearest == truth).float().mean() < 0.9
    pseudo, confidence = propagate_labels(codes, labels, bank, k=6, steps=200)
    assert torch.equal(pseudo, truth)
    assert confidence.min() > 0.5 and confidence.max() <= 1 + 1e-6
    swapped, _ = propagate_labels(codes, 1 - labels, bank, k=6, steps=200)  # the labels decide, not the order
    assert torch.equal(swapped, 1 - pseudo)
    island = torch.tensor([0.0, 0.0, -1.0]) + 0.01 * torch.randn(12, 3, generator=torch.Generator().manual_seed(1))
    pseudo, confidence = propagate_labels(codes, labels, torch.cat([bank, island]), k=6, steps=200)
    assert torch.equal(pseudo[-12:], torch.full((12,), -1)) and torch.equal(confidence[-12:], torch.zeros(12))  # unreached
    assert torch.equal(pseudo[:-12], truth)


def test_borrow_residual_adds_the_donors_offset_from_its_class_centre():
    mean, donor, centre = torch.randn(5, 3), torch.randn(5, 3), torch.randn(5, 3)
    torch.testing.assert_close(borrow_residual(mean, donor, centre, 0.5), mean + 0.5 * (donor - centre))
    torch.testing.assert_close(borrow_residual(mean, donor, centre, 0.0), mean)


def test_fit_keeps_the_most_confident_share_of_each_class_as_donors(vae):
    x, y = labelled()
    everyone = LatentBorrow(vae, keep=1.0).fit(x, y)
    half = LatentBorrow(vae, keep=0.5).fit(x, y)
    stats, full = half.statistics, everyone.statistics
    assert torch.equal(stats["classes"], torch.tensor([0, 1, 2]))
    codes = vae.encode(x).mean
    pseudo, confidence = propagate_labels(codes, y, vae.latent_bank)
    assert int(full["counts"].sum()) == int((pseudo >= 0).sum()) > 0  # every code a labelled one reaches
    assert torch.equal(stats["counts"], (full["counts"] * 0.5).long().clamp_min(1))
    assert stats["donors"].shape == (int(stats["counts"].sum()), 4)
    torch.testing.assert_close(stats["centres"], torch.stack([codes[y == c].mean(0) for c in range(3)]))
    for c in range(3):  # the donors of class c are its most confident pseudo-labelled bank codes
        members = torch.nonzero(pseudo == c).squeeze(1)
        top = members[confidence[members].argsort(descending=True)[: int(stats["counts"][c])]]
        start = int(stats["offsets"][c])
        torch.testing.assert_close(stats["donors"][start : start + len(top)], vae.latent_bank[top])


def test_a_batch_gets_codes_of_its_own_class_donors(vae):
    x, y = labelled()
    borrow = LatentBorrow(vae, strength=1.0, p=1.0, residual=False, generator=torch.Generator().manual_seed(0)).fit(x, y)
    out, labels = borrow(x, y)
    assert torch.equal(labels, y) and out.shape == x.shape and out.dtype == x.dtype
    params, stats = borrow.last_params, borrow.statistics
    for i, c in enumerate(y.tolist()):
        start, count = int(stats["offsets"][c]), int(stats["counts"][c])
        assert any(torch.equal(params["donor"][i], d) for d in stats["donors"][start : start + count])
        assert torch.equal(params["centre"][i], stats["centres"][c])
    mean = vae.encode(x).mean
    torch.testing.assert_close(out, vae.decode(mean + params["donor"] - params["centre"]), atol=1e-5, rtol=1e-5)
    assert (params["donor"] - params["centre"]).abs().min(1).values.gt(0).all()  # every code moved


def test_p_strength_residual_and_types(vae):
    x, y = labelled()
    same, _ = LatentBorrow(vae, p=0.0).fit(x, y)(x, y)
    assert torch.equal(same, x)
    borrow = LatentBorrow(vae, strength=0.0, p=1.0, residual=True).fit(x, y)
    torch.testing.assert_close(borrow(x, y)[0], x, atol=1e-5, rtol=0)  # strength 0 + residual: the input
    half = LatentBorrow(vae, p=0.5, generator=torch.Generator().manual_seed(1)).fit(x, y)
    out, _ = half(x, y)
    kept = ~half.last_params["apply"]
    assert kept.any() and (~kept).any() and torch.equal(out[kept], x[kept])
    as_uint8 = (x * 255).to(torch.uint8)
    out, _ = v2.Compose([LatentBorrow(vae, p=1.0).fit(x, y)])(as_uint8, y)
    assert out.dtype == torch.uint8 and out.shape == x.shape


def test_seeded_draws_repeat_and_statistics_round_trip(vae, tmp_path):
    x, y = labelled()
    first = LatentBorrow(vae, p=1.0, generator=torch.Generator().manual_seed(3)).fit(x, y)
    reference, _ = first(x, y)
    first.save_statistics(tmp_path / "borrow.safetensors")
    loaded = LatentBorrow(vae, p=1.0, generator=torch.Generator().manual_seed(3)).load_statistics(tmp_path / "borrow.safetensors")
    assert torch.equal(loaded(x, y)[0], reference)
    copy = pickle.loads(pickle.dumps(LatentBorrow(vae, p=1.0, generator=torch.Generator().manual_seed(3)).fit(x, y)))
    assert torch.equal(copy(x, y)[0], reference)


def test_unlabelled_images_instead_of_the_bank(vae):
    x, y = labelled()
    plain = VAE(**TINY_16).eval()  # no latent bank
    with pytest.raises(ValueError, match="needs unlabelled images"):
        LatentBorrow(plain).fit(x, y)
    unlabelled = torch.rand(30, 1, 16, 16, generator=torch.Generator().manual_seed(9))
    borrow = LatentBorrow(plain, keep=1.0).fit(x, y, unlabelled=unlabelled)
    assert int(borrow.statistics["counts"].sum()) == 30


def test_bad_input_is_refused_with_the_reason(vae, tmp_path):
    x, y = labelled()
    for kwargs, match in ((dict(strength=3), "strength"), (dict(p=-0.1), "p must"), (dict(keep=0), "keep"), (dict(keep=True), "keep")):
        with pytest.raises(ValueError, match=match):
            LatentBorrow(vae, **kwargs)
    with pytest.raises(ValueError, match="at least 2 classes"):
        LatentBorrow(vae).fit(x[:4], torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="labels must be"):
        LatentBorrow(vae).fit(x, y[:5])
    with pytest.raises(ValueError, match="integer class indices"):
        LatentBorrow(vae).fit(x, y.float())
    with pytest.raises(ValueError, match="NaN"):
        LatentBorrow(vae).fit(torch.full_like(x, float("nan")), y)
    with pytest.raises(RuntimeError, match="fit"):
        LatentBorrow(vae)(x, y)
    borrow = LatentBorrow(vae).fit(x, y)
    with pytest.raises(ValueError, match=r"labels \[7\] are not among the classes"):
        borrow(x[:2], torch.tensor([0, 7]))
    with pytest.raises(ValueError, match=r"B = len\(labels\)"):
        borrow(x, y[:3])
    with pytest.raises(ValueError, match="nothing to save"):
        LatentBorrow(vae).save_statistics(tmp_path / "none.safetensors")
    other = VAE(**{**TINY_16, "latent_dim": 6}).eval()
    borrow.save_statistics(tmp_path / "four.safetensors")
    with pytest.raises(CheckpointError, match="4-dimensional"):
        LatentBorrow(other).load_statistics(tmp_path / "four.safetensors")


def rgb(images: torch.Tensor, size: int) -> torch.Tensor:
    """The gray class patterns of `labelled` as RGB images of ``size x size``."""
    return torch.nn.functional.interpolate(images, size=(size, size), mode="bilinear", align_corners=False).expand(-1, 3, -1, -1)


def test_spatial_latents_borrow_through_pooled_codes_at_two_sizes(tmp_path):
    """A diffusers AutoencoderKL: donors and centres are pooled codes (`vae.code_size()`, whatever the image size),
    so unlabelled images of two sizes can donate and batches of two sizes are changed; the statistics save and load."""
    from conftest import tiny_kl
    from vae_augment import load_vae

    vae = load_vae(tiny_kl())  # skips without diffusers
    x, y = labelled()
    pool, _ = labelled(n_per_class=20, seed=1)
    unlabelled = [*rgb(pool[::2], 16), *rgb(pool[1::2], 24)]  # images of their own sizes, every class at both
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the small-pool warning
        borrow = LatentBorrow(vae, p=1.0, residual=False, generator=torch.Generator().manual_seed(0)).fit(rgb(x, 16), y, unlabelled=unlabelled)
    stats = borrow.statistics
    assert stats["centres"].shape == (3, vae.code_size()) and stats["donors"].shape == (60, vae.code_size())
    still = LatentBorrow(vae, strength=0.0, p=1.0, residual=False)
    still.statistics = stats
    for size in (16, 24):
        batch = rgb(x, size)
        out, labels = borrow(batch, y)
        assert out.shape == batch.shape and torch.equal(labels, y)
        assert (out - still(batch, y)[0]).abs().mean() > 1e-3, "the borrowed offset changes the decoded image"
        assert torch.equal(borrow.apply(batch, borrow.last_params), out)
    borrow.save_statistics(tmp_path / "borrow.safetensors")
    loaded = LatentBorrow(vae).load_statistics(tmp_path / "borrow.safetensors")
    assert all(torch.equal(loaded.statistics[k], stats[k]) for k in stats)


def test_any_class_indices_an_empty_batch_and_the_input_left_alone(vae):
    x, y = labelled()
    odd = torch.tensor([5, 7, 9]).repeat_interleave(4)  # classes need not be 0..K-1
    borrow = LatentBorrow(vae, p=1.0, residual=False, generator=torch.Generator().manual_seed(0)).fit(x, odd)
    assert torch.equal(borrow.statistics["classes"], torch.tensor([5, 7, 9]))
    before = x.clone()
    out, labels = borrow(x, odd)
    assert torch.equal(x, before) and torch.equal(labels, odd)  # nothing changed in place
    reference = LatentBorrow(vae, p=1.0, residual=False, generator=torch.Generator().manual_seed(0)).fit(x, y)(x, y)[0]
    torch.testing.assert_close(out, reference)  # the same classes under other names: the same variants
    empty, labels = borrow(x[:0], odd[:0])
    assert empty.shape == x[:0].shape and labels.shape == (0,)


def test_fit_on_datasets_and_residual_mode(vae):
    x, y = labelled()
    more, their_labels = labelled(n_per_class=20, seed=1)
    from_tensors = LatentBorrow(vae).fit(x, y, unlabelled=more)
    from_datasets = LatentBorrow(vae).fit([(x[i], int(y[i])) for i in range(len(x))],
                                          unlabelled=torch.utils.data.TensorDataset(more, their_labels))
    for name in ("classes", "centres", "donors", "counts"):
        torch.testing.assert_close(from_datasets.statistics[name], from_tensors.statistics[name])
    borrow = LatentBorrow(vae, strength=0.5, p=1.0, residual=True, generator=torch.Generator().manual_seed(2)).fit(x, y)
    out, _ = borrow(x, y)
    mean, params = vae.encode(x).mean, borrow.last_params
    change = vae.decode(mean + 0.5 * (params["donor"] - params["centre"])) - vae.decode(mean)
    torch.testing.assert_close(out, (x + change).clamp(0, 1), atol=1e-5, rtol=1e-5)  # the input plus the decoded change


def test_codes_no_labelled_code_reaches_are_not_donors(vae):
    x, y = labelled()
    with torch.inference_mode():
        codes = vae.encode(x).mean
    island = -codes.mean(0) * 50 + 0.01 * torch.randn(12, 4, generator=torch.Generator().manual_seed(3))  # far from all
    model = VAE(**TINY_16).eval()
    model.load_state_dict(vae.state_dict())
    model.latent_bank = torch.cat([vae.latent_bank, island])
    pseudo, _ = propagate_labels(codes, y, model.latent_bank)
    assert (pseudo[-12:] == -1).all()
    donors = LatentBorrow(model, keep=1.0).fit(x, y).statistics["donors"]
    assert len(donors) == int((pseudo >= 0).sum()) and not any(torch.equal(d, i) for d in donors for i in island)


def test_inconsistent_statistics_files_and_bad_labels_are_refused(vae, tmp_path):
    from vae_augment.atomic import atomic_save_tensors

    x, y = labelled()
    stats = dict(LatentBorrow(vae).fit(x, y).statistics)
    stats["counts"] = stats["counts"] + 1
    atomic_save_tensors(tmp_path / "bad.safetensors", stats)
    with pytest.raises(CheckpointError, match="consistent"):
        LatentBorrow(vae).load_statistics(tmp_path / "bad.safetensors")
    with pytest.raises(ValueError, match=r"class index in \[0, K\)"):
        propagate_labels(torch.zeros(2, 3), torch.tensor([0, -1]), torch.randn(5, 3))
    with pytest.raises(ValueError, match=r"class index in \[0, K\)"):
        propagate_labels(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long), torch.randn(5, 3))


def test_a_small_bank_warns_that_it_measured_no_gain_there(vae):
    x, y = labelled()
    with pytest.warns(UserWarning, match="borrows from 60 unlabelled images"):
        LatentBorrow(vae).fit(x, y)
    model = VAE(**TINY_16).eval()
    model.load_state_dict(vae.state_dict())
    model.latent_bank = vae.latent_bank.repeat(170, 1) + 0.01 * torch.randn(10_200, 4, generator=torch.Generator().manual_seed(4))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 10,200 codes: no warning
        LatentBorrow(model).fit(x, y)
