"""The detection networks: the event detection model (recurrent, or a stock YAML as a memoryless baseline), RVT's
YOLOX head and loss, the size-aware loss, layer registration for model YAMLs, RVT checkpoint import, and the runtime of
stateful exports.

Modules: :mod:`.detection_model`, :mod:`.registry`, :mod:`.yolox_head`, :mod:`.yolox_loss`, :mod:`.size_aware_loss`,
:mod:`.batchnorm`, :mod:`.rvt_import`, :mod:`.exported`. The recurrent layers themselves are in the top-level
``recurrent`` package (pure PyTorch).

Usage:
    >>> from yolo_etram.nn import EventDetectionModel
    >>> model = EventDetectionModel("rvt-t.yaml")
"""

from recurrent import stateful_layers

from .batchnorm import RVT_BATCHNORM, set_batchnorm
from .detection_model import (
    EventDetectionModel,
    event_frame,
    find_event_model,
    load_model_yaml,
    set_partition,
)
from .registry import PLUGIN_LAYER_NAMES, PLUGIN_LAYERS, is_plugin_model_yaml, register_layers

__all__ = [
    "EventDetectionModel",
    "event_frame",
    "find_event_model",
    "load_model_yaml",
    "set_partition",
    "register_layers",
    "is_plugin_model_yaml",
    "PLUGIN_LAYERS",
    "PLUGIN_LAYER_NAMES",
    "stateful_layers",
    "set_batchnorm",
    "RVT_BATCHNORM",
]
