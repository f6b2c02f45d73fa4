"""The model and its objective: posterior, KL, reparameterization, ELBO, IW-NLL, bits/dim, shapes, bad tensors."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import TINY, make_images
from torch.nn import functional as F

from vae_augment import VAE, DiagonalGaussian, bundled_names, load_vae, losses
from vae_augment.losses import standard_normal_log_prob


# ------------------------------------------------------------------ the posterior and the KL term
def test_kl_closed_form_matches_monte_carlo():
    g = torch.Generator().manual_seed(0)
    mean = torch.randn(3, 5, generator=g, dtype=torch.float64)
    logvar = torch.randn(3, 5, generator=g, dtype=torch.float64) * 0.7
    posterior = DiagonalGaussian(mean, logvar)

    # KL(q || p) = E_q[log q(z) - log p(z)], estimated from 200k reparameterized draws
    z = posterior.sample(noise=torch.randn(200_000, 3, 5, generator=g, dtype=torch.float64))
    log_ratio = posterior.log_prob(z) - standard_normal_log_prob(z)  # [N, 3]
    monte_carlo = log_ratio.mean(0)
    standard_error = log_ratio.std(0) / math.sqrt(z.shape[0])

    closed_form = posterior.kl()
    assert closed_form.shape == (3,)
    assert torch.all((closed_form - monte_carlo).abs() < 5 * standard_error), (closed_form, monte_carlo, standard_error)
    # and against torch.distributions, exactly
    reference = torch.distributions.kl_divergence(
        torch.distributions.Normal(mean, torch.exp(0.5 * logvar)), torch.distributions.Normal(0.0, 1.0)
    ).sum(-1)
    torch.testing.assert_close(closed_form, reference)


def test_kl_is_zero_only_at_the_prior():
    prior = DiagonalGaussian(torch.zeros(2, 4), torch.zeros(2, 4))
    assert torch.equal(prior.kl(), torch.zeros(2))
    shifted = DiagonalGaussian(torch.full((1, 4), 0.5), torch.zeros(1, 4))
    torch.testing.assert_close(shifted.kl(), torch.tensor([4 * 0.5 * 0.25]))


def test_gradients_flow_through_the_reparameterized_sample():
    mean = torch.randn(2, 3, requires_grad=True)
    logvar = torch.randn(2, 3, requires_grad=True)
    noise = torch.randn(2, 3)
    z = DiagonalGaussian(mean, logvar).sample(noise=noise)
    z.sum().backward()
    # z = mean + exp(logvar / 2) * eps  =>  dz/dmean = 1, dz/dlogvar = exp(logvar / 2) * eps / 2
    torch.testing.assert_close(mean.grad, torch.ones(2, 3))
    torch.testing.assert_close(logvar.grad, 0.5 * torch.exp(0.5 * logvar.detach()) * noise)


def test_reconstruction_gradient_reaches_the_encoder_through_the_sample():
    torch.manual_seed(0)
    vae = VAE(**TINY)
    x = make_images(4)
    # beta = 0 drops the KL term: the encoder gets gradient only through z = mean + std * eps
    vae.loss(x, beta=0.0)["loss"].backward()
    for name, param in vae.encoder.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, f"no gradient reached encoder.{name}"
    for name, param in vae.decoder.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, f"no gradient reached decoder.{name}"


def test_sample_repeats_with_a_generator_and_mode_is_the_mean():
    posterior = DiagonalGaussian(torch.randn(4, 3), torch.randn(4, 3))
    a = posterior.sample(torch.Generator().manual_seed(7))
    b = posterior.sample(torch.Generator().manual_seed(7))
    c = posterior.sample(torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(posterior.mode(), posterior.mean)


# ------------------------------------------------------------------ the ELBO, its weights and units
def test_elbo_is_log_likelihood_minus_kl_for_one_sample():
    torch.manual_seed(0)
    vae = VAE(**TINY).eval()
    x = make_images(5)
    elbo = vae.elbo(x, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        posterior = vae.encode(x)
        z = posterior.sample(torch.Generator().manual_seed(3))
        log_px = -F.binary_cross_entropy(vae.decode(z), x, reduction="none").flatten(1).sum(1)
        expected = log_px - posterior.kl()
    assert elbo.shape == (5,)
    torch.testing.assert_close(elbo, expected, rtol=1e-4, atol=1e-3)


def test_gaussian_likelihood_matches_torch_normal():
    x = torch.rand(2, 3, 4, 5)
    mean = torch.rand(2, 3, 4, 5)
    log_scale = torch.tensor([-1.0, 0.0, 0.5])
    expected = torch.distributions.Normal(mean, log_scale.exp().view(3, 1, 1)).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(losses.gaussian_log_likelihood(x, mean, log_scale), expected)


def test_beta_weights_only_the_kl_in_the_loss():
    log_lik = torch.tensor([-100.0, -120.0])
    kl = torch.tensor([10.0, 20.0])
    out = losses.elbo(log_lik, kl, beta=0.5)
    assert out["loss"].item() == pytest.approx(-((-100 - 5) + (-120 - 10)) / 2)
    assert out["elbo"].item() == pytest.approx(-125.0)  # the true ELBO does not depend on beta
    assert out["kl"].item() == pytest.approx(15.0)


def test_kl_warmup_ramps_linearly_to_beta():
    assert losses.kl_warmup(0, 100, beta=2.0) == 0.0
    assert losses.kl_warmup(50, 100, beta=2.0) == pytest.approx(1.0)
    assert losses.kl_warmup(100, 100, beta=2.0) == 2.0
    assert losses.kl_warmup(500, 100, beta=2.0) == 2.0
    assert losses.kl_warmup(0, 0, beta=0.7) == 0.7


def test_bits_per_dim_conversion():
    dims = 784
    # D ln 2 nats per image is exactly one bit per dimension
    assert losses.bits_per_dim(dims * math.log(2), dims) == pytest.approx(1.0)
    assert losses.bits_per_dim(80.0, dims) == pytest.approx(80.0 / (dims * math.log(2)))
    # a Gaussian density on [0, 1] is moved to 8-bit pixel values by adding D ln 256 nats
    assert losses.bits_per_dim(dims * math.log(2) - dims * math.log(256), dims, "gaussian") == pytest.approx(1.0)
    # the model uses its own C * H * W
    rgb = VAE(channels=3, image_size=[8, 12], likelihood="gaussian", **TINY)
    assert rgb.num_pixels == 3 * 8 * 12
    nats = torch.tensor([100.0, 200.0])
    torch.testing.assert_close(rgb.bits_per_dim(nats), (nats + 288 * math.log(256)) / (288 * math.log(2)))


# ------------------------------------------------------------------ importance-weighted NLL
@pytest.fixture(scope="module")
def fitted_vae():
    """A tiny VAE fitted for a few hundred steps on rectangles, so its posterior is far from the prior."""
    torch.manual_seed(0)
    vae = VAE(**TINY)
    x = make_images(64, seed=1)
    optimizer = torch.optim.Adam(vae.parameters(), lr=1e-2)
    for _ in range(150):
        optimizer.zero_grad()
        vae.loss(x)["loss"].backward()
        optimizer.step()
    return vae.eval(), x


def test_iw_nll_with_one_sample_is_the_negative_elbo_in_expectation(fitted_vae):
    vae, x = fitted_vae
    repeats = x[:4].repeat(500, 1, 1, 1)  # 500 independent draws for each of 4 images
    g = torch.Generator().manual_seed(0)
    iw1 = vae.iw_nll(repeats, k=1, generator=g).view(500, 4)
    neg_elbo = -vae.elbo(repeats, generator=g).view(500, 4)
    # both estimate -ELBO without bias (one with a Monte Carlo KL, one with the closed form)
    difference = iw1.mean(0) - neg_elbo.mean(0)
    standard_error = ((iw1.var(0) + neg_elbo.var(0)) / 500).sqrt()
    assert torch.all(difference.abs() < 5 * standard_error + 1e-3), (difference, standard_error)


def test_iw_nll_tightens_with_more_samples(fitted_vae):
    vae, x = fitted_vae
    g = torch.Generator().manual_seed(1)
    neg_elbo = -vae.elbo(x.repeat(8, 1, 1, 1), generator=g).mean()
    iw = {k: vae.iw_nll(x, k=k, generator=g).mean() for k in (1, 8, 64)}
    assert iw[64] < iw[8] < iw[1]
    assert iw[64] < neg_elbo
    assert torch.isfinite(iw[64])


def test_iw_nll_rejects_k_below_one(fitted_vae):
    vae, x = fitted_vae
    with pytest.raises(ValueError, match="k must be >= 1, got 0"):
        vae.iw_nll(x, k=0)


def test_anomaly_score_is_deterministic_and_ranks_outliers_higher(fitted_vae):
    vae, x = fitted_vae
    noise = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    typical = vae.anomaly_score(x[:4])
    assert torch.equal(typical, vae.anomaly_score(x[:4]))
    assert vae.anomaly_score(noise).min() > typical.max()
    score, reconstruction = vae.score_and_reconstruct(x[:4])  # the app's one-pass variant agrees
    torch.testing.assert_close(score, typical)
    torch.testing.assert_close(reconstruction, vae.reconstruct(x[:4]))


# ------------------------------------------------------------------ shapes
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [28, 32, 64, [20, 36], [36, 9]], ids=str)
def test_shapes(channels, size):
    vae = VAE(channels=channels, image_size=size, likelihood="bernoulli" if channels == 1 else "gaussian", **TINY).eval()
    height, width = (size, size) if isinstance(size, int) else size
    x = make_images(3, channels, (height, width))
    posterior = vae.encode(x)
    assert posterior.mean.shape == posterior.std.shape == (3, 4)
    assert posterior.kl().shape == (3,)
    images = vae.decode(posterior.sample())
    assert images.shape == (3, channels, height, width)
    assert images.min() >= 0 and images.max() <= 1
    assert vae.reconstruct(x).shape == x.shape
    assert vae.elbo(x).shape == vae.iw_nll(x, k=2).shape == vae.anomaly_score(x).shape == (3,)
    assert vae.sample(5).shape == (5, channels, height, width)
    assert vae.interpolate(x[0], x[1], steps=4).shape == (4, channels, height, width)
    assert vae.interpolate(x[:2], x[1:], steps=3).shape == (2, 3, channels, height, width)


def test_largest_supported_size():
    vae = VAE(channels=3, image_size=128, likelihood="gaussian", **TINY)
    assert vae.decode(torch.zeros(2, 4)).shape == (2, 3, 128, 128)


def test_prior_samples_repeat_with_a_generator():
    vae = VAE(**TINY).eval()
    a = vae.sample(3, generator=torch.Generator().manual_seed(0))
    b = vae.sample(3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    assert not torch.equal(a[0], a[1])
    cold = vae.sample(3, temperature=0.0)
    assert torch.equal(cold, vae.decode(torch.zeros(3, 4)))


def test_interpolation_starts_at_the_first_reconstruction_and_ends_at_the_second():
    vae = VAE(**TINY).eval()
    x = make_images(2)
    for method in ("linear", "slerp"):
        path = vae.interpolate(x[0], x[1], steps=5, method=method)
        torch.testing.assert_close(path[0], vae.reconstruct(x[:1])[0])
        torch.testing.assert_close(path[-1], vae.reconstruct(x[1:])[0])
    with pytest.raises(ValueError, match="steps must be >= 2, got 1"):
        vae.interpolate(x[0], x[1], steps=1)


# ------------------------------------------------------------------ bad input
BAD_TENSORS = {
    "3-channels": (lambda x: x.expand(-1, 3, -1, -1), ValueError, r"x must have shape \[B, 1, 28, 28\] for this model, got \(2, 3, 28, 28\)"),
    "wrong-height": (lambda x: x[:, :, :20], ValueError, r"must have shape \[B, 1, 28, 28\] for this model, got \(2, 1, 20, 28\)"),
    "3-dims": (lambda x: x[0], ValueError, r"x must have 4 dimensions \[B, C, H, W\], got shape \(1, 28, 28\)"),
    "5-dims": (lambda x: x[None], ValueError, r"x must have 4 dimensions"),
    "uint8": (lambda x: x.mul(255).to(torch.uint8), TypeError, r"must be a float tensor in \[0, 1\], got dtype torch.uint8 \(divide uint8"),
    "int64": (lambda x: x.long(), TypeError, r"must be a float tensor .* got dtype torch.int64"),
    "nan": (lambda x: x.index_put((torch.tensor([1]),), torch.tensor(float("nan"))), ValueError, "NaN or infinite"),
    "inf": (lambda x: x.index_put((torch.tensor([0]),), torch.tensor(float("inf"))), ValueError, "NaN or infinite"),
    "-inf": (lambda x: -x / 0.0, ValueError, "NaN or infinite"),
    "numpy": (lambda x: x.numpy(), TypeError, r"x must be a torch.Tensor of shape \[B, C, H, W\], got ndarray"),
}
# reconstruct and anomaly_score take images of any size and channel count (converted by to_model)
ANY_SIZE = {k: v for k, v in BAD_TENSORS.items() if k not in ("3-channels", "wrong-height", "3-dims", "5-dims", "numpy")}


@pytest.mark.parametrize(("make_bad", "error", "message"), list(BAD_TENSORS.values()), ids=list(BAD_TENSORS))
@pytest.mark.parametrize("method", ["encode", "elbo", "iw_nll", "loss"])
def test_bad_tensors_raise_a_clear_error(make_bad, error, message, method):
    vae = VAE(**TINY)
    x = make_bad(make_images(2))
    with pytest.raises(error, match=message):
        getattr(vae, method)(x)


@pytest.mark.parametrize(("make_bad", "error", "message"), list(ANY_SIZE.values()), ids=list(ANY_SIZE))
@pytest.mark.parametrize("method", ["anomaly_score", "reconstruct"])
def test_bad_values_raise_a_clear_error_on_images_of_any_size(make_bad, error, message, method):
    vae = VAE(**TINY)
    x = make_bad(make_images(2))
    with pytest.raises(error, match=message):
        getattr(vae, method)(x)


def test_images_of_another_size_and_channels_are_converted_for_the_model():
    vae = VAE(**TINY)
    x = make_images(2)
    rgb = x.expand(-1, 3, -1, -1)
    torch.testing.assert_close(vae.anomaly_score(rgb), vae.anomaly_score(x))  # gray -> RGB -> gray is exact
    big = torch.nn.functional.interpolate(x, size=(56, 40), mode="nearest")
    out = vae.reconstruct(big)
    assert out.shape == (2, 1, 56, 40)  # back at the input's size
    torch.testing.assert_close(vae.to_model(big), vae.to_model(big).clamp(0, 1))
    assert vae.to_model(big).shape == (2, 1, 28, 28)


def test_bad_latents_raise_a_clear_error():
    vae = VAE(**TINY)
    with pytest.raises(ValueError, match=r"z must have shape \[B, 4\], got \(2, 5\)"):
        vae.decode(torch.zeros(2, 5))
    with pytest.raises(ValueError, match=r"z must have shape \[B, 4\], got \(4,\)"):
        vae.decode(torch.zeros(4))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"channels": 2}, "channels must be 1 or 3, got 2"),
        ({"image_size": 4}, r"image_size must be an int or \[height, width\] with sides in \[8, 512\], got 4"),
        ({"image_size": [28, 28, 28]}, "image_size must be"),
        ({"likelihood": "poisson"}, r"likelihood must be one of \('bernoulli', 'gaussian'\), got 'poisson'"),
        ({"widths": []}, "widths must be a non-empty list of positive ints"),
        ({"latent_dim": 0}, "latent_dim and hidden must be positive"),
        ({"beta": -1.0}, "beta must be >= 0, got -1.0"),
        ({"beta": float("nan")}, "beta must be >= 0"),
    ],
)
def test_bad_constructor_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        VAE(**{**TINY, **kwargs})


# ------------------------------------------------------------------ the bundled MNIST checkpoint
@pytest.fixture(scope="module")
def bundled_mnist():
    if "mnist" not in bundled_names():
        pytest.skip("checkpoints/mnist is not there (yet)")
    return load_vae("mnist")


def test_bundled_mnist_checkpoint_is_small_and_documented(bundled_mnist):
    from vae_augment.checkpoint import bundled_dir

    folder = bundled_dir() / "mnist"
    assert (folder / "model.safetensors").stat().st_size < 10 * 2**20
    assert bundled_mnist.channels == 1 and bundled_mnist.image_size == (28, 28)
    assert bundled_mnist.likelihood == "bernoulli"
    card = (folder / "README.md").read_text()
    assert "vae-augment train" in card  # the exact training command


def test_bundled_mnist_test_neg_elbo_is_at_most_95_nats(bundled_mnist, mnist_root):
    import torchvision

    test = torchvision.datasets.MNIST(str(mnist_root), train=False, download=False)
    x = test.data[:2000].unsqueeze(1).float().div(255.0)
    with torch.no_grad():
        posterior = bundled_mnist.encode(x)
        z = posterior.sample(torch.Generator().manual_seed(0))
        reconstruction = F.binary_cross_entropy(bundled_mnist.decode(z), x, reduction="none").flatten(1).sum(1)
        neg_elbo = (reconstruction + posterior.kl()).mean().item()
        library = -bundled_mnist.elbo(x, generator=torch.Generator().manual_seed(0)).mean().item()
    assert neg_elbo <= 95.0, f"test -ELBO {neg_elbo:.2f} nats/image on the first 2000 MNIST test images"
    assert library == pytest.approx(neg_elbo, rel=0.01)  # vae.elbo (from logits) agrees with encode/decode


@pytest.mark.parametrize("config", [
    dict(),  # the bundled MNIST shape: 28 -> 14 -> 7
    dict(channels=3, image_size=[20, 27], widths=(8, 16, 8), latent_dim=5, hidden=12),  # odd sizes: output_padding 0
    dict(image_size=13, widths=(3,), latent_dim=2, hidden=4),
])
def test_inference_path_matches_the_modules(config):
    """CPU batches without autograd take the rearranged path (channels-last throughout, taps for the last
    transposed convolution); it computes what the modules compute, and follows the weights when they change."""
    torch.manual_seed(0)
    vae = VAE(**config).eval()
    x = torch.rand(32, vae.channels, *vae.image_size)
    with torch.enable_grad():
        mean, logvar = vae.encoder(x)
        logits = vae.decoder(mean)
    with torch.inference_mode():
        fast_mean, fast_logvar = vae.encoder(x)
        fast_logits = vae.decoder(mean.detach())
    assert torch.allclose(fast_mean, mean, atol=1e-5) and torch.allclose(fast_logvar, logvar, atol=1e-5)
    assert fast_logits.shape == logits.shape and fast_logits.is_contiguous()
    assert torch.allclose(fast_logits, logits, atol=1e-4)
    with torch.no_grad():
        for parameter in vae.parameters():
            parameter.mul_(1.5)  # in place, as an optimizer step or load_state_dict does
        changed = vae.decoder(mean.detach())
    with torch.enable_grad():
        expected = vae.decoder(mean.detach())
    assert torch.allclose(changed, expected, atol=1e-4) and not torch.allclose(changed, fast_logits, atol=1e-3)
