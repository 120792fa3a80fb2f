"""The runtime of stateful exports: the graph contract, the state I/O specification, and the runners that step an
exported recurrent model one frame at a time with its states fed back.

An exported recurrent model is a pure function of one frame and the previous states::

    (images, h_in_0, c_in_0, ..., h_in_3, c_in_3) -> (output0, h_out_0, c_out_0, ..., h_out_3, c_out_3)

``output0`` is the stock Detect output ``(B, 4 + nc, anchors)`` (boxes ``cx, cy, w, h`` in input pixels, class scores
after sigmoid) and the new states come in the same order as the state inputs, so a runner feeds ``outputs[1:]`` back
as ``inputs[1:]``. Zeros are the state at the start of a sequence. The state names and shapes are in the metadata
(``recurrent_states``: a JSON list of ``[input_name, output_name, shape]``) beside Ultralytics' own (stride, names,
imgsz, channels, ...), and the event settings the model was trained with (``event``: JSON) when it knows them.
:class:`StatefulExportModel` is what the exporter traces (``yolo_etram.export``).

Usage:
    >>> model = StatefulOnnxModel("best.onnx")
    >>> for frame in frames:  # float32 (1, 20, 384, 640) event histograms of one recording, in time order
    ...     pred = model(frame)  # (1, 4 + nc, anchors), states carried to the next call
    >>> model.reset()  # before the next recording
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from ultralytics.utils import LOGGER

from recurrent import pair_shapes, stateful_layers
from yolo_etram.integrations.ultralytics import openvino_cpu_config, wrap_backend_calls
from yolo_etram.utils.errors import EventDataError, UnsupportedOptionError

__all__ = [
    "StateSpec",
    "state_specs",
    "read_state_specs",
    "json_value",
    "is_event_export",
    "StatefulExportModel",
    "traced_graph",
    "StatefulRunner",
    "StatefulOnnxModel",
    "StatefulTorchScriptModel",
    "StatefulOpenVINOModel",
    "install_state_runner",
    "ExportedClipModel",
]

ArrayLike = np.ndarray | torch.Tensor


@dataclass(frozen=True)
class StateSpec:
    """One recurrent state tensor of an exported graph: its input name, output name and shape."""

    input: str
    output: str
    shape: tuple[int, ...]


def state_specs(model: nn.Module, batch: int, height: int, width: int) -> list[StateSpec]:
    """State I/O of ``model`` for a ``batch x height x width`` input: ``h_in_i, c_in_i`` per stage, all stateful layers.

    Each stateful layer must provide ``state_shapes(batch, height, width)``: per ``(h, c)`` pair one shape shared by h
    and c, or a pair of shapes (see :func:`recurrent.state.pair_shapes`).
    """
    specs, i = [], 0
    for layer in stateful_layers(model):
        for shape in layer.state_shapes(batch, height, width):
            h_shape, c_shape = pair_shapes(shape)
            specs += [StateSpec(f"h_in_{i}", f"h_out_{i}", h_shape), StateSpec(f"c_in_{i}", f"c_out_{i}", c_shape)]
            i += 1
    return specs


def json_value(value: Any) -> Any:
    """A metadata value that may still be JSON text (ONNX metadata and TorchScript's ``config.txt`` hold strings)."""
    return json.loads(value) if isinstance(value, str) else value


def read_state_specs(metadata: dict | None) -> list[StateSpec]:
    """The state I/O recorded in an export's metadata (empty for a stateless export)."""
    value = json_value((metadata or {}).get("recurrent_states"))
    return [StateSpec(i, o, tuple(int(d) for d in s)) for i, o, s in value or []]


def is_event_export(path: str | Path) -> bool:
    """Whether ``path`` is an exported model (``.onnx``, ``.torchscript``, ``*_openvino_model/``) of ours: its
    metadata holds event settings or recurrent states."""
    from ultralytics.nn.backends.base import BaseBackend

    path = Path(path)
    openvino_dir = path.is_dir() and path.name.endswith("openvino_model")
    if not openvino_dir and (path.suffix not in {".onnx", ".torchscript"} or not path.is_file()):
        return False
    metadata = BaseBackend.read_metadata(path) or {}
    return "event" in metadata or bool(read_state_specs(metadata))


class StatefulExportModel(nn.Module):
    """Functional view of a recurrent model for tracing: ``(images, *states) -> (*outputs, *new_states)``.

    The states are ``h, c`` per stage of every stateful layer, in :func:`state_specs` order. They are handed to the
    layers through the state protocol (``set_states``) and read back after the forward, so the graph takes them as
    inputs and nothing stored in the layers can be traced as a constant.

    Example:
        >>> wrapper = StatefulExportModel(model.eval())
        >>> out, *new_states = wrapper(images, *[torch.zeros(s.shape) for s in state_specs(model, 1, 384, 640)])
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.layers = stateful_layers(model)
        if not self.layers:
            raise TypeError(f"{type(model).__name__} has no recurrent layers; export it with the stock Exporter")

    def forward(self, images: torch.Tensor, *states: torch.Tensor) -> tuple[torch.Tensor, ...]:
        pairs = iter(zip(states[0::2], states[1::2]))
        batch, _, height, width = images.shape
        counts = [len(layer.state_shapes(batch, height, width)) for layer in self.layers]
        if 2 * sum(counts) != len(states):
            raise UnsupportedOptionError(
                f"StatefulExportModel: expected {2 * sum(counts)} state tensors, got {len(states)}"
            )
        try:
            for layer, n in zip(self.layers, counts):
                layer.set_states([next(pairs) for _ in range(n)])
            y = self.model(images)
            new_states = []
            for layer, n in zip(self.layers, counts):
                if layer.states is None or len(layer.states) != n:  # the layer dropped the states we gave it
                    raise RuntimeError(f"{type(layer).__name__} dropped the given states (shape or device mismatch)")
                new_states += [t for hc in layer.states for t in hc]
        finally:
            for layer in self.layers:
                layer.reset()
        return (*(y if isinstance(y, (list, tuple)) else [y]), *new_states)


def traced_graph(model: nn.Module, height: int, width: int) -> torch.jit.ScriptModule:
    """A copy of ``model`` traced as a graph of one window (states in, states out, the export's head output), for
    viewers such as TensorBoard's ``add_graph``; ``model`` itself is untouched."""
    import copy

    net = copy.deepcopy(model).eval()
    for m in net.modules():
        if hasattr(m, "export"):  # Detect heads: the single decoded output an export has
            m.export, m.format = True, "torchscript"
    p = next(net.parameters())
    images = torch.zeros((1, net.yaml["channels"], height, width), device=p.device, dtype=p.dtype)
    states = [torch.zeros(s.shape, device=p.device, dtype=p.dtype) for s in state_specs(net, 1, height, width)]
    with torch.no_grad():
        return torch.jit.trace(StatefulExportModel(net), (images, *states), strict=False, check_trace=False)


class StatefulRunner:
    """Steps an exported recurrent model one frame at a time and feeds its new states back into the next call.

    States start at zero and are reset with :meth:`reset` (call it at every sequence start). ``__call__`` takes a
    float32 ``(B, C, H, W)`` numpy array or torch tensor (``B`` the export batch, H and W the export ``imgsz``) and
    returns the raw ``output0`` (``(B, 4 + nc, anchors)``, like the PyTorch model's eval output) of the same kind.
    """

    def __init__(self, specs: Sequence[StateSpec], metadata: dict | None = None):
        if not specs:
            raise UnsupportedOptionError(
                f"{type(self).__name__}: the model's metadata holds no 'recurrent_states' (not a stateful "
                "export of yolo_etram)"
            )
        self.specs = list(specs)
        self.metadata = dict(metadata or {})
        self.states: list | None = None

    @property
    def batch(self) -> int:
        return self.specs[0].shape[0]

    def reset(self, slots: Sequence[bool] | np.ndarray | None = None) -> None:
        """Zero the states: the next call starts a new sequence; with ``slots`` (one flag per batch row), only in the
        flagged rows (the others go on with their sequences)."""
        if slots is None or self.states is None or bool(np.all(slots)):
            self.states = None
            return
        rows = [i for i, first in enumerate(slots) if first]
        for state in self.states:
            state[rows] = 0

    def __call__(self, images: ArrayLike) -> ArrayLike:
        if images.shape[0] != self.batch:
            raise UnsupportedOptionError(
                f"{type(self).__name__}: the export steps {self.batch} stream(s) at a time, got a batch "
                f"of {images.shape[0]}; consecutive frames must be separate calls"
            )
        if self.states is None:
            self.states = self._zeros()
        output, *self.states = self._run(images, self.states)
        return output

    def _zeros(self) -> list:
        raise NotImplementedError

    def _run(self, images: ArrayLike, states: list) -> list:
        raise NotImplementedError


class NumpyStatefulRunner(StatefulRunner):
    """A :class:`StatefulRunner` whose engine computes on numpy arrays (ONNX Runtime, OpenVINO): torch images in give
    a torch output back, on their device; the states stay numpy."""

    def _run(self, images: ArrayLike, states: list[np.ndarray]) -> list:
        device = images.device if isinstance(images, torch.Tensor) else None
        x = images.detach().cpu().numpy() if device is not None else np.asarray(images)
        output, *new_states = self._run_numpy(x, states)
        return [torch.from_numpy(output).to(device) if device is not None else output, *new_states]

    def _run_numpy(self, images: np.ndarray, states: list[np.ndarray]) -> list[np.ndarray]:
        raise NotImplementedError


_ORT_FLOATS = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}


class StatefulOnnxModel(NumpyStatefulRunner):
    """ONNX Runtime runner of a stateful export (see :class:`StatefulRunner`).

    Args:
        model: the ``.onnx`` file or an ``onnxruntime.InferenceSession`` of it.
        providers: ONNX Runtime execution providers when ``model`` is a path (default: CPU).

    Example:
        >>> runner = StatefulOnnxModel("best.onnx")
        >>> pred = runner(np.zeros((1, 20, 384, 640), np.float32))  # numpy in, numpy out
    """

    def __init__(self, model: str | Path | Any, providers: Sequence[str] | None = None):
        import onnxruntime as ort

        session = (
            model
            if hasattr(model, "run")
            else ort.InferenceSession(str(model), providers=list(providers or ["CPUExecutionProvider"]))
        )
        metadata = dict(session.get_modelmeta().custom_metadata_map)
        super().__init__(read_state_specs(metadata), metadata)
        self.session = session
        inputs = {i.name: i for i in session.get_inputs()}
        missing = [s.input for s in self.specs if s.input not in inputs]
        if missing:
            raise UnsupportedOptionError(
                f"StatefulOnnxModel: the graph lacks the state inputs {missing} named in its metadata"
            )
        self.image_name = next(name for name in inputs if name not in {s.input for s in self.specs})
        self.image_dtype = _ORT_FLOATS.get(inputs[self.image_name].type, np.float32)
        self.state_dtypes = [_ORT_FLOATS.get(inputs[s.input].type, np.float32) for s in self.specs]
        self.output_names = [session.get_outputs()[0].name, *(s.output for s in self.specs)]

    def _zeros(self) -> list[np.ndarray]:
        return [np.zeros(s.shape, d) for s, d in zip(self.specs, self.state_dtypes)]

    def _run_numpy(self, images: np.ndarray, states: list[np.ndarray]) -> list[np.ndarray]:
        feed = {self.image_name: images.astype(self.image_dtype, copy=False)}
        feed.update({s.input: v for s, v in zip(self.specs, states)})
        return self.session.run(self.output_names, feed)


class StatefulTorchScriptModel(StatefulRunner):
    """TorchScript runner of a stateful export (see :class:`StatefulRunner`).

    Args:
        model: the ``.torchscript`` file or the loaded ``torch.jit.ScriptModule``.
        metadata: the export's metadata when ``model`` is already loaded (read from the file otherwise).
        device: where to run a loaded file (default: CPU).

    Example:
        >>> runner = StatefulTorchScriptModel("best.torchscript")
        >>> pred = runner(torch.zeros(1, 20, 384, 640))  # torch in, torch out
    """

    def __init__(
        self,
        model: str | Path | torch.jit.ScriptModule,
        metadata: dict | None = None,
        device: str | torch.device = "cpu",
    ):
        if isinstance(model, (str, Path)):
            extra = {"config.txt": ""}
            model = torch.jit.load(str(model), map_location=device, _extra_files=extra)
            metadata = json.loads(extra["config.txt"] or "{}")
        super().__init__(read_state_specs(metadata), metadata)
        self.model = model.eval()

    def _device(self) -> torch.device:
        return next(iter(self.model.parameters()), torch.empty(0)).device

    def _zeros(self) -> list[torch.Tensor]:
        return [torch.zeros(s.shape, device=self._device()) for s in self.specs]

    @torch.inference_mode()
    def _run(self, images: ArrayLike, states: list[torch.Tensor]) -> list:
        numpy_in = not isinstance(images, torch.Tensor)
        x = torch.from_numpy(np.asarray(images, np.float32)) if numpy_in else images
        output, *new_states = self.model(x.to(self._device()), *states)
        return [output.cpu().numpy() if numpy_in else output, *new_states]


class StatefulOpenVINOModel(NumpyStatefulRunner):
    """OpenVINO runner of a stateful export (see :class:`StatefulRunner`).

    Args:
        model: the ``*_openvino_model/`` folder (or its ``.xml``), or a compiled ``openvino.CompiledModel``.
        metadata: the export's metadata when ``model`` is compiled already (read from ``metadata.yaml`` otherwise).
        device: OpenVINO device for a folder (default: CPU).

    Example:
        >>> runner = StatefulOpenVINOModel("best_openvino_model")
        >>> pred = runner(np.zeros((1, 20, 384, 640), np.float32))  # numpy in, numpy out
    """

    def __init__(self, model: str | Path | Any, metadata: dict | None = None, device: str = "CPU"):
        if isinstance(model, (str, Path)):
            import openvino as ov
            from ultralytics.nn.backends.base import BaseBackend

            path = Path(model)
            xml = path if path.is_file() else next(path.glob("*.xml"))
            metadata = BaseBackend.read_metadata(xml)
            core = ov.Core()
            model = core.compile_model(str(xml), device, openvino_cpu_config(core, metadata))
        super().__init__(read_state_specs(metadata), metadata)
        self.compiled = model
        self.outputs = [model.output("output0"), *(model.output(s.output) for s in self.specs)]

    def _zeros(self) -> list[np.ndarray]:
        return [np.zeros(s.shape, np.float32) for s in self.specs]

    def _run_numpy(self, images: np.ndarray, states: list[np.ndarray]) -> list[np.ndarray]:
        feed = {"images": images.astype(np.float32, copy=False), **{s.input: v for s, v in zip(self.specs, states)}}
        result = self.compiled(feed)
        return [result[port] for port in self.outputs]


def install_state_runner(autobackend: nn.Module) -> StatefulRunner | None:
    """Make an Ultralytics ``AutoBackend`` step a stateful ONNX/TorchScript/OpenVINO export with its states carried.

    Does nothing (returns None) unless the backend's metadata names recurrent states. Otherwise the backend's
    ``forward`` is replaced, for this instance only, by a runner built on the already loaded session/module; the
    AutoBackend gains ``reset_states()`` (call it at every sequence start), its ``warmup`` leaves zero states behind,
    its ``metadata["event"]`` becomes a dict, and a batch other than the export batch raises instead of being split
    into chunks (which would run them as consecutive time steps).

    Example:
        >>> from ultralytics.nn.autobackend import AutoBackend
        >>> backend = AutoBackend("best.onnx")
        >>> install_state_runner(backend)
        >>> backend.reset_states(); preds = backend(frame)  # frame: (1, 20, 384, 640) float32 tensor
    """
    from ultralytics.nn.backends import ONNXBackend, OpenVINOBackend, TorchScriptBackend

    backend = autobackend.backend
    if not read_state_specs(getattr(backend, "metadata", None)):
        return None
    if isinstance(backend, ONNXBackend) and backend.format == "onnx":
        runner = StatefulOnnxModel(backend.session)
    elif isinstance(backend, TorchScriptBackend):
        runner = StatefulTorchScriptModel(backend.model, backend.metadata)
    elif isinstance(backend, OpenVINOBackend):
        runner = StatefulOpenVINOModel(backend.ov_compiled_model, backend.metadata)
    else:
        raise TypeError(f"{type(backend).__name__}: stateful exports run with ONNX Runtime, TorchScript or OpenVINO")
    if "event" in backend.metadata:
        backend.metadata["event"] = backend.event = json_value(backend.metadata["event"])
    backend.forward = runner
    backend.reset_states = runner.reset
    backend.state_runner = runner

    def stateful_forward(forward, im, *args, **kwargs):
        if im.shape[0] != runner.batch:
            raise UnsupportedOptionError(
                f"stateful export of batch {runner.batch} got a batch of {im.shape[0]}: one stream per "
                "export batch slot (use batch=1 for one recording)"
            )
        return forward(im, *args, **kwargs)

    def stateless_warmup(warmup, *args, **kwargs):
        warmup(*args, **kwargs)
        runner.reset()

    wrap_backend_calls(autobackend, forward=stateful_forward, warmup=stateless_warmup)
    LOGGER.info(f"Stateful runner: {len(runner.specs)} recurrent states fed back between frames")
    return runner


class ExportedClipModel:
    """Validation through an exported model (an Ultralytics ``AutoBackend`` of an ONNX, TorchScript or OpenVINO
    export): its ``forward`` becomes one call per window of a ``(B, T, C, H, W)`` clip, frame outputs in the PyTorch
    model's order (``b * T + t``), states carried by the export's runner (stateless exports: none); inputs are
    zero-padded to the export's fixed size.

    Example:
        >>> clips = ExportedClipModel(autobackend, val_loader)  # autobackend(clip) now steps the clip's windows
        >>> clips.reset_states(batch["is_first"])
    """

    def __init__(self, backend, dataloader):
        self.runner = getattr(backend, "state_runner", None)
        self.input_multiple = tuple(int(v) for v in backend.imgsz)
        stored = tuple(dataloader.dataset.hw)
        if stored[0] > self.input_multiple[0] or stored[1] > self.input_multiple[1]:
            raise EventDataError(
                f"{backend.format} model: exported for {self.input_multiple[0]}x{self.input_multiple[1]} inputs, "
                f"the data's windows are {stored[0]}x{stored[1]}; export again with imgsz={list(stored)} or larger"
            )
        if self.runner is not None and dataloader.batch_size != self.runner.batch:
            raise UnsupportedOptionError(
                f"the export steps {self.runner.batch} streams at once, the validation split has "
                f"{dataloader.batch_size} stream slot(s) (one per sequence at most): export with batch=1"
            )
        wrap_backend_calls(backend, forward=_clip_forward)

    def reset_states(self, is_first: torch.Tensor | None = None) -> None:
        if self.runner is not None:
            self.runner.reset(None if is_first is None else is_first.cpu().numpy())


def _clip_forward(frame_forward, im: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    """A ``(B, T, C, H, W)`` clip through a one-frame ``frame_forward``, frame outputs in ``b * T + t`` order."""
    outs = [frame_forward(im[:, t], *args, **kwargs) for t in range(im.shape[1])]
    outs = [o[0] if isinstance(o, (list, tuple)) else o for o in outs]
    return torch.stack(outs, 1).flatten(0, 1)
