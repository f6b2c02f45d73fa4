"""Where training runs: the default device, and the torchrun environment (DistributedDataParallel)."""

from __future__ import annotations

import os

import torch
import torch.distributed
import torch.nn.parallel

from .models import VAE


def default_device() -> torch.device:
    """cuda, then mps, then cpu."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


class Distributed:
    """The torchrun environment (RANK, WORLD_SIZE, LOCAL_RANK), or a single process."""

    def __init__(self, rank: int = 0, world_size: int = 1, device: torch.device | None = None):
        self.rank, self.world_size, self.device = rank, world_size, device
        self.enabled = world_size > 1

    @classmethod
    def from_env(cls, device) -> "Distributed":
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
