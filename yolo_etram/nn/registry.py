"""Our layers by name in Ultralytics model YAMLs: the recurrent backbones, the YOLOX head and the blocks of
:mod:`yolo_etram.nn.blocks` (squeeze-excitation, spatial attention, deformable convolution).

Ultralytics resolves YAML layer names in the namespace of ``ultralytics.nn.tasks`` (no registry exists), so
:func:`register_layers` adds our classes there, refusing to shadow a stock name. It is an explicit call (the detection
model's constructor and the ``yolo`` hook make it), not an import side effect. Pickled checkpoints reference the classes
by their own module path (``recurrent.maxvit_rnn.RecurrentMaxViT``), so loading needs no registration.

Usage:
    >>> register_layers()
    >>> is_plugin_model_yaml("rvt-t.yaml")
    True
"""

from __future__ import annotations

from pathlib import Path

from recurrent import RecurrentMaxViT
from yolo_etram.utils.paths import find_cfg

PLUGIN_LAYERS = (RecurrentMaxViT,)  # recurrent layers: a YAML that uses one is ours (is_plugin_model_yaml)
PLUGIN_LAYER_NAMES = frozenset(cls.__name__ for cls in PLUGIN_LAYERS)


def head_layers() -> tuple:
    """Our detection heads and blocks (they import Ultralytics): ``YOLOXDetect``, RVT's YOLOX head, and
    :data:`yolo_etram.nn.blocks.BLOCKS`."""
    from yolo_etram.nn.blocks import BLOCKS
    from yolo_etram.nn.yolox_head import YOLOXDetect

    return (YOLOXDetect, *BLOCKS)


def register_layers() -> None:
    """Make our layers usable by name in Ultralytics model YAMLs (idempotent)."""
    import ultralytics.nn.tasks as tasks

    for cls in (*PLUGIN_LAYERS, *head_layers()):
        existing = tasks.__dict__.get(cls.__name__)
        if existing is not None and existing is not cls:
            raise RuntimeError(f"yolo_etram: layer name {cls.__name__} would shadow Ultralytics' {existing!r}")
        setattr(tasks, cls.__name__, cls)


def is_plugin_model_yaml(name: str | Path) -> bool:
    """True if ``name`` is (or resolves to) a model YAML whose first layer is one of our recurrent layers."""
    p = find_cfg(name, "models")
    if p is None or p.suffix not in (".yaml", ".yml"):
        return False
    import yaml

    d = yaml.safe_load(p.read_text()) or {}
    rows = (d.get("backbone") or []) + (d.get("head") or [])
    return any(isinstance(r, list) and len(r) > 2 and r[2] in PLUGIN_LAYER_NAMES for r in rows)
