"""Training with truncated BPTT on event streams, validation with the Prophesee protocol, resume."""

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from ultralytics.utils import LOGGER

from yolo_etram import EventYOLO
from yolo_etram.integrations.ultralytics import patched
from yolo_etram.metrics.plots import plot_validation_history
from yolo_etram.metrics.prophesee import evaluate_folder
from yolo_etram.val import ap_text

TRAIN = dict(batch=2, workers=0, imgsz=128, plots=False, val=True, seed=0, deterministic=True, exist_ok=True)


def results(run: Path) -> list[dict]:
    with open(run / "results.csv") as f:
        return [{k.strip(): float(v or "nan") for k, v in row.items()} for row in csv.DictReader(f)]


@pytest.mark.slow
def test_two_short_epochs_lower_the_loss_and_report_prophesee(tiny_events, tmp_path):
    model = EventYOLO("rvt-t.yaml")
    model.train(data=str(tiny_events), epochs=2, project=str(tmp_path), name="run", lr0=1e-3, **TRAIN)
    rows = results(tmp_path / "run")
    assert len(rows) == 2
    # the loss on the fixed validation data (the train loss of a TAL detector rises while assignments fill up)
    loss = [sum(v for k, v in r.items() if k.startswith("val/") and k.endswith("_loss")) for r in rows]
    assert loss[1] < loss[0], loss
    assert "prophesee/AP" in rows[0] and "prophesee/AP_all" in rows[0]
    ckpt = torch.load(tmp_path / "run" / "weights" / "last.pt", weights_only=False)
    backbone = ckpt["model"].model[0]
    assert backbone.states is None  # checkpoints carry no recurrent state
    assert backbone.partition_size == (3, 4)  # the data's partition, saved with the model


@pytest.mark.slow
def test_results_csv_keeps_its_columns_and_plots(tiny_events, tmp_path):
    """Epochs without validation, then the validated last one (with save_json, which makes Ultralytics add COCO
    size columns): one set of columns, read by the parser Ultralytics' results plot uses, and the plot is drawn."""
    import polars as pl
    from ultralytics.utils.plotting import plot_results

    model = EventYOLO("rvt-t.yaml")
    model.train(
        data=str(tiny_events), epochs=2, project=str(tmp_path), name="csv", **{**TRAIN, "val": False}, save_json=True
    )
    csv_file = tmp_path / "csv" / "results.csv"
    widths = {line.count(",") for line in csv_file.read_text().splitlines()}
    assert len(widths) == 1, widths
    table = pl.read_csv(csv_file.read_bytes(), infer_schema_length=None)
    names = model.trainer.data["names"].values()
    assert table.height == 2 and {"prophesee/AP", "prophesee/AP_all", "etram/AP50_all"} <= set(table.columns)
    assert {f"etram/AP50_{n}" for n in names} <= set(table.columns)
    # epoch 1 was not validated: its validation cells are empty, not 0 (train losses and lr are filled)
    validation = [c for c in table.columns if c.startswith(("metrics/", "prophesee/", "etram/", "val/"))]
    assert all(table[c][0] is None for c in validation), table.row(0, named=True)
    assert all(table[c][1] is not None for c in validation)
    assert all(table[c][0] is not None for c in table.columns if c.startswith(("train/", "lr/")))
    assert table["prophesee/AP"][1] == pytest.approx(model.trainer.validator.prophesee["AP"], abs=1e-6)
    errors = []
    with patched(LOGGER, "error", errors.append):
        plot_results(file=csv_file)
    assert errors == [] and (tmp_path / "csv" / "results.png").is_file()
    assert plot_validation_history(csv_file, tmp_path / "history.png").stat().st_size > 10_000  # ours: the APs


def oracle_postprocess(validator):
    """Predictions = the batch's ground truth (conf 0.9): exercises the whole scoring path with a known answer."""

    def postprocess(preds):
        batch = validator._current_batch
        hp, wp = batch["img"].shape[-2:]
        frames = batch["img"].shape[0] * batch["img"].shape[1]
        out = []
        for f in range(frames):
            sel = batch["batch_idx"] == f
            xywh = batch["bboxes"][sel] * torch.tensor([wp, hp, wp, hp])
            xyxy = torch.cat([xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2], 1)
            out.append(
                {
                    "bboxes": xyxy,
                    "conf": torch.full((len(xyxy),), 0.9),
                    "cls": batch["cls"][sel].view(-1),
                    "extra": torch.zeros(len(xyxy), 0),
                }
            )
        return out

    return postprocess


def test_validator_scores_labeled_frames_and_matches_pycocotools_on_saved_files(tiny_events, tmp_path, monkeypatch):
    from yolo_etram.val import EventValidator

    stock_preprocess = EventValidator.preprocess

    def preprocess(self, batch):
        batch = stock_preprocess(self, batch)
        self._current_batch = batch
        return batch

    monkeypatch.setattr(EventValidator, "preprocess", preprocess)
    monkeypatch.setattr(EventValidator, "postprocess", lambda self, preds: oracle_postprocess(self)(preds))
    model = EventYOLO("rvt-t.yaml")
    metrics = model.val(
        data=str(tiny_events),
        split="val",
        batch=2,
        save_json=True,
        plots=False,
        project=str(tmp_path),
        name="val",
        exist_ok=True,
    )
    assert metrics["prophesee/AP"] == pytest.approx(1.0)  # perfect predictions
    saved = sorted(p.name for p in (tmp_path / "val").glob("*.npy"))
    assert saved == ["synth_val_0000_gt.npy", "synth_val_0000_gt_motion.npy", "synth_val_0000_pred.npy"]
    ref = evaluate_folder(
        tmp_path / "val",
        classes=["pedestrian", "vehicle", "micromobility"],
        height=96,
        width=128,
        min_box_diag=8,
        min_box_side=3,
        backend="pycocotools",
    )
    assert ref["AP"] == pytest.approx(metrics["prophesee/AP"], abs=1e-9)
    gt = np.load(tmp_path / "val" / "synth_val_0000_gt.npy")
    assert len(np.unique(gt["t"])) > 5 and (gt["x"] + gt["w"]).max() <= 128


@pytest.mark.slow
def test_resume_continues_an_interrupted_run(tiny_events, tmp_path):
    class Stop(Exception):
        pass

    def stop_after_first_epoch(trainer):
        if trainer.epoch == 0:
            raise Stop

    model = EventYOLO("rvt-t.yaml")
    model.add_callback("on_fit_epoch_end", stop_after_first_epoch)
    with pytest.raises(Stop):
        model.train(data=str(tiny_events), epochs=2, project=str(tmp_path), name="run", **TRAIN)
    last = tmp_path / "run" / "weights" / "last.pt"
    assert last.is_file() and len(results(tmp_path / "run")) == 1
    EventYOLO(str(last)).train(resume=True)
    rows = results(tmp_path / "run")
    assert [int(r["epoch"]) for r in rows] == [1, 2]


def test_non_finite_loss_stops_training_naming_the_step(tiny_events, tmp_path, monkeypatch):
    from yolo_etram.nn import EventDetectionModel
    from yolo_etram.utils.errors import NonFiniteLossError

    stock_loss = EventDetectionModel.loss
    calls = {"n": 0}

    def loss_nan_on_second_batch(self, batch, preds=None):
        loss, items = stock_loss(self, batch, preds)
        calls["n"] += 1
        return (loss * float("nan"), items) if calls["n"] == 2 else (loss, items)

    monkeypatch.setattr(EventDetectionModel, "loss", loss_nan_on_second_batch)
    model = EventYOLO("rvt-t.yaml")
    with pytest.raises(NonFiniteLossError, match="non-finite loss at epoch 1, batch 2 of this run"):
        model.train(data=str(tiny_events), epochs=1, project=str(tmp_path), name="nan", **TRAIN)


@pytest.mark.slow
def test_tensorboard_logs_prophesee_metrics_of_validated_epochs_and_the_graph(tiny_events, tmp_path):
    """Ultralytics' TensorBoard callback (off under pytest, so in a child process), switched on as a user does; and
    the metric loggers (W&B, MLflow, ClearML, ...) see no stale validation metrics on epochs without validation."""
    import json
    import os
    import subprocess
    import sys

    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    script = (
        "import sys\n"
        "from ultralytics.utils import SETTINGS\n"
        "SETTINGS.update(tensorboard=True)\n"
        "import json\n"
        "from yolo_etram import EventYOLO\n"
        "seen = []\n"  # a stand-in for W&B/MLflow/ClearML, which log trainer.metrics the same way
        "def log_metrics(trainer):\n"
        "    seen.append(sorted(trainer.metrics))\n"
        "log_metrics.__module__ = 'ultralytics.utils.callbacks.mlflow'\n"
        "model = EventYOLO('rvt-t.yaml')\n"
        "model.add_callback('on_fit_epoch_end', log_metrics)\n"
        "model.train(data=sys.argv[1], epochs=2, batch=2, workers=0, imgsz=128, plots=False,\n"
        "    project=sys.argv[2], name='tb', val=False, seed=0)\n"
        "open(sys.argv[2] + '/mlflow.json', 'w').write(json.dumps(seen))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}
    env.update(YOLO_CONFIG_DIR=str(tmp_path / "settings"), YOLO_VERBOSE="True")
    out = subprocess.run(
        [sys.executable, "-c", script, str(tiny_events), str(tmp_path)], capture_output=True, text=True, env=env
    )
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    assert "model graph added" in out.stdout + out.stderr and "WARNING" not in out.stdout + out.stderr
    (events,) = (tmp_path / "tb").glob("events.out.tfevents.*")
    log = EventAccumulator(str(events))
    log.Reload()
    scalars = set(log.Tags()["scalars"])
    assert {"prophesee/AP", "prophesee/AP_all", "etram/AP50_all", "train/box_loss"} <= scalars
    # epoch 1 was not validated: no metric at step 1 (Ultralytics would log 0); epoch 2, then best.pt at step 3
    assert [e.step for e in log.Scalars("prophesee/AP")] == [2, 3]
    assert [e.step for e in log.Scalars("train/box_loss")] == [1, 2]
    assert log.Tags()["graph"]
    logged = json.loads((tmp_path / "mlflow.json").read_text())
    # epoch 1 not validated: no stale validation metrics; epoch 2 and best.pt's final validation: ours with the stock
    assert len(logged) == 3 and logged[0] == [], logged
    for metrics in logged[1:]:
        assert {"prophesee/AP", "etram/AP50_all", "metrics/mAP50-95(B)"} <= set(metrics)


def test_max_steps_ends_the_run_at_the_step_count_and_resumes_to_it(tiny_events, tmp_path):
    """RVT's recipes train for a number of steps: ``max_steps`` runs as many epochs as they need (one optimizer step
    per batch), cuts the last one at the count, and a run interrupted after its first epoch resumes to the same
    count."""

    class Stop(Exception):
        pass

    def count(trainer):
        steps.append(trainer.epoch)

    steps = []
    kw = dict(data=str(tiny_events), epochs=50, project=str(tmp_path), **{**TRAIN, "val": False})
    probe = EventYOLO("rvt-t.yaml")
    probe.add_callback("on_train_batch_end", count)
    probe.train(max_steps=1, name="probe", **kw)
    per_epoch = len(probe.trainer.train_loader)
    assert steps == [0] and probe.trainer.epochs == 1 and per_epoch > 2
    total = per_epoch + 2  # two epochs, the second cut after 2 steps
    steps.clear()
    model = EventYOLO("rvt-t.yaml")
    model.add_callback("on_train_batch_end", count)
    model.train(max_steps=total, name="whole", **kw)
    assert steps == [0] * per_epoch + [1, 1] and model.trainer.epochs == 2 and len(results(tmp_path / "whole")) == 2

    def stop(trainer):
        if trainer.epoch == 0:
            raise Stop

    steps.clear()
    cut = EventYOLO("rvt-t.yaml")
    cut.add_callback("on_train_batch_end", count)
    cut.add_callback("on_fit_epoch_end", stop)
    with pytest.raises(Stop):
        cut.train(max_steps=total, name="cut", **kw)
    resumed = EventYOLO(str(tmp_path / "cut" / "weights" / "last.pt"))
    resumed.add_callback("on_train_batch_end", count)
    resumed.train(resume=True)
    assert steps == [0] * per_epoch + [1, 1] and resumed.trainer.epochs == 2


def test_max_steps_with_accumulation_is_refused_in_one_line(tiny_events, tmp_path):
    from yolo_etram.utils.errors import UnsupportedOptionError

    with pytest.raises(UnsupportedOptionError, match="max_steps counts optimizer steps as batches; nbs=8"):
        EventYOLO("rvt-t.yaml").train(data=str(tiny_events), max_steps=5, nbs=8, project=str(tmp_path), **TRAIN)


def test_the_log_says_when_coco_has_no_boxes_of_a_kind():
    assert ap_text(0.12345) == "0.1235" and ap_text(0.0) == "0.0000"
    assert ap_text(-1.0) == ap_text(float("nan")) == "n/a (no boxes)"  # COCO's -1: no large boxes, say
