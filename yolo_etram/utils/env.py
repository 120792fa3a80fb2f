"""Offline-safe Ultralytics defaults, applied when ``yolo_etram`` is first imported (before our code imports
Ultralytics) and by the ``yolo`` command hook.

Ultralytics probes the network at import (DNS), checks for pip updates, auto-installs missing packages and downloads
fonts and ``yolo26n.pt``. Our paths never need any of that; users can still opt back in by setting these variables
themselves (e.g. ``YOLO_OFFLINE=0``).

OpenVINO's model converter and NNCF (the INT8 export) send usage telemetry to Google Analytics unless a consent
file says no; :func:`decline_openvino_telemetry` makes "no consent file" mean no, and keeps an explicit opt-in.
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


def decline_openvino_telemetry() -> None:
    """Treat a missing OpenVINO telemetry consent file as a "no" (idempotent; a no-op without openvino-telemetry).

    ``openvino_telemetry`` counts a missing consent file as consent for tools that show no opt-in dialog (OpenVINO's
    converter and NNCF); an explicit ``opt_in_out --opt_in`` still counts."""
    try:
        from openvino_telemetry.utils import opt_in_checker
    except ImportError:
        return
    checker = opt_in_checker.OptInChecker
    if getattr(checker.check, "declines_without_consent", False):
        return
    check = checker.check

    def check_declining_without_consent(self, *args, **kwargs):
        result = check(self, *args, **kwargs)
        no_file = opt_in_checker.ConsentCheckResult.NO_FILE
        return opt_in_checker.ConsentCheckResult.DECLINED if result == no_file else result

    check_declining_without_consent.declines_without_consent = True
    checker.check = check_declining_without_consent
