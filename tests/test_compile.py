"""``torch.compile`` (Ultralytics' ``compile=True``) with the recurrent state: the graphs are made once per mode
(training, inference), never again per batch or per slot reset, and the compiled model carries the state as the eager
one does.

Whether a call recompiles is decided by TorchDynamo's guards, whichever backend then compiles the graphs, so these tests
hand Dynamo a backend that counts the graphs it is given and runs them as they are. Inductor itself (Ultralytics'
backend) takes minutes per graph on 2 CPU cores, so it is not run here.
"""

import copy

import pytest
import torch
from test_model import counts, small_model

from yolo_etram import EventYOLO
from yolo_etram.nn import set_partition

pytestmark = pytest.mark.slow


class CountingBackend:
    """A Dynamo backend that records each graph it is handed and runs it eagerly."""

    def __init__(self):
        self.graphs = 0

    def __call__(self, graph_module, example_inputs):
        self.graphs += 1
        return graph_module.forward


def tensors(out) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        out = list(out.values())
    return [t for o in out for t in tensors(o)] if isinstance(out, (list, tuple)) else []


@pytest.fixture
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def test_compiled_model_carries_state_without_recompiling(fresh_dynamo):
    """Training steps and then inference steps over clips with every kind of reset (none, one slot, all slots, the
    state cleared): after the first two calls of each mode (no state yet, then a carried one) no graph is added, and
    the outputs equal the eager model's."""
    eager = small_model()
    set_partition(eager, (3, 4))
    backend = CountingBackend()
    compiled = torch.compile(copy.deepcopy(eager), backend=backend)
    resets = [None, torch.tensor([False, False]), torch.tensor([True, False]), None, torch.tensor([True, True])]
    graphs_after_first = {}
    for mode in ("train", "inference"):
        for model in (eager, compiled):
            model.train(mode == "train")
            model.reset_states()
        for i, mask in enumerate(resets):
            x = counts(2, 3, seed=i, hw=(96, 128))  # the smallest input rvt-t takes with partition (3, 4)
            outputs = []
            for model in (eager, compiled):
                model.reset_states(mask)
                with torch.inference_mode(mode == "inference"):
                    out = model(x)
                if mode == "train":
                    sum(t.float().sum() for t in tensors(out)).backward()
                outputs.append([t.detach() for t in tensors(out)])
            for want, got in zip(*outputs, strict=True):
                torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
            if i == 1:  # the graphs of a first window (no state yet) and of a carried state are made
                graphs_after_first[mode] = backend.graphs
            elif i > 1:
                assert backend.graphs == graphs_after_first[mode], f"{mode} call {i} (reset {mask}) recompiled"
    assert graphs_after_first["train"] == 2, graphs_after_first  # one graph each: no graph breaks in training
    for want, got in zip(eager.parameters(), compiled.parameters(), strict=True):  # the same gradients went in
        torch.testing.assert_close(got.grad, want.grad, rtol=1e-3, atol=1e-5)


def test_train_and_predict_with_compile_true(tiny_events, tmp_path, monkeypatch, fresh_dynamo):
    """``model.train(compile=True)`` and ``model.predict(compile=True)`` through Ultralytics' ``attempt_compile``: the
    training loop (resets at sequence starts in every batch) compiles only on its first two batches, and prediction
    with compile gives the same boxes as without."""
    backend = CountingBackend()
    compile_ = torch.compile
    monkeypatch.setattr(torch, "compile", lambda model, **_: compile_(model, backend=backend))
    graphs_per_batch = []
    model = EventYOLO("rvt-t.yaml")
    model.add_callback("on_train_batch_end", lambda trainer: graphs_per_batch.append(backend.graphs))
    model.train(
        data=str(tiny_events), epochs=2, batch=2, workers=0, imgsz=128, plots=False, val=False, compile=True,
        project=str(tmp_path), name="compiled", exist_ok=True,
    )  # fmt: skip
    assert len(graphs_per_batch) >= 4 and graphs_per_batch[0] > 0
    assert graphs_per_batch[-1] == graphs_per_batch[1], graphs_per_batch
    assert model.trainer.metrics["prophesee/AP"] >= 0  # the final validation ran (Ultralytics runs it eagerly)

    best = EventYOLO(str(tmp_path / "compiled" / "weights" / "best.pt"))
    source = tiny_events.parents[1] / "raw" / "val"
    kw = dict(conf=0.0, max_det=5, stream=True, save=False, verbose=False)
    plain = [r.boxes.data for r in best.predict(str(source), **kw)]
    before = backend.graphs
    compiled = [r.boxes.data for r in best.predict(str(source), compile=True, **kw)]
    assert backend.graphs > before  # prediction did run compiled
    assert len(compiled) == len(plain) > 1
    for want, got in zip(plain, compiled):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-3)
