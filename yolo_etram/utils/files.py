"""Atomic writes: a reader sees the old file or the new one, never half of one (write aside, then rename).

Usage:
    >>> from yolo_etram.utils.files import save_npy_atomic, save_text_atomic
    >>> save_npy_atomic("labels_v2/timestamps_us.npy", t)
    >>> save_text_atomic("run/experiment_results.json", text)
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np


def atomic_path(path: str | Path) -> Path:
    """A temporary sibling of ``path`` to write to before :func:`os.replace` makes it visible."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; the final file gets the usual permissions
    return Path(tmp)


@contextmanager
def atomic_write(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write ``path``'s content to; it replaces ``path`` when the block ends without error."""
    path = Path(path)
    tmp = atomic_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_npy_atomic(path: str | Path, array: np.ndarray) -> None:
    """``np.save`` that never leaves a half-written file under ``path``."""
    with atomic_write(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array)


def save_npz_atomic(path: str | Path, **arrays: np.ndarray) -> None:
    """``np.savez`` that never leaves a half-written file under ``path``."""
    with atomic_write(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def save_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` so that a reader sees the old file or the new one, never half of it."""
    with atomic_write(path) as tmp:
        tmp.write_text(text)
