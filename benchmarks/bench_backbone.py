"""Time the recurrent MaxViT backbone against a plain re-implementation of RVT's attention.

Ours runs timm's ``PartitionAttentionCl`` (fused ``F.scaled_dot_product_attention``); the reference is the same
model with every attention replaced by RVT's ``SelfAttentionCl`` math (explicit ``softmax(q @ k^T) @ v``), with the
same weights. Both run batch 1, one time step per call (state carried), at 384x640 with partition (6, 10).
Timings alternate between the two models and report the median, so background load hits both alike.

    python benchmarks/bench_backbone.py                  # CPU (and CUDA if present), tiny/small/base
    python benchmarks/bench_backbone.py --iters 10 --sizes tiny --devices cpu
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from recurrent import RecurrentMaxViT, rvt_base, rvt_small, rvt_tiny  # noqa: E402

FACTORIES = {"tiny": rvt_tiny, "small": rvt_small, "base": rvt_base}


class ReferenceSelfAttentionCl(nn.Module):
    """RVT's ``SelfAttentionCl``: head-interleaved qkv, explicit attention matrix."""

    def __init__(self, dim: int, dim_head: int) -> None:
        super().__init__()
        self.num_heads = dim // dim_head
        self.dim_head = dim_head
        self.scale = dim_head**-0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, restore_shape = x.shape[0], x.shape[:-1]
        q, k, v = self.qkv(x).view(batch, -1, self.num_heads, 3 * self.dim_head).transpose(1, 2).chunk(3, dim=3)
        attn = (q @ k.transpose(-2, -1)) * self.scale
        x = attn.softmax(dim=-1) @ v
        return self.proj(x.transpose(1, 2).reshape(restore_shape + (-1,)))


def with_reference_attention(model: RecurrentMaxViT) -> RecurrentMaxViT:
    """A copy of ``model`` whose attention modules are :class:`ReferenceSelfAttentionCl` with the same weights."""
    ref = copy.deepcopy(model)
    for stage in ref.stages:
        for pair in stage.blocks:
            for block in (pair.window, pair.grid):
                attn = ReferenceSelfAttentionCl(block.attn.qkv.in_features, block.attn.dim_head)
                attn.load_state_dict(block.attn.state_dict())
                block.attn = attn.to(block.attn.qkv.weight.device)
    return ref


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def forward_step(model: RecurrentMaxViT, x: torch.Tensor) -> Callable[[], None]:
    def run() -> None:
        with torch.no_grad():
            model(x)

    return run


def train_step(model: RecurrentMaxViT, x: torch.Tensor) -> Callable[[], None]:
    def run() -> None:
        model.zero_grad(set_to_none=True)
        sum(f.float().mean() for f in model(x)).backward()

    return run


def time_alternating(
    steps: dict[str, Callable[[], None]], iters: int, warmup: int, device: torch.device
) -> dict[str, float]:
    """Median seconds per call of each step, calls interleaved, after ``warmup`` untimed calls each.

    On CPU the first few training steps are several times slower (the allocator is still returning and
    re-faulting the large activation and gradient buffers), hence the warm-up.
    """
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(warmup):
        for step in steps.values():
            step()
    for _ in range(iters):
        for name, step in steps.items():
            sync(device)
            start = time.perf_counter()
            step()
            sync(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def bench(size: str, device: torch.device, iters: int, warmup: int, height: int, width: int) -> None:
    torch.manual_seed(0)
    ours = FACTORIES[size](partition_size=(6, 10)).to(device)
    ref = with_reference_attention(ours)
    x = torch.randint(0, 10, (1, 20, height, width), device=device).float()

    ours.eval(), ref.eval()
    with torch.no_grad():
        diff = max(
            (a - b).abs().max().item() for a, b in zip(ours.forward_with_states(x)[0], ref.forward_with_states(x)[0])
        )
    fwd = time_alternating({"ours": forward_step(ours, x), "ref": forward_step(ref, x)}, iters, warmup, device)
    ours.train(), ref.train()
    fwd_bwd = time_alternating({"ours": train_step(ours, x), "ref": train_step(ref, x)}, iters, warmup, device)

    params = sum(p.numel() for p in ours.parameters()) / 1e6
    for label, t in (("forward", fwd), ("fwd+bwd", fwd_bwd)):
        print(
            f"{size:>5} {params:6.2f}M {device.type:>4} {label:>8}: ours {t['ours'] * 1e3:8.1f} ms "
            f"({1 / t['ours']:6.2f} frames/s) | reference {t['ref'] * 1e3:8.1f} ms "
            f"({1 / t['ref']:6.2f} frames/s) | ref/ours {t['ref'] / t['ours']:5.2f}x"
        )
    print(f"{size:>5} max |ours - reference| over stage outputs: {diff:.2e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iters", type=int, default=3, help="timed calls per measurement (median reported)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls before timing")
    parser.add_argument("--sizes", nargs="+", default=list(FACTORIES), choices=list(FACTORIES))
    parser.add_argument("--devices", nargs="+", default=None, help="default: cpu, and cuda when available")
    parser.add_argument("--height", type=int, default=384)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch default)")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, "
        f"devices: {', '.join(devices)}" + (f" ({torch.cuda.get_device_name(0)})" if "cuda" in devices else "")
    )
    print(
        f"input 1x20x{args.height}x{args.width}, batch 1, one step per call, partition (6, 10), "
        f"median of {args.iters} after {args.warmup} warm-up calls"
    )
    for device in devices:
        for size in args.sizes:
            bench(size, torch.device(device), args.iters, args.warmup, args.height, args.width)


if __name__ == "__main__":
    main()
