"""Raw readers: formats, repairs (counted), RVT's window bounds, bounded memory."""

import numpy as np
import pytest
from rawdata import random_events, write_dat
from rvt_reference import correct_time, rvt_windows

from yolo_etram.data.io import (
    BBOX_DTYPE,
    EventDataError,
    EventReader,
    find_recordings,
    load_boxes,
    write_boxes,
    write_events_h5,
)


def read_all(reader):
    return reader.read_range(0, len(reader))


@pytest.mark.parametrize("fmt", ["h5", "dat", "npy"])
def test_formats_round_trip(tmp_path, fmt):
    x, y, p, t = random_events(5000, 1_000_000, 640, 480, seed=1)
    path = tmp_path / f"rec_td.{fmt}"
    if fmt == "h5":
        write_events_h5(path, x, y, p, t, 640, 480)
    elif fmt == "dat":
        write_dat(path, x, y, p, t, 640, 480)
    else:
        arr = np.zeros(len(t), [("x", "<u2"), ("y", "<u2"), ("p", "<i2"), ("t", "<i8")])
        arr["x"], arr["y"], arr["p"], arr["t"] = x, y, p, t
        np.save(path, arr)
    with EventReader(path, height=480, width=640) as r:
        assert (r.height, r.width) == (480, 640) and len(r) == 5000
        for a, b in zip(read_all(r), (x, y, p, t)):
            np.testing.assert_array_equal(a, b)


def test_h5_file_is_blosc_and_atomic(tmp_path):
    path = tmp_path / "rec_td.h5"
    write_events_h5(path, *random_events(100, 1000, 10, 10), 10, 10)
    import h5py

    with h5py.File(path) as f:
        assert "32001" in f["events/x"]._filters  # blosc
        assert f["events/width"][()] == 10
    assert [q.name for q in tmp_path.iterdir()] == ["rec_td.h5"]  # no temp file left


def test_repairs_polarity_out_of_frame_and_time(tmp_path):
    x, y, p, t = random_events(20_000, 2_000_000, 64, 48, seed=2)
    p = p * 2 - 1  # -1/1 polarity
    x[::97] = 64  # out of frame
    y[::89] = 33014
    t = t.copy()
    t[5::50] -= 7000  # decreasing timestamps
    t[0] = 0
    path = tmp_path / "rec_td.h5"
    write_events_h5(path, x.astype(np.uint16), y.astype(np.uint16), p.astype(np.int16), t, 64, 48)
    with EventReader(path, chunk=1000) as r:  # small chunks: repairs cross chunk boundaries
        xr, yr, pr, tr = read_all(r)
        inside = (x < 64) & (y < 48)
        assert r.repairs.out_of_frame == int((~inside).sum())
        assert r.repairs.decreasing_t > 0
        fixed = correct_time(t)
        assert r.repairs.decreasing_t == int((fixed != t).sum())
        np.testing.assert_array_equal(tr, fixed[inside])
        assert set(np.unique(pr)) == {0, 1}
        np.testing.assert_array_equal(xr, x[inside])


def test_windows_follow_rvt_bounds(tmp_path):
    x, y, p, t = random_events(30_000, 1_000_000, 32, 32, seed=3)
    t[1000:1010] = 500_000  # events exactly on a window boundary belong to both windows
    t = np.sort(t)
    path = tmp_path / "rec_td.h5"
    write_events_h5(path, x, y, p, t, 32, 32)
    ends = np.arange(50_000, 1_000_001, 50_000)
    starts_ref, stops_ref = rvt_windows(t, ends, 50_000)
    with EventReader(path, chunk=777) as r:
        np.testing.assert_array_equal(r.searchsorted(ends - 50_000, "left"), starts_ref)
        np.testing.assert_array_equal(r.searchsorted(ends, "right"), stops_ref)
        windows = list(r.iter_windows(ends, 50_000))
        w9, w10 = windows[9][3], windows[10][3]  # windows ending and starting at 500 ms
        assert (w9 == 500_000).sum() == (w10 == 500_000).sum() >= 10
        for (s, e), (_, _, _, tw) in zip(zip(starts_ref, stops_ref), windows):
            np.testing.assert_array_equal(tw, t[s:e])


def test_boxes_legacy_names_and_errors(tmp_path):
    legacy = np.zeros(
        2,
        [
            ("ts", "<u8"),
            ("x", "<f4"),
            ("y", "<f4"),
            ("w", "<f4"),
            ("h", "<f4"),
            ("class_id", "u1"),
            ("confidence", "<f4"),
            ("track_id", "<u4"),
        ],
    )
    legacy["ts"] = [10, 20]
    legacy["confidence"] = 0.5
    np.save(tmp_path / "a_bbox.npy", legacy)
    b = load_boxes(tmp_path / "a_bbox.npy")
    assert b.dtype == BBOX_DTYPE and list(b["t"]) == [10, 20] and np.allclose(b["class_confidence"], 0.5)
    np.save(tmp_path / "bad_bbox.npy", np.zeros(3, [("t", "<u8"), ("x", "<f4")]))
    with pytest.raises(EventDataError, match=r"bad_bbox.npy: box array lacks field\(s\) y, w, h, class_id"):
        load_boxes(tmp_path / "bad_bbox.npy")
    with pytest.raises(EventDataError, match="a_bbox.npy: no event file beside it"):
        find_recordings(tmp_path)


def test_bad_event_files(tmp_path):
    import h5py

    with h5py.File(tmp_path / "noevents_td.h5", "w") as f:
        f.create_dataset("foo", data=[1])
    with pytest.raises(EventDataError, match="noevents_td.h5: HDF5 file has no 'events' group"):
        EventReader(tmp_path / "noevents_td.h5", 10, 10)
    (tmp_path / "corrupt_td.h5").write_bytes(b"not an hdf5 file at all")
    with pytest.raises(EventDataError, match="corrupt_td.h5: not a readable HDF5 file"):
        EventReader(tmp_path / "corrupt_td.h5", 10, 10)
    (tmp_path / "empty_td.h5").write_bytes(b"")
    with pytest.raises(EventDataError, match="empty_td.h5: event file is empty"):
        EventReader(tmp_path / "empty_td.h5", 10, 10)
    with pytest.raises(EventDataError, match="rec.txt: unknown event file type"):
        (tmp_path / "rec.txt").write_text("x")
        EventReader(tmp_path / "rec.txt", 10, 10)


def test_write_boxes_casts_to_prophesee_dtype(tmp_path):
    write_boxes(tmp_path / "b_bbox.npy", np.zeros(1, BBOX_DTYPE))
    assert np.load(tmp_path / "b_bbox.npy").dtype == BBOX_DTYPE
