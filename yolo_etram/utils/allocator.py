"""Keep glibc's allocator from handing freed memory back to the kernel during CPU work."""

from __future__ import annotations

import ctypes
import os
import platform

VARIABLE = "YOLO_ETRAM_KEEP_FREED_MEMORY"  # 0: leave glibc's defaults

# mallopt(3) parameters and the values we set: blocks up to 32 MiB (glibc's largest mmap threshold) come from the heap;
# the heap top is trimmed only past 1 GiB free, and grows in 256 MiB steps
_SETTINGS = {-3: 32 << 20, -1: 1 << 30, -2: 256 << 20}  # M_MMAP_THRESHOLD, M_TRIM_THRESHOLD, M_TOP_PAD
_applied = False


def keep_freed_memory(device) -> bool:
    """On CPU under glibc, reuse freed memory instead of returning it to the kernel; True when the setting is in force.

    A window's activations are a few MB each and a training step's tens of MB, freed and asked for again every window.
    With glibc's defaults the heap top is trimmed and large blocks are mapped afresh, so every window page-faults and
    the kernel zeroes those pages again: measured ~15% of a backbone or detector forward on CPU
    (``benchmarks/bench_vs_rvt.py`` prints RVT's own code with and without the same setting). The price is that the
    process's resident memory stays near its peak. ``YOLO_ETRAM_KEEP_FREED_MEMORY=0`` leaves glibc's defaults.
    Process-wide, idempotent, and a no-op on CUDA devices, other C libraries and other systems.
    """
    global _applied
    import torch

    if torch.device(device).type != "cpu" or os.environ.get(VARIABLE, "1") == "0":
        return False
    if _applied:
        return True
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(None)
    if not hasattr(libc, "mallopt"):
        return False
    _applied = all(libc.mallopt(param, value) == 1 for param, value in _SETTINGS.items())
    return _applied
