"""The blocks of ``yolo_etram.nn.blocks`` as YAML layers: squeeze-excitation and small-object attention against timm's
own ``SEModule`` and CBAM ``SpatialAttn`` (same weights, same outputs), the deformable convolution against
``F.conv2d`` (zero offsets: a plain convolution at the mask's gain; whole-pixel offsets: the shifted input), the
variant YAMLs (they build, keep rvt-t's strides and rows, and train), and the export formats a layer can be written
in."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from timm.layers.cbam import SpatialAttn
from timm.layers.squeeze_excite import SEModule

from yolo_etram.nn import EventDetectionModel
from yolo_etram.nn.blocks import DeformConv, SmallObjectAttention, SqueezeExcite
from yolo_etram.nn.detection_model import load_model_yaml
from yolo_etram.utils.errors import UnsupportedOptionError


def _randomise(module: torch.nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    for p in module.parameters():
        p.data = torch.randn(p.shape, generator=g) * 0.5
    for name, b in module.named_buffers():
        if name.endswith("running_var"):
            b.copy_(0.5 + torch.rand(b.shape, generator=g))
        elif name.endswith("running_mean"):
            b.copy_(0.2 * torch.randn(b.shape, generator=g))


@pytest.mark.parametrize("channels, rd_ratio", [(32, 1 / 16), (64, 0.25), (20, 1 / 16)])
def test_squeeze_excite_equals_timms_se_module(channels, rd_ratio):
    ours = SqueezeExcite(channels, channels, rd_ratio)
    _randomise(ours)
    ref = SEModule(channels, rd_ratio=rd_ratio)
    ref.load_state_dict(ours.state_dict())  # same names: fc1, fc2 (timm's bn is an Identity)
    x = torch.randn(2, channels, 6, 10)
    torch.testing.assert_close(ours(x), ref(x), atol=0, rtol=0)
    assert ours.fc1.out_channels == ref.fc1.out_channels  # timm's rounding of the hidden width


def test_small_object_attention_equals_timms_cbam_spatial_attention():
    ours = SmallObjectAttention(16, 16, 7).eval()
    _randomise(ours)
    ref = SpatialAttn(7).eval()
    ref.load_state_dict({f"conv.{k}": v for k, v in ours.state_dict().items()})  # ConvNormAct: conv.conv, conv.bn
    x = torch.randn(2, 16, 12, 20)
    y = ours(x)
    torch.testing.assert_close(y, ref(x), atol=1e-6, rtol=1e-6)
    gate = y / x
    torch.testing.assert_close(gate, gate[:, :1].expand_as(gate))  # one gate per pixel, shared by the channels


def test_blocks_refuse_what_they_cannot_honour():
    with pytest.raises(ValueError, match="keeps its channels"):
        SqueezeExcite(32, 64)
    with pytest.raises(ValueError, match="keeps its channels"):
        SmallObjectAttention(32, 16)
    with pytest.raises(ValueError, match="odd"):
        SmallObjectAttention(32, 32, 4)
    with pytest.raises(ValueError, match="odd"):
        DeformConv(8, 8, 2)


def test_deform_conv_is_a_sampled_convolution():
    """Zero offsets (a fresh layer): ``0.5 * conv2d`` before BN and SiLU; an offset of +1 pixel in x at every tap: the
    convolution of the input shifted by one pixel (compared away from the border)."""
    torch.manual_seed(0)
    m = DeformConv(6, 8, 3).eval()
    x = torch.randn(1, 6, 10, 14)
    captured = {}
    m.bn.register_forward_hook(lambda mod, inp, out: captured.__setitem__("pre", inp[0]))
    m(x)
    torch.testing.assert_close(captured["pre"], 0.5 * F.conv2d(x, m.weight, padding=1), atol=1e-5, rtol=1e-5)
    with torch.no_grad():  # offsets (dy, dx) per tap: dy = 0, dx = +1; masks: logit 20 -> gain 1
        bias = torch.zeros(27)
        bias[1:18:2] = 1.0
        bias[18:] = 20.0
        m.offset.bias.copy_(bias)
    m(x)
    shifted = F.conv2d(F.pad(x[..., 1:], (0, 1)), m.weight, padding=1)
    torch.testing.assert_close(captured["pre"][..., 1:-2], shifted[..., 1:-2], atol=1e-4, rtol=1e-4)
    assert m.offset.weight.abs().sum() == 0  # the offsets are learned from zero
    with torch.no_grad():  # NaN or huge offsets (a NaN input, Ultralytics' FLOPs count on torch.empty) crash
        m.offset.weight.normal_()  # torchvision's kernel; clamped, they only read zero padding
        for bad in (float("nan"), float("inf"), 1e30):
            assert m(torch.full((1, 6, 10, 14), bad)).shape == (1, 8, 10, 14)


@pytest.mark.parametrize("name, new_rows", [("rvt-t-se", 4), ("rvt-t-dcn-se", 8), ("rvt-t-soa", 2)])
def test_variant_yamls_build_train_and_keep_rvt_t(name, new_rows):
    base = EventDetectionModel("rvt-t.yaml", verbose=False)
    m = EventDetectionModel(f"{name}.yaml", verbose=False)
    assert len(m.model) == len(base.model) + new_rows and m.stride.tolist() == base.stride.tolist()
    own, ref = m.state_dict(), base.state_dict()
    assert all(own[k].shape == v.shape for k, v in ref.items() if int(k.split(".")[1]) < 26)  # rows 0-25: rvt-t's
    blocks = [x for x in m.modules() if isinstance(x, (SqueezeExcite, SmallObjectAttention, DeformConv))]
    assert len(blocks) == new_rows
    m.train()
    m.backbone.set_partition_size((2, 2))
    out = m(torch.randn(1, 20, 64, 64))
    sum(o.float().abs().mean() for o in out["feats"]).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for b in blocks for p in b.parameters())


def test_a_wrong_block_width_in_a_yaml_is_one_error():
    cfg = load_model_yaml("rvt-t-se.yaml")
    cfg = {**cfg, "head": [list(r) for r in cfg["head"]]}
    cfg["head"][-5] = [16, 1, "SqueezeExcite", [64]]  # the stride-4 output has 32 channels
    with pytest.raises(
        ValueError, match="SqueezeExcite keeps its channels: its YAML width 64 must equal its input's 32"
    ):
        EventDetectionModel(cfg, verbose=False)


def test_deform_conv_models_refuse_formats_that_cannot_carry_it(tmp_path):
    from yolo_etram.export import EventExporter

    m = EventDetectionModel("rvt-t-dcn-se.yaml", verbose=False)
    with pytest.raises(UnsupportedOptionError, match="format='onnx' cannot carry the model's DeformConv layers"):
        EventExporter(overrides={"format": "onnx", "imgsz": [192, 320], "batch": 1})(m)


@pytest.mark.slow
def test_deform_conv_model_exports_to_torchscript_and_openvino_with_states(tmp_path):
    """rvt-t-dcn-se through the stateful exports that carry ``deform_conv2d``: over 6 windows with the states fed
    back, TorchScript and OpenVINO give the PyTorch model's outputs."""
    import contextlib

    from yolo_etram import EventYOLO
    from yolo_etram.export import export_recurrent
    from yolo_etram.nn.exported import StatefulOpenVINOModel, StatefulTorchScriptModel

    torch.manual_seed(0)
    model = EventYOLO("rvt-t-dcn-se.yaml")
    net = model.model
    net.backbone.set_partition_size((3, 4))
    net.yaml["event"] = {"downsample": 1, "nbins": 10, "window_ms": 50, "channels": 20, "partition": [3, 4]}
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # the offsets move: sampling between pixels is what the exports must carry
        for m in net.modules():
            if isinstance(m, DeformConv):
                m.offset.weight.normal_(0, 0.05, generator=g)
    net.eval()
    frames = [(torch.rand(1, 20, 96, 128, generator=g) < 0.1).float() * 5 for _ in range(6)]
    net.reset_states()
    with torch.no_grad():
        ref = [net(x)[0].numpy() for x in frames]
    net.reset_states()
    with contextlib.chdir(tmp_path):
        ts = tmp_path / export_recurrent(model, "torchscript", imgsz=(96, 128))
        ov = tmp_path / export_recurrent(model, "openvino", imgsz=(96, 128))
    for runner, tol in ((StatefulTorchScriptModel(ts), 1e-4), (StatefulOpenVINOModel(ov), 2e-3)):
        out = [np.asarray(runner(x.numpy() if isinstance(runner, StatefulOpenVINOModel) else x)) for x in frames]
        for a, b in zip(out, ref):
            np.testing.assert_allclose(a, b, atol=tol, rtol=tol)
