"""Training and evaluation: the loop, checkpoints written atomically every epoch, exact resume.

A run folder holds what a user loads (``config.json``, ``model.safetensors``, ``metrics.json``,
``README.md``) and ``trainer_state.safetensors``: the model and optimizer tensors plus the config,
epoch and history in its metadata. That one file is written atomically, and first at every epoch,
so a run killed at any point resumes from the last finished epoch; a run killed before its first
state file was in place left nothing but temporary files, and starts afresh. Training writes only
into an empty or new folder, or into a run folder of its own with ``resume``: a folder holding
anything else is refused, so that no one's files are overwritten (`check_out_folder`).
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.distributed
import torch.nn.parallel
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from . import checkpoint, losses
from .data import load_splits
from .hub import load_trainable
from .losses import kl_warmup
from .models import VAE, Autoencoder

STATE_NAME = "trainer_state.safetensors"


def default_device() -> torch.device:
    """cuda, then mps, then cpu."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def _images(batch) -> torch.Tensor:
    return batch[0] if isinstance(batch, (list, tuple)) else batch


@torch.no_grad()
def evaluate(vae: Autoencoder, data: Dataset | DataLoader, iw_k: int = 0, batch_size: int = 500, seed: int = 0,
             progress: bool = False, binarized_k: int | None = None) -> dict[str, float]:
    """Held-out figures: -ELBO (nats/image, bits/dim), with ``iw_k > 0`` the importance-weighted NLL, and
    the fidelity of reconstructions.

    ``binarized_iw_nll_nats`` is the figure the density-modelling literature reports for MNIST (IWAE,
    Burda et al. 2016: 84.78 nats; 2-layer 82.90): the importance-weighted NLL (``binarized_k``
    samples, by default ``iw_k``; 0 skips it) of *dynamically binarized* images, each pixel drawn as
    1 with probability its gray value (one draw per image, from the seeded generator), under the
    model's Bernoulli decoder. It is a true discrete NLL, comparable across papers; the gray-value
    figures above are not (a Bernoulli likelihood of gray values is not a normalised density).
    Computed for Bernoulli models only (a Gaussian decoder assigns densities, not probabilities, to
    binary images).

    ``reconstruction_r2`` is the share of the images' own variation that their reconstructions keep,
    1 - sum (x - recon)^2 / sum (x - mean image)^2 over pixels (1: perfect; 0: no better than the
    mean image); ``reconstruction_mae`` the mean absolute pixel error. A VAE trained on little data
    reconstructs blurrily, and its augmentations then teach a classifier images unlike its test
    images: `VAEAugment` warns when a checkpoint's ``reconstruction_r2`` is below
    `vae_augment.augment.FIDELITY_WARNING`.

    Sampling uses a generator seeded with ``seed``, so the figures repeat. Defined for models with an
    ELBO (``has_elbo``: vae-augment's own VAEs).
    """
    if not vae.has_elbo:
        raise ValueError(f"a {vae.kind} has no ELBO to evaluate (has_elbo is False: a pretrained diffusers autoencoder, for "
                         "one, was trained with a near-zero KL weight); evaluate measures vae-augment's own VAEs")
    loader = data if isinstance(data, DataLoader) else DataLoader(data, batch_size=batch_size)
    was_training = vae.training
    vae.eval()
    device = vae.device
    generator = torch.Generator(device=device).manual_seed(seed)
    binarized_k = iw_k if binarized_k is None else binarized_k
    if binarized_k < 0:
        raise ValueError(f"binarized_k must be >= 0 (0 skips the binarized NLL), got {binarized_k}")
    binarized_k = binarized_k if getattr(vae, "likelihood", None) == "bernoulli" else 0
    total_elbo, total_iw, total_binarized, count = 0.0, 0.0, 0.0, 0
    total_x, total_x2, squared_error, absolute_error = 0.0, 0.0, 0.0, 0.0  # per pixel sums, for the fidelity
    for batch in tqdm(loader, desc="eval", disable=not progress, leave=False):
        x = _images(batch).to(device)
        total_elbo += vae.elbo(x, generator=generator).double().sum().item()
        error = (vae.reconstruct(x) - x).double()
        squared_error, absolute_error = squared_error + error.square().sum().item(), absolute_error + error.abs().sum().item()
        total_x, total_x2 = total_x + x.double().sum(0), total_x2 + x.double().square().sum(0)
        if iw_k:
            total_iw += vae.iw_nll(x, k=iw_k, generator=generator).double().sum().item()
        if binarized_k:
            binary = torch.bernoulli(x.clamp(0, 1), generator=generator)
            total_binarized += vae.iw_nll(binary, k=binarized_k, generator=generator).double().sum().item()
        count += x.shape[0]
    vae.train(was_training)
    if count == 0:
        raise ValueError("evaluation data is empty")
    neg_elbo = -total_elbo / count
    variation = float((total_x2 - total_x.square() / count).sum())  # sum over pixels of (x - mean image)^2
    out = {"neg_elbo_nats": neg_elbo, "neg_elbo_bits_per_dim": float(vae.bits_per_dim(neg_elbo)), "images": count,
           "reconstruction_r2": 1 - squared_error / variation if variation > 0 else float("nan"),
           "reconstruction_mae": absolute_error / (count * vae.num_pixels)}
    if iw_k:
        out.update(iw_nll_nats=total_iw / count, iw_nll_bits_per_dim=float(vae.bits_per_dim(total_iw / count)), iw_k=iw_k)
    if binarized_k:
        out.update(binarized_iw_nll_nats=total_binarized / count, binarized_iw_k=binarized_k)
    return out


# ------------------------------------------------------------------ trainer state
def _save_state(path: Path, vae: VAE, optimizer: torch.optim.Optimizer, meta: dict[str, Any]) -> None:
    tensors = {f"model.{k}": v for k, v in vae.state_dict().items()}
    opt = optimizer.state_dict()
    for index, state in opt["state"].items():
        for key, value in state.items():
            tensors[f"optim.{index}.{key}"] = value if torch.is_tensor(value) else torch.tensor(value)
    meta = dict(meta, param_groups=opt["param_groups"])
    checkpoint.atomic_save_tensors(path, tensors, metadata={"trainer": json.dumps(meta)})


def check_out_folder(out: Path, resume: bool) -> None:
    """Refuse an output folder training must not write into: a file, a dead symlink, or a folder that holds
    files but no training run (``trainer_state.safetensors``); with ``resume``, one without a run, and without
    it, one with a run. Leftovers of an interrupted save (`checkpoint.is_save_debris`) count as nothing."""
    if checkpoint.is_dead_link(out):
        raise FileExistsError(f"output folder {str(out)!r} is a symlink that cannot be followed "
                              f"({checkpoint.dead_link_reason(out)}); choose another output folder")
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"output folder {str(out)!r} is a file, not a folder; choose another output folder (nothing was written)")
    entries = sorted(out.iterdir()) if out.is_dir() else []
    found = [p.name + ("/" if p.is_dir() else "") for p in entries if not checkpoint.is_save_debris(p.name)]
    leftovers = len(entries) - len(found)
    state = out / STATE_NAME
    if state.is_file():
        if not resume:
            raise FileExistsError(f"{str(out)!r} already holds a training run ({STATE_NAME}); pass resume=True (--resume) to "
                                  "continue it, or choose another output folder (nothing was overwritten)")
        return
    listing = ", ".join(found[:8]) + (f" and {len(found) - 8} more" if len(found) > 8 else "")
    if resume:
        why = (f"the folder holds files but no training run ({listing})" if found
               else "the folder holds only the leftovers of a save interrupted before the first epoch's state was "
                    "written, which a fresh start clears" if leftovers
               else "the folder is empty or does not exist")
        raise FileNotFoundError(f"cannot resume: {str(state)!r} does not exist ({why}; nothing was written); "
                                "start without --resume" + (" in an empty or new folder" if found else ""))
    if found:
        raise FileExistsError(f"output folder {str(out)!r} holds files but no training run ({listing}); training writes only "
                              f"into an empty or new folder, or continues its own run ({STATE_NAME}) with --resume, so that "
                              "no one's files are overwritten: choose another output folder or empty this one (nothing was written)")


def _load_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any], vae: VAE, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    vae.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta.pop("param_groups")})
    return meta


@torch.no_grad()
def reference_statistics(vae: VAE, train_set: Dataset, num_workers: int = 0) -> dict[str, Any]:
    """Statistics of the training set that later code measures against, computed in one pass:
    the per-dimension mean and spread of posterior means (stored in the model's ``latent_loc`` /
    ``latent_scale`` buffers: the augmentation's unit of strength), a bank of training codes
    (``vae.latent_bank``, see `latent_bank`) and the percentiles 0..100 of anomaly scores
    (returned as ``train_anomaly_percentiles``, saved in metrics.json)."""
    loader = DataLoader(train_set, batch_size=500, num_workers=num_workers)
    scores: list[torch.Tensor] = []

    def images():
        for batch in loader:
            x = _images(batch).to(vae.device)
            scores.append(vae.anomaly_score(x).cpu())
            yield x

    vae.calibrate(images())
    vae.latent_bank = latent_bank(vae, train_set, num_workers=num_workers)
    all_scores = torch.cat(scores).double()
    percentiles = torch.quantile(all_scores, torch.linspace(0, 1, 101, dtype=torch.float64))
    return {"train_anomaly_percentiles": [round(v, 4) for v in percentiles.tolist()]}


@torch.no_grad()
def latent_bank(vae: VAE, train_set: Dataset, size: int = 20_000, seed: int = 0, num_workers: int = 0) -> torch.Tensor:
    """Posterior means of ``size`` training images (a fixed random sample), ``[N, latent_dim]`` on the CPU:
    the codes the ``"neighbour"`` augmentation moves towards. Saved as latent_bank.safetensors."""
    order = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(seed))[:size].sort().values
    loader = DataLoader(torch.utils.data.Subset(train_set, order.tolist()), batch_size=500, num_workers=num_workers)
    return torch.cat([vae.encode(_images(b).to(vae.device)).mean.cpu() for b in loader])


def fit_prior(vae: Autoencoder, data: Dataset, *, components: int = 1024, steps: int = 6000, batch_size: int = 512, lr: float = 3e-3,
              binarize: bool = False, passes: int = 1, seed: int = 0, progress: bool = False) -> VAE:
    """A copy of the trained ``vae`` whose prior is a mixture of ``components`` diagonal Gaussians fitted to its codes.

    The encoder and decoder are kept as they are; the mixture maximises E_x E_q(z|x) log p(z) over the
    training images ``data`` (a `Dataset` of ``(image, label)`` or of images), the only part of the
    ELBO the prior enters, so the ELBO and the NLL can only improve on the data it was fitted to. A
    N(0, I) prior wastes density on codes no image has (the "holes" between the classes); the mixture
    puts it where the aggregate posterior is (Tomczak & Welling, 2018, "VAE with a VampPrior", who
    learn such priors jointly; fitting it afterwards costs about a minute on a CPU). Prior samples then
    look like the data, and posterior-based augmentation is unchanged. ``binarize`` encodes a dynamic
    binarization of each image (for models trained with ``binarize=True``), ``passes`` times with fresh
    pixels (more codes to fit: a larger mixture overfits less). Adam with a cosine decay,
    ``steps`` batches of ``batch_size`` codes drawn from the posteriors (seeded by ``seed``); the
    components start at the posterior means of random training images with unit scales.

    The fit's figures are in ``metrics["prior"]``: the cross-entropy of the codes under the mixture and
    under N(0, I) (nats per image; their difference is what the KL term, and so the -ELBO, gains).
    """
    if not callable(getattr(vae, "with_mixture_prior", None)):
        raise TypeError(f"fit_prior needs a model whose prior can be replaced by a mixture (vae-augment's VAE), got {type(vae).__name__}")
    for name, value in (("components", components), ("steps", steps), ("batch_size", batch_size), ("passes", passes)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr!r}")
    if binarize and vae.likelihood != "bernoulli":
        raise ValueError(f"binarize=True needs a bernoulli model (binary pixels), this one is {vae.likelihood!r}")
    if len(data) == 0:
        raise ValueError("the training data is empty")
    device, generator = vae.device, torch.Generator().manual_seed(seed)
    means, logvars = [], []
    with torch.no_grad():
        for batch in (b for _ in range(passes) for b in DataLoader(data, batch_size=500)):
            x = _images(batch)
            x = torch.bernoulli(x.clamp(0, 1), generator=generator) if binarize else x
            posterior = vae.encode(x.to(device, vae.dtype))
            means.append(posterior.mean.float().cpu())
            logvars.append(posterior.logvar.float().cpu())
    mean, std = torch.cat(means), torch.exp(0.5 * torch.cat(logvars))
    fitted = vae.with_mixture_prior(components).float().cpu()
    start = torch.randint(len(mean), (components,), generator=generator) if components > len(mean) else \
        torch.randperm(len(mean), generator=generator)[:components]
    with torch.no_grad():
        fitted.prior_loc.copy_(mean[start])
    prior = [fitted.prior_logits, fitted.prior_loc, fitted.prior_log_scale]
    optimizer = torch.optim.Adam(prior, lr=lr)
    mixture_ce, normal_ce = [], []
    for step in tqdm(range(steps), desc="fit prior", disable=not progress, leave=False):
        for group in optimizer.param_groups:
            group["lr"] = _lr_at(step, steps, lr, "cosine")
        rows = torch.randint(len(mean), (batch_size,), generator=generator)
        z = mean[rows] + std[rows] * torch.randn(batch_size, mean.shape[1], generator=generator)
        loss = -losses.mixture_log_prob(z, *prior).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step >= steps - max(1, steps // 20):  # the last 5% of the fit, for the figures
            mixture_ce.append(loss.item())
            normal_ce.append(-losses.standard_normal_log_prob(z).mean().item())
    fitted.metrics = {**fitted.metrics, "prior": {
        "components": components, "steps": steps, "batch_size": batch_size, "lr": lr, "binarize": binarize, "passes": passes,
        "seed": seed, "codes": len(mean), "cross_entropy_nats": sum(mixture_ce) / len(mixture_ce),
        "standard_normal_cross_entropy_nats": sum(normal_ce) / len(normal_ce)}}
    return fitted.to(device).eval()


def _lr_at(step: int, total: int, lr: float, schedule: str) -> float:
    if schedule == "constant" or total <= 0:
        return lr
    warm = max(1, total // 50)  # a short linear warm-up, then cosine decay to 1% of lr
    if step < warm:
        return lr * (step + 1) / warm
    progress = (step - warm) / max(1, total - warm)
    return lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * progress)))


DEFAULT_EPOCHS = 10
# the fewest optimizer steps `train` takes by default: 10 epochs of 1,132 16x16 digits (90 steps) gave a VAE whose
# reconstructions kept 8% of its held-out images' variation (reconstruction_r2 0.08), 223 epochs (2,007 steps) 0.86
# (benchmarks/utility.py's digits); MNIST's 60,000 images reach it in 5 of the 10 epochs
MIN_STEPS = 2000


def default_epochs(steps_per_epoch: int) -> int:
    """`DEFAULT_EPOCHS`, or enough epochs of ``steps_per_epoch`` to take `MIN_STEPS` steps."""
    return max(DEFAULT_EPOCHS, math.ceil(MIN_STEPS / steps_per_epoch))


def train(
    data: str | Path | Dataset = "mnist",
    out: str | Path = "runs/vae",
    *,
    root: str | Path | None = None,
    test_data: Dataset | None = None,
    epochs: int | None = None,
    batch_size: int = 128,
    lr: float = 2e-3,
    lr_schedule: str = "cosine",
    beta: float = 1.0,
    warmup_epochs: float = 0.0,
    latent_dim: int | None = None,
    widths: Sequence[int] | None = None,
    hidden: int | None = None,
    likelihood: str | None = None,
    binarize: bool = False,
    image_size: int | None = None,
    channels: int | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    num_workers: int = 0,
    iw_k: int = 64,
    resume: bool = False,
    download: bool = False,
    progress: bool = True,
    log: bool = True,
    precision: str = "auto",
    compile: bool = False,
    command: str | None = None,
    init: "str | Path | VAE | None" = None,
) -> VAE:
    """Train a VAE on ``data`` and write a checkpoint to ``out`` after every epoch.

    ``data`` is a torchvision dataset name (``"mnist"``, with ``root``), a folder of images, or a
    `Dataset` of ``(image [C, H, W] in [0, 1], label)``. The KL weight rises linearly from 0 to
    ``beta`` over ``warmup_epochs``. ``epochs=None`` trains `DEFAULT_EPOCHS`, or as many more as reach
    `MIN_STEPS` optimizer steps on a small dataset (1,132 images at batch 128: 223 epochs, about a
    minute on two CPU cores). After each epoch the held-out -ELBO is printed; at the end the
    importance-weighted NLL (``iw_k`` samples) and the spread of posterior means over the training
    set (the augmentation's unit of strength) are computed and saved with ``metrics.json``.
    ``progress`` shows a progress bar; ``log`` prints one line per epoch.
    ``binarize=True`` (Bernoulli likelihood only) trains on dynamically binarized images, each pixel
    drawn anew every time it is seen as 1 with its gray value as probability: the setting of the
    density-modelling literature, whose figure (``binarized_iw_nll_nats``) it optimises; the held-out
    -ELBO printed per epoch stays on the gray images.
    With ``resume=True`` training continues from ``out``'s last finished epoch and gives the same
    result as an uninterrupted run.
    ``latent_dim``, ``widths`` and ``hidden`` default to 16, (32, 64) and 256. ``init`` (a trained `VAE`, or
    a bundled name, folder or Hub repo id of one) starts from its weights instead of fresh ones, with its
    architecture and prior: e.g. a model given a mixture prior by `fit_prior`, trained on with encoder,
    decoder and prior together (the KL then against the learned prior). Its architecture is the run's, so
    an explicit ``latent_dim``, ``widths``, ``hidden`` or ``likelihood`` that differs from it is an error,
    as is data of another image size or channel count.

    Under ``torchrun --nproc_per_node N`` (one or many nodes) it trains with DistributedDataParallel:
    a `DistributedSampler` shards each epoch, gloo runs on CPU and nccl on GPU, and only rank 0
    evaluates, prints and writes checkpoints. ``precision="auto"`` uses bf16 autocast on CUDA
    (``"fp32"`` turns it off); ``compile=True`` wraps the model in `torch.compile`.
    """
    for name, value, low in (("epochs", epochs, 1), ("batch_size", batch_size, 1)):
        if name == "epochs" and value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr!r}")
    if lr_schedule not in ("cosine", "constant"):
        raise ValueError(f"lr_schedule must be 'cosine' or 'constant', got {lr_schedule!r}")
    if warmup_epochs < 0:
        raise ValueError(f"warmup_epochs must be >= 0, got {warmup_epochs!r}")
    if precision not in ("auto", "fp32", "bf16"):
        raise ValueError(f"precision must be 'auto', 'fp32' or 'bf16', got {precision!r}")

    out = Path(out)
    check_out_folder(out, resume)  # before the data is read: refused at once, and nothing written
    if isinstance(data, Dataset):
        if test_data is None:
            raise ValueError("a Dataset passed as data needs test_data for the held-out evaluation")
        train_set, test_set = data, test_data
        x0 = _images(train_set[0])
        info = {"dataset": type(data).__name__, "channels": x0.shape[0], "image_size": list(x0.shape[-2:])}
    else:
        train_set, test_set, info = load_splits(data, root, image_size, channels, download, seed=seed)
    if len(train_set) == 0:
        raise ValueError("the training data is empty")
    start = _initial_model(init, info, latent_dim=latent_dim, widths=widths, hidden=hidden, likelihood=likelihood)
    if start is not None:
        likelihood = start.likelihood
    if likelihood is None:
        likelihood = "bernoulli" if info["channels"] == 1 else "gaussian"
    if not isinstance(binarize, bool):
        raise TypeError(f"binarize must be a bool, got {binarize!r}")
    if binarize and likelihood != "bernoulli":
        raise ValueError(f"binarize=True needs the bernoulli likelihood (binary pixels), got likelihood={likelihood!r}")

    dist = _Distributed.from_env(device)
    device = dist.device if dist.enabled else (torch.device(device) if device is not None else default_device())
    main_process = dist.rank == 0
    progress, log = progress and main_process, log and main_process
    torch.manual_seed(seed)
    if start is None:
        config = dict(channels=int(info["channels"]), image_size=[int(s) for s in info["image_size"]],
                      latent_dim=16 if latent_dim is None else latent_dim, widths=list((32, 64) if widths is None else widths),
                      hidden=256 if hidden is None else hidden, likelihood=likelihood, beta=beta)
    else:
        config = {**start._hub_mixin_config, "beta": beta}
    vae = VAE(**config).to(device)
    if start is not None:
        vae.load_state_dict(start.state_dict())
    optimizer = torch.optim.Adam(vae.parameters(), lr=lr)
    steps_per_epoch = math.ceil(math.ceil(len(train_set) / dist.world_size) / batch_size)
    if epochs is None:
        epochs = default_epochs(steps_per_epoch)
    total_steps = epochs * steps_per_epoch
    warmup_steps = int(warmup_epochs * steps_per_epoch)
    # the config travels in the state file, written first at every epoch: a run killed during its first
    # save (the state in place, config.json not yet) resumes from that file alone
    meta: dict[str, Any] = {"epoch": 0, "history": [], "command": command, "config": config}
    state_path = out / STATE_NAME
    if resume:
        tensors, saved = checkpoint.read_trainer_state(state_path)
        if "config" in saved:
            saved_config = saved["config"]
        elif (out / checkpoint.CONFIG_NAME).is_file():  # a state file written before the config went into it
            saved_config = checkpoint.read_config(out)
        else:
            raise FileNotFoundError(f"cannot resume: {str(out)!r} holds {STATE_NAME} without the run's config (neither in it "
                                    f"nor in {checkpoint.CONFIG_NAME}); start again in a new folder")
        if saved_config != config:
            raise ValueError(f"cannot resume: the run in {str(out)!r} was started with {saved_config}, now {config}")
        meta = {**_load_state(tensors, saved, vae, optimizer), "config": config}
        if meta["epoch"] >= epochs and log:
            print(f"{out}: already trained for {meta['epoch']} epochs")
    if main_process:
        out.mkdir(parents=True, exist_ok=True)
        checkpoint.remove_save_debris(out)  # temporary files of a save killed outright

    pin = device.type == "cuda"
    model = dist.wrap(vae)
    forward = torch.compile(model) if compile else model
    autocast = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    for epoch in range(meta["epoch"], epochs):
        # Everything random in an epoch derives from (seed, epoch, rank): a resumed run repeats it exactly.
        torch.manual_seed(seed * 100_003 + epoch + 7919 * dist.rank)
        if dist.enabled:
            sampler = torch.utils.data.DistributedSampler(train_set, num_replicas=dist.world_size, rank=dist.rank, shuffle=True, seed=seed)
            sampler.set_epoch(epoch)
            loader = DataLoader(train_set, batch_size=batch_size, sampler=sampler, num_workers=num_workers, pin_memory=pin)
        else:
            order = torch.Generator().manual_seed(seed * 100_003 + epoch)
            loader = DataLoader(train_set, batch_size=batch_size, shuffle=True, generator=order, num_workers=num_workers,
                                pin_memory=pin, drop_last=False)
        vae.train()
        running, start = 0.0, time.perf_counter()
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{epochs}", disable=not progress, leave=False)
        for i, batch in enumerate(bar):
            step = epoch * steps_per_epoch + i
            for group in optimizer.param_groups:
                group["lr"] = _lr_at(step, total_steps, lr, lr_schedule)
            x = _images(batch).to(device, non_blocking=pin)
            if binarize:  # drawn from the epoch's seeded global RNG: a resumed run draws the same pixels
                x = torch.bernoulli(x.clamp(0, 1))
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                out_x, posterior, z = forward(x)
            result = vae.objective(x, out_x, posterior, kl_warmup(step, warmup_steps, beta), z)
            optimizer.zero_grad(set_to_none=True)
            result["loss"].backward()
            optimizer.step()
            running = result["loss"].item() if i == 0 else 0.98 * running + 0.02 * result["loss"].item()
            if i % 20 == 0:
                bar.set_postfix(loss=f"{running:.2f}", kl=f"{result['kl'].item():.1f}")
        meta["epoch"] = epoch + 1
        if not main_process:
            dist.barrier()  # wait while rank 0 evaluates and writes the checkpoint
            continue
        held_out = evaluate(vae, test_set, batch_size=500, seed=seed)
        meta["history"].append({"epoch": epoch + 1, "train_loss": running, "seconds": time.perf_counter() - start, **held_out})
        if log:
            print(f"epoch {epoch + 1}/{epochs}: train loss {running:.2f}, held-out -ELBO {held_out['neg_elbo_nats']:.2f} nats "
                  f"({held_out['neg_elbo_bits_per_dim']:.4f} bits/dim)", flush=True)
        _save_state(state_path, vae, optimizer, meta)
        vae.save_pretrained(out)
        dist.barrier()

    in_sync = dist.ranks_in_sync(vae)
    if not main_process:
        dist.close()
        return vae.eval()
    vae.eval()
    reference = reference_statistics(vae, train_set, num_workers=num_workers)
    final = evaluate(vae, test_set, iw_k=iw_k, batch_size=100 if iw_k else 500, seed=seed, progress=progress)
    metrics = {
        "dataset": info["dataset"], "holdout": info.get("holdout", "test_data"), "command": meta.get("command") or command,
        **({"resumed_with": command} if resume and meta.get("command") not in (None, command) else {}),
        "epochs": meta["epoch"], "train_images": len(train_set), "test": final, "history": meta["history"], **reference,
        "training": {"batch_size": batch_size, "binarize": binarize, "lr": lr, "lr_schedule": lr_schedule, "beta": beta,
                     "warmup_epochs": warmup_epochs, "seed": seed, "device": str(device),
                     "world_size": dist.world_size, "ranks_in_sync": in_sync, "precision": "bf16" if autocast else "fp32",
                     **({"init": _spec_name(init, start)} if start is not None else {})},
    }
    vae.metrics = metrics
    vae.save_pretrained(out, refresh_card=True)  # with metrics.json, and the card regenerated with the final figures
    if log:
        print(f"test: -ELBO {final['neg_elbo_nats']:.2f} nats/image ({final['neg_elbo_bits_per_dim']:.4f} bits/dim)"
              + (f", IW-NLL (k={iw_k}) {final['iw_nll_nats']:.2f} nats" if iw_k else "") + f"; saved to {out}", flush=True)
    dist.close()
    return vae


def _initial_model(init, info: dict[str, Any], **explicit) -> VAE | None:
    """The model ``train(init=...)`` starts from, checked against the data and the explicit architecture arguments."""
    if init is None:
        return None
    start = load_trainable(init)
    config = start._hub_mixin_config
    data_shape = (int(info["channels"]), [int(s) for s in info["image_size"]])
    if (config["channels"], list(config["image_size"])) != data_shape:
        raise ValueError(f"init was trained on {config['channels']}-channel {list(config['image_size'])} images; this data has "
                         f"{data_shape[0]}-channel {data_shape[1]} images (resize and convert them to its shape: "
                         f"image_size={_side(config['image_size'])}, channels={config['channels']}; --image-size, --channels)")
    for name, value in explicit.items():
        if value is not None and (list(value) if name == "widths" else value) != config[name]:
            raise ValueError(f"init has {name}={config[name]!r}, got {name}={value!r}: a run from init keeps its architecture "
                             f"(leave {name} out)")
    return start


def _side(size) -> int | list[int]:
    """A square size as its side (as ``image_size`` takes it), else ``[height, width]``."""
    size = [int(v) for v in size]
    return size[0] if len(set(size)) == 1 else size


def _spec_name(init, start: VAE) -> str:
    return os.fspath(init) if isinstance(init, (str, os.PathLike)) else str(getattr(start, "name_or_path", None) or "a VAE object")


class _Distributed:
    """The torchrun environment (RANK, WORLD_SIZE, LOCAL_RANK), or a single process."""

    def __init__(self, rank: int = 0, world_size: int = 1, device: torch.device | None = None):
        self.rank, self.world_size, self.device = rank, world_size, device
        self.enabled = world_size > 1

    @classmethod
    def from_env(cls, device) -> "_Distributed":
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size <= 1:
            return cls()
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        use_cuda = torch.cuda.is_available() and (device is None or torch.device(device).type == "cuda")
        if use_cuda:
            torch.cuda.set_device(local_rank)
        if not torch.distributed.is_initialized():
            torch.distributed.init_process_group(backend="nccl" if use_cuda else "gloo")
        dev = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
        return cls(torch.distributed.get_rank(), torch.distributed.get_world_size(), dev)

    def wrap(self, vae: VAE) -> torch.nn.Module:
        if not self.enabled:
            return vae
        ids = [self.device.index] if self.device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(vae, device_ids=ids)

    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()

    def ranks_in_sync(self, vae: VAE) -> bool:
        """True when every rank holds the same weights (compared by a checksum of all parameters)."""
        if not self.enabled:
            return True
        checksum = torch.stack([p.detach().double().sum() for p in vae.parameters()]).sum().reshape(1)
        checksum = checksum.to(self.device)
        gathered = [torch.zeros_like(checksum) for _ in range(self.world_size)]
        torch.distributed.all_gather(gathered, checksum)
        return all(torch.equal(g, gathered[0]) for g in gathered)

    def close(self) -> None:
        if self.enabled and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
