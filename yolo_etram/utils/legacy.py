"""Module paths of earlier releases, so that checkpoints pickled before a move still load.

A checkpoint pickles every class by its module path (``yolo_etram.yolox_head.YOLOXDetect``). When a module moves, the
old path is answered by the new module (the same module object, so classes stay identical), the way Ultralytics'
``temporary_modules`` maps its own moved modules; renamed classes are looked up through :data:`LEGACY_NAMES` by the
module that kept the old name (``yolo_etram.model`` answers ``RecurrentDetectionModel``).

Installed once by ``import yolo_etram`` (which every import of a submodule, and so every unpickling, runs first).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

LEGACY_MODULES = {
    # layout before the one-way house (0.1.x) -> now
    "yolo_etram.yolox_head": "yolo_etram.nn.yolox_head",
    "yolo_etram.yolox_loss": "yolo_etram.nn.yolox_loss",
    "yolo_etram.size_aware": "yolo_etram.nn.size_aware_loss",
    "yolo_etram.rvt_import": "yolo_etram.nn.rvt_import",
    "yolo_etram.experiment": "yolo_etram.metrics.records",
    "yolo_etram.errors": "yolo_etram.utils.errors",
    "yolo_etram.paths": "yolo_etram.utils.paths",
}
LEGACY_NAMES = {
    # (old module, old name) -> (module, name)
    ("yolo_etram.model", "RecurrentDetectionModel"): ("yolo_etram.nn.detection_model", "EventDetectionModel"),
}


class _LegacyModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Answers an old module path with the module that now holds its code."""

    def find_spec(self, name, path=None, target=None):
        if name in LEGACY_MODULES:
            return importlib.util.spec_from_loader(name, self)
        return None

    def create_module(self, spec):
        return importlib.import_module(LEGACY_MODULES[spec.name])

    def exec_module(self, module):
        pass  # already executed under its new name


def install() -> None:
    """Answer the old module paths from now on in this process (idempotent)."""
    if not any(isinstance(f, _LegacyModuleFinder) for f in sys.meta_path):
        sys.meta_path.append(_LegacyModuleFinder())


def legacy_attribute(module: str, name: str):
    """The object an old ``module.name`` path now refers to; ``AttributeError`` when there is none."""
    if (module, name) not in LEGACY_NAMES:
        raise AttributeError(f"module {module!r} has no attribute {name!r}")
    new_module, new_name = LEGACY_NAMES[(module, name)]
    return getattr(importlib.import_module(new_module), new_name)
