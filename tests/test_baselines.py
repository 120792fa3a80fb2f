"""Memoryless baselines on event data: stock Ultralytics YAMLs, the 2-channel event-frame input, and a recurrent model
with its state reset at every window."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from events_fixture import raw_dir

from yolo_etram import EventYOLO
from yolo_etram.nn import EventDetectionModel, event_frame, stateful_layers

TRAIN = dict(workers=0, imgsz=128, plots=False, seed=0, deterministic=True, exist_ok=True, lr0=1e-3)


def data_variant(tiny_events: Path, tmp_path: Path, **changes) -> Path:
    d = {**yaml.safe_load(Path(tiny_events).read_text()), **changes}
    path = tmp_path / "data.yaml"
    path.write_text(yaml.safe_dump(d))
    return path


@pytest.fixture(scope="module")
def stock_run(tiny_events, tmp_path_factory):
    """yolov8n.yaml trained two short epochs on the tiny event data, validating every epoch."""
    project = tmp_path_factory.mktemp("stock")
    model = EventYOLO("yolov8n.yaml")
    model.train(
        data=str(tiny_events), epochs=2, batch=6, project=str(project), name="run", val=True, save_json=True, **TRAIN
    )
    return project / "run"


@pytest.mark.slow
def test_stock_yaml_trains_on_events_and_validates_with_prophesee(stock_run):
    rows = (stock_run / "results.csv").read_text().splitlines()
    assert len(rows) == 3 and "prophesee/AP" in rows[0] and "prophesee/AP_all" in rows[0]
    ckpt = torch.load(stock_run / "weights" / "last.pt", weights_only=False)
    model = ckpt["model"]
    assert isinstance(model, EventDetectionModel) and not stateful_layers(model)
    assert model.model[0].conv.in_channels == 20  # the histogram's channels, not RGB
    assert model.yaml["event"]["nbins"] == 10  # predicts on raw recordings alone
    assert ckpt["train_args"]["model"].endswith("yolov8n.yaml")


@pytest.mark.slow
def test_stock_model_trains_on_single_random_windows(tiny_events, tmp_path):
    from yolo_etram.train import EventTrainer

    trainer = EventTrainer(
        overrides=dict(
            model="yolov8n.yaml", data=str(tiny_events), epochs=1, batch=4, project=str(tmp_path), name="t", **TRAIN
        )
    )
    trainer.data = trainer.get_dataset()
    trainer.model = trainer.get_model("yolov8n.yaml", verbose=False)
    loader = trainer.get_dataloader(trainer.data["train"], 4, mode="train")
    batch = next(iter(loader))
    assert batch["img"].shape[:2] == (4, 1) and bool(batch["labeled"].all())
    rec = EventTrainer(
        overrides=dict(
            model="rvt-t.yaml", data=str(tiny_events), epochs=1, batch=2, project=str(tmp_path), name="r", **TRAIN
        )
    )
    rec.data = rec.get_dataset()
    rec.model = rec.get_model("rvt-t.yaml", verbose=False)
    assert next(iter(rec.get_dataloader(rec.data["train"], 2, mode="train")))["img"].shape[:2] == (2, 3)  # stream


@pytest.mark.slow
def test_stock_model_predicts_on_a_raw_recording_and_exports_onnx(stock_run, tiny_events, tmp_path):
    raw = raw_dir(tiny_events) / "test"
    recording = sorted(raw.glob("*_td.h5"))[0]
    model = EventYOLO(str(stock_run / "weights" / "best.pt"))
    ours = list(model.predict(str(recording), stream=True, conf=0.01, verbose=False))
    assert len(ours) == 32 and ours[0].orig_img.shape[:2] == (96, 128)
    onnx_file = model.export(format="onnx", imgsz=(96, 128))
    import onnxruntime as ort

    session = ort.InferenceSession(onnx_file, providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["images"]  # no state inputs
    assert json.loads(session.get_modelmeta().custom_metadata_map["event"])["nbins"] == 10
    exported = list(EventYOLO(onnx_file).predict(str(recording), stream=True, conf=0.01, verbose=False))
    assert len(exported) == len(ours)
    for a, b in zip(ours, exported):
        assert len(a.boxes) == len(b.boxes)
        if len(a.boxes):
            np.testing.assert_allclose(a.boxes.xyxy.numpy(), b.boxes.xyxy.numpy(), atol=1e-2)


def test_stock_yaml_without_event_data_stays_stock():
    from ultralytics.models.yolo.detect import DetectionTrainer

    model = EventYOLO("yolov8n.yaml")
    assert not model.is_event_model and model.task_map["detect"]["trainer"] is DetectionTrainer
    model._note_event_input(data="coco8.yaml")
    assert not model.is_event_model


def test_event_data_makes_a_stock_yaml_an_event_model(tiny_events):
    from yolo_etram.train import EventTrainer

    model = EventYOLO("yolov8n.yaml")
    model._note_event_input(data=str(tiny_events))
    assert model.is_event_model and model.task_map["detect"]["trainer"] is EventTrainer


def test_event_frame_input_sums_time_bins_per_polarity():
    x = torch.arange(2 * 20 * 4 * 4, dtype=torch.float32).reshape(2, 20, 4, 4)
    frame = event_frame(x)
    assert frame.shape == (2, 2, 4, 4)
    torch.testing.assert_close(frame[:, 0], x[:, :10].sum(1))  # channel p * nbins + bin: polarity-major
    torch.testing.assert_close(frame[:, 1], x[:, 10:].sum(1))
    event = {"input": "event_frame", "nbins": 10, "channels": 20}
    model = EventDetectionModel(
        {**EventYOLO("yolov8n.yaml").model.yaml, "event": event}, ch=20, nc=3, verbose=False
    ).eval()
    assert model.model[0].conv.in_channels == 2 and model.yaml["channels"] == 20
    hist = torch.rand(1, 20, 64, 96) * 5
    with torch.no_grad():
        torch.testing.assert_close(model(hist)[0], model(event_frame(hist))[0])  # histograms in, frames inside


def test_event_frame_data_key_trains_a_2_channel_model(tiny_events, tmp_path):
    from yolo_etram.nn import set_partition
    from yolo_etram.train import EventTrainer

    data = data_variant(tiny_events, tmp_path, input="event_frame")
    trainer = EventTrainer(
        overrides=dict(model="rvt-t.yaml", data=str(data), epochs=1, batch=2, project=str(tmp_path), name="f", **TRAIN)
    )
    trainer.data = trainer.get_dataset()
    model = trainer.get_model("rvt-t.yaml", verbose=False)
    first_conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert first_conv.in_channels == 2
    assert model.event["input"] == "event_frame"
    set_partition(model, trainer.data["partition"])
    out = model.eval()(torch.rand(1, 20, 96, 128))
    assert out[0].shape[1] == 4 + 3


def test_memoryless_ablation_forgets_between_windows():
    from yolo_etram.nn import set_partition

    event = {"memory": False}
    yaml_dict = EventDetectionModel("rvt-t.yaml", ch=20, nc=3, verbose=False).yaml
    torch.manual_seed(0)
    recurrent = EventDetectionModel({**yaml_dict}, ch=20, nc=3, verbose=False).eval()
    ablation = EventDetectionModel({**yaml_dict, "event": event}, ch=20, nc=3, verbose=False).eval()
    ablation.load_state_dict(recurrent.state_dict())
    for m in (recurrent, ablation):
        set_partition(m, (3, 4))  # fits 96x128
    assert recurrent.has_memory and not ablation.has_memory
    a, b = torch.rand(1, 20, 96, 128), torch.rand(1, 20, 96, 128)
    with torch.no_grad():
        fresh = ablation(b)[0]
        ablation(a)
        after_a = ablation(b)[0]
        torch.testing.assert_close(after_a, fresh)  # nothing carried over
        clip = ablation(torch.stack([a, b], 1))[0]  # a (B, T) clip: every window on its own
        torch.testing.assert_close(clip[1:], fresh)
        recurrent(a)
        assert not torch.allclose(recurrent(b)[0], fresh)  # the recurrent model does carry state
        assert all(m.states is None for m in stateful_layers(ablation))


@pytest.mark.slow
def test_plain_yolo_command_trains_a_stock_yaml_on_event_data(tiny_events, tmp_path):
    yolo = Path(sys.executable).parent / "yolo"
    if not yolo.exists():
        pytest.skip("the yolo console script is not installed in this environment")
    out = subprocess.run(
        [
            str(yolo),
            "train",
            "model=yolov8n.yaml",
            f"data={tiny_events}",
            "epochs=1",
            "batch=4",
            "workers=0",
            "imgsz=128",
            "plots=False",
            f"project={tmp_path}",
            "name=v8",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ},
    )
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    assert "prophesee/AP" in (tmp_path / "v8" / "results.csv").read_text()
