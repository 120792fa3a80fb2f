"""``EventYOLO``: the entry point, Ultralytics' ``YOLO`` for event data (like ``ultralytics/models/yolo/model.py``:
the facade and its ``task_map``; the network is :class:`~yolo_etram.nn.EventDetectionModel`).

Usage:
    >>> from yolo_etram import EventYOLO
    >>> model = EventYOLO("rvt-t.yaml")
    >>> model.train(data="etram-synth.yaml", epochs=3, batch=4)
    >>> model.predict("recording_td.h5", save=True)
"""

from __future__ import annotations

from pathlib import Path

from ultralytics import YOLO
from ultralytics.utils import LOGGER

from yolo_etram.data.train_args import TRAIN_ARGS
from yolo_etram.integrations.ultralytics import event_seams, register_train_args
from yolo_etram.nn.detection_model import EventDetectionModel
from yolo_etram.nn.exported import is_event_export
from yolo_etram.nn.registry import is_plugin_model_yaml
from yolo_etram.utils.legacy import legacy_attribute
from yolo_etram.utils.paths import find_cfg

__all__ = ["EventYOLO"]

register_train_args(TRAIN_ARGS)  # ours (data/train_args.py) pass Ultralytics' argument check


def __getattr__(name: str):
    """Names this module had before 0.2 (``RecurrentDetectionModel``, pickled in older checkpoints)."""
    return legacy_attribute(__name__, name)


class EventYOLO(YOLO):
    """``YOLO`` for event data: our recurrent YAMLs, and stock YAMLs trained on event data as memoryless baselines.

    A model is an event model when it is one of our recurrent YAMLs, a checkpoint or export trained on event data, or
    when ``train``/``val``/``predict`` is given event data (an event data YAML, a recording, a prepared sequence); then
    our trainer, validator and predictor run. Anything else keeps Ultralytics' stock classes.

    Usage:
        >>> model = EventYOLO("rvt-t.yaml")   # bare names of our YAMLs resolve from any directory
        >>> baseline = EventYOLO("yolov8n.yaml")
        >>> baseline.train(data="etram-synth.yaml", epochs=2, batch=8)  # event windows, no state
        >>> stock = EventYOLO("yolo26n.yaml")  # with image data: stock behaviour
    """

    def __init__(self, model: str | Path = "rvt-t.yaml", task: str | None = None, verbose: bool = False):
        self.event_input = False  # set when a train/val/predict call is given event data
        found = find_cfg(model, "models") if isinstance(model, (str, Path)) else None
        with event_seams():  # no .pt opened runs code from the file; stateful OpenVINO exports load
            super().__init__(model=str(found) if found else model, task=task, verbose=verbose)

    @property
    def is_event_model(self) -> bool:
        """Whether our event trainer/validator/predictor apply (see the class docstring)."""
        if getattr(self, "event_input", False):
            return True
        m = getattr(self, "model", None)
        if isinstance(m, EventDetectionModel):
            return True
        if isinstance(m, (str, Path)) and is_event_export(m):  # .onnx, .torchscript, *_openvino_model/ of ours
            return True
        return isinstance(getattr(self, "cfg", None), (str, Path)) and is_plugin_model_yaml(self.cfg)

    def _note_event_input(self, data=None, source=None) -> None:
        from yolo_etram.data.data_yaml import is_event_data
        from yolo_etram.data.stream import is_event_source

        if (data is not None and is_event_data(data)) or (source is not None and is_event_source(source)):
            self.event_input = True

    def train(self, trainer=None, **kwargs):
        self._note_event_input(data=kwargs.get("data"))
        with event_seams():
            return super().train(trainer, **kwargs)

    def val(self, validator=None, **kwargs):
        self._note_event_input(data=kwargs.get("data"))
        with event_seams():
            return super().val(validator, **kwargs)

    def predict(self, source=None, stream: bool = False, predictor=None, **kwargs):
        self._note_event_input(data=kwargs.get("data"), source=source)
        with event_seams():  # a streamed prediction loads its model on the first window: the predictor's seams
            return super().predict(source, stream, predictor, **kwargs)

    def export(self, **kwargs) -> str:
        """Export; recurrent models take and return their LSTM states (``onnx``, ``torchscript`` or ``openvino``, at a
        fixed size: without ``imgsz``, the size the model was trained at, as Ultralytics does).

        Usage:
            >>> EventYOLO("best.pt").export(format="onnx")  # the training input size
            >>> EventYOLO("best.pt").export(format="openvino", imgsz=(384, 640))
        """
        if not isinstance(self.model, EventDetectionModel):
            with event_seams():
                return super().export(**kwargs)
        self._check_is_pytorch_model()
        from yolo_etram.export import EventExporter

        custom = {"imgsz": self.model.input_size, "batch": 1, "data": None, "device": None, "verbose": False}
        args = {**self.overrides, **custom, **kwargs, "mode": "export"}  # Model.export's precedence
        with event_seams():
            return EventExporter(overrides=args, _callbacks=self.callbacks)(model=self.model)

    @property
    def task_map(self) -> dict:
        stock = super().task_map
        if not self.is_event_model:
            return stock
        from yolo_etram.predict import EventPredictor
        from yolo_etram.train import EventTrainer
        from yolo_etram.val import EventValidator

        ours = {
            "model": EventDetectionModel,
            "trainer": EventTrainer,
            "validator": EventValidator,
            "predictor": EventPredictor,
        }
        return {**stock, "detect": {**stock["detect"], **ours}}

    def load_rvt(self, checkpoint: str | Path, allow_unsafe_pickle: bool = False):
        """Load an RVT Lightning checkpoint into this model: backbone; PAFPN for ``rvt-*-3scale.yaml``; PAFPN and YOLOX
        head (the whole RVT detector) for ``rvt-*-yolox.yaml``. ``etram-yolo import-rvt`` saves the result.

        Returns the import report (loaded counts, unmapped keys)."""
        from yolo_etram.nn.rvt_import import load_rvt_checkpoint

        if not isinstance(self.model, EventDetectionModel):
            raise TypeError("load_rvt needs a recurrent model (e.g. EventYOLO('rvt-b-3scale.yaml'))")
        report = load_rvt_checkpoint(self.model, checkpoint, allow_unsafe_pickle)
        LOGGER.info(str(report))
        return report
