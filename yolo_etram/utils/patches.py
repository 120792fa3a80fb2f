"""The one place where we replace an Ultralytics internal for the duration of a call, and why each is needed.

Ultralytics has no hook for these seams; each patch is scoped to a ``with`` block and restored on exit:

- the trainer's ``check_amp`` downloads ``yolo26n.pt`` (offline machines fail): :func:`offline_amp_check`;
- the standalone validator's ``check_det_dataset`` does not know event data YAMLs: our loader for the call;
- the exporter's ``torch2onnx`` / ``torch2torchscript`` trace one input: ours trace the states too;
- the trainer's ``DistributedDataParallel`` wrap passes ``device_ids=[index]``, which a CPU (gloo) module refuses:
  ours leaves them out on CPU (``yolo_etram.train``);
- under DDP the validators gather their statistics from every rank and pick devices by ``RANK``: rank 0 validates
  the whole split alone instead (the Prophesee protocol needs every sequence in one place), :func:`validating_alone`.

Two replacements last for the process: every ``.pt`` Ultralytics opens goes through one, and none may run code
from the file: :func:`use_safe_checkpoint_loading` (``ultralytics.nn.tasks.torch_safe_load``, which fully unpickles);
and the OpenVINO backend's loader calls ``Model.input()``, which a graph with state inputs refuses (it has more than
one): :func:`use_stateful_openvino_loading` loads our stateful exports itself and leaves every other model to it.

Usage:
    >>> import ultralytics.engine.trainer as engine
    >>> with patched(engine, "check_amp", offline_amp_check):
    ...     trainer._setup_train()
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def patched(owner: Any, name: str, replacement: Any) -> Iterator[Any]:
    """Replace ``owner.name`` by ``replacement`` inside the block; yields the original, restores it afterwards."""
    original = getattr(owner, name)
    setattr(owner, name, replacement)
    try:
        yield original
    finally:
        setattr(owner, name, original)


def offline_amp_check(model) -> bool:
    """AMP on CUDA without the stock check's ``yolo26n.pt`` download; the LSTM state stays float32 either way."""
    from ultralytics.utils import LOGGER

    device = next(model.parameters()).device
    if device.type != "cuda":
        return False
    LOGGER.info("AMP: enabled on CUDA (stock check skipped: it downloads yolo26n.pt); LSTM state stays float32")
    return True


def use_safe_checkpoint_loading() -> None:
    """From now on in this process, load every ``.pt`` (``EventYOLO(...)``, ``yolo predict model=...``, resume, the
    validator's and predictor's backends) with :func:`~yolo_etram.utils.checkpoints.load_ultralytics_checkpoint`:
    nothing named by the file runs. Idempotent; ``YOLO_ETRAM_UNSAFE_PICKLE=1`` keeps Ultralytics' full unpickling."""
    import os

    import ultralytics.nn.tasks as tasks

    from yolo_etram.utils.checkpoints import UNSAFE_PICKLE_ENV, load_ultralytics_checkpoint

    if os.environ.get(UNSAFE_PICKLE_ENV, "0").lower() in {"1", "true", "yes"}:
        return
    if tasks.torch_safe_load is not load_ultralytics_checkpoint:
        tasks.torch_safe_load = load_ultralytics_checkpoint


OPENVINO_CPU_CONFIG = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
"""How stateful OpenVINO exports compile: float32 math (OpenVINO's CPU default is bf16 where the CPU has it, which
changes the detections), tuned for one window at a time."""


def use_stateful_openvino_loading() -> None:
    """From now on in this process, Ultralytics' ``OpenVINOBackend`` loads a stateful export of ours (its metadata
    names recurrent states) with one compiled CPU model and no prefetching (windows are time steps); the states are
    fed back by :func:`~yolo_etram.nn.exported.install_state_runner`. Other models load as before. Idempotent."""
    from functools import partial
    from pathlib import Path

    from ultralytics.nn.backends import OpenVINOBackend

    stock = OpenVINOBackend.load_model
    if getattr(stock, "stateful_aware", False):
        return

    def load_model(self, weight) -> None:
        metadata = self.read_metadata(weight)
        if not metadata.get("recurrent_states"):
            return stock(self, weight)
        import openvino as ov

        w = Path(weight) if Path(weight).is_file() else next(Path(weight).glob("*.xml"))
        self.apply_metadata(metadata)
        core = ov.Core()
        self.read_model, self.prefetch, self.ov = None, False, ov
        self.compile_model = partial(core.compile_model, device_name="CPU", config=OPENVINO_CPU_CONFIG)
        self.ov_compiled_model = self.compile_model(core.read_model(model=str(w), weights=w.with_suffix(".bin")))

    load_model.stateful_aware = True
    OpenVINOBackend.load_model = load_model


@contextlib.contextmanager
def validating_alone(trainer) -> Iterator[None]:
    """Ultralytics' validation as one process inside a DDP run: no loss reduction, no gathering, no barriers, the
    device from ``args.device``. For rank 0, which validates the whole split while the other ranks wait."""
    import ultralytics.engine.validator as engine
    import ultralytics.models.yolo.detect.val as detect

    with contextlib.ExitStack() as stack:
        for module in (engine, detect):
            stack.enter_context(patched(module, "RANK", -1))
            stack.enter_context(patched(module, "LOCAL_RANK", -1))
        stack.enter_context(patched(trainer, "world_size", 1))
        yield
