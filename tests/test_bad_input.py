"""Bad input on the data side: every problem is one :class:`EventDataError` line naming the file
(or argument), the problem and what to do; ``prepare`` exits with status 2, prints exactly that line on stderr and
leaves no partial sequence behind. What can be repaired is repaired and counted instead (warnings, not errors).

Box-file problems, decided in the spirit of RVT's filters (``RVT:scripts/genx/preprocess_dataset.py``, which drops
boxes silently and must stay bit-identical on real data):

- errors: an unreadable, empty or truncated file, a wrong extension, missing or non-numeric fields, NaN/infinite
  coordinates, negative or fractional timestamps, class ids outside 0..255 or unknown to the chosen class map, *every*
  box flat (zero/negative size) or outside the frame (a box file of another recording or sensor), no box time within
  the events' time span (another recording, or not microseconds), a box time more than 1 s after the last event (a
  corrupt time would stretch RVT's window grid without bound), label rates other than 30/60 Hz (RVT asserts; we
  say so: ``labels.select_label_frames`` picks 10 Hz frames from 30 or 60 Hz labels only, gen1 uses a fixed 250 ms);
- counted and repaired as RVT does: boxes with zero or negative size and boxes entirely outside the frame are dropped
  (RVT's crop leaves them flat), boxes partly outside are cropped, boxes whose window holds no events (before the first
  event, or more than a window and up to 1 s after the last one) are kept; the counts appear in ``prepare``'s summary.

Events: out-of-frame events are dropped and decreasing timestamps raised to the running maximum, both counted.
"""

import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from rawdata import random_events, write_dat, write_npy_events

from yolo_etram.data import prepare as prep
from yolo_etram.data.data_yaml import load_event_data
from yolo_etram.data.io import BBOX_DTYPE, EventDataError, EventReader, load_boxes, write_boxes, write_events_h5
from yolo_etram.data.prepare import PrepareConfig, prepare_dataset
from yolo_etram.data.prepared import PreparedSequence
from yolo_etram.utils.errors import EtramError

W, H, DUR = 64, 48, 700_000
LABEL_T = (np.arange(1, 21) * 1e6 / 30).astype(np.int64)  # 30 Hz, within the recording


def boxes(times=LABEL_T, x=10.0, y=10.0, w=20.0, h=20.0, cls=0):
    b = np.zeros(len(times), BBOX_DTYPE)
    b["t"], b["x"], b["y"], b["w"], b["h"], b["class_id"], b["class_confidence"] = times, x, y, w, h, cls, 1
    return b


def write_events_raw(path, x, y, p, t, dtypes=None, root_only=False, skip=(), width=W, height=H):
    """An eTraM-layout HDF5 file by hand (no compression), with any dtypes or missing datasets."""
    dtypes = dtypes or {}
    with h5py.File(path, "w") as f:
        g = f if root_only else f.create_group("events")
        for k, v in zip("xypt", (x, y, p, t)):
            if k not in skip:
                g.create_dataset(k, data=np.asarray(v, dtypes.get(k, np.int64)))
        g.create_dataset("width", data=width)
        g.create_dataset("height", data=height)


def make_recording(raw: Path, name="r", split="train", seed=0, n=3000):
    d = raw / split
    d.mkdir(parents=True, exist_ok=True)
    x, y, p, t = random_events(n, DUR, W, H, seed=seed)
    write_events_h5(d / f"{name}_td.h5", x, y, p, t, W, H)
    write_boxes(d / f"{name}_bbox.npy", boxes())
    return d / f"{name}_td.h5", d / f"{name}_bbox.npy"


def run_main(raw, out, capsys, *extra):
    rc = prep.main([str(raw), str(out), "--no-downsample", *extra])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def assert_no_partial_output(out: Path, name="r", split="train"):
    assert not (out / split / name).exists()
    assert not (out / prep.IN_PROGRESS).exists()


# ----------------------------------------------------------------------------------------------------------------------
# prepare: one case per problem, through the CLI entry point
# ----------------------------------------------------------------------------------------------------------------------


def _ev(ev, bb):
    return ev


def _bb(ev, bb):
    return bb


def no_event_file(ev, bb):
    ev.unlink()


def no_box_file(ev, bb):
    bb.unlink()


def empty_events(ev, bb):
    ev.write_bytes(b"")


def empty_boxes(ev, bb):
    bb.write_bytes(b"")


def truncated_h5(ev, bb):
    ev.write_bytes(ev.read_bytes()[: ev.stat().st_size // 2])


def garbage_h5(ev, bb):
    ev.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(range(256)) * 4)


def truncated_boxes(ev, bb):
    bb.write_bytes(bb.read_bytes()[:-30])


def h5_without_events_group(ev, bb):
    with h5py.File(ev, "w") as f:
        f.create_dataset("foo", data=[1])


def h5_without_p(ev, bb):
    write_events_raw(ev, *random_events(100, DUR, W, H), skip=("p",))


def float_xy(ev, bb):
    write_events_raw(ev, *random_events(100, DUR, W, H), dtypes={"x": np.float32, "y": np.float32})


def float_t(ev, bb):
    x, y, p, t = random_events(100, DUR, W, H)
    write_events_raw(ev, x, y, p, t + 0.5, dtypes={"t": np.float64})


def negative_t(ev, bb):
    x, y, p, t = random_events(100, DUR, W, H)
    t[0] = -1000  # a negative timestamp later in the file is a decreasing one: repaired and counted
    write_events_raw(ev, x, y, p, t)


def h5_missing_chunks(ev, bb):
    """A writer killed after growing the columns but before writing them: HDF5 would read zeros."""
    x, y, p, t = random_events(300, DUR, W, H)
    with h5py.File(ev, "w") as f:
        g = f.create_group("events")
        for k, v in zip("xypt", (x, y, p, t)):
            g.create_dataset(k, shape=(1000,), maxshape=(None,), chunks=(100,), dtype=np.int64)[:300] = v
        g.create_dataset("width", data=W)
        g.create_dataset("height", data=H)


def no_events(ev, bb):
    write_events_raw(ev, [], [], [], [])


def box_missing_fields(ev, bb):
    np.save(bb, np.zeros(3, [("t", "<u8"), ("x", "<f4"), ("y", "<f4")]))


def box_zero_sizes(ev, bb):
    write_boxes(bb, boxes(w=0.0, h=-5.0))


def box_outside_frame(ev, bb):
    write_boxes(bb, boxes(x=500.0, y=400.0))


def box_unknown_class(ev, bb):
    write_boxes(bb, boxes(cls=9))


def box_times_outside_recording(ev, bb):
    write_boxes(bb, boxes(times=LABEL_T + 10_000_000))


def box_time_far_after_end(ev, bb):
    b = boxes()
    b["t"][-1] = 1 << 60  # one corrupt time
    write_boxes(bb, b)


def box_rate_45hz(ev, bb):
    write_boxes(bb, boxes(times=(np.arange(1, 30) * 1e6 / 45).astype(np.int64)))


def box_negative_t(ev, bb):
    b = np.zeros(3, [("t", "<i8"), ("x", "<f4"), ("y", "<f4"), ("w", "<f4"), ("h", "<f4"), ("class_id", "u1")])
    b["t"] = [-5, 100_000, 200_000]
    np.save(bb, b)


def box_nan(ev, bb):
    b = boxes()
    b["x"][3] = np.nan
    np.save(bb, b)


def box_not_structured(ev, bb):
    np.save(bb, np.zeros((5, 6), np.float32))


CASES = {  # problem -> (make it, the file the message names, what it says, extra CLI arguments)
    "box file without event file": (no_event_file, _bb, "no event file beside it", ()),
    "event file without box file": (no_box_file, _ev, "no box file beside it", ()),
    "empty event file": (empty_events, _ev, "event file is empty", ()),
    "empty box file": (empty_boxes, _bb, "box file is empty", ()),
    "truncated HDF5": (truncated_h5, _ev, "not a readable HDF5 file, truncated or corrupt", ()),
    "corrupt HDF5": (garbage_h5, _ev, "not a readable HDF5 file, truncated or corrupt", ()),
    "no events group": (h5_without_events_group, _ev, "no 'events' group with x, y, p, t", ()),
    "no p dataset": (h5_without_p, _ev, "(missing p)", ()),
    "float x/y": (float_xy, _ev, "events 'x' have dtype float32, expected integers", ()),
    "float t": (float_t, _ev, "events 't' have dtype float64, expected integers", ()),
    "negative timestamps": (negative_t, _ev, "negative timestamp -", ()),
    "no events": (no_events, _ev, "the recording holds no events", ()),
    "HDF5 chunks missing": (
        h5_missing_chunks,
        _ev,
        "events/x holds 1000 events but only 3 of its 10 chunks are stored",
        (),
    ),
    "truncated box file": (truncated_boxes, _bb, "not a readable .npy box file", ()),
    "box file not structured": (box_not_structured, _bb, "not a structured array", ()),
    "box missing fields": (box_missing_fields, _bb, "lacks field(s) w, h, class_id", ()),
    "box zero/negative sizes": (box_zero_sizes, _bb, "all 20 boxes have zero or negative size", ()),
    "boxes outside the frame": (box_outside_frame, _bb, "lie outside the 64x48 frame", ()),
    "unknown class id": (
        box_unknown_class,
        _bb,
        "class ids [9] are not in the class mapping",
        ("--class-map", "etram8to3"),
    ),
    "box times outside recording": (box_times_outside_recording, _bb, "lie outside the events'", ()),
    "box time far after the end": (
        box_time_far_after_end,
        _bb,
        f"box timestamp {1 << 60} us is more than 1000 ms after the last event",
        (),
    ),
    "label rate 45 Hz": (box_rate_45hz, _bb, "labels come at 45 Hz", ()),
    "negative box timestamp": (box_negative_t, _bb, "negative box timestamp -5", ()),
    "NaN box coordinates": (box_nan, _bb, "NaN or infinite", ()),
}


@pytest.mark.parametrize("case", list(CASES))
def test_prepare_bad_input_is_one_line_and_leaves_nothing(tmp_path, capsys, case):
    make_bad, which, problem, extra = CASES[case]
    raw, out = tmp_path / "raw", tmp_path / "out"
    ev, bb = make_recording(raw)
    make_bad(ev, bb)
    rc, stdout, err = run_main(raw, out, capsys, *extra)
    assert rc == 2
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("prepare: error: ") and str(which(ev, bb)) in err and problem in err, err
    assert_no_partial_output(out)


def test_bad_recording_fails_alone_and_good_ones_finish(tmp_path, capsys):
    raw, out = tmp_path / "raw", tmp_path / "out"
    make_recording(raw, "good")
    ev, bb = make_recording(raw, "r", seed=1)
    box_outside_frame(ev, bb)
    rc, stdout, err = run_main(raw, out, capsys)
    assert rc == 2 and err.count("\n") == 1 and str(bb) in err
    assert "1 prepared" in stdout and "1 failed" in stdout
    assert [p.name for p in (out / "train").iterdir()] == ["good"]
    assert_no_partial_output(out)


def test_cli_subprocess_one_line_exit_2(tmp_path):
    """The console entry point as users run it: status 2, one stderr line, no traceback."""
    raw, out = tmp_path / "raw", tmp_path / "out"
    ev, bb = make_recording(raw)
    truncated_h5(ev, bb)
    proc = subprocess.run(
        [sys.executable, "-m", "yolo_etram.cli", "prepare", str(raw), str(out)],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert str(ev) in proc.stderr and "truncated or corrupt" in proc.stderr
    assert_no_partial_output(out)


def test_blosc_filter_missing(tmp_path, capsys):
    """hdf5plugin not registered (simulated by unregistering blosc): named up front, with the fix, before any output."""
    import hdf5plugin

    raw, out = tmp_path / "raw", tmp_path / "out"
    ev, bb = make_recording(raw)
    assert h5py.h5z.unregister_filter(32001)
    try:
        with pytest.raises(
            EventDataError,
            match=r"r_td.h5: events/x is compressed with HDF5 filter 32001 \(blosc\), "
            r"which is not available; pip install hdf5plugin",
        ):
            EventReader(ev)
        rc, _, err = run_main(raw, out, capsys)
        # an unregistered filter at read time (e.g. a dataset our open-time check missed) gets the same fix
        with h5py.File(ev) as f:
            with pytest.raises(OSError) as exc:
                f["events/x"][:]
        from yolo_etram.data.io import h5_read_error

        assert "pip install hdf5plugin" in str(h5_read_error(ev, "events", exc.value))
    finally:
        hdf5plugin.register(force=True)
    assert rc == 2 and err.count("\n") == 1 and str(ev) in err and "pip install hdf5plugin" in err
    assert_no_partial_output(out)


# ----------------------------------------------------------------------------------------------------------------------
# Readers on their own
# ----------------------------------------------------------------------------------------------------------------------


def test_missing_files_and_wrong_extensions(tmp_path):
    with pytest.raises(EventDataError, match="nope_td.h5: event file not found; check the path"):
        EventReader(tmp_path / "nope_td.h5")
    with pytest.raises(EventDataError, match="nope_bbox.npy: box file not found"):
        load_boxes(tmp_path / "nope_bbox.npy")
    (tmp_path / "rec_td.csv").write_text("x,y,p,t\n")
    with pytest.raises(
        EventDataError,
        match=r"rec_td.csv: unknown event file type '.csv' \(expected .h5, .hdf5, .dat, .npy or "
        r".raw\); convert or rename it",
    ):
        EventReader(tmp_path / "rec_td.csv", 10, 10)
    (tmp_path / "rec_bbox.csv").write_text("t,x,y,w,h\n")
    with pytest.raises(EventDataError, match="rec_bbox.csv: a box file must be a Prophesee .npy array"):
        load_boxes(tmp_path / "rec_bbox.csv")
    with pytest.raises(EventDataError, match="raw: raw data folder not found"):
        prepare_dataset(tmp_path / "raw", tmp_path / "out", progress=False)


def test_npy_event_files(tmp_path):
    x, y, p, t = random_events(50, 1000, 10, 10)
    bad = np.zeros(50, [("x", "<f4"), ("y", "<u2"), ("p", "<i2"), ("t", "<i8")])
    np.save(tmp_path / "float_td.npy", bad)
    with pytest.raises(EventDataError, match="float_td.npy: events 'x' have dtype float32, expected integers"):
        EventReader(tmp_path / "float_td.npy", 10, 10)
    np.save(tmp_path / "nofield_td.npy", np.zeros(5, [("x", "<u2"), ("t", "<i8")]))
    with pytest.raises(EventDataError, match=r"nofield_td.npy: event array lacks field\(s\) y, p"):
        EventReader(tmp_path / "nofield_td.npy", 10, 10)
    write_npy_events(tmp_path / "trunc_td.npy", x, y, p, t)
    data = (tmp_path / "trunc_td.npy").read_bytes()
    (tmp_path / "trunc_td.npy").write_bytes(data[:-7])
    with pytest.raises(EventDataError, match="trunc_td.npy: not a readable .npy event file, truncated or corrupt"):
        EventReader(tmp_path / "trunc_td.npy", 10, 10)


def test_dat_event_files(tmp_path):
    x, y, p, t = random_events(50, 1000, 10, 10)
    write_dat(tmp_path / "a_td.dat", x, y, p, t, 10, 10)
    data = (tmp_path / "a_td.dat").read_bytes()
    (tmp_path / "hdr_td.dat").write_bytes(b"% Width 10\n")
    with pytest.raises(EventDataError, match="hdr_td.dat: truncated .dat file"):
        EventReader(tmp_path / "hdr_td.dat", 10, 10)
    (tmp_path / "size_td.dat").write_bytes(data.replace(bytes([0, 8]), bytes([0, 12]), 1))
    with pytest.raises(EventDataError, match="size_td.dat: unsupported .dat event size 12"):
        EventReader(tmp_path / "size_td.dat", 10, 10)
    (tmp_path / "w_td.dat").write_bytes(data.replace(b"% Width 10", b"% Width 1x", 1))
    with pytest.raises(EventDataError, match="w_td.dat: corrupt .dat header"):
        EventReader(tmp_path / "w_td.dat", 10, 10)


def test_h5_bad_sensor_size_and_polarity(tmp_path):
    x, y, p, t = random_events(50, 1000, 10, 10)
    write_events_raw(tmp_path / "size_td.h5", x, y, p, t, width=-3)
    with pytest.raises(EventDataError, match="size_td.h5: stored sensor width -3 is out of range"):
        EventReader(tmp_path / "size_td.h5")
    write_events_raw(tmp_path / "pol_td.h5", x, y, p + 3, t)
    with (
        EventReader(tmp_path / "pol_td.h5") as r,
        pytest.raises(EventDataError, match="pol_td.h5: polarity values up to 4"),
    ):
        r.read_range(0, len(r))


def test_box_file_problems_direct(tmp_path):
    b = np.zeros(2, [("t", "<u8"), ("x", "<f4"), ("y", "<f4"), ("w", "<f4"), ("h", "<f4"), ("class_id", "<i4")])
    b["class_id"] = [0, 300]
    np.save(tmp_path / "cls_bbox.npy", b)
    with pytest.raises(EventDataError, match=r"cls_bbox.npy: class ids must be integers in 0..255 \(found 0..300"):
        load_boxes(tmp_path / "cls_bbox.npy")
    f = np.zeros(2, [("t", "<f8"), ("x", "<f4"), ("y", "<f4"), ("w", "<f4"), ("h", "<f4"), ("class_id", "u1")])
    f["t"] = [1.5, 2]
    np.save(tmp_path / "ft_bbox.npy", f)
    with pytest.raises(EventDataError, match="ft_bbox.npy: box timestamps are fractional"):
        load_boxes(tmp_path / "ft_bbox.npy")
    f["t"] = [1, 2]  # whole numbers in a float column are fine
    np.save(tmp_path / "ok_bbox.npy", f)
    assert list(load_boxes(tmp_path / "ok_bbox.npy")["t"]) == [1, 2]


# ----------------------------------------------------------------------------------------------------------------------
# Warnings: repaired and counted
# ----------------------------------------------------------------------------------------------------------------------


def test_repairs_are_counted_not_errors(tmp_path, capsys):
    """Out-of-frame events dropped, decreasing timestamps raised, bad boxes dropped or cropped: counted, status 0."""
    raw, out = tmp_path / "raw", tmp_path / "out"
    d = raw / "train"
    d.mkdir(parents=True)
    x, y, p, t = random_events(3000, DUR, W, H, seed=3)
    x, t = x.copy(), t.copy()
    x[::100] = W + 5  # 30 out-of-frame events
    t[50::200] -= 5000  # decreasing timestamps
    t[0] = 0
    write_events_h5(d / "r_td.h5", x, y, p, t, W, H)
    b = boxes()
    extra = boxes(LABEL_T[:4])
    extra["w"][0] = 0  # zero size: dropped
    extra["x"][1] = 200  # entirely outside: dropped
    extra["x"][2] = W - 10  # partly outside: cropped
    extra["t"][3] = DUR + 500_000  # after the last event: kept
    write_boxes(d / "r_bbox.npy", np.sort(np.concatenate([b, extra]), order="t"))
    rc, stdout, err = run_main(raw, out, capsys)
    assert rc == 0 and err == "", err
    assert "30 out-of-frame events dropped" in stdout and "decreasing timestamps raised" in stdout
    assert (
        "1 with zero or negative size dropped, 1 outside the frame dropped, 1 partly outside cropped, "
        "1 with no events in their window kept"
    ) in stdout
    (res,) = prepare_dataset(raw, tmp_path / "out2", PrepareConfig(downsample=1), progress=False)
    assert res.status == "done" and res.out_of_frame == 30 and res.decreasing_t > 0
    assert (res.boxes.nonpositive, res.boxes.outside, res.boxes.clipped, res.boxes.outside_time) == (1, 1, 1, 1)


# ----------------------------------------------------------------------------------------------------------------------
# Data YAMLs and prepared sequences
# ----------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prepared_nbins5(tmp_path_factory):
    """A tiny prepared dataset with 5 time bins: 10-channel histograms."""
    root = tmp_path_factory.mktemp("prep5")
    for split in ("train", "val"):
        make_recording(root / "raw", split=split)
    res = prepare_dataset(root / "raw", root / "prepared", PrepareConfig(nbins=5, downsample=1), progress=False)
    assert [r.status for r in res] == ["done", "done"]
    return root / "prepared"


def write_yaml(file, **d):
    file.write_text(yaml.safe_dump({"names": {0: "a"}, "train": "train", "val": "val", **d}))
    return file


def test_data_yaml_paths_that_do_not_exist(tmp_path, prepared_nbins5):
    with pytest.raises(EventDataError, match="data YAML '.*nope.yaml' not found"):
        load_event_data(str(tmp_path / "nope.yaml"))
    y = write_yaml(tmp_path / "d.yaml", path=str(tmp_path / "missing_root"))
    with pytest.raises(
        EventDataError,
        match=r"d.yaml: train folder .*missing_root/train does not exist \(prepare the "
        r"data with `etram-yolo prepare`\)",
    ):
        load_event_data(str(y))
    y = write_yaml(tmp_path / "v.yaml", path=str(prepared_nbins5), val="no_such_split")
    with pytest.raises(EventDataError, match="v.yaml: val folder .*no_such_split does not exist"):
        load_event_data(str(y))
    with pytest.raises(EventDataError, match=f"{tmp_path}: not a readable YAML file"):
        load_event_data(str(tmp_path))
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(EventDataError, match="list.yaml: a data YAML must be a mapping"):
        load_event_data(str(tmp_path / "list.yaml"))


def test_data_yaml_channels_must_match_histograms(tmp_path, prepared_nbins5):
    y = write_yaml(tmp_path / "d.yaml", path=str(prepared_nbins5), channels=20)
    with pytest.raises(
        EventDataError,
        match=r"d.yaml: channels is 20 but the prepared data of train \(.*"
        r"event_representations.h5\) has 10 channels \(stacked_histogram, 5 bins.*\); set channels: 10",
    ):
        load_event_data(str(y))
    assert (
        load_event_data(str(write_yaml(tmp_path / "ok.yaml", path=str(prepared_nbins5), channels=10)))["channels"] == 10
    )
    assert (
        load_event_data(str(write_yaml(tmp_path / "no.yaml", path=str(prepared_nbins5))))["channels"] == 10
    )  # from data
    with pytest.raises(EventDataError, match="bad.yaml: channels must be a positive integer"):
        load_event_data(str(write_yaml(tmp_path / "bad.yaml", path=str(prepared_nbins5), channels="twenty")))


@pytest.mark.parametrize(
    "key, value",
    [
        ("groups", {"small": [0]}),
        ("size_aware", {"a": 1.0, "tau": 256}),
        ("seq_len", 5),
        ("memory", False),
        ("mixed_random_fraction", 0.3),
        ("synth", {"width": 64}),
    ],
)
def test_any_event_key_makes_a_yaml_event_data(tmp_path, key, value):
    """Every event key counts: a YAML whose only event key is ``groups`` or ``size_aware`` was once not recognised."""
    from yolo_etram.data.data_yaml import is_event_data

    assert is_event_data(str(write_yaml(tmp_path / "d.yaml", **{key: value})))
    assert not is_event_data(str(write_yaml(tmp_path / "stock.yaml", channels=3)))  # a stock image YAML may set it


def test_data_yaml_downsample_is_a_factor(tmp_path, prepared_nbins5):
    assert (
        load_event_data(str(write_yaml(tmp_path / "ok.yaml", path=str(prepared_nbins5), downsample=1)))["downsample"]
        == 1
    )
    with pytest.raises(
        EventDataError, match="ds2.yaml: downsample is 2 but the prepared data of train .* is stored at"
    ):
        load_event_data(str(write_yaml(tmp_path / "ds2.yaml", path=str(prepared_nbins5), downsample=2)))
    for bad in (True, 3):
        with pytest.raises(EventDataError, match="bad.yaml: downsample: .* is not a downsampling factor; use 1"):
            load_event_data(str(write_yaml(tmp_path / "bad.yaml", path=str(prepared_nbins5), downsample=bad)))


def test_prepared_sequence_corrupt_histograms(tmp_path, prepared_nbins5):
    import shutil

    seq = tmp_path / "seq"
    shutil.copytree(prepared_nbins5 / "val" / "r", seq)
    h5 = next(seq.rglob("event_representations.h5"))
    h5.write_bytes(h5.read_bytes()[:-200])  # chunks cut off
    try:
        s = PreparedSequence(seq)
        s.histograms(0, len(s))
    except EtramError as e:
        assert "event_representations.h5" in str(e) and ("corrupt" in str(e) or "truncated" in str(e))
    else:
        pytest.fail("a truncated histogram file was read without error")
    (seq / "labels_v2" / "labels.npz").write_bytes(b"PK\x03\x04 broken")
    with pytest.raises(EventDataError, match="seq: incomplete prepared sequence"):
        PreparedSequence(seq)
