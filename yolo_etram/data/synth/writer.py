"""Writing recordings and datasets in the raw eTraM layout, and the ``etram-yolo synth`` command line (``main``);
the package re-exports all of it."""

from __future__ import annotations

import argparse
import time
import zlib
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

from yolo_etram.utils.files import save_npz_atomic

from ..io import EventH5Writer, write_boxes
from ..io.raw_writer import RawWriter
from .config import SynthConfig
from .event_generator import _SceneEventGenerator
from .ground_truth import _make_labels
from .scene import _Ground, _render_background
from .sprite_bank import _SpriteBank
from .traffic import _TrafficSim


def _recording_rngs(seed: int) -> dict[str, np.random.Generator]:
    """Independent streams (scene, traffic, sensor), so e.g. changing the noise leaves the traffic unchanged."""
    children = np.random.SeedSequence(seed).spawn(3)
    return {name: np.random.default_rng(s) for name, s in zip(("scene", "traffic", "sensor"), children)}


def recording_paths(path_stem: str | Path, event_format: str = "h5") -> dict[str, Path]:
    """The files of one recording: ``<stem>_td.h5`` (or a camera's ``<stem>.raw``), ``<stem>_bbox.npy``,
    ``<stem>_motion.npz``."""
    stem = Path(path_stem)
    return {
        "events": stem.with_name(stem.name + ("_td.h5" if event_format == "h5" else ".raw")),
        "boxes": stem.with_name(stem.name + "_bbox.npy"),
        "motion": stem.with_name(stem.name + "_motion.npz"),
    }


def synthesize_recording(path_stem: str | Path, cfg: SynthConfig | None = None) -> dict:
    """Write one synthetic recording (events, boxes, motion) next to ``path_stem``; return a summary
    ``{n_events, n_boxes, duration_s, events_per_s, seconds}``. Boxes are written last, so a box file means the
    recording is complete."""
    cfg = cfg or SynthConfig()
    start = time.perf_counter()
    paths = recording_paths(path_stem, cfg.event_format)
    rngs = _recording_rngs(cfg.seed)
    ground = _Ground.for_sensor(cfg.width, cfg.height)
    crosswalk_x = float((rngs["scene"].uniform(0.3, 0.7) * cfg.width - ground.cx) / ground.ppm_near)
    background = _render_background(ground, crosswalk_x, rngs["scene"])
    tracks = _TrafficSim(cfg, ground, crosswalk_x, rngs["traffic"]).run()
    sim_t0_us = -int(round(cfg.warmup_s * 1e6))
    generator = _SceneEventGenerator(cfg, ground, background, tracks, sim_t0_us, rngs["sensor"])
    n_events = 0
    if cfg.event_format == "h5":
        writer = EventH5Writer(paths["events"], cfg.width, cfg.height)
    else:
        writer = RawWriter(paths["events"], cfg.width, cfg.height, evt={"evt3": "3.0", "evt2": "2.0"}[cfg.event_format])
    with writer:
        for x, y, p, t in generator.chunks():
            writer.append(x, y, p, t)
            n_events += len(t)
    boxes, motion = _make_labels(cfg, ground, tracks, sim_t0_us, _SpriteBank(tracks))
    save_npz_atomic(paths["motion"], motion=motion)
    write_boxes(paths["boxes"], boxes)
    return {
        "n_events": n_events,
        "n_boxes": len(boxes),
        "duration_s": cfg.duration_s,
        "events_per_s": n_events / cfg.duration_s,
        "seconds": time.perf_counter() - start,
    }


def recording_seed(base_seed: int, split: str, index: int) -> int:
    """The seed of recording ``index`` of ``split``: independent of the other splits and of how many there are."""
    return int(np.random.SeedSequence([base_seed, zlib.crc32(split.encode()), index]).generate_state(1)[0])


def synthesize_dataset(
    out_dir: str | Path,
    splits: dict[str, int] | None = None,
    cfg: SynthConfig | None = None,
    progress: bool | Callable[[str], None] = True,
    workers: int = 1,
) -> dict:
    """Write a raw eTraM-layout dataset ``out_dir/{split}/synth_{split}_{i:04d}_*``. Recordings whose files all exist
    are skipped, so an interrupted run resumes. ``progress``: True prints a line per recording, a callable receives
    the lines, False is silent. ``workers`` > 1 writes that many recordings at once, each in its own process (the
    recordings are the same either way: each has its own seed). Returns ``{recordings, written, skipped, n_events,
    n_boxes, seconds}``."""
    cfg = cfg or SynthConfig()
    splits = {"train": 4, "val": 1, "test": 1} if splits is None else splits
    report = progress if callable(progress) else (print if progress else (lambda _msg: None))
    out_dir = Path(out_dir)
    summary = {"recordings": 0, "written": 0, "skipped": 0, "n_events": 0, "n_boxes": 0, "seconds": 0.0}
    start = time.perf_counter()
    total = sum(splits.values())
    todo = []
    for split, count in splits.items():
        for i in range(count):
            stem = out_dir / split / f"synth_{split}_{i:04d}"
            summary["recordings"] += 1
            if all(p.is_file() for p in recording_paths(stem, cfg.event_format).values()):
                summary["skipped"] += 1
                report(f"synth {summary['skipped']}/{total} {stem.name}: exists, skipped")
                continue
            stem.parent.mkdir(parents=True, exist_ok=True)
            todo.append((stem, replace(cfg, seed=recording_seed(cfg.seed, split, i))))

    def done(stem: Path, rec: dict) -> None:
        summary["written"] += 1
        summary["n_events"] += rec["n_events"]
        summary["n_boxes"] += rec["n_boxes"]
        report(
            f"synth {summary['skipped'] + summary['written']}/{total} {stem.name}: {rec['n_events']:,} events, "
            f"{rec['n_boxes']:,} boxes, {rec['seconds']:.1f}s"
        )

    if workers > 1 and len(todo) > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        # spawn, not fork: the parent may hold torch's thread pools, which a forked child can deadlock on
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(min(workers, len(todo)), mp_context=context) as pool:
            jobs = {pool.submit(synthesize_recording, stem, rec_cfg): stem for stem, rec_cfg in todo}
            for job in as_completed(jobs):
                done(jobs[job], job.result())
    else:
        for stem, rec_cfg in todo:
            done(stem, synthesize_recording(stem, rec_cfg))
    summary["seconds"] = time.perf_counter() - start
    return summary


def main(argv: list[str] | None = None) -> int:
    """``etram-yolo synth OUT``: write a synthetic eTraM-like raw dataset."""
    ap = argparse.ArgumentParser(
        prog="etram-yolo synth",
        description="Write a synthetic eTraM-like raw event dataset (OUT/{train,val,test}/*_td.h5, or *.raw with "
        "--format raw, + *_bbox.npy + *_motion.npz); finished recordings are skipped, so an interrupted run resumes.",
    )
    ap.add_argument("out", help="output folder")
    ap.add_argument("--width", type=int, default=1280, help="sensor width (default 1280, eTraM's)")
    ap.add_argument("--height", type=int, default=720, help="sensor height (default 720, eTraM's)")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per recording (default 10)")
    ap.add_argument("--train", type=int, default=4, help="recordings in train/ (default 4)")
    ap.add_argument("--val", type=int, default=1, help="recordings in val/ (default 1)")
    ap.add_argument("--test", type=int, default=1, help="recordings in test/ (default 1)")
    ap.add_argument("--seed", type=int, default=0, help="base seed; each recording derives its own from it")
    ap.add_argument("--classes", type=int, choices=(3, 8), default=3, help="eTraM's 3 or 8 class ids (default 3)")
    ap.add_argument("--density", type=float, default=1.0, help="traffic density multiplier (default 1)")
    ap.add_argument("--stop-prob", type=float, default=0.35, help="chance an object halts once while in view")
    ap.add_argument(
        "--static-objects",
        type=float,
        default=1.0,
        help="multiplier of parked cars and people standing from the start (0: none)",
    )
    ap.add_argument("--noise-rate", type=float, default=0.1, help="background events per pixel per second")
    ap.add_argument("--render-dt-us", type=int, default=2000, help="scene/DVS time step in microseconds")
    ap.add_argument(
        "--format",
        choices=("h5", "raw"),
        default="h5",
        help="events as eTraM's HDF5 (default) or as a Prophesee camera's .raw",
    )
    ap.add_argument("--evt", choices=("3.0", "2.0"), default="3.0", help="the .raw event format (default 3.0, eTraM's)")
    ap.add_argument("--workers", type=int, default=2, help="recordings written at once, one process each (default 2)")
    ap.add_argument("--quiet", action="store_true", help="no line per recording")
    args = ap.parse_args(argv)
    cfg = SynthConfig(
        width=args.width,
        height=args.height,
        duration_s=args.duration,
        seed=args.seed,
        classes=args.classes,
        density=args.density,
        stop_prob=args.stop_prob,
        static_objects=args.static_objects,
        noise_rate_hz=args.noise_rate,
        render_dt_us=args.render_dt_us,
        event_format="h5" if args.format == "h5" else "evt" + args.evt[0],
    )
    summary = synthesize_dataset(
        args.out,
        {"train": args.train, "val": args.val, "test": args.test},
        cfg,
        progress=not args.quiet,
        workers=args.workers,
    )
    print(
        f"synth: {summary['written']} written, {summary['skipped']} skipped, {summary['n_events']:,} events, "
        f"{summary['n_boxes']:,} boxes in {summary['seconds']:.1f}s -> {args.out}"
    )
    return 0
