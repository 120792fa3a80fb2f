"""Prophesee camera ``.raw`` files: decoded exactly as Prophesee's OpenEB decodes them, written so that
OpenEB reads them back identically, streamed with bounded memory, converted losslessly, prepared and predicted like
HDF5.

The reference numbers below were produced with OpenEB 5.1.1's own standalone decoders
(``standalone_samples/metavision_evt{2,3}_raw_file_decoder``, built unmodified from prophesee-ai/openeb with
``g++ -O2 -std=c++17``): the CSV they write for a file (``x,y,p,t`` per CD event, in their order) was read into arrays
and hashed as ``sha256(x as <u2 | y as <u2 | p as u1 | t as <i8)``. CI has no OpenEB, so the tests hold those hashes.
EVT 2.1 has no standalone decoder in OpenEB: its decoding was checked, while developing, against a line-by-line
transcription of OpenEB's HAL decoder (``hal/cpp/include/metavision/hal/decoders/evt21/evt21_decoder.h``) on a
50 M-event file (identical); here it is tested by round trip through an encoder written from the format's spec.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from yolo_etram.data.io import EventReader, write_boxes
from yolo_etram.data.io import raw as rawmod
from yolo_etram.data.io.raw import DecoderState, RawEventSource, decode_words, read_raw_header
from yolo_etram.data.io.raw_writer import RawWriter, encode_evt2, encode_evt3, write_raw
from yolo_etram.utils.errors import EventDataError

REAL = Path(os.environ.get("YOLO_ETRAM_REAL") or Path(__file__).resolve().parents[2] / "shared" / "real")

# OpenEB's decoding of the real recordings (see the module docstring)
OPENEB = {
    "evt2_sample.raw": dict(
        evt="2.0",
        width=640,
        height=480,
        n=539481,
        t=(1317888, 1367888),
        sha256="737c6d0fe97581b5d8a3e7bcad1939cb0c9a1fb3f61fac08d5f83c13f17cc114",
        head=[
            [237, 121, 1, 1317888],
            [246, 121, 1, 1317888],
            [248, 132, 1, 1317888],
            [239, 133, 1, 1317888],
            [256, 134, 1, 1317888],
        ],
        tail=[
            [233, 108, 0, 1367887],
            [242, 111, 0, 1367887],
            [224, 143, 1, 1367887],
            [240, 143, 1, 1367887],
            [210, 142, 1, 1367888],
        ],
    ),
    "evt3_sample.raw": dict(
        evt="3.0",
        width=1280,
        height=720,
        n=219596,
        t=(11718656, 11727457),
        sha256="ea1fad919660db60df4982dcf2039959eacb452926921755b8f481f41d5f89a3",
        head=[
            [874, 200, 0, 11718656],
            [806, 200, 1, 11718656],
            [882, 201, 0, 11718656],
            [1085, 201, 1, 11718656],
            [1235, 201, 1, 11718656],
        ],
        tail=[
            [1249, 573, 0, 11727457],
            [549, 573, 1, 11727457],
            [170, 572, 0, 11727457],
            [1249, 572, 0, 11727457],
            [1218, 572, 1, 11727457],
        ],
    ),
}
# OpenEB's decoding of the .raw files our writer makes of SynthConfig(width=320, height=192, duration_s=1.5, seed=5)
# (EVT 3.0 and EVT 2.0 alike: the same events as the HDF5 recording of that config)
SYNTH_OPENEB_SHA256 = "208079d3ee8f13e5f3340a148d5fb5b7158e775424a516cba2586c43f30c0efc"


def digest(x, y, p, t) -> str:
    parts = (
        np.asarray(x).astype("<u2"),
        np.asarray(y).astype("<u2"),
        (np.asarray(p) > 0).astype("u1"),
        np.asarray(t).astype("<i8"),
    )
    return hashlib.sha256(b"".join(a.tobytes() for a in parts)).hexdigest()


def all_events(path, **kw):
    src = RawEventSource(Path(path), **kw)
    return src.read(0, src.n)


def real(name: str) -> Path:
    path = REAL / name
    if not path.is_file():
        pytest.skip(f"real camera recordings not found ({path}); set YOLO_ETRAM_REAL to their folder")
    return path


# ------------------------------------------------------------------------------------------------------ exactness


@pytest.mark.parametrize("name", sorted(OPENEB))
@pytest.mark.parametrize("compiled", [True, False])
def test_real_recordings_decode_exactly_as_openeb(name, compiled, monkeypatch):
    ref = OPENEB[name]
    if not compiled:
        monkeypatch.setattr(rawmod, "COMPILED", False)  # the numpy decoder, the fallback without a C compiler
    elif not rawmod.COMPILED:
        pytest.skip("the compiled decoder was not built")
    header = read_raw_header(real(name))
    assert (header.evt, header.width, header.height) == (ref["evt"], ref["width"], ref["height"])
    x, y, p, t = all_events(real(name), chunk_words=1 << 16)  # many chunks: the state carries across them
    assert len(t) == ref["n"] and (t.min(), t.max()) == ref["t"]
    events = np.stack([x, y, p, t], 1).astype(np.int64)
    assert events[:5].tolist() == ref["head"] and events[-5:].tolist() == ref["tail"]
    assert digest(x, y, p, t) == ref["sha256"]
    with EventReader(real(name)) as reader:  # the reader's repairs change nothing on a clean recording
        x2, y2, p2, t2 = reader.read_range(0, len(reader))
        assert digest(x2, y2, p2, t2) == ref["sha256"] and reader.repairs.out_of_frame == 0


WORD_TYPES = {
    "3.0": (0, 2, 3, 4, 5, 6, 8, 10, 7, 14, 15, 1),
    "2.0": (0, 1, 8, 10, 14, 15, 3),
    "2.1": (0, 1, 8, 10, 14, 2),
}


def random_words(rng: np.random.Generator, evt: str, n: int) -> np.ndarray:
    """Words of every type (unknown ones included), time highs mostly rising with occasional drops and wraps."""
    types = rng.choice(WORD_TYPES[evt], n, p=None)
    if evt == "3.0":
        w = (types.astype(np.uint16) << 12) | rng.integers(0, 1 << 12, n).astype(np.uint16)
        th = np.flatnonzero(types == 8)
        w[th] = 0x8000 | (np.cumsum(rng.choice([0, 1, 1, 2, -3, 4000], len(th))) % 4096).astype(np.uint16)
        return w.astype(np.uint16)
    if evt == "2.0":
        w = (types.astype(np.uint32) << 28) | rng.integers(0, 1 << 28, n, dtype=np.uint32)
        th = np.flatnonzero(types == 8)
        w[th] = (8 << 28) | (np.cumsum(rng.choice([0, 1, 1, 2, -5, (1 << 28) - 2], len(th))) % (1 << 28)).astype(
            np.uint32
        )
        return w
    hi = (types.astype(np.uint64) << np.uint64(28)) | rng.integers(0, 1 << 28, n).astype(np.uint64)
    return (hi << np.uint64(32)) | rng.integers(0, 1 << 32, n, dtype=np.uint64)


@pytest.mark.skipif(not rawmod.COMPILED, reason="the compiled decoder was not built")
@settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "0")) or 60,
    deadline=None,
    database=None,
    derandomize=not os.environ.get("FUZZ_RANDOM"),
)
@given(
    evt=st.sampled_from(["3.0", "2.0", "2.1"]),
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(0, 3000),
    cut=st.integers(0, 3000),
)
def test_compiled_and_numpy_decoders_agree_chunk_by_chunk(evt, seed, n, cut):
    """Random word streams (every type, time-high drops and wraps, state words before the first time high), decoded
    whole and in two chunks with the state carried: the compiled loops and the numpy decoder give the same events and
    the same state, and the chunks add up to the whole."""
    words = random_words(np.random.default_rng(seed), evt, n)
    whole = {}
    for compiled in (True, False):
        ev, stats, state = decode_words(evt, words, DecoderState(), 1280, 720, compiled=compiled)
        ev1, _, mid = decode_words(evt, words[:cut], DecoderState(), 1280, 720, compiled=compiled)
        ev2, _, end = decode_words(evt, words[cut:], mid, 1280, 720, compiled=compiled)
        assert digest(*(np.concatenate([a, b]) for a, b in zip(ev1, ev2))) == digest(*ev) and end == state
        whole[compiled] = (digest(*ev), state, stats.n, stats.n_triggers, stats.t_first, stats.t_max)
    assert whole[True] == whole[False]


# ------------------------------------------------------------------------------------------------------ writing


def random_stream(seed: int, n: int = 60_000):
    """Events with everything a camera stream has: equal times, rows of rising columns, small time steps back and a
    gap of more than two EVT 3.0 time-high loops (16.8 s each)."""
    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.integers(0, 400, n))
    t[n // 3 : n // 3 + 20] -= 300  # time going back a little
    t[n // 2 :] += 40_000_000
    x, y, p = rng.integers(0, 1280, n), rng.integers(0, 720, n), rng.integers(0, 2, n)
    x[100:180], y[100:180], p[100:180], t[100:180] = np.arange(500, 580), 9, 1, t[100]  # a camera-like row burst
    return x, y, p, np.maximum(t, 0)


@pytest.mark.parametrize("evt", ["3.0", "2.0"])
def test_written_files_decode_back_identically(tmp_path, evt):
    x, y, p, t = random_stream(1)
    path = tmp_path / "a.raw"
    with RawWriter(path, 1280, 720, evt) as w:
        for s in (slice(0, 1000), slice(1000, 40_000), slice(40_000, None)):  # chunks: the encoder state carries
            w.append(x[s], y[s], p[s], t[s])
    assert digest(*all_events(path, chunk_words=1 << 12)) == digest(x, y, p, t)
    assert read_raw_header(path).fields["format"].startswith("EVT3" if evt == "3.0" else "EVT2")


def test_vector_groups_are_used_for_camera_rows():
    x = np.arange(100, 132)
    words, _ = encode_evt3(x, np.full(32, 5), np.ones(32), np.full(32, 12_345))
    types = (words >> 12).tolist()
    assert types.count(3) == 1 and types.count(4) == 2 and types.count(5) == 1 and 2 not in types
    assert len(encode_evt2(x, np.full(32, 5), np.ones(32), np.full(32, 12_345))[0]) == 33


@pytest.mark.slow
def test_synthetic_raw_recordings_are_what_openeb_reads(tmp_path):
    """Our writer's files, decoded by OpenEB while developing (SYNTH_OPENEB_SHA256), equal the HDF5 recording."""
    from yolo_etram.data.synth import SynthConfig, synthesize_recording

    for fmt in ("evt3", "evt2", "h5"):
        synthesize_recording(
            tmp_path / f"rec_{fmt}", SynthConfig(width=320, height=192, duration_s=1.5, seed=5, event_format=fmt)
        )
    for fmt in ("evt3", "evt2"):
        assert digest(*all_events(tmp_path / f"rec_{fmt}.raw")) == SYNTH_OPENEB_SHA256
    with EventReader(tmp_path / "rec_h5_td.h5") as r:
        assert digest(*r.src.read(0, len(r))) == SYNTH_OPENEB_SHA256


def evt21_words(x, y, p, t, legacy=False) -> np.ndarray:
    """EVT 2.1 from its spec (OpenEB ``evt21_event_types.h``): per event a 64-bit word of type 0/1 with a one-bit mask,
    a TIME_HIGH word (type 8, t >> 6 in bits 32-59) whenever t >> 6 changes."""
    words, last = [], None
    for xi, yi, pi, ti in zip(x.tolist(), y.tolist(), p.tolist(), t.tolist()):
        if ti >> 6 != last:
            words.append((8 << 60) | ((ti >> 6) & 0x0FFFFFFF) << 32)
            last = ti >> 6
        base = xi - (xi % 32)
        words.append((int(pi) << 60) | (ti & 63) << 54 | base << 43 | yi << 32 | 1 << (xi - base))
    w = np.array(words, np.uint64)
    return (w << np.uint64(32)) | (w >> np.uint64(32)) if legacy else w


@pytest.mark.parametrize("legacy", [False, True])
def test_evt21_files_decode_by_the_spec(tmp_path, legacy):
    x, y, p, t = (a[:3000] for a in random_stream(2))
    t = np.sort(t)
    path = tmp_path / "a.raw"
    header = "% evt 2.1\n% geometry 1280x720\n" + ("% endianness legacy\n" if legacy else "") + "% end\n"
    path.write_bytes(header.encode() + evt21_words(x, y, p, t, legacy).astype("<u8").tobytes())
    assert digest(*all_events(path)) == digest(x, y, p, t)


# ------------------------------------------------------------------------------------------------------ bad input


def test_bad_raw_files_are_one_line_errors(tmp_path):
    ok = (REAL / "evt3_sample.raw").read_bytes() if (REAL / "evt3_sample.raw").is_file() else None
    payload = encode_evt3(*random_stream(3, 2000))[0].astype("<u2").tobytes()
    cases = {
        "noheader.raw": (payload, "no '%' header"),
        "unended.raw": (b"% evt 3.0", "the header does not end"),
        "evt4.raw": (b"% evt 4.0\n" + payload, "unknown event format 'evt 4.0'"),
        "noformat.raw": (b"% date today\n" + payload, "names no event format"),
        "renamed.raw": (b"\x89HDF\r\n\x1a\n" + payload, "is an HDF5 file"),
        "wrong_format.raw": (
            b"% evt 3.0\n% geometry 1280x720\n% end\n"
            + encode_evt2(*random_stream(3, 2000))[0].astype("<u4").tobytes(),
            "types that EVT 3.0 does not define",
        ),
        "tiny_geometry.raw": (b"% evt 3.0\n% geometry 64x48\n% end\n" + payload, "lie outside the 64x48 sensor"),
    }
    for name, (content, message) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(EventDataError, match=message) as e:
            with EventReader(tmp_path / name) as r:
                len(r)
        assert str(tmp_path / name) in str(e.value) and "\n" not in str(e.value)
    if ok is not None:  # a last word cut short is ignored (as OpenEB does) and counted
        (tmp_path / "cut.raw").write_bytes(ok[:-1])
        src = RawEventSource(tmp_path / "cut.raw")
        assert src.truncated_bytes == 1 and src.n == OPENEB["evt3_sample.raw"]["n"]


def test_prepare_cli_names_the_bad_raw_file(tmp_path):
    split = tmp_path / "raw" / "train"
    split.mkdir(parents=True)
    (split / "rec.raw").write_bytes(b"% evt 9.9\n\x00\x80")
    write_boxes(
        split / "rec_bbox.npy",
        np.zeros(0, [("t", "<u8"), ("x", "<f4"), ("y", "<f4"), ("w", "<f4"), ("h", "<f4"), ("class_id", "u1")]),
    )
    out = subprocess.run(
        [sys.executable, "-m", "yolo_etram.cli", "prepare", str(tmp_path / "raw"), str(tmp_path / "o")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2
    errors = [ln for ln in out.stderr.splitlines() if "error" in ln]
    assert len(errors) == 1 and "rec.raw: unknown event format 'evt 9.9'" in errors[0], out.stderr


# ------------------------------------------------------------------------------------------------------ the pipeline


@pytest.fixture(scope="module")
def synth_pair(tmp_path_factory):
    """The same synthetic recording as EVT 3.0 ``.raw`` and as HDF5, with its boxes (two raw dataset folders)."""
    from yolo_etram.data.synth import SynthConfig, synthesize_dataset

    root = tmp_path_factory.mktemp("raw_pair")
    for fmt in ("evt3", "h5"):
        synthesize_dataset(
            root / fmt,
            {"train": 1},
            SynthConfig(width=256, height=192, duration_s=2.0, seed=8, event_format=fmt),
            progress=False,
        )
    return root


def test_prepare_on_raw_equals_prepare_on_hdf5(synth_pair, tmp_path):
    from yolo_etram.data.io import find_recordings
    from yolo_etram.data.prepare import PrepareConfig, prepare_dataset

    ((name, events, boxes),) = find_recordings(synth_pair / "evt3" / "train")
    assert events.name == f"{name}.raw" and boxes.name == f"{name}_bbox.npy"
    for fmt in ("evt3", "h5"):
        (res,) = prepare_dataset(
            synth_pair / fmt, tmp_path / fmt, PrepareConfig(kind="etram", downsample=1), progress=False
        )
        assert res.status == "done", res.error
    a = sorted(p.relative_to(tmp_path / "evt3") for p in (tmp_path / "evt3").rglob("*") if p.is_file())
    b = sorted(p.relative_to(tmp_path / "h5") for p in (tmp_path / "h5").rglob("*") if p.is_file())
    assert a == b
    from yolo_etram.data.prepared import PreparedSequence

    ra, rb = (PreparedSequence(tmp_path / fmt / "train" / name) for fmt in ("evt3", "h5"))
    np.testing.assert_array_equal(ra.histograms(0, len(ra)), rb.histograms(0, len(rb)))
    np.testing.assert_array_equal(ra.labels, rb.labels)
    np.testing.assert_array_equal(ra.window_t, rb.window_t)


def test_time_range_reads_only_the_chunks_it_needs(synth_pair, monkeypatch):
    from yolo_etram.data.stream import EventWindowSource

    rec = next((synth_pair / "evt3" / "train").glob("*.raw"))
    full = {w.t_end: w.hist for w in EventWindowSource(rec)}
    decoded = []
    real_decoded = RawEventSource._decoded
    monkeypatch.setattr(RawEventSource, "_decoded", lambda self, i: decoded.append(i) or real_decoded(self, i))
    monkeypatch.setattr(rawmod, "CHUNK_WORDS", 1 << 14)  # many small chunks
    part = list(EventWindowSource(rec, start_us=1_500_000, end_us=1_800_000))
    assert [w.t_end for w in part] == [t for t in full if 1_500_000 <= t <= 1_800_000]
    for w in part:
        np.testing.assert_array_equal(w.hist, full[w.t_end])
    n_chunks = len(RawEventSource(rec, chunk_words=1 << 14).scan())
    assert decoded and min(decoded) > 0 and len(set(decoded)) < n_chunks / 2  # the start of the file was skipped


def test_convert_between_every_format_is_lossless(synth_pair, tmp_path):
    from yolo_etram.data.convert import convert

    rec = next((synth_pair / "evt3" / "train").glob("*.raw"))
    ref = digest(*all_events(rec))
    chain = [rec, tmp_path / "a_td.h5", tmp_path / "b.dat", tmp_path / "c.raw", tmp_path / "d.npy"]
    for src, out in zip(chain, chain[1:]):
        convert(src, out, evt="2.0" if out.name == "c.raw" else "3.0")
    from yolo_etram.data.io.reader import open_source

    for f in chain[1:]:
        s = open_source(f)
        assert digest(*s.read(0, s.n)) == ref, f
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "yolo_etram.cli",
            "convert",
            str(chain[-1]),
            str(tmp_path / "e.raw"),
            "--height",
            "192",
            "--width",
            "256",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0 and digest(*all_events(tmp_path / "e.raw")) == ref, out.stderr


def test_synth_cli_writes_camera_files(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "yolo_etram.cli",
            "synth",
            str(tmp_path / "s"),
            "--format",
            "raw",
            "--evt",
            "2.0",
            "--width",
            "128",
            "--height",
            "96",
            "--duration",
            "0.5",
            "--train",
            "1",
            "--val",
            "0",
            "--test",
            "0",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    (rec,) = (tmp_path / "s" / "train").glob("*.raw")
    assert read_raw_header(rec).evt == "2.0" and RawEventSource(rec).n > 0
    assert (rec.parent / rec.name.replace(".raw", "_bbox.npy")).is_file()


@pytest.mark.slow
def test_yolo_predict_on_the_real_evt3_recording_writes_a_video(tmp_path):
    from test_predict import tiny_model

    rec = real("evt3_sample.raw")
    model = tiny_model(downsample=2)  # 1280x720 -> 640x360, padded to 384x640 (partition (3, 4))
    weights = tmp_path / "tiny.pt"
    model.save(weights)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "yolo_etram.cli",
            "predict",
            f"model={weights}",
            f"source={rec}",
            "save=True",
            f"project={tmp_path}",
            "name=p",
            "conf=0.01",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    videos = list((tmp_path / "p").glob("evt3_sample.*"))
    assert videos and videos[0].stat().st_size > 0, list((tmp_path / "p").iterdir())


@pytest.mark.slow
def test_stream_memory_is_flat_in_the_recording_length(tmp_path):
    """Peak memory (VmHWM of a fresh process) of reading every 50 ms window of a .raw recording of 6 s and of 24 s of
    the same event rate (400 k events/s): the longer one needs no more than a few MiB more."""
    rng = np.random.default_rng(0)
    for seconds in (6, 24):
        with RawWriter(tmp_path / f"r{seconds}.raw", 640, 480) as w:
            for k in range(seconds):
                t = np.sort(rng.integers(k * 1_000_000, (k + 1) * 1_000_000, 400_000))
                w.append(rng.integers(0, 640, len(t)), rng.integers(0, 480, len(t)), rng.integers(0, 2, len(t)), t)
    code = (
        "import sys; from yolo_etram.data.stream import EventWindowSource; "
        "n = sum(1 for _ in EventWindowSource(sys.argv[1])); "
        "print(n, open('/proc/self/status').read().split('VmHWM:')[1].split()[0])"
    )
    peaks = {}
    for seconds in (6, 24):
        out = subprocess.run(
            [sys.executable, "-c", code, str(tmp_path / f"r{seconds}.raw")], capture_output=True, text=True, timeout=600
        )
        assert out.returncode == 0, out.stderr[-2000:]
        n, kib = out.stdout.split()
        assert int(n) == 20 * seconds
        peaks[seconds] = int(kib) / 1024
    assert peaks[24] < peaks[6] + 30, peaks  # MiB


@settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "0")) or 40,
    deadline=None,
    database=None,
    derandomize=not os.environ.get("FUZZ_RANDOM"),
)
@given(evt=st.sampled_from(["3.0", "2.0"]), data=st.data())
def test_corrupted_raw_files_give_our_error_or_events(tmp_path_factory, evt, data):
    """Bytes of a small written recording flipped, overwritten, inserted or cut, in the header or the words: reading
    every window either works or raises our one-line EventDataError; nothing else escapes."""
    from yolo_etram.data.stream import EventWindowSource

    rng = np.random.default_rng(4)
    x, y, p, t = rng.integers(0, 128, 3000), rng.integers(0, 96, 3000), rng.integers(0, 2, 3000), np.arange(3000) * 97
    d = tmp_path_factory.mktemp("rawfuzz")
    write_raw(d / "a.raw", x, y, p, t, 128, 96, evt)
    b = bytearray((d / "a.raw").read_bytes())
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(b) - 1))
        op = data.draw(st.sampled_from(["flip", "set", "insert", "cut"]))
        if op == "flip":
            b[i] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "set":
            b[i] = data.draw(st.integers(0, 255))
        elif op == "insert":
            b[i:i] = data.draw(st.binary(min_size=1, max_size=16))
        else:
            del b[max(i, 1) :]
    (d / "m.raw").write_bytes(bytes(b))
    try:
        for i, _ in enumerate(EventWindowSource(d / "m.raw")):
            if i == 40:  # a corrupt time high may stretch the recording: the first windows tell enough
                break
    except EventDataError as e:
        assert "\n" not in str(e) and "m.raw" in str(e)
