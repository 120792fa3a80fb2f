"""The synthetic eTraM-like recordings: raw layout and dtypes, sensor behaviour, labels, stop-and-go, resume."""

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from yolo_etram.data.io import BBOX_DTYPE, open_h5
from yolo_etram.data.synth import (
    FINE_TO_COARSE,
    MOTION_DTYPE,
    SynthConfig,
    label_times_us,
    main,
    recording_paths,
    synthesize_dataset,
    synthesize_recording,
)

REPO = Path(__file__).resolve().parents[1]
SMALL = SynthConfig(width=320, height=180, duration_s=2.0, seed=3)


def read_events(path: Path) -> dict[str, np.ndarray]:
    with open_h5(path) as f:
        g = f["events"]
        out = {k: g[k][:] for k in ("x", "y", "p", "t")}
        out["width"], out["height"] = g["width"][()], g["height"][()]
        out["dtypes"] = {k: g[k].dtype for k in ("x", "y", "p", "t", "width", "height")}
        plists = {k: g[k].id.get_create_plist() for k in ("x", "y", "p", "t")}
        out["filters"] = {k: [pl.get_filter(i)[0] for i in range(pl.get_nfilters())] for k, pl in plists.items()}
    return out


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> dict:
    """One small recording shared by the read-only tests."""
    stem = tmp_path_factory.mktemp("synth") / "synth_train_0000"
    summary = synthesize_recording(stem, SMALL)
    paths = recording_paths(stem)
    return {
        "summary": summary,
        "paths": paths,
        "events": read_events(paths["events"]),
        "boxes": np.load(paths["boxes"]),
        "motion": np.load(paths["motion"])["motion"],
    }


@pytest.fixture(scope="module")
def stop_and_go(tmp_path_factory) -> dict:
    """A longer recording in which every object halts once: the stop-and-go checks."""
    stem = tmp_path_factory.mktemp("synth_sg") / "rec"
    synthesize_recording(stem, replace(SMALL, duration_s=4.0, seed=11, stop_prob=1.0, density=1.5))
    paths = recording_paths(stem)
    return {
        "events": read_events(paths["events"]),
        "boxes": np.load(paths["boxes"]),
        "motion": np.load(paths["motion"])["motion"],
    }


def test_raw_etram_layout_and_dtypes(small):
    paths, ev = small["paths"], small["events"]
    assert [p.name for p in paths.values()] == [
        "synth_train_0000_td.h5",
        "synth_train_0000_bbox.npy",
        "synth_train_0000_motion.npz",
    ]
    assert ev["dtypes"] == {
        "x": np.uint16,
        "y": np.uint16,
        "p": np.int16,
        "t": np.int64,
        "width": np.int64,
        "height": np.int64,
    }
    assert (ev["width"], ev["height"]) == (320, 180)
    assert all(32001 in f for f in ev["filters"].values())  # blosc
    assert small["boxes"].dtype == BBOX_DTYPE
    assert small["motion"].dtype == MOTION_DTYPE
    assert small["summary"]["n_events"] == len(ev["t"]) > 10_000
    assert small["summary"]["n_boxes"] == len(small["boxes"]) > 0
    assert not list(paths["events"].parent.glob(".*tmp"))  # atomic writes left no temporaries


def test_events_in_frame_sorted_both_polarities(small):
    ev = small["events"]
    assert ev["x"].max() < 320 and ev["y"].max() < 180
    assert np.all(np.diff(ev["t"]) >= 0)
    assert ev["t"][0] > 0 and ev["t"][-1] <= 2_000_000
    assert set(np.unique(ev["p"])) == {0, 1}
    assert 0.3 < ev["p"].mean() < 0.7
    # events span the whole recording, not one burst
    assert np.histogram(ev["t"], bins=4, range=(0, 2_000_000))[0].min() > 0.05 * len(ev["t"])


def test_events_are_streamed_in_chunks(tmp_path, monkeypatch):
    from yolo_etram.data import io
    from yolo_etram.data.synth import writer

    sizes = []

    class CountingWriter(io.EventH5Writer):
        def append(self, x, y, p, t):
            sizes.append(len(t))
            super().append(x, y, p, t)

    monkeypatch.setattr(writer, "EventH5Writer", CountingWriter)
    summary = synthesize_recording(tmp_path / "rec", replace(SMALL, duration_s=1.0, chunk_s=0.25))
    assert len(sizes) == 4 and sum(sizes) == summary["n_events"]
    assert max(sizes) < 0.5 * summary["n_events"]


def test_same_seed_identical_files_other_seed_differs(small, tmp_path):
    stem = tmp_path / "again"
    synthesize_recording(stem, SMALL)
    for key, path in recording_paths(stem).items():
        assert path.read_bytes() == small["paths"][key].read_bytes(), key
    other = tmp_path / "other"
    synthesize_recording(other, replace(SMALL, seed=4))
    assert recording_paths(other)["boxes"].read_bytes() != small["paths"]["boxes"].read_bytes()


def test_boxes_at_30hz_inside_frame(small):
    boxes = small["boxes"]
    times = np.unique(boxes["t"])
    expected = label_times_us(2_000_000)
    assert expected[:4].tolist() == [33333, 66666, 100000, 133333]
    assert set(times.tolist()) <= set(expected.tolist())
    assert len(times) >= 0.9 * len(expected)  # every frame with an object in view is labeled
    assert np.all(np.diff(boxes["t"].astype(np.int64)) >= 0)
    assert np.all(boxes["x"] >= 0) and np.all(boxes["y"] >= 0)
    assert np.all(boxes["x"] + boxes["w"] <= 320 + 1e-3) and np.all(boxes["y"] + boxes["h"] <= 180 + 1e-3)
    assert np.all(boxes["w"] >= 2) and np.all(boxes["h"] >= 2)
    assert set(np.unique(boxes["class_id"]).tolist()) <= {0, 1, 2}
    assert np.all(boxes["class_confidence"] == 1.0)
    for t in times[:5]:  # one box per object per frame
        ids = boxes["track_id"][boxes["t"] == t]
        assert len(ids) == len(np.unique(ids))


def test_eight_class_mode_refines_the_three_classes(small, tmp_path):
    stem = tmp_path / "eight"
    synthesize_recording(stem, replace(SMALL, classes=8))
    fine = np.load(recording_paths(stem)["boxes"])
    coarse = small["boxes"]
    assert fine["class_id"].max() <= 7
    same = ["t", "x", "y", "w", "h", "track_id"]
    np.testing.assert_array_equal(fine[same], coarse[same])
    np.testing.assert_array_equal(np.asarray(FINE_TO_COARSE)[fine["class_id"]], coarse["class_id"])


def test_motion_file_aligned_with_boxes(small):
    boxes, motion = small["boxes"], small["motion"]
    assert len(motion) == len(boxes)
    np.testing.assert_array_equal(motion["t"], boxes["t"])
    np.testing.assert_array_equal(motion["track_id"], boxes["track_id"])
    assert np.all(motion["stationary_for_us"][motion["moving"]] == 0)
    assert np.all(motion["stationary_for_us"][~motion["moving"]] > 0)
    assert motion["moving"].any() and (~motion["moving"]).any()


def _events_per_pixel_in_box(ev: dict, box) -> float:
    """Events in the 50 ms before the box's time, inside the box, per pixel of the box."""
    t = int(box["t"])
    s0, s1 = np.searchsorted(ev["t"], [t - 50_000, t])
    x, y = ev["x"][s0:s1], ev["y"][s0:s1]
    inside = (x >= box["x"]) & (x < box["x"] + box["w"]) & (y >= box["y"]) & (y < box["y"] + box["h"])
    return inside.sum() / (box["w"] * box["h"])


def test_stop_and_go_objects_stay_labeled_but_fall_silent(stop_and_go):
    ev, boxes, motion = stop_and_go["events"], stop_and_go["boxes"], stop_and_go["motion"]
    long_stop = ~motion["moving"] & (motion["stationary_for_us"] >= 1_000_000) & motion["seen_moving"]
    tracks = sorted(set(motion["track_id"][long_stop].tolist()) & set(motion["track_id"][motion["moving"]].tolist()))
    assert tracks, "no object both moved and stood still for >= 1 s"
    moving_density, still_density = [], []
    for tid in tracks:
        rows = motion["track_id"] == tid
        moving_density += [_events_per_pixel_in_box(ev, b) for b in boxes[rows & motion["moving"]]]
        still_density += [_events_per_pixel_in_box(ev, b) for b in boxes[rows & long_stop]]
    assert np.mean(still_density) < 0.2 * np.mean(moving_density)
    # a stationary stretch is a run of consecutive label frames, with stationary_for_us growing at 30 Hz
    tid = tracks[0]
    run = motion[(motion["track_id"] == tid) & ~motion["moving"]]
    steps = np.diff(run["stationary_for_us"])
    assert np.median(steps) in (33333, 33334)


def test_resume_skips_finished_recordings(tmp_path):
    cfg = replace(SMALL, duration_s=0.5)
    lines = []
    first = synthesize_dataset(tmp_path, {"train": 2, "val": 1, "test": 0}, cfg, progress=lines.append)
    assert (first["written"], first["skipped"]) == (3, 0)
    assert len(lines) == 3
    files = sorted(tmp_path.rglob("*"))
    names = [f"synth_{s}_{i:04d}" for s, i in (("train", 0), ("train", 1), ("val", 0))]
    expected = [f"{n}_{k}" for n in names for k in ("td.h5", "bbox.npy", "motion.npz")]
    assert sorted(p.name for p in files if p.is_file()) == sorted(expected)
    mtimes = {p: p.stat().st_mtime_ns for p in files if p.is_file()}

    recording_paths(tmp_path / "train" / "synth_train_0001")["boxes"].unlink()  # an interrupted recording
    second = synthesize_dataset(tmp_path, {"train": 2, "val": 1, "test": 0}, cfg, progress=False)
    assert (second["written"], second["skipped"]) == (1, 2)
    for p, m in mtimes.items():
        if "train_0001" not in p.name:
            assert p.stat().st_mtime_ns == m, p
    # recordings of a split do not depend on how many others are made
    alone = synthesize_dataset(tmp_path / "alone", {"train": 1}, cfg, progress=False)
    assert alone["written"] == 1
    a = recording_paths(tmp_path / "alone" / "train" / "synth_train_0000")["events"].read_bytes()
    assert a == recording_paths(tmp_path / "train" / "synth_train_0000")["events"].read_bytes()


def test_workers_write_the_same_recordings(tmp_path):
    """Two processes (spawned) write byte-identical files to one process's, and report every recording."""
    cfg = replace(SMALL, duration_s=0.3)
    serial = synthesize_dataset(tmp_path / "serial", {"train": 2, "val": 1}, cfg, progress=False)
    lines = []
    parallel = synthesize_dataset(tmp_path / "parallel", {"train": 2, "val": 1}, cfg, progress=lines.append, workers=2)
    assert serial["written"] == parallel["written"] == len(lines) == 3
    assert (serial["n_events"], serial["n_boxes"]) == (parallel["n_events"], parallel["n_boxes"])
    for path in sorted((tmp_path / "serial").rglob("*.*")):
        twin = tmp_path / "parallel" / path.relative_to(tmp_path / "serial")
        assert twin.read_bytes() == path.read_bytes(), twin


def test_cli_writes_a_small_split(tmp_path, capsys):
    assert (
        main(
            [
                str(tmp_path),
                "--width",
                "160",
                "--height",
                "90",
                "--duration",
                "0.3",
                "--train",
                "1",
                "--val",
                "0",
                "--test",
                "0",
                "--classes",
                "8",
                "--quiet",
            ]
        )
        == 0
    )
    assert "1 written" in capsys.readouterr().out
    assert recording_paths(tmp_path / "train" / "synth_train_0000")["boxes"].is_file()


def test_config_is_validated():
    with pytest.raises(ValueError):
        SynthConfig(classes=5)
    with pytest.raises(ValueError):
        SynthConfig(stop_prob=1.5)


def test_imports_neither_torch_nor_ultralytics():
    code = (
        "import sys, yolo_etram.data.synth; "
        "bad = [m for m in ('torch', 'ultralytics') if m in sys.modules]; assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
