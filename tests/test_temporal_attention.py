"""Temporal attention over the recurrent features: the math by hand, the memory as state, the YAML switch, exports.

The state protocol itself (resets, implicit resets, detaching, copies, autocast) is tested with the LSTM's tests in
``test_recurrent_backbone.py``, parametrised over a backbone with temporal attention.
"""

import contextlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from recurrent import TemporalAttention, TemporalAttentionCfg, rvt_tiny
from yolo_etram.nn.detection_model import EventDetectionModel

H, W = 64, 160  # partition (2, 5)


def attention(dim=8, memory=3, dim_head=4, seed=0) -> TemporalAttention:
    torch.manual_seed(seed)
    m = TemporalAttention(dim, memory, dim_head, layer_scale_init=0.0)
    with torch.no_grad():
        m.gamma.uniform_(0.5, 1.5)
        m.norm.weight.uniform_(0.5, 1.5)
        m.norm.bias.normal_(0, 0.1)
    return m.eval()


def by_hand(m: TemporalAttention, x: torch.Tensor, past: list[torch.Tensor], b: int, i: int, j: int) -> torch.Tensor:
    """The output at pixel (i, j) of slot b, one head at a time, from the formula in the module docstring."""
    tokens = [x[b, :, i, j]] + [p[b, :, i, j] for p in past]  # lag 0 (now), 1, ..., len(past)
    normed = [F.layer_norm(t, (m.dim,), m.norm.weight, m.norm.bias) for t in tokens]
    wk, wv = m.kv.weight[: m.dim], m.kv.weight[m.dim :]
    bk, bv = m.kv.bias[: m.dim], m.kv.bias[m.dim :]
    q = m.q.weight @ normed[0] + m.q.bias
    ks = [wk @ n + bk + m.lag[lag] for lag, n in enumerate(normed)]
    vs = [wv @ n + bv for n in normed]
    d = m.dim // m.num_heads
    heads = []
    for h in range(m.num_heads):
        sl = slice(h * d, (h + 1) * d)
        logits = torch.stack([q[sl] @ k[sl] for k in ks]) / d**0.5
        heads.append(sum(w * v[sl] for w, v in zip(logits.softmax(0), vs)))
    return x[b, :, i, j] + m.gamma * (m.proj.weight @ torch.cat(heads) + m.proj.bias)


@torch.no_grad()
def test_attention_equals_the_formula_by_hand_as_the_memory_fills():
    """Window t attends to itself and the t windows before it (at most K): empty slots count for nothing."""
    m = attention(memory=3)
    x = torch.randn(2, 6, 8, 4, 5)
    out, (mem, valid) = m.forward_sequence(x)
    for t in range(6):
        past = [x[:, t - lag] for lag in range(1, min(t, 3) + 1)]
        for b, i, j in ((0, 0, 0), (1, 3, 4), (1, 2, 1)):
            torch.testing.assert_close(out[b, t, :, i, j], by_hand(m, x[:, t], past, b, i, j), atol=1e-5, rtol=0)
    # the memory after the clip: the last 3 windows, newest first, all valid
    torch.testing.assert_close(mem, torch.cat([x[:, 5], x[:, 4], x[:, 3]], 1))
    assert mem.shape == (2, 24, 4, 5) and valid.shape == (2, 3, 1, 1) and bool((valid == 1).all())


@torch.no_grad()
def test_the_first_window_of_a_sequence_sees_only_itself():
    m = attention()
    x = torch.randn(1, 1, 8, 3, 3)
    garbage = (torch.randn(1, 24, 3, 3) * 100, torch.zeros(1, 3, 1, 1))  # invalid slots, whatever they hold
    a = m.forward_sequence(x, garbage)[0]
    b = m.forward_sequence(x, None)[0]
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    assert m.forward_sequence(x, (garbage[0], torch.ones(1, 3, 1, 1)))[0].sub(b).abs().max() > 1e-2


@torch.no_grad()
def test_layer_scale_zero_is_exactly_the_backbone_without_it():
    """At initialisation (gamma = 0) a backbone with temporal attention computes RVT's features bit for bit, so an
    imported RVT checkpoint predicts unchanged until training moves gamma."""
    torch.manual_seed(0)
    ta = rvt_tiny(partition_size=(2, 5), temporal_attention={"memory": 2}).eval()
    plain = rvt_tiny(partition_size=(2, 5)).eval()
    missing = plain.load_state_dict(ta.state_dict(), strict=False).unexpected_keys
    assert missing and all(".temporal_attention." in k for k in missing)
    x = torch.randint(0, 3, (2, 4, 20, H, W)).float()
    for a, b in zip(ta(x), plain(x)):
        assert torch.equal(a, b)
    for i, (h, c) in enumerate(plain.states):  # the LSTM pairs of both agree; ta has 4 memory pairs more
        assert torch.equal(ta.states[2 * i][0], h) and torch.equal(ta.states[2 * i][1], c)
    assert len(ta.states) == 8 and ta.num_states == 8


def test_config_errors_are_one_line():
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['window'\]"):
        TemporalAttentionCfg.parse({"window": 3})
    with pytest.raises(ValueError, match="memory must be >= 1"):
        TemporalAttentionCfg.parse({"memory": 0})
    with pytest.raises(ValueError, match=r"stages \[5\] out of range; the backbone has stages 1-4"):
        rvt_tiny(temporal_attention={"stages": [1, 5]})
    with pytest.raises(ValueError, match="does not divide into heads"):
        TemporalAttention(48, dim_head=32)


def test_yaml_switch_builds_the_attention_and_its_states():
    """rvt-t-ta.yaml: the top-level ``temporal_attention`` key reaches the backbone; its parameters are the
    attention's only; the model YAML (which checkpoints carry) rebuilds the same model."""
    ta = EventDetectionModel("rvt-t-ta.yaml", nc=3, verbose=False)
    plain = EventDetectionModel("rvt-t.yaml", nc=3, verbose=False)
    attn = [m for m in ta.modules() if isinstance(m, TemporalAttention)]
    assert [m.dim for m in attn] == ta.backbone.out_channels and all(m.memory == 4 for m in attn)
    extra = sum(p.numel() for p in ta.parameters()) - sum(p.numel() for p in plain.parameters())
    assert extra == sum(p.numel() for m in attn for p in m.parameters()) > 0
    shapes = ta.backbone.state_shapes(1, 384, 640)
    assert shapes[1] == ((1, 4 * 32, 96, 160), (1, 4, 1, 1)) and len(shapes) == 8
    rebuilt = EventDetectionModel(ta.yaml, nc=3, verbose=False)
    assert sum(isinstance(m, TemporalAttention) for m in rebuilt.modules()) == 4
    with pytest.raises(ValueError, match="unknown key"):
        EventDetectionModel({**plain.yaml, "temporal_attention": {"memroy": 4}}, verbose=False)


def test_training_step_reaches_the_attention_weights():
    """gamma starts at 0: the first backward moves gamma only; with gamma non-zero every attention weight learns."""
    torch.manual_seed(0)
    model = rvt_tiny(partition_size=(2, 5), temporal_attention={"memory": 2, "stages": [2]}).train()
    x = torch.randint(0, 3, (1, 3, 20, H, W)).float()
    attn = model.stages[1].temporal_attention
    sum(f.square().mean() for f in model(x)).backward()
    assert attn.gamma.grad.abs().sum() > 0 and attn.q.weight.grad.abs().sum() == 0
    model.zero_grad()
    with torch.no_grad():
        attn.gamma.fill_(0.1)
    model.reset()
    sum(f.square().mean() for f in model(x)).backward()
    for name, p in attn.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.slow
def test_exports_carry_the_memory_and_predict_like_the_pt(tmp_path):
    """rvt-t-ta through ONNX, TorchScript and OpenVINO: over 8 windows (twice the memory) with the states fed back,
    each export gives the PyTorch model's outputs, and a reset slot starts again from an empty memory."""
    from yolo_etram import EventYOLO
    from yolo_etram.export import export_recurrent
    from yolo_etram.nn.exported import StatefulOnnxModel, StatefulOpenVINOModel, StatefulTorchScriptModel

    torch.manual_seed(0)
    model = EventYOLO("rvt-t-ta.yaml")
    net = model.model
    net.backbone.set_partition_size((3, 4))
    net.yaml["event"] = {"downsample": 1, "nbins": 10, "window_ms": 50, "channels": 20, "partition": [3, 4]}
    with torch.no_grad():  # a trained-looking attention: gamma 0 would hide it from the comparison
        for m in net.modules():
            if isinstance(m, TemporalAttention):
                m.gamma.uniform_(0.5, 1.0)
    net.eval()
    g = torch.Generator().manual_seed(1)
    frames = [(torch.rand(1, 20, 96, 128, generator=g) < 0.1).float() * 5 for _ in range(8)]
    net.reset_states()
    with torch.no_grad():
        ref = [net(x)[0].numpy() for x in frames]
        net.reset_states()
        restarted = net(frames[5])[0].numpy()
    net.reset_states()
    with contextlib.chdir(tmp_path):
        files = {kind: tmp_path / export_recurrent(model, kind, imgsz=(96, 128)) for kind in ("onnx", "torchscript")}
        files["openvino"] = tmp_path / export_recurrent(model, "openvino", imgsz=(96, 128))
    runners = {
        "onnx": (StatefulOnnxModel(files["onnx"]), 1e-4),
        "torchscript": (StatefulTorchScriptModel(files["torchscript"]), 1e-4),
        "openvino": (StatefulOpenVINOModel(files["openvino"]), 2e-3),
    }
    for kind, (runner, tol) in runners.items():
        out = [np.asarray(runner(x if kind == "torchscript" else x.numpy())) for x in frames]
        for a, b in zip(out, ref):
            np.testing.assert_allclose(a, b, atol=tol, rtol=tol, err_msg=kind)
        runner.reset()
        again = runner(frames[5] if kind == "torchscript" else frames[5].numpy())
        np.testing.assert_allclose(np.asarray(again), restarted, atol=tol, rtol=tol, err_msg=kind)
