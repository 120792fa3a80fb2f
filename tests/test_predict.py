"""Prediction on raw recordings and prepared sequences: same windows as prepare, state carried, sensor-pixel boxes."""

from pathlib import Path

import numpy as np
import pytest
import torch
from rawdata import random_events

from yolo_etram import EventYOLO
from yolo_etram.data.event_settings import EventSettings
from yolo_etram.data.io import write_events_h5
from yolo_etram.data.representations import StackedHistogram
from yolo_etram.data.stream import EventWindowSource


def tiny_model(downsample=2):
    torch.manual_seed(0)
    model = EventYOLO("rvt-t.yaml")
    model.model.model[0].set_partition_size((3, 4))  # 96x128 inputs
    model.model.yaml["event"] = {"downsample": downsample, "nbins": 10, "window_ms": 50}
    model.model.names = {0: "pedestrian", 1: "vehicle", 2: "micromobility"}
    return model


def recording(path, seconds=0.6, w=256, h=192, seed=0):
    x, y, p, t = random_events(int(seconds * 200_000), int(seconds * 1e6), w, h, seed)
    write_events_h5(path, x, y, p, t, w, h)
    return path


def test_windows_equal_prepare_bits(tmp_path):
    rec = recording(tmp_path / "a_td.h5")
    wins = list(EventWindowSource(rec, EventSettings(downsample=2)))
    assert [w.t_end for w in wins] == list(range(50_000, 600_001, 50_000))
    assert wins[0].is_first and not any(w.is_first for w in wins[1:])
    from yolo_etram.data.io import EventReader

    rep = StackedHistogram(192, 256, downsample=2)
    with EventReader(rec) as r:
        for w in wins:
            np.testing.assert_array_equal(w.hist, rep(*r.read_window(w.t_end, 50_000)))


def test_predict_raw_recordings_carry_state_and_scale_boxes(tmp_path):
    a, b = recording(tmp_path / "a_td.h5", seed=1), recording(tmp_path / "b_td.h5", seed=2)
    model = tiny_model()
    results = list(model.predict(str(tmp_path), conf=0.0, max_det=5, stream=True, save=False, verbose=False))
    assert len(results) == 24  # 12 windows each, one Results per window
    assert results[0].orig_img.shape[:2] == (192, 256)  # rendered at sensor resolution
    # reference: the PyTorch model stepped window by window with state carried, reset per recording
    net = model.predictor.model.model if hasattr(model.predictor.model, "model") else model.model
    from ultralytics.utils.nms import non_max_suppression

    ref = []
    for rec in (a, b):
        net.reset_states()
        for w in EventWindowSource(rec, EventSettings(downsample=2)):
            with torch.no_grad():
                out = net(torch.from_numpy(w.hist)[None].float())[0]
            det = non_max_suppression(out, conf_thres=0.0, iou_thres=0.7, max_det=5)[0]
            ref.append(det[:, :4] * 2)
    for r, boxes in zip(results, ref):
        got = r.boxes.xyxy
        assert got.shape == boxes.shape
        expected = boxes.clone()
        expected[:, [0, 2]] = expected[:, [0, 2]].clamp(0, 256)
        expected[:, [1, 3]] = expected[:, [1, 3]].clamp(0, 192)
        torch.testing.assert_close(got, expected, atol=1e-3, rtol=1e-4)


def test_two_recordings_do_not_share_state(tmp_path):
    """b predicted after a equals b predicted alone."""
    recording(tmp_path / "a_td.h5", seed=1)
    b = recording(tmp_path / "b_td.h5", seed=2)
    model = tiny_model()
    both = [r.boxes.data for r in model.predict(str(tmp_path), conf=0.0, max_det=5, stream=True, verbose=False)]
    alone = [r.boxes.data for r in model.predict(str(b), conf=0.0, max_det=5, stream=True, verbose=False)]
    for x, y in zip(both[12:], alone):
        torch.testing.assert_close(x, y)


def test_save_writes_a_readable_video(tmp_path):
    import cv2

    rec = recording(tmp_path / "clip_td.h5")
    model = tiny_model()
    for _ in model.predict(
        str(rec), conf=0.5, save=True, stream=True, project=str(tmp_path), name="pred", verbose=False
    ):
        pass
    videos = list((tmp_path / "pred").glob("clip_td.*"))
    assert videos, list((tmp_path / "pred").iterdir())
    cap = cv2.VideoCapture(str(videos[0]))
    frames = 0
    while cap.read()[0]:
        frames += 1
    assert frames == 12 and cap.get(cv2.CAP_PROP_FRAME_WIDTH) == 256


def test_prepared_sequence_source(tiny_events):
    import yaml

    data = yaml.safe_load(open(tiny_events))
    seq = next((Path(data["path"]) / "val").iterdir())
    wins = list(EventWindowSource(seq))
    assert wins and wins[0].hist.shape == (20, 96, 128) and wins[0].is_first


@pytest.mark.slow
def test_exported_onnx_predicts_like_pytorch(tmp_path):
    rec = recording(tmp_path / "a_td.h5", seed=4)
    model = tiny_model()
    for seq in model.model.model[-1].cv3:  # an untrained head scores every class alike: spread the class logits
        torch.nn.init.normal_(seq[-1].weight, std=300.0)
        torch.nn.init.constant_(seq[-1].bias, -3.0)
    onnx_file = model.export(format="onnx", imgsz=(96, 128), simplify=False)
    kw = dict(conf=0.25, max_det=20, stream=True, verbose=False)
    torch_boxes = [r.boxes.data for r in model.predict(str(rec), **kw)]
    onnx_boxes = [r.boxes.data for r in EventYOLO(onnx_file).predict(str(rec), **kw)]
    assert len(onnx_boxes) == len(torch_boxes) == 12
    assert sum(len(b) for b in torch_boxes) > 0
    for a, b in zip(onnx_boxes, torch_boxes):
        torch.testing.assert_close(a, b, atol=2e-3, rtol=1e-4)  # boxes (sensor px), confidences, classes


STREAM_RSS = """
import sys
sys.path.insert(0, sys.argv[2])
from test_predict import tiny_model
def rss_mib():
    return int(next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmRSS"))) / 1024
for i, _ in enumerate(tiny_model().predict(sys.argv[1], conf=0.5, stream=True, verbose=False)):
    if i in (480, 1199):
        print(i, rss_mib())
"""


@pytest.mark.slow
def test_stream_memory_stays_flat_on_long_recordings(tmp_path):
    """In a fresh process, resident memory after the first 24 s (allocator warm-up) stays flat for 36 s more."""
    import subprocess
    import sys

    rec = recording(tmp_path / "long_td.h5", seconds=60, seed=3)
    out = subprocess.run(
        [sys.executable, "-c", STREAM_RSS, str(rec), str(Path(__file__).parent)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    rss = {int(i): float(m) for i, m in (line.split() for line in out.stdout.strip().splitlines()[-2:])}
    assert set(rss) == {480, 1199}
    assert rss[1199] < rss[480] + 25, rss  # 720 more windows, 7.2 M more events


def test_track_gives_ids_over_time(tmp_path):
    rec = recording(tmp_path / "a_td.h5", seconds=1.0, seed=5)
    model = tiny_model()
    for seq in model.model.model[-1].cv3:  # spread the untrained class logits so boxes pass the threshold
        torch.nn.init.normal_(seq[-1].weight, std=300.0)
        torch.nn.init.constant_(seq[-1].bias, -3.0)
    results = list(model.track(str(rec), stream=True, conf=0.3, verbose=False, tracker="bytetrack.yaml"))
    assert len(results) == 20
    ids = [r.boxes.id for r in results if r.boxes.id is not None]
    assert ids, "no track ids assigned"


def test_every_source_kind_gives_the_same_windows(tmp_path, tiny_events):
    """A recording as .h5, Prophesee .dat and .npy gives identical windows; a prepared sequence gives its histograms."""
    from test_io import write_dat

    x, y, p, t = random_events(60_000, 500_000, 256, 192, seed=7)
    write_events_h5(tmp_path / "r_td.h5", x, y, p, t, 256, 192)
    write_dat(tmp_path / "r_td.dat", x, y, p, t, 256, 192)
    arr = np.zeros(len(t), [("x", "<u2"), ("y", "<u2"), ("p", "<i2"), ("t", "<i8")])
    arr["x"], arr["y"], arr["p"], arr["t"] = x, y, p, t
    np.save(tmp_path / "r_td.npy", arr)
    kinds = [
        list(EventWindowSource(tmp_path / f"r_td.{ext}", EventSettings(downsample=2), height=192, width=256))
        for ext in ("h5", "dat", "npy")
    ]
    assert len(kinds[0]) == 10
    for other in kinds[1:]:
        assert [w.t_end for w in other] == [w.t_end for w in kinds[0]]
        for a, b in zip(other, kinds[0]):
            np.testing.assert_array_equal(a.hist, b.hist)
    import yaml

    from yolo_etram.data.prepared import PreparedSequence

    seq_dir = next((Path(yaml.safe_load(open(tiny_events))["path"]) / "val").iterdir())
    seq = PreparedSequence(seq_dir)
    wins = list(EventWindowSource(seq_dir))
    assert len(wins) == len(seq)
    np.testing.assert_array_equal(wins[3].hist, seq.histograms(3, 4)[0])


def test_ultralytics_predict_options_on_event_windows(tmp_path):
    """conf, classes, max_det, save_txt, save_conf and save_crop as Ultralytics users pass them; visualize stops."""
    rec = recording(tmp_path / "a_td.h5", seed=1)
    model = tiny_model()
    kw = dict(conf=0.0, classes=[1], max_det=3, stream=True, project=str(tmp_path), name="p", exist_ok=True)
    results = list(model.predict(str(rec), save_txt=True, save_conf=True, save_crop=True, verbose=False, **kw))
    assert len(results) == 12 and all(len(r.boxes) == 3 for r in results)  # conf 0 keeps max_det boxes
    assert all(set(r.boxes.cls.tolist()) == {1.0} for r in results)
    labels = sorted((tmp_path / "p" / "labels").glob("*.txt"))
    assert len(labels) == 12
    rows = [line.split() for line in labels[0].read_text().splitlines()]
    assert len(rows) == 3 and all(len(r) == 6 and r[0] == "1" for r in rows)  # class, xywhn, conf
    assert all(0 <= float(v) <= 1 for r in rows for v in r[1:])
    crops = list((tmp_path / "p" / "crops" / "vehicle").glob("*.jpg"))
    assert len(crops) == 36  # crops of the rendered event frame
    with pytest.raises(ValueError, match="visualize=True .* not supported"):
        list(tiny_model().predict(str(rec), visualize=True, stream=True))


def test_several_cameras_step_in_lockstep_with_a_state_each(tmp_path):
    """Two sources of different lengths (the cameras of one box) step as one batch of two slots: each camera's
    detections equal its own stream's alone, the shorter one's slot stops giving results when it ends, and its
    successor windows never see its state."""
    a = recording(tmp_path / "a_td.h5", seconds=0.6, seed=1)  # 12 windows
    b = recording(tmp_path / "b_td.h5", seconds=0.3, seed=2)  # 6 windows
    model = tiny_model()
    kw = dict(conf=0.0, max_det=5, stream=True, verbose=False)
    both = list(model.predict([str(a), str(b)], **kw))
    assert len(both) == 18 and [Path(r.path).name for r in both[:4]] == ["a_td.h5", "b_td.h5"] * 2
    assert [Path(r.path).name for r in both[12:]] == ["a_td.h5"] * 6  # b has ended
    for rec in (a, b):
        alone = [r.boxes.data for r in tiny_model().predict(str(rec), **kw)]
        mine = [r.boxes.data for r in both if Path(r.path) == rec]
        assert len(mine) == len(alone)
        for x, y in zip(mine, alone):
            torch.testing.assert_close(x, y, atol=1e-3, rtol=1e-4)
    same = list(model.predict(f"{a},{b}", **kw))  # the CLI's form: comma-separated sources
    assert len(same) == 18


def test_an_export_steps_as_many_cameras_as_its_batch(tmp_path):
    import contextlib

    pytest.importorskip("onnxruntime")
    from yolo_etram.export import export_recurrent
    from yolo_etram.utils.errors import UnsupportedOptionError

    a, b = recording(tmp_path / "a_td.h5", seed=1), recording(tmp_path / "b_td.h5", seed=2)
    model = tiny_model()
    with contextlib.chdir(tmp_path):
        two = tmp_path / export_recurrent(model, "onnx", imgsz=(96, 128), batch=2)
    kw = dict(conf=0.0, max_det=5, stream=True, verbose=False)
    ref = [r.boxes.data for r in model.predict([str(a), str(b)], **kw)]
    got = [r.boxes.data for r in EventYOLO(str(two)).predict([str(a), str(b)], **kw)]
    assert len(got) == len(ref) == 24
    for x, y in zip(got, ref):  # an untrained model's scores tie: NMS may keep another of two equal boxes
        torch.testing.assert_close(x[:, 4].sort().values, y[:, 4].sort().values, atol=1e-4, rtol=0)
    same = sum(int((torch.cdist(x[:, :4], y[:, :4]).min(1).values < 1e-2).sum()) for x, y in zip(got, ref))
    assert same >= 0.9 * sum(len(y) for y in ref)  # the boxes, in whatever order the ties left them
    with pytest.raises(UnsupportedOptionError, match=r"steps 2 stream\(s\) at a time, given 1 source\(s\)"):
        list(EventYOLO(str(two)).predict(str(a), **kw))
