"""State never leaks between sequences (training batches, validation, prediction); interrupted work loses nothing
(training resumes on the same schedule, an abandoned stream leaves a readable video); non-finite outputs are named."""

import copy
import csv
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml

from yolo_etram import EventYOLO
from yolo_etram.data.dataset import EventClipDataset, collate_clips
from yolo_etram.nn import set_partition
from yolo_etram.train import EventTrainer

TRAIN = dict(batch=2, workers=0, imgsz=128, plots=False, val=True, seed=0, deterministic=True, exist_ok=True, lr0=1e-3)


def split_of(tiny_events: Path, split: str) -> Path:
    return Path(yaml.safe_load(Path(tiny_events).read_text())["path"]) / split


def test_training_batch_resets_exactly_the_slots_that_start_a_sequence(tiny_events):
    """A slot that starts a new sequence computes what a fresh model computes; the other slot keeps its state."""
    torch.manual_seed(0)
    model = EventYOLO("rvt-t.yaml").model.eval()
    set_partition(model, (3, 4))
    ds = EventClipDataset(split_of(tiny_events, "train"), seq_len=3)
    a, b = ds[0], ds[1]  # two clips: slot 0 runs a then b (b starts a new sequence), slot 1 runs a twice
    trainer = SimpleNamespace(model=model, device=torch.device("cpu"))
    first = EventTrainer.preprocess_batch(trainer, collate_clips([a, a]))
    with torch.no_grad():
        model(first["img"])
        second = collate_clips([b, a])
        second["is_first"] = torch.tensor([True, False])
        out = model(EventTrainer.preprocess_batch(trainer, second)["img"])[0]
        model.reset_states()
        fresh = model(EventTrainer.preprocess_batch(trainer, collate_clips([b]))["img"])[0]
    torch.testing.assert_close(out[:3], fresh)  # slot 0: nothing of clip a left
    model.reset_states()
    with torch.no_grad():
        alone = model(EventTrainer.preprocess_batch(trainer, collate_clips([a]))["img"])[0]
    assert not torch.allclose(out[3:], alone)  # slot 1 carried its state on (a second pass differs from a fresh one)


@pytest.mark.slow
def test_validation_of_a_sequence_does_not_depend_on_what_its_slot_ran_before(tiny_events, tmp_path):
    """One slot streams sequence A then B; B's predictions equal those of B validated alone."""
    root = Path(yaml.safe_load(Path(tiny_events).read_text())["path"])
    a, b = next((root / "val").iterdir()), next((root / "test").iterdir())
    for split, seqs in (("both", (a, b)), ("alone", (b,))):
        for s in seqs:
            shutil.copytree(s, tmp_path / "data" / split / s.name)
    data = {
        **yaml.safe_load(Path(tiny_events).read_text()),
        "path": str(tmp_path / "data"),
        "val": "both",
        "test": "alone",
    }
    (tmp_path / "d.yaml").write_text(yaml.safe_dump(data))
    torch.manual_seed(0)
    model = EventYOLO("rvt-t.yaml")
    weights = tmp_path / "m.pt"
    model.save(weights)
    preds = {}
    for split in ("val", "test"):
        EventYOLO(str(weights)).val(
            data=str(tmp_path / "d.yaml"),
            split=split,
            batch=1,
            save_json=True,
            plots=False,
            conf=0.001,
            project=str(tmp_path),
            name=split,
            exist_ok=True,
        )
        preds[split] = np.load(tmp_path / split / f"{b.name}_pred.npy")
    assert len(preds["test"]) > 0
    np.testing.assert_array_equal(preds["val"], preds["test"])


@pytest.mark.slow
def test_resume_continues_on_the_same_schedule(tiny_events, tmp_path):
    """Killed after epoch 1 and resumed, a run has the learning rates of an uninterrupted run and starts epoch 2 with
    the optimizer state it saved. (Ultralytics resumes from the EMA weights, so its losses differ from an
    uninterrupted run's; the recurrent state starts fresh, as it does at every epoch start anyway.)"""

    class Stop(Exception):
        pass

    def stop_after_first_epoch(trainer):
        if trainer.epoch == 0:
            raise Stop

    def rows(run):
        with open(run / "results.csv") as f:
            return [{k.strip(): float(v or "nan") for k, v in r.items()} for r in csv.DictReader(f)]

    EventYOLO("rvt-t.yaml").train(data=str(tiny_events), epochs=2, project=str(tmp_path), name="whole", **TRAIN)
    model = EventYOLO("rvt-t.yaml")
    model.add_callback("on_fit_epoch_end", stop_after_first_epoch)
    with pytest.raises(Stop):
        model.train(data=str(tiny_events), epochs=2, project=str(tmp_path), name="cut", **TRAIN)
    last = tmp_path / "cut" / "weights" / "last.pt"
    saved = torch.load(last, weights_only=False)["optimizer"]
    seen = {}
    resumed = EventYOLO(str(last))
    resumed.add_callback(
        "on_train_start",  # a copy: training goes on to update the state in place
        lambda t: seen.update(state=copy.deepcopy(t.optimizer.state_dict()), epoch=t.start_epoch),
    )
    resumed.train(resume=True)
    assert seen["epoch"] == 1
    assert saved["state"] and seen["state"]["state"].keys() == saved["state"].keys()
    for k, v in saved["state"].items():
        for name in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(seen["state"]["state"][k][name].float(), v[name].float())
    whole, cut = rows(tmp_path / "whole"), rows(tmp_path / "cut")
    assert [r["epoch"] for r in cut] == [1, 2]
    for key in ("lr/pg0", "lr/pg1", "lr/pg2"):
        assert [r[key] for r in cut] == pytest.approx([r[key] for r in whole], rel=1e-9)


@pytest.mark.slow
def test_size_aware_feedback_is_logged_checkpointed_and_resumed(tiny_events, tmp_path):
    """Size-aware loss v2: the bucket weights follow the rule from each validation's AP_S/M/L, are logged in
    results.csv, saved in last.pt's model YAML and the experiment record, and a resumed run trains on exactly them."""
    from yolo_etram.nn.size_aware_loss import feedback_update, size_config

    class Stop(Exception):
        pass

    def stop_after_first_epoch(trainer):
        if trainer.epoch == 0:
            raise Stop

    data = yaml.safe_load(tiny_events.read_text())
    data["size_aware"] = {"a": 0.0, "tau": 256, "feedback": {"gamma": 1.0, "momentum": 1.0, "max": 4.0}}
    data["path"] = str((tiny_events.parent / (data.get("path") or ".")).resolve())  # absolute stays absolute
    (tmp_path / "sa.yaml").write_text(yaml.safe_dump(data))
    model = EventYOLO("rvt-t.yaml")
    model.add_callback("on_fit_epoch_end", stop_after_first_epoch)
    with pytest.raises(Stop):
        model.train(data=str(tmp_path / "sa.yaml"), epochs=2, project=str(tmp_path), name="cut", **TRAIN)
    with open(tmp_path / "cut" / "results.csv") as f:
        row = {k.strip(): v for k, v in next(csv.DictReader(f)).items()}
    logged = [float(row[f"size_aware/w_{b}"]) for b in "SML"]
    ap = {b: float(row[f"prophesee/AP_{b}"]) for b in "SML"}
    fb = size_config(data["size_aware"])["feedback"]
    assert logged == pytest.approx(feedback_update([1.0, 1.0, 1.0], ap, fb), rel=1e-5)
    last = tmp_path / "cut" / "weights" / "last.pt"
    saved = torch.load(last, weights_only=False)["ema"].yaml["size_aware"]["bucket_weights"]
    assert saved == pytest.approx(logged, rel=1e-5)
    seen = {}

    def first_batch(trainer):
        if "loss" not in seen:
            seen["loss"] = unwrap(trainer.model).criterion.assigner.bucket_weights

    from ultralytics.utils.torch_utils import unwrap_model as unwrap

    resumed = EventYOLO(str(last))
    resumed.add_callback("on_train_start", lambda t: seen.update(yaml=unwrap(t.model).yaml["size_aware"]))
    resumed.add_callback("on_train_batch_end", first_batch)
    resumed.train(resume=True)
    assert seen["yaml"]["bucket_weights"] == saved and seen["loss"] == saved
    with pytest.raises(Exception, match="needs val=True"):
        EventYOLO("rvt-t.yaml").train(
            data=str(tmp_path / "sa.yaml"), epochs=1, project=str(tmp_path), name="noval", **{**TRAIN, "val": False}
        )


def test_abandoned_prediction_stream_leaves_a_readable_video(tmp_path):
    import cv2
    from test_predict import recording, tiny_model

    rec = recording(tmp_path / "rec_td.h5", seconds=1.0)
    stream = tiny_model().predict(str(rec), stream=True, save=True, project=str(tmp_path), name="p", verbose=False)
    for i, _ in enumerate(stream):
        if i == 4:
            break
    stream.close()  # what garbage collection does to an abandoned generator
    videos = list((tmp_path / "p").glob("*.*"))
    assert len(videos) == 1
    cap = cv2.VideoCapture(str(videos[0]))
    frames = 0
    while cap.read()[0]:
        frames += 1
    cap.release()
    assert frames == 5


def test_non_finite_model_output_is_named_by_recording_and_time(tmp_path):
    from test_predict import recording, tiny_model

    from yolo_etram.utils.errors import NonFiniteOutputError

    rec = recording(tmp_path / "rec_td.h5", seconds=0.5)
    model = tiny_model()
    with torch.no_grad():
        next(model.model.parameters()).fill_(float("nan"))
    with pytest.raises(
        NonFiniteOutputError,
        match=r"rec_td\.h5: the model's output is NaN or infinite for the window "
        r"ending at 0\.050 s \(window 1 of",
    ):
        list(model.predict(str(rec), stream=True, verbose=False))
