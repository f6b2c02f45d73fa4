"""The learned mixture prior: its density, the ELBO and NLL under it, `fit_prior`, its samples, its files, `vae-augment fit-prior`."""

from __future__ import annotations

import json
import math
import shlex

import pytest
import torch
from conftest import TINY, TINY_ARGS, make_images, write_pngs
from torch.utils.data import TensorDataset

from vae_augment import VAE, CheckpointError, VAEAugment, augment_batch, fit_prior, load_vae, train
from vae_augment.cli import main
from vae_augment.losses import mixture_log_prob, standard_normal_log_prob


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny VAE trained for a few epochs on 64 rectangles (the images returned with it)."""
    images = make_images(64, 1, (28, 28), seed=0)
    data = TensorDataset(images, torch.zeros(64, dtype=torch.long))
    out = tmp_path_factory.mktemp("prior") / "run"
    vae = train(data, out, test_data=TensorDataset(make_images(16, seed=1), torch.zeros(16)), epochs=4, batch_size=16, lr=5e-3,
                iw_k=0, seed=0, device="cpu", progress=False, log=False, **TINY)
    return vae, images, out


def unit_mixture(latent_dim: int, components: int = 1) -> VAE:
    """A VAE whose mixture prior is ``components`` copies of N(0, I): the standard normal prior, written as a mixture."""
    vae = VAE(**{**TINY, "latent_dim": latent_dim}, prior_components=components)
    with torch.no_grad():
        vae.prior_loc.zero_(), vae.prior_log_scale.zero_(), vae.prior_logits.normal_()
    return vae


def test_mixture_log_prob_is_the_log_of_the_weighted_sum_of_densities():
    g = torch.Generator().manual_seed(0)
    logits, loc, log_scale = torch.randn(5, generator=g), torch.randn(5, 3, generator=g), 0.3 * torch.randn(5, 3, generator=g)
    z = torch.randn(2, 7, 3, generator=g)
    weights = torch.softmax(logits, 0)
    density = sum(weights[k] * torch.distributions.Normal(loc[k], log_scale[k].exp()).log_prob(z).sum(-1).exp() for k in range(5))
    assert mixture_log_prob(z, logits, loc, log_scale).shape == (2, 7)
    assert torch.allclose(mixture_log_prob(z, logits, loc, log_scale), density.log(), atol=1e-5)


def test_a_mixture_of_standard_normals_gives_the_standard_prior_figures():
    plain, mixture = VAE(**TINY), unit_mixture(TINY["latent_dim"], components=3)
    mixture.load_state_dict(plain.state_dict(), strict=False)
    x = make_images(6, seed=2)
    z = torch.randn(4, 6, TINY["latent_dim"])
    assert torch.allclose(mixture.prior_log_prob(z), standard_normal_log_prob(z), atol=1e-5)
    nll = [vae.iw_nll(x, k=8, generator=torch.Generator().manual_seed(1)) for vae in (plain, mixture)]
    assert torch.allclose(*nll, atol=1e-3)
    # the mixture's one-sample KL estimate averages to the closed form
    posterior = mixture.encode(x)
    samples = torch.stack([posterior.sample(torch.Generator().manual_seed(s)) for s in range(4000)])
    estimate = torch.stack([mixture.kl(posterior, s) for s in samples]).mean(0)
    assert torch.allclose(estimate, posterior.kl(), atol=0.1)
    assert torch.equal(plain.kl(posterior, samples[0]), posterior.kl())  # the standard prior keeps the closed form


def test_fit_prior_raises_the_elbo_and_keeps_encoder_and_decoder(trained):
    vae, images, _ = trained
    fitted = fit_prior(vae, TensorDataset(images, torch.zeros(64)), components=16, steps=300, batch_size=128, seed=0)
    assert fitted is not vae and vae.prior_components == 0 and fitted.prior_components == 16
    before = {k: v for k, v in vae.state_dict().items()}
    after = fitted.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # encoder, decoder and statistics as they were
    assert set(after) - set(before) == {"prior_logits", "prior_loc", "prior_log_scale"}
    prior = fitted.metrics["prior"]
    assert prior["components"] == 16 and prior["codes"] == 64
    assert prior["cross_entropy_nats"] < prior["standard_normal_cross_entropy_nats"] - 0.5
    elbo = [torch.stack([m.elbo(images, generator=torch.Generator().manual_seed(s)) for s in range(20)]).mean() for m in (vae, fitted)]
    assert elbo[1] > elbo[0] + 0.5
    assert fitted.iw_nll(images, k=32, generator=torch.Generator().manual_seed(0)).mean() < \
        vae.iw_nll(images, k=32, generator=torch.Generator().manual_seed(0)).mean()
    again = fit_prior(vae, TensorDataset(images, torch.zeros(64)), components=16, steps=300, batch_size=128, seed=0)
    assert torch.equal(again.prior_loc, fitted.prior_loc)  # seeded: the fit repeats
    binary = fit_prior(vae, TensorDataset(images, torch.zeros(64)), components=4, steps=2, binarize=True, passes=3)
    assert binary.metrics["prior"]["codes"] == 3 * 64 and binary.metrics["prior"]["binarize"] is True


def test_prior_samples_follow_the_mixture_and_repeat_with_a_generator():
    vae = unit_mixture(2, components=2)
    with torch.no_grad():
        vae.prior_loc.copy_(torch.tensor([[10.0, 0.0], [-10.0, 0.0]]))
        vae.prior_log_scale.fill_(math.log(0.5))
        vae.prior_logits.copy_(torch.tensor([math.log(3.0), 0.0]))  # weights 3/4 and 1/4
    noise = torch.randn(4000, 2, generator=torch.Generator().manual_seed(0))
    z = vae.prior_sample(noise, torch.Generator().manual_seed(1))
    first = z[:, 0] > 0
    assert abs(first.float().mean().item() - 0.75) < 0.03
    assert torch.allclose(z[first, 0].mean(), torch.tensor(10.0), atol=0.05) and abs(z[first, 1].std().item() - 0.5) < 0.03
    assert torch.equal(z, vae.prior_sample(noise, torch.Generator().manual_seed(1)))
    assert vae.prior_sample(noise[:0]).shape == (0, 2)
    images = vae.sample(3, generator=torch.Generator().manual_seed(2))
    assert images.shape == (3, 1, 28, 28) and torch.equal(images, vae.sample(3, generator=torch.Generator().manual_seed(2)))


def test_training_on_from_a_fitted_prior_trains_the_prior_with_the_model(trained, tmp_path):
    vae, images, _ = trained
    data, held_out = TensorDataset(images, torch.zeros(64)), TensorDataset(make_images(16, seed=1), torch.zeros(16))
    fitted = fit_prior(vae, data, components=8, steps=100, batch_size=64, seed=0)
    fitted.save_pretrained(tmp_path / "mog")
    tuned = train(data, tmp_path / "tuned", test_data=held_out, init=tmp_path / "mog", epochs=2, batch_size=16, lr=1e-3, iw_k=0,
                  seed=0, device="cpu", progress=False, log=False)
    assert tuned.prior_components == 8 and tuned._hub_mixin_config == fitted._hub_mixin_config
    assert not torch.equal(tuned.prior_loc, fitted.prior_loc) and not torch.equal(tuned.decoder.fc[0].weight, fitted.decoder.fc[0].weight)
    assert tuned.metrics["training"]["init"] == str(tmp_path / "mog")
    reloaded = load_vae(tmp_path / "tuned")
    assert reloaded.prior_components == 8 and torch.equal(reloaded.prior_loc, tuned.prior_loc)
    # a few steps at a small rate from the fitted model keep it near its ELBO, far from a fresh model's
    elbo = [torch.stack([m.elbo(images, generator=torch.Generator().manual_seed(s)) for s in range(10)]).mean() for m in (fitted, tuned)]
    assert elbo[1] > elbo[0] - 5
    with pytest.raises(ValueError, match="init has latent_dim=.*a run from init keeps its architecture"):
        train(data, tmp_path / "bad", test_data=held_out, init=fitted, latent_dim=fitted.latent_dim + 1, epochs=1, device="cpu",
              progress=False, log=False)
    with pytest.raises(ValueError, match=r"init was trained on 1-channel \[28, 28\] images; this data has 1-channel \[16, 16\] images \(resize and convert them to its shape: image_size=28, channels=1"):
        small = TensorDataset(make_images(8, 1, (16, 16)), torch.zeros(8))
        train(small, tmp_path / "bad", test_data=small, init=fitted, epochs=1, device="cpu", progress=False, log=False)
    assert not (tmp_path / "bad").exists()


def test_prior_mode_augmentation_draws_the_components_with_its_generator():
    """VAEAugment(mode="prior") on a mixture-prior model: the same generator seed gives the same images whatever
    the global RNG did, replay repeats the components, and same_on_batch gives every image the same draw."""
    vae = unit_mixture(TINY["latent_dim"], components=2)
    with torch.no_grad():
        vae.prior_loc.copy_(torch.stack([torch.full((TINY["latent_dim"],), 3.0), torch.full((TINY["latent_dim"],), -3.0)]))
        vae.prior_log_scale.fill_(math.log(0.1))
    x = make_images(32, seed=3)
    runs = []
    for global_seed in (0, 1):
        torch.manual_seed(global_seed)
        augment = VAEAugment(vae, mode="prior", strength=1.0, p=1.0, residual=False, generator=torch.Generator().manual_seed(4))
        runs.append(augment(x))
        assert torch.equal(augment.replay(x), runs[-1])
    assert torch.equal(*runs)
    prior = augment.last_params["prior"]
    assert set((prior[:, 0] > 0).tolist()) == {True, False}  # both components drawn, at their locations
    assert torch.allclose(prior.abs().mean(1), torch.tensor(3.0), atol=0.3)
    same = VAEAugment(vae, mode="prior", strength=1.0, p=1.0, residual=False, same_on_batch=True,
                      generator=torch.Generator().manual_seed(5))(x)
    assert torch.allclose(same, same[:1].expand_as(same))
    with pytest.raises(ValueError, match="prior must have the shape of noise"):
        augment_batch(vae, x, torch.randn(32, TINY["latent_dim"]), mode="prior", prior=torch.randn(31, TINY["latent_dim"]))


def test_the_prior_travels_in_the_checkpoint(trained, tmp_path):
    vae, images, _ = trained
    fitted = fit_prior(vae, TensorDataset(images, torch.zeros(64)), components=8, steps=20, batch_size=64)
    fitted.save_pretrained(tmp_path / "m")
    assert json.loads((tmp_path / "m" / "config.json").read_text())["prior_components"] == 8
    loaded = load_vae(tmp_path / "m")
    assert loaded.prior_components == 8 and torch.equal(loaded.prior_loc, fitted.prior_loc)
    assert loaded.metrics["prior"] == fitted.metrics["prior"]
    # a config that claims a prior its weights lack is explained, key by key
    vae.save_pretrained(tmp_path / "plain")
    config = json.loads((tmp_path / "plain" / "config.json").read_text())
    (tmp_path / "plain" / "config.json").write_text(json.dumps({**config, "prior_components": 8}))
    with pytest.raises(CheckpointError, match="prior_components: config.json says prior_components=8, the weights hold prior_components=0"):
        load_vae(tmp_path / "plain")


def test_bad_prior_arguments_are_refused(trained):
    vae, images, _ = trained
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="prior_components must be an int in"):
            VAE(**TINY, prior_components=bad)
    data = TensorDataset(images, torch.zeros(64))
    with pytest.raises(ValueError, match="components must be an int >= 1, got 0"):
        fit_prior(vae, data, components=0)
    with pytest.raises(ValueError, match="passes must be an int >= 1, got 0"):
        fit_prior(vae, data, passes=0)
    with pytest.raises(ValueError, match="lr must be > 0"):
        fit_prior(vae, data, lr=0.0)
    with pytest.raises(ValueError, match="the training data is empty"):
        fit_prior(vae, TensorDataset(images[:0], torch.zeros(0)))
    with pytest.raises(TypeError, match="fit_prior needs a model whose prior can be replaced"):
        fit_prior(torch.nn.Linear(2, 2), data)
    with pytest.raises(ValueError, match="binarize=True needs a bernoulli model"):
        fit_prior(VAE(**TINY, likelihood="gaussian"), data, binarize=True)


def test_cli_fit_prior_writes_a_new_reevaluated_checkpoint(tmp_path, capsys):
    data = write_pngs(tmp_path / "images", make_images(40, 1, (28, 28)))
    run = tmp_path / "run"
    assert main(["train", "--dataset", str(data), "--out", str(run), "--epochs", "2", "--batch-size", "8", *TINY_ARGS,
                 "--iw-k", "4", "--device", "cpu", "--quiet"]) == 0
    source = {p.name: p.read_bytes() for p in run.iterdir()}
    argv = ["fit-prior", "--checkpoint", str(run), "--dataset", str(data), "--out", str(tmp_path / "mog"), "--components", "8",
            "--steps", "100", "--batch-size", "64", "--iw-k", "4", "--device", "cpu", "--quiet"]
    capsys.readouterr()
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "8-component prior" in printed and "held-out -ELBO" in printed and "binarized IW-NLL (k=4)" in printed
    metrics = json.loads((tmp_path / "mog" / "metrics.json").read_text())
    assert metrics["prior_command"] == "vae-augment " + shlex.join(argv)
    card = (tmp_path / "mog" / "README.md").read_text()
    assert "prior fitted with:" in card and metrics["prior_command"] in card
    assert metrics["command"] == json.loads(source["metrics.json"])["command"]  # the training command is kept
    assert metrics["prior"]["components"] == 8 and metrics["test"]["iw_k"] == 4
    assert metrics["test_before_prior"] == json.loads(source["metrics.json"])["test"]
    assert len(metrics["train_anomaly_percentiles"]) == 101
    assert load_vae(tmp_path / "mog").prior_components == 8
    assert {p.name: p.read_bytes() for p in run.iterdir()} == source  # the source checkpoint is untouched
    # an existing folder is refused, and left as it was
    assert main([*argv[:6], str(run), *argv[7:]]) == 2
    assert "exists and is not an empty folder" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in run.iterdir()} == source


def test_train_init_refuses_a_model_that_is_not_a_conv_vae():
    """train(init=...) starts only from the kind train() trains: a diffusers backbone is refused by the loader."""
    from conftest import tiny_kl
    from vae_augment.loader import load_trainable

    with pytest.raises(TypeError, match="init must be a conv VAE"):
        load_trainable(tiny_kl())
