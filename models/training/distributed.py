"""torch.distributed plumbing for training: one process per device, launched by ``torchrun``.

``torchrun --nproc_per_node=N -m bci_app.cli.train typing|speech ...`` (or
``python -m torch.distributed.run``) sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the
rendezvous address in the environment; :func:`setup` reads them, joins the process group
(``nccl`` on CUDA, ``gloo`` on CPU) and pins the process to its GPU. Without them it is a plain
single process (world size 1). Only rank 0 logs, shows progress bars and writes files
(:attr:`DistContext.is_main`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    """Where this process runs: rank, world size, device and the process-group backend."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0 (the one that logs and writes)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """Whether a process group of more than one process is running."""
        return self.world_size > 1


def resolve_device(device: str) -> torch.device:
    """Turn ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` into a device (CUDA checked)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(device, str) or device.split(":")[0] not in ("cpu", "cuda"):
        raise ValueError(
            f"Invalid value for 'device': {device!r}. Use 'auto', 'cpu', 'cuda' or 'cuda:N'."
        )
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(
            f"Invalid value for 'device': {device!r} but torch sees no CUDA device (torch "
            f"{torch.__version__}). Use --device cpu, or install a CUDA build of torch."
        )
    return torch.device(device)


def setup(device: str = "auto") -> DistContext:
    """Join the ``torchrun`` process group if the environment says so; return the context."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    base = resolve_device(device)
    if world_size <= 1:
        return DistContext(device=base)
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if base.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(
                f"Local rank {local_rank} has no GPU: this node has {torch.cuda.device_count()}. "
                "Start at most one process per GPU (--nproc_per_node)."
            )
        base = torch.device("cuda", local_rank)
        torch.cuda.set_device(base)
    backend = "nccl" if base.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    if base.type == "cpu":
        # Processes share the machine's cores; without this each one starts a full thread pool.
        torch.set_num_threads(
            max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", world_size)))
        )
    return DistContext(rank, world_size, local_rank, base, backend)


def cleanup(ctx: DistContext) -> None:
    """Leave the process group (all ranks wait for each other first)."""
    if ctx.distributed and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def broadcast(ctx: DistContext, value: Any) -> Any:
    """Return rank 0's ``value`` on every rank (any picklable object)."""
    if not ctx.distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(ctx: DistContext, value: Any) -> list[Any]:
    """Return every rank's ``value`` (rank order) on every rank."""
    if not ctx.distributed:
        return [value]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, value)
    return out


def sum_scalars(ctx: DistContext, *values: float) -> list[float]:
    """Sum floats over ranks (one all-reduce)."""
    if not ctx.distributed:
        return [float(v) for v in values]
    tensor = torch.tensor(values, dtype=torch.float64, device=ctx.device)
    dist.all_reduce(tensor)
    return tensor.tolist()
