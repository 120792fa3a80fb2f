"""Shared fixtures. Tests build their own data in temporary folders and never touch the network."""

import os
from pathlib import Path

import pytest

# Our code paths set these themselves; setting them here too keeps a failing test from ever reaching the network.
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_VERBOSE", "False")

REPO = Path(__file__).resolve().parents[1]


def golden_dir() -> Path | None:
    """RVT's reference outputs (``shared/golden``): ``$YOLO_ETRAM_GOLDEN`` or ``<repo>/../shared/golden``."""
    for p in (os.environ.get("YOLO_ETRAM_GOLDEN"), REPO.parent / "shared" / "golden", REPO / "shared" / "golden"):
        if p and Path(p).is_dir():
            return Path(p)
    return None


@pytest.fixture(scope="session")
def golden() -> Path:
    g = golden_dir()
    if g is None:
        pytest.skip("golden reference data (shared/golden) not found; set YOLO_ETRAM_GOLDEN")
    return g


@pytest.fixture(scope="session")
def tiny_events(tmp_path_factory) -> Path:
    """Data YAML of a tiny prepared synthetic dataset (built once per test session)."""
    from events_fixture import make_tiny_event_data

    return make_tiny_event_data(tmp_path_factory.mktemp("tiny_events"))
