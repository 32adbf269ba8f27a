"""Data-parallel supernet training under PyTorch's own launcher (``torchrun``).

``torchrun --standalone --nproc-per-node N "$(command -v nas-supernet)" train ...`` starts N
processes with ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` in their environment; this module
joins them into one process group (gloo on CPU, NCCL on CUDA) and averages gradients.

Why an all-reduce of our own and not ``DistributedDataParallel``: one supernet step runs
several members (the sandwich), each a different subset of the parameters, and sums their
gradients before one optimizer step.  DDP reduces once per backward and needs
``find_unused_parameters`` to cope with paths that change per step; here every process runs
the same members (they are a function of the seed and the step), so the parameters holding a
gradient are the same set in every process, and one coalesced all-reduce after the last
backward is exactly DDP's averaging, without its per-backward hooks.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["World", "join", "average_gradients"]


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """The one process that writes checkpoints and shows progress."""
        return self.rank == 0


def join(device: torch.device) -> World:
    """This process's place in the launcher's world; a single process when not launched by torchrun."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return World(rank, size, local)


def leave(world: World) -> None:
    if world.size > 1 and dist.is_initialized():
        dist.destroy_process_group()


def broadcast_parameters(module: torch.nn.Module, world: World) -> None:
    """Every process starts from rank 0's weights and buffers (they are seeded alike; this makes sure)."""
    if world.size > 1:
        for t in module.state_dict().values():
            dist.broadcast(t, 0)


def average_gradients(params, world: World) -> None:
    """Average the gradients of ``params`` over the world in one coalesced all-reduce."""
    if world.size <= 1:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world.size
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset:offset + n].view_as(g))
        offset += n

