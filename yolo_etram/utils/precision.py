"""Reduced precision on CPU: bf16 where the CPU computes it natively (AVX-512 BF16 or AMX), refused in one line where
it does not (emulated bf16 is slower than float32 and would only lose accuracy).

- Training: ``amp=True`` (Ultralytics' default) on such a CPU runs the forward pass under
  ``torch.autocast("cpu", dtype=torch.bfloat16)`` with float32 master weights and no gradient scaler (bf16 has
  float32's exponent range); on other CPUs it trains in float32 and says so in one line.
- Inference: ``quantize=16`` (``half=True``) runs a PyTorch model under the same autocast; an OpenVINO export made with
  ``half=True`` compiles with OpenVINO's reduced CPU inference precision (:func:`openvino_half_precision`).

The recurrent state (LSTM and temporal-attention memory) stays float32 under autocast either way.

Example:
    >>> from yolo_etram.utils.precision import cpu_bf16, cpu_autocast
    >>> if cpu_bf16():
    ...     with cpu_autocast():
    ...         y = model(x)  # bf16 matmuls and convolutions, float32 state
"""

from __future__ import annotations

import contextlib
import functools

import torch

from yolo_etram.utils.errors import UnsupportedOptionError

BF16_HARDWARE = "AVX-512 BF16 or AMX"


@functools.cache
def cpu_bf16() -> bool:
    """True when this CPU computes bf16 natively (oneDNN's check: AVX-512 BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch built without oneDNN
        return False


def cpu_name() -> str:
    """This CPU's model and torch's view of its vector instructions, e.g. ``AMD EPYC (AVX512)``."""
    from ultralytics.utils.torch_utils import get_cpu_info

    return f"{get_cpu_info()} ({torch.backends.cpu.get_cpu_capability()})"


def require_cpu_bf16(what: str) -> None:
    """Refuse ``what`` in one line unless this CPU computes bf16 natively."""
    if not cpu_bf16():
        raise UnsupportedOptionError(
            f"{what} needs a CPU with bf16 instructions ({BF16_HARDWARE}); this one, {cpu_name()}, has none, and "
            "emulated bf16 is slower than float32: use float32 (quantize=32 / amp=False) or an INT8 OpenVINO export"
        )


def cpu_autocast(enabled: bool = True) -> contextlib.AbstractContextManager:
    """bf16 autocast on CPU (a no-op context when ``enabled`` is False)."""
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled)


def float_outputs(out):
    """``out`` (a tensor, or lists, tuples and dicts of them) with every bf16 or fp16 tensor cast to float32: NMS,
    metrics and the predictor's checks run in float32."""
    if isinstance(out, torch.Tensor):
        return out.float() if out.dtype in (torch.bfloat16, torch.float16) else out
    if isinstance(out, dict):
        return {k: float_outputs(v) for k, v in out.items()}
    if isinstance(out, (list, tuple)):
        return type(out)(float_outputs(v) for v in out)
    return out


def openvino_half_precision(capabilities) -> str:
    """OpenVINO's reduced CPU inference precision on a CPU whose ``OPTIMIZATION_CAPABILITIES`` are ``capabilities``:
    ``bf16``, else ``f16`` (AVX-512 FP16 / AMX-FP16 CPUs), else a one-line refusal."""
    caps = {str(c).upper() for c in capabilities}
    if "BF16" in caps:
        return "bf16"
    if "FP16" in caps:
        return "f16"
    raise UnsupportedOptionError(
        f"this OpenVINO export was made with half=True (bf16 or f16 inference), but this CPU ({cpu_name()}) computes "
        f"neither ({BF16_HARDWARE}, or AVX-512 FP16); re-export it without half=True (float32) or with quantize=8"
    )
