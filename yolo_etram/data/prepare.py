"""``etram-yolo prepare RAW_DIR OUT_DIR``: raw recordings to RVT-layout prepared sequences, bit-identical to RVT.

Output per sequence (RVT's layout, so RVT-prepared data loads here and ours loads in RVT)::

    OUT/<split>/<name>/labels_v2/labels.npz                  labels, objframe_idx_2_label_idx
    OUT/<split>/<name>/labels_v2/timestamps_us.npy           label-frame times
    OUT/<split>/<name>/event_representations_v2/stacked_histogram_dt=50_nbins=10/   (RVT's folder name)
        event_representations[_ds2_nearest].h5               'data' uint8 (N, 20, H, W), blosc, 1 chunk/window
        timestamps_us.npy                                    window end times
        objframe_idx_2_repr_idx.npy                          window index of each label frame
        event_settings.json                                  how the windows were built (EventSettings)

``--representation`` chooses among RVT's and ReYOLOv8's representations (:mod:`.representations`), each bit-identical
to its reference's code; ``--window-events N`` takes RVT's constant-count windows (the last N events up to each
window's end) instead of 50 ms durations.

A sequence is built in ``OUT/.in_progress/`` and renamed into place when complete, so an interrupted run restarted with
the same arguments skips finished sequences and never mistakes a half-written one for a finished one.

This module imports neither torch nor Ultralytics: it starts fast.

Usage:
    >>> from yolo_etram.data.prepare import prepare_dataset
    >>> prepare_dataset("datasets/etram_raw", "datasets/etram", kind="etram", workers=4)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from yolo_etram.utils.errors import one_line
from yolo_etram.utils.files import save_npy_atomic, save_npz_atomic, save_text_atomic

from .event_settings import EventSettings
from .io import SENSOR_SIZES, EventDataError, EventReader, blosc, find_recordings, load_boxes, open_h5
from .labels import (
    DATASET_KINDS,
    ETRAM_8_TO_3,
    FRAME_STEP_MS,
    BoxCounts,
    DatasetKind,
    apply_label_filters,
    check_boxes,
    select_label_frames,
)
from .motion import MOTION_FILE, align_motion, raw_motion_path
from .representations import REPRESENTATIONS, EventRepresentation, check_downsample

SPLITS = ("train", "val", "test")
IN_PROGRESS = ".in_progress"


@dataclass(frozen=True)
class PrepareConfig:
    """What ``prepare`` builds. Defaults are RVT's gen4/eTraM settings."""

    kind: str = "etram"
    window_ms: int = 50
    nbins: int | None = None  # None: the representation's default (10 for RVT's, 5 for ReYOLOv8's)
    cutoff: int | None = None  # None: the representation's default (10 histogram, 32 mixed-density stack, else none)
    downsample: int | None = None  # factor 1 or 2; None: the dataset kind's default (halve 1280x720 sensors)
    class_map: str | None = None  # None or "etram8to3"
    codec: str = "lz4"  # blosc codec of the frames: lz4 (fast) or zstd (RVT's, smaller)
    representation: str = "stacked_histogram"
    window_events: int | None = None  # RVT's constant-count windows: the last N events
    step_ms: int = 50  # time between window ends (RVT: 50, whatever the window's length); must divide 100 ms

    def settings(self) -> EventSettings:
        """The event settings this configuration builds (raises :class:`EventDataError` for impossible ones)."""
        extra = {} if self.cutoff is None else {"cutoff": self.cutoff}
        if FRAME_STEP_MS % self.step_ms:
            raise EventDataError(
                f"prepare: a window step of {self.step_ms} ms does not divide the {FRAME_STEP_MS} ms label-frame step "
                "(RVT's); use 10, 20, 25, 50 or 100"
            )
        return EventSettings(
            self.representation,
            self.nbins,
            window_ms=self.window_ms,
            window_events=self.window_events,
            downsample=self.dataset_kind().downsample,
            step_ms=self.step_ms,
            **extra,
        )

    def dataset_kind(self) -> DatasetKind:
        if self.kind not in DATASET_KINDS:
            raise EventDataError(f"unknown dataset kind '{self.kind}' (choose from {', '.join(DATASET_KINDS)})")
        kind = DATASET_KINDS[self.kind]
        if self.downsample is not None:
            try:
                kind = replace(kind, downsample=check_downsample(self.downsample, "prepare"))
            except ValueError as e:
                raise EventDataError(str(e)) from None
        if self.class_map == "etram8to3":
            kind = replace(kind, class_map=ETRAM_8_TO_3)
        elif self.class_map:
            raise EventDataError(f"unknown class map '{self.class_map}' (choose etram8to3)")
        return kind


@dataclass
class SequenceResult:
    name: str
    split: str
    status: str  # "done", "skipped" (already prepared), "no_labels", "failed" (bad input: see ``error``)
    windows: int = 0
    frames: int = 0
    events: int = 0
    out_of_frame: int = 0
    decreasing_t: int = 0
    seconds: float = 0.0
    error: str = ""
    triggers: int = 0  # external trigger events of a camera .raw file: not CD events, skipped
    truncated_bytes: int = 0  # a camera .raw file's last word cut short: ignored, as OpenEB ignores it
    boxes: BoxCounts = field(default_factory=BoxCounts)  # what RVT's box filters dropped or cropped (warnings)


def representation_file_name(downsample: int = 1) -> str:
    """RVT's file name: ``event_representations_ds2_nearest.h5`` when downsampled by 2."""
    return f"event_representations{'_ds2_nearest' if check_downsample(downsample) == 2 else ''}.h5"


def sequence_paths(seq_dir: Path, settings: EventSettings) -> dict[str, Path]:
    repr_dir = seq_dir / "event_representations_v2" / settings.folder_name
    return {
        "labels": seq_dir / "labels_v2" / "labels.npz",
        "frame_t": seq_dir / "labels_v2" / "timestamps_us.npy",
        "repr_dir": repr_dir,
        "hist": repr_dir / representation_file_name(settings.downsample),
        "window_t": repr_dir / "timestamps_us.npy",
        "frame_repr_idx": repr_dir / "objframe_idx_2_repr_idx.npy",
    }


def write_histograms(
    reader: EventReader,
    rep: EventRepresentation,
    window_t: np.ndarray,
    window_us: int,
    path: Path,
    codec: str = "lz4",
    window_events: int | None = None,
) -> int:
    """Compute and write one frame per window into ``path`` (dataset ``data``, one blosc chunk per window); windows
    are ``[t - window_us, t]``, or the last ``window_events`` events up to ``t``."""
    n = len(window_t)
    with open_h5(path, "w") as f:
        data = f.create_dataset(
            "data",
            shape=(n, *rep.shape),
            dtype=rep.dtype,
            chunks=(1, *rep.shape),
            maxshape=(None, *rep.shape),
            **dict(blosc(codec)),
        )
        events = 0
        for i, (x, y, p, t) in enumerate(reader.iter_windows(window_t, window_us, count=window_events)):
            data.write_direct(rep(x, y, p, t)[None], dest_sel=np.s_[i : i + 1])
            events += len(t)
    return events


def save_motion(boxes_path: Path, labels: np.ndarray, out: Path) -> None:
    """Carry the synthetic motion ground truth (``<stem>_motion.npz``, if any) over, row-aligned with ``labels``."""
    src = raw_motion_path(boxes_path)
    if not src.is_file():
        return
    try:
        with np.load(src) as z:
            motion = z["motion"]
    except (OSError, KeyError, ValueError) as e:
        raise EventDataError(f"{src}: unreadable motion file ({e}); delete it or re-run `etram-yolo synth`") from e
    save_npy_atomic(out, align_motion(labels, motion))


def prepare_sequence(
    name: str,
    split: str,
    events_path: Path,
    boxes_path: Path,
    out_dir: Path,
    cfg: PrepareConfig,
    overwrite: bool = False,
) -> SequenceResult:
    """Prepare one recording into ``out_dir/split/name`` (atomically: built aside, then renamed). A sequence already
    prepared with other event settings keeps them: the new representation folder is added beside them."""
    t_start = time.perf_counter()
    kind = cfg.dataset_kind()
    final = out_dir / split / name
    if is_prepared(final, cfg) and not overwrite:
        return SequenceResult(name, split, "skipped")
    work = out_dir / IN_PROGRESS / split / name
    shutil.rmtree(work, ignore_errors=True)
    default_hw = (240, 304) if kind.name == "gen1" else (720, 1280)
    with EventReader(events_path, *default_hw) as reader:
        boxes = load_boxes(boxes_path)
        boxes = apply_label_filters(boxes, kind, reader.height, reader.width, train=split == "train")
        if len(boxes) == 0:
            return SequenceResult(name, split, "no_labels", seconds=time.perf_counter() - t_start)
        frames = select_label_frames(boxes, kind, cfg.step_ms, source=str(boxes_path))
        settings = cfg.settings()
        paths = sequence_paths(work, settings)
        paths["repr_dir"].mkdir(parents=True)
        paths["labels"].parent.mkdir(parents=True, exist_ok=True)
        save_npz_atomic(paths["labels"], labels=frames.labels, objframe_idx_2_label_idx=frames.frame_label_idx)
        save_motion(boxes_path, frames.labels, paths["labels"].with_name(MOTION_FILE))
        save_npy_atomic(paths["frame_t"], frames.frame_t)
        save_npy_atomic(paths["window_t"], frames.window_t)
        save_npy_atomic(paths["frame_repr_idx"], frames.frame_repr_idx)
        rep = settings.build(reader.height, reader.width)
        n_events = write_histograms(
            reader, rep, frames.window_t, settings.window_us, paths["hist"], cfg.codec, settings.window_events
        )
        settings.save(paths["repr_dir"])
        repairs = reader.repairs
        triggers, truncated = getattr(reader.src, "n_triggers", 0), getattr(reader.src, "truncated_bytes", 0)
    final.parent.mkdir(parents=True, exist_ok=True)
    if (final / "event_representations_v2").is_dir():  # other representations of this sequence stay
        target = final / "event_representations_v2" / settings.folder_name
        shutil.rmtree(target, ignore_errors=True)
        os.replace(paths["repr_dir"], target)
        shutil.rmtree(final / "labels_v2", ignore_errors=True)  # the same labels: they do not depend on the windows
        os.replace(work / "labels_v2", final / "labels_v2")
        shutil.rmtree(work)
    else:
        if final.exists():
            shutil.rmtree(final)
        os.replace(work, final)
    return SequenceResult(
        name,
        split,
        "done",
        len(frames.window_t),
        len(frames.frame_t),
        n_events,
        repairs.out_of_frame,
        repairs.decreasing_t,
        time.perf_counter() - t_start,
        triggers=triggers,
        truncated_bytes=truncated,
    )


def is_prepared(seq_dir: Path, cfg: PrepareConfig) -> bool:
    """Whether ``seq_dir`` holds this configuration's representation folder (a finished one: it is moved in last)."""
    return (seq_dir / "event_representations_v2" / cfg.settings().folder_name).is_dir()


def check_recording(events_path: Path, boxes_path: Path, cfg: PrepareConfig) -> BoxCounts:
    """Check a recording before anything of it is written: the event file opens (structure, dtypes, filters, sensor
    size) and holds events, the box file loads and matches it (:func:`~.labels.check_boxes`). Cheap: reads the box file
    and the two ends of the event timestamps. Returns what RVT's box filters will drop or crop."""
    kind = cfg.dataset_kind()
    with EventReader(events_path, *SENSOR_SIZES[kind.name]) as reader:
        span = reader.time_bounds()
        if span is None:
            raise EventDataError(
                f"{events_path}: the recording holds no events; re-copy or re-record it, or move it "
                "and its box file out of the folder"
            )
        boxes = load_boxes(boxes_path)
        return check_boxes(boxes, kind, reader.height, reader.width, span, str(boxes_path), cfg.window_ms * 1000)


def _prepare_job(args) -> SequenceResult:
    """One recording; bad input fails this recording only (nothing of it is left behind), the others go on."""
    name, split, events_path, boxes_path, out_dir, cfg, overwrite = args
    try:
        counts = BoxCounts()
        if overwrite or not is_prepared(out_dir / split / name, cfg):  # finished sequences are skipped unchecked
            counts = check_recording(events_path, boxes_path, cfg)
        return replace(prepare_sequence(*args), boxes=counts)
    except EventDataError as e:
        shutil.rmtree(out_dir / IN_PROGRESS / split / name, ignore_errors=True)
        return SequenceResult(name, split, "failed", error=str(e))


def prepare_dataset(
    raw_dir: str | Path,
    out_dir: str | Path,
    cfg: PrepareConfig | None = None,
    workers: int = 1,
    splits=SPLITS,
    overwrite: bool = False,
    progress: bool = True,
    shard: tuple[int, int] = (0, 1),
) -> list[SequenceResult]:
    """Prepare every recording of ``raw_dir/{train,val,test}`` into ``out_dir``, in parallel over recordings.

    Finished sequences are skipped (resume); ``overwrite=True`` rebuilds them. ``shard=(k, n)`` prepares every n-th
    recording from the k-th (0 <= k < n) of the sorted list, so n machines (a job array) fill one ``out_dir``
    together: each sequence is written by one shard only, and the finished folder equals a one-machine run's.
    """
    k, n = shard
    if not (n >= 1 and 0 <= k < n):
        raise EventDataError(f"shard {k}/{n}: need 0 <= K < N (e.g. --shard 0/4 ... --shard 3/4)")
    cfg = cfg or PrepareConfig()
    cfg.settings()  # validate early
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    if not raw_dir.is_dir():
        raise EventDataError(f"{raw_dir}: raw data folder not found")
    jobs = []
    for split in splits:
        if (raw_dir / split).is_dir():
            jobs += [
                (name, split, ev, bb, out_dir, cfg, overwrite) for name, ev, bb in find_recordings(raw_dir / split)
            ]
    if not jobs:
        raise EventDataError(
            f"{raw_dir}: no recordings found (expected {'/'.join(splits)}/<name>_bbox.npy with <name>_td.h5)"
        )
    n_sequences, jobs = len(jobs), jobs[k::n]
    out_dir.mkdir(parents=True, exist_ok=True)
    bar = _progress(len(jobs), progress)
    results = []
    if workers <= 1:
        for job in jobs:
            results.append(_prepare_job(job))
            bar.update(1)
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for fut in as_completed([pool.submit(_prepare_job, job) for job in jobs]):
                results.append(fut.result())
                bar.update(1)
    bar.close()
    if n == 1:
        shutil.rmtree(out_dir / IN_PROGRESS, ignore_errors=True)
    else:  # other shards may be at work in there: remove only what is empty
        for d in sorted((out_dir / IN_PROGRESS).glob("**/"), key=lambda q: -len(q.parts)):
            with contextlib.suppress(OSError):
                d.rmdir()
    info = {"config": asdict(cfg), "sequences": n_sequences}  # the same from every shard
    save_text_atomic(out_dir / "prepare_info.json", json.dumps(info, indent=1))
    return sorted(results, key=lambda r: (SPLITS.index(r.split) if r.split in SPLITS else 9, r.name))


class _NoBar:
    def update(self, n):
        pass

    def close(self):
        pass


def _progress(total: int, enabled: bool):
    if not enabled:
        return _NoBar()
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        return _NoBar()
    return tqdm(total=total, desc="prepare", unit="seq", dynamic_ncols=True)


def summarize(results: list[SequenceResult]) -> str:
    done = [r for r in results if r.status == "done"]
    lines = [
        f"{len(done)} prepared, {sum(r.status == 'skipped' for r in results)} already done, "
        f"{sum(r.status == 'no_labels' for r in results)} without labels after filtering, "
        f"{sum(r.status == 'failed' for r in results)} failed"
    ]
    if done:
        ev, sec = sum(r.events for r in done), sum(r.seconds for r in done)
        lines.append(
            f"{sum(r.windows for r in done)} windows, {sum(r.frames for r in done)} label frames, "
            f"{ev / max(sec, 1e-9) / 1e6:.1f} M events/s per worker"
        )
    oof, dec = sum(r.out_of_frame for r in results), sum(r.decreasing_t for r in results)
    if oof or dec:
        lines.append(f"repaired: {oof} out-of-frame events dropped, {dec} decreasing timestamps raised")
    trig, cut = sum(r.triggers for r in results), [r.name for r in results if r.truncated_bytes]
    if trig:
        lines.append(f"{trig} external trigger events skipped (camera .raw files; they are not CD events)")
    if cut:
        lines.append(
            f"{len(cut)} .raw recording(s) end in a partial word, ignored as OpenEB ignores it: "
            f"{', '.join(cut[:5])}{' ...' if len(cut) > 5 else ''} (the recording was cut off)"
        )
    box = {k: sum(getattr(r.boxes, k) for r in results) for k in ("nonpositive", "outside", "clipped", "outside_time")}
    if any(box.values()):
        lines.append(
            f"boxes (as RVT's filters do): {box['nonpositive']} with zero or negative size dropped, "
            f"{box['outside']} outside the frame dropped, {box['clipped']} partly outside cropped, "
            f"{box['outside_time']} with no events in their window kept"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="etram-yolo prepare", description=__doc__.split("\n\n")[0])
    parser.add_argument("raw_dir", help="folder with train/ val/ test/ holding <name>_td.h5 + <name>_bbox.npy")
    parser.add_argument("out_dir", help="output folder (RVT layout)")
    parser.add_argument("--kind", default="etram", choices=sorted(DATASET_KINDS), help="dataset rules (default etram)")
    parser.add_argument(
        "--representation",
        default="stacked_histogram",
        choices=list(REPRESENTATIONS),
        help="stacked_histogram (RVT's, default), mixeddensity_stack (RVT's), vtei, mdes, voxel_grid (ReYOLOv8's)",
    )
    parser.add_argument("--window-ms", type=int, default=50, help="window length in ms (default 50)")
    parser.add_argument(
        "--step-ms",
        type=int,
        default=50,
        help="time between window ends in ms, the frame rate (default RVT's 50 whatever the length; divides 100)",
    )
    parser.add_argument(
        "--window-events",
        type=int,
        default=None,
        metavar="N",
        help="RVT's constant-count windows: the last N events up to each window end (RVT: 50000), every 50 ms",
    )
    parser.add_argument(
        "--nbins", type=int, default=None, help="time bins (default: 10 for RVT's representations, 5 for ReYOLOv8's)"
    )
    parser.add_argument(
        "--cutoff", type=int, default=None, help="saturation (default: 10 histogram, 32 mixed-density stack)"
    )
    ds = parser.add_mutually_exclusive_group()
    ds.add_argument(
        "--downsample",
        dest="downsample",
        action="store_const",
        const=2,
        default=None,
        help="halve the resolution (factor 2; default for gen4 and etram)",
    )
    ds.add_argument("--no-downsample", dest="downsample", action="store_const", const=1, help="keep full resolution")
    parser.add_argument("--class-map", choices=["etram8to3"], default=None, help="remap class ids before filtering")
    parser.add_argument(
        "--codec",
        choices=["lz4", "zstd"],
        default="lz4",
        help="blosc codec: lz4 (fast, default) or zstd (RVT's, ~half the size)",
    )
    parser.add_argument("--workers", type=int, default=1, help="parallel recordings (default 1)")
    parser.add_argument("--splits", nargs="+", default=list(SPLITS))
    parser.add_argument(
        "--shard",
        default="0/1",
        metavar="K/N",
        help="prepare every N-th recording from the K-th (0-based), for N machines filling one OUT_DIR "
        "(a Slurm job array: --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT)",
    )
    parser.add_argument("--overwrite", action="store_true", help="rebuild sequences that are already prepared")
    args = parser.parse_args(argv)
    cfg = PrepareConfig(
        args.kind,
        args.window_ms,
        args.nbins,
        args.cutoff,
        args.downsample,
        args.class_map,
        args.codec,
        args.representation,
        args.window_events,
        args.step_ms,
    )
    try:
        # the bar only on a terminal: logged stderr holds nothing but the one-line errors
        try:
            shard = tuple(int(v) for v in args.shard.split("/"))
            assert len(shard) == 2
        except (ValueError, AssertionError):
            raise EventDataError(f"--shard {args.shard}: expected K/N, e.g. 0/4") from None
        results = prepare_dataset(
            args.raw_dir,
            args.out_dir,
            cfg,
            args.workers,
            args.splits,
            args.overwrite,
            progress=sys.stderr.isatty(),
            shard=shard,
        )
    except EventDataError as e:
        print(f"prepare: error: {one_line(e)}", file=sys.stderr)
        return 2
    print(summarize(results))
    failed = [r for r in results if r.status == "failed"]
    for r in failed:
        print(f"prepare: error: {one_line(r.error)}", file=sys.stderr)
    return 2 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
