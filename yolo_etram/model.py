"""The recurrent detection model and the ``EventYOLO`` entry point.

``RecurrentDetectionModel`` is a stock ``DetectionModel`` whose first YAML row is a recurrent backbone: it honours the
YAML's ``channels``, probes strides at an input the attention partitions can divide, leaves no recurrent state behind
after its build-time probes, runs no test-time augmentation, and computes the loss on labeled frames only.

Usage:
    >>> from yolo_etram import EventYOLO
    >>> model = EventYOLO("rvt-t.yaml")
    >>> model.model.reset_states()
"""

from __future__ import annotations

from pathlib import Path

import yolo_etram._env  # noqa: F401  (offline defaults before Ultralytics loads)

import torch
from ultralytics import YOLO
from ultralytics.nn.modules import Detect
from ultralytics.nn.tasks import BaseModel, DetectionModel, _initialize_yolo_model, yaml_model_load
from ultralytics.utils import LOGGER
from ultralytics.utils.torch_utils import initialize_weights

from yolo_etram.paths import find_cfg, is_plugin_model_yaml
from yolo_etram.nn import PLUGIN_LAYER_NAMES, set_batchnorm, stateful_layers

__all__ = ["RecurrentDetectionModel", "EventYOLO", "load_model_yaml", "fit_to_multiple"]


def fit_to_multiple(hw, multiple) -> tuple[int, int]:
    """``(H, W)`` rounded up to multiples of ``multiple``: the zero-padded input size the partitions can divide."""
    return -(-int(hw[0]) // multiple[0]) * multiple[0], -(-int(hw[1]) // multiple[1]) * multiple[1]


def load_model_yaml(cfg: str | Path | dict) -> dict:
    """A model YAML as a dict, resolving our bare names (``rvt-t.yaml``) from any working directory."""
    if isinstance(cfg, dict):
        return cfg
    path = find_cfg(cfg, "models")
    if path is not None:
        return yaml_model_load(path)
    try:
        return yaml_model_load(cfg)  # a stock Ultralytics name (yolov8n.yaml, yolo11n.yaml, ...)
    except FileNotFoundError:
        raise FileNotFoundError(f"model YAML '{cfg}' not found (not a path, one of yolo_etram's cfg/models or a stock "
                                "Ultralytics model YAML)") from None


def event_frame(x: torch.Tensor, channels: int = 2) -> torch.Tensor:
    """Sum a stacked histogram's time bins per polarity: ``(..., 2 * nbins, H, W)`` -> ``(..., 2, H, W)``.

    RVT's histogram channel ``p * nbins + bin`` (polarity-major), so the sum is over contiguous halves."""
    return x.unflatten(-3, (channels, -1)).sum(-3)


class RecurrentDetectionModel(DetectionModel):
    """A ``DetectionModel`` for event windows, normally with a recurrent backbone as its first layer.

    A stock Ultralytics YAML (``yolov8n.yaml``) builds too: it has no stateful layer, so it is a memoryless frame
    baseline on the same data, loss masking, validation and prediction. ``yaml["event"]`` (set from the data YAML by
    the trainer, saved in checkpoints) can change two things in :meth:`_predict_once`: ``input: event_frame`` sums the
    histogram's time bins per polarity (a 2-channel event frame) inside the model, so every user of the model still
    feeds histograms; ``memory: false`` resets the state before every window (the memoryless ablation of a recurrent
    model).

    Args:
        cfg: model YAML (path, bare name of one of ours or of a stock Ultralytics model, or dict).
        ch: input channels (histogram channels, ``2 * nbins``); defaults to the YAML's ``channels``.
        nc: number of classes (overrides the YAML's).
        verbose: print the model summary.
    """

    def __init__(self, cfg: str | Path | dict = "rvt-t.yaml", ch: int | None = None, nc: int | None = None, verbose=True):
        BaseModel.__init__(self)
        cfg = dict(load_model_yaml(cfg))
        ch = ch or cfg.get("channels", 20)
        event = cfg.get("event") or {}
        model_ch = 2 if event.get("input") == "event_frame" else ch  # what the first layer sees
        cfg = _with_backbone_channels(cfg, model_ch)
        _initialize_yolo_model(self, cfg, model_ch, nc, verbose)
        self.yaml["channels"] = ch  # what callers feed (exporters size their dummy input from it)
        head = self.model[-1]
        if not isinstance(head, Detect):
            raise TypeError(f"{type(self).__name__}: the last YAML row must be a Detect head, got {type(head).__name__}")
        head.inplace = self.inplace
        self.stride = head.stride = self._probe_strides(ch)
        head.bias_init()
        initialize_weights(self)
        if self.yaml.get("batchnorm"):  # e.g. RVT's PyTorch-default BatchNorms (rvt-*-yolox.yaml)
            set_batchnorm(self, **self.yaml["batchnorm"])
        self.reset_states()
        if verbose:
            self.info()
            LOGGER.info("")

    @property
    def backbone(self):
        return self.model[0]

    @property
    def event(self) -> dict:
        """How this model reads event data (``downsample, nbins, window_ms, channels, partition, input, memory``)."""
        return self.yaml.get("event") or {}

    @property
    def has_memory(self) -> bool:
        """True when state is carried from window to window (a recurrent model not run as its memoryless ablation)."""
        return bool(stateful_layers(self)) and self.event.get("memory", True)

    def _predict_once(self, x, profile=False, embed=None):
        """Windows ``(N, C, H, W)`` or clips ``(B, T, C, H, W)`` through the layers, honouring ``yaml["event"]``."""
        if self.event.get("input") == "event_frame" and x.shape[-3] != 2:  # histograms in, event frames to the layers
            x = event_frame(x)
        if self.has_memory:
            return super()._predict_once(x, profile, embed)
        x = x.reshape(-1, *x.shape[-3:])  # every window on its own: one step of batch B*T from a zero state
        self.reset_states()
        try:
            return super()._predict_once(x, profile, embed)
        finally:
            self.reset_states()

    def _probe_strides(self, ch: int) -> torch.Tensor:
        """Head strides from one forward on zeros of the smallest size the attention partitions divide."""
        h, w = self.input_multiple
        ch = self.yaml["channels"]
        self.model.eval()
        self.model[-1].training = True  # the head returns its raw feature maps
        with torch.no_grad():
            feats = self.forward(torch.zeros(1, ch, h, w))["feats"]
        self.model.train()
        self.reset_states()
        return torch.tensor([h / f.shape[-2] for f in feats])

    @property
    def input_multiple(self) -> tuple[int, int]:
        """Input height and width must be multiples of these (pad bottom/right)."""
        return tuple(getattr(self.backbone, "input_multiple", (32, 32)))

    def reset_states(self, mask: torch.Tensor | None = None) -> None:
        """Zero the recurrent state of the batch slots where ``mask`` is True (all slots when None)."""
        for m in stateful_layers(self):
            m.reset(mask)

    def info(self, detailed=False, verbose=True, imgsz=None):
        """Model summary; GFLOPs at ``imgsz`` (default: the eTraM input 384x640, rounded up to fit the partitions).

        The FLOPs count does not include attention's matrix products and the LSTM's element-wise math (thop)."""
        from ultralytics.utils.torch_utils import model_info

        imgsz = imgsz or (384, 640)
        imgsz = list(fit_to_multiple((imgsz, imgsz) if isinstance(imgsz, int) else imgsz, self.input_multiple))
        try:
            return model_info(self, detailed=detailed, verbose=verbose, imgsz=imgsz)
        finally:
            self.reset_states()

    def _predict_augment(self, x):
        LOGGER.warning("augment=True (test-time augmentation) would run extra forwards through the recurrent state; "
                       "using single-scale prediction")
        return self._predict_once(x)

    def init_criterion(self):
        """RVT's YOLOX loss for a YOLOX head (rvt-*-yolox.yaml), Ultralytics' own otherwise (size-aware when the YAML
        has a ``size_aware`` entry, see :mod:`yolo_etram.size_aware`)."""
        from yolo_etram.yolox_head import YOLOXDetect

        if isinstance(self.model[-1], YOLOXDetect):
            from yolo_etram.yolox_loss import YOLOXLoss

            return YOLOXLoss(self)
        from yolo_etram.size_aware import make_size_aware

        return make_size_aware(super().init_criterion(), self.yaml.get("size_aware"))

    def loss(self, batch: dict, preds=None):
        """Detection loss on the labeled frames only: an unlabeled window is not a negative example.

        ``batch["labeled"]`` (bool, one per frame ``b*T+t``) selects frames; padded frames are unlabeled. Without it,
        every frame counts, as in stock Ultralytics.
        """
        if getattr(self, "criterion", None) is None:
            self.criterion = self.init_criterion()
        if preds is None:
            preds = self.forward(batch["img"])
        labeled = batch.get("labeled")
        if labeled is None:
            return self.criterion(preds, batch)
        preds = self.criterion.parse_output(preds)
        keep = labeled.to(preds["scores"].device, torch.bool)
        if not keep.any():  # nothing labeled in this batch: a zero loss that keeps the graph
            zero = preds["scores"].sum() * 0.0
            return zero.repeat(3), {k: torch.zeros((), device=zero.device) for k in self.criterion.loss_names}
        new_index = torch.cumsum(keep, 0) - 1
        sel = {k: v[keep] for k, v in preds.items() if k != "feats"}
        sel["feats"] = [f[keep] for f in preds["feats"]]
        batch_idx = batch["batch_idx"].long().to(keep.device)
        box_on_labeled = keep[batch_idx]
        sub = dict(batch)
        sub["batch_idx"] = new_index[batch_idx[box_on_labeled]].to(batch["batch_idx"].dtype)
        sub["cls"] = batch["cls"][box_on_labeled.to(batch["cls"].device)]
        sub["bboxes"] = batch["bboxes"][box_on_labeled.to(batch["bboxes"].device)]
        return self.criterion.loss(sel, sub)


def _with_backbone_channels(cfg: dict, ch: int) -> dict:
    """Set the input channels of a recurrent backbone row (its first argument) to ``ch``, so the data decides them."""
    rows = [list(r) for r in cfg["backbone"]]
    for r in rows:
        if r[2] in PLUGIN_LAYER_NAMES and r[3]:
            r[3] = [ch, *r[3][1:]]
    return {**cfg, "backbone": rows}


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
        super().__init__(model=str(found) if found else model, task=task, verbose=verbose)

    @property
    def is_event_model(self) -> bool:
        """Whether our event trainer/validator/predictor apply (see the class docstring)."""
        if getattr(self, "event_input", False):
            return True
        m = getattr(self, "model", None)
        if isinstance(m, RecurrentDetectionModel):
            return True
        if isinstance(m, (str, Path)) and str(m).endswith((".onnx", ".torchscript")):
            from yolo_etram.export import is_event_export

            return is_event_export(m)
        return isinstance(getattr(self, "cfg", None), (str, Path)) and is_plugin_model_yaml(self.cfg)

    def _note_event_input(self, data=None, source=None) -> None:
        from yolo_etram.data.data_yaml import is_event_data
        from yolo_etram.data.stream import is_event_source

        if (data is not None and is_event_data(data)) or (source is not None and is_event_source(source)):
            self.event_input = True

    def train(self, trainer=None, **kwargs):
        self._note_event_input(data=kwargs.get("data"))
        return super().train(trainer, **kwargs)

    def val(self, validator=None, **kwargs):
        self._note_event_input(data=kwargs.get("data"))
        return super().val(validator, **kwargs)

    def predict(self, source=None, stream: bool = False, predictor=None, **kwargs):
        self._note_event_input(data=kwargs.get("data"), source=source)
        return super().predict(source, stream, predictor, **kwargs)

    def export(self, **kwargs) -> str:
        """Export; recurrent models take and return their LSTM states (``onnx`` or ``torchscript``, fixed imgsz).

        Usage:
            >>> EventYOLO("best.pt").export(format="onnx", imgsz=(384, 640))
        """
        if not isinstance(self.model, RecurrentDetectionModel):
            return super().export(**kwargs)
        self._check_is_pytorch_model()
        from yolo_etram.export import EventExporter

        custom = {"imgsz": (384, 640), "batch": 1, "data": None, "device": None, "verbose": False}
        args = {**self.overrides, **custom, **kwargs, "mode": "export"}  # Model.export's precedence
        return EventExporter(overrides=args, _callbacks=self.callbacks)(model=self.model)

    @property
    def task_map(self) -> dict:
        stock = super().task_map
        if not self.is_event_model:
            return stock
        from yolo_etram.predict import EventPredictor
        from yolo_etram.train import EventTrainer
        from yolo_etram.val import EventValidator

        ours = {"model": RecurrentDetectionModel, "trainer": EventTrainer, "validator": EventValidator,
                "predictor": EventPredictor}
        return {**stock, "detect": {**stock["detect"], **ours}}

    def load_rvt(self, checkpoint: str | Path, allow_unsafe_pickle: bool = False):
        """Load an RVT Lightning checkpoint into this model: backbone; PAFPN for ``rvt-*-3scale.yaml``; PAFPN and YOLOX
        head (the whole RVT detector) for ``rvt-*-yolox.yaml``. ``etram-yolo import-rvt`` saves the result.

        Returns the import report (loaded counts, unmapped keys)."""
        from yolo_etram.rvt_import import load_rvt_checkpoint

        if not isinstance(self.model, RecurrentDetectionModel):
            raise TypeError("load_rvt needs a recurrent model (e.g. EventYOLO('rvt-b-3scale.yaml'))")
        report = load_rvt_checkpoint(self.model, checkpoint, allow_unsafe_pickle)
        LOGGER.info(str(report))
        return report

