"""Golden fixture from RVT's own ``train.py`` and ``validation.py``: a checkpoint that RVT's training wrote, and the
detections and AP that RVT's validation gives with it (``tests/fixtures/rvt_train``, checked by
``tests/test_rvt_train_golden.py``).

Run it with a python that has RVT's training dependencies (torch, torchvision, pytorch-lightning 1.8.6, hydra-core
1.3.2, torchdata 0.8.0, numpy < 2, h5py, hdf5plugin, einops, pandas, plotly, opencv-python, bbox-visualizer,
pycocotools; wandb is not needed)::

    python3 -m venv RVT_VENV && RVT_VENV/bin/pip install torch==2.14.1 torchvision "numpy<2" "setuptools<70" \\
        pytorch-lightning==1.8.6 hydra-core==1.3.2 h5py hdf5plugin einops pandas plotly opencv-python \\
        bbox-visualizer pycocotools && RVT_VENV/bin/pip install --no-deps torchdata==0.8.0
    RVT_VENV/bin/python benchmarks/rvt_train_golden.py --rvt RVT_DIR --data PREPARED_DIR \\
        --out tests/fixtures/rvt_train --steps 60 --lr 0.003

``RVT_DIR`` is a work tree of github.com/uzh-rpg/RVT, run unmodified; ``PREPARED_DIR`` a gen4-style dataset made by
RVT's ``scripts/genx/preprocess_dataset.py`` (``train/``, ``val/``, ``test/``). Three stages, each in its own process:

1. ``train``: RVT's ``train.py`` for ``--steps`` steps, RVT-T (``+experiment/gen4=tiny.yaml``, 3 classes, clips of
   5 windows), RVT's random sampling with batch 1 and Lightning's seed 0 (RVT's mixed mode needs batch 2 and leaves
   the seed unset; a step there costs twice as much on a CPU), in float32 (Lightning 1.8 has no float16 on CPU) and
   without validation during training (``validation.limit_val_batches=0``, so Lightning's checkpoint callback saves
   at the end of each training epoch; ``last_*.ckpt`` is taken). The one-cycle schedule spans the ``--steps``
   (``total_steps`` is RVT's ``max_steps``); ``--lr`` sets its peak (``training.learning_rate``). The fixture uses
   0.003: at RVT-T's own 3.46e-4, 60 steps leave 57 boxes on the golden val split and AP 0 on both sides, which
   checks nothing; at 0.003 they give 1562 boxes and AP 0.040.
2. ``strip``: that checkpoint without ``optimizer_states``, ``lr_schedulers`` and ``callbacks`` (every other key as
   Lightning wrote it) -> ``OUT/rvt_t_<steps>steps.ckpt``. RVT's module never calls ``save_hyperparameters``, so
   RVT's own checkpoints have no ``hyper_parameters`` (``validation.py`` passes the config back in).
3. ``val``: RVT's ``validation.py`` on the stripped checkpoint and the val split (stream sampling, batch 1,
   ``model.postprocess.confidence_threshold=0.001`` as in RVT's evaluation command, NMS 0.45), recording what RVT's
   Prophesee evaluator receives per labeled frame and the metrics it returns -> ``OUT/rvt_val_detections.npz`` and
   ``OUT/rvt_val.json``.

What is patched, from this script only (RVT's files stay as they are): Lightning's ``Trainer`` runs on the CPU (RVT
hard-codes ``accelerator='gpu'``); ``wandb`` is an empty stand-in and RVT's wandb logger a CSV logger (``watch`` does
nothing, non-scalar metrics such as the gradient-flow figure are dropped); ``to_prophesee`` and
``PropheseeEvaluator.evaluate_buffer`` of RVT are wrapped to record their results; torch's ``weights_only`` default is
lifted for the checkpoints this script wrote itself (Lightning 1.8 predates it).

The npz holds, per labeled frame in stream order, RVT's postprocess output (``det``: x1, y1, x2, y2, obj, cls,
class, in input pixels of the downsampled frame) and the Prophesee boxes made from it (``pred``: t, x, y, w, h,
class_id, class_confidence = cls), the ground truth (``gt``), and ``frame_t`` / ``frame_n`` / ``frame_ngt`` (the
label time and the box counts of each frame; rows of ``det``/``pred``/``gt`` follow the frames in order).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import runpy
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

STRIPPED_KEYS = ("optimizer_states", "lr_schedulers", "callbacks")
TRAIN_BATCH, TRAIN_WORKERS = 1, 1


def train_overrides(data: Path, steps: int, lr: float | None = None) -> list[str]:
    """Hydra overrides of RVT's ``train.py`` (RVT's README command, sized for a CPU)."""
    return [
        *([f"training.learning_rate={lr}"] if lr else []),
        "model=rnndet",
        "dataset=gen4",
        f"dataset.path={data}",
        "+experiment/gen4=tiny.yaml",
        "dataset.train.sampling=random",
        "reproduce.seed_everything=0",
        "wandb.project_name=RVT",
        "wandb.group_name=golden",
        "hardware.gpus=0",
        f"batch_size.train={TRAIN_BATCH}",
        "batch_size.eval=1",
        f"hardware.num_workers.train={TRAIN_WORKERS}",
        "hardware.num_workers.eval=1",
        f"training.max_steps={steps}",
        "training.precision=32",
        "validation.val_check_interval=null",
        "validation.check_val_every_n_epoch=1",
        "validation.limit_val_batches=0",
        "logging.train.high_dim.enable=False",
        "logging.validation.high_dim.enable=False",
        "logging.train.log_every_n_steps=10",
    ]


def val_overrides(data: Path, ckpt: Path) -> list[str]:
    """Hydra overrides of RVT's ``validation.py`` (RVT's README evaluation command, batch 1 on the CPU)."""
    return [
        "dataset=gen4",
        f"dataset.path={data}",
        f"checkpoint={ckpt}",
        "use_test_set=False",
        "hardware.gpus=0",
        "+experiment/gen4=tiny.yaml",
        "batch_size.eval=1",
        "hardware.num_workers.eval=1",
        "model.postprocess.confidence_threshold=0.001",
        "training.precision=32",
    ]


# ---------------------------------------------------------------------------------------------------------------------
# inside RVT's process


def _stub_wandb() -> None:
    """An empty ``wandb`` (RVT imports it at module level; nothing of it runs with the CSV logger)."""
    names = ("wandb", "wandb.sdk", "wandb.sdk.lib", "wandb.wandb_run", "wandb.util")
    mods = {n: types.ModuleType(n) for n in names}
    mods["wandb.sdk.lib"].RunDisabled = type("RunDisabled", (), {})
    mods["wandb.wandb_run"].Run = type("Run", (), {})
    mods["wandb.util"].generate_id = lambda: "golden"
    for name, mod in mods.items():  # each submodule as an attribute of its parent
        if "." in name:
            parent, child = name.rsplit(".", 1)
            setattr(mods[parent], child, mod)
    sys.modules.update(mods)


def _force_cpu() -> None:
    import pytorch_lightning as pl

    class CPUTrainer(pl.Trainer):
        def __init__(self, *args, **kwargs):
            kwargs.update(accelerator="cpu", devices=1)
            super().__init__(*args, **kwargs)

    pl.Trainer = CPUTrainer


def _csv_logger(save_dir: Path):
    import torch
    from pytorch_lightning.loggers import CSVLogger

    class Logger(CSVLogger):
        def watch(self, *args, **kwargs) -> None:
            pass

        def log_metrics(self, metrics, step=None):
            keep = {k: v for k, v in metrics.items() if isinstance(v, (int, float, torch.Tensor))}
            super().log_metrics(keep, step)

    return Logger(save_dir=str(save_dir), name="train")


def run_rvt(stage: str, rvt: Path, work: Path, overrides: list[str], dump: Path | None, threads: int) -> None:
    """Run RVT's ``train.py`` or ``validation.py`` in this process with the patches above."""
    import numpy as np
    import torch

    torch.set_num_threads(threads)  # RVT sets OMP_NUM_THREADS=1 (its GPU runs); torch is already imported here

    os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"  # checkpoints this script wrote (Lightning 1.8's torch.load)
    os.chdir(work)
    sys.path.insert(0, str(rvt))
    _stub_wandb()
    _force_cpu()
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    frames, metrics = [], []
    if stage == "train":
        import loggers.utils

        loggers.utils.get_wandb_logger = lambda config: _csv_logger(work / "logs")
    else:
        import modules.detection as detection
        from utils.evaluation.prophesee.evaluator import PropheseeEvaluator

        to_prophesee = detection.to_prophesee

        def recording_to_prophesee(labels, preds):
            raw = [None if p is None else p.detach().cpu().numpy().copy() for p in preds]
            labels_proph, preds_proph = to_prophesee(labels, preds)
            frames.extend(zip(labels_proph, preds_proph, raw))
            return labels_proph, preds_proph

        detection.to_prophesee = recording_to_prophesee
        evaluate_buffer = PropheseeEvaluator.evaluate_buffer

        def recording_evaluate(self, img_height, img_width):
            out = evaluate_buffer(self, img_height=img_height, img_width=img_width)
            metrics.append({"img_hw": [img_height, img_width], **{k: float(v) for k, v in (out or {}).items()}})
            return out

        PropheseeEvaluator.evaluate_buffer = recording_evaluate
    script = rvt / ("train.py" if stage == "train" else "validation.py")
    sys.argv = [str(script), f"hydra.run.dir={work / ('hydra_' + stage)}", *overrides]
    runpy.run_path(str(script), run_name="__main__")
    if dump is not None:
        if len(metrics) != 1:
            raise SystemExit(f"RVT's evaluator ran {len(metrics)} times (expected once)")
        np.savez_compressed(dump, **_frames_arrays(frames))
        dump.with_suffix(".metrics.json").write_text(json.dumps(metrics[0], indent=1))


def _frames_arrays(frames: list) -> dict:
    import numpy as np

    gt, pred, det = zip(*frames)
    det = [np.zeros((0, 7), np.float32) if d is None else d.astype(np.float32) for d in det]
    frame_t = [int(g["t"][0]) for g in gt]
    for g, p in zip(gt, pred):  # one label time per frame, RVT's predictions stamped with it
        assert len(np.unique(g["t"])) == 1 and (p["t"] == g["t"][0]).all()
    return {
        "frame_t": np.array(frame_t, np.int64),
        "frame_n": np.array([len(p) for p in pred], np.int64),
        "frame_ngt": np.array([len(g) for g in gt], np.int64),
        "det": np.concatenate(det),
        "pred": np.concatenate(pred),
        "gt": np.concatenate(gt),
    }


# ---------------------------------------------------------------------------------------------------------------------
# driver


def strip_checkpoint(src: Path, dst: Path) -> dict:
    """Write ``src`` without optimizer, scheduler and callback states; returns ``{key: kept/stripped}``."""
    import torch

    ckpt = torch.load(src, map_location="cpu", weights_only=False)  # written by RVT's train.py in this run
    keys = {k: ("stripped" if k in STRIPPED_KEYS else "kept") for k in ckpt}
    torch.save({k: v for k, v in ckpt.items() if k not in STRIPPED_KEYS}, dst)
    return keys


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("torch", "torchvision", "pytorch-lightning", "hydra-core", "omegaconf", "torchdata", "numpy", "h5py",
                 "hdf5plugin", "einops", "pycocotools"):  # fmt: skip
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def git_commit(rvt: Path) -> str:
    return subprocess.run(["git", "-C", str(rvt), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()


def stage(args, name: str, overrides: list[str], dump: Path | None = None) -> float:
    cmd = [sys.executable, __file__, "_rvt", name, "--rvt", str(args.rvt), "--work", str(args.work)]
    cmd += ["--threads", str(args.threads)]
    cmd += ["--dump", str(dump)] if dump else []
    t0 = time.perf_counter()
    log = args.work / f"{name}.log"
    with open(log, "w") as f:
        rc = subprocess.run([*cmd, "--", *overrides], stdout=f, stderr=subprocess.STDOUT).returncode
    if rc:
        raise SystemExit(f"RVT's {name} failed (exit {rc}); see {log}")
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_rvt":  # a stage inside RVT's process
        p = argparse.ArgumentParser(prog="rvt_train_golden.py _rvt")
        p.add_argument("stage", choices=("train", "val"))
        p.add_argument("--rvt", type=Path, required=True)
        p.add_argument("--work", type=Path, required=True)
        p.add_argument("--dump", type=Path)
        p.add_argument("--threads", type=int, default=1)
        cut = argv.index("--") if "--" in argv else len(argv)
        a = p.parse_args(argv[1:cut])
        run_rvt(a.stage, a.rvt.resolve(), a.work.resolve(), argv[cut + 1 :], a.dump, a.threads)
        return 0

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rvt", type=Path, required=True, help="RVT work tree (github.com/uzh-rpg/RVT)")
    p.add_argument("--data", type=Path, required=True, help="dataset prepared by RVT's preprocess_dataset.py (gen4)")
    p.add_argument("--out", type=Path, required=True, help="fixture folder (e.g. tests/fixtures/rvt_train)")
    p.add_argument("--steps", type=int, default=60, help="training steps (default 60)")
    p.add_argument("--lr", type=float, help="peak learning rate (default: RVT-T's 3.46e-4, one cycle over the steps)")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads (default: all CPUs)")
    p.add_argument("--work", type=Path, help="scratch folder for RVT's logs and full checkpoint (default: a temp dir)")
    args = p.parse_args(argv)
    args.rvt, args.data, args.out = args.rvt.resolve(), args.data.resolve(), args.out.resolve()
    args.work = (args.work or Path(tempfile.mkdtemp(prefix="rvt_train_golden_"))).resolve()
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)

    t_train = stage(args, "train", train_overrides(args.data, args.steps, args.lr))
    last = sorted((args.work / "logs").rglob("last_*.ckpt"), key=lambda f: f.stat().st_mtime)
    if not last:
        raise SystemExit(f"RVT's train.py wrote no last_*.ckpt under {args.work / 'logs'}")
    ckpt = args.out / f"rvt_t_{args.steps}steps.ckpt"
    keys = strip_checkpoint(last[-1], ckpt)

    dump = args.out / "rvt_val_detections.npz"
    t_val = stage(args, "val", val_overrides(args.data, ckpt), dump)
    metrics_file = dump.with_suffix(".metrics.json")
    metrics = json.loads(metrics_file.read_text())
    metrics_file.unlink()

    import numpy as np

    d = np.load(dump)
    symbolic = {str(args.data): "PREPARED_DIR", str(ckpt): f"OUT/{ckpt.name}"}

    def words(overrides):
        return [next((o.replace(k, v) for k, v in symbolic.items() if k in o), o) for o in overrides]

    record = {
        "rvt": {"repository": "github.com/uzh-rpg/RVT", "commit": git_commit(args.rvt)},
        "versions": versions(),
        "commands": {
            "tool": f"python benchmarks/rvt_train_golden.py --rvt RVT_DIR --data PREPARED_DIR --out OUT "
            f"--steps {args.steps}" + (f" --lr {args.lr}" if args.lr else ""),
            "train": "python train.py " + " ".join(train_overrides(Path("PREPARED_DIR"), args.steps, args.lr)),
            "val": "python validation.py " + " ".join(words(val_overrides(args.data, ckpt))),
            "patches": "CPU Trainer, wandb stand-in with a CSV logger, to_prophesee/evaluate_buffer recorded",
        },
        "checkpoint": {
            "file": ckpt.name,
            "written_by": f"RVT's train.py ({last[-1].name})",
            "keys": keys,
            "hyper_parameters": "kept" if "hyper_parameters" in keys else "absent (RVT never saves them)",
            "bytes": ckpt.stat().st_size,
        },
        "torch_threads": args.threads,
        "postprocess": {"confidence_threshold": 0.001, "nms_threshold": 0.45, "score": "class_confidence (cls)"},
        "frames": int(len(d["frame_t"])),
        "boxes": int(d["frame_n"].sum()),
        "gt_boxes": int(d["frame_ngt"].sum()),
        "metrics": metrics,
        "seconds": {"train": round(t_train, 1), "val": round(t_val, 1)},
    }
    (args.out / "rvt_val.json").write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps({k: record[k] for k in ("frames", "boxes", "metrics", "seconds")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
