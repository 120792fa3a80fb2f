"""Event representations: one window of events -> one dense frame, bit-identical to each reference's own code.

| name | reference | channels | dtype |
|---|---|---|---|
| ``stacked_histogram`` | RVT ``StackedHistogram`` (default, cutoff 10) | 2 x nbins | uint8 |
| ``mixeddensity_stack`` | RVT ``MixedDensityEventStack`` (cutoff 32) | nbins | int8 |
| ``vtei`` | ReYOLOv8 ``formats_utils.vtei`` | nbins | int8 |
| ``mdes`` | ReYOLOv8 ``formats_utils.mdes`` | nbins | int8 |
| ``voxel_grid`` | ReYOLOv8 ``formats_utils.voxel_grid`` | 2 x nbins | float16 |

Usage:
    >>> from yolo_etram.data.representations import build_representation
    >>> rep = build_representation("mixeddensity_stack", height=720, width=1280, nbins=10, cutoff=32, downsample=2)
    >>> rep.shape, rep.dtype
    ((10, 360, 640), dtype('int8'))
"""

from __future__ import annotations

from .base import DOWNSAMPLE_FACTORS, EventRepresentation, check_downsample, linear_bins, normalised_time
from .mixed_density import MDES, MixedDensityStack
from .stacked_histogram import StackedHistogram
from .voxel_grid import VoxelGrid
from .vtei import VTEI

REPRESENTATIONS: dict[str, type[EventRepresentation]] = {
    cls.name: cls for cls in (StackedHistogram, MixedDensityStack, VTEI, MDES, VoxelGrid)
}


def representation_class(name: str) -> type[EventRepresentation]:
    """The class of representation ``name``; an unknown name is a ``ValueError`` listing the known ones."""
    if name not in REPRESENTATIONS:
        raise ValueError(f"unknown representation '{name}' (choose from {', '.join(REPRESENTATIONS)})")
    return REPRESENTATIONS[name]


def build_representation(name: str, height: int, width: int, **kwargs) -> EventRepresentation:
    """Representation ``name`` for a ``height`` x ``width`` sensor (``nbins``, ``cutoff``, ``downsample``: defaults
    of the representation)."""
    return representation_class(name)(height, width, **kwargs)


__all__ = [
    "DOWNSAMPLE_FACTORS",
    "MDES",
    "REPRESENTATIONS",
    "VTEI",
    "EventRepresentation",
    "MixedDensityStack",
    "StackedHistogram",
    "VoxelGrid",
    "build_representation",
    "check_downsample",
    "linear_bins",
    "normalised_time",
    "representation_class",
]
