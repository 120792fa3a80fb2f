"""Find this project's model and data YAMLs by bare name (``rvt-t.yaml``, ``etram.yaml``) from any working directory.

The YAMLs live in the repository's ``cfg/`` folder, installed as the package ``yolo_etram.cfg``, so the same lookup
works from a checkout, an editable install and a wheel. A path that exists is returned unchanged.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

KINDS = ("models", "datasets")


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


def is_plugin_model_yaml(name: str | Path) -> bool:
    """True if ``name`` is (or resolves to) a model YAML whose first layer is one of our recurrent layers."""
    p = find_cfg(name, "models")
    if p is None or p.suffix not in (".yaml", ".yml"):
        return False
    import yaml

    from yolo_etram.nn import PLUGIN_LAYER_NAMES

    d = yaml.safe_load(p.read_text()) or {}
    rows = (d.get("backbone") or []) + (d.get("head") or [])
    return any(isinstance(r, list) and len(r) > 2 and r[2] in PLUGIN_LAYER_NAMES for r in rows)
