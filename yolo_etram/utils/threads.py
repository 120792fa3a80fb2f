"""CPU threads for event models."""

from __future__ import annotations

import os

THREADS_VARIABLE = "YOLO_ETRAM_CPU_THREADS"  # threads per process; OMP_NUM_THREADS cannot say it: Ultralytics sets 1


def use_all_cpu_threads(device) -> None:
    """On CPU, compute with every core: Ultralytics' ``select_device`` keeps one free for image decoding, which event
    clips barely need (one small HDF5 read per clip), and that would halve the recurrent model's throughput.

    The ranks of one node share its cores (``LOCAL_WORLD_SIZE``, set by torchrun): more threads than cores slow every
    rank 5-7x. ``YOLO_ETRAM_CPU_THREADS`` overrides the count (e.g. a node shared with other jobs)."""
    import torch

    if torch.device(device).type != "cpu":
        return
    wanted = os.environ.get(THREADS_VARIABLE, "")
    if wanted.isdigit() and int(wanted) > 0:
        torch.set_num_threads(int(wanted))
        return
    ranks_here = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    torch.set_num_threads(max((os.cpu_count() or 1) // ranks_here, 1))
