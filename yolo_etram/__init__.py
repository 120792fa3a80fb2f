"""yolo-etram: recurrent event-camera object detection as an Ultralytics plugin.

Importing the package is cheap (no torch, no Ultralytics); ``EventYOLO`` and the Ultralytics integration load on first
use, so ``etram-yolo prepare`` and ``synth`` start fast. The import sets Ultralytics' offline defaults
(:mod:`yolo_etram.utils.env`) before any of our modules can import Ultralytics, and answers the module paths of earlier
releases for old checkpoints (:mod:`yolo_etram.utils.legacy`).

Usage:
    >>> from yolo_etram import EventYOLO
    >>> EventYOLO("rvt-t.yaml").train(data="etram-synth.yaml", epochs=1)
"""

from yolo_etram.utils import env as _env
from yolo_etram.utils import legacy as _legacy

__version__ = "0.1.0"

_env.apply_offline_defaults()
_legacy.install()

_LAZY = {"EventYOLO": "yolo_etram.model"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'yolo_etram' has no attribute {name!r}")
