"""Every representation against its reference's own code, and what each one does by definition.

The golden fixtures in ``tests/fixtures/representations`` were made with
``benchmarks/check_representations.py all OUT --real ../shared/real --golden-raw ../shared/golden/raw --rvt RVT
--reyolov8 REYOLOV8 --fixtures tests/fixtures/representations`` from RVT b80f568 (``data/utils/representations.py``,
``scripts/genx/preprocess_dataset.py``) and ReYOLOv8 41e8188 (``formats_utils.py``), run unmodified on CPU with torch
2.14.1 (one thread): ``reference.json`` holds a sha256 of every reference frame (per case, representation and
downsample) and of every window RVT's script wrote for the golden recordings with ``mixeddensity_stack`` +
``const_duration`` and ``stacked_hist`` + ``const_count``; ``cases.npz`` holds the event windows (random edge cases
and our generator's windows; the real recordings' windows are read from them at test time).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import check_representations as check  # noqa: E402

from yolo_etram.data.representations import MDES, VTEI, MixedDensityStack, StackedHistogram, VoxelGrid  # noqa: E402

FIXTURES = REPO / "tests" / "fixtures" / "representations"


def real_dir() -> Path | None:
    for p in (os.environ.get("YOLO_ETRAM_REAL"), REPO.parent / "shared" / "real"):
        if p and (Path(p) / "evt2_sample.raw").is_file():
            return Path(p)
    return None


@pytest.fixture(scope="module")
def reference() -> dict:
    return json.loads((FIXTURES / "reference.json").read_text())


def test_every_representation_equals_its_reference_on_stored_windows(reference):
    cases = check.load_cases(FIXTURES / "cases.npz")
    assert {c["name"][:5] for c in cases} >= {"rando", "edges", "synth"}
    mine = check.ours(cases)
    assert len(mine) == len(cases) * 5 * 2
    bad, hot = check.compare_windows(mine, reference["windows"])
    assert not bad and not hot  # no stored window has a pixel with more than 127 events: every bit equal


def test_every_representation_equals_its_reference_on_real_recordings(reference):
    real = real_dir()
    if real is None:
        pytest.skip("the real camera recordings (shared/real) are not here; set YOLO_ETRAM_REAL")
    cases = [c for c in check.load_cases(FIXTURES / "cases.npz", real) if "file" in c]
    assert len(cases) == sum(len(w) for w in check.REAL_WINDOWS.values())
    bad, hot = check.compare_windows(check.ours(cases), reference["windows"])
    assert not bad
    # the Gen3 recording has hot pixels (3015 events in 45 ms): there RVT's uint8/int8 sums wrap and ours saturate
    assert hot and all(k.split("|")[1] in ("stacked_histogram", "mixeddensity_stack", "mdes") for k in hot)
    assert not any(k.startswith("evt3") for k in hot)  # the IMX636 windows are equal bit for bit


def test_prepare_equals_rvt_preprocess_for_mixed_density_and_count_windows(golden, reference, tmp_path):
    """Our ``prepare`` of the golden recordings equals RVT's script window for window, folder names included."""
    ours = check.our_prepare(golden / "raw", tmp_path)
    assert ours == reference["prepare"]
    assert {v for k, v in ours.items() if k.endswith("|folder")} == {
        "mixeddensity_stack_dt=50_nbins=10_cutoff=32",
        "stacked_histogram_ne=50000_nbins=10",
    }


@pytest.mark.slow
def test_check_script_runs_the_references_themselves(tmp_path):
    """With local copies of RVT and ReYOLOv8 (``RVT_REPO``, ``REYOLOV8_REPO``: work trees or git dirs), the check runs
    their code now, on this machine, and finds no difference."""
    rvt, y8 = os.environ.get("RVT_REPO"), os.environ.get("REYOLOV8_REPO")
    if not (rvt and y8):
        pytest.skip("set RVT_REPO and REYOLOV8_REPO to copies of uzh-rpg/RVT and silvada95/ReYOLOv8 to run them")
    cmd = [sys.executable, str(REPO / "benchmarks" / "check_representations.py"), "all", str(tmp_path)]
    cmd += ["--rvt", rvt, "--reyolov8", y8]
    cmd += ["--real", str(real_dir())] if real_dir() else []
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "0 differ" in proc.stdout


# ---------------------------------------------------------------------------------------------------- definitions
def events(n=4000, h=24, w=32, span=50_000, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, w, n), rng.integers(0, h, n), rng.integers(0, 2, n), np.sort(rng.integers(0, span, n))


@pytest.mark.parametrize("cls", [StackedHistogram, MixedDensityStack, VTEI, MDES, VoxelGrid])
def test_halving_keeps_the_odd_pixels_of_the_full_frame(cls):
    """downsample=2 equals RVT's nearest-exact halving of the full-resolution frame: pixel (2i+1, 2j+1)."""
    for hw in ((24, 32), (23, 31)):
        ev = events(h=hw[0], w=hw[1])
        full = cls(*hw)(*ev)
        half = cls(*hw, downsample=2)(*ev)
        assert half.dtype == full.dtype == cls.dtype
        np.testing.assert_array_equal(half, full[:, 1::2, 1::2][:, : hw[0] // 2, : hw[1] // 2])


def test_vtei_keeps_the_polarity_of_the_last_event():
    rep = VTEI(4, 4, nbins=2)
    x, y = np.array([1, 1, 1, 2]), np.array([0, 0, 0, 3])
    out = rep(x, y, np.array([1, 0, 1, 0]), np.array([0, 1, 2, 10]))  # pixel (0,1): ON, OFF, ON in bin 0
    assert out.dtype == np.int8 and out.shape == (2, 4, 4)
    assert out[0, 0, 1] == 1 and out[1, 3, 2] == -1 and np.count_nonzero(out) == 2
    out = rep(x, y, np.array([1, 1, 0, 0]), np.array([0, 1, 2, 10]))
    assert out[0, 0, 1] == -1


def test_mixed_density_bins_halve_towards_the_window_end_and_accumulate():
    rep = MixedDensityStack(1, 1, nbins=3, cutoff=32)
    # tnorm 0 (clamped to 1e-6: bin 0), 0.3 -> 3 + log2(0.3) = 1.26 (bin 1), 0.6 -> 2.26 (bin 2), 1 -> bin 2
    t = np.array([0, 300, 600, 1000])
    out = rep(np.zeros(4, int), np.zeros(4, int), np.array([1, 1, 0, 1]), t)[:, 0, 0]
    np.testing.assert_array_equal(out, [1, 2, 2])  # cumulative net polarity: +1 | +1 | -1 +1
    assert MDES(1, 1).nbins == 5 and MDES(1, 1).cutoff is None


def test_signed_sums_saturate_where_the_references_wrap():
    """200 ON events at one pixel: RVT's int8 sums wrap to -56; ours stop at the cutoff (32) or at 127 (MDES)."""
    n = 200
    ev = (np.zeros(n, int), np.zeros(n, int), np.ones(n, int), np.arange(n))
    assert MixedDensityStack(1, 1, cutoff=32)(*ev).max() == 32
    assert MDES(1, 1)(*ev).max() == 127
    hist = StackedHistogram(1, 1, nbins=1, cutoff=None)(*(np.concatenate([a, a]) for a in ev))
    assert hist.max() == 255  # 400 events: RVT's uint8 would store 144


def test_voxel_grid_weights_and_float16_sums():
    rep = VoxelGrid(1, 2, nbins=2)
    # tnorm * nbins: 0 (bin 0, weight 1), 0.5 (bin 0, 0.5), 1.5 (bin 1, 0.5), 2 (bin 1, weight 1 - 1 = 0)
    out = rep(np.array([0, 0, 1, 1]), np.zeros(4, int), np.array([1, 1, 0, 0]), np.array([0, 250, 750, 1000]))
    assert out.dtype == np.float16 and out.shape == (4, 1, 2)
    assert out[2, 0, 0] == 1.5 and out[1, 0, 1] == 0.5 and out.sum() == 2.0


@pytest.mark.parametrize("cls", [StackedHistogram, MixedDensityStack, VTEI, MDES, VoxelGrid])
def test_empty_windows_and_cutoff_checks(cls):
    assert not cls(4, 4)(*(np.zeros(0, np.int64),) * 4).any()
    if cls.max_cutoff == 0:
        with pytest.raises(ValueError, match="has no cutoff"):
            cls(4, 4, cutoff=3)
