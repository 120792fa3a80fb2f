"""The recurrent detection model inside Ultralytics: YAMLs, strides, state protocol, masked loss."""

import copy
import pickle
from types import SimpleNamespace

import pytest
import torch

from yolo_etram import EventYOLO
from yolo_etram.nn import EventDetectionModel

YAMLS = ["rvt-t.yaml", "rvt-s.yaml", "rvt-b.yaml", "rvt-t-3scale.yaml", "rvt-s-3scale.yaml", "rvt-b-3scale.yaml"]
HW = (192, 320)  # the smallest input partition (6, 10) divides


def small_model(name="rvt-t.yaml", **kw):
    torch.manual_seed(0)
    m = EventDetectionModel(name, verbose=False, **kw)
    m.args = SimpleNamespace(box=7.5, cls=0.5, dfl=1.5)
    return m


def counts(b, t, seed=0, hw=HW):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(b, t, 20, *hw, generator=g) < 0.05).float() * torch.randint(1, 10, (b, t, 20, *hw), generator=g)


@pytest.mark.parametrize("name", YAMLS)
def test_every_yaml_builds_and_trains_one_step(name):
    m = small_model(name)
    assert m.backbone.states is None  # the stride probe left nothing behind
    assert m.stride.tolist() == ([4.0, 8.0, 16.0, 32.0] if "3scale" not in name else [8.0, 16.0, 32.0])
    b, t = 2, 2
    batch = {
        "img": counts(b, t),
        "batch_idx": torch.tensor([0.0, 3.0]),
        "cls": torch.tensor([[0.0], [2.0]]),
        "bboxes": torch.tensor([[0.5, 0.5, 0.2, 0.3], [0.3, 0.6, 0.1, 0.1]]),
        "labeled": torch.tensor([True, False, False, True]),
    }
    m.train()
    loss, items = m.loss(batch)
    loss.sum().backward()
    assert torch.isfinite(loss).all() and loss.sum() > 0
    grads = [p.grad for p in m.backbone.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_backbone_parameter_counts_match_rvt():
    expected = {"rvt-t.yaml": 3.220, "rvt-s.yaml": 7.209, "rvt-b.yaml": 12.785}
    for name, millions in expected.items():
        m = EventDetectionModel(name, verbose=False)
        assert round(sum(p.numel() for p in m.backbone.parameters()) / 1e6, 3) == millions
    neck = {"rvt-t-3scale.yaml": 0.711, "rvt-s-3scale.yaml": 1.596, "rvt-b-3scale.yaml": 3.861}  # RVT's PAFPN
    for name, millions in neck.items():
        m = EventDetectionModel(name, verbose=False)
        assert round(sum(p.numel() for p in m.model[5:-1].parameters()) / 1e6, 3) == millions


def test_channels_come_from_yaml_or_data():
    assert EventDetectionModel("rvt-t.yaml", verbose=False).yaml["channels"] == 20
    m2 = EventDetectionModel("rvt-t.yaml", ch=2, verbose=False)
    assert m2.backbone.stages[0].downsample.conv.weight.shape[1] == 2


def test_sequence_split_invariance_of_detections():
    """T=10 as one batch == two batches of T=5 with carried state == ten single steps."""
    m = small_model().eval()
    x = counts(2, 10, seed=1)
    with torch.no_grad():
        m.reset_states()
        whole = m(x)[0]  # (B*T, 4+nc, A), frame b*T+t
        m.reset_states()
        halves = [m(x[:, :5])[0], m(x[:, 5:])[0]]
        m.reset_states()
        steps = [m(x[:, t])[0] for t in range(10)]
    whole = whole.view(2, 10, *whole.shape[1:])
    halves = torch.cat([h.view(2, 5, *h.shape[1:]) for h in halves], 1)
    steps = torch.stack(steps, 1)
    torch.testing.assert_close(halves, whole, atol=2e-4, rtol=1e-4)
    torch.testing.assert_close(steps, whole, atol=2e-4, rtol=1e-4)


def test_reset_of_one_slot_changes_only_that_slot():
    m = small_model().eval()
    x = counts(2, 3, seed=2)
    with torch.no_grad():
        m(x)
        saved = [(h.clone(), c.clone()) for h, c in m.backbone.states]
        nxt = counts(2, 1, seed=3)[:, 0]
        carried = m(nxt)[0]
        m.backbone.set_states(saved)
        m.reset_states(torch.tensor([True, False]))
        after_reset = m(nxt)[0]
        m.reset_states()
        fresh = m(nxt)[0]
    torch.testing.assert_close(after_reset[1], carried[1])  # slot 1 untouched
    torch.testing.assert_close(after_reset[0], fresh[0])  # slot 0 as from a fresh start
    assert not torch.allclose(carried[0], fresh[0])  # and the state mattered


def test_unlabeled_frames_add_nothing_to_the_loss():
    m = small_model().train()
    x = counts(1, 3, seed=4)
    preds = m(x)
    for v in (preds["boxes"], preds["scores"]):
        v.retain_grad()
    batch = {
        "img": x,
        "batch_idx": torch.tensor([1.0, 1.0]),
        "cls": torch.tensor([[0.0], [1.0]]),
        "bboxes": torch.tensor([[0.5, 0.5, 0.2, 0.3], [0.2, 0.2, 0.1, 0.2]]),
        "labeled": torch.tensor([False, True, False]),
    }
    loss, _ = m.loss(batch, preds)
    loss.sum().backward()
    g = preds["scores"].grad
    assert g[1].abs().sum() > 0 and g[0].abs().sum() == 0 and g[2].abs().sum() == 0
    assert preds["boxes"].grad[0].abs().sum() == 0


def test_no_labeled_frame_gives_zero_loss_with_graph():
    m = small_model().train()
    batch = {
        "img": counts(1, 2),
        "batch_idx": torch.zeros(0),
        "cls": torch.zeros(0, 1),
        "bboxes": torch.zeros(0, 4),
        "labeled": torch.tensor([False, False]),
    }
    loss, _ = m.loss(batch)
    assert loss.sum().item() == 0 and loss.requires_grad


def test_copies_and_pickles_carry_no_state():
    m = small_model().eval()
    with torch.no_grad():
        m(counts(2, 2))
    assert m.backbone.states is not None
    ema = copy.deepcopy(m)
    assert ema.backbone.states is None and m.backbone.states is not None
    with torch.no_grad():
        ema(counts(1, 1))
    assert ema.backbone.states[0][0].shape[0] == 1 and m.backbone.states[0][0].shape[0] == 2  # separate banks
    assert pickle.loads(pickle.dumps(m)).backbone.states is None


def test_info_reports_flops_and_leaves_no_state():
    m = small_model()
    layers, params, grads, flops = m.info()
    assert params == sum(p.numel() for p in m.parameters()) and flops > 1
    assert m.backbone.states is None


def test_event_yolo_keeps_stock_models_stock():
    from ultralytics.nn.tasks import DetectionModel

    ours = EventYOLO("rvt-t.yaml")
    assert isinstance(ours.model, EventDetectionModel)
    stock = EventYOLO("yolov8n.yaml")
    assert type(stock.model) is DetectionModel


def test_input_size_error_names_a_size_that_works():
    m = small_model().eval()
    with pytest.raises(ValueError, match="zero-pad bottom/right to 384x640"):
        m(torch.zeros(1, 20, 360, 640))
