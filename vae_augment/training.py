"""Training: `train`, the loop, with checkpoints written atomically every epoch and exact resume.

A run folder holds what a user loads (``config.json``, ``model.safetensors``, ``metrics.json``,
``README.md``) and ``trainer_state.safetensors``: the model and optimizer tensors plus the config,
epoch and history in its metadata. That one file is written atomically, and first at every epoch,
so a run killed at any point resumes from the last finished epoch; a run killed before its first
state file was in place left nothing but temporary files, and starts afresh. Training writes only
into an empty or new folder, or into a run folder of its own with ``resume``: a folder holding
anything else is refused, so that no one's files are overwritten (`check_out_folder`).

`train` gathers its arguments in a `TrainConfig` and runs the phases of `train_with`. Held-out figures
are `vae_augment.evaluation`, the trainer state `vae_augment.run_folder`, DistributedDataParallel `vae_augment.devices`.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from . import atomic
from .data import load_splits
from .devices import Distributed, default_device
from .evaluation import batch_images, evaluate, latent_bank, reference_statistics
from .loader import load_trainable
from .losses import kl_warmup
from .models import VAE
from .run_folder import STATE_NAME, check_out_folder, resume_state, save_state

__all__ = ["train", "train_with", "TrainConfig", "lr_at", "default_epochs", "DEFAULT_EPOCHS", "MIN_STEPS", "STATE_NAME",
           "check_out_folder", "default_device", "evaluate", "reference_statistics", "latent_bank"]


def lr_at(step: int, total: int, lr: float, schedule: str) -> float:
    """The learning rate at optimizer ``step`` of ``total``: ``lr`` throughout (``"constant"``), or (``"cosine"``) a short
    linear warm-up then a cosine decay to 1% of ``lr``. `train` and `vae_augment.prior.fit_prior` follow it."""
    if schedule == "constant" or total <= 0:
        return lr
    warm = max(1, total // 50)  # a short linear warm-up, then cosine decay to 1% of lr
    if step < warm:
        return lr * (step + 1) / warm
    progress = (step - warm) / max(1, total - warm)
    return lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * progress)))


DEFAULT_EPOCHS = 10
# The fewest optimizer steps `train` takes by default: a small dataset trained for DEFAULT_EPOCHS alone gives a VAE
# that reconstructs blurrily (and warns in `VAEAugment`); docs/benchmarks.md#does-it-help (the digits) has what
# this budget and the earlier default measured. A large dataset (MNIST) reaches it within DEFAULT_EPOCHS.
MIN_STEPS = 2000


def default_epochs(steps_per_epoch: int) -> int:
    """`DEFAULT_EPOCHS`, or enough epochs of ``steps_per_epoch`` to take `MIN_STEPS` steps."""
    return max(DEFAULT_EPOCHS, math.ceil(MIN_STEPS / steps_per_epoch))


@dataclass(frozen=True)
class TrainConfig:
    """The settings of one `train` run, named as `train`'s arguments (`train` says what each does).

    The arguments are checked when the config is made, with a `ValueError` that names the argument;
    those that depend on the data (``binarize`` against the likelihood, ``init`` against the images'
    shape) are checked once the data is read. `train_with` runs it.
    """

    data: str | Path | Dataset = "mnist"
    out: str | Path = "runs/vae"
    root: str | Path | None = None
    test_data: Dataset | None = None
    epochs: int | None = None
    batch_size: int = 128
    lr: float = 2e-3
    lr_schedule: str = "cosine"
    beta: float = 1.0
    warmup_epochs: float = 0.0
    latent_dim: int | None = None
    widths: Sequence[int] | None = None
    hidden: int | None = None
    likelihood: str | None = None
    binarize: bool = False
    image_size: int | None = None
    channels: int | None = None
    seed: int = 0
    device: str | torch.device | None = None
    num_workers: int = 0
    iw_k: int = 64
    resume: bool = False
    download: bool = False
    progress: bool = True
    log: bool = True
    precision: str = "auto"
    compile: bool = False
    command: str | None = None
    init: "str | Path | VAE | None" = None

    def __post_init__(self):
        for name, value in (("epochs", self.epochs), ("batch_size", self.batch_size)):
            if name == "epochs" and value is None:
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        if self.lr_schedule not in ("cosine", "constant"):
            raise ValueError(f"lr_schedule must be 'cosine' or 'constant', got {self.lr_schedule!r}")
        if self.warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be >= 0, got {self.warmup_epochs!r}")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"precision must be 'auto', 'fp32' or 'bf16', got {self.precision!r}")

    def architecture(self) -> dict[str, Any]:
        """The architecture arguments given explicitly (None: the default, or ``init``'s own)."""
        return dict(latent_dim=self.latent_dim, widths=self.widths, hidden=self.hidden, likelihood=self.likelihood)


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
    `MIN_STEPS` optimizer steps on a small dataset (1,132 images at batch 128: 223 epochs; what that
    budget measured is in docs/benchmarks.md#does-it-help). After each epoch the held-out -ELBO is
    printed; at the end the importance-weighted NLL (``iw_k`` samples) and the spread of posterior means over the training
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

    A non-finite loss or weights stop the run with a `FloatingPointError`; the last finished epoch's checkpoint stays as it was.
    The settings are gathered in a `TrainConfig` (checked when made) and run by `train_with`.
    """
    config = TrainConfig(**locals())  # every argument above, by name
    return train_with(config)


def train_with(config: TrainConfig) -> VAE:
    """`train` with its settings in a `TrainConfig`: the phases of a run, in order."""
    out = Path(config.out)
    check_out_folder(out, config.resume)  # before the data is read: refused at once, and nothing written
    train_set, test_set, info = _load_data(config)
    start = _initial_model(config.init, info, **config.architecture())
    run = _set_up(config, out, train_set, test_set, info, start, _likelihood(config, info, start))
    model = run.dist.wrap(run.vae)
    forward = torch.compile(model) if config.compile else model
    for epoch in range(run.meta["epoch"], run.epochs):
        running, seconds = _train_epoch(run, epoch, forward)
        _end_epoch(run, epoch, running, seconds)
    return _finish(run)


@dataclass
class _Run:
    """A run once set up: its data, model, optimizer and schedule, and the meta saved with every epoch
    (epoch, history, command, model config)."""

    config: TrainConfig
    out: Path
    train_set: Dataset
    test_set: Dataset
    info: dict[str, Any]
    start: VAE | None  # the model given as init, if any
    dist: Distributed
    device: torch.device
    vae: VAE
    optimizer: torch.optim.Optimizer
    steps_per_epoch: int
    epochs: int
    meta: dict[str, Any]

    @property
    def main_process(self) -> bool:
        return self.dist.rank == 0

    @property
    def progress(self) -> bool:
        return self.config.progress and self.main_process

    @property
    def log(self) -> bool:
        return self.config.log and self.main_process

    @property
    def autocast(self) -> bool:
        return self.config.precision == "bf16" or (self.config.precision == "auto" and self.device.type == "cuda")


def _load_data(config: TrainConfig) -> tuple[Dataset, Dataset, dict[str, Any]]:
    """The training and held-out sets and what is known of them (dataset name, channels, image size, hold-out)."""
    if isinstance(config.data, Dataset):
        if config.test_data is None:
            raise ValueError("a Dataset passed as data needs test_data for the held-out evaluation")
        x0 = batch_images(config.data[0])
        info = {"dataset": type(config.data).__name__, "channels": x0.shape[0], "image_size": list(x0.shape[-2:])}
        train_set, test_set = config.data, config.test_data
    else:
        train_set, test_set, info = load_splits(config.data, config.root, config.image_size, config.channels, config.download,
                                                seed=config.seed)
    if len(train_set) == 0:
        raise ValueError("the training data is empty")
    return train_set, test_set, info


def _likelihood(config: TrainConfig, info: dict[str, Any], start: VAE | None) -> str:
    """The run's likelihood: ``init``'s, the one asked for, or bernoulli for gray and gaussian for colour images;
    ``binarize`` checked against it."""
    likelihood = start.likelihood if start is not None else config.likelihood
    if likelihood is None:
        likelihood = "bernoulli" if info["channels"] == 1 else "gaussian"
    if not isinstance(config.binarize, bool):
        raise TypeError(f"binarize must be a bool, got {config.binarize!r}")
    if config.binarize and likelihood != "bernoulli":
        raise ValueError(f"binarize=True needs the bernoulli likelihood (binary pixels), got likelihood={likelihood!r}")
    return likelihood


def _model_config(config: TrainConfig, info: dict[str, Any], start: VAE | None, likelihood: str) -> dict[str, Any]:
    """The constructor arguments of the run's `VAE` (its config.json): ``init``'s architecture, or the defaults."""
    if start is not None:
        return {**start._hub_mixin_config, "beta": config.beta}
    return dict(channels=int(info["channels"]), image_size=[int(s) for s in info["image_size"]],
                latent_dim=16 if config.latent_dim is None else config.latent_dim,
                widths=list((32, 64) if config.widths is None else config.widths),
                hidden=256 if config.hidden is None else config.hidden, likelihood=likelihood, beta=config.beta)


def _set_up(config: TrainConfig, out: Path, train_set: Dataset, test_set: Dataset, info: dict[str, Any], start: VAE | None,
            likelihood: str) -> _Run:
    """The device, the model (fresh and seeded, or ``init``'s weights), the optimizer and the number of epochs;
    with ``resume``, the saved run's weights, optimizer state and meta. The run folder is made (rank 0)."""
    dist = Distributed.from_env(config.device)
    device = dist.device if dist.enabled else (torch.device(config.device) if config.device is not None else default_device())
    torch.manual_seed(config.seed)
    model_config = _model_config(config, info, start, likelihood)
    vae = VAE(**model_config).to(device)
    if start is not None:
        vae.load_state_dict(start.state_dict())
    optimizer = torch.optim.Adam(vae.parameters(), lr=config.lr)
    steps_per_epoch = math.ceil(math.ceil(len(train_set) / dist.world_size) / config.batch_size)
    epochs = default_epochs(steps_per_epoch) if config.epochs is None else config.epochs
    # the config travels in the state file, written first at every epoch: a run killed during its first
    # save (the state in place, config.json not yet) resumes from that file alone
    meta: dict[str, Any] = {"epoch": 0, "history": [], "command": config.command, "config": model_config}
    run = _Run(config, out, train_set, test_set, info, start, dist, device, vae, optimizer, steps_per_epoch, epochs, meta)
    if config.resume:
        run.meta = resume_state(out, model_config, vae, optimizer)
        if run.meta["epoch"] >= epochs and run.log:
            print(f"{out}: already trained for {run.meta['epoch']} epochs")
    if run.main_process:
        out.mkdir(parents=True, exist_ok=True)
        atomic.remove_save_debris(out)  # temporary files of a save killed outright
    return run


def _epoch_loader(run: _Run, epoch: int) -> DataLoader:
    """The epoch's batches: shuffled by (seed, epoch), or sharded over the ranks by a `DistributedSampler`."""
    config, pin = run.config, run.device.type == "cuda"
    if run.dist.enabled:
        sampler = torch.utils.data.DistributedSampler(run.train_set, num_replicas=run.dist.world_size, rank=run.dist.rank,
                                                      shuffle=True, seed=config.seed)
        sampler.set_epoch(epoch)
        return DataLoader(run.train_set, batch_size=config.batch_size, sampler=sampler, num_workers=config.num_workers, pin_memory=pin)
    order = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
    return DataLoader(run.train_set, batch_size=config.batch_size, shuffle=True, generator=order, num_workers=config.num_workers,
                      pin_memory=pin, drop_last=False)


def _train_epoch(run: _Run, epoch: int, forward: torch.nn.Module) -> tuple[float, float]:
    """One epoch of optimizer steps; returns the smoothed training loss and the seconds it took."""
    config, vae, optimizer, pin = run.config, run.vae, run.optimizer, run.device.type == "cuda"
    total_steps, warmup_steps = run.epochs * run.steps_per_epoch, int(config.warmup_epochs * run.steps_per_epoch)
    # Everything random in an epoch derives from (seed, epoch, rank): a resumed run repeats it exactly.
    torch.manual_seed(config.seed * 100_003 + epoch + 7919 * run.dist.rank)
    loader = _epoch_loader(run, epoch)
    vae.train()
    running, began = 0.0, time.perf_counter()
    bar = tqdm(loader, desc=f"epoch {epoch + 1}/{run.epochs}", disable=not run.progress, leave=False)
    for i, batch in enumerate(bar):
        step = epoch * run.steps_per_epoch + i
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, total_steps, config.lr, config.lr_schedule)
        x = batch_images(batch).to(run.device, non_blocking=pin)
        if config.binarize:  # drawn from the epoch's seeded global RNG: a resumed run draws the same pixels
            x = torch.bernoulli(x.clamp(0, 1))
        with torch.autocast(run.device.type, dtype=torch.bfloat16, enabled=run.autocast):
            out_x, posterior, z = forward(x)
        result = vae.objective(x, out_x, posterior, kl_warmup(step, warmup_steps, config.beta), z)
        optimizer.zero_grad(set_to_none=True)
        result["loss"].backward()
        optimizer.step()
        loss = result["loss"].item()
        if not math.isfinite(loss):  # stop at once: nothing of this epoch is saved, the last checkpoint stays as it was
            raise FloatingPointError(_diverged(run, epoch, f"the training loss was {loss} at epoch {epoch + 1}, step {i + 1} of "
                                               f"{run.steps_per_epoch} (optimizer step {step + 1})"))
        running = loss if i == 0 else 0.98 * running + 0.02 * loss
        if i % 20 == 0:
            bar.set_postfix(loss=f"{running:.2f}", kl=f"{result['kl'].item():.1f}")
    return running, time.perf_counter() - began


def _end_epoch(run: _Run, epoch: int, running: float, seconds: float) -> None:
    """After an epoch, rank 0 evaluates on the held-out set, prints a line and writes the checkpoint (the trainer
    state first); the other ranks wait for it."""
    if not all(bool(torch.isfinite(p).all()) for p in run.vae.parameters()):  # the same on every rank: all stop
        raise FloatingPointError(_diverged(run, epoch, f"the weights were not finite at the end of epoch {epoch + 1}, step "
                                           f"{run.steps_per_epoch} of {run.steps_per_epoch}"))
    run.meta["epoch"] = epoch + 1
    if not run.main_process:
        run.dist.barrier()  # wait while rank 0 evaluates and writes the checkpoint
        return
    held_out = evaluate(run.vae, run.test_set, batch_size=500, seed=run.config.seed)
    if not math.isfinite(held_out["neg_elbo_nats"]):
        raise FloatingPointError(_diverged(run, epoch, f"the held-out -ELBO was {held_out['neg_elbo_nats']} after epoch {epoch + 1}, "
                                           f"step {run.steps_per_epoch} of {run.steps_per_epoch}"))
    run.meta["history"].append({"epoch": epoch + 1, "train_loss": running, "seconds": seconds, **held_out})
    if run.log:
        print(f"epoch {epoch + 1}/{run.epochs}: train loss {running:.2f}, held-out -ELBO {held_out['neg_elbo_nats']:.2f} nats "
              f"({held_out['neg_elbo_bits_per_dim']:.4f} bits/dim)", flush=True)
    save_state(run.out / STATE_NAME, run.vae, run.optimizer, run.meta)
    run.vae.save_pretrained(run.out)
    run.dist.barrier()


def _diverged(run: _Run, epoch: int, what: str) -> str:
    """The error of a run that diverged in ``epoch`` (0-based): ``what`` was not finite, what was kept, what to try."""
    lr = run.config.lr
    kept = (f"the checkpoint of epoch {epoch} in {str(run.out)!r} is kept as it was; retry with a lower learning rate "
            f"(--lr, e.g. {lr / 10:g}; this run: {lr:g}) and resume=True (--resume) to continue from epoch {epoch}") if epoch else (
            f"nothing was saved in {str(run.out)!r}; retry with a lower learning rate (--lr, e.g. {lr / 10:g}; this run: {lr:g})")
    return f"training diverged: {what}; {kept}"


def _finish(run: _Run) -> VAE:
    """The end of a run: on rank 0, the training set's reference statistics, the final held-out figures (with the
    importance-weighted NLL), ``metrics.json`` and the model card; the other ranks only leave the process group."""
    config, vae = run.config, run.vae
    in_sync = run.dist.ranks_in_sync(vae)
    if not run.main_process:
        run.dist.close()
        return vae.eval()
    vae.eval()
    reference = reference_statistics(vae, run.train_set, num_workers=config.num_workers)
    final = evaluate(vae, run.test_set, iw_k=config.iw_k, batch_size=100 if config.iw_k else 500, seed=config.seed,
                     progress=run.progress)
    vae.metrics = _metrics(run, final, reference, in_sync)
    vae.save_pretrained(run.out, refresh_card=True)  # with metrics.json, and the card regenerated with the final figures
    if run.log:
        print(f"test: -ELBO {final['neg_elbo_nats']:.2f} nats/image ({final['neg_elbo_bits_per_dim']:.4f} bits/dim)"
              + (f", IW-NLL (k={config.iw_k}) {final['iw_nll_nats']:.2f} nats" if config.iw_k else "")
              + f"; saved to {run.out}", flush=True)
    run.dist.close()
    return vae


def _metrics(run: _Run, final: dict[str, Any], reference: dict[str, Any], in_sync: bool) -> dict[str, Any]:
    """``metrics.json`` of a finished run: the data, the final held-out figures, the history and the settings."""
    config, meta = run.config, run.meta
    resumed_by_another = config.resume and meta.get("command") not in (None, config.command)
    settings = {name: getattr(config, name) for name in ("batch_size", "binarize", "lr", "lr_schedule", "beta", "warmup_epochs", "seed")}
    return {
        "dataset": run.info["dataset"], "holdout": run.info.get("holdout", "test_data"), "command": meta.get("command") or config.command,
        **({"resumed_with": config.command} if resumed_by_another else {}),
        "epochs": meta["epoch"], "train_images": len(run.train_set), "test": final, "history": meta["history"], **reference,
        "training": {**settings, "device": str(run.device), "world_size": run.dist.world_size, "ranks_in_sync": in_sync,
                     "precision": "bf16" if run.autocast else "fp32",
                     **({"init": _spec_name(config.init, run.start)} if run.start is not None else {})},
    }


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
