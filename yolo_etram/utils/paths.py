"""Find this project's model and data YAMLs by bare name (``rvt-t.yaml``, ``etram.yaml``) from any working directory.

The YAMLs live in the repository's ``cfg/`` folder, installed as the package ``yolo_etram.cfg``, so the same lookup
works from a checkout, an editable install and a wheel. A path that exists is returned unchanged.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

KINDS = ("models", "datasets", "ablations")


def cfg_dir() -> Path:
    return Path(str(resources.files("yolo_etram.cfg")))


def find_cfg(name: str | Path, kind: str | None = None) -> Path | None:
    """Path of ``name``: as given if it exists, else ``cfg/<kind>/<name>`` (any kind if None); None if not found."""
    p = Path(name)
    if p.exists():
        return p
    if p.suffix not in (".yaml", ".yml") or len(p.parts) > 1:
        return None
    for k in (kind,) if kind else KINDS:
        q = cfg_dir() / k / p.name
        if q.is_file():
            return q
    return None
