"""``quantize=16`` (``half=True``) for ``yolo val`` and ``yolo predict`` of event models.

Stock Ultralytics drops half precision for PyTorch models on CPU without a word. Ours:

- a PyTorch model on CPU runs under bf16 autocast (:mod:`yolo_etram.utils.precision`), refused in one line on a CPU
  without bf16; the outputs come back as float32 and the recurrent state stays float32;
- on CUDA, Ultralytics' own fp16 path runs unchanged;
- a stateful export (ONNX, TorchScript, OpenVINO) computes at the precision it was exported with
  (``export format=openvino half=True`` for bf16): ``quantize=16`` at run time is accepted for such a half export
  (Ultralytics' export summary suggests it) and refused in one line for the others.

Example:
    >>> backend = AutoBackend("best.pt", device=torch.device("cpu"))
    >>> apply_inference_precision(backend, quantize=16, name="best.pt")  # "bf16": forwards now under autocast
"""

from __future__ import annotations

from ultralytics.utils import LOGGER

from yolo_etram.integrations.ultralytics import wrap_backend_calls
from yolo_etram.nn.detection_model import find_event_model
from yolo_etram.utils.errors import UnsupportedOptionError
from yolo_etram.utils.precision import cpu_autocast, float_outputs, require_cpu_bf16


def apply_inference_precision(autobackend, quantize, name) -> str:
    """Honour ``quantize`` for an ``AutoBackend`` of an event model: returns the precision it computes in (``fp32``,
    ``bf16``, ``fp16``, or ``half`` for an OpenVINO export made with ``half=True``), or raises a one-line error for a
    precision it cannot honour."""
    if str(quantize) not in ("16", "fp16"):
        return "fp32"
    native = find_event_model(autobackend)
    if native is None:
        metadata = getattr(autobackend, "metadata", None) or {}
        if metadata.get("inference_precision") == "half":  # the export computes in bf16 (or f16) anyway
            autobackend.backend.fp16 = False  # our runner feeds float32 windows (the graph's input type)
            return "half"
        fmt = getattr(autobackend, "format", "exported")
        raise UnsupportedOptionError(
            f"quantize=16 (half=True): {name} is a {fmt} export, which computes at the precision it was exported with; "
            "export format=openvino half=True for bf16 inference, or run the .pt with quantize=16"
        )
    if autobackend.device.type != "cpu":
        return "fp16"  # Ultralytics' own half-precision model on CUDA
    require_cpu_bf16(f"quantize=16 (half=True) on CPU for {name}")

    def forward(stock, im, *args, **kwargs):
        with cpu_autocast():
            out = stock(im.float(), *args, **kwargs)
        return float_outputs(out)

    wrap_backend_calls(autobackend, forward=forward)
    LOGGER.info(f"{name}: bf16 autocast on CPU (float32 outputs and recurrent state)")
    return "bf16"
