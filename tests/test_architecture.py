"""The house runs one way: imports go data <- nn <- roles (train, val, predict, export) <- facade (EventYOLO) <- face
(cli), with no circle and no role importing another (the trainer may build its validator); ``recurrent/`` imports no
Ultralytics; no source file is a giant; checkpoints pickled by the previous layout still load and compute the same."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures" / "legacy_layout"

# Lower layers never import higher ones; a module may import its own layer (roles excepted, see ROLES).
LAYERS = {
    "yolo_etram.utils": 0,
    "yolo_etram.integrations": 0,
    "yolo_etram.data": 1,
    "yolo_etram.metrics": 2,
    "yolo_etram.nn": 3,
    "yolo_etram.train": 4,
    "yolo_etram.val": 4,
    "yolo_etram.predict": 4,
    "yolo_etram.export": 4,
    "yolo_etram.model": 5,
    "yolo_etram.experiments": 5,
    "yolo_etram.cli": 6,
    "yolo_etram.ultralytics_cli": 6,
}
ROLES = ("yolo_etram.train", "yolo_etram.val", "yolo_etram.predict", "yolo_etram.export")
ALLOWED_ROLE_IMPORTS = {("yolo_etram.train", "yolo_etram.val")}  # the trainer builds its validator, as Ultralytics'


def project_modules() -> dict[str, Path]:
    mods = {}
    for pkg in ("yolo_etram", "recurrent"):
        for p in (REPO / pkg).rglob("*.py"):
            parts = list(p.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join(parts)] = p
        for c in (REPO / pkg).rglob("*.c"):  # compiled extension modules: leaves, they import nothing of ours
            mods[".".join(c.relative_to(REPO).with_suffix("").parts)] = c
    return mods


def imports_of(name: str, path: Path, mods: dict[str, Path]) -> set[str]:
    """Every project module ``name`` imports, at the top or inside a function (lazy imports count)."""
    if path.suffix == ".c":
        return set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(up + ([base] if base else []))
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        for t in targets:
            while t and t not in mods:
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    mods = project_modules()
    return {m: imports_of(m, p, mods) for m, p in mods.items()}


def layer(module: str) -> int | None:
    for prefix, level in LAYERS.items():
        if module == prefix or module.startswith(prefix + "."):
            return level
    return None


def find_circle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of ``graph`` as a path ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(m, path):
        state[m] = 1
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                return path[path.index(n) :] + [n]
            if n not in state and (found := visit(n, path + [n])):
                return found
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m, [m])):
            return found
    return None


def test_no_import_circle(graph):
    assert find_circle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]  # the check can fail
    circle = find_circle(graph)
    assert circle is None, "import circle: " + " -> ".join(circle or [])


def test_imports_run_one_way(graph):
    upward = [
        (m, n)
        for m, ns in graph.items()
        for n in ns
        if layer(m) is not None and layer(n) is not None and layer(n) > layer(m)
    ]
    assert not upward, f"imports against the layers (data <- nn <- roles <- facade <- face): {sorted(upward)}"


def test_role_files_do_not_import_each_other(graph):
    crossing = [(m, n) for m in ROLES for n in graph[m] if n in ROLES and (m, n) not in ALLOWED_ROLE_IMPORTS]
    assert not crossing, f"role files import each other: {crossing}"


def test_recurrent_is_pure_pytorch():
    for p in (REPO / "recurrent").rglob("*.py"):
        for node in ast.walk(ast.parse(p.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom) and not node.level
                else []
            )
            bad = [n for n in names if n.split(".")[0] in ("ultralytics", "yolo_etram")]
            assert not bad, f"{p.relative_to(REPO)} imports {bad}: recurrent/ is pure PyTorch"


def test_no_giant_source_files():
    sizes = {
        str(p.relative_to(REPO)): len(p.read_text().splitlines())
        for d in ("yolo_etram", "recurrent")
        for p in (REPO / d).rglob("*.py")
    }
    assert max(sizes.values()) <= 800, sorted(sizes.items(), key=lambda kv: -kv[1])[:3]


@pytest.mark.parametrize("name", ["tiny-detect", "tiny-yolox"])
def test_checkpoint_of_the_previous_layout_loads_and_computes_the_same(name):
    """Saved at commit 4ed0061, which pickled ``yolo_etram.model.RecurrentDetectionModel`` and
    ``yolo_etram.yolox_head.YOLOXDetect`` (fixtures/legacy_layout/README.md)."""
    from yolo_etram import EventYOLO
    from yolo_etram.nn import EventDetectionModel

    model = EventYOLO(str(FIXTURES / f"{name}.pt"))
    net = model.model.float().eval()
    assert isinstance(net, EventDetectionModel)
    x = torch.randint(0, 11, (1, 2, 20, 96, 128), generator=torch.Generator().manual_seed(0)).float()
    net.reset_states()
    with torch.no_grad():
        y = net(x)
    y = y[0] if isinstance(y, (tuple, list)) else y
    expected = np.load(FIXTURES / "outputs.npz")[name.replace("-", "_")]
    # float rounding differs between CPUs and thread counts (seen: 6e-5 px on boxes of ~100 px); a wrong weight mapping
    # is off by whole pixels
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-5, atol=1e-4)


def test_old_module_paths_resolve_in_a_fresh_process():
    """A bare ``torch.load`` in a new interpreter finds the moved classes (nothing of ours imported beforehand)."""
    code = (
        "import sys, torch; ck = torch.load(sys.argv[1], weights_only=False); m = ck['model']; "
        "print(type(m).__module__, type(m.model[-1]).__module__)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(FIXTURES / "tiny-yolox.pt")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["yolo_etram.nn.detection_model", "yolo_etram.nn.yolox_head"]
