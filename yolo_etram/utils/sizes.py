"""Input sizes the recurrent backbone can take: height and width must be multiples of ``32 x partition`` (eTraM's
360x640 is zero-padded bottom/right to 384x640); box coordinates do not change with the padding.

Usage:
    >>> round_up((360, 640), (192, 320))
    (384, 640)
    >>> pad_to_multiple(torch.zeros(1, 20, 360, 640), (192, 320)).shape
    torch.Size([1, 20, 384, 640])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def round_up(hw: Sequence[int], multiple: Sequence[int]) -> tuple[int, int]:
    """``(H, W)`` rounded up to multiples of ``multiple``: the zero-padded size the partitions divide."""
    return -(-int(hw[0]) // multiple[0]) * multiple[0], -(-int(hw[1]) // multiple[1]) * multiple[1]


def pad_to_multiple(img: torch.Tensor, multiple: Sequence[int]) -> torch.Tensor:
    """Zero-pad the last two dimensions bottom/right to multiples of ``multiple``."""
    import torch.nn.functional as F

    h, w = img.shape[-2:]
    hp, wp = round_up((h, w), multiple)
    return F.pad(img, (0, wp - w, 0, hp - h)) if (hp, wp) != (h, w) else img
