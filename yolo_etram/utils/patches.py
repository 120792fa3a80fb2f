"""The one place where we replace an Ultralytics internal for the duration of a call, and why each is needed.

Ultralytics has no hook for these seams; each patch is scoped to a ``with`` block and restored on exit:

- the trainer's ``check_amp`` downloads ``yolo26n.pt`` (offline machines fail): :func:`offline_amp_check`;
- the standalone validator's ``check_det_dataset`` does not know event data YAMLs: our loader for the call;
- the exporter's ``torch2onnx`` / ``torch2torchscript`` trace one input: ours trace the states too.

Usage:
    >>> import ultralytics.engine.trainer as engine
    >>> with patched(engine, "check_amp", offline_amp_check):
    ...     trainer._setup_train()
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def patched(owner: Any, name: str, replacement: Any) -> Iterator[Any]:
    """Replace ``owner.name`` by ``replacement`` inside the block; yields the original, restores it afterwards."""
    original = getattr(owner, name)
    setattr(owner, name, replacement)
    try:
        yield original
    finally:
        setattr(owner, name, original)


def offline_amp_check(model) -> bool:
    """AMP on CUDA without the stock check's ``yolo26n.pt`` download; the LSTM state stays float32 either way."""
    from ultralytics.utils import LOGGER

    device = next(model.parameters()).device
    if device.type != "cuda":
        return False
    LOGGER.info("AMP: enabled on CUDA (stock check skipped: it downloads yolo26n.pt); LSTM state stays float32")
    return True
