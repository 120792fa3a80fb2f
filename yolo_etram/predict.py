"""``EventPredictor``: detections on raw event recordings (or prepared sequences), one 50 ms window at a time, with
the recurrent state carried from window to window and reset at the start of each recording.

Windows are built with the same code as ``prepare`` (same bits). Each window gives an Ultralytics ``Results`` whose
image is the rendered event frame (ON red, OFF blue) at sensor resolution and whose boxes are in sensor pixels.
``save=True`` writes one video per recording; ``stream=True`` keeps memory flat on recordings of any length.

Usage:
    >>> from yolo_etram import EventYOLO
    >>> for r in EventYOLO("best.pt").predict("rec_td.h5", stream=True, save=True):
    ...     r.boxes.xyxy  # sensor pixels
    $ yolo predict model=best.pt source=rec_td.h5 save=True
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import cv2
import torch
from ultralytics.engine.results import Results
from ultralytics.models.yolo.detect import DetectionPredictor

from yolo_etram.data.data_yaml import data_settings, load_event_data
from yolo_etram.data.event_settings import EventSettings
from yolo_etram.data.render import render_histogram
from yolo_etram.data.stream import EventWindowSource, is_event_source
from yolo_etram.integrations.ultralytics import event_seams
from yolo_etram.nn.detection_model import find_event_model
from yolo_etram.nn.exported import install_state_runner
from yolo_etram.utils.allocator import keep_freed_memory
from yolo_etram.utils.errors import NonFiniteOutputError, UnsupportedOptionError
from yolo_etram.utils.sizes import pad_to_multiple
from yolo_etram.utils.threads import use_all_cpu_threads


class EventWindowLoader:
    """Ultralytics' inference-source contract over :class:`EventWindowSource`: one window per batch, as video frames."""

    def __init__(self, windows: EventWindowSource, fps: float):
        self.windows = windows
        self.source_type = SimpleNamespace(stream=False, screenshot=False, from_img=False, tensor=False)
        self.mode, self.bs, self.fps = "video", 1, fps
        self.count = self.frame = 0
        self.current = None
        self.video_flag = [True]

    def __len__(self) -> int:
        return len(self.windows)

    def __iter__(self):
        for win in self.windows:
            self.current, self.frame = win, win.index + 1
            self.count += 1
            img = render_histogram(win.hist)
            if img.shape[:2] != win.sensor_hw:
                img = cv2.resize(img, win.sensor_hw[::-1], interpolation=cv2.INTER_NEAREST)
            s = f"window (frame {win.index + 1}/{win.total}) {win.source.name} t={win.t_end / 1e6:.2f}s: "
            yield [str(win.source)], [img], [s]


class EventPredictor(DetectionPredictor):
    """Predict on event recordings with a recurrent detector (a ``.pt``, or an ONNX, TorchScript or OpenVINO export,
    whose states are fed back between windows)."""

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
        install_state_runner(self.model)  # exported recurrent models: feed the states back (no-op for .pt)
        metadata = getattr(self.model, "metadata", None)
        if isinstance(metadata, dict) and isinstance(metadata.get("event"), str):  # stateless exports of ours
            metadata["event"] = json.loads(metadata["event"])
        use_all_cpu_threads(self.device)
        keep_freed_memory(self.device)

    def setup_source(self, source, stride=None):
        settings = self.event_settings()
        if isinstance(source, EventWindowSource):  # e.g. with a time range: EventWindowSource(path, start_us=...)
            windows = source
            if source.required is not None:
                settings.require_same(source.required, "the model", "the window source")
        elif is_event_source(source):
            windows = EventWindowSource(source, settings)
        else:
            raise ValueError(
                f"{source}: not an event recording (*_td.h5, .dat, .npy, .raw) or prepared sequence folder"
            )
        self.downsample = windows.downsample
        self.dataset = EventWindowLoader(windows, fps=1e6 / windows.step_us)
        self.source_type = self.dataset.source_type
        self.vid_writer = {}
        self.args.batch = 1  # one stream: consecutive windows are time steps, not a batch

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
        hist = torch.from_numpy(self.dataset.current.hist)[None].to(self.device).float()
        multiple = self._input_multiple()
        return pad_to_multiple(hist, multiple)

    def _input_multiple(self) -> tuple[int, int]:
        native = self.event_model()
        if native is not None:
            return native.input_multiple
        imgsz = getattr(self.model, "imgsz", None)  # exported models: their fixed input size
        return tuple(imgsz) if imgsz else (32, 32)

    def inference(self, im, *args, **kwargs):
        if self.dataset.current.is_first:  # a new recording (also after the stock warmup forward)
            self.reset_states()
        preds = self.model(im, augment=False)
        out = preds[0] if isinstance(preds, (list, tuple)) else preds
        if isinstance(out, torch.Tensor) and not torch.isfinite(out).all():
            win = self.dataset.current
            raise NonFiniteOutputError(
                f"{win.source}: the model's output is NaN or infinite for the window ending at {win.t_end / 1e6:.3f} s "
                f"(window {win.index + 1} of {win.total}); the input is finite (event counts), so the weights are "
                "corrupt or overflow (try quantize=32 if it ran in half precision)"
            )
        return preds

    def reset_states(self) -> None:
        native = self.event_model()
        if native is not None:
            native.reset_states()
        elif hasattr(self.model, "reset_states"):
            self.model.reset_states()

    def construct_result(self, pred, img, orig_img, img_path):
        """Boxes from model-input pixels (stored resolution, padded bottom/right) to sensor pixels."""
        h, w = orig_img.shape[:2]
        boxes = pred[:, :4] * self.downsample
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clamp(0, w)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clamp(0, h)
        return Results(orig_img, path=img_path, names=self.model.names, boxes=torch.cat([boxes, pred[:, 4:6]], 1))
