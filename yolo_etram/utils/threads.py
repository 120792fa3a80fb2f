"""CPU threads for event models."""

from __future__ import annotations

import os


def use_all_cpu_threads(device) -> None:
    """On CPU, compute with every core: Ultralytics' ``select_device`` keeps one free for image decoding, which event
    clips barely need (one small HDF5 read per clip), and that would halve the recurrent model's throughput.

    ``OMP_NUM_THREADS``, when set, wins (torchrun sets 1 per rank for ``--nproc_per_node`` > 1 unless you set it);
    otherwise the ranks of one node share its cores (``LOCAL_WORLD_SIZE``): more threads than cores slow every
    rank 5-7x."""
    import torch

    if torch.device(device).type != "cpu":
        return
    wanted = os.environ.get("OMP_NUM_THREADS", "")
    if wanted.isdigit() and int(wanted) > 0:
        torch.set_num_threads(int(wanted))
        return
    ranks_here = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    torch.set_num_threads(max((os.cpu_count() or 1) // ranks_here, 1))
