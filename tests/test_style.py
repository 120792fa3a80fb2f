"""One code style across ``recurrent/``, ``yolo_etram/``, tests, benchmarks and examples: ruff's linter and formatter,
configured in ``pyproject.toml`` (line length 120, as Ultralytics). ``make lint`` runs the same two commands."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def ruff(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ruff", *args, "--no-cache", "."], cwd=REPO, capture_output=True, text=True, timeout=120
    )


def test_ruff_lint_is_clean():
    out = ruff("check", "--output-format", "concise")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-1000:]


def test_ruff_format_is_applied():
    out = ruff("format", "--check")
    assert out.returncode == 0, f"run `make lint` (ruff format) on:\n{out.stdout[-3000:]}{out.stderr[-1000:]}"
