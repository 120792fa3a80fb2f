"""RVT's own detector, read from a local copy of RVT (github.com/uzh-rpg/RVT), built and timed on this machine.

The reference for ``bench_vs_rvt.py`` and ``profile_vs_rvt.py``. ``--rvt`` names the copy: a work tree (imported as it
is) or a git dir, bare or not (the files RVT's model needs are taken from ``--rev`` with ``git archive`` into a temp
dir, removed at exit). No RVT code is kept in this repository. RVT's code needs omegaconf, which our environment does
not have: run this with the python of ``benchmarks/rvt_env.sh``.

The model is RVT's ``YoloXDetector`` (MaxViT-RNN backbone, YOLOX PAFPN on stages 2-4, YOLOX head), its config
composed from RVT's Hydra files as ``experiment=gen4/{tiny,small,base}`` does (config/model/rnndet.yaml +
config/model/maxvit_yolox/default.yaml + config/experiment/gen4/<size>.yaml, then RVT's
``dynamically_modify_train_config`` with config/dataset/gen4.yaml): input 384x640, partition (6, 10), 3 classes. At
another ``--h/--w`` the partition stays (6, 10), as in our benchmarks, and the input is zero-padded bottom/right to the
next multiple of 32 x partition with RVT's ``InputPadderFromShape`` (RVT's own rule would derive the partition from
the input size instead).

Timing (``--threads`` torch threads; each figure is the median over ``--repeats`` passes after ``--warmup``):

- forward: ``eval()`` under ``no_grad``, one pass over T windows with the LSTM states carried (zero at the start), timed
  per window. ``backbone`` is ``forward_backbone``; ``detector`` adds ``forward_detect`` (PAFPN + YOLOX head, decoded,
  no NMS).
- ``--backward``: RVT's training step (modules/detection.py) in ``train()``: the backbone over T windows with the
  graph kept, the features of the labeled windows concatenated along the batch, PAFPN + YOLOX head + SimOTA loss once,
  ``backward()``; reported per window (iteration / T). Random targets, 4 boxes per labeled window.

``--init perturbed`` (default) redraws LayerScale gammas (RVT's 1e-5 would hide the attention), norm affine parameters
and BatchNorm statistics after RVT's own init; ``--init rvt`` keeps RVT's init.

    PY=$(bash benchmarks/rvt_env.sh | tail -n 1)
    $PY benchmarks/rvt_model.py --rvt ~/src/RVT --size t --T 5 --backward --json runs/bench/rvt_t.json
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import io
import json
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

HERE = Path(__file__).resolve().parent
RVT_FILES = ("models", "config", "data/utils", "data/genx_utils/labels.py", "utils/timers.py", "utils/padding.py")
SIZE_2_EXPERIMENT = {"t": "tiny", "s": "small", "b": "base"}
NO_RVT = "pass --rvt PATH (or set RVT_REPO): a work tree or git dir of github.com/uzh-rpg/RVT"


def rvt_python(python: str | None = None) -> str:
    """The python that runs RVT's code: ``python`` when given, else the one ``rvt_env.sh`` sets up (or finds)."""
    if python:
        return python
    proc = subprocess.run(["bash", str(HERE / "rvt_env.sh")], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmarks/rvt_env.sh failed: {proc.stderr.strip()[-300:]}")
    return proc.stdout.strip().splitlines()[-1]


def _git(*args: str, text: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], capture_output=True, text=text)


def rvt_source(path: str | Path, rev: str = "HEAD") -> tuple[Path, str]:
    """Where RVT's code is importable from, and its commit.

    Args:
        path: an RVT work tree, or a git dir (bare or not) holding RVT's history.
        rev: the tree-ish to extract from a git dir (a work tree is used as it is).

    Returns:
        The folder to put on ``sys.path`` (a temp dir, removed at exit, for a git dir) and the commit ("unknown" for a
        work tree outside git; "+dirty" is appended for a work tree with changes).
    """
    path = Path(path).expanduser().resolve()
    if (path / "models" / "detection" / "yolox_extension").is_dir():
        top = _git("-C", str(path), "rev-parse", "--show-toplevel").stdout.strip()
        if not top or Path(top).resolve() != path:  # not a git work tree of its own
            return path, "unknown"
        commit = _git("-C", str(path), "rev-parse", "HEAD").stdout.strip() or "unknown"
        if _git("-C", str(path), "diff", "--quiet", "HEAD", "--", *RVT_FILES).returncode:
            commit += "+dirty"
        return path, commit
    head = _git("--git-dir", str(path), "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    if head.returncode != 0:
        raise SystemExit(f"{path} is neither an RVT work tree nor a git dir with commit {rev!r}")
    archive = _git("--git-dir", str(path), "archive", "--format=tar", rev, "--", *RVT_FILES, text=False)
    if archive.returncode != 0:
        raise SystemExit(f"{path} at {rev} lacks RVT's model files: {archive.stderr.decode().strip()}")
    src = Path(tempfile.mkdtemp(prefix="rvt_src_"))
    atexit.register(shutil.rmtree, src, ignore_errors=True)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(src, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    return src, head.stdout.strip()


def import_rvt(path: str | Path, rev: str = "HEAD") -> SimpleNamespace:
    """Import RVT's model code from ``path`` (see :func:`rvt_source`).

    Returns:
        A namespace with ``src``, ``commit``, ``YoloXDetector`` and ``InputPadderFromShape``.
    """
    src, commit = rvt_source(path, rev)
    sys.path.insert(0, str(src))
    warnings.filterwarnings("ignore", message=".*torch.jit.script.*")  # RVT's copy of timm's layers
    warnings.filterwarnings("ignore", message=".*torch.meshgrid.*indexing.*")  # YOLOX head
    warnings.filterwarnings("ignore", message=".*torch.cuda.amp.autocast.*")  # YOLOX loss
    with contextlib.redirect_stdout(io.StringIO()):
        from models.detection.yolox_extension.models.detector import YoloXDetector
        from utils.padding import InputPadderFromShape
    import utils.timers as rvt_timers

    if hasattr(rvt_timers, "print_timing_info"):
        atexit.unregister(rvt_timers.print_timing_info)  # it prints an empty timing table at exit otherwise
    return SimpleNamespace(
        src=src, commit=commit, YoloXDetector=YoloXDetector, InputPadderFromShape=InputPadderFromShape
    )


def build_config(src: Path, size: str, h: int = 384, w: int = 640):
    """RVT's model config for ``experiment=gen4/<size>``, its input size (h, w) padded as described above."""
    from config.modifier import dynamically_modify_train_config
    from omegaconf import OmegaConf, open_dict

    def load(rel: str):
        cfg = OmegaConf.load(str(src / rel))
        if "defaults" in cfg:
            with open_dict(cfg):
                del cfg["defaults"]
        return cfg

    model = OmegaConf.merge(
        load("config/model/base.yaml"),
        load("config/model/rnndet.yaml"),
        load("config/model/maxvit_yolox/default.yaml").model,
        load(f"config/experiment/gen4/{SIZE_2_EXPERIMENT[size]}.yaml").model,
    )
    dataset = OmegaConf.merge(load("config/dataset/base.yaml"), load("config/dataset/gen4.yaml"))
    full = OmegaConf.create({"dataset": dataset, "model": model})
    with contextlib.redirect_stdout(io.StringIO()):
        dynamically_modify_train_config(full)
    part = tuple(full.model.backbone.stage.attention.partition_size)
    full.model.backbone.in_res_hw = tuple(-(-x // (32 * p)) * 32 * p for x, p in zip((h, w), part))
    return full.model


def perturb_init(model, seed: int) -> None:
    """Redraw LayerScale gammas, LayerNorm/BatchNorm affine parameters and BatchNorm running statistics."""
    import torch

    g = torch.Generator().manual_seed(seed + 12345)
    uniform = lambda t, lo, hi: torch.rand(t.shape, generator=g, dtype=t.dtype) * (hi - lo) + lo
    normal = lambda t, std: torch.randn(t.shape, generator=g, dtype=t.dtype) * std
    with torch.no_grad():
        for mod in model.modules():
            if type(mod).__name__ == "LayerScale":
                mod.gamma.copy_(uniform(mod.gamma, 0.2, 1.0))
            elif isinstance(mod, (torch.nn.LayerNorm, torch.nn.BatchNorm2d)) and mod.weight is not None:
                mod.weight.copy_(uniform(mod.weight, 0.8, 1.2))
                mod.bias.copy_(normal(mod.bias, 0.1))
                if isinstance(mod, torch.nn.BatchNorm2d):
                    mod.running_mean.copy_(normal(mod.running_mean, 0.1))
                    mod.running_var.copy_(uniform(mod.running_var, 0.5, 1.5))


def build_detector(rvt: SimpleNamespace, size: str, h: int = 384, w: int = 640, init: str = "perturbed", seed: int = 0):
    """RVT's ``YoloXDetector`` for gen4 ``size`` and its config (``init``: "perturbed" or "rvt")."""
    import torch

    cfg = build_config(rvt.src, size, h, w)
    torch.manual_seed(seed)
    model = rvt.YoloXDetector(cfg)
    if init == "perturbed":
        perturb_init(model, seed)
    return model, cfg


def make_input(T: int, B: int, H: int, W: int, seed: int = 1, density: float = 0.1):
    """Sparse uint8 event counts 1..10 at ``density``, (T, B, 20, H, W): the input both sides are timed on."""
    import torch

    g = torch.Generator().manual_seed(seed)
    mask = torch.rand((T, B, 20, H, W), generator=g) < density
    vals = torch.randint(1, 11, (T, B, 20, H, W), generator=g, dtype=torch.uint8)
    return torch.where(mask, vals, torch.zeros_like(vals))


def make_targets(n_frames: int, H: int, W: int, n_boxes: int, num_classes: int, seed: int):
    """Random YOLOX targets, (n_frames, n_boxes, 5) rows of [class, cx, cy, w, h] in pixels."""
    import torch

    g = torch.Generator().manual_seed(seed + 777)
    wh = torch.rand((n_frames, n_boxes, 2), generator=g) * 100 + 20
    cx = torch.rand((n_frames, n_boxes), generator=g) * (W - 140) + 70
    cy = torch.rand((n_frames, n_boxes), generator=g) * (H - 140) + 70
    cls = torch.randint(0, num_classes, (n_frames, n_boxes), generator=g).float()
    return torch.stack([cls, cx, cy, wh[..., 0], wh[..., 1]], dim=-1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rvt", required=True, help="RVT's work tree or git dir")
    ap.add_argument("--rev", default="HEAD", help="commit to take from a git dir")
    ap.add_argument("--size", choices=tuple(SIZE_2_EXPERIMENT), default="t")
    ap.add_argument("--h", type=int, default=384)
    ap.add_argument("--w", type=int, default=640)
    ap.add_argument("--T", type=int, default=5, help="windows per pass")
    ap.add_argument("--B", type=int, default=1)
    ap.add_argument("--backward", action="store_true", help="also time RVT's training step")
    ap.add_argument("--label-every", type=int, default=1, help="with --backward: windows t with t %% k == k-1 labeled")
    ap.add_argument("--no-forward", action="store_true", help="skip the forward timing")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="torch device, e.g. cuda (synchronized around each timing)")
    ap.add_argument("--seed", type=int, default=0, help="weight init seed")
    ap.add_argument("--init", choices=("perturbed", "rvt"), default="perturbed")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args()

    rvt = import_rvt(args.rvt, args.rev)
    import torch

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    model, cfg = build_detector(rvt, args.size, args.h, args.w, args.init, args.seed)
    model.to(device)
    in_res_hw, part = tuple(cfg.backbone.in_res_hw), tuple(cfg.backbone.stage.attention.partition_size)
    padder = rvt.InputPadderFromShape(desired_hw=in_res_hw)
    count = lambda m: sum(p.numel() for p in m.parameters())
    params = {
        k: count(getattr(model, m)) for k, m in (("backbone", "backbone"), ("fpn", "fpn"), ("head", "yolox_head"))
    }
    params["total"] = sum(params.values())
    meta = {
        "rvt_commit": rvt.commit,
        "size": args.size,
        "experiment": f"gen4/{SIZE_2_EXPERIMENT[args.size]}",
        "embed_dim": int(cfg.backbone.embed_dim),
        "dim_head": int(cfg.backbone.stage.attention.dim_head),
        "fpn_depth": float(cfg.fpn.depth),
        "num_classes": int(cfg.head.num_classes),
        "input_hw": (args.h, args.w),
        "in_res_hw": in_res_hw,
        "partition_size": part,
        "init": args.init,
        "seed": args.seed,
        "device": str(device),
        "torch": torch.__version__,
    }
    res = {"meta": meta, "threads": args.threads, "T": args.T, "B": args.B, "params": params}
    print(
        f"RVT {rvt.commit[:7]} {meta['experiment']}: embed_dim {meta['embed_dim']}, params {params['total'] / 1e6:.2f}M"
    )
    print(f"input {args.h}x{args.w} -> {in_res_hw}, partition {part}, T={args.T}, B={args.B}, {args.threads} threads")

    x_seq = make_input(args.T, args.B, args.h, args.w).to(device)
    prep = lambda x: padder.pad_tensor_ev_repr(x.to(torch.float32))
    if not args.no_forward:
        model.eval()
        bb, det = [], []
        with torch.no_grad():  # not inference_mode: the YOLOX head caches grids that autograd reuses later
            for rep in range(args.warmup + args.repeats):
                states = None
                for t in range(args.T):
                    x = prep(x_seq[t])
                    sync()
                    t0 = time.perf_counter()
                    feats, states = model.forward_backbone(x, states)
                    sync()
                    t1 = time.perf_counter()
                    model.forward_detect(feats)
                    sync()
                    t2 = time.perf_counter()
                    if rep >= args.warmup:
                        bb.append(1000 * (t1 - t0))
                        det.append(1000 * (t2 - t0))
        fwd = {"backbone": statistics.median(bb), "detector": statistics.median(det)}
        res["forward_ms_per_step"] = {**fwd, "backbone_min": min(bb), "detector_min": min(det), "n": len(bb)}
        print(
            f"forward ms/window (median of {len(bb)}): backbone {fwd['backbone']:.1f}, detector {fwd['detector']:.1f}"
        )

    if args.backward:
        model.train()
        k = max(args.label_every, 1)
        labeled = [t for t in range(args.T) if t % k == k - 1] or [args.T - 1]
        targets = make_targets(len(labeled) * args.B, args.h, args.w, 4, meta["num_classes"], args.seed).to(device)
        its, losses = [], []
        for rep in range(args.warmup + args.repeats):
            model.zero_grad(set_to_none=True)
            sync()
            t0 = time.perf_counter()
            states, kept = None, {}
            for t in range(args.T):
                feats, states = model.forward_backbone(prep(x_seq[t]), states)
                if t in labeled:
                    for key, v in feats.items():
                        kept.setdefault(key, []).append(v)
            _, loss = model.forward_detect({key: torch.cat(v) for key, v in kept.items()}, targets)
            loss["loss"].backward()
            sync()
            if rep >= args.warmup:
                its.append(1000 * (time.perf_counter() - t0))
                losses.append(float(loss["loss"].detach()))
        med = statistics.median(its)
        res["fwd_bwd_ms_per_step"] = {
            "median": med / args.T,
            "iteration_ms": med,
            "labeled_steps": labeled,
            "min": min(its) / args.T,
            "n_iterations": len(its),
            "loss": losses[-1],
        }
        print(f"fwd+bwd ms/window (median of {len(its)} iterations / T): {med / args.T:.1f}, loss {losses[-1]:.3f}")

    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
