"""Run the references' own representation code on event windows, compare ours with it, write the golden fixtures.

The references: RVT's ``data/utils/representations.py`` (``StackedHistogram``, ``MixedDensityEventStack``) with the
``downsample_ev_repr`` of its ``scripts/genx/preprocess_dataset.py``, that script itself end to end, and ReYOLOv8's
``formats_utils.py`` (``vtei``, ``mdes``, ``voxel_grid``), all read from local copies (a work tree or a git dir, e.g.
what ``git clone`` of github.com/uzh-rpg/RVT and github.com/silvada95/ReYOLOv8 gives). Their code needs torch and, for
RVT's script, omegaconf, h5py, hdf5plugin and numba: run the ``reference`` step with the python of
``benchmarks/rvt_env.sh``. Nothing of the references is kept in this repository.

Steps (``all`` runs the three, the middle one with ``--ref-python``)::

    python benchmarks/check_representations.py cases OUT [--real DIR]            # event windows -> OUT/cases.npz
    $PY benchmarks/check_representations.py reference OUT --rvt R --reyolov8 Y [--golden-raw DIR]
    python benchmarks/check_representations.py compare OUT [--real DIR] [--golden-raw DIR]   # exit 1 on a difference

The cases: random windows with edge cases (one event, one timestamp, even spans that put events exactly on the
log-density bin edges, odd sensor sizes for the halving), windows of our synthetic generator, and windows of the real
camera recordings (``--real``: ``evt2_sample.raw`` 640x480, ``evt3_sample.raw`` 1280x720) by duration and by count.
Each is built by every representation at downsample 1 and 2 (ReYOLOv8 never halves: there RVT's ``downsample_ev_repr``
is applied to its frames, which is what our ``--downsample`` does). ``--golden-raw`` (three gen4-style recordings)
is prepared by RVT's script with ``mixeddensity_stack`` + ``const_duration`` and with ``stacked_hist`` +
``const_count``, and by our ``prepare`` with the same settings.

``reference.json`` holds a sha256 per case, representation and downsample, and per window of each RVT run; the test
fixtures are ``cases.npz`` (only the stored windows: the real ones are read from the recordings at test time) and
``reference.json``: ``--fixtures tests/fixtures/representations`` on ``cases`` and ``reference`` writes them there.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
REPRESENTATIONS = {  # name -> (nbins, cutoff) of the cases; RVT's configurations and ReYOLOv8's defaults
    "stacked_histogram": (10, 10),
    "mixeddensity_stack": (10, 32),
    "vtei": (5, None),
    "mdes": (5, None),
    "voxel_grid": (5, None),
}
PREPARE_RUNS = {  # RVT's representation and extraction configs -> our prepare settings
    "mixeddensity_dt50": ("mixeddensity_stack.yaml", "const_duration.yaml", {"representation": "mixeddensity_stack"}),
    "histogram_ne50000": ("stacked_hist.yaml", "const_count.yaml", {"window_events": 50_000}),
}
REAL_WINDOWS = {  # recording -> windows (t_end us after the first event, duration us or None, count or None)
    "evt2_sample.raw": [(20_000, 20_000, None), (45_000, 50_000, None), (45_000, None, 50_000)],
    "evt3_sample.raw": [(2_000, 50_000, None), (2_000, None, 20_000), (1_000, 500, None)],
}


def digest(a: np.ndarray) -> str:
    a = np.ascontiguousarray(a)
    return hashlib.sha256(f"{a.dtype.str}{a.shape}".encode() + a.tobytes()).hexdigest()[:32]


def hot_pixels(case: dict, downsample: int) -> np.ndarray:
    """Stored pixels with more than 127 events in the window: only there can the references' uint8/int8 sums wrap
    (a histogram bin past 255, a mixed-density sum past 127), where ours saturate on purpose."""
    h, w = case["height"], case["width"]
    n = np.bincount(np.asarray(case["y"], np.int64) * w + case["x"], minlength=h * w).reshape(h, w)
    return n[1::2, 1::2][: h // 2, : w // 2] > 127 if downsample == 2 else n > 127


def digests(frame: np.ndarray, case: dict, downsample: int) -> dict:
    """The frame's digest, and (where hot pixels exist) its digest with them zeroed and their number."""
    out = {"full": digest(frame)}
    hot = hot_pixels(case, downsample)
    if hot.any():
        frame = frame.copy()
        frame[:, hot] = 0
        out.update(masked=digest(frame), hot=int(hot.sum()))
    return out


# ---------------------------------------------------------------------------------------------------------- cases
def random_cases(rng: np.random.Generator) -> list[dict]:
    cases = []

    def add(name, h, w, x, y, p, t):
        cases.append({"name": name, "height": h, "width": w, "x": x, "y": y, "p": p, "t": t})

    for i, (h, w, n, span) in enumerate(
        [(36, 64, 800, 50_000), (35, 63, 3_000, 49_999), (12, 9, 400, 7), (36, 64, 5_000, 2), (35, 63, 20_000, 50_000)]
    ):
        t = np.sort(rng.integers(1_000_000, 1_000_000 + span + 1, n))
        add(f"random{i}", h, w, rng.integers(0, w, n), rng.integers(0, h, n), rng.integers(0, 2, n), t)
    for span in (2, 64, 1024, 50_000):  # dt = span / 2^k lands exactly on the log-density bin edges
        t = 7_000_000 + np.repeat(np.array(sorted({span >> k for k in range(12)} | {0, span})), 3)
        n = len(t)
        add(f"edges{span}", 20, 30, rng.integers(0, 30, n), rng.integers(0, 20, n), rng.integers(0, 2, n), t)
    add("one_event", 8, 8, np.array([3]), np.array([5]), np.array([1]), np.array([123]))
    n = 60  # one timestamp, one pixel: below every wrap-around (the references wrap, we saturate)
    add("same_time_pixel", 8, 8, np.full(n, 5), np.full(n, 3), (np.arange(n) % 3 == 0).astype(int), np.full(n, 500))
    return cases


def synthetic_cases(tmp: Path) -> list[dict]:
    from yolo_etram.data.io import EventReader
    from yolo_etram.data.synth import SynthConfig
    from yolo_etram.data.synth.writer import synthesize_recording

    cfg = SynthConfig(width=160, height=96, duration_s=1.0, seed=3)
    synthesize_recording(tmp / "synth", cfg)
    cases = []
    with EventReader(next(tmp.glob("synth*_td.h5"))) as reader:
        ends = [300_000, 650_000, 999_000]
        for (x, y, p, t), end in zip(reader.iter_windows(ends, 50_000), ends):
            cases.append({"name": f"synth{end}", "height": 96, "width": 160, "x": x, "y": y, "p": p, "t": t})
    return cases


def real_cases(real: Path) -> list[dict]:
    from yolo_etram.data.io import EventReader

    cases = []
    for name, windows in REAL_WINDOWS.items():
        with EventReader(real / name) as reader:
            t0 = reader.t_start
            for end, duration, count in windows:
                ((x, y, p, t),) = reader.iter_windows([t0 + end], duration or 0, count=count)
                cases.append(
                    {
                        "name": f"{name}@{end}" + (f"dt{duration}" if duration else f"ne{count}"),
                        "file": name,
                        "end": t0 + end,
                        "duration": duration,
                        "count": count,
                        "height": reader.height,
                        "width": reader.width,
                        "x": x,
                        "y": y,
                        "p": p,
                        "t": t,
                    }
                )
    return cases


def save_cases(path: Path, cases: list[dict], stored_only: bool = False) -> None:
    arrays, meta = {}, []
    for i, c in enumerate(cases):
        entry = {k: (int(v) if isinstance(v, np.integer) else v) for k, v in c.items() if k not in "xypt"}
        if not (stored_only and "file" in c):
            for k in "xypt":
                arrays[f"{i}_{k}"] = np.asarray(c[k], np.int64 if k == "t" else np.int16)
        meta.append(entry)
    np.savez_compressed(path, meta=json.dumps(meta), **arrays)


def load_cases(path: Path, real: Path | None = None) -> list[dict]:
    """The cases of ``path``; windows of real recordings not stored there are read from ``real`` (skipped without)."""
    with np.load(path) as z:
        meta, arrays = json.loads(str(z["meta"])), {k: z[k] for k in z.files if k != "meta"}
    cases = []
    for i, c in enumerate(meta):
        if f"{i}_x" in arrays:
            cases.append({**c, **{k: arrays[f"{i}_{k}"] for k in "xypt"}})
        elif real is not None and (real / c["file"]).is_file():
            from yolo_etram.data.io import EventReader

            with EventReader(real / c["file"]) as reader:
                ((x, y, p, t),) = reader.iter_windows([c["end"]], c["duration"] or 0, count=c["count"])
            cases.append({**c, "x": x, "y": y, "p": p, "t": t})
    return cases


def key(case: str, rep: str, downsample: int) -> str:
    return f"{case}|{rep}|ds{downsample}"


# ---------------------------------------------------------------------------------------------------------- ours
def ours(cases: list[dict]) -> dict[str, str]:
    from yolo_etram.data.representations import build_representation

    out = {}
    for c in cases:
        for rep, (nbins, cutoff) in REPRESENTATIONS.items():
            for ds in (1, 2):
                r = build_representation(rep, c["height"], c["width"], nbins=nbins, cutoff=cutoff, downsample=ds)
                out[key(c["name"], rep, ds)] = digests(r(c["x"], c["y"], c["p"], c["t"]), c, ds)
    return out


def our_prepare(golden_raw: Path, out: Path) -> dict[str, str]:
    """Our ``prepare`` of the golden recordings with each run's settings: a digest per window."""
    from yolo_etram.data.prepare import PrepareConfig, prepare_dataset
    from yolo_etram.data.prepared import PreparedSequence, list_sequences

    digests = {}
    for run, (_, _, kw) in PREPARE_RUNS.items():
        prepare_dataset(golden_raw, out / run, PrepareConfig(kind="gen4", **kw), progress=False)
        for split in ("train", "val", "test"):
            for seq_dir in list_sequences(out / run / split):
                seq = PreparedSequence(seq_dir)
                for i in range(len(seq)):
                    digests[f"{run}|{split}/{seq.name}|{i}"] = digest(seq.histograms(i, i + 1)[0])
                digests[f"{run}|{split}/{seq.name}|timestamps"] = digest(seq.window_t)
                digests[f"{run}|{split}/{seq.name}|folder"] = seq.repr_dir.name
                seq.close()
    return digests


# ---------------------------------------------------------------------------------------------------------- references
def source_tree(path: Path, files: tuple[str, ...]) -> Path:
    """A folder holding ``files`` of a work tree (itself) or of a git dir's HEAD (extracted to a temp dir)."""
    path = Path(path).expanduser().resolve()
    if all((path / f).exists() for f in files):
        return path
    archive = subprocess.run(
        ["git", "--git-dir", str(path), "archive", "--format=tar", "HEAD", "--", *files], capture_output=True
    )
    if archive.returncode:
        raise SystemExit(f"{path}: neither a work tree nor a git dir with {files}: {archive.stderr.decode().strip()}")
    dst = Path(tempfile.mkdtemp(prefix="reference_"))
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(dst, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    return dst


def rvt_downsample(rvt_src: Path):
    """``downsample_ev_repr`` as RVT's ``preprocess_dataset.py`` defines it, taken from the script's own source."""
    import ast

    import torch

    src = (rvt_src / "scripts/genx/preprocess_dataset.py").read_text()
    fn = next(n for n in ast.parse(src).body if isinstance(n, ast.FunctionDef) and n.name == "downsample_ev_repr")
    scope = {"torch": torch}
    exec(compile(ast.Module([fn], []), "preprocess_dataset.py", "exec"), scope)  # the reference's code, from its copy
    return scope["downsample_ev_repr"]


def reference(cases: list[dict], rvt: Path, reyolov8: Path) -> dict[str, str]:
    import torch

    torch.set_num_threads(1)  # ReYOLOv8's vtei writes with put_(accumulate=False): one thread keeps event order
    rvt_src = source_tree(rvt, ("data/utils/representations.py", "scripts/genx/preprocess_dataset.py"))
    y8_src = source_tree(reyolov8, ("formats_utils.py",))
    sys.path[:0] = [str(rvt_src), str(y8_src)]
    import formats_utils  # ReYOLOv8's
    from data.utils.representations import MixedDensityEventStack, StackedHistogram  # RVT's

    down = rvt_downsample(rvt_src)
    out = {}
    for c in cases:
        h, w = c["height"], c["width"]
        ev = [torch.from_numpy(np.asarray(c[k], np.int64)) for k in "xypt"]
        for rep, (nbins, cutoff) in REPRESENTATIONS.items():
            if rep == "stacked_histogram":
                frame = StackedHistogram(nbins, h, w, count_cutoff=cutoff).construct(*ev)
            elif rep == "mixeddensity_stack":
                frame = MixedDensityEventStack(nbins, h, w, count_cutoff=cutoff).construct(*ev)
            else:  # ReYOLOv8's functions take (x, y, t, p)
                x, y, p, t = ev
                frame = getattr(formats_utils, rep)(x, y, t, p, nbins, h, w)
            for ds in (1, 2):
                f = down(frame.unsqueeze(0), 0.5)[0] if ds == 2 else frame
                out[key(c["name"], rep, ds)] = digests(f.numpy(), c, ds)
    return out


def rvt_prepare(golden_raw: Path, rvt: Path, out: Path) -> dict[str, str]:
    """RVT's ``preprocess_dataset.py`` itself (``-ds gen4``, filter_gen4) for each run: a digest per window."""
    import h5py
    import hdf5plugin  # noqa: F401  (blosc)

    src = source_tree(rvt, ("scripts/genx", "data/utils", "utils"))
    genx = src / "scripts" / "genx"
    digests = {}
    for run, (rep_yaml, ext_yaml, _) in PREPARE_RUNS.items():
        target = out / f"rvt_{run}"
        subprocess.run(
            [
                sys.executable,
                "preprocess_dataset.py",
                str(golden_raw),
                str(target),
                f"conf_preprocess/representation/{rep_yaml}",
                f"conf_preprocess/extraction/{ext_yaml}",
                "conf_preprocess/filter_gen4.yaml",
                "-ds",
                "gen4",
                "-np",
                "1",
            ],
            cwd=genx,
            check=True,
            stdout=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": str(src)},
        )
        for split in ("train", "val", "test"):
            for seq_dir in sorted((target / split).iterdir()):
                repr_dir = next((seq_dir / "event_representations_v2").iterdir())
                with h5py.File(repr_dir / "event_representations_ds2_nearest.h5") as f:
                    data = f["data"][:]
                for i in range(len(data)):
                    digests[f"{run}|{split}/{seq_dir.name}|{i}"] = digest(data[i])
                digests[f"{run}|{split}/{seq_dir.name}|timestamps"] = digest(np.load(repr_dir / "timestamps_us.npy"))
                digests[f"{run}|{split}/{seq_dir.name}|folder"] = repr_dir.name
    return digests


def compare_windows(mine: dict, ref: dict) -> tuple[list[str], dict[str, int]]:
    """Keys whose frames differ, and those equal once the hot pixels are set aside (with their number)."""
    bad, hot = [], {}
    for k, v in mine.items():
        r = ref.get(k) or {}
        if v["full"] == r.get("full"):
            continue
        if "masked" in v and v["masked"] == r.get("masked"):
            hot[k] = v["hot"]
        else:
            bad.append(k)
    return bad, hot


# ---------------------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("step", choices=["cases", "reference", "compare", "all"])
    ap.add_argument("out", type=Path, help="working folder (cases.npz, reference.json)")
    ap.add_argument("--real", type=Path, help="folder of the real recordings (evt2_sample.raw, evt3_sample.raw)")
    ap.add_argument("--golden-raw", type=Path, help="gen4-style raw recordings (train/val/test) for the prepare runs")
    ap.add_argument("--rvt", type=Path, help="RVT: a work tree or git dir")
    ap.add_argument("--reyolov8", type=Path, help="ReYOLOv8: a work tree or git dir")
    ap.add_argument("--ref-python", help="the python that runs the references (all: default rvt_env.sh's)")
    ap.add_argument("--fixtures", type=Path, help="also write the test fixtures (cases.npz, reference.json) here")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.step in ("cases", "all"):
        with tempfile.TemporaryDirectory() as tmp:
            cases = random_cases(np.random.default_rng(0)) + synthetic_cases(Path(tmp))
        cases += real_cases(args.real) if args.real else []
        save_cases(args.out / "cases.npz", cases)
        if args.fixtures:
            args.fixtures.mkdir(parents=True, exist_ok=True)
            save_cases(args.fixtures / "cases.npz", cases, stored_only=True)
        print(f"{len(cases)} cases -> {args.out / 'cases.npz'}")
    if args.step == "all":
        py = (
            args.ref_python
            or subprocess.run(["bash", str(HERE / "rvt_env.sh")], capture_output=True, text=True, check=True)
            .stdout.strip()
            .splitlines()[-1]
        )
        cmd = [py, __file__, "reference", str(args.out), "--rvt", str(args.rvt), "--reyolov8", str(args.reyolov8)]
        cmd += ["--golden-raw", str(args.golden_raw)] if args.golden_raw else []
        cmd += ["--fixtures", str(args.fixtures)] if args.fixtures else []
        subprocess.run(cmd, check=True)
    if args.step == "reference":
        if not (args.rvt and args.reyolov8):
            ap.error("reference needs --rvt and --reyolov8")
        ref = {"windows": reference(load_cases(args.out / "cases.npz"), args.rvt, args.reyolov8)}
        if args.golden_raw:
            with tempfile.TemporaryDirectory() as tmp:
                ref["prepare"] = rvt_prepare(args.golden_raw, args.rvt, Path(tmp))
        for folder in (args.out, args.fixtures):
            if folder:
                (folder / "reference.json").write_text(json.dumps(ref, indent=0, sort_keys=True) + "\n")
        print(f"{len(ref['windows'])} reference frames, {len(ref.get('prepare', {}))} prepared windows")
    if args.step in ("compare", "all"):
        ref = json.loads((args.out / "reference.json").read_text())
        mine = ours(load_cases(args.out / "cases.npz", args.real))
        bad, hot = compare_windows(mine, ref["windows"])
        for k, n in hot.items():
            print(f"  {k}: equal except at {n} hot pixel(s) (over 127 events: the reference wraps, ours saturates)")
        if args.golden_raw and "prepare" in ref:
            with tempfile.TemporaryDirectory() as tmp:
                prep = our_prepare(args.golden_raw, Path(tmp))
            want = ref["prepare"]
            bad += [k for k in sorted(set(want) | set(prep)) if want.get(k) != prep.get(k)]
        print(f"{len(mine)} frames compared: {len(bad)} differ" + "".join(f"\n  {k}" for k in bad[:20]))
        return 1 if bad else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
