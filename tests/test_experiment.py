"""Experiment records (experiment_results.json), `etram-yolo compare`, and the size-aware loss."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from yolo_etram import EventYOLO
from yolo_etram.metrics.records import compare_table, load_record, metrics_record
from yolo_etram.nn.detection_model import load_model_yaml
from yolo_etram.nn.size_aware_loss import SizeWeightedAssigner, normalised_box_weights, size_weights

FIELDS = (
    "run",
    "command",
    "code",
    "wall_time_s",
    "peak_memory_mib",
    "metrics",
    "model_yaml",
    "data_yaml",
    "train_args",
    "plots",
)


@pytest.fixture(scope="module")
def run(tiny_events, tmp_path_factory):
    project = tmp_path_factory.mktemp("exp")
    data = tmp_path_factory.mktemp("exp_data") / "grouped.yaml"
    import yaml

    d = yaml.safe_load(Path(tiny_events).read_text())
    d["groups"] = {"cars": [1], "others": [0, 2]}
    data.write_text(yaml.safe_dump(d))
    EventYOLO("rvt-t.yaml").train(
        data=str(data),
        epochs=1,
        batch=2,
        workers=0,
        imgsz=128,
        plots=True,
        seed=0,
        project=str(project),
        name="a",
        exist_ok=True,
        lr0=1e-3,
    )
    return project / "a"


@pytest.mark.slow
def test_every_training_run_writes_an_experiment_record(run):
    record = json.loads((run / "experiment_results.json").read_text())
    assert all(k in record for k in FIELDS), sorted(set(FIELDS) - set(record))
    m = record["metrics"]
    assert set(m["prophesee"]) >= {"AP", "AP_50", "AP_75", "AP_S", "AP_M", "AP_L", "AP_all"}
    assert set(m["per_class"]) == {"pedestrian", "vehicle", "micromobility"}
    assert set(m["groups"]) == {"cars", "others"}
    assert set(m["etram_AP50"]) == {"All", "pedestrian", "vehicle", "micromobility"}  # the eTraM paper's columns
    assert m["etram_AP50"]["All"] == m["class_agnostic"]["AP_50"]
    assert set(m["by_size"]) == {"AP_S", "AP_M", "AP_L"}
    assert {"moving", "stationary", "parked"} <= set(m["motion"])  # synthetic data carries motion ground truth
    assert "metrics/mAP50-95(B)" in m["ultralytics"]
    assert record["model_yaml"]["event"]["nbins"] == 10 and record["data_yaml"]["groups"]["cars"] == [1]
    assert record["code"]["ultralytics"] and record["peak_memory_mib"]["rss"] > 100 and record["wall_time_s"] > 0
    assert record["train_args"]["epochs"] == 1
    assert any(p.startswith("confusion_matrix") for p in record["plots"]) and record["confusion_matrix"]
    assert any(c.endswith("best.pt") for c in record["checkpoints"])
    assert (run / "training_command.txt").read_text().strip() == record["command"]
    assert yaml.safe_load((run / "experiment_config.yaml").read_text())["train_args"]["epochs"] == 1
    assert (run / "metrics_summary.txt").read_text().splitlines()[2].startswith("AP ")
    if (Path(__file__).parents[1] / ".git").exists():
        assert len(record["code"]["git_commit"]) == 40


def test_compare_reads_runs_and_prints_deltas(run, tmp_path):
    other = tmp_path / "b"
    shutil.copytree(run, other)
    record = json.loads((other / "experiment_results.json").read_text())
    record["metrics"]["prophesee"]["AP"] = record["metrics"]["prophesee"]["AP"] + 0.125
    (other / "experiment_results.json").write_text(json.dumps(record))
    table = compare_table([load_record(run), load_record(other)])
    ap_row = next(line for line in table.splitlines() if line.startswith("| AP |"))
    assert "(+0.1250)" in ap_row
    assert "| group cars |" in table and "| motion stationary |" in table
    assert "| eTraM AP50 All |" in table and "| eTraM AP50 vehicle |" in table
    out = subprocess.run(
        [sys.executable, "-m", "yolo_etram.cli", "compare", str(run), str(other)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0 and "(+0.1250)" in out.stdout
    out = subprocess.run(
        [sys.executable, "-m", "yolo_etram.cli", "compare", str(tmp_path / "missing")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2 and "no experiment_results.json" in out.stderr and "Traceback" not in out.stderr


def test_metrics_record_keeps_groups_classes_sizes_and_motion():
    p = {
        "AP": 0.3,
        "AP_50": 0.5,
        "AP_75": 0.2,
        "AP_S": 0.1,
        "AP_M": 0.4,
        "AP_L": -1.0,
        "AP_all": 0.35,
        "per_class": {"car": 0.3},
        "groups": {"small": 0.1},
        "subsets": {"moving": {"AP": 0.4, "n_gt": 9}},
    }
    m = metrics_record(p, {"fitness": 0.3})
    assert m["by_size"] == {"AP_S": 0.1, "AP_M": 0.4, "AP_L": -1.0} and m["groups"] == {"small": 0.1}
    assert m["motion"]["moving"]["AP"] == 0.4 and m["ultralytics"]["fitness"] == 0.3


def test_size_weights_fall_with_area_and_average_one():
    area = torch.tensor([0.0, 16.0, 256.0, 1024.0, 4096.0, 1e6])
    w = size_weights(area, a=1.0, tau=1024)
    assert torch.all(w[1:] < w[:-1]) and w[0] == 2 and abs(float(w[-1]) - 1) < 1e-6
    boxes = torch.tensor([[[0, 0, 4, 4], [0, 0, 40, 40], [0, 0, 100, 100], [0, 0, 0, 0]]], dtype=torch.float32)
    mask = torch.tensor([[[1.0], [1.0], [1.0], [0.0]]])
    nw = normalised_box_weights(boxes, mask, 1.0, 1024)
    assert abs(float(nw[0, :3].mean()) - 1) < 1e-6 and nw[0, 0] > nw[0, 1] > nw[0, 2]


def _loss(size_aware, boxes, seed=0):
    from ultralytics.cfg import get_cfg

    from yolo_etram.nn import EventDetectionModel
    from yolo_etram.nn.size_aware_loss import make_size_aware

    torch.manual_seed(seed)
    model = EventDetectionModel("yolov8n.yaml", ch=20, nc=3, verbose=False)
    model.args = get_cfg()
    crit = make_size_aware(model.init_criterion(), size_aware)
    x = torch.rand(2, 20, 64, 64)
    batch = {"batch_idx": torch.tensor([0.0, 0, 1]), "cls": torch.tensor([[0.0], [1], [2]]), "bboxes": boxes}
    loss, _ = crit(model(x), batch)
    return loss.detach()


def test_size_aware_loss_keeps_the_scale_of_equal_boxes_and_weights_small_ones():
    equal = torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.7, 0.6, 0.2, 0.2], [0.5, 0.5, 0.2, 0.2]])
    torch.testing.assert_close(_loss({"a": 2.0, "tau": 100.0}, equal), _loss(None, equal))  # uniform weights: unchanged
    torch.testing.assert_close(_loss({"a": 0.0}, equal), _loss(None, equal))
    mixed = torch.tensor([[0.3, 0.3, 0.05, 0.05], [0.7, 0.6, 0.5, 0.5], [0.5, 0.5, 0.4, 0.4]])
    weighted, plain = _loss({"a": 3.0, "tau": 64.0}, mixed), _loss(None, mixed)
    assert not torch.allclose(weighted, plain)
    assert 0.5 < float(weighted.sum() / plain.sum()) < 2  # same scale: a re-weighting, not a multiplier


def test_size_aware_works_or_refuses_on_every_head():
    """YOLOX head: the YOLOX loss weights; Detect: the assigner; an end-to-end loss (YOLOv10/YOLO26): both of its
    assigners; a loss with no assigner: a one-line refusal, never an unweighted loss."""
    from ultralytics.cfg import get_cfg

    from yolo_etram.nn import EventDetectionModel
    from yolo_etram.nn.size_aware_loss import make_size_aware
    from yolo_etram.nn.yolox_loss import YOLOXLoss
    from yolo_etram.utils.errors import UnsupportedOptionError

    sa = {"a": 1.0, "tau": 256.0}
    yolox = EventDetectionModel({**load_model_yaml("rvt-t-yolox.yaml"), "size_aware": sa}, verbose=False)
    crit = yolox.init_criterion()
    assert isinstance(crit, YOLOXLoss) and (crit.size_aware["a"], crit.size_aware["tau"]) == (1.0, 256.0)
    model = EventDetectionModel({**load_model_yaml("yolov8n.yaml"), "size_aware": sa}, ch=20, nc=3, verbose=False)
    model.args = get_cfg()
    assert isinstance(model.init_criterion().assigner, SizeWeightedAssigner)
    from types import SimpleNamespace

    from ultralytics.utils.tal import TaskAlignedAssigner

    e2e = SimpleNamespace(  # Ultralytics' E2ELoss / E2EDetectLoss: two v8DetectionLoss, one2many and one2one
        one2many=SimpleNamespace(assigner=TaskAlignedAssigner(topk=10)),
        one2one=SimpleNamespace(assigner=TaskAlignedAssigner(topk=1)),
    )
    make_size_aware(e2e, sa)
    assert all(isinstance(p.assigner, SizeWeightedAssigner) for p in (e2e.one2many, e2e.one2one))
    assert e2e.one2one.assigner.topk == 1
    with pytest.raises(UnsupportedOptionError, match="no assigner"):
        make_size_aware(object(), sa)
    with pytest.raises(ValueError, match="takes a >= 0 and tau > 0"):
        make_size_aware(object(), {"a": 1.0, "weights": [1, 2]})


def test_size_feedback_rule_is_bounded_and_keeps_buckets_without_ground_truth():
    """The v2 rule by hand: mean AP 0.2 of (0.05, 0.15, 0.40); targets ((0.2 + 0.01) / (AP + 0.01)) ** 1 clipped to
    [1/4, 4]: 3.5, 1.3125, 0.5122; momentum 0.5 from 1: 2.25, 1.15625, 0.7561."""
    from yolo_etram.nn.size_aware_loss import feedback_update, size_config

    fb = size_config({"feedback": True})["feedback"]
    assert fb == {"gamma": 1.0, "momentum": 0.5, "max": 4.0}
    new = feedback_update([1.0, 1.0, 1.0], {"S": 0.05, "M": 0.15, "L": 0.40}, fb)
    assert new == pytest.approx([2.25, 1.15625, 0.5 + 0.5 * 0.21 / 0.41], rel=1e-12)
    worst = feedback_update([1.0] * 3, {"S": 0.0, "M": 0.5, "L": None}, fb)  # L: no ground truth (COCO's -1 or None)
    assert worst[0] == pytest.approx(0.5 + 0.5 * 4.0) and worst[2] == 1.0  # S capped at max = 4
    w = [1.0] * 3
    for _ in range(50):  # bounded however long it runs
        w = feedback_update(w, {"S": 0.0, "M": 0.9, "L": -1.0}, fb)
    # S: target ((0.45 + 0.01) / 0.01) = 46, capped at max = 4; M: 0.46 / 0.91; the momentum converges on both
    assert w[0] == pytest.approx(4.0, abs=1e-9) and w[1] == pytest.approx(0.46 / 0.91, rel=1e-9) and w[2] == 1.0
    assert feedback_update([2.0, 1.0, 0.5], {}, fb) == [2.0, 1.0, 0.5]
    assert size_config({"feedback": True})["bucket_weights"] == [1.0, 1.0, 1.0]
    for bad in ({"feedback": {"momentum": 0}}, {"feedback": {"max": 0.5}}, {"bucket_weights": [1, 2]}):
        with pytest.raises(ValueError, match="size_aware"):
            size_config(bad)


def test_bucket_weights_scale_boxes_by_coco_size_on_both_heads():
    """A bucket's weight multiplies its boxes (COCO bounds: area < 32^2 small, < 96^2 medium), before the mean-1
    normalisation; the criteria of both heads take new weights in place."""
    from yolo_etram.nn.size_aware_loss import box_weights, set_bucket_weights
    from yolo_etram.nn.yolox_loss import YOLOXLoss

    area = torch.tensor([31.0**2, 32.0**2, 95.0**2, 96.0**2])
    cfg = {"a": 0.0, "tau": 1.0, "bucket_weights": [4.0, 2.0, 1.0]}
    w = box_weights(area, cfg)
    torch.testing.assert_close(w, torch.tensor([4.0, 2.0, 2.0, 1.0]) / 2.25)
    fake = type("M", (), {"model": [type("H", (), {"nc": 3, "stride": torch.tensor([8.0])})()]})()
    yolox = YOLOXLoss(fake, size_aware={"feedback": True})
    set_bucket_weights(yolox, [3.0, 1.0, 1.0])
    assert yolox.size_aware["bucket_weights"] == [3.0, 1.0, 1.0]
    from ultralytics.utils.tal import TaskAlignedAssigner

    detect = type("L", (), {})()
    detect.assigner = SizeWeightedAssigner(TaskAlignedAssigner(), bucket_weights=[1.0, 1.0, 1.0])
    set_bucket_weights(detect, [1.0, 2.0, 3.0])
    assert detect.assigner.bucket_weights == [1.0, 2.0, 3.0]


def test_size_weighted_assigner_is_transparent_to_attribute_reads():
    from ultralytics.utils.tal import TaskAlignedAssigner

    wrapped = SizeWeightedAssigner(TaskAlignedAssigner(topk=10, num_classes=3), a=1.0, tau=10.0)
    assert wrapped.topk == 10 and wrapped.num_classes == 3
    with pytest.raises(ValueError, match="tau > 0"):
        SizeWeightedAssigner(TaskAlignedAssigner(), a=1.0, tau=0)


def test_data_yaml_size_aware_reaches_the_loss(tiny_events, tmp_path):
    import yaml

    from yolo_etram.train import EventTrainer

    d = {**yaml.safe_load(Path(tiny_events).read_text()), "size_aware": {"a": 2.0, "tau": 256}}
    data = tmp_path / "sa.yaml"
    data.write_text(yaml.safe_dump(d))
    trainer = EventTrainer(
        overrides=dict(
            model="rvt-t.yaml",
            data=str(data),
            epochs=1,
            batch=2,
            project=str(tmp_path),
            name="sa",
            workers=0,
            plots=False,
        )
    )
    trainer.data = trainer.get_dataset()
    model = trainer.get_model("rvt-t.yaml", verbose=False)
    model.args = trainer.args
    crit = model.init_criterion()
    assert isinstance(crit.assigner, SizeWeightedAssigner) and crit.assigner.a == 2.0 and crit.assigner.tau == 256
    plain = EventTrainer(
        overrides=dict(
            model="rvt-t.yaml",
            data=str(tiny_events),
            epochs=1,
            batch=2,
            project=str(tmp_path),
            name="p",
            workers=0,
            plots=False,
        )
    )
    plain.data = plain.get_dataset()
    m = plain.get_model("rvt-t.yaml", verbose=False)
    m.args = plain.args
    assert not isinstance(m.init_criterion().assigner, SizeWeightedAssigner)  # off by default
