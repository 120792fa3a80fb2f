"""Run a stateful ONNX export of a yolo-etram detector on a raw event recording, without torch or Ultralytics.

Needs numpy, h5py, hdf5plugin and onnxruntime (OpenCV only for ``--draw``). The model is exported with
``yolo_etram.export.export_recurrent(..., format="onnx")``: its inputs are ``images`` and the LSTM states, its outputs
``output0`` and the new states, and its metadata names them (``recurrent_states``) and the event settings it was trained
with (``event``). For each window this script builds the model's representation (RVT's stacked histogram, VTEI, ...;
the mixed-density stacks also need torch, for its float32 log), zero-pads it to the model input, runs the model with
the states of the previous window, keeps the returned states for the next one, and decodes ``output0`` (``cx, cy, w,
h`` in input pixels and one score per class) with a confidence threshold and class-aware NMS.

Usage:
    python examples/deploy_onnx.py best.onnx recording_td.h5 --conf 0.25 --iou 0.7 --max-windows 100
    python examples/deploy_onnx.py best.onnx recording_td.h5 --downsample --draw out/  # 1280x720 sensor, PNGs
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing the package
from yolo_etram.data.event_settings import EventSettings  # noqa: E402  (numpy only)
from yolo_etram.data.io import EventReader  # noqa: E402  (numpy/h5py only)
from yolo_etram.data.render import draw_boxes, render_histogram  # noqa: E402  (numpy; OpenCV when drawing)
from yolo_etram.data.stream import window_ends  # noqa: E402  (numpy only)


class StatefulDetector:
    """An ONNX session that carries the recurrent states from one call to the next (zeros after :meth:`reset`)."""

    def __init__(self, path: str | Path, providers: tuple[str, ...] = ("CPUExecutionProvider",)):
        self.session = ort.InferenceSession(str(path), providers=list(providers))
        meta = self.session.get_modelmeta().custom_metadata_map
        if "recurrent_states" not in meta:
            raise SystemExit(f"{path}: no 'recurrent_states' in the metadata; export it with yolo_etram.export")
        self.specs = json.loads(meta["recurrent_states"])  # [[input_name, output_name, shape], ...]
        self.imgsz = tuple(ast.literal_eval(meta["imgsz"]))
        self.names = ast.literal_eval(meta.get("names", "{}"))
        self.channels = int(meta.get("channels", 20))
        self.event = json.loads(meta.get("event") or "{}")  # the windows it was trained on, when known
        self.nms = bool(ast.literal_eval(meta.get("args", "{}")).get("nms"))  # exported with nms=True: boxes out
        state_inputs = {i for i, _, _ in self.specs}
        self.image_input = next(i.name for i in self.session.get_inputs() if i.name not in state_inputs)
        self.outputs = [self.session.get_outputs()[0].name, *(o for _, o, _ in self.specs)]
        self.reset()

    def reset(self) -> None:
        """Start a new sequence."""
        self.states = {i: np.zeros(shape, np.float32) for i, _, shape in self.specs}

    def __call__(self, hist: np.ndarray) -> np.ndarray:
        """One window ``(C, h, w)`` (h, w at most the model input) -> raw predictions ``(4 + nc, anchors)``."""
        c, h, w = hist.shape
        if c != self.channels or h > self.imgsz[0] or w > self.imgsz[1]:
            raise SystemExit(
                f"window {hist.shape} does not fit the model input {(self.channels, *self.imgsz)}; check --downsample"
            )
        x = np.zeros((1, self.channels, *self.imgsz), np.float32)
        x[0, :, :h, :w] = hist  # raw counts, zero-padded bottom/right as in training
        pred, *states = self.session.run(self.outputs, {self.image_input: x, **self.states})
        self.states = {i: s for (i, _, _), s in zip(self.specs, states)}
        return pred[0]


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Greedy NMS (as torchvision's): indices of the kept boxes, highest score first."""
    x1, y1, x2, y2 = boxes.T
    area = (x2 - x1) * (y2 - y1)
    order, keep = np.argsort(-scores, kind="stable"), []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        w = np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0, None)
        h = np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0, None)
        inter = w * h
        order = rest[inter / (area[i] + area[rest] - inter + 1e-12) <= iou]
    return np.asarray(keep, np.int64)


def decode(
    pred: np.ndarray, conf: float = 0.25, iou: float = 0.7, max_det: int = 300, nms_done: bool = False
) -> np.ndarray:
    """Raw ``(4 + nc, anchors)`` -> ``(n, 6)`` rows ``x1, y1, x2, y2, score, class`` (Ultralytics' NMS, in numpy).

    ``nms_done``: the export was made with ``nms=True`` and returns ``(max_det, 6)`` rows; they are only thresholded."""
    if nms_done:
        return pred[pred[:, 4] > conf][:max_det]
    pred = pred.T
    cls = pred[:, 4:].argmax(1)
    score = pred[np.arange(len(pred)), 4 + cls]
    keep = score > conf
    xywh, score, cls = pred[keep, :4], score[keep], cls[keep]
    xyxy = np.concatenate([xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2], 1)
    i = nms(xyxy + cls[:, None] * 7680.0, score, iou)[:max_det]  # offset by class: no suppression across classes
    return np.concatenate([xyxy[i], score[i, None], cls[i, None].astype(np.float32)], 1)


def draw(hist: np.ndarray, dets: np.ndarray, names: dict, path: Path) -> None:
    import cv2

    img = draw_boxes(render_histogram(hist), dets[:, :4], dets[:, 5], names, dets[:, 4])
    cv2.imwrite(str(path), img)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", type=Path, help="stateful ONNX export (yolo_etram.export)")
    ap.add_argument("recording", type=Path, help="raw recording: *_td.h5 (or .dat / .npy)")
    ap.add_argument("--conf", type=float, default=0.25, help="confidence threshold")
    ap.add_argument("--iou", type=float, default=0.7, help="NMS IoU threshold")
    ap.add_argument("--max-det", type=int, default=300)
    ap.add_argument("--max-windows", type=int, default=None, help="stop after this many windows")
    ap.add_argument(
        "--downsample",
        action="store_true",
        default=None,
        help="halve the sensor resolution (RVT's 1280x720 setting); default: the model's metadata",
    )
    ap.add_argument("--window-ms", type=int, default=None, help="window length and step in ms (default: the model's)")
    ap.add_argument("--sensor", type=int, nargs=2, metavar=("H", "W"), help="sensor size if the file does not say")
    ap.add_argument("--json", type=Path, help="also write the detections of every window to this JSON file")
    ap.add_argument("--draw", type=Path, help="write one PNG per window with its boxes here (needs OpenCV)")
    args = ap.parse_args(argv)

    model = StatefulDetector(args.model)
    settings = EventSettings.from_dict({"channels": model.channels, **model.event}, str(args.model))
    if args.downsample is not None:
        settings = replace(settings, downsample=2)
    if args.window_ms:
        settings = replace(settings, window_ms=args.window_ms, step_ms=args.window_ms)
    ds, window_us = settings.downsample, settings.window_us
    if args.draw:
        args.draw.mkdir(parents=True, exist_ok=True)

    results = []
    with EventReader(args.recording, *(args.sensor or (None, None))) as reader:
        rep = settings.build(reader.height, reader.width)
        t_ends = window_ends(reader.t_start, reader.t_end, settings.step_us)[: args.max_windows]
        (h, w), (mh, mw) = rep.out_hw, model.imgsz
        print(
            f"{args.recording.name}: {reader.width}x{reader.height} sensor, {len(t_ends)} windows of "
            f"{window_us // 1000} ms ({settings.representation}) -> input {w}x{h} padded to {mw}x{mh}"
        )
        windows = reader.iter_windows(t_ends, window_us, count=settings.window_events)
        for k, (t_end, events) in enumerate(zip(t_ends, windows)):
            hist = rep(*events)
            dets = decode(model(hist.astype(np.float32)), args.conf, args.iou, args.max_det, model.nms)
            dets[:, :4] *= ds  # model input pixels -> sensor pixels
            dets[:, [0, 2]] = dets[:, [0, 2]].clip(0, reader.width)
            dets[:, [1, 3]] = dets[:, [1, 3]].clip(0, reader.height)
            print(f"window {k} t={t_end / 1e6:.3f}s: {len(dets)} boxes")
            for x1, y1, x2, y2, score, c in dets:
                print(f"  {model.names.get(int(c), int(c))} {score:.3f} [{x1:.1f}, {y1:.1f}, {x2:.1f}, {y2:.1f}]")
            results.append({"window": k, "t_end_us": int(t_end), "boxes": dets.tolist()})
            if args.draw:
                draw(hist, dets / [ds, ds, ds, ds, 1, 1], model.names, args.draw / f"window_{k:06d}.png")
    if args.json:
        args.json.write_text(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
