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
