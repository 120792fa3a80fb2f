"""Reduced precision on CPU: bf16 autocast for training (``amp``) and inference (``quantize=16``), the float32 head
and loss under it, OpenVINO's half precision for ``half=True`` exports, and one-line refusals where the CPU has no
bf16. The AP change on trained weights is tested in ``test_exported_val.py``; latency and state drift are measured
by ``benchmarks/bench_inference.py`` and ``benchmarks/precision.py``."""

import pickle
from types import SimpleNamespace

import pytest
import torch
from test_model import counts, small_model
from ultralytics.nn.autobackend import AutoBackend

import yolo_etram.utils.precision as precision
from yolo_etram.integrations.ultralytics import cpu_capable_autocast, openvino_cpu_config
from yolo_etram.nn.inference_precision import apply_inference_precision
from yolo_etram.train import EventTrainer
from yolo_etram.utils.errors import UnsupportedOptionError
from yolo_etram.utils.precision import cpu_autocast, float_outputs, openvino_half_precision

HW = (192, 320)


@pytest.fixture
def no_bf16(monkeypatch):
    """A CPU without bf16 instructions (an AVX2 machine), whatever this one has."""
    monkeypatch.setattr(precision, "cpu_bf16", lambda: False)


def test_head_decodes_in_float32_under_autocast():
    """Under bf16 autocast the backbone and neck compute in bf16 but the head runs in float32: its anchor grid is
    exact (bf16 would round anchor 159.5 of a 640-pixel row to 160) and the boxes stay within bf16's rounding of the
    features, not of the coordinates. The swap leaves nothing on the model: it still pickles."""
    m = small_model().eval()
    x = counts(1, 1, hw=HW)[0]
    with torch.no_grad():
        ref = m(x)[0]
        m.reset_states()
        with cpu_autocast():
            out = m(x)[0]
    head = m.model[-1]
    assert out.dtype == torch.float32 and head.anchors.dtype == torch.float32
    assert "forward" not in vars(head)
    pickle.dumps(m)
    boxes, ref_boxes = out[0, :4], ref[0, :4]
    assert (boxes - ref_boxes).abs().max() < 0.05 * HW[1]  # bf16 features: boxes agree to a few pixels
    assert (boxes - ref_boxes).abs().max() > 0  # and bf16 did run: the features differ


def test_loss_is_float32_under_autocast_and_learns():
    m = small_model().train()
    batch = {
        "img": counts(2, 2, hw=HW),
        "batch_idx": torch.tensor([0.0, 3.0]),
        "cls": torch.tensor([[0.0], [2.0]]),
        "bboxes": torch.tensor([[0.5, 0.5, 0.2, 0.3], [0.3, 0.6, 0.1, 0.1]]),
        "labeled": torch.tensor([True, False, False, True]),
    }
    with cpu_autocast():
        loss, items = m.loss(batch)
    assert loss.dtype == torch.float32 and torch.isfinite(loss).all()
    loss.sum().backward()
    grads = [p.grad for p in m.parameters() if p.grad is not None]
    assert grads and all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)
    assert all(h.dtype == torch.float32 for h, c in m.backbone.states)  # the state too


def test_float_outputs_casts_nested_half_tensors_only():
    out = float_outputs({"a": [torch.zeros(2, dtype=torch.bfloat16)], "b": (torch.zeros(1, dtype=torch.int64),)})
    assert out["a"][0].dtype == torch.float32 and out["b"][0].dtype == torch.int64 and isinstance(out["b"], tuple)


def test_cpu_capable_autocast_runs_bf16_on_cpu_and_defers_otherwise():
    calls = []
    autocast = cpu_capable_autocast(lambda enabled, device="cuda": calls.append((enabled, device)) or "stock")
    with autocast(torch.bfloat16, device="cpu"):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    assert autocast(False, device="cpu") == "stock" and calls == [(False, "cpu")]


def train_args(amp) -> SimpleNamespace:
    return SimpleNamespace(device=torch.device("cpu"), args=SimpleNamespace(amp=amp))


@pytest.mark.parametrize("amp", [True, "fp16", "bf16"])
def test_amp_on_a_bf16_cpu_trains_under_bf16_autocast(monkeypatch, amp):
    monkeypatch.setattr("yolo_etram.train.cpu_bf16", lambda: True)
    trainer = train_args(amp)
    EventTrainer._set_cpu_amp(trainer)
    assert trainer.args.amp == "bf16"  # Ultralytics then skips its fp16 check and gradient scaler


def test_amp_on_a_cpu_without_bf16_trains_in_float32_and_bf16_is_refused(monkeypatch, no_bf16):
    monkeypatch.setattr("yolo_etram.train.cpu_bf16", lambda: False)
    trainer = train_args(True)  # the default: a notice, float32
    EventTrainer._set_cpu_amp(trainer)
    assert trainer.args.amp is False
    for off in (False, "fp32"):
        trainer = train_args(off)
        EventTrainer._set_cpu_amp(trainer)
        assert trainer.args.amp == off
    with pytest.raises(UnsupportedOptionError, match=r"amp=bf16 needs a CPU with bf16 instructions \(AVX-512 BF16"):
        EventTrainer._set_cpu_amp(train_args("bf16"))


def test_quantize16_runs_a_pytorch_model_under_bf16_autocast_or_refuses(monkeypatch):
    m = small_model().eval()
    backend = AutoBackend(m, device=torch.device("cpu"), verbose=False)
    assert apply_inference_precision(backend, None, "m.pt") == "fp32"
    assert backend.forward.__class__.__name__ == "method"  # untouched
    monkeypatch.setattr(precision, "cpu_bf16", lambda: False)
    with pytest.raises(UnsupportedOptionError, match=r"quantize=16 \(half=True\) on CPU for m.pt needs a CPU with"):
        apply_inference_precision(backend, 16, "m.pt")
    monkeypatch.setattr(precision, "cpu_bf16", lambda: True)
    assert apply_inference_precision(backend, "fp16", "m.pt") == "bf16"
    seen = []
    for layer in (m.model[-2], m.model[-1].cv2[0]):  # the neck's last row, and a convolution of the head
        layer.register_forward_hook(lambda mod, i, o: seen.append(o.dtype))
    with torch.no_grad():
        out = backend(counts(1, 1, hw=HW)[0])
    out = out[0] if isinstance(out, (list, tuple)) else out
    assert out.dtype == torch.float32 and seen == [torch.bfloat16, torch.float32]  # bf16 neck, float32 head
    assert m.backbone.states[0][0].dtype == torch.float32


def test_quantize16_on_an_export_needs_a_half_export():
    """An export computes at the precision it was exported with: quantize=16 is accepted for a half=True OpenVINO
    export and refused in one line for the others."""
    half = SimpleNamespace(metadata={"inference_precision": "half"}, backend=SimpleNamespace(fp16=True), model=None)
    assert apply_inference_precision(half, 16, "m_openvino_model") == "half" and half.backend.fp16 is False
    other = SimpleNamespace(metadata={}, format="onnx", backend=None, model=None)
    with pytest.raises(UnsupportedOptionError, match=r"m.onnx is a onnx export, which computes at the precision"):
        apply_inference_precision(other, 16, "m.onnx")


def test_openvino_half_precision_follows_the_cpu():
    assert openvino_half_precision(["FP32", "BF16", "INT8"]) == "bf16"
    assert openvino_half_precision(["FP32", "FP16", "INT8"]) == "f16"
    with pytest.raises(UnsupportedOptionError, match="made with half=True .* re-export it without half=True"):
        openvino_half_precision(["FP32", "INT8"])
    core = SimpleNamespace(get_property=lambda device, key: ["FP32", "BF16"])
    assert openvino_cpu_config(core, {"inference_precision": "half"})["INFERENCE_PRECISION_HINT"] == "bf16"
    assert openvino_cpu_config(core, {})["INFERENCE_PRECISION_HINT"] == "f32"
