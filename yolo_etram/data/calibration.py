"""Calibration inputs for INT8 post-training quantization of a stateful export: event windows of a prepared split,
each with the LSTM states that the fp32 model carried into it.

A recurrent graph sees two kinds of input, the window and the states; calibrating on windows with zero states (what
an image calibration set would give) would fit the quantizer to the first window of a sequence only. So the split is
streamed as validation streams it, the float model steps every window to carry the states, and every ``stride``-th
window is kept with the states it was given.

Usage:
    >>> samples = calibration_inputs(data, "val", imgsz=(384, 640), batch=1, step=step, zero_states=zeros)
    >>> images, *states = samples[0]  # numpy arrays in the graph's input order
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

from yolo_etram.utils.errors import EventDataError

from .build import build_event_dataloader, build_event_dataset, preprocess_event_batch

__all__ = ["calibration_inputs"]

Step = Callable[[torch.Tensor, list[torch.Tensor]], list[torch.Tensor]]


def calibration_inputs(
    data: dict,
    split: str,
    imgsz: Sequence[int],
    batch: int,
    step: Step,
    zero_states: Callable[[], list[torch.Tensor]],
    limit: int = 300,
    fraction: float = 1.0,
) -> list[tuple[np.ndarray, ...]]:
    """Up to ``limit`` graph inputs ``(images, *states)`` spread evenly over the first ``fraction`` of the split's
    windows in stream order (windows past the end of every slot's sequence, the stream's padding, are skipped).

    Args:
        data: the loaded event data YAML (``load_event_data``).
        split: which split to calibrate on (Ultralytics' default: ``val``).
        imgsz: the export's fixed ``(height, width)``; windows are zero-padded bottom/right to it.
        batch: the export's stream slots; each input holds one window per slot.
        step: ``step(images, states) -> new_states``, the float model.
        zero_states: the states of a fresh stream.
        limit: most inputs to return (NNCF's default calibration subset is 300).
        fraction: share of the split's windows to walk (Ultralytics' ``fraction``).
    """
    dataset = build_event_dataset(data[split], data, "val")
    if len(dataset.sequences) < batch:
        raise EventDataError(
            f"{data[split]}: INT8 calibration with batch={batch} needs as many sequences, the split has "
            f"{len(dataset.sequences)}; export with batch={len(dataset.sequences)} or fewer"
        )
    stored, size = tuple(dataset.hw), tuple(int(v) for v in imgsz)
    if stored[0] > size[0] or stored[1] > size[1]:
        raise EventDataError(
            f"{data[split]}: its windows are {stored[0]}x{stored[1]}, larger than the export's imgsz "
            f"{size[0]}x{size[1]}; export with imgsz={list(stored)} or larger"
        )
    loader = build_event_dataloader(dataset, data, batch, "val")
    windows = sum(len(seq) for seq in dataset.sequences)
    walk = max(1, math.ceil(windows / batch * fraction))  # time steps of all slots to walk through
    stride = max(1, math.ceil(walk / limit))
    states, samples, seen = zero_states(), [], 0
    for clips in loader:
        clips = preprocess_event_batch(clips, torch.device("cpu"), multiple=size)
        fresh = clips["is_first"]
        states = [torch.where(fresh.view(-1, *[1] * (s.ndim - 1)), torch.zeros_like(s), s) for s in states]
        padded = clips["padded"].view(clips["img"].shape[:2]).bool()  # (B, T): windows past a sequence's end
        for t in range(clips["img"].shape[1]):
            if padded[:, t].all():
                continue
            window = clips["img"][:, t].contiguous()
            if seen % stride == 0:
                samples.append((window.numpy().copy(), *(s.numpy().copy() for s in states)))
            states = step(window, states)
            seen += 1
            if seen >= walk or len(samples) >= limit:
                return samples
    return samples
