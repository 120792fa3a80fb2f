"""GPU checks for whenever a GPU machine is lent (under 8 minutes on one H100/H200); CI never depends on them.

1. ``parity``: rvt-t on CPU and on CUDA (fp32, TF32 off), the same 384x640 windows with a slot reset mid-way: LSTM
   states and head outputs agree, the states stay float32 on the GPU.
2. ``amp``: training steps under fp16 autocast (with GradScaler) and bf16 autocast: every loss finite, every LSTM state
   float32 (``recurrent/layers.py`` runs the LSTM math outside autocast).
3. ``ddp``: NCCL. A one-GPU ``torchrun`` run of ``etram-yolo train`` on a tiny synthetic set, a DDP step on NCCL
   (``torchrun --nproc_per_node N`` over this machine's GPUs, N >= 1) and, with two or more GPUs, Ultralytics' own
   launcher (``device=0,1``).
4. ``throughput``: training steps (forward + loss + backward + AdamW, fp16 AMP as ``yolo train`` defaults) of
   rvt-t/s/b at eTraM's 384x640, B=8 stream slots x T=5 windows: windows/s and peak GPU memory.

    python benchmarks/gpu_check.py                              # everything; PASS/FAIL lines, then the numbers
    python benchmarks/gpu_check.py --only parity,amp --json runs/bench/gpu_check.json

Exit status 1 when a check fails. The reference for ``parity`` is this code on the CPU (which the CPU test suite ties
to RVT's own code through ``tests/test_rvt_backbone_parity.py``); throughput has no outside reference here: compare the
rvt-* rows with RVT's own code timed on the same machine (``benchmarks/rvt_model.py --rvt PATH --device cuda``) when
you quote a ratio.
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CHECKS = ("parity", "amp", "ddp", "throughput")
H, W = 384, 640


def build(name: str = "rvt-t", device: str = "cpu"):
    from ultralytics.cfg import get_cfg

    from yolo_etram.nn import EventDetectionModel, set_partition

    model = EventDetectionModel(f"{name}.yaml", nc=3, ch=20, verbose=False)
    model.args = get_cfg()  # the loss reads its gains from the training arguments
    set_partition(model, (6, 10))  # RVT's eTraM partition: 384x640 is a multiple of 32 x (6, 10)
    return model.to(device)


def tensors(out) -> list:
    import torch

    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        return [t for v in out.values() for t in tensors(v)]
    if isinstance(out, (list, tuple)):
        return [t for v in out for t in tensors(v)]
    return []


def check_parity() -> dict:
    import copy

    import torch

    from recurrent.state import stateful_layers

    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)
    cpu = build().eval()
    gpu = copy.deepcopy(cpu).cuda()
    windows = torch.rand(4, 2, 20, H, W) * 4
    reset = torch.tensor([False, True])  # slot 1 starts a new recording at step 2
    worst_out = worst_state = 0.0
    with torch.inference_mode():
        for t, x in enumerate(windows):
            if t == 2:
                cpu.reset_states(reset)
                gpu.reset_states(reset.cuda())
            a, b = tensors(cpu(x)), tensors(gpu(x.cuda()))
            for u, v in zip(a, b):
                worst_out = max(worst_out, ((v.cpu() - u).abs().max() / u.abs().max().clamp_min(1e-6)).item())
    for lc, lg in zip(stateful_layers(cpu), stateful_layers(gpu)):
        for (hc, cc), (hg, cg) in zip(lc.states, lg.states):
            assert hg.is_cuda and hg.dtype == torch.float32 and cg.dtype == torch.float32
            worst_state = max(worst_state, (hg.cpu() - hc).abs().max().item(), (cg.cpu() - cc).abs().max().item())
    ok = worst_out < 1e-3 and worst_state < 1e-3
    return {"ok": ok, "max_rel_output_diff": worst_out, "max_abs_state_diff": worst_state}


def clip_batch(slots: int, steps: int, device):
    import torch

    frames, n = slots * steps, 4
    return {
        "img": torch.rand(slots, steps, 20, H, W, device=device) * 4,
        "cls": torch.randint(0, 3, (n * frames, 1), device=device).float(),
        "bboxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]], device=device).repeat(n * frames, 1),
        "batch_idx": torch.arange(frames, device=device).repeat_interleave(n).float(),
        "labeled": torch.ones(frames, dtype=torch.bool, device=device),
    }


def train_steps(model, batch, n: int, dtype, scaler=None) -> list[float]:
    import torch

    from recurrent.state import stateful_layers

    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    losses = []
    model.train()
    for _ in range(n):
        with torch.autocast("cuda", dtype=dtype, enabled=dtype is not None):
            loss, _ = model.loss(batch)
            loss = loss.sum()
        (scaler.scale(loss) if scaler else loss).backward()
        if scaler:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        for layer in stateful_layers(model):
            assert all(h.dtype == torch.float32 == c.dtype for h, c in layer.states), "LSTM state left float32"
    return losses


def check_amp() -> dict:
    import math

    import torch

    torch.manual_seed(0)
    out = {}
    for label, dtype in (("fp16", torch.float16), ("bf16", torch.bfloat16)):
        model = build().cuda()
        scaler = torch.amp.GradScaler("cuda") if dtype is torch.float16 else None
        losses = train_steps(model, clip_batch(2, 5, "cuda"), 6, dtype, scaler)
        out[f"{label}_losses"] = [round(v, 4) for v in losses]
        out[f"{label}_finite"] = all(math.isfinite(v) for v in losses)
    out["ok"] = out["fp16_finite"] and out["bf16_finite"]
    return out


NCCL_STEP = r"""
import torch, torch.distributed as dist
from yolo_etram.utils import distributed
from yolo_etram.train import _DistributedDataParallel
import benchmarks.gpu_check as g
device = torch.device("cuda", distributed.local_rank())
torch.cuda.set_device(device)
assert distributed.init_process_group(device) == "nccl"
model = g.build(device=device)
net = _DistributedDataParallel(model, device_ids=[device.index], find_unused_parameters=True)
batch = g.clip_batch(1, 3, device)
loss, _ = model.loss(batch, preds=net(batch["img"]))
loss.sum().backward()
grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
every = [torch.empty_like(grads) for _ in range(dist.get_world_size())]
dist.all_gather(every, grads)
assert all(torch.equal(every[0], g) for g in every), "gradients differ across ranks after DDP's all-reduce"
print("nccl ok", dist.get_world_size(), grads.numel())
dist.destroy_process_group()
"""


def run(cmd: list[str], cwd=None, timeout: int = 300) -> tuple[bool, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    try:
        p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return False, f"timed out after {timeout} s"
    return p.returncode == 0, (p.stdout + p.stderr)[-3000:]


def check_ddp() -> dict:
    import torch

    from yolo_etram.data.synth import SynthConfig, make_synthetic_dataset

    n_gpu = torch.cuda.device_count()
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    cli = [sys.executable, "-m", "yolo_etram.cli"]
    out = {"gpus": n_gpu}
    with tempfile.TemporaryDirectory() as tmp:
        data = make_synthetic_dataset(
            Path(tmp) / "prepared",
            {"train": 2, "val": 1},
            SynthConfig(width=320, height=192, duration_s=2.0, seed=3),
            seq_len=3,
            partition=[6, 10],
            workers=2,
            progress=False,
        )
        args = ["train", "model=rvt-t.yaml", f"data={data}", "epochs=1", "batch=2", "plots=False", f"project={tmp}"]
        step = Path(tmp) / "nccl_step.py"
        step.write_text(NCCL_STEP)
        ok, log = run([*torchrun, f"--nproc_per_node={max(1, min(n_gpu, 8))}", str(step)], cwd=ROOT)
        out["nccl_step"], out["nccl_step_log"] = ok, log.strip().splitlines()[-1:] if ok else log
        ok, log = run([*torchrun, "--nproc_per_node=1", "-m", "yolo_etram.cli", *args, "device=0", "name=one"])
        out["torchrun_1gpu_train"] = ok and (Path(tmp) / "one" / "weights" / "best.pt").is_file()
        if not out["torchrun_1gpu_train"]:
            out["torchrun_1gpu_log"] = log
        if n_gpu >= 2:
            ok, log = run([*cli, *args, "device=0,1", "batch=4", "name=launcher"])
            record = Path(tmp) / "launcher" / "experiment_results.json"
            dist = json.loads(record.read_text()).get("distributed") if record.is_file() else None
            out["launcher_2gpu_train"] = ok and dist == {"world_size": 2, "backend": "nccl"}
            if not out["launcher_2gpu_train"]:
                out["launcher_2gpu_log"] = log
    out["ok"] = all(v for k, v in out.items() if k in ("nccl_step", "torchrun_1gpu_train", "launcher_2gpu_train"))
    return out


def check_throughput(models=("rvt-t", "rvt-s", "rvt-b"), slots: int = 8, steps: int = 5, iters: int = 8) -> dict:
    import torch

    rows = {}
    for name in models:
        torch.manual_seed(0)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        model = build(name, "cuda")
        batch = clip_batch(slots, steps, "cuda")
        scaler = torch.amp.GradScaler("cuda")
        train_steps(model, batch, 2, torch.float16, scaler)  # warm-up
        torch.cuda.synchronize()
        t = time.perf_counter()
        train_steps(model, batch, iters, torch.float16, scaler)
        torch.cuda.synchronize()
        seconds = (time.perf_counter() - t) / iters
        rows[name] = {
            "windows_per_s": round(slots * steps / seconds, 1),
            "step_ms": round(seconds * 1e3, 1),
            "peak_gpu_mib": round(torch.cuda.max_memory_allocated() / 2**20),
        }
        del model, batch
    return {"ok": True, "input": f"{H}x{W}", "slots": slots, "windows": steps, **rows}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default=",".join(CHECKS), help=f"comma-separated subset of {','.join(CHECKS)}")
    ap.add_argument("--json", default=None, help="write every number here")
    args = ap.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; run it on a GPU machine (CI never does)")
        return 2
    print(
        f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.device_count()} x "
        f"{torch.cuda.get_device_name()}"
    )
    results, failed = {}, []
    for name in args.only.split(","):
        t = time.perf_counter()
        try:
            res = globals()[f"check_{name}"]()
        except Exception as e:  # a check that raises has failed: report it and go on to the next
            res = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        res["seconds"] = round(time.perf_counter() - t, 1)
        results[name] = res
        failed += [] if res["ok"] else [name]
        print(f"{'PASS' if res['ok'] else 'FAIL'} {name:10s} {json.dumps(res)}", flush=True)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
