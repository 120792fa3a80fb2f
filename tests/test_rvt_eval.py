"""``rvt_eval=True``: RVT's thresholds, and RVT's own postprocess on a YOLOX head's raw outputs (ranked by obj*cls,
reported with the head's score), checked against RVT's head outputs from the golden set; exports refused where
they cannot rank so; a standalone validation runs under the preset."""

import numpy as np
import pytest
import torch
from rvt_reference import rvt_yolox_postprocess
from ultralytics.cfg import get_cfg
from ultralytics.utils.nms import non_max_suppression

import yolo_etram.train  # noqa: F401  (registers our arguments)
from yolo_etram import EventYOLO
from yolo_etram.nn import rvt_eval
from yolo_etram.nn.yolox_head import YOLOXDetect
from yolo_etram.utils.errors import UnsupportedOptionError
from yolo_etram.val import EventValidator

LOW = 1e-5  # below every golden score (see the first test)


def _validator(head) -> EventValidator:
    v = EventValidator(args=get_cfg(overrides={"rvt_eval": True}))
    rvt_eval.apply_preset(v.args)
    v.rvt_head = head
    return v


@pytest.mark.parametrize("score", ["cls", "obj_cls"])
def test_rvts_boxes_from_rvts_head_outputs(golden, score, monkeypatch):
    """RVT's decoded head outputs (``rvt_t_io.npz``, made by RVT's own code) through the validator's preset path
    give RVT's postprocess boxes (NMS 0.45), each with the head's score: ``class_conf`` for ``cls``. The golden
    model's random weights score every box below RVT's 0.001 (obj * cls <= 1.1e-4), so the threshold is lowered to
    1e-5 for both sides here."""
    head_out = torch.from_numpy(np.load(golden / "rvt_t_io.npz")["head"]).float()  # (T, 1, A, 5 + nc)
    head = YOLOXDetect(3, ch=(64, 128, 256))
    head.score = score
    v = _validator(head)
    assert (v.args.conf, v.args.iou, v.args.max_det) == (0.001, 0.45, rvt_eval.NO_CAP)
    v.args.conf = LOW
    n_boxes = 0
    for t in range(head_out.shape[0]):
        monkeypatch.setattr(head, "decode_rvt", lambda raw, t=t: head_out[t])
        ours = v.postprocess((torch.zeros(1), {"obj": torch.zeros(1), "scores": torch.zeros(1)}))
        ref = rvt_yolox_postprocess(head_out[t].clone(), 3, conf_thre=LOW, nms_thre=0.45)
        for o, r in zip(ours, ref):
            r = torch.zeros(0, 7) if r is None else r
            n_boxes += len(r)
            torch.testing.assert_close(o["bboxes"], r[:, :4])
            torch.testing.assert_close(o["cls"], r[:, 6])
            torch.testing.assert_close(o["conf"], r[:, 5] if score == "cls" else r[:, 4] * r[:, 5])
    assert n_boxes > 100


def test_the_stock_nms_ranks_a_cls_head_otherwise(monkeypatch):
    """Why the preset runs RVT's postprocess: two overlapping boxes of one class, A (obj 0.1, cls 0.9) and B (obj 0.9,
    cls 0.5). RVT ranks by obj * cls and keeps B; Ultralytics' NMS on a ``score: cls`` column keeps A."""
    p = torch.tensor(
        [[[50.0, 50, 20, 20, 0.1, 0.9, 0.0], [52.0, 50, 20, 20, 0.9, 0.5, 0.0]]]
    )  # cx cy w h obj cls0 cls1
    head = YOLOXDetect(2, ch=(64, 128, 256))
    head.score = "cls"
    monkeypatch.setattr(head, "decode_rvt", lambda raw: p)
    ours = _validator(head).postprocess((torch.zeros(1), {"obj": torch.zeros(1), "scores": torch.zeros(1)}))[0]
    assert ours["bboxes"][:, 0].tolist() == [42.0] and ours["conf"].tolist() == [0.5]  # B, reported with its cls
    column = torch.cat((p[..., :4], p[..., 5:]), -1).transpose(1, 2)  # the score=cls eval column
    stock = non_max_suppression(column, 0.001, 0.45, max_det=10**6)[0]
    assert stock[:, 0].tolist() == [40.0]  # A


def test_exports_that_cannot_rank_as_rvt_are_refused():
    rvt_eval.check_export({"yolox_score": "obj_cls"}, "m.onnx")
    rvt_eval.check_export(None, "m.onnx")
    with pytest.raises(UnsupportedOptionError, match=r"m.onnx: rvt_eval needs the raw head outputs"):
        rvt_eval.check_export({"yolox_score": "cls"}, "m.onnx")


def test_a_validation_runs_under_the_preset(tiny_events, tmp_path, monkeypatch):
    model = EventYOLO("rvt-t-yolox.yaml")
    args = dict(max_steps=1, batch=2, imgsz=128, workers=0, val=False, plots=False, project=str(tmp_path))
    model.train(data=str(tiny_events), name="yolox", **args)
    model.model.model[-1].score = "cls"
    calls = []
    real = rvt_eval.rvt_detections
    monkeypatch.setattr(rvt_eval, "rvt_detections", lambda *a, **k: calls.append(a[2:]) or real(*a, **k))
    metrics = model.val(data=str(tiny_events), rvt_eval=True, batch=1, plots=False, project=str(tmp_path))
    assert calls and all(c == (0.001, 0.45) for c in calls)  # every batch through RVT's postprocess
    assert "prophesee/AP" in metrics.results_dict
