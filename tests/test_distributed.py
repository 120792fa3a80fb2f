"""Distributed training, on CPU with gloo over loopback: two ranks under torchrun train end to end into one
run directory with identical parameters; one optimizer step of 2 ranks x 1 stream slot equals 1 process x 2 slots on
the same sequences; Ultralytics' own launcher path (the script it generates for its workers) rebuilds our trainer; a
simulated two-node run (two torchrun invocations, one rank each, rendezvous on localhost) finishes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

# `etram-yolo train ...` as a user runs it, plus two callbacks: every rank writes a digest of its parameters after each
# epoch, and the rank named by FAIL_RANK raises when its second epoch starts
TRAIN = r"""
import hashlib, os, sys, torch
from ultralytics.utils.callbacks.base import default_callbacks
from ultralytics.utils.torch_utils import unwrap_model

def params_digest(trainer):
    params = torch.cat([p.detach().flatten() for p in unwrap_model(trainer.model).parameters()])
    digest = hashlib.sha256(params.numpy().tobytes()).hexdigest()
    (trainer.save_dir / f"params_rank{os.environ['RANK']}.txt").write_text(digest)

def fail(trainer):
    if os.environ.get("FAIL_RANK") == os.environ["RANK"] and trainer.epoch == 1:
        raise RuntimeError(f"injected failure on rank {os.environ['RANK']}")

default_callbacks["on_train_epoch_end"].append(params_digest)
default_callbacks["on_train_epoch_start"].append(fail)
from yolo_etram.cli import main
sys.exit(main(sys.argv[1:]))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(*args: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "YOLO_ETRAM_CPU_THREADS": "1", **env},  # every rank on this machine's cores, one each
    )


def finished(proc: subprocess.Popen, timeout: int = 900, rc: int = 0) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert (proc.returncode == 0) == (rc == 0), out[-4000:]
    return out


def train_args(data: Path, project: Path, *extra: str) -> list[str]:
    return [
        "train",
        "model=rvt-t.yaml",
        f"data={data}",
        "batch=2",
        "device=cpu",
        f"project={project}",
        "name=ddp",
        "plots=False",
        "val=False",
        "seed=0",
        *extra,
    ]


def one_run(project: Path, epochs: int = 1) -> Path:
    runs = [p for p in project.iterdir() if p.is_dir()]
    assert len(runs) == 1, runs  # every rank used rank 0's run directory
    run = runs[0]
    assert (run / "weights" / "last.pt").is_file() and (run / "weights" / "best.pt").is_file()
    digests = {p.read_text() for p in run.glob("params_rank*.txt")}
    assert len(list(run.glob("params_rank*.txt"))) == 2 and len(digests) == 1  # identical parameters on both ranks
    record = json.loads((run / "experiment_results.json").read_text())
    assert record["distributed"] == {"world_size": 2, "backend": "gloo"}
    assert record["epochs_run"] == epochs and len((run / "results.csv").read_text().splitlines()) == 1 + epochs
    return run


@pytest.mark.slow
def test_two_ranks_under_torchrun_train_end_to_end(tiny_events, tmp_path):
    """The command users run: ``torchrun --standalone --nproc_per_node 2 etram-yolo train ...``."""
    (tmp_path / "train.py").write_text(TRAIN)
    runs = tmp_path / "runs"
    finished(
        torchrun(
            "--standalone",
            "--nproc_per_node",
            "2",
            str(tmp_path / "train.py"),
            *train_args(tiny_events, runs, "epochs=1"),
        )
    )
    one_run(runs)


@pytest.mark.slow
def test_a_failing_rank_ends_the_run_and_training_resumes(tiny_events, tmp_path):
    """Rank 1 raises as epoch 2 starts: torchrun stops rank 0 too (no hang) with rank 1's error, epoch 1's ``last.pt``
    is intact, and ``resume`` under torchrun trains epoch 2 into the same run directory."""
    (tmp_path / "train.py").write_text(TRAIN)
    runs, script = tmp_path / "runs", str(tmp_path / "train.py")
    args = train_args(tiny_events, runs, "epochs=2")
    out = finished(torchrun("--standalone", "--nproc_per_node", "2", script, *args, FAIL_RANK="1"), timeout=600, rc=1)
    assert "injected failure on rank 1" in out
    last = runs / "ddp" / "weights" / "last.pt"
    assert last.is_file() and not (runs / "ddp" / "experiment_results.json").exists()
    finished(torchrun("--standalone", "--nproc_per_node", "2", script, "train", "resume", f"model={last}"))
    one_run(runs, epochs=2)


@pytest.mark.slow
def test_simulated_two_node_run(tiny_events, tmp_path):
    """Two torchrun invocations, one rank each, meeting at a c10d rendezvous on localhost (as two machines would)."""
    (tmp_path / "train.py").write_text(TRAIN)
    port = free_port()
    nodes = [
        torchrun(
            "--nnodes",
            "2",
            "--nproc_per_node",
            "1",
            "--rdzv_backend",
            "c10d",
            "--rdzv_endpoint",
            f"127.0.0.1:{port}",
            "--rdzv_id",
            "yolo-etram-test",
            str(tmp_path / "train.py"),
            *train_args(tiny_events, tmp_path / "runs", "epochs=1"),
        )
        for _ in range(2)
    ]
    for proc in nodes:
        finished(proc)
    one_run(tmp_path / "runs")


STEP = r"""
import os, sys, torch, numpy as np
import torch.distributed as dist
from yolo_etram.data.build import build_event_dataset
from yolo_etram.data.dataset import collate_clips
from yolo_etram.data.data_yaml import load_event_data
from yolo_etram.data.sampler import StreamSampler
from yolo_etram.nn import EventDetectionModel, set_partition

data_yaml, dst, total_slots = sys.argv[1], sys.argv[2], int(sys.argv[3])
world = int(os.environ.get("WORLD_SIZE", "1"))
rank = int(os.environ.get("RANK", "0"))
if world > 1:
    dist.init_process_group("gloo")
torch.manual_seed(0)
data = load_event_data(data_yaml)
model = EventDetectionModel("rvt-t.yaml", nc=3, ch=20, verbose=False)
set_partition(model, data["partition"])
model.train()
for m in model.modules():  # BatchNorm normalises per rank unless synchronised: hold its statistics fixed
    if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
        m.eval()
before = {k: v.detach().clone() for k, v in model.state_dict().items()}
ds = build_event_dataset(data["train"], data, "train")
slots = total_slots // world  # 1 slot per rank, or all slots in the single process
keys = list(StreamSampler(ds, slots, shuffle=True, seed=0, rank=rank, world_size=world).keys(0))[:slots]
batch = collate_clips([ds[k] for k in keys])
net = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
opt = torch.optim.SGD(model.parameters(), lr=0.1)
img = batch["img"].float()
T = img.shape[1]
out = net(img)  # slots x T windows through the recurrent state; the head's raw outputs
per_slot = sum(out[k].reshape(slots, T, -1).pow(2).mean(dim=(1, 2)) for k in ("boxes", "scores"))
loss = per_slot.sum() * world  # DDP averages gradients over ranks: x world makes the sum over all slots
loss.backward()
opt.step()
if rank == 0:
    torch.save({k: v.detach() - before[k] for k, v in model.state_dict().items() if v.is_floating_point()}, dst)
np.save(f"{dst}.keys{rank}.npy", np.array([k.clip for k in keys]))
"""


def single_process(*args: str) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    out = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stderr[-3000:]


@pytest.mark.slow
def test_one_step_of_two_ranks_equals_one_process_with_two_slots(tiny_events, tmp_path):
    """Same initial weights, the same two stream slots (the samplers of 2 ranks x 1 slot deal the sequences as 1 x 2
    does), one SGD step through T windows of recurrent state: the updates agree to float tolerance, so sharding, state
    and gradient averaging are right; one slot alone gives another update (the comparison can fail). The objective is
    a sum over slots (Ultralytics' losses normalise by the batch's target count, which is not a per-slot sum)."""
    script, data = str(tmp_path / "step.py"), str(tiny_events)
    (tmp_path / "step.py").write_text(STEP)
    finished(torchrun("--standalone", "--nproc_per_node", "2", script, data, str(tmp_path / "ddp.pt"), "2"))
    single_process(script, data, str(tmp_path / "one.pt"), "2")
    single_process(script, data, str(tmp_path / "slot0.pt"), "1")
    ddp, one, slot0 = (torch.load(tmp_path / f"{n}.pt") for n in ("ddp", "one", "slot0"))
    assert ddp.keys() == one.keys()
    flat = {n: torch.cat([d[k].flatten() for k in sorted(one)]) for n, d in (("ddp", ddp), ("one", one), ("0", slot0))}
    norm = flat["one"].norm()
    assert norm > 0
    assert (flat["ddp"] - flat["one"]).norm() < 1e-4 * norm  # 2 ranks x 1 slot == 1 process x 2 slots
    assert (flat["0"] - flat["one"]).norm() > 1e-2 * norm  # and slot 0 alone is not
    for k, v in one.items():
        torch.testing.assert_close(ddp[k], v, atol=1e-5 * float(v.abs().max()) + 1e-8, rtol=1e-3, msg=k)
    ranks = [tuple(np.load(tmp_path / f"ddp.pt.keys{r}.npy").tolist()) for r in (0, 1)]
    single = tuple(np.load(tmp_path / "one.pt.keys0.npy").tolist())
    assert sorted(ranks[0] + ranks[1]) == sorted(single) and ranks[0] != ranks[1]  # the same two clips, one per rank


@pytest.mark.slow
def test_ultralytics_launcher_rebuilds_our_trainer(tiny_events, tmp_path):
    """``yolo train ... device=0,1`` makes its workers run a generated script that unpickles (cloudpickle) the trainer
    class, args, model and callbacks; run that script under torch.distributed.run with 2 CPU ranks (gloo)."""
    from ultralytics.utils.dist import generate_ddp_file

    from yolo_etram.train import EventTrainer

    trainer = EventTrainer(
        overrides=dict(
            model="rvt-t.yaml",
            data=str(tiny_events),
            epochs=1,
            batch=2,
            device="cpu",
            workers=0,
            project=str(tmp_path / "runs"),
            name="launcher",
            plots=False,
            val=False,
            seed=0,
        )
    )
    trainer.model = trainer.get_model("rvt-t.yaml", verbose=False)
    script = Path(generate_ddp_file(trainer))
    try:
        state = torch.load(script.with_suffix(".pt"), weights_only=False)  # what the workers load
        assert state["trainer"] is EventTrainer and state["args"]["data"] == str(tiny_events)
        assert state["args"]["optimizer"] == "AdamW" and state["args"]["nbs"] == 2  # our event defaults travel
        out = finished(torchrun("--standalone", "--nproc_per_node", "2", str(script)))
    finally:
        script.unlink(missing_ok=True)
        script.with_suffix(".pt").unlink(missing_ok=True)
    run = tmp_path / "runs" / "launcher"
    assert (run / "weights" / "best.pt").is_file(), out[-3000:]
    record = json.loads((run / "experiment_results.json").read_text())
    assert record["distributed"] == {"world_size": 2, "backend": "gloo"}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"batch": 3}, "batch=3 stream slots do not split evenly over 2 ranks"),
        ({"batch": 4, "multi_scale": True}, "multi_scale resizes histograms"),
    ],
)
def test_options_that_cannot_work_are_refused_before_training(monkeypatch, overrides, message):
    from ultralytics.cfg import get_cfg

    from yolo_etram.train import check_event_args, event_overrides
    from yolo_etram.utils.errors import UnsupportedOptionError

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    with pytest.raises(UnsupportedOptionError, match=message):
        check_event_args(get_cfg(overrides=event_overrides(overrides)))
    check_event_args(get_cfg(overrides=event_overrides({"batch": 4})))  # 2 slots per rank


def test_cpu_threads_per_rank(monkeypatch):
    """Every core by default, shared by the ranks of a node; Ultralytics' OMP_NUM_THREADS=1 (set when it is imported)
    does not count; YOLO_ETRAM_CPU_THREADS does."""
    from yolo_etram.utils.threads import use_all_cpu_threads

    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        monkeypatch.delenv("YOLO_ETRAM_CPU_THREADS", raising=False)
        monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
        use_all_cpu_threads("cpu")
        assert torch.get_num_threads() == os.cpu_count()
        monkeypatch.setenv("LOCAL_WORLD_SIZE", str(os.cpu_count()))
        use_all_cpu_threads("cpu")
        assert torch.get_num_threads() == 1
        monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
        monkeypatch.setenv("YOLO_ETRAM_CPU_THREADS", "1")
        use_all_cpu_threads("cpu")
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
