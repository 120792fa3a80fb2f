"""keep_freed_memory: glibc's mallopt settings for CPU work, their opt-out, and no-ops where they do not apply.
The speed it buys is measured by benchmarks/bench_vs_rvt.py (with and without it, on RVT's code too)."""

import platform

from yolo_etram.utils import allocator


def test_keep_freed_memory_on_cpu_only_and_with_an_opt_out(monkeypatch):
    monkeypatch.setattr(allocator, "_applied", False)
    monkeypatch.setenv(allocator.VARIABLE, "0")
    assert allocator.keep_freed_memory("cpu") is False  # opted out: glibc's defaults stay
    monkeypatch.delenv(allocator.VARIABLE)
    assert allocator.keep_freed_memory("cuda:0") is False  # GPU work: host allocations are not the cost
    assert allocator._applied is False
    glibc = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    assert allocator.keep_freed_memory("cpu") is glibc  # mallopt accepted all three settings
    assert allocator.keep_freed_memory("cpu") is glibc  # idempotent


def test_environment_variables_name_the_same_settings():
    env = allocator.environment_variables()
    assert env == {
        "MALLOC_MMAP_THRESHOLD_": str(32 << 20),
        "MALLOC_TRIM_THRESHOLD_": str(1 << 30),
        "MALLOC_TOP_PAD_": str(256 << 20),
    }
