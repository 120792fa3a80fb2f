"""``EventPredictor``: detections on raw event recordings (or prepared sequences), one 50 ms window at a time, with
the recurrent state carried from window to window and reset at the start of each recording.

Windows are built with the same code as ``prepare`` (same bits). Each window gives an Ultralytics ``Results`` whose
image is the rendered event frame (ON red, OFF blue) at sensor resolution and whose boxes are in sensor pixels.
``save=True`` writes one video per recording; ``stream=True`` keeps memory flat on recordings of any length.
Several sources at once (the cameras of one box) step in lockstep as one batch, one stream slot and one state each:
a ``.pt`` takes any number, an export the ``batch`` it was exported with.

Usage:
    >>> from yolo_etram import EventYOLO
    >>> for r in EventYOLO("best.pt").predict("rec_td.h5", stream=True, save=True):
    ...     r.boxes.xyxy  # sensor pixels
    $ yolo predict model=best.pt source=rec_td.h5 save=True
    $ yolo predict model=best_openvino_model source=cam0.raw,cam1.raw   # exported with batch=2: two cameras
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import cv2
import numpy as np
import torch
from ultralytics.engine.results import Results
from ultralytics.models.yolo.detect import DetectionPredictor

from yolo_etram.data.data_yaml import data_settings, load_event_data
from yolo_etram.data.event_settings import EventSettings
from yolo_etram.data.render import render_histogram
from yolo_etram.data.stream import EventWindow, EventWindowSource, MultiStreamSource, is_event_source
from yolo_etram.integrations.ultralytics import event_seams
from yolo_etram.nn.detection_model import find_event_model
from yolo_etram.nn.exported import install_state_runner
from yolo_etram.nn.inference_precision import apply_inference_precision
from yolo_etram.utils.allocator import keep_freed_memory
from yolo_etram.utils.errors import NonFiniteOutputError, UnsupportedOptionError
from yolo_etram.utils.sizes import pad_to_multiple
from yolo_etram.utils.threads import use_all_cpu_threads


def split_sources(source) -> list:
    """One source, or several cameras at once: a list or tuple of sources, or one string of comma-separated event
    sources (``yolo predict source=cam0.raw,cam1.raw``)."""
    if isinstance(source, (list, tuple)):
        return list(source)
    if isinstance(source, str) and "," in source and not is_event_source(source):
        parts = [p.strip() for p in source.split(",")]
        if all(is_event_source(p) for p in parts):
            return parts
    return [source]


class EventWindowLoader:
    """Ultralytics' inference-source contract over event windows, as video frames: one window per step from an
    :class:`EventWindowSource`, or one per live slot from a :class:`MultiStreamSource` (``current`` holds every slot's
    window, ``None`` where its source has ended)."""

    def __init__(self, windows: EventWindowSource | MultiStreamSource, fps: float):
        self.windows = windows
        self.slots = len(windows) if isinstance(windows, MultiStreamSource) else 1
        self.source_type = SimpleNamespace(stream=False, screenshot=False, from_img=False, tensor=False)
        self.mode, self.bs, self.fps = "video", self.slots, fps
        self.count = self.frame = 0
        self.current: list[EventWindow | None] = []
        self.video_flag = [True] * self.slots

    def __len__(self) -> int:
        return len(self.windows)

    def __iter__(self):
        steps = self.windows if self.slots > 1 else ([w] for w in self.windows)
        for wins in steps:
            live = [w for w in wins if w is not None]
            self.current, self.frame = wins, live[0].index + 1
            self.count += 1
            yield [str(w.source) for w in live], [self._image(w) for w in live], [self._line(w) for w in live]

    @staticmethod
    def _image(win: EventWindow):
        img = render_histogram(win.hist)
        if img.shape[:2] != win.sensor_hw:
            img = cv2.resize(img, win.sensor_hw[::-1], interpolation=cv2.INTER_NEAREST)
        return img

    @staticmethod
    def _line(win: EventWindow) -> str:
        return f"window (frame {win.index + 1}/{win.total}) {win.source.name} t={win.t_end / 1e6:.2f}s: "


class EventPredictor(DetectionPredictor):
    """Predict on event recordings with a recurrent detector (a ``.pt``, or an ONNX, TorchScript or OpenVINO export,
    whose states are fed back between windows)."""

    runner = None  # the stateful runner of an export (set up with the model)

    def stream_inference(self, source=None, model=None, *args, **kwargs):
        """Ultralytics' prediction loop; the model it loads on the first window is read by our restricted unpickler."""
        with event_seams():
            yield from super().stream_inference(source, model, *args, **kwargs)

    def setup_model(self, model, verbose: bool = True):
        if self.args.visualize:
            raise UnsupportedOptionError(
                "visualize=True draws class-activation maps over RGB images; event windows are 20-channel histograms, "
                "so it is not supported (save=True writes the event frames with their boxes)"
            )
        super().setup_model(model, verbose)
        self.runner = install_state_runner(self.model)  # exports: feed the states back (None for a .pt)
        apply_inference_precision(self.model, self.args.quantize, self.args.model)  # quantize=16: bf16 on CPU
        metadata = getattr(self.model, "metadata", None)
        if isinstance(metadata, dict) and isinstance(metadata.get("event"), str):  # stateless exports of ours
            metadata["event"] = json.loads(metadata["event"])
        use_all_cpu_threads(self.device)
        keep_freed_memory(self.device)

    def setup_source(self, source, stride=None):
        settings = self.event_settings()
        sources = split_sources(source)
        streams = [self._window_source(s, settings) for s in sources]
        windows = streams[0] if len(streams) == 1 else MultiStreamSource(streams)
        batch = self.runner.batch if self.runner is not None else len(streams)  # a .pt steps any number
        if batch != len(streams):
            raise UnsupportedOptionError(
                f"{self.args.model} steps {batch} stream(s) at a time, given {len(streams)} source(s): export it with "
                f"batch={len(streams)} for that many cameras, or predict on each source on its own"
            )
        self.downsample = streams[0].downsample
        self.dataset = EventWindowLoader(windows, fps=1e6 / streams[0].step_us)
        self.source_type = self.dataset.source_type
        self.vid_writer = {}
        # one slot per source: consecutive windows of a source are time steps, never a batch
        self.args.batch = len(streams)

    @staticmethod
    def _window_source(source, settings: EventSettings) -> EventWindowSource:
        if isinstance(source, EventWindowSource):  # e.g. with a time range: EventWindowSource(path, start_us=...)
            if source.required is not None:
                settings.require_same(source.required, "the model", "the window source")
            return source
        if is_event_source(source):
            return EventWindowSource(source, settings)
        raise ValueError(f"{source}: not an event recording (*_td.h5, .dat, .npy, .raw) or prepared sequence folder")

    def event_settings(self) -> EventSettings:
        """How windows are built: the model's recorded settings; a data YAML, if given, must build the same frames,
        and its windows (length, step) are used: a model may run at another frame rate."""
        native = self.event_model()
        record = native.event if native is not None else getattr(self.model, "metadata", {}).get("event")
        settings = EventSettings.from_dict(record or {}, "the model")
        if self.args.data and str(self.args.data).endswith((".yaml", ".yml")):
            data = data_settings(load_event_data(self.args.data, split="val"))
            settings.require_same(data, "the model", str(self.args.data), windows=False)
            settings = data
        return settings

    def event_model(self):
        return find_event_model(self.model) if self.model is not None else None

    def preprocess(self, im):
        """The windows of every slot as one batch (zeros for a slot whose source has ended), padded to the input."""
        wins = self.dataset.current
        ref = next(w.hist for w in wins if w is not None)
        hist = np.stack([w.hist if w is not None else np.zeros_like(ref) for w in wins])
        return pad_to_multiple(torch.from_numpy(hist).to(self.device).float(), self._input_multiple())

    def _input_multiple(self) -> tuple[int, int]:
        native = self.event_model()
        if native is not None:
            return native.input_multiple
        imgsz = getattr(self.model, "imgsz", None)  # exported models: their fixed input size
        return tuple(imgsz) if imgsz else (32, 32)

    def inference(self, im, *args, **kwargs):
        """One step of every slot; a slot whose recording starts (also after the stock warmup forward) starts from a
        fresh state. Returns the live slots' outputs, in the loader's order."""
        wins = self.dataset.current
        first = [w is not None and w.is_first for w in wins]
        if any(first):
            self.reset_states(first)
        preds = self.model(im, augment=False)
        out = preds[0] if isinstance(preds, (list, tuple)) else preds
        live = [i for i, w in enumerate(wins) if w is not None]
        for i in live:
            if isinstance(out, torch.Tensor) and not torch.isfinite(out[i]).all():
                win = wins[i]
                raise NonFiniteOutputError(
                    f"{win.source}: the model's output is NaN or infinite for the window ending at "
                    f"{win.t_end / 1e6:.3f} s (window {win.index + 1} of {win.total}); the input is finite (event "
                    "counts), so the weights are corrupt or overflow (try quantize=32 if it ran in half precision)"
                )
        return out[live] if len(live) < len(wins) else preds

    def reset_states(self, slots: list[bool] | None = None) -> None:
        """Fresh states for the flagged slots (all slots when None or when every one is flagged)."""
        native = self.event_model()
        if native is not None:
            native.reset_states(None if slots is None or all(slots) else torch.tensor(slots))
        elif hasattr(self.model, "reset_states"):
            self.model.reset_states(None if slots is None or all(slots) else slots)

    def construct_result(self, pred, img, orig_img, img_path):
        """Boxes from model-input pixels (stored resolution, padded bottom/right) to sensor pixels."""
        h, w = orig_img.shape[:2]
        boxes = pred[:, :4] * self.downsample
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clamp(0, w)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clamp(0, h)
        return Results(orig_img, path=img_path, names=self.model.names, boxes=torch.cat([boxes, pred[:, 4:6]], 1))
