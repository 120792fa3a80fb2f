"""Camera ``.raw`` decoding and ``prepare`` throughput, side by side in one run with the fastest PyPI readers and with
the HDF5 path on the same events; peak memory against recording length.

Decode: two real camera recordings (``--recordings DIR`` holding ``evt3_sample.raw`` from the eTraM sensor and
``evt2_sample.raw`` from a Gen3; ``$YOLO_ETRAM_REAL`` by default; without them those rows are skipped), tiled in time to
about 20 M events (each tile shifted by the recording's span, written with our writer), are decoded whole by
- ours: ``RawEventSource`` chunk by chunk (the compiled loops; the numpy fallback too, for reference),
- the fastest readers the registry has that decode exactly as OpenEB (checked against OpenEB's decoders on the real
  files while this was developed: ``evt3`` 0.4.1 for EVT 3.0; ``expelliarmus`` 1.1.12, exact on EVT 2.0 only),
- the HDF5 path: the same events in an eTraM-layout ``_td.h5`` (blosc zstd), read column by column in chunks.
Prepare: one synthetic 1280x720 recording with boxes, written as EVT 3.0 ``.raw`` and as HDF5 (the same events), each
prepared in its own fresh process (``prepare --workers 1``). Memory: VmHWM of a fresh process streaming every 50 ms
window of a 6 s and a 24 s ``.raw`` recording.

    python benchmarks/bench_raw.py --json runs/bench/raw.json      # ~3 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def tiled(path: Path, target: int) -> tuple:
    """The recording's events repeated, each copy shifted by the recording's span, up to ``target`` events."""
    from yolo_etram.data.io.raw import RawEventSource

    src = RawEventSource(path)
    x, y, p, t = src.read(0, src.n)
    span = int(t[-1] - t[0]) + 1
    k = max(1, target // len(t))
    shift = np.repeat(np.arange(k, dtype=np.int64) * span, len(t))
    return np.tile(x, k), np.tile(y, k), np.tile(p, k), np.tile(t, k) + shift, (src.height, src.width)


def best_of(fn, repeats: int) -> tuple[float, int]:
    times, n = [], 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        n = fn()
        times.append(time.perf_counter() - t0)
    return min(times), n


def ours(path: Path, compiled: bool = True):
    from yolo_etram.data.io import raw

    def run():
        raw.COMPILED, saved = compiled and raw.COMPILED, raw.COMPILED
        try:
            src = raw.RawEventSource(path)
            n = sum(len(events[3]) for events in src.iter_chunks())  # the sequential pass prepare and predict make
            src.close()
            return n
        finally:
            raw.COMPILED = saved

    return run


def hdf5(path: Path):
    from yolo_etram.data.io import EventReader

    def run():
        with EventReader(path) as r:
            n = 0
            for s in range(0, len(r), 1 << 20):
                n += len(r.src.read(s, min(s + (1 << 20), len(r)))[3])
            return n

    return run


def third_party(path: Path, evt: str):
    if evt == "3.0":
        try:
            import evt3
        except ImportError:
            return None, "evt3 not installed"
        return (lambda: len(evt3.decode_file(str(path)).t)), "evt3 0.4.1"
    try:
        import expelliarmus
    except ImportError:
        return None, "expelliarmus not installed"
    return (lambda: len(expelliarmus.Wizard(encoding="evt2").read(str(path))["t"])), "expelliarmus 1.1.12"


PREPARE = """
import sys, time
from yolo_etram.data.prepare import PrepareConfig, prepare_dataset
t0 = time.perf_counter()
(r,) = prepare_dataset(sys.argv[1], sys.argv[2], PrepareConfig(kind="etram"), workers=1, progress=False)
print(r.status, r.events, time.perf_counter() - t0)
"""

STREAM = """
import sys
from yolo_etram.data.stream import EventWindowSource
n = sum(1 for _ in EventWindowSource(sys.argv[1]))
print(n, next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')))
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=20_000_000, help="events per tiled decode file")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", default=None)
    ap.add_argument(
        "--recordings",
        default=os.environ.get("YOLO_ETRAM_REAL"),
        help="folder with the real recordings evt3_sample.raw and evt2_sample.raw (default: $YOLO_ETRAM_REAL)",
    )
    args = ap.parse_args()
    real = Path(args.recordings) if args.recordings else None
    from yolo_etram.data.io import raw, write_events_h5
    from yolo_etram.data.io.raw_writer import RawWriter, write_raw

    tmp = Path(tempfile.mkdtemp(prefix="bench_raw_"))
    result = {"compiled": raw.COMPILED, "decode": [], "prepare": {}, "stream_peak_rss_mib": {}}
    print(f"bench_raw: compiled decoder {'in use' if raw.COMPILED else 'NOT built (numpy fallback)'}; data in {tmp}")
    for name, evt in (("evt3_sample.raw", "3.0"), ("evt2_sample.raw", "2.0")):
        if real is None or not (real / name).is_file():
            print(f"  {name}: not found (--recordings {real}), skipped")
            continue
        x, y, p, t, (h, w) = tiled(real / name, args.events)
        f_raw, f_h5 = tmp / f"tiled_{evt}.raw", tmp / f"tiled_{evt}_td.h5"
        write_raw(f_raw, x, y, p, t, w, h, evt)
        write_events_h5(f_h5, x, y, p, t, w, h)
        del x, y, p, t
        row = {"file": name, "evt": evt, "events": None, "raw_mib": f_raw.stat().st_size / 2**20}
        for label, fn in (("ours", ours(f_raw)), ("ours_numpy", ours(f_raw, compiled=False)), ("hdf5", hdf5(f_h5))):
            sec, n = best_of(fn, args.repeats if label != "ours_numpy" else 1)
            row["events"] = n
            row[f"{label}_mev_s"] = n / sec / 1e6
        fn, lib = third_party(f_raw, evt)
        row["third_party"] = lib
        if fn is not None:
            sec, n = best_of(fn, args.repeats)
            assert n == row["events"], f"{lib} decoded {n} events, ours {row['events']}"
            row["third_party_mev_s"] = n / sec / 1e6
        result["decode"].append(row)
        print(
            f"  decode {name} x{row['events'] / 1e6:.0f} M events (EVT {evt}): ours {row['ours_mev_s']:.1f} M ev/s "
            f"(numpy fallback {row['ours_numpy_mev_s']:.1f}), {lib} {row.get('third_party_mev_s', float('nan')):.1f},"
            f" HDF5 {row['hdf5_mev_s']:.1f}"
        )
        f_raw.unlink()
        f_h5.unlink()

    # prepare: the same events with boxes as EVT 3.0 .raw and as HDF5: real camera traffic (the eTraM sensor's
    # recording tiled to about a second, boxes at 30 Hz) and synthetic traffic (a distinct time for nearly every
    # event: the worst case for EVT 3.0, a TIME_LOW word per event)
    from yolo_etram.data.io import BBOX_DTYPE, write_boxes
    from yolo_etram.data.synth import SynthConfig, synthesize_dataset

    if real is not None and (real / "evt3_sample.raw").is_file():
        x, y, p, t, (h, w) = tiled(real / "evt3_sample.raw", 25_000_000)
        t = t - t[0]  # a recording starts near 0
        boxes = np.zeros(int(t[-1]) * 30 // 1_000_000, BBOX_DTYPE)
        boxes["t"] = (np.arange(1, len(boxes) + 1) * 1e6 / 30).astype(np.int64)
        boxes["x"], boxes["y"], boxes["w"], boxes["h"], boxes["class_id"] = 400, 200, 120, 80, 1
        for fmt in ("evt3", "h5"):
            (tmp / f"camera_{fmt}" / "train").mkdir(parents=True)
            write_boxes(tmp / f"camera_{fmt}" / "train" / "rec_bbox.npy", boxes)
        write_raw(tmp / "camera_evt3" / "train" / "rec.raw", x, y, p, t, w, h)
        write_events_h5(tmp / "camera_h5" / "train" / "rec_td.h5", x, y, p, t, w, h)
        del x, y, p, t
    for fmt in ("evt3", "h5"):
        cfg = SynthConfig(width=1280, height=720, duration_s=4.0, seed=2, event_format=fmt)
        synthesize_dataset(tmp / f"synthetic_{fmt}", {"train": 1}, cfg, progress=False)
    for case in ("camera", "synthetic"):
        if not (tmp / f"{case}_evt3").is_dir():
            continue
        row = {}
        for fmt in ("evt3", "h5"):
            runs = []
            for k in range(args.repeats):
                cmd = [sys.executable, "-c", PREPARE, str(tmp / f"{case}_{fmt}"), str(tmp / f"prep_{case}_{fmt}_{k}")]
                status, events, sec = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.split()
                runs.append((float(sec), int(events)))
            sec, events = min(runs)
            row[fmt] = {"events": events, "seconds": sec, "mev_s": events / sec / 1e6}
        row["raw_vs_hdf5"] = row["evt3"]["mev_s"] / row["h5"]["mev_s"]
        result["prepare"][case] = row
        print(
            f"  prepare, {case} traffic 1280x720 ({row['h5']['events'] / 1e6:.1f} M events, fresh process each): "
            f".raw {row['evt3']['mev_s']:.2f} M ev/s, HDF5 {row['h5']['mev_s']:.2f} M ev/s "
            f"(.raw {row['raw_vs_hdf5']:.2f}x)"
        )

    # memory: a fresh process streams every window of 6 s and 24 s of the same event rate
    rng = np.random.default_rng(0)
    for seconds in (6, 24):
        path = tmp / f"stream_{seconds}.raw"
        with RawWriter(path, 1280, 720) as wr:
            for k in range(seconds):
                tt = np.sort(rng.integers(k * 1_000_000, (k + 1) * 1_000_000, 1_000_000))
                wr.append(
                    rng.integers(0, 1280, len(tt)), rng.integers(0, 720, len(tt)), rng.integers(0, 2, len(tt)), tt
                )
        out = subprocess.run([sys.executable, "-c", STREAM, str(path)], capture_output=True, text=True, check=True)
        result["stream_peak_rss_mib"][f"{seconds}s"] = int(out.stdout.split()[1]) / 1024
        path.unlink()
    print(
        "  streaming windows, peak RSS of a fresh process (1 M events/s): "
        + ", ".join(f"{k}: {v:.0f} MiB" for k, v in result["stream_peak_rss_mib"].items())
    )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
