"""Hard-negative mining (``hard_negatives``, ``hard_negative_weight``): the weights by hand, the exact extra loss in
Ultralytics' detection loss and in RVT's YOLOX loss, only the fine levels mined, one training step, refusals."""

import pytest
import torch
import torch.nn.functional as F
from ultralytics.cfg import get_cfg
from ultralytics.utils import IterableSimpleNamespace

import yolo_etram.train  # noqa: F401  (registers our train arguments)
from yolo_etram import EventYOLO
from yolo_etram.nn.detection_model import EventDetectionModel
from yolo_etram.nn.hard_negatives import MAX_STRIDE, HardNegatives, fine_anchors, hard_negative_weights
from yolo_etram.utils.errors import UnsupportedOptionError
from yolo_etram.utils.paths import find_cfg


def test_weights_by_hand():
    loss = torch.tensor([[0.1, 0.9, 0.5, 0.3, 5.0, 0.2], [0.4, 0.1, 0.2, 0.8, 0.1, 0.1]])
    negative = torch.tensor([[True, True, False, True, True, True], [True, True, True, True, True, True]])
    fine = torch.tensor([True, True, True, True, False, False])  # the last two anchors: a coarse level
    w = hard_negative_weights(loss, negative, fine, ratio=2, weight=3)
    # image 0: one positive on the fine levels -> 2 hard negatives among fine negatives {0.1, 0.9, 0.3}: 0.9 and 0.3;
    # the coarse 5.0 is never mined. Image 1: no positive -> ceil(2 * 1) = 2: 0.8 and 0.4.
    assert w.tolist() == [[1, 3, 1, 3, 1, 1], [3, 1, 1, 3, 1, 1]]
    assert (hard_negative_weights(loss, negative, fine, ratio=100, weight=2) == 2).sum() == 3 + 4  # capped


def test_settings_and_refusals():
    assert HardNegatives.from_args(IterableSimpleNamespace(hard_negatives=0.0, hard_negative_weight=2.0)) is None
    assert HardNegatives.from_args(None) is None and HardNegatives.from_args({"hard_negatives": 3}).weight == 2.0
    with pytest.raises(UnsupportedOptionError, match=r"hard_negative_weight=0.5: must be >= 1"):
        HardNegatives.from_args({"hard_negatives": 3, "hard_negative_weight": 0.5})
    with pytest.raises(UnsupportedOptionError, match=r"hard_negatives=-1: give the hard negatives per positive"):
        HardNegatives.from_args({"hard_negatives": -1})


def _model(yaml: str, **args) -> EventDetectionModel:
    torch.manual_seed(0)
    model = EventDetectionModel(str(find_cfg(yaml)), nc=3, ch=20, verbose=False)
    model.args = get_cfg(overrides=args)  # Ultralytics' defaults (box 7.5, cls 0.5, dfl 1.5) and ours
    return model


def _loss(model, preds, batch):
    model.criterion = model.init_criterion()
    return model.criterion(preds, batch)


def _empty_batch(n: int) -> dict:
    return {"batch_idx": torch.zeros(0), "cls": torch.zeros(0, 1), "bboxes": torch.zeros(0, 4)}


@pytest.mark.parametrize("yaml", ["rvt-t.yaml", "rvt-t-yolox.yaml"])
def test_the_extra_loss_is_the_mined_negatives_once_more(yaml):
    """Without boxes every anchor is negative and the normaliser is 1: mining adds exactly (weight - 1) times the
    top-k losses of the stride <= 8 anchors (class BCE for Detect, objectness BCE for YOLOX)."""
    plain = _model(yaml)
    x = torch.randn(2, 20, 192, 320)
    plain.train()
    with torch.no_grad():
        preds = plain(x)
    base, _ = _loss(plain, preds, _empty_batch(2))
    mined_model = _model(yaml, hard_negatives=3.0, hard_negative_weight=4.0)
    mined, _ = _loss(mined_model, preds, _empty_batch(2))
    parsed = plain.criterion.parse_output(preds)
    fine = fine_anchors(parsed["feats"], plain.model[-1].stride)
    assert 0 < int(fine.sum()) < fine.numel() and MAX_STRIDE == 8
    if "yolox" in yaml:
        per_anchor = F.binary_cross_entropy_with_logits(
            parsed["obj"].float(), torch.zeros_like(parsed["obj"]), reduction="none"
        )
        per_anchor, term = per_anchor.squeeze(1), 1  # objectness
    else:
        per_anchor = F.binary_cross_entropy_with_logits(
            parsed["scores"], torch.zeros_like(parsed["scores"]), reduction="none"
        ).sum(1)
        term = 1  # class loss, times the cls gain below
    top = per_anchor[:, fine].topk(3, dim=1).values.sum()  # no positives: k = ceil(3 * 1) per image
    gain = 1.0 if "yolox" in yaml else 0.5
    extra = (mined - base)[term] / 2  # the losses come back times the batch size
    assert extra.item() == pytest.approx(3.0 * top.item() * gain, rel=1e-4)
    others = [i for i in range(3) if i != term]
    torch.testing.assert_close(mined[others], base[others])


def test_a_training_step_mines(tiny_events, tmp_path):
    model = EventYOLO("rvt-t.yaml")
    args = dict(max_steps=1, batch=2, imgsz=128, workers=0, val=False, plots=False, project=str(tmp_path))
    model.train(data=str(tiny_events), hard_negatives=3, hard_negative_weight=2, name="mined", **args)
    assert model.trainer.model.criterion.hard_negatives == HardNegatives(3.0, 2.0)
    with pytest.raises(UnsupportedOptionError, match="hard_negative_weight=0.5"):
        EventYOLO("rvt-t.yaml").train(data=str(tiny_events), hard_negatives=3, hard_negative_weight=0.5, **args)


def test_the_mined_loss_copies_and_pickles():
    import copy
    import pickle

    crit = _model("rvt-t.yaml", hard_negatives=3.0).init_criterion()
    for clone in (copy.deepcopy(crit), pickle.loads(pickle.dumps(crit))):
        assert clone.hard_negatives == HardNegatives(3.0, 2.0) and clone.bce.spec == crit.bce.spec
