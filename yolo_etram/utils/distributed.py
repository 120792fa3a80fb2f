"""torch.distributed for training: the process group a launcher describes, on CUDA (NCCL) or CPU (gloo).

Two launchers start the ranks: ``torchrun`` (one node or several; ``--standalone`` or a rendezvous endpoint) and
Ultralytics' own (``yolo train ... device=0,1``, which runs ``torch.distributed.run`` over a generated script). Either
sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE`` and ``MASTER_ADDR``/``MASTER_PORT``; the world is the global
``WORLD_SIZE`` (every rank of every node), not this machine's device count.

Usage:
    $ torchrun --standalone --nproc_per_node 2 $(which etram-yolo) train model=rvt-t.yaml data=etram.yaml device=cpu
    >>> if launched(): backend = init_process_group(torch.device("cpu"))
"""

from __future__ import annotations

import os
from datetime import timedelta

# the longest wait in a collective: the other ranks wait while rank 0 validates the whole split (Ultralytics' own 3 h);
# a rank that fails ends the run at once (torchrun stops the others), this only bounds a rank that hangs
TIMEOUT = timedelta(hours=3)


def world_size() -> int:
    """The number of ranks the launcher started (1 outside a launcher)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def launched() -> bool:
    """Whether this process is one rank of several started by torchrun or Ultralytics' launcher."""
    return "LOCAL_RANK" in os.environ and world_size() > 1


def rank() -> int:
    return int(os.environ.get("RANK", "0") or 0)


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0") or 0)


def init_process_group(device) -> str:
    """Join the launcher's process group on ``device``'s backend (NCCL for CUDA, gloo for CPU); returns the backend."""
    import torch.distributed as dist

    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend, init_method="env://", rank=rank(), world_size=world_size(), timeout=TIMEOUT)
    return dist.get_backend()


def initialized() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def leave() -> None:
    """Wait for every rank, then dissolve the process group (training is over; rank 0 validates alone)."""
    import torch.distributed as dist

    if initialized():
        dist.barrier()
        dist.destroy_process_group()


def broadcast(obj, src: int = 0):
    """``obj`` as rank ``src`` has it, on every rank (a no-op outside a process group)."""
    import torch.distributed as dist

    if not initialized():
        return obj
    box = [obj if dist.get_rank() == src else None]
    dist.broadcast_object_list(box, src)
    return box[0]


def describe() -> dict:
    """``{world_size, backend}`` of this run, for its record."""
    import torch.distributed as dist

    if initialized():
        return {"world_size": dist.get_world_size(), "backend": dist.get_backend()}
    return {"world_size": 1, "backend": None}
