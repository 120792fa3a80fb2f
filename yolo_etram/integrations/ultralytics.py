"""Every place where yolo-etram reaches below Ultralytics' public API: the private names we call or override, and the
Ultralytics functions we swap for ours. Supported: Ultralytics 8.4.190 (the pin in ``requirements.txt``).

``tests/test_ultralytics_integration.py`` resolves every name of :data:`PRIVATE_API` and :data:`SWAPS` in the installed
Ultralytics and checks :data:`SOURCE_CONTRACTS`; when an upgrade moves one of them, that test names the row here.

Private names we call or override (each is used in the file named; an upgrade that renames one breaks that file):

==============================================  =========  ==================================================  =======
name                                            how        why                                                 since
==============================================  =========  ==================================================  =======
``nn.tasks._initialize_yolo_model``             call       builds our model's layers from the YAML exactly as  8.4.190
                                                           ``DetectionModel`` does (``nn/detection_model.py``)
``nn.tasks.BaseModel._predict_once``            override   runs the recurrent backbone over (B, T) clips and   8.4.190
                                                           the ``input: event_frame`` reduction; under
                                                           autocast, its layer loop (rows' ``f``, ``i``,
                                                           ``save``) with the head in float32
``nn.tasks.DetectionModel._predict_augment``    override   TTA would step the recurrent state: refused         8.4.190
``nn.modules.head.Detect._inference``,          override   RVT's YOLOX decoding (``nn/yolox_head.py``)         8.4.190
``Detect._get_decode_boxes``
``engine.model.Model._check_is_pytorch_model``  call       ``EventYOLO.export`` refuses exports of exports     8.4.190
``engine.trainer.BaseTrainer._setup_train``     override   the swaps of ``check_amp`` and DDP below            8.4.190
``engine.trainer.BaseTrainer._setup_ddp``       override   joins torchrun's process group (NCCL or gloo)       8.4.190
``DetectionValidator._prepare_batch``           override   (B, T) clips scored as B*T frames                   8.4.190
``engine.exporter.Exporter._transform_fn``      override   INT8 calibration items are (window, *states)        8.4.190
==============================================  =========  ==================================================  =======

Extensions (added to, never replaced): :func:`register_train_args` adds our train arguments (the event-domain
augmentation, off by default) to ``utils.DEFAULT_CFG_DICT`` and ``utils.DEFAULT_CFG``, when ``EventYOLO``, the trainer
or an ablation spec is first imported, so that Ultralytics' argument check accepts them.

Swaps (an Ultralytics function or attribute replaced by ours) and their scope:

=================================================  ==================  ===========================================
what is replaced                                   scope               why
=================================================  ==================  ===========================================
``engine.trainer.check_amp``                       ``_setup_train``    the stock check downloads ``yolo26n.pt``
``engine.trainer.autocast``                        ``train``           the stock one refuses bf16 on CPU
``torch.nn.parallel.DistributedDataParallel``      ``_setup_train``    gloo refuses ``device_ids=[None]`` on CPU
``engine.validator.check_det_dataset``             standalone val      it knows no event data YAML
``engine.validator.AutoBackend``                   standalone val      stateful exports need their runner first
``RANK``/``LOCAL_RANK`` of the validator modules   DDP validation      rank 0 validates the whole split alone
``utils.export.engine.torch2onnx``,                one export          trace the states as inputs and outputs
``utils.export.torchscript.torch2torchscript``,
``utils.export.openvino.torch2openvino``
``nn.tasks.torch_safe_load``                       :func:`event_seams` no checkpoint may run code from its file
``nn.backends.OpenVINOBackend.load_model``         :func:`event_seams` the stock loader calls ``Model.input()``,
                                                                       which a graph with state inputs refuses
``forward``/``warmup`` of one ``AutoBackend``      that object         states fed back between frames, clips run
                                                                       window by window (``nn/exported.py``)
``ultralytics.YOLO``, ``ultralytics.cfg.           the ``yolo`` and    the plain CLI builds ``EventYOLO`` and
entrypoint``                                       ``etram-yolo``      prints our errors in one line
                                                   processes
=================================================  ==================  ===========================================

:func:`event_seams` is entered by every call of ours that may open a checkpoint or an export (``EventYOLO``'s
constructor, ``train``, ``val``, ``predict`` and ``export``; the trainer, the standalone validator, the predictor),
and left when the call returns: a stock ``YOLO`` used beside ours in the same process keeps Ultralytics' own loading.
Only the ``yolo`` and ``etram-yolo`` commands, which are ours for their whole process, switch it on for good
(:func:`activate_for_process`).

Usage:
    >>> import ultralytics.engine.trainer as engine
    >>> with patched(engine, "check_amp", offline_amp_check):
    ...     trainer._setup_train()
    >>> with event_seams():
    ...     ckpt = ultralytics.nn.tasks.torch_safe_load("best.pt")  # read by our restricted unpickler
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

SUPPORTED_ULTRALYTICS = "8.4.190"
"""The Ultralytics release every row above was checked against (and the one ``requirements.txt`` pins)."""

PRIVATE_API: tuple[tuple[str, str], ...] = (
    ("ultralytics.nn.tasks", "_initialize_yolo_model"),
    ("ultralytics.nn.tasks:BaseModel", "_predict_once"),
    ("ultralytics.nn.tasks:DetectionModel", "_predict_augment"),
    ("ultralytics.nn.modules.head:Detect", "_inference"),
    ("ultralytics.nn.modules.head:Detect", "_get_decode_boxes"),
    ("ultralytics.engine.model:Model", "_check_is_pytorch_model"),
    ("ultralytics.engine.trainer:BaseTrainer", "_setup_train"),
    ("ultralytics.engine.trainer:BaseTrainer", "_setup_ddp"),
    ("ultralytics.models.yolo.detect.val:DetectionValidator", "_prepare_batch"),
    ("ultralytics.engine.exporter:Exporter", "_transform_fn"),
)
"""``(module[:class], name)`` of every private Ultralytics name we call or override."""

SWAPS: tuple[tuple[str, str], ...] = (
    ("ultralytics.engine.trainer", "check_amp"),
    ("ultralytics.engine.trainer", "autocast"),
    ("torch.nn.parallel", "DistributedDataParallel"),
    ("ultralytics.engine.validator", "check_det_dataset"),
    ("ultralytics.engine.validator", "AutoBackend"),
    ("ultralytics.engine.validator", "RANK"),
    ("ultralytics.engine.validator", "LOCAL_RANK"),
    ("ultralytics.models.yolo.detect.val", "RANK"),
    ("ultralytics.models.yolo.detect.val", "LOCAL_RANK"),
    ("ultralytics.utils.export.engine", "torch2onnx"),
    ("ultralytics.utils.export.torchscript", "torch2torchscript"),
    ("ultralytics.utils.export.openvino", "torch2openvino"),
    ("ultralytics.nn.tasks", "torch_safe_load"),
    ("ultralytics.nn.backends:OpenVINOBackend", "load_model"),
    ("ultralytics.nn.autobackend:AutoBackend", "forward"),
    ("ultralytics.nn.autobackend:AutoBackend", "warmup"),
    ("ultralytics", "YOLO"),
    ("ultralytics.cfg", "entrypoint"),
)
"""``(module[:class], name)`` of everything we replace, for a call or for good (see the table above)."""

EXTENDED: tuple[tuple[str, str], ...] = (
    ("ultralytics.utils", "DEFAULT_CFG_DICT"),
    ("ultralytics.utils", "DEFAULT_CFG"),
)
"""What we add to (never replace): our train arguments join Ultralytics' defaults (:func:`register_train_args`)."""

SOURCE_CONTRACTS: tuple[tuple[str, str, str], ...] = (
    # (module[:class], function, text its source must hold): behaviour our code relies on beyond a name
    ("ultralytics.engine.exporter:Exporter", "export_onnx", "torch2onnx"),
    ("ultralytics.utils.export.torchscript", "torch2torchscript", "torch.jit.trace"),
    ("ultralytics.engine.exporter:Exporter", "export_openvino", "torch2openvino"),
    ("ultralytics.nn.backends.openvino:OpenVINOBackend", "load_model", "ov_compiled_model"),
    ("ultralytics.nn.backends.onnx:ONNXBackend", "load_model", "self.session"),
    ("ultralytics.nn.autobackend:AutoBackend", "__init__", "self.backend"),
    ("ultralytics.engine.trainer:BaseTrainer", "_setup_train", "check_amp"),
    ("ultralytics.engine.trainer:BaseTrainer", "_do_train", "autocast(torch.bfloat16 if self.args.amp"),
    ("ultralytics.engine.validator:BaseValidator", "__call__", "check_det_dataset"),
    ("ultralytics.engine.validator:BaseValidator", "__call__", "AutoBackend("),
    ("ultralytics.engine.validator:BaseValidator", "__call__", "warmup"),
    ("ultralytics.nn.tasks", "load_checkpoint", "torch_safe_load"),
)
"""Source texts the swaps depend on: e.g. ``export_onnx`` must still call the module-level ``torch2onnx`` we swap."""


def resolve(owner: str) -> Any:
    """The object ``module[:Class]`` names, imported."""
    import importlib

    module, _, cls = owner.partition(":")
    obj = importlib.import_module(module)
    return getattr(obj, cls) if cls else obj


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


def cpu_capable_autocast(stock):
    """Ultralytics' ``autocast(enabled, device)`` that also runs bf16 on CPU (the stock one raises there); the trainer
    asks for it only where the CPU has bf16 (``EventTrainer._setup_train`` sets ``amp``)."""

    def autocast(enabled, device: str = "cuda"):
        import torch

        if device == "cpu" and enabled is torch.bfloat16:
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return stock(enabled, device=device)

    return autocast


OPENVINO_CPU_CONFIG = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
"""How stateful OpenVINO exports compile: float32 math (OpenVINO's CPU default is bf16 where the CPU has it, which
changes the detections), tuned for one window at a time. An export made with ``half=True`` records
``inference_precision: half`` and compiles with bf16 (or f16) instead: :func:`openvino_cpu_config`."""


def openvino_cpu_config(core, metadata: dict | None) -> dict:
    """The CPU compile config of a stateful OpenVINO export: :data:`OPENVINO_CPU_CONFIG`, with OpenVINO's reduced
    inference precision where the export asked for it (``half=True``) and the CPU has it, refused in one line where
    it does not."""
    if (metadata or {}).get("inference_precision") != "half":
        return OPENVINO_CPU_CONFIG
    from yolo_etram.utils.precision import openvino_half_precision

    precision = openvino_half_precision(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    return {**OPENVINO_CPU_CONFIG, "INFERENCE_PRECISION_HINT": precision}


def _stateful_openvino_loader(stock):
    """``OpenVINOBackend.load_model`` that loads a stateful export of ours (its metadata names recurrent states) with
    one compiled CPU model and no prefetching (windows are time steps); other models load with ``stock``."""

    def load_model(self, weight) -> None:
        metadata = self.read_metadata(weight)
        if not metadata.get("recurrent_states"):
            return stock(self, weight)
        import openvino as ov

        w = Path(weight) if Path(weight).is_file() else next(Path(weight).glob("*.xml"))
        self.apply_metadata(metadata)
        core = ov.Core()
        self.read_model, self.prefetch, self.ov = None, False, ov
        config = openvino_cpu_config(core, metadata)
        self.compile_model = partial(core.compile_model, device_name="CPU", config=config)
        self.ov_compiled_model = self.compile_model(core.read_model(model=str(w), weights=w.with_suffix(".bin")))

    load_model.stateful_aware = True
    return load_model


def _seam_replacements() -> list[tuple[Any, str, Any]]:
    """``(owner, name, ours)`` for the swaps of :func:`event_seams`, skipping those already in place."""
    import ultralytics.nn.tasks as tasks
    from ultralytics.nn.backends import OpenVINOBackend

    from yolo_etram.utils.checkpoints import UNSAFE_PICKLE_ENV, load_ultralytics_checkpoint

    out = []
    unsafe = os.environ.get(UNSAFE_PICKLE_ENV, "0").lower() in {"1", "true", "yes"}
    if not unsafe and tasks.torch_safe_load is not load_ultralytics_checkpoint:
        out.append((tasks, "torch_safe_load", load_ultralytics_checkpoint))
    if not getattr(OpenVINOBackend.load_model, "stateful_aware", False):
        out.append((OpenVINOBackend, "load_model", _stateful_openvino_loader(OpenVINOBackend.load_model)))
    return out


@contextlib.contextmanager
def event_seams() -> Iterator[None]:
    """Inside the block, every ``.pt`` Ultralytics opens is read by our restricted unpickler
    (:func:`~yolo_etram.utils.checkpoints.load_ultralytics_checkpoint`: nothing named by the file runs;
    ``YOLO_ETRAM_UNSAFE_PICKLE=1`` keeps Ultralytics' full unpickling), and Ultralytics' OpenVINO backend loads our
    stateful exports. Nests; everything is restored on exit."""
    with contextlib.ExitStack() as stack:
        for owner, name, ours in _seam_replacements():
            stack.enter_context(patched(owner, name, ours))
        yield


def activate_for_process() -> None:
    """:func:`event_seams` for the rest of this process: for the ``yolo`` and ``etram-yolo`` commands. Idempotent."""
    for owner, name, ours in _seam_replacements():
        setattr(owner, name, ours)


def register_train_args(args: dict[str, Any]) -> dict[str, Any]:
    """Add our train arguments (name -> default; the event-domain augmentation's
    ``yolo_etram.data.event_augment.TRAIN_ARGS``, every one off by default) to Ultralytics' default configuration, so
    that ``yolo train``, ``model.train(...)`` and ablation specs accept them. Additive and idempotent: a stock run in
    the same process gets them at their defaults and never reads them. Returns ``args``."""
    from ultralytics.utils import DEFAULT_CFG, DEFAULT_CFG_DICT

    for key, default in args.items():
        DEFAULT_CFG_DICT.setdefault(key, default)
        setattr(DEFAULT_CFG, key, DEFAULT_CFG_DICT[key])
    return args


def wrap_backend_calls(autobackend, forward=None, warmup=None) -> None:
    """Replace ``forward`` and/or ``warmup`` of this one ``AutoBackend`` (not its class): each wrapper is called with
    the object's previous method as its first argument."""
    if forward is not None:
        autobackend.forward = partial(forward, autobackend.forward)
    if warmup is not None:
        autobackend.warmup = partial(warmup, autobackend.warmup)


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
