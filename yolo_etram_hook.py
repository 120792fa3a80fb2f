"""Lazy hook that makes the plain ``yolo`` / ``ultralytics`` commands load yolo-etram (installed with a ``.pth``).

It runs at interpreter start-up (from ``yolo_etram_hook.pth``) and does nothing unless the process is the ``yolo`` or
``ultralytics`` console script: then, right after ``ultralytics.cfg`` is imported, it registers our layers and puts
``EventYOLO`` in place of ``YOLO`` for this process. Stock models keep their stock classes (``EventYOLO`` falls back).
Idempotent (``.pth`` files can run twice); ``YOLO_ETRAM_HOOK=0`` switches it off. Other processes pay one ``os`` check.
"""

import os
import sys

CLI_NAMES = {"yolo", "ultralytics"}


class _ActivateAfterUltralyticsCfg:
    """Meta-path finder that wraps the loader of ``ultralytics.cfg`` so the plugin activates once it is loaded."""

    def find_spec(self, name, path=None, target=None):
        if name != "ultralytics.cfg":
            return None
        sys.meta_path.remove(self)
        import importlib.util

        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        exec_stock = spec.loader.exec_module

        def exec_module(module):
            exec_stock(module)
            from yolo_etram.ultralytics_cli import activate, one_line_errors

            activate()
            module.entrypoint = one_line_errors(module.entrypoint)  # the console script imports it after this

        spec.loader.exec_module = exec_module
        return spec


def install() -> bool:
    """Install the hook in this process if it is the yolo CLI; True when installed (now or before)."""
    if os.environ.get("YOLO_ETRAM_HOOK", "1").lower() in {"0", "false", "no", "off"}:
        return False
    if os.path.basename(sys.argv[0] if sys.argv else "") not in CLI_NAMES:
        return False
    if not any(isinstance(h, _ActivateAfterUltralyticsCfg) for h in sys.meta_path):
        import yolo_etram  # noqa: F401  (sets the offline defaults before Ultralytics probes the network at import)

        sys.meta_path.insert(0, _ActivateAfterUltralyticsCfg())
    return True


install()
