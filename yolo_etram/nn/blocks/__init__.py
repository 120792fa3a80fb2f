"""Blocks for model YAMLs, one idea per file: squeeze-excitation, spatial attention, deformable convolution.

Each is registered by :func:`yolo_etram.nn.registry.register_layers` and parsed like a ``Conv`` row (the input
channels come from the row it reads). None holds state across windows.

Usage (model YAML):
    - [16, 1, SmallObjectAttention, [32]]
    - [-1, 1, SqueezeExcite, [32]]
"""

from .deform_conv import DeformConv
from .parsed_as import parsed_as
from .small_object_attention import SmallObjectAttention
from .squeeze_excite import SqueezeExcite

BLOCKS = (SqueezeExcite, SmallObjectAttention, DeformConv)

__all__ = ["BLOCKS", "DeformConv", "SmallObjectAttention", "SqueezeExcite", "parsed_as"]
