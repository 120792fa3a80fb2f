"""Where a neck's time goes: forward and training step of several model YAMLs timed in turns in one process, the
forward split into backbone, neck rows by the stride of their output, and head, the training step into forward, loss
(assigner included) and backward. Made to price the 4-scale neck's stride-4 level against RVT's 3-scale one.

    python benchmarks/profile_neck.py                                   # rvt-t against rvt-t-3scale, 384x640
    python benchmarks/profile_neck.py --models rvt-t.yaml,rvt-t-3scale.yaml,my-neck.yaml --size 384x640 --iters 8
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def build(name: str, hw: tuple[int, int]):
    import torch
    from ultralytics.cfg import get_cfg

    sys.path.insert(0, str(ROOT))
    from yolo_etram.nn import EventDetectionModel, set_partition

    torch.manual_seed(0)
    yaml = {**EventDetectionModel(name, verbose=False).yaml, "event": {"channels": 20, "nbins": 10}}
    model = EventDetectionModel(yaml, ch=20, nc=3, verbose=False)
    model.args = get_cfg()  # the loss reads its gains from the training arguments
    if hw[0] % 192 or hw[1] % 320:
        raise SystemExit(f"{hw}: use a multiple of 192x320 (stride 32 x RVT's eTraM partition (6, 10))")
    set_partition(model, (6, 10))
    return model


def row_parts(model, hw: tuple[int, int]) -> list[str]:
    """A label per row: ``backbone``, ``neck s4`` ... ``neck s32`` by the stride of the row's output, ``head``."""
    import torch

    labels, out = [], {}
    hooks = [m.register_forward_hook(lambda m, i, o, k=k: out.__setitem__(k, o)) for k, m in enumerate(model.model)]
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, 20, *hw))
    for h in hooks:
        h.remove()
    model.reset_states()
    for k, m in enumerate(model.model):
        if k == 0 or type(m).__name__ == "Index":
            labels.append("backbone")
        elif k == len(model.model) - 1:
            labels.append("head")
        else:
            o = out[k]
            labels.append(f"neck s{hw[0] // o.shape[-2]}")
    return labels


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="rvt-t.yaml,rvt-t-3scale.yaml")
    ap.add_argument("--size", default="384x640")
    ap.add_argument("--iters", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=5, help="windows per training clip")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    hw = tuple(int(v) for v in args.size.split("x"))
    names = args.models.split(",")
    models = {n: build(n, hw) for n in names}
    labels = {n: row_parts(m, hw) for n, m in models.items()}
    x = torch.rand(1, 20, *hw) * 4
    clip = torch.rand(1, args.seq_len, 20, *hw) * 4
    frames = args.seq_len
    batch = {
        "img": clip,
        "cls": torch.zeros(4 * frames, 1),
        "bboxes": torch.tensor([[0.5, 0.5, 0.05, 0.08]]).repeat(4 * frames, 1),
        "batch_idx": torch.arange(frames).repeat_interleave(4).float(),
        "labeled": torch.ones(frames, dtype=torch.bool),
    }
    parts = {n: defaultdict(list) for n in names}

    def timed_rows(name, model):
        t = {}
        hooks = []
        for k, m in enumerate(model.model):
            hooks.append(m.register_forward_pre_hook(lambda m, i, k=k: t.__setitem__(("s", k), time.perf_counter())))
            hooks.append(m.register_forward_hook(lambda m, i, o, k=k: t.__setitem__(("e", k), time.perf_counter())))
        model.eval()
        with torch.inference_mode():
            t0 = time.perf_counter()
            model(x)
            total = time.perf_counter() - t0
        for h in hooks:
            h.remove()
        by = defaultdict(float)
        for k, label in enumerate(labels[name]):
            by[label] += t[("e", k)] - t[("s", k)]
        for label, v in by.items():
            parts[name][label].append(v * 1e3)
        parts[name]["forward"].append(total * 1e3)

    def train_step(name, model):
        model.train()
        model.reset_states()
        t0 = time.perf_counter()
        preds = model(batch["img"])
        t1 = time.perf_counter()
        loss, _ = model.loss(batch, preds)
        t2 = time.perf_counter()
        loss.sum().backward()
        t3 = time.perf_counter()
        model.zero_grad(set_to_none=True)
        for k, v in (("train forward", t1 - t0), ("train loss", t2 - t1), ("train backward", t3 - t2)):
            parts[name][k].append(v * 1e3 / frames)
        parts[name]["train step"].append((t3 - t0) * 1e3 / frames)

    for i in range(args.iters + 2):
        for name, model in models.items():
            if i < 2:  # warm-up
                timed_rows(name, model)
                train_step(name, model)
                parts[name].clear()
                continue
            timed_rows(name, model)
            train_step(name, model)

    cols = ["forward", "backbone", "neck s4", "neck s8", "neck s16", "neck s32", "head"]
    cols += ["train step", "train forward", "train loss", "train backward"]
    print(
        f"torch {torch.__version__}, {os.cpu_count()} threads, {torch.backends.cpu.get_cpu_capability()}; {args.size}, "
        f"medians of {args.iters} turns, ms (training: per window of a {args.seq_len}-window clip)"
    )
    print("| model | params | " + " | ".join(cols) + " |")
    print("|---|---|" + "---|" * len(cols))
    med = {n: {c: statistics.median(parts[n][c]) if parts[n][c] else 0.0 for c in cols} for n in names}
    for n in names:
        params = sum(p.numel() for p in models[n].parameters()) / 1e6
        print(f"| {n} | {params:.2f} M | " + " | ".join(f"{med[n][c]:.1f}" for c in cols) + " |")
    base = names[-1]
    for n in names[:-1]:
        print(
            f"{n} against {base}: forward {med[n]['forward'] / med[base]['forward'] - 1:+.0%}, "
            f"training step {med[n]['train step'] / med[base]['train step'] - 1:+.0%}"
        )


if __name__ == "__main__":
    main()
