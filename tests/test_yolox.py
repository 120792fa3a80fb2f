"""RVT's YOLOX head and loss (YOLOXDetect, YOLOXLoss), whole RVT checkpoint import, and `etram-yolo import-rvt`.

The references are ``tests/rvt_reference.py``'s restatements of RVT's head, decoding, postprocess and loss, and RVT's
own head outputs in ``shared/golden`` (slow test)."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from rvt_reference import RVTYoloXHead, rvt_yolox_postprocess, yolox_losses
from test_rvt_backbone_parity import rvt_backbone_keys

from yolo_etram import EventYOLO
from yolo_etram.nn import EventDetectionModel
from yolo_etram.nn.rvt_import import import_rvt, load_rvt_checkpoint
from yolo_etram.nn.yolox_head import YOLOXDetect, rvt_postprocess
from yolo_etram.nn.yolox_loss import YOLOXLoss

HW = (96, 160)  # partition (3, 5): P3 12x20, P4 6x10, P5 3x5 = 315 anchors
PARTITION = (3, 5)
NC = 3
TOL = 1e-4


def fake_rvt_state_dict(yaml: str = "rvt-t-yolox.yaml", nc: int = NC, seed: int = 0) -> dict:
    """A whole RVT checkpoint's ``state_dict`` (``mdl.backbone/fpn/yolox_head.*``, RVT's names) with random weights:
    sane default-initialised tensors, then LayerScale, norm and BN parameters and BN statistics perturbed, and head
    biases spread around 0, so that every component matters and the postprocess has boxes to keep and suppress."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    ours = EventDetectionModel(yaml.replace("-yolox", "-3scale"), nc=nc, verbose=False)  # backbone + neck shapes
    own = ours.state_dict()
    sd = {}
    for rvt, name, _ in rvt_backbone_keys(ours.backbone.out_channels, (1, 1, 1, 1)):
        sd[rvt] = own[f"model.0.{name}"].clone()
    for name, row in ours.yaml["rvt_pafpn"].items():
        for k, v in own.items():
            if k.startswith(f"model.{row}."):
                rest = k.split(".", 2)[2]
                if name.startswith("C3_"):
                    rest = rest.replace("cv1.", "conv1.").replace("cv2.", "conv2.").replace("cv3.", "conv3.")
                sd[f"mdl.fpn.{name}.{rest}"] = v.clone()
    chans = [ours.model[r].cv3.conv.out_channels for r in (12, 15, 18)]
    head = RVTYoloXHead(nc, (8, 16, 32), chans)
    sd.update({f"mdl.yolox_head.{k}": v.clone() for k, v in head.state_dict().items()})

    def u(t, lo, hi):
        return lo + (hi - lo) * torch.rand(t.shape, generator=g)

    for k, v in sd.items():
        if k.endswith("gamma"):
            sd[k] = u(v, 0.2, 1.0)
        elif k.endswith("running_var"):
            sd[k] = u(v, 0.5, 2.0)
        elif k.endswith(("running_mean", "bn.bias", "norm.bias", "norm1.bias", "norm2.bias")):
            sd[k] = 0.2 * torch.randn(v.shape, generator=g)
        elif k.endswith(("bn.weight", "norm.weight", "norm1.weight", "norm2.weight")):
            sd[k] = u(v, 0.5, 1.5)
        elif ("cls_preds" in k or "obj_preds" in k) and k.endswith("bias"):
            sd[k] = 0.5 * torch.randn(v.shape, generator=g)
        elif "_preds." in k and k.endswith("weight"):  # untrained outputs are tiny: spread scores and box sizes
            sd[k] = 10 * v
        elif "reg_preds" in k and k.endswith("bias"):  # boxes ~3 strides wide: neighbours overlap, NMS has work
            sd[k] = torch.tensor([0.0, 0.0, 1.1, 1.1]) + 0.1 * torch.randn(4, generator=g)
    return sd


@pytest.fixture(scope="module")
def rvt_sd():
    return fake_rvt_state_dict()


@pytest.fixture(scope="module")
def imported(rvt_sd):
    model = EventYOLO("rvt-t-yolox.yaml")
    report = load_rvt_checkpoint(model.model, rvt_sd)
    model.model.backbone.set_partition_size(PARTITION)
    return SimpleNamespace(model=model, report=report)


def events(b, t=None, hw=HW, seed=0):
    g = torch.Generator().manual_seed(seed)
    shape = (b, 20, *hw) if t is None else (b, t, 20, *hw)
    return (torch.rand(shape, generator=g) < 0.1).float() * torch.randint(1, 11, shape, generator=g)


def same_rows(a: torch.Tensor, b: torch.Tensor, tol: float = TOL) -> float:
    """Assert that two detection sets hold the same rows in any order (score ties may order them differently)."""
    assert a.shape == b.shape, (a.shape, b.shape)
    d = (a[:, None] - b[None]).abs().amax(-1)
    nearest = d.min(1)
    assert nearest.values.max() < tol and len(set(nearest.indices.tolist())) == len(a)
    return nearest.values.max().item()


# ------------------------------------------------------------------------------------------------------ the head


@pytest.mark.parametrize(
    "size, head_m, total_m, hidden", [("t", 0.474, 4.41, 64), ("s", 1.065, 9.87, 96), ("b", 1.891, 18.54, 128)]
)
def test_yaml_builds_rvt_detector(size, head_m, total_m, hidden):
    """RVT's parameter counts (rvt_spec 4.2), PyTorch-default BatchNorms, RVT's upsampling, RVT's biases."""
    m = EventDetectionModel(f"rvt-{size}-yolox.yaml", verbose=False)
    head = m.model[-1]
    assert isinstance(head, YOLOXDetect) and head.hidden == hidden and head.score == "obj_cls"
    assert m.stride.tolist() == [8.0, 16.0, 32.0] and m.backbone.states is None
    n_head, n_total = sum(p.numel() for p in head.parameters()), sum(p.numel() for p in m.parameters())
    assert abs(n_head / 1e6 - head_m) < 1e-3 and abs(n_total / 1e6 - total_m) < 1e-2
    if size == "t":  # RVT-T's own count (golden rvt_t.ckpt, parameters without BN statistics)
        assert (n_head, n_total) == (474_520, 4_405_336)
    bns = [x for x in m.modules() if isinstance(x, torch.nn.BatchNorm2d)]
    assert bns and all(x.eps == 1e-5 and x.momentum == 0.1 for x in bns)
    assert [x.mode for x in m.modules() if isinstance(x, torch.nn.Upsample)] == ["nearest"] * 2  # exports to ONNX
    x = torch.randn(1, 2, 5, 7)
    up = torch.nn.functional.interpolate
    assert torch.equal(up(x, scale_factor=2, mode="nearest"), up(x, scale_factor=2, mode="nearest-exact"))  # RVT's
    assert all(torch.allclose(c.bias, torch.tensor(-4.59512)) for c in (*head.cls_preds, *head.obj_preds))
    assert isinstance(m.init_criterion(), YOLOXLoss)


def test_head_and_detections_match_rvt_reference(imported, rvt_sd):
    """Random RVT-layout weights: raw outputs, eval output and RVT's postprocess equal the restated RVT head's."""
    net = imported.model.model.eval()
    taps = {}
    for row in (12, 15, 18):
        net.model[row].register_forward_hook(lambda m, i, o, row=row: taps.__setitem__(row, o))
    head = net.model[-1]
    ref_head = RVTYoloXHead(NC, (8, 16, 32), [net.model[r].cv3.conv.out_channels for r in (12, 15, 18)]).eval()
    ref_head.load_state_dict({k[len("mdl.yolox_head.") :]: v for k, v in rvt_sd.items() if ".yolox_head." in k})
    x = events(2, 2)
    net.reset_states()
    worst = {"decoded": 0.0, "eval": 0.0, "dets": 0.0}
    n_dets = n_suppressed = 0
    with torch.no_grad():
        for t in range(2):  # two steps, state carried
            y, raw = net(x[:, t])
            ref = ref_head([taps[r] for r in (12, 15, 18)])  # (B, A, 8)
            ours = head.decode_rvt(raw)
            torch.testing.assert_close(ours, ref, atol=TOL, rtol=1e-5)
            worst["decoded"] = max(worst["decoded"], (ours - ref).abs().max().item())
            # Ultralytics' eval format: xywh, then obj * cls on the argmax class only
            score = ref[..., 4:5] * ref[..., 5:]
            score = score * (ref[..., 5:] == ref[..., 5:].amax(-1, keepdim=True))
            expected = torch.cat((ref[..., :4], score), -1).transpose(1, 2)
            torch.testing.assert_close(y, expected, atol=TOL, rtol=1e-5)
            worst["eval"] = max(worst["eval"], (y - expected).abs().max().item())
            # final detections: RVT's postprocess (conf 0.1, class-aware NMS 0.45) three ways
            from ultralytics.utils.nms import non_max_suppression

            ref_dets = rvt_yolox_postprocess(ref.clone(), NC, conf_thre=0.1, nms_thre=0.45)
            ours_rvt = rvt_postprocess(ours, conf_thre=0.1, nms_thre=0.45)
            stock = non_max_suppression(y, 0.1, 0.45, multi_label=True, max_det=100_000)  # as the validator
            for r, a, s, p in zip(ref_dets, ours_rvt, stock, ref):
                assert r is not None and len(r) > 5
                n_dets += len(r)
                n_suppressed += int(((p[:, 4:5] * p[:, 5:]).amax(1) >= 0.1).sum()) - len(r)
                torch.testing.assert_close(a, r, atol=TOL, rtol=1e-5)
                rows = torch.cat((r[:, :4], r[:, 4:5] * r[:, 5:6], r[:, 6:7]), 1)
                worst["dets"] = max(worst["dets"], same_rows(s, rows), (a - r).abs().max().item())
    assert n_suppressed > 0  # NMS had boxes to drop
    print(f"max |ours - RVT reference|: {worst}; {n_dets} detections")


def test_cls_score_is_rvts_coco_score(imported):
    """score='cls': the eval column is sigmoid(cls) of the argmax class where obj * cls reaches the gate."""
    net = imported.model.model.eval()
    head = net.model[-1]
    net.reset_states()
    with torch.no_grad():
        _, raw = net(events(1))
    rvt = head.decode_rvt(raw)[0]
    obj, cls = rvt[:, 4:5], rvt[:, 5:]
    gate = (obj * cls).amax(1).median().item()
    try:
        head.score, head.gate = "cls", gate
        y = head._inference(raw)[0, 4:].T
    finally:
        head.score, head.gate = "obj_cls", YOLOXDetect.gate
    best = cls == cls.amax(1, keepdim=True)
    kept = best & (obj * cls >= gate)
    assert 0 < kept.sum() < len(kept)
    torch.testing.assert_close(y, cls * kept)


@pytest.mark.slow
def test_whole_rvt_golden_checkpoint_matches_rvt(golden):
    """RVT's own head outputs (rvt_t.ckpt, 2 steps at 384x640): decoded boxes and scores."""
    io = np.load(golden / "rvt_t_io.npz")
    model = EventYOLO("rvt-t-yolox.yaml")
    report = model.load_rvt(golden / "rvt_t.ckpt")
    assert (report.backbone, report.neck, report.head) == (124, 144, 108) and not report.not_loaded
    net = model.model.eval()
    net.reset_states()
    x = torch.from_numpy(io["input"]).float()
    errors = []
    with torch.no_grad():
        for t in range(x.shape[0]):
            ours = net.model[-1].decode_rvt(net(x[t])[1])
            ref = torch.from_numpy(io["head"][t])
            torch.testing.assert_close(ours[..., 4:], ref[..., 4:], atol=1e-6, rtol=0)
            torch.testing.assert_close(ours, ref, atol=TOL, rtol=1e-6)  # boxes up to ~630 px: float32 ulp 6e-5
            errors.append((ours - ref).abs().max().item())
    print("max |ours - RVT| (golden head):", errors)


# ------------------------------------------------------------------------------------------------------ the loss


def _gt_batch(gt: dict) -> tuple[dict, SimpleNamespace]:
    """A loss batch of ``{image: [(cls, cx, cy, w, h) pixels]}`` at HW, and a model stand-in for YOLOXLoss."""
    rows = [(i, *r) for i, rs in gt.items() for r in rs]
    batch = {
        "batch_idx": torch.tensor([r[0] for r in rows], dtype=torch.float32),
        "cls": torch.tensor([[r[1]] for r in rows], dtype=torch.float32),
        "bboxes": torch.tensor([r[2:] for r in rows]) / torch.tensor([160.0, 96, 160, 96]),
    }
    return batch, SimpleNamespace(model=[SimpleNamespace(nc=NC, stride=torch.tensor([8.0, 16.0, 32.0]))])


def test_loss_matches_rvt_reference():
    """SimOTA + IoU/obj/cls losses and their gradients equal RVT's loss code on random outputs and boxes."""
    g = torch.Generator().manual_seed(0)
    levels = [(12, 20), (6, 10), (3, 5)]
    outs = [
        torch.cat((0.5 * torch.randn(3, 4, h, w, generator=g), torch.randn(3, 1 + NC, h, w, generator=g)), 1)
        for h, w in levels
    ]
    outs = [o.requires_grad_() for o in outs]
    gt = {
        0: [(0, 40, 30, 30, 20), (2, 42, 33, 12, 40), (1, 120, 70, 60, 40)],  # [cls, cx, cy, w, h] px; 1: none
        2: [(1, 80, 48, 100, 60), (0, 5, 5, 8, 8)],
    }
    labels = torch.zeros(3, 3, 5)
    for i, rows in gt.items():
        labels[i, : len(rows)] = torch.tensor(rows, dtype=torch.float32)
    ref_head = RVTYoloXHead(NC)
    ref = yolox_losses(ref_head, outs, labels)
    ref_grads = torch.autograd.grad(ref[0], outs)

    flat = [torch.cat([o[:, s].flatten(2) for o in outs], 2) for s in (slice(0, 4), slice(4, 5), slice(5, None))]
    preds = {"boxes": flat[0], "obj": flat[1], "scores": flat[2], "feats": outs}
    batch, fake = _gt_batch(gt)
    criterion = YOLOXLoss(fake)
    loss, items = criterion.loss(preds, batch)
    assert list(items) == ["iou_loss", "obj_loss", "cls_loss"] and ref[4] > 5
    torch.testing.assert_close(loss / 3, torch.stack(ref[1:4]), atol=1e-5, rtol=1e-5)
    grads = torch.autograd.grad(loss.sum() / 3, outs)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)
    print("loss ours vs RVT:", loss.detach() / 3, torch.stack(ref[1:4]).detach(), "num_fg", ref[4])


def test_masked_loss_and_finetuning_lower_the_loss(imported):
    """The model's labeled-frame loss runs through YOLOXLoss, and a few AdamW steps on a fixed batch lower it."""
    import copy

    model = copy.deepcopy(imported.model.model).train()
    model.args = SimpleNamespace()
    b, t = 2, 2
    batch = {
        "img": events(b, t, seed=3),
        "batch_idx": torch.tensor([0.0, 0.0, 1.0, 3.0, 3.0]),
        "cls": torch.tensor([[0.0], [1.0], [2.0], [1.0], [0.0]]),
        "bboxes": torch.tensor(
            [
                [0.3, 0.4, 0.2, 0.3],
                [0.7, 0.5, 0.3, 0.4],
                [0.5, 0.5, 0.1, 0.2],
                [0.4, 0.6, 0.3, 0.3],
                [0.8, 0.3, 0.1, 0.2],
            ]
        ),
        "labeled": torch.tensor([True, True, False, True]),
    }
    opt = torch.optim.AdamW(model.parameters(), lr=2e-4)
    losses = []
    for _ in range(4):
        model.reset_states()
        loss, items = model.loss(batch)
        assert list(items) == list(YOLOXDetect.loss_names) and torch.isfinite(loss).all()
        opt.zero_grad()
        loss.sum().backward()
        opt.step()
        losses.append(loss.sum().item())
    print("loss per step:", [round(v, 2) for v in losses])
    assert losses[-1] < 0.8 * losses[0], losses
    nothing = {**batch, "labeled": torch.zeros(4, dtype=torch.bool)}
    model.reset_states()
    loss, _ = model.loss(nothing)
    assert loss.shape == (3,) and loss.sum() == 0


def _yolox_loss_inputs(gt: dict, seed: int = 0):
    """Random raw outputs at HW's three levels, as leaves, and a batch of ``[cls, cx, cy, w, h]`` pixel boxes."""
    g = torch.Generator().manual_seed(seed)
    levels = [(12, 20), (6, 10), (3, 5)]
    outs = [
        torch.cat((0.5 * torch.randn(2, 4, h, w, generator=g), torch.randn(2, 1 + NC, h, w, generator=g)), 1)
        for h, w in levels
    ]
    flat = [
        torch.cat([o[:, s].flatten(2) for o in outs], 2).requires_grad_()
        for s in (slice(0, 4), slice(4, 5), slice(5, None))
    ]
    preds = {"boxes": flat[0], "obj": flat[1], "scores": flat[2], "feats": outs}
    batch, fake = _gt_batch(gt)
    return preds, batch, fake


def test_size_aware_yolox_loss_weights_each_positive_by_its_box():
    """Size-aware YOLOX loss: equal boxes give RVT's loss (to rounding); with a small and a large box every positive
    anchor's gradient is the plain one times its box's weight (1 + a e^(-area/tau), mean 1), negatives unchanged."""
    from yolo_etram.nn.size_aware_loss import size_weights

    cfg = {"a": 2.0, "tau": 256.0}
    equal = {0: [(0, 40, 30, 24, 24), (1, 120, 60, 24, 24)], 1: [(2, 80, 48, 24, 24)]}
    preds, batch, fake = _yolox_loss_inputs(equal)
    plain, _ = YOLOXLoss(fake).loss(preds, batch)
    weighted, _ = YOLOXLoss(fake, size_aware=cfg).loss(preds, batch)
    torch.testing.assert_close(weighted, plain, atol=1e-6, rtol=1e-6)  # weights 1 (to rounding)

    mixed = {0: [(0, 40, 30, 8, 8), (1, 120, 60, 64, 48)]}  # each positive anchor belongs to one box
    preds, batch, fake = _yolox_loss_inputs(mixed, seed=1)
    areas = torch.tensor([64.0, 64 * 48])
    w = size_weights(areas, **cfg)
    w = w / w.mean()
    grads = {}
    for name, sa in (("plain", None), ("weighted", cfg)):
        loss, _ = YOLOXLoss(fake, size_aware=sa).loss(preds, batch)
        grads[name] = torch.autograd.grad(loss.sum(), [preds["boxes"], preds["obj"]])
    gb_plain, gb_w = (grads[k][0][0].abs().sum(0) for k in ("plain", "weighted"))  # (A,) image 0
    pos = gb_plain > 0
    ratios = (gb_w[pos] / gb_plain[pos]).tolist()
    assert pos.sum() >= 2 and w[0] > 1 > w[1]
    assert all(min(abs(r - w[0]), abs(r - w[1])) < 1e-4 for r in ratios), (ratios, w)
    assert any(abs(r - w[0]) < 1e-4 for r in ratios) and any(abs(r - w[1]) < 1e-4 for r in ratios)
    go_plain, go_w = grads["plain"][1][0, 0], grads["weighted"][1][0, 0]
    torch.testing.assert_close(go_w[~pos], go_plain[~pos])  # objectness of negatives: untouched
    torch.testing.assert_close(go_w[pos], go_plain[pos] * torch.tensor(ratios))  # of positives: the box's weight
    with pytest.raises(ValueError, match="tau > 0"):
        YOLOXLoss(fake, size_aware={"a": 1.0, "tau": 0})


# ------------------------------------------------------------------------------------------------------ import


def test_import_report_and_mismatches(imported, rvt_sd):
    r = imported.report
    assert (r.backbone, r.neck, r.head) == (124, 144, 108) and not r.not_loaded and not r.missing
    assert "108 head tensors loaded" in str(r)
    own = imported.model.model.state_dict()
    key = "cls_convs.1.0.bn.running_var"
    assert torch.equal(own[f"model.19.{key}"], rvt_sd[f"mdl.yolox_head.{key}"])
    assert torch.equal(own["model.19.obj_preds.2.bias"], rvt_sd["mdl.yolox_head.obj_preds.2.bias"])
    detect = load_rvt_checkpoint(EventDetectionModel("rvt-t-3scale.yaml", verbose=False), rvt_sd)
    assert detect.head == 0 and len(detect.not_loaded) == 108 and "not loaded" in str(detect)
    with pytest.raises(RuntimeError, match="class count"):
        load_rvt_checkpoint(EventDetectionModel("rvt-t-yolox.yaml", nc=2, verbose=False), rvt_sd)


@pytest.fixture(scope="module")
def rvt_ckpt(tmp_path_factory, rvt_sd):
    path = tmp_path_factory.mktemp("rvt") / "rvt-t.ckpt"
    torch.save({"state_dict": rvt_sd, "epoch": 3, "global_step": 100}, path)
    return path


def test_cli_import_writes_a_checkpoint_that_predicts(rvt_ckpt, tmp_path):
    from rawdata import random_events

    from yolo_etram.cli import main
    from yolo_etram.data.io import write_events_h5

    out = tmp_path / "best.pt"
    assert main(["import-rvt", str(rvt_ckpt), "--out", str(out), "--partition", "3", "4"]) == 0
    ckpt = torch.load(out, weights_only=False)
    assert {"model", "train_args", "date", "version"} <= set(ckpt) and ckpt["train_args"]["task"] == "detect"
    assert all(p.dtype == torch.float32 for p in ckpt["model"].parameters())
    model = EventYOLO(out)
    net = model.model
    assert isinstance(net, EventDetectionModel) and isinstance(net.model[-1], YOLOXDetect)
    assert net.names == {0: "pedestrian", 1: "vehicle", 2: "micromobility"}
    assert net.yaml["event"] == {
        "representation": "stacked_histogram",
        "nbins": 10,
        "cutoff": 10,
        "window_ms": 50,
        "window_events": None,
        "step_ms": 50,
        "downsample": 2,
        "channels": 20,
        "dtype": "uint8",
        "partition": [3, 4],
        "input": "histogram",
        "memory": True,
    }
    rec = tmp_path / "rec_td.h5"
    x, y, p, t = random_events(60_000, 300_000, 256, 192, 0)
    write_events_h5(rec, x, y, p, t, 256, 192)
    results = list(model.predict(str(rec), conf=0.2, max_det=7, stream=True, verbose=False))
    assert len(results) == 6 and results[0].orig_img.shape[:2] == (192, 256)
    assert any(len(r.boxes) for r in results) and all(len(r.boxes) <= 7 for r in results)
    assert main(["import-rvt", str(rvt_ckpt), "--out", str(tmp_path / "x.pt"), "--nc", "2"]) == 2  # one-line error


@pytest.mark.slow
def test_imported_model_exports_with_states(rvt_ckpt, tmp_path):
    import contextlib

    from yolo_etram.export import export_recurrent
    from yolo_etram.nn.exported import StatefulOnnxModel

    out, _ = import_rvt(rvt_ckpt, tmp_path / "m.pt", partition=(3, 4))
    model = EventYOLO(out)
    with contextlib.chdir(tmp_path):
        f = tmp_path / export_recurrent(model, "onnx", imgsz=(96, 128))
    import onnxruntime

    meta = onnxruntime.InferenceSession(str(f)).get_modelmeta().custom_metadata_map
    assert meta["yolox_score"] == "obj_cls"  # what rvt_eval reads from an export
    runner = StatefulOnnxModel(f)
    net = model.model.eval()
    net.reset_states()
    for i in range(3):
        x = events(1, hw=(96, 128), seed=i)
        with torch.no_grad():
            ref = net(x)[0].numpy()
        np.testing.assert_allclose(runner(x.numpy()), ref, rtol=1e-4, atol=1e-4)


def test_imported_model_validates_with_prophesee_metrics(rvt_ckpt, tiny_events, tmp_path):
    """Prophesee metrics on an imported model: AP, class-agnostic AP_all (eTraM's 'All') and per-class AP."""
    out, _ = import_rvt(rvt_ckpt, tmp_path / "imported.pt", downsample=1, partition=(3, 4))
    metrics = EventYOLO(out).val(
        data=str(tiny_events), batch=1, plots=False, project=str(tmp_path), name="val", exist_ok=True, verbose=False
    )
    assert {"prophesee/AP", "prophesee/AP_all"} <= set(metrics.results_dict)
    assert all(np.isfinite(metrics.results_dict[k]) for k in ("prophesee/AP", "prophesee/AP_all"))
    assert set(metrics.prophesee["per_class"]) == {"pedestrian", "vehicle", "micromobility"}


@pytest.mark.slow
def test_imported_model_finetunes_with_the_trainer(rvt_ckpt, tiny_events, tmp_path):
    """`train` on an imported checkpoint uses RVT's loss and its names; the result keeps the YOLOX head and RVT's
    BatchNorms (the trainer rebuilds the model from its YAML)."""
    import csv

    out, _ = import_rvt(rvt_ckpt, tmp_path / "imported.pt", downsample=1, partition=(3, 4))
    model = EventYOLO(out)
    model.train(
        data=str(tiny_events),
        epochs=1,
        batch=2,
        workers=0,
        imgsz=128,
        plots=False,
        val=True,
        project=str(tmp_path),
        name="ft",
        exist_ok=True,
        lr0=1e-4,
    )
    with open(tmp_path / "ft" / "results.csv") as f:
        row = next(csv.DictReader(f))
    row = {k.strip(): float(v or "nan") for k, v in row.items()}
    for k in ("train/iou_loss", "train/obj_loss", "train/cls_loss", "val/iou_loss", "prophesee/AP_all"):
        assert k in row and np.isfinite(row[k]), k
    tuned = torch.load(tmp_path / "ft" / "weights" / "last.pt", weights_only=False)["model"]
    assert isinstance(tuned.model[-1], YOLOXDetect)
    assert all(m.eps == 1e-5 for m in tuned.modules() if isinstance(m, torch.nn.BatchNorm2d))


# ------------------------------------------------------------------------------------------------------ 4-scale


@pytest.mark.parametrize("size", ["t", "s", "b"])
def test_4scale_yolox_yaml_adds_a_stride_4_level(size):
    """rvt-*-yolox-4scale.yaml: RVT's detector with a fourth head level at stride 4 and RVT's PAFPN unchanged."""
    four = EventDetectionModel(f"rvt-{size}-yolox-4scale.yaml", verbose=False)
    three = EventDetectionModel(f"rvt-{size}-yolox.yaml", verbose=False)
    head = four.model[-1]
    assert isinstance(head, YOLOXDetect) and head.nl == 4 and four.stride.tolist() == [4.0, 8.0, 16.0, 32.0]
    assert head.hidden == three.model[-1].hidden and head.stems[0].conv.in_channels == four.backbone.out_channels[0]
    own4, own3 = four.state_dict(), three.state_dict()
    for row in three.yaml["rvt_pafpn"].values():  # every RVT neck layer: same row, same shapes
        keys = [k for k in own3 if k.startswith(f"model.{row}.")]
        assert keys and all(own4[k].shape == own3[k].shape for k in keys)
    assert isinstance(four.init_criterion(), YOLOXLoss)


def test_4scale_import_predicts_rvts_levels_exactly(rvt_sd):
    """An RVT checkpoint in the 4-scale YOLOX: backbone, PAFPN and RVT's three head levels load, the stride-4 rows
    and head level 0 start fresh (named in the report), and the strides 8-32 predict exactly as the 3-scale import."""
    four, three = (EventDetectionModel(y, verbose=False) for y in ("rvt-t-yolox-4scale.yaml", "rvt-t-yolox.yaml"))
    report = load_rvt_checkpoint(four, rvt_sd)
    load_rvt_checkpoint(three, rvt_sd)
    assert (report.backbone, report.neck, report.head) == (124, 144, 108) and not report.not_loaded
    assert not report.missing
    assert [f.split(" (")[0] for f in report.fresh] == ["rows 19-22", "row 23 level 0"], report.fresh
    assert "starting fresh: rows 19-22" in str(report)
    own, sd = four.state_dict(), rvt_sd
    assert torch.equal(own["model.23.cls_preds.1.weight"], sd["mdl.yolox_head.cls_preds.0.weight"])
    assert torch.equal(own["model.23.obj_preds.3.bias"], sd["mdl.yolox_head.obj_preds.2.bias"])
    for m in (four, three):
        m.backbone.set_partition_size(PARTITION)
        m.eval()
    x = events(1, seed=4)
    with torch.no_grad():
        raw4, raw3 = four(x)[1], three(x)[1]
    n_p2 = (HW[0] // 4) * (HW[1] // 4)
    for k in ("boxes", "obj", "scores"):
        torch.testing.assert_close(raw4[k][..., n_p2:], raw3[k], atol=1e-5, rtol=1e-5)
    three_scale = load_rvt_checkpoint(EventDetectionModel("rvt-t-yolox.yaml", verbose=False), rvt_sd)
    assert not three_scale.fresh, three_scale.fresh
    with pytest.raises(RuntimeError, match="rvt_head_levels"):
        from yolo_etram.nn.rvt_import import rvt_head_state_dict

        rvt_head_state_dict({k[len("mdl.") :]: v for k, v in rvt_sd.items()}, 23, [1, 2])


def test_rvt_import_into_a_backbone_with_temporal_attention_predicts_as_rvt(rvt_sd):
    """RVT has no temporal attention: importing into rvt-t-yolox with ``temporal_attention`` loads every RVT tensor,
    names the attention's tensors as starting fresh (not missing), and, LayerScale being 0, predicts exactly as the
    plain import over a clip of windows (the memory fills, and still changes nothing)."""
    plain = EventDetectionModel("rvt-t-yolox.yaml", verbose=False)
    yaml = {**plain.yaml, "temporal_attention": {"memory": 2, "stages": [1, 3]}}
    ta = EventDetectionModel(yaml, verbose=False)
    report = load_rvt_checkpoint(ta, rvt_sd)
    load_rvt_checkpoint(plain, rvt_sd)
    assert (report.backbone, report.neck, report.head) == (124, 144, 108) and not report.missing
    assert report.fresh == ["row 0 temporal attention (20 tensors)"], report.fresh
    for m in (ta, plain):
        m.backbone.set_partition_size(PARTITION)
        m.eval()
    with torch.no_grad():
        for t in range(4):
            x = events(1, seed=10 + t)
            a, b = ta(x)[1], plain(x)[1]
            for k in ("boxes", "obj", "scores"):
                assert torch.equal(a[k], b[k]), (t, k)
    assert len(ta.backbone.states) == 6 and len(plain.backbone.states) == 4
