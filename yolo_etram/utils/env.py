"""Offline-safe Ultralytics defaults, applied when ``yolo_etram`` is first imported (before our code imports
Ultralytics) and by the ``yolo`` command hook.

Ultralytics probes the network at import (DNS), checks for pip updates, auto-installs missing packages and downloads
fonts and ``yolo26n.pt``. Our paths never need any of that; users can still opt back in by setting these variables
themselves (e.g. ``YOLO_OFFLINE=0``).
"""

from __future__ import annotations

import os

OFFLINE_DEFAULTS = {
    "YOLO_OFFLINE": "1",  # no DNS probe, no update check, no analytics, no hub calls
    "YOLO_AUTOINSTALL": "False",  # never pip-install at run time
}


def apply_offline_defaults() -> None:
    """Set each of :data:`OFFLINE_DEFAULTS` that the user has not set (idempotent)."""
    for key, value in OFFLINE_DEFAULTS.items():
        os.environ.setdefault(key, value)
