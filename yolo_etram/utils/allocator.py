"""Keep glibc's allocator from handing freed memory back to the kernel during CPU work."""

from __future__ import annotations

import ctypes
import os
import platform

VARIABLE = "YOLO_ETRAM_KEEP_FREED_MEMORY"  # 0: leave glibc's defaults

# mallopt(3) settings: blocks up to 32 MiB (glibc's largest mmap threshold) come from the heap; the heap top is trimmed
# only past 1 GiB free, and grows in 256 MiB steps. Name -> (mallopt parameter, value); glibc reads the same settings
# from the environment as MALLOC_<name without M_>_ (see environment_variables), which is how a benchmark gives them to
# another program
SETTINGS = {"M_MMAP_THRESHOLD": (-3, 32 << 20), "M_TRIM_THRESHOLD": (-1, 1 << 30), "M_TOP_PAD": (-2, 256 << 20)}
_applied = False


def keep_freed_memory(device) -> bool:
    """On CPU under glibc, reuse freed memory instead of returning it to the kernel; True when the setting is in force.

    A window's activations are a few MB each and a training step's tens of MB, freed and asked for again every window.
    With glibc's defaults the heap top is trimmed and large blocks are mapped afresh, so every window page-faults and
    the kernel zeroes those pages again. Measured by ``benchmarks/bench_vs_rvt.py`` (RVT's own code with and without
    the same settings too): a quarter fewer minor page faults and ~13% less kernel time for our model; the wall-time
    gain was within that machine's noise. The price is that the process's resident memory stays near its peak.
    ``YOLO_ETRAM_KEEP_FREED_MEMORY=0`` leaves glibc's defaults. Process-wide, idempotent, and a no-op on CUDA devices,
    other C libraries and other systems.
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
    _applied = all(libc.mallopt(param, value) == 1 for param, value in SETTINGS.values())
    return _applied


def environment_variables() -> dict[str, str]:
    """The same settings as glibc's environment variables, for a child process that is not ours."""
    return {f"MALLOC_{name[2:]}_": str(value) for name, (_, value) in SETTINGS.items()}
