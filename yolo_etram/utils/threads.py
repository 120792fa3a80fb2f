"""CPU threads for event models."""

from __future__ import annotations

import os


def use_all_cpu_threads(device) -> None:
    """On CPU, compute with every core: Ultralytics' ``select_device`` keeps one free for image decoding, which event
    clips barely need (one small HDF5 read per clip), and that would halve the recurrent model's throughput."""
    import torch

    if torch.device(device).type == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)
