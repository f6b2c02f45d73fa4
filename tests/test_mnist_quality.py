"""Behaviour that depends on training: the bundled MNIST checkpoint on real digits (skips without MNIST)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vae_augment import VAEAugment, bundled_names, load_vae

pytestmark = pytest.mark.skipif("mnist" not in bundled_names(), reason="bundled checkpoint checkpoints/mnist not present")


def mnist(root, train):
    import torchvision

    ds = torchvision.datasets.MNIST(root, train=train, download=False)
    return ds.data.unsqueeze(1).float().div(255), ds.targets.clone()


def small_classifier(x, y, steps=800, seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
                          nn.MaxPool2d(2), nn.Flatten(), nn.Linear(32 * 7 * 7, 64), nn.ReLU(), nn.Linear(64, 10))
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (128,), generator=g)
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def test_default_augmentation_keeps_the_digit_and_changes_it_visibly(mnist_root):
    x_train, y_train = mnist(mnist_root, train=True)
    x_test, y_test = mnist(mnist_root, train=False)
    classifier = small_classifier(x_train, y_train)
    x, y = x_test[:500], y_test[:500]
    with torch.no_grad():
        assert (classifier(x).argmax(1) == y).float().mean() > 0.96, "the judge itself must be reliable"
        augment = VAEAugment(load_vae("mnist"), generator=torch.Generator().manual_seed(0))
        variants = torch.cat([augment(x) for _ in range(2)])
        kept = (classifier(variants).argmax(1) == y.repeat(2)).float().mean().item()
    change = (variants - x.repeat(2, 1, 1, 1)).abs().mean().item()
    assert kept >= 0.95, f"default settings keep the class for only {kept:.3f} of variants"
    assert change >= 0.02, f"default settings change digits by only {change:.4f} on average"


def test_bundled_checkpoint_meets_its_elbo_target(mnist_root):
    x_test, _ = mnist(mnist_root, train=False)
    vae = load_vae("mnist")
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        elbo = torch.cat([vae.elbo(x_test[i : i + 1000], generator=generator) for i in range(0, 10_000, 1000)])
    assert -elbo.mean().item() <= 95.0
    reported = vae.metrics["test"]["neg_elbo_nats"]
    assert abs(-elbo.mean().item() - reported) < 0.5, "the model card's figure is reproducible from encode/decode"
