"""The classic augmentations of the accuracy benchmarks: torchvision's RandomAffine and ElasticTransform
with one draw per image, done for the whole batch at once.

    python benchmarks/classic.py [--images 2048] [--batch 64] [--threads 1]

torchvision's v2 transforms draw one set of parameters per call, so one draw per image means a Python loop
over the batch; these classes draw a parameter per image and warp the whole batch with one
``affine_grid``/``grid_sample``, which is why the benchmarks keep them. Run as a script, this module
measures how much faster they are than the loop over torchvision's own transforms on MNIST-sized images
(batches of 64, one thread, as a benchmark worker runs them), and prints the mean absolute pixel change
of each side as a check that they draw alike, and how far the elastic transform's blur (two matrices)
is from torchvision's ``gaussian_blur``. On the shared 2-core machine the benchmarks ran on (2,048
digits, 2026-12-07): 16x for the affine (65,700 against 4,000 images/s) and 54x for the elastic transform
(41,400 against 770; it was 3.5x while the blur was torchvision's 33 x 33 convolution), with the same mean
change (0.124 / 0.127 and 0.058 / 0.058) and the blur within 5e-7 of torchvision's; the numbers move with
the machine's load.
"""

from __future__ import annotations

import argparse

from common import DEFAULT_ROOT, mnist, rate  # noqa: I001  (sets OMP_WAIT_POLICY before torch loads)
import torch
from torch.nn import functional as F


class RandomAffineBatch:
    """v2.RandomAffine(degrees, translate, scale, shear) with one draw per image, on a batch ``[B, C, H, W]``."""

    def __init__(self, degrees=15.0, translate=0.1, scale=(0.9, 1.1), shear=10.0):
        self.degrees, self.translate, self.scale, self.shear = degrees, translate, scale, shear

    def __call__(self, x, y):
        n = x.shape[0]
        u = torch.rand(n, 5)
        angle = torch.deg2rad((u[:, 0] * 2 - 1) * self.degrees)
        shear = torch.deg2rad((u[:, 1] * 2 - 1) * self.shear)
        scale = self.scale[0] + u[:, 2] * (self.scale[1] - self.scale[0])
        tx, ty = (u[:, 3] * 2 - 1) * self.translate * 2, (u[:, 4] * 2 - 1) * self.translate * 2  # grid units span 2
        cos, sin = torch.cos(angle), torch.sin(angle)
        a = torch.stack([torch.stack([cos, -sin + cos * torch.tan(shear)], 1), torch.stack([sin, cos + sin * torch.tan(shear)], 1)], 1)
        inverse = torch.linalg.inv(a * scale.view(-1, 1, 1))
        theta = torch.cat([inverse, -inverse @ torch.stack([tx, ty], 1).unsqueeze(2)], 2)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class ElasticBatch:
    """v2.ElasticTransform(alpha, sigma) with one displacement field per image: uniform noise in
    [-1, 1] blurred by a Gaussian of ``sigma`` pixels, times alpha / side, added to the sampling
    grid (torchvision's construction, batched). The blur is torchvision's ``gaussian_blur`` (its kernel,
    reflect padding) written as one matrix per side, ``B_h @ noise @ B_w^T``: two small matmuls instead
    of a 33 x 33 convolution, the same field to float rounding (within 5e-7; ``python benchmarks/classic.py``)."""

    def __init__(self, alpha=34.0, sigma=4.0):
        if not sigma > 0:
            raise ValueError(f"ElasticBatch: sigma must be a positive number of pixels, got {sigma!r}")
        self.alpha, self.sigma = alpha, sigma
        self._blur: dict[tuple[int, float], torch.Tensor] = {}

    def blur_matrix(self, n: int) -> torch.Tensor:
        """``B`` with ``B @ v`` = torchvision's 1-d Gaussian blur of the length-``n`` ``v`` (reflect padding)."""
        if (n, self.sigma) not in self._blur:
            kernel = int(8 * self.sigma + 1) | 1
            half = kernel // 2
            if half >= n:
                raise ValueError(f"ElasticBatch: sigma={self.sigma} needs images wider than {half} pixels, got {n}")
            offsets = torch.linspace(-(kernel - 1) / 2, (kernel - 1) / 2, kernel)
            weights = torch.exp(-0.5 * (offsets / self.sigma) ** 2)
            weights = weights / weights.sum()
            source = torch.arange(n).unsqueeze(1) + torch.arange(kernel) - half  # [n, kernel] padded positions
            source = source.abs()
            source = torch.where(source > n - 1, 2 * (n - 1) - source, source)  # reflect
            rows = torch.arange(n).unsqueeze(1).expand(n, kernel)
            self._blur[n, self.sigma] = torch.zeros(n, n).index_put_((rows, source), weights.expand(n, kernel), accumulate=True)
        return self._blur[n, self.sigma]

    def __call__(self, x, y):
        n, _, h, w = x.shape
        noise = torch.rand(n, 2, h, w) * 2 - 1
        displacement = self.blur_matrix(h) @ noise @ self.blur_matrix(w).T
        displacement = displacement * torch.tensor([self.alpha / w, self.alpha / h]).view(1, 2, 1, 1)
        identity = F.affine_grid(torch.eye(2, 3).expand(n, 2, 3), list(x.shape), align_corners=False)
        return F.grid_sample(x, identity + displacement.permute(0, 2, 3, 1), mode="bilinear", padding_mode="zeros", align_corners=False)


class Chain:
    """Augmentations ``(images, labels) -> images`` applied in turn."""

    def __init__(self, *steps):
        self.steps = steps

    def __call__(self, x, y):
        for step in self.steps:
            x = step(x, y)
        return x


def compare(images: torch.Tensor, batch: int, repeat: int = 3) -> dict:
    """Images/s of the batched transforms and of a per-image loop over torchvision's, on ``images`` in batches."""
    from torchvision.transforms import v2
    from torchvision.transforms.v2.functional import gaussian_blur

    pairs = {"affine": (RandomAffineBatch(), v2.RandomAffine(degrees=15.0, translate=(0.1, 0.1), scale=(0.9, 1.1), shear=10.0)),
             "elastic": (ElasticBatch(34.0, 4.0), v2.ElasticTransform(alpha=34.0, sigma=4.0))}
    batches = images.split(batch)
    out = {}
    for name, (batched, torchvision_one) in pairs.items():
        def loop():
            return [torch.stack([torchvision_one(image) for image in b]) for b in batches]

        fast = rate(lambda: [batched(b, None) for b in batches], len(images), repeat, warmup=1)
        slow = rate(loop, len(images), repeat, warmup=1)
        change = {"batched": torch.cat([batched(b, None) for b in batches]).sub(images).abs().mean().item(),
                  "torchvision": torch.cat(loop()).sub(images).abs().mean().item()}
        out[name] = {"batched_img_s": fast, "torchvision_img_s": slow, "speedup": fast / slow, "mean_abs_change": change}
    elastic, noise = pairs["elastic"][0], torch.rand(batch, 2, *images.shape[-2:]) * 2 - 1
    kernel = int(8 * elastic.sigma + 1) | 1
    blurred = elastic.blur_matrix(noise.shape[-2]) @ noise @ elastic.blur_matrix(noise.shape[-1]).T
    out["elastic"]["blur_max_error"] = blurred.sub(gaussian_blur(noise, [kernel, kernel], [elastic.sigma] * 2)).abs().max().item()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=DEFAULT_ROOT)
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=64, help="the accuracy benchmarks' batch size")
    parser.add_argument("--threads", type=int, default=1, help="one per worker, as the benchmarks run")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    images = mnist(args.root, train=True)[0][: args.images]
    out = compare(images, args.batch)
    for name, r in out.items():
        c = r["mean_abs_change"]
        print(f"{name:<8} batched {r['batched_img_s']:>9,.0f} images/s, torchvision per image {r['torchvision_img_s']:>7,.0f} "
              f"images/s: {r['speedup']:.1f}x faster; mean |change| {c['batched']:.4f} vs {c['torchvision']:.4f}")
    print(f"elastic: the blur as two matrices against torchvision's gaussian_blur, max |difference| {out['elastic']['blur_max_error']:.1e}")


if __name__ == "__main__":
    main()
