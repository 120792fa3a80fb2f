"""Property tests of the data side, with hypothesis.

(a) Random valid recordings (any event count including zero, empty windows, bursts of equal timestamps, coordinates
    at 0 and W-1/H-1, odd sensor sizes), optionally dirty (out-of-frame events, decreasing timestamps, -1/1 polarity),
    written as ``.h5``, ``.npy`` and ``.dat``, read back exactly: the same x, y, p, t after the documented repairs
    (running-max timestamps, out-of-frame events dropped, polarity clipped at 0), windows with RVT's bounds; and
    ``prepare`` on them writes histograms equal to the straightforward RVT reference (``tests/rvt_reference.py``).
(b) Random byte corruption (truncation, overwritten byte ranges) of valid ``.h5``/``.npy``/``.dat`` event files,
    ``_bbox.npy`` box files and the files of a prepared sequence: reading and preparing either succeed or raise our own
    errors (``EtramError``), never a bare ``OSError``/``ValueError``/``KeyError``/...; ``prepare`` leaves no partial
    sequence behind.

Runs are fixed-seed (``derandomize=True``, no example database) and the file takes well under 30 s. For a longer run
set ``FUZZ_EXAMPLES`` to the number of examples per test, e.g. ``FUZZ_EXAMPLES=2000 pytest tests/test_fuzz.py``
(still the same fixed seed); ``FUZZ_RANDOM=1`` draws unseeded examples instead (a failure prints the blob that
reproduces it with ``@reproduce_failure``).
"""

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from rawdata import write_dat, write_npy_events
from rvt_reference import correct_time, rvt_histogram, rvt_windows

from yolo_etram.data.io import BBOX_DTYPE, EventH5Writer, EventReader, load_boxes, write_boxes
from yolo_etram.data.prepare import PrepareConfig, prepare_dataset
from yolo_etram.data.prepared import PreparedSequence
from yolo_etram.utils.errors import EtramError

FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "0"))


def fuzz_settings(default: int):
    """Fixed-seed settings with ``default`` examples (``FUZZ_EXAMPLES`` overrides; ``FUZZ_RANDOM=1``: unseeded)."""
    return settings(
        max_examples=FUZZ_EXAMPLES or default,
        deadline=None,
        derandomize=not os.environ.get("FUZZ_RANDOM"),
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        print_blob=True,
    )


# ----------------------------------------------------------------------------------------------------------------------
# (a) valid recordings round-trip and prepare like the reference
# ----------------------------------------------------------------------------------------------------------------------


@st.composite
def recordings(draw, max_events=250, min_size=1, dirty=True, span=None):
    """``(x, y, p, t, W, H, dirty)``: timestamps from mixed increments (bursts of equal times, small steps, gaps that
    leave windows empty), events in the frame's corners, and optionally what the readers repair (out-of-frame events,
    decreasing timestamps). ``span``: force events at 0 and ``span`` us (a recording covering the labels)."""
    W = draw(st.integers(min_size, 80))
    H = draw(st.integers(min_size, 60))
    n = draw(st.integers(0, max_events))
    inc = draw(hnp.arrays(np.int64, n, elements=st.one_of(st.just(0), st.integers(0, 300), st.integers(0, 120_000))))
    t = draw(st.integers(0, 1_000_000)) + np.cumsum(inc)
    x = draw(hnp.arrays(np.int64, n, elements=st.integers(0, W - 1)))
    y = draw(hnp.arrays(np.int64, n, elements=st.integers(0, H - 1)))
    p = draw(hnp.arrays(np.int64, n, elements=st.integers(0, 1)))
    if n and draw(st.booleans()):  # the extreme coordinates
        x[::2], y[1::2], x[1::3], y[::3] = W - 1, H - 1, 0, 0
    if span is not None:
        t = np.concatenate([[0], np.sort(t % span), [span]])
        x, y, p = (np.concatenate([[0], a, [last]]) for a, last in ((x, W - 1), (y, H - 1), (p, 1)))
        n = len(t)
    is_dirty = dirty and n > 1 and draw(st.booleans())
    if is_dirty:  # repaired on read: out-of-frame events, decreasing timestamps
        out = draw(hnp.arrays(np.bool_, n))
        x = np.where(out & draw(hnp.arrays(np.bool_, n)), x + W, x)
        y = np.where(out, y + draw(st.integers(H, 16000 - H)), y)
        back = draw(hnp.arrays(np.int64, n, elements=st.integers(0, 60_000)))
        t = np.maximum(t - np.where(draw(hnp.arrays(np.bool_, n)), back, 0), 0)
    return x, y, p, t, W, H, is_dirty


def repaired(x, y, p, t, W, H):
    """The documented repairs: running-max timestamps over all events, then out-of-frame events dropped."""
    tf = correct_time(np.asarray(t, np.int64))
    keep = (x < W) & (y < H)
    return x[keep], y[keep], np.maximum(p, 0)[keep], tf[keep], int((~keep).sum()), int((tf != t).sum())


def write_events(path: Path, fmt: str, x, y, p, t, W, H):
    if fmt == "h5":
        with EventH5Writer(path, W, H, chunk=64) as w:  # small chunks: several per column
            w.append(x, y, p, t)
    elif fmt == "npy":
        write_npy_events(path, x, y, p, t)
    else:
        write_dat(path, x, y, p, t, W, H)


@given(
    rec=recordings(),
    fmt=st.sampled_from(["h5", "npy", "dat"]),
    chunk=st.integers(1, 100),
    polarity_pm1=st.booleans(),
    ends=st.lists(st.floats(-0.1, 1.1), max_size=8),
    duration=st.integers(1, 200_000),
)
@fuzz_settings(120)
def test_readers_round_trip(rec, fmt, chunk, polarity_pm1, ends, duration):
    x, y, p, t, W, H, _ = rec
    if polarity_pm1 and fmt != "dat":  # EVT 2.0 stores one polarity bit
        p = 2 * p - 1
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"rec_td.{fmt}"
        write_events(path, fmt, x, y, p, t, W, H)
        with EventReader(path, height=H, width=W, chunk=chunk) as r:
            assert len(r) == len(t)
            xe, ye, pe, te, oof, dec = repaired(x, y, p, t, W, H)
            for a, b in zip(r.read_range(0, len(r)), (xe, ye, pe, te)):
                np.testing.assert_array_equal(a, b)
            assert (r.repairs.out_of_frame, r.repairs.decreasing_t) == (oof, dec)
            # windows: RVT's closed bounds [tau - duration, tau] on the repaired, in-frame events; ends anywhere in
            # (and a little around) the recording
            tf_all = correct_time(np.asarray(t, np.int64))
            lo, hi = (int(tf_all[0]), int(tf_all[-1])) if len(t) else (0, 1)
            ends = np.sort(lo + (np.asarray(ends) * (hi - lo)).astype(np.int64))
            np.testing.assert_array_equal(r.searchsorted(ends, "right"), np.searchsorted(tf_all, ends, "right"))
            starts, stops = rvt_windows(te, ends, duration)
            windows = list(r.iter_windows(ends, duration))
            assert len(windows) == len(ends)
            for s, e, win in zip(starts, stops, windows):
                for a, b in zip(win, (xe[s:e], ye[s:e], pe[s:e], te[s:e])):
                    np.testing.assert_array_equal(a, b)


def label_boxes(span: int, W: int, H: int) -> np.ndarray:
    times = (np.arange(1, int(span * 30 / 1e6) + 1) * 1e6 / 30).astype(np.int64)
    b = np.zeros(len(times), BBOX_DTYPE)
    b["t"], b["x"], b["y"], b["w"], b["h"], b["class_confidence"] = times, 1, 1, max(5, W // 2), max(5, H // 2), 1
    return b


@given(data=st.data(), span=st.integers(140_000, 450_000), downsample=st.sampled_from([1, 2]))
@fuzz_settings(40)
def test_prepare_matches_reference(data, span, downsample):
    x, y, p, t, W, H, _ = data.draw(recordings(span=span, min_size=12))
    with tempfile.TemporaryDirectory() as d:
        raw, out = Path(d) / "raw", Path(d) / "out"
        (raw / "val").mkdir(parents=True)
        write_events(raw / "val" / "r_td.h5", "h5", x, y, p, t, W, H)
        write_boxes(raw / "val" / "r_bbox.npy", label_boxes(span, W, H))
        (res,) = prepare_dataset(raw, out, PrepareConfig(kind="etram", downsample=downsample), progress=False)
        assert res.status == "done", res.error
        seq = out / "val" / "r" / "event_representations_v2" / "stacked_histogram_dt=50_nbins=10"
        window_t = np.load(seq / "timestamps_us.npy")
        xe, ye, pe, te, oof, dec = repaired(x, y, p, t, W, H)
        assert (res.out_of_frame, res.decreasing_t) == (oof, dec)
        starts, stops = rvt_windows(te, window_t, 50_000)
        ref = np.stack(
            [
                rvt_histogram(xe[s:e], ye[s:e], pe[s:e], te[s:e], H, W, downsample=downsample)
                for s, e in zip(starts, stops)
            ]
        )
        import h5py

        name = "event_representations_ds2_nearest.h5" if downsample == 2 else "event_representations.h5"
        with h5py.File(seq / name) as f:
            np.testing.assert_array_equal(f["data"][:], ref)


# ----------------------------------------------------------------------------------------------------------------------
# (b) corrupted files: our errors or success, nothing else
# ----------------------------------------------------------------------------------------------------------------------

CW, CH, CSPAN = 32, 24, 400_000
REPR = "event_representations_v2/stacked_histogram_dt=50_nbins=10"
PREPARED_FILES = (
    f"{REPR}/event_representations.h5",
    f"{REPR}/timestamps_us.npy",
    f"{REPR}/objframe_idx_2_repr_idx.npy",
    "labels_v2/labels.npz",
    "labels_v2/timestamps_us.npy",
)


def _valid_files() -> dict[str, bytes]:
    """The bytes of a valid recording in each format, and of its box file (built once)."""
    rng = np.random.default_rng(0)
    n = 1500
    t = np.sort(rng.integers(0, CSPAN, n)).astype(np.int64)
    t[0], t[-1] = 0, CSPAN
    x, y, p = rng.integers(0, CW, n), rng.integers(0, CH, n), rng.integers(0, 2, n)
    out = {}
    with tempfile.TemporaryDirectory() as d:
        for fmt in ("h5", "npy", "dat"):
            path = Path(d) / f"r_td.{fmt}"
            write_events(path, fmt, x, y, p, t, CW, CH)
            out[fmt] = path.read_bytes()
        write_boxes(Path(d) / "r_bbox.npy", label_boxes(CSPAN, CW, CH))
        out["bbox"] = (Path(d) / "r_bbox.npy").read_bytes()
        raw = Path(d) / "raw" / "val"
        raw.mkdir(parents=True)
        shutil.copy(Path(d) / "r_td.h5", raw)
        shutil.copy(Path(d) / "r_bbox.npy", raw)
        prepare_dataset(raw.parent, Path(d) / "prepared", PrepareConfig(downsample=1), progress=False)
        seq = Path(d) / "prepared" / "val" / "r"
        for f in PREPARED_FILES:
            out[f] = (seq / f).read_bytes()
    return out


VALID = _valid_files()


# A corruption: a list of (offset or cut, junk bytes or None); small to print when a case fails.
CORRUPTIONS = st.lists(
    st.tuples(
        st.one_of(st.integers(0, 2048), st.floats(0, 1)), st.one_of(st.none(), st.binary(min_size=1, max_size=32))
    ),
    min_size=1,
    max_size=3,
)


def corrupt(data: bytes, ops) -> bytes:
    """Apply ``ops`` to ``data``: ``(where, junk)`` overwrites at ``where`` (an offset, or a fraction of the length),
    ``(where, None)`` truncates there."""
    data = bytearray(data)
    for where, junk in ops:
        pos = int(where * len(data)) if isinstance(where, float) else min(where, len(data))
        if junk is None:
            del data[pos:]
        else:
            end = len(data)
            data[pos : pos + len(junk)] = junk
            del data[end:]
    return bytes(data)


def read_everything(path: Path):
    with EventReader(path, CH, CW, chunk=97) as r:
        r.read_range(0, len(r))
        list(r.iter_windows(np.arange(50_000, CSPAN + 50_001, 50_000), 50_000))
        r.read_window(CSPAN // 2, 50_000)


@pytest.mark.parametrize("fmt", ["h5", "npy", "dat", "bbox"])
@given(ops=CORRUPTIONS)
@fuzz_settings(80)
def test_corrupt_files_raise_only_our_errors(fmt, ops):
    bad = corrupt(VALID[fmt], ops)
    with tempfile.TemporaryDirectory() as d:
        raw, out = Path(d) / "raw", Path(d) / "out"
        (raw / "val").mkdir(parents=True)
        ev = raw / "val" / ("r_td.h5" if fmt == "bbox" else f"r_td.{fmt}")
        bb = raw / "val" / "r_bbox.npy"
        ev.write_bytes(VALID["h5"] if fmt == "bbox" else bad)
        bb.write_bytes(bad if fmt == "bbox" else VALID["bbox"])
        try:
            load_boxes(bb) if fmt == "bbox" else read_everything(ev)
        except EtramError:
            pass
        try:
            (res,) = prepare_dataset(raw, out, PrepareConfig(kind="etram", downsample=1), progress=False)
        except EtramError:
            assert not (out / "val" / "r").exists()
        else:
            assert res.status in ("done", "no_labels", "failed")
            assert (out / "val" / "r").exists() == (res.status == "done")
        assert not (out / ".in_progress").exists()
        shutil.rmtree(d, ignore_errors=True)


@given(which=st.sampled_from(PREPARED_FILES), ops=CORRUPTIONS)
@fuzz_settings(60)
def test_corrupt_prepared_sequence_raises_only_our_errors(which, ops):
    """A prepared sequence with one corrupt file: reading it whole (histograms, labels of every window) either works
    or raises our error."""
    with tempfile.TemporaryDirectory() as d:
        seq = Path(d) / "r"
        for f in PREPARED_FILES:
            (seq / f).parent.mkdir(parents=True, exist_ok=True)
            (seq / f).write_bytes(corrupt(VALID[f], ops) if f == which else VALID[f])
        try:
            s = PreparedSequence(seq)
            s.histograms(0, len(s))
            for w in range(len(s)):
                s.window_labels(w)
            s.close()
        except EtramError:
            pass
