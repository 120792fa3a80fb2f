"""``EventExporter``: Ultralytics' ``Exporter`` for recurrent detectors, whose ONNX and TorchScript graphs take and
return the LSTM states (the graph contract and the runners are in :mod:`yolo_etram.nn.exported`).

Three seams change for recurrent models: during ``export_onnx`` / ``export_torchscript`` / ``export_openvino`` the
module-level ``torch2onnx`` / ``torch2torchscript`` / ``torch2openvino`` functions that those methods call are swapped
(:func:`~yolo_etram.integrations.ultralytics.patched`) for versions that trace
:class:`~yolo_etram.nn.exported.StatefulExportModel` with the zero states as extra inputs. Everything else
(argument checks, fusing, opset choice, onnxslim, metadata, logging, callbacks) stays stock. Stock (non-recurrent)
models export exactly as with ``Exporter``.

Usage:
    >>> from yolo_etram import EventYOLO
    >>> f = EventYOLO("best.pt").export(format="onnx")  # at the size it was trained at
    >>> from yolo_etram.nn.exported import StatefulOnnxModel
    >>> model = StatefulOnnxModel(f)
    $ yolo export model=best.pt format=openvino
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from ultralytics.engine.exporter import Exporter
from ultralytics.utils import DEFAULT_CFG, LOGGER, colorstr
from ultralytics.utils.checks import check_imgsz

from recurrent import stateful_layers
from yolo_etram.integrations.ultralytics import patched
from yolo_etram.nn.detection_model import trained_input_size
from yolo_etram.nn.exported import StatefulExportModel, StateSpec, state_specs
from yolo_etram.utils.env import decline_openvino_telemetry
from yolo_etram.utils.errors import UnsupportedOptionError
from yolo_etram.utils.sizes import round_up

__all__ = ["RECURRENT_FORMATS", "EventExporter", "export_recurrent"]

RECURRENT_FORMATS = ("onnx", "torchscript", "openvino")


class EventExporter(Exporter):
    """Ultralytics ``Exporter`` that exports recurrent models with their LSTM states as graph inputs and outputs.

    Recurrent models (any model with a stateful layer) export to ``onnx``, ``torchscript`` and ``openvino``, at a
    fixed ``imgsz`` that the attention partitions divide (``model.input_multiple``; by default the size the model was
    trained at, :func:`~yolo_etram.nn.detection_model.trained_input_size`) and a fixed batch. Stock models are
    exported exactly as by ``Exporter``.

    Example:
        >>> from yolo_etram import EventYOLO
        >>> model = EventYOLO("best.pt")
        >>> f = EventExporter(overrides={"format": "onnx", "imgsz": [384, 640], "batch": 1})(model.model)
    """

    recurrent: bool = False  # set per call: the model being exported has stateful layers

    def __call__(self, model: nn.Module) -> str:
        self.recurrent = bool(stateful_layers(model))
        self._check_layer_formats(model)
        if self.recurrent:
            self._check_recurrent_args(model)
        return super().__call__(model)

    def _check_layer_formats(self, model: nn.Module) -> None:
        """Refuse a format that one of the model's layers cannot be written in (a layer's ``export_formats``)."""
        fmt = str(self.args.format).lower()
        for m in model.modules():
            allowed = getattr(type(m), "export_formats", None)
            if allowed is not None and fmt not in allowed:
                raise UnsupportedOptionError(
                    f"format='{fmt}' cannot carry the model's {type(m).__name__} layers; "
                    f"formats that do: {', '.join(allowed)}"
                )

    def _check_recurrent_args(self, model: nn.Module) -> None:
        """Refuse, before any work, what a stateful graph cannot be: other formats, dynamic shapes, INT8."""
        fmt = str(self.args.format).lower()
        if fmt not in RECURRENT_FORMATS:
            raise UnsupportedOptionError(
                f"format='{fmt}' is not supported for recurrent models (their LSTM states are graph inputs and "
                f"outputs); supported formats: {', '.join(RECURRENT_FORMATS)}"
            )
        if self.args.dynamic:
            raise UnsupportedOptionError(
                "dynamic=True is not supported for recurrent models: the state shapes follow "
                "the input size, so export one model per imgsz"
            )
        if str(self.args.quantize) in ("8", "int8") and fmt == "openvino":
            if not self.args.data:
                raise UnsupportedOptionError(
                    "quantize=8 calibrates on event windows with their carried states: add data=<event data YAML> "
                    "(its val split, or split=...)"
                )
            self.args.quantize = 8
        elif self.args.quantize not in (None, 16, 32, "16", "32", "fp16", "fp32"):
            raise UnsupportedOptionError(
                f"quantize={self.args.quantize} is not supported for recurrent {fmt} exports; INT8 (quantize=8 "
                "data=...) is supported for format=openvino, else use quantize=32 or 16"
            )
        imgsz = check_imgsz(self.args.imgsz, stride=int(max(model.stride)), min_dim=2)
        mh, mw = getattr(model, "input_multiple", (32, 32))
        if imgsz[0] % mh or imgsz[1] % mw:
            fit = round_up(imgsz, (mh, mw))
            raise UnsupportedOptionError(
                f"imgsz={list(imgsz)} does not fit the recurrent backbone's attention partitions: height and width "
                f"must be multiples of {mh}x{mw}; use e.g. imgsz={fit[0]},{fit[1]} (inputs are zero-padded "
                f"bottom/right)"
            )

    def _state_specs(self) -> list[StateSpec]:
        batch, _, height, width = self.im.shape
        return state_specs(self.model, batch, height, width)

    def _prepare_recurrent(self) -> list[StateSpec]:
        """Clear whatever the dry runs left in the layers and record the state I/O in the metadata."""
        for layer in stateful_layers(self.model):
            layer.reset()
        specs = self._state_specs()
        self.metadata["recurrent_states"] = json.dumps([[s.input, s.output, list(s.shape)] for s in specs])
        return specs

    def _zero_states(self, specs: Sequence[StateSpec]) -> list[torch.Tensor]:
        # The LSTM keeps its state in float32 even when the images are fp16.
        return [torch.zeros(s.shape, dtype=torch.float32, device=self.im.device) for s in specs]

    def get_int8_calibration_dataloader(self, prefix=""):
        """Recurrent models calibrate on prepared event windows, each with the states the float model carried into
        it (:func:`~yolo_etram.data.calibration.calibration_inputs`); stock models on Ultralytics' images."""
        if not self.recurrent:
            return super().get_int8_calibration_dataloader(prefix)
        from yolo_etram.data.calibration import calibration_inputs
        from yolo_etram.data.data_yaml import load_event_data

        split = self.args.split or "val"
        data = load_event_data(self.args.data, split)
        specs = self._state_specs()
        stateful = StatefulExportModel(self.model)

        @torch.no_grad()
        def step(images: torch.Tensor, states: list[torch.Tensor]) -> list[torch.Tensor]:
            return list(stateful(images.to(self.im.dtype), *states)[1:])

        LOGGER.info(f"{prefix} collecting INT8 calibration windows and their carried states from '{self.args.data}'")
        samples = calibration_inputs(
            data,
            split,
            self.im.shape[-2:],
            self.im.shape[0],
            step,
            lambda: self._zero_states(specs),
            fraction=float(f) if isinstance(f := self.args.fraction, (int, float)) and 0 < f <= 1 else 1.0,
        )
        LOGGER.info(f"{prefix} {len(samples)} calibration windows of '{split}'")
        return samples

    def _transform_fn(self, data_item):
        # our calibration items already are the graph's inputs, (images, *states), as numpy arrays
        return data_item if self.recurrent else super()._transform_fn(data_item)

    def _record_event_settings(self) -> None:
        """Put the model's event settings (how windows are built) into the export's metadata, and a YOLOX head's
        score (``yolox_score``: ``obj_cls`` or ``cls``; ``rvt_eval`` reads it)."""
        event = getattr(self.model, "yaml", {}).get("event")
        if event:
            self.metadata["event"] = json.dumps(event)
        head = self.model.model[-1] if hasattr(self.model, "model") else None
        if isinstance(getattr(head, "score", None), str):
            self.metadata["yolox_score"] = head.score

    def export_onnx(self, prefix=colorstr("ONNX:")):  # noqa: B008
        """Stock ``export_onnx`` tracing ``(images, *states) -> (output0, *new_states)`` for recurrent models."""
        self._record_event_settings()
        if not self.recurrent:
            return super().export_onnx(prefix)
        import ultralytics.utils.export.engine as engine

        specs = self._prepare_recurrent()
        torch2onnx = engine.torch2onnx

        def stateful_torch2onnx(model, im, output_file, opset=14, input_names=None, output_names=None, dynamic=None):
            return torch2onnx(
                StatefulExportModel(model),
                (im, *self._zero_states(specs)),
                output_file,
                opset=opset,
                input_names=[*(input_names or ["images"]), *(s.input for s in specs)],
                output_names=[*(output_names or ["output0"]), *(s.output for s in specs)],
                dynamic=dynamic,
            )

        with patched(engine, "torch2onnx", stateful_torch2onnx):
            return super().export_onnx(prefix)

    def export_torchscript(self, prefix=colorstr("TorchScript:")):  # noqa: B008
        """Stock ``export_torchscript`` tracing ``(images, *states) -> (output0, *new_states)`` for recurrent models."""
        self._record_event_settings()
        if not self.recurrent:
            return super().export_torchscript(prefix)
        import ultralytics.utils.export.torchscript as torchscript

        specs = self._prepare_recurrent()
        torch2torchscript = torchscript.torch2torchscript

        def stateful_torch2torchscript(model, im, output_file, metadata=None, prefix=""):
            return torch2torchscript(
                StatefulExportModel(model),
                (im, *self._zero_states(specs)),
                output_file,
                metadata=metadata,
                prefix=prefix,
            )

        with patched(torchscript, "torch2torchscript", stateful_torch2torchscript):
            return super().export_torchscript(prefix)

    def export_openvino(self, prefix=colorstr("OpenVINO:")):  # noqa: B008
        """Stock ``export_openvino`` converting ``(images, *states) -> (output0, *new_states)`` for recurrent models,
        with the ONNX export's input and output names; ``quantize=8`` calibrates on event windows with their states."""
        decline_openvino_telemetry()  # OpenVINO's converter and NNCF would send usage data without a consent file
        self._record_event_settings()
        if not self.recurrent:
            return super().export_openvino(prefix)
        import ultralytics.utils.export.openvino as openvino

        specs = self._prepare_recurrent()
        if self.args.quantize == 16:  # weights stored as fp16; the runtime computes in bf16 (or f16) where it can
            self.metadata["inference_precision"] = "half"
            LOGGER.info(f"{prefix} half=True: bf16 (or f16) inference where the CPU has it; float32 state I/O")
        torch2openvino = openvino.torch2openvino

        def stateful_torch2openvino(model, im, *args, **kwargs):
            ov_model = torch2openvino(StatefulExportModel(model), (im, *self._zero_states(specs)), *args, **kwargs)
            for ports, names in (
                (ov_model.inputs, ["images", *(s.input for s in specs)]),
                (ov_model.outputs, ["output0", *(s.output for s in specs)]),
            ):
                for port, name in zip(ports, names, strict=True):
                    port.get_tensor().set_names({name})
            return ov_model

        quiet = _quiet_nncf() if self.args.quantize == 8 else contextlib.nullcontext()
        # a half export goes to <name>_half_openvino_model/ (stock Ultralytics shares fp32's folder), as INT8 goes to
        # <name>_int8_openvino_model/: the folder names the precision, and exporting one precision never overwrites
        # another's weight file, which OpenVINO maps while a model compiled from it runs (overwritten under a running
        # process, it ends that process with SIGBUS)
        half = self.file.with_name(f"{self.file.stem}_half{self.file.suffix}")
        named = patched(self, "file", half) if self.args.quantize == 16 else contextlib.nullcontext()
        with patched(openvino, "torch2openvino", stateful_torch2openvino), quiet, named:
            return super().export_openvino(prefix)


@contextlib.contextmanager
def _quiet_nncf():
    """NNCF logs one INFO line per operation it leaves unquantized (hundreds); keep its warnings and progress bars."""
    import nncf  # noqa: F401  (its import sets the level this changes)

    logger = logging.getLogger("nncf")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def export_recurrent(
    model_or_path: str | Path | nn.Module | Any,
    format: str = "onnx",
    imgsz: int | Sequence[int] | None = None,
    **kwargs: Any,
) -> Path:
    """Export a recurrent (or stock) detector with :class:`EventExporter` and return the exported file.

    Args:
        model_or_path: a checkpoint or model YAML path, an ``EventYOLO``/``YOLO`` object or a ``DetectionModel``.
        format: ``onnx``, ``torchscript`` or ``openvino`` for recurrent models.
        imgsz: fixed ``(height, width)``, multiples of ``model.input_multiple``; None: the training size.
        **kwargs: other Ultralytics export arguments (``batch``, ``simplify``, ``opset``, ``device``, ...).

    Example:
        >>> f = export_recurrent("runs/detect/train/weights/best.pt", format="onnx")
    """
    from ultralytics.engine.model import Model

    if isinstance(model_or_path, (str, Path)):
        if Path(model_or_path).suffix == ".pt":
            from ultralytics.nn.tasks import load_checkpoint

            model_or_path = load_checkpoint(model_or_path)[0]
        else:
            from yolo_etram.nn.detection_model import EventDetectionModel

            model_or_path = EventDetectionModel(model_or_path, verbose=False)
    net = model_or_path.model if isinstance(model_or_path, Model) else model_or_path
    if not isinstance(net, nn.Module):
        raise TypeError(f"export_recurrent needs a PyTorch model, got {type(net).__name__}")
    overrides = dict(model_or_path.overrides) if isinstance(model_or_path, Model) else {}
    # Model.export's precedence: the model's overrides, then method defaults, then the caller's arguments.
    args = {
        **overrides,
        "batch": 1,
        "data": None,
        "device": None,
        "verbose": False,
        **kwargs,
        "format": format,
        "imgsz": trained_input_size(net) if imgsz is None else list(imgsz) if not isinstance(imgsz, int) else imgsz,
        "mode": "export",
    }
    callbacks = model_or_path.callbacks if isinstance(model_or_path, Model) else None
    return Path(EventExporter(cfg=DEFAULT_CFG, overrides=args, _callbacks=callbacks)(net))
