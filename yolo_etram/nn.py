"""Register our recurrent layers with Ultralytics' model-YAML parser.

Ultralytics resolves YAML layer names in the namespace of ``ultralytics.nn.tasks`` (no registry exists), so we add
our classes there, refusing to shadow a stock name. Pickled checkpoints reference the classes by their own module
path (``recurrent.maxvit_rnn.RecurrentMaxViT``), which stays stable.
"""

from __future__ import annotations

from recurrent import RecurrentMaxViT

PLUGIN_LAYERS = (RecurrentMaxViT,)
PLUGIN_LAYER_NAMES = frozenset(cls.__name__ for cls in PLUGIN_LAYERS)


def register_layers() -> None:
    """Make our layers usable by name in Ultralytics model YAMLs (idempotent)."""
    import ultralytics.nn.tasks as tasks

    for cls in PLUGIN_LAYERS:
        existing = tasks.__dict__.get(cls.__name__)
        if existing is not None and existing is not cls:
            raise RuntimeError(f"yolo_etram: layer name {cls.__name__} would shadow Ultralytics' {existing!r}")
        setattr(tasks, cls.__name__, cls)


def stateful_layers(model):
    """The modules of ``model`` that hold recurrent state."""
    from recurrent import RecurrentStateMixin

    return [m for m in model.modules() if isinstance(m, RecurrentStateMixin)]


register_layers()
