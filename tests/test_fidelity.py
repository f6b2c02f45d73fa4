"""Do no harm: held-out reconstruction fidelity is measured by train/evaluate and VAEAugment warns on a blurry checkpoint."""

from __future__ import annotations

import json
import re
import warnings

import pytest
import torch
from conftest import TINY_16
from torch.utils.data import TensorDataset

from vae_augment import VAE, LatentBorrow, LatentMix, VAEAugment, evaluate, train
from vae_augment.policy import CAREFUL_STRENGTH, DEFAULT_STRENGTH, FIDELITY_WARNING


def images(n: int = 40, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, 16, 16, generator=torch.Generator().manual_seed(seed))


def test_evaluate_reports_the_share_of_variation_reconstructions_keep():
    torch.manual_seed(0)
    vae = VAE(**TINY_16).eval()
    x = images()
    figures = evaluate(vae, TensorDataset(x, torch.zeros(len(x))), batch_size=16)  # several batches, summed exactly
    with torch.no_grad():
        recon = vae.reconstruct(x)
    expected = 1 - ((recon - x).square().sum() / (x - x.mean(0)).square().sum()).item()
    assert figures["reconstruction_r2"] == pytest.approx(expected, rel=1e-5, abs=1e-6)
    assert figures["reconstruction_mae"] == pytest.approx((recon - x).abs().mean().item(), rel=1e-5)
    assert figures["reconstruction_r2"] < 0.5  # an untrained model keeps little of the images' variation


def test_train_stores_the_fidelity_with_the_checkpoint(tmp_path):
    x = images(64)
    train(TensorDataset(x, torch.zeros(64)), tmp_path / "run", test_data=TensorDataset(images(16, 1), torch.zeros(16)),
          epochs=1, batch_size=32, latent_dim=4, widths=(4, 8), hidden=16, iw_k=0, progress=False, log=False)
    test = json.loads((tmp_path / "run" / "metrics.json").read_text())["test"]
    assert set(test) >= {"reconstruction_r2", "reconstruction_mae"} and test["reconstruction_r2"] < 1


@pytest.mark.parametrize("residual", [False, True])
def test_a_blurry_checkpoint_gets_a_warning(residual):
    vae = VAE(**TINY_16)
    vae.metrics = {"test": {"reconstruction_r2": 0.24}}
    with pytest.warns(UserWarning, match=r"reconstructs its held-out images poorly \(reconstruction_r2 0.24, below 0.7") as caught:
        augment = VAEAugment(vae, residual=residual)
    assert ("use residual=True" in str(caught[0].message)) is not residual
    assert augment.residual is residual  # an explicit choice is kept


def test_the_default_is_the_residual_mode_and_a_blurry_checkpoint_gets_care():
    vae = VAE(**TINY_16)
    vae.metrics = {"test": {"reconstruction_r2": 0.24}}
    with pytest.warns(UserWarning, match="residual=True, p=0.5 and strength=0.1 were chosen for you"):
        blurry = VAEAugment(vae)
    assert blurry.residual and blurry.p == 0.5 and blurry.strength == CAREFUL_STRENGTH
    with pytest.warns(UserWarning, match="residual=True and p=0.5 were chosen for you"):
        assert VAEAugment(vae, strength=0.3).strength == 0.3  # an explicit strength is kept
    x = torch.rand(3, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(VAEAugment(vae, strength=0.0, residual=None)(x), x)  # residual at strength 0: the input itself
    vae.metrics = {"test": {"reconstruction_r2": 0.9}}  # sharp: the residual mode still, at the full strength on every image
    default = VAEAugment(vae)
    assert default.residual and default.strength == DEFAULT_STRENGTH and default.p == 1.0
    vae.metrics = {}
    assert VAEAugment(vae).residual  # unmeasured (older checkpoints, diffusers backbones): the same rule
    assert not VAEAugment(vae, residual=False).residual  # the plain mode when asked for
    assert not LatentBorrow(vae).residual and not LatentMix(vae).residual  # the label-aware transforms: plain, as measured


@pytest.mark.parametrize("metrics", [{"test": {"reconstruction_r2": FIDELITY_WARNING + 0.2}}, {}, {"test": {}}],
                         ids=["sharp", "no-metrics", "older-checkpoint"])
def test_a_sharp_or_unmeasured_checkpoint_gets_none(metrics):
    vae = VAE(**TINY_16)
    vae.metrics = metrics
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        VAEAugment(vae)


def test_the_bundled_checkpoint_is_sharp_enough():
    from vae_augment import bundled_names, load_vae

    if "mnist" not in bundled_names():
        pytest.skip("needs the bundled checkpoint")
    assert load_vae("mnist").metrics["test"]["reconstruction_r2"] > FIDELITY_WARNING


@pytest.mark.parametrize("fidelity", [-6.5, -0.01, 0.0])
def test_a_negative_fidelity_is_said_as_a_number_not_a_percentage(fidelity):
    """reconstruction_r2 is below 0 for reconstructions worse than the mean image: the warning gives the value and
    the threshold, and no share of anything (no "-650%")."""
    vae = VAE(**TINY_16)
    vae.metrics = {"test": {"reconstruction_r2": fidelity}}
    with pytest.warns(UserWarning) as caught:
        VAEAugment(vae)
    message = str(caught[0].message)
    assert f"reconstruction_r2 {fidelity:.2f}, below 0.7" in message
    assert "%" not in message and not re.search(r"-\d+(\.\d+)?%", message)


def test_every_adapter_warns_on_a_blurry_checkpoint():
    from vae_augment import LatentMix

    vae = VAE(**TINY_16)
    vae.metrics = {"test": {"reconstruction_r2": 0.3}}
    with pytest.warns(UserWarning, match=r"reconstruction_r2 0\.30"):
        LatentMix(vae)
    pytest.importorskip("albumentations")
    from vae_augment import AlbuVAEAugment

    with pytest.warns(UserWarning, match=r"reconstruction_r2 0\.30"):
        assert AlbuVAEAugment(vae).strength == CAREFUL_STRENGTH  # its p is albumentations' own; strength as for VAEAugment


def test_a_checkpoint_trained_on_few_images_gets_careful_defaults():
    vae = VAE(**TINY_16)
    vae.metrics = {"train_images": 1258, "test": {"reconstruction_r2": 0.86}}  # sharp enough, but trained on little data
    with pytest.warns(UserWarning, match=r"trained on 1,258 images \(fewer than 10,000\).*residual=True, p=0.5 and strength=0.1 were chosen"):
        careful = VAEAugment(vae)
    assert careful.residual and careful.p == 0.5
    with pytest.warns(UserWarning, match=r"p=0.5 and strength=0.1 were chosen for you \(half of the images stay real; variants stay close to your images\); use residual=True"):
        explicit = VAEAugment(vae, residual=False)
    assert not explicit.residual and explicit.p == 0.5
    with pytest.warns(UserWarning, match="trained on 1,258 images") as caught:
        given = VAEAugment(vae, residual=True, p=1.0, strength=0.2)
    assert given.residual and given.p == 1.0 and given.strength == 0.2 and "chosen for you" not in str(caught[0].message)  # explicit choices kept
    x = torch.rand(64, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    changed = (careful(x) != x).flatten(1).any(1)
    assert 16 < int(changed.sum()) < 48  # about half of the images are variants, the rest stay real
    vae.metrics = {"train_images": 60_000, "test": {"reconstruction_r2": 0.91}}  # MNIST-sized: as before
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        default = VAEAugment(vae)
    assert default.residual and default.p == 1.0 and default.strength == DEFAULT_STRENGTH
    vae.metrics = {"test": {"reconstruction_r2": 0.24}}  # blurry: the same care
    with pytest.warns(UserWarning, match=r"reconstruction_r2 0\.24"):
        assert VAEAugment(vae).p == 0.5
    with pytest.raises(ValueError, match=r"p must be a probability in \[0, 1\], got 1.5 \(or None: chosen from the checkpoint\)"):
        VAEAugment(vae, p=1.5)
