"""Register our layers (recurrent backbones, the YOLOX head) with Ultralytics' model-YAML parser.

Ultralytics resolves YAML layer names in the namespace of ``ultralytics.nn.tasks`` (no registry exists), so we add
our classes there, refusing to shadow a stock name. Pickled checkpoints reference the classes by their own module
path (``recurrent.maxvit_rnn.RecurrentMaxViT``), which stays stable.
"""

from __future__ import annotations

from recurrent import RecurrentMaxViT

PLUGIN_LAYERS = (RecurrentMaxViT,)  # recurrent layers: a YAML that uses one is ours (paths.is_plugin_model_yaml)
PLUGIN_LAYER_NAMES = frozenset(cls.__name__ for cls in PLUGIN_LAYERS)


def head_layers() -> tuple:
    """Our detection heads (they import Ultralytics): ``YOLOXDetect``, RVT's YOLOX head."""
    from yolo_etram.yolox_head import YOLOXDetect

    return (YOLOXDetect,)


def register_layers() -> None:
    """Make our layers usable by name in Ultralytics model YAMLs (idempotent)."""
    import ultralytics.nn.tasks as tasks

    for cls in (*PLUGIN_LAYERS, *head_layers()):
        existing = tasks.__dict__.get(cls.__name__)
        if existing is not None and existing is not cls:
            raise RuntimeError(f"yolo_etram: layer name {cls.__name__} would shadow Ultralytics' {existing!r}")
        setattr(tasks, cls.__name__, cls)


def set_batchnorm(model, eps: float = 1e-5, momentum: float = 0.1) -> None:
    """Give every BatchNorm of ``model`` these settings (a YAML's ``batchnorm:``; Ultralytics sets 1e-3 / 0.03)."""
    import torch.nn as nn

    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eps, m.momentum = float(eps), float(momentum)


def stateful_layers(model):
    """The modules of ``model`` that hold recurrent state."""
    from recurrent import RecurrentStateMixin

    return [m for m in model.modules() if isinstance(m, RecurrentStateMixin)]


register_layers()
