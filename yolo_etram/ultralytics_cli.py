"""Run the stock Ultralytics CLI (``yolo MODE key=value ...``) with this plugin active.

``etram-yolo train model=rvt-t.yaml ...`` is ``yolo train ...`` with our layers registered, ``EventYOLO`` in place of
``YOLO`` for this process only, and bare names of our YAMLs resolved from any working directory.
"""

from __future__ import annotations

import sys


def activate() -> None:
    """Register our layers and make ``ultralytics.YOLO`` our ``EventYOLO`` in this process (idempotent)."""
    import ultralytics

    from yolo_etram.integrations.ultralytics import activate_for_process
    from yolo_etram.model import EventYOLO
    from yolo_etram.nn.registry import register_layers

    register_layers()
    activate_for_process()  # this process is ours: every .pt it opens is read safely, stateful OpenVINO loads
    ultralytics.YOLO = EventYOLO


def one_line_errors(entrypoint):
    """Wrap Ultralytics' ``entrypoint`` so our user errors print one line and exit 2 (others are untouched)."""
    import functools

    @functools.wraps(entrypoint)
    def wrapped(*args, **kwargs):
        from yolo_etram.utils.errors import run_cli

        rc = run_cli(entrypoint, *args, prog="yolo")
        if rc:
            sys.exit(rc)

    return wrapped


def _resolve_args(argv: list[str]) -> list[str]:
    from yolo_etram.utils.paths import find_cfg

    out = []
    for a in argv:
        key, eq, value = a.partition("=")
        if eq and key in ("model", "data"):
            found = find_cfg(value, "models" if key == "model" else "datasets")
            if found is not None:
                a = f"{key}={found}"
        out.append(a)
    return out


def run_ultralytics(argv: list[str]) -> int:
    activate()
    from ultralytics.cfg import entrypoint

    sys.argv = [sys.argv[0], *_resolve_args(argv)]  # entrypoint() parses sys.argv[1:]
    entrypoint()
    return 0


if __name__ == "__main__":
    sys.exit(run_ultralytics(sys.argv[1:]))
