"""Offline-safe Ultralytics defaults, applied before Ultralytics is first imported by our code paths.

Ultralytics probes the network at import (DNS), checks for pip updates, auto-installs missing packages and
downloads fonts and ``yolo26n.pt``. Our paths never need any of that; users can still opt back in by setting these
variables themselves (e.g. ``YOLO_OFFLINE=0``).
"""

import os

OFFLINE_DEFAULTS = {
    "YOLO_OFFLINE": "1",  # no DNS probe, no update check, no analytics, no hub calls
    "YOLO_AUTOINSTALL": "False",  # never pip-install at run time
}

for _key, _value in OFFLINE_DEFAULTS.items():
    os.environ.setdefault(_key, _value)
