"""One process or a ``torchrun`` group: rank, world size and device from the environment, and the
few collectives the trainer needs (barrier, buffer broadcast, gather)."""

from __future__ import annotations

import os
import platform

import torch
import torch.distributed as torch_dist
import torch.nn as nn

from ..errors import InvalidInputError

__all__ = ["Distributed", "hardware_description"]


class Distributed:
    """Rank/world/device from torchrun's environment; a single process when absent."""

    def __init__(self, device: str):
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
        if device == "cuda" and not torch.cuda.is_available():
            raise InvalidInputError("--device cuda was asked for but no CUDA GPU is available")
        self.device = torch.device(f"cuda:{self.local_rank}" if use_cuda else "cpu")
        if use_cuda:
            torch.cuda.set_device(self.device)
        if self.world_size > 1 and not torch_dist.is_initialized():
            torch_dist.init_process_group(backend="nccl" if use_cuda else "gloo")

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0, the process that logs and writes."""
        return self.rank == 0

    def barrier(self) -> None:
        """Wait for every rank (no-op for one process)."""
        if self.world_size > 1:
            torch_dist.barrier()

    def broadcast_buffers(self, module: nn.Module) -> None:
        """Copy rank 0's buffers (BatchNorm statistics) to every rank."""
        if self.world_size > 1:
            for buffer in module.buffers():
                torch_dist.broadcast(buffer, src=0)

    def all_gather(self, obj) -> list:
        """Every rank's ``obj``, in rank order."""
        if self.world_size == 1:
            return [obj]
        out = [None] * self.world_size
        torch_dist.all_gather_object(out, obj)
        return out

    def close(self) -> None:
        """Leave the process group, if one was joined."""
        if self.world_size > 1 and torch_dist.is_initialized():
            torch_dist.destroy_process_group()


def hardware_description(device: torch.device | None = None) -> str:
    """One line naming the GPU, or the CPU and its thread count, and the torch version."""
    if device is not None and device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA), torch {torch.__version__}"
    return f"{platform.machine()} CPU, {torch.get_num_threads()} threads, torch {torch.__version__}"
