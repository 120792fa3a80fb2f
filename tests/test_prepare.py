"""``prepare``: bit-identical to RVT's preprocessing, atomic, resumable, bounded in memory."""

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from rawdata import make_raw_dataset, random_boxes, random_events
from rvt_reference import rvt_prepare_events

from yolo_etram.data import prepare as prep
from yolo_etram.data.io import BBOX_DTYPE, EventDataError, write_boxes, write_events_h5
from yolo_etram.data.labels import DATASET_KINDS, select_label_frames
from yolo_etram.data.prepare import PrepareConfig, prepare_dataset

REPR = "event_representations_v2/stacked_histogram_dt=50_nbins=10"
FILES = ["labels_v2/timestamps_us.npy", f"{REPR}/timestamps_us.npy", f"{REPR}/objframe_idx_2_repr_idx.npy"]


def assert_same_sequence(ours: Path, rvt: Path, hist_name: str):
    for rel in FILES:
        a, b = np.load(ours / rel), np.load(rvt / rel)
        assert a.dtype == b.dtype and np.array_equal(a, b), rel
    la, lb = np.load(ours / "labels_v2/labels.npz"), np.load(rvt / "labels_v2/labels.npz")
    assert la["labels"].dtype == lb["labels"].dtype
    np.testing.assert_array_equal(la["labels"], lb["labels"])
    np.testing.assert_array_equal(la["objframe_idx_2_label_idx"], lb["objframe_idx_2_label_idx"])
    with h5py.File(ours / REPR / hist_name) as fa, h5py.File(rvt / REPR / hist_name) as fb:
        da, db = fa["data"], fb["data"]
        assert da.dtype == db.dtype == np.uint8 and da.shape == db.shape and da.chunks == db.chunks
        np.testing.assert_array_equal(da[:], db[:])


@pytest.mark.slow
def test_bit_identical_to_rvt_on_golden(golden, tmp_path):
    """RVT's own output for gen4 settings (class filter, crop, w,h >= 5, faulty filter on train, downsample by 2)."""
    results = prepare_dataset(golden / "raw", tmp_path, PrepareConfig(kind="gen4"), progress=False)
    assert [r.status for r in results] == ["done"] * 3
    for split in ("train", "val", "test"):
        seq = f"golden_{split}_0000"
        assert_same_sequence(
            tmp_path / split / seq, golden / "rvt_prepared" / split / seq, "event_representations_ds2_nearest.h5"
        )


def test_histograms_match_reference_on_random_recordings(tmp_path):
    """Full resolution and downsampled, with out-of-frame events and decreasing timestamps in the recording."""
    w, h, dur = 96, 64, 1_200_000
    x, y, p, t = random_events(60_000, dur, w, h, seed=5)
    t = t.copy()
    t[100::500] -= 3000
    t[0] = 0
    x = x.copy()
    x[7::1000] = 500  # out of frame
    write_events_h5(tmp_path / "raw/train/r_td.h5", x, y, p, t, w, h)
    write_boxes(tmp_path / "raw/train/r_bbox.npy", random_boxes(dur, w, h, seed=5))
    for downsample in (1, 2):
        out = tmp_path / f"out{downsample}"
        (res,) = prepare_dataset(
            tmp_path / "raw", out, PrepareConfig(kind="etram", downsample=downsample), progress=False
        )
        seq = out / "train" / "r" / REPR
        window_t = np.load(seq / "timestamps_us.npy")
        assert res.out_of_frame == int((x >= w).sum())  # each dropped event counted once (one block: whole file)
        assert res.decreasing_t > 0
        keep = x < w
        ref = rvt_prepare_events(x[keep], y[keep], p[keep], t[keep], window_t, h, w, downsample=downsample)
        name = "event_representations_ds2_nearest.h5" if downsample == 2 else "event_representations.h5"
        with h5py.File(seq / name) as f:
            np.testing.assert_array_equal(f["data"][:], ref)


def boxes_at(times, cls=0, w=50.0):
    b = np.zeros(len(times), BBOX_DTYPE)
    b["t"], b["x"], b["y"], b["w"], b["h"], b["class_id"] = times, 10, 10, w, 40, cls
    return b


def test_label_frames_30_and_60_hz():
    gen4 = DATASET_KINDS["gen4"]
    t30 = (np.arange(1, 40) * 1e6 / 30).astype(np.int64)
    f = select_label_frames(boxes_at(t30), gen4)
    assert f.frame_t[0] == t30[np.searchsorted(t30, 100_000)]  # first label at or after 100 ms
    assert np.all(np.abs(np.diff(f.frame_t) - 100_000) <= 2)  # every third label: 10 Hz
    np.testing.assert_array_equal(f.window_t[f.frame_repr_idx], f.frame_t)
    assert np.all(np.abs(np.diff(f.window_t) - 50_000) <= 1)  # 50 ms windows, pre-roll included
    assert f.window_t[0] > 50_000  # every pre-roll window starts after t = 0
    t60 = (np.arange(1, 80) * 1e6 / 60).astype(np.int64)
    f60 = select_label_frames(boxes_at(t60), gen4)
    assert np.all(np.abs(np.diff(f60.frame_t) - 100_000) <= 2)
    # a missing label time: the frame after the gap is kept, with 4 windows between the frames
    gap = np.delete(t30, [9, 10, 11, 12])
    fg = select_label_frames(boxes_at(gap), gen4)
    assert 200_000 - 2 <= np.diff(fg.frame_t).max() <= 200_000 + 2


def test_unsupported_label_rate_is_a_clear_error():
    t45 = (np.arange(1, 40) * 1e6 / 45).astype(np.int64)
    with pytest.raises(EventDataError, match="rec_bbox.npy: labels come at 45 Hz"):
        select_label_frames(boxes_at(t45), DATASET_KINDS["gen4"], source="rec_bbox.npy")


def test_filters_class_crop_size_and_faulty(tmp_path):
    from yolo_etram.data.labels import apply_label_filters

    b = boxes_at([200_000] * 5)
    b["class_id"] = [0, 3, 1, 2, 0]
    b["x"][2], b["w"][2] = 1250, 100  # crosses the right edge: cropped to 1279 - 1250 = 29
    b["w"][3] = 4  # too narrow
    b["w"][4] = 1200  # faulty on train
    gen4 = DATASET_KINDS["gen4"]
    train = apply_label_filters(b, gen4, 720, 1280, train=True)
    assert list(train["class_id"]) == [0, 1]
    assert train["w"][1] == np.float32(29)
    assert len(apply_label_filters(b, gen4, 720, 1280, train=False)) == 3
    assert len(apply_label_filters(b, DATASET_KINDS["etram"], 720, 1280, train=False)) == 4  # eTraM keeps class 3


def test_resume_after_interruption(tmp_path, monkeypatch):
    raw = make_raw_dataset(tmp_path / "raw", n_per_split=2, duration_us=700_000, n_events=20_000)
    out = tmp_path / "out"
    real = prep.write_histograms
    calls = {"n": 0}

    def dies_on_third(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # killed mid-way
        return real(*a, **k)

    monkeypatch.setattr(prep, "write_histograms", dies_on_third)
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset(raw, out, progress=False)
    finished = sorted(p.name for p in (out / "train").iterdir())
    assert finished == ["rand_train_0000", "rand_train_0001"]  # only complete sequences are visible
    assert not (out / "val").exists() or not any((out / "val").iterdir())
    monkeypatch.setattr(prep, "write_histograms", real)
    results = prepare_dataset(raw, out, progress=False)
    assert [r.status for r in results] == ["skipped", "skipped", "done", "done", "done", "done"]
    assert not (out / ".in_progress").exists()
    assert json.loads((out / "prepare_info.json").read_text())["sequences"] == 6


def test_shards_fill_one_folder_like_a_single_run(tmp_path, capsys):
    """``--shard K/N`` (a job array of N machines) writes each sequence once; together they equal one machine's run."""
    raw = make_raw_dataset(tmp_path / "raw", n_per_split=2, duration_us=500_000, n_events=10_000)
    single = prepare_dataset(raw, tmp_path / "one", progress=False)
    assert prep.main([str(raw), str(tmp_path / "sharded"), "--shard", "1/2"]) == 0
    first = prepare_dataset(raw, tmp_path / "sharded", progress=False, shard=(0, 2))
    assert len(first) == 3 and len(single) == 6
    assert not (tmp_path / "sharded" / ".in_progress").exists()
    one = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*") if p.is_file())
    both = sorted(p.relative_to(tmp_path / "sharded") for p in (tmp_path / "sharded").rglob("*") if p.is_file())
    assert one == both
    for rel in one:
        a, b = tmp_path / "one" / rel, tmp_path / "sharded" / rel
        if rel.suffix == ".h5":
            with h5py.File(a) as fa, h5py.File(b) as fb:
                np.testing.assert_array_equal(fa["data"][:], fb["data"][:])
        elif rel.suffix == ".npz":  # zip entries carry their write time
            with np.load(a) as za, np.load(b) as zb:
                assert za.files == zb.files and all(np.array_equal(za[k], zb[k]) for k in za.files), rel
        else:
            assert a.read_bytes() == b.read_bytes(), rel
    assert prep.main([str(raw), str(tmp_path / "x"), "--shard", "2/2"]) == 2
    assert "shard 2/2: need 0 <= K < N" in capsys.readouterr().err


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert prep.main([str(tmp_path / "missing"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "missing: raw data folder not found" in err


def test_prepare_does_not_import_torch_or_ultralytics():
    code = (
        "import sys, yolo_etram.data.prepare, yolo_etram.data.synth; "
        "print('torch' in sys.modules, 'ultralytics' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


PEAK_RSS = """
import sys
from yolo_etram.data.prepare import prepare_dataset, PrepareConfig
prepare_dataset(sys.argv[1], sys.argv[2], PrepareConfig(kind='etram'), progress=False)
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across exec
print(next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')))  # peak RSS, kB
"""


@pytest.mark.slow
def test_peak_memory_does_not_grow_with_length(tmp_path):
    """A recording 4x longer (4x the events) must not raise prepare's peak memory noticeably."""
    peaks = {}
    for seconds in (3, 12):
        raw = tmp_path / f"raw{seconds}"
        dur = seconds * 1_000_000
        write_events_h5(raw / "train/r_td.h5", *random_events(seconds * 1_500_000, dur, 1280, 720, seed=1), 1280, 720)
        write_boxes(raw / "train/r_bbox.npy", random_boxes(dur, 1280, 720))
        out = subprocess.run(
            [sys.executable, "-c", PEAK_RSS, str(raw), str(tmp_path / f"out{seconds}")],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        peaks[seconds] = int(out.split()[-1]) / 1024  # MiB
    # 4x more events would add ~4 x 1.5 M x 32 bytes = 200 MiB if the recording were held in memory
    assert peaks[12] < peaks[3] + 40, peaks


def test_a_bad_recording_fails_alone(tmp_path, capsys):
    """One corrupt file: its sequence fails with a one-line error naming it, nothing of it is left, others finish."""
    raw = make_raw_dataset(tmp_path / "raw", n_per_split=2, duration_us=700_000, n_events=20_000, splits=("train",))
    bad = raw / "train" / "rand_train_0001_td.h5"
    bad.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 100)  # truncated HDF5
    out = tmp_path / "out"
    results = prepare_dataset(raw, out, progress=False)
    assert [r.status for r in results] == ["done", "failed"]
    assert "rand_train_0001_td.h5: not a readable HDF5 file" in results[1].error
    assert sorted(p.name for p in (out / "train").iterdir()) == ["rand_train_0000"]
    assert not (out / ".in_progress").exists()
    assert prep.main([str(raw), str(tmp_path / "out2")]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]  # (stderr also has the bar)
    assert len(errors) == 1 and errors[0].startswith("prepare: error: ") and "rand_train_0001_td.h5" in errors[0]
