"""``EventDetectionModel``: a stock Ultralytics ``DetectionModel`` for event windows, normally with a recurrent
backbone as its first YAML row.

It honours the YAML's ``channels``, probes strides at an input the attention partitions can divide, leaves no
recurrent state behind after its build-time probes, runs no test-time augmentation, and computes the loss on labeled
frames only. A stock YAML (``yolov8n.yaml``) builds too: without a stateful layer it is a memoryless frame baseline.

Usage:
    >>> model = EventDetectionModel("rvt-t.yaml", nc=3)
    >>> preds = model(torch.zeros(2, 5, 20, 384, 640))  # B=2 stream slots x T=5 windows, state carried
    >>> model.reset_states(torch.tensor([True, False]))  # slot 0 starts a new sequence
"""

from __future__ import annotations

import inspect
from pathlib import Path

import torch
from einops import reduce
from ultralytics.nn.modules import Detect
from ultralytics.nn.tasks import BaseModel, DetectionModel, _initialize_yolo_model, yaml_model_load
from ultralytics.utils import LOGGER
from ultralytics.utils.torch_utils import initialize_weights, unwrap_model

from recurrent import stateful_layers
from yolo_etram.data.build import boxes_on_frames
from yolo_etram.nn.batchnorm import set_batchnorm
from yolo_etram.nn.registry import PLUGIN_LAYER_NAMES, PLUGIN_LAYERS, register_layers
from yolo_etram.utils.paths import find_cfg
from yolo_etram.utils.precision import float_outputs
from yolo_etram.utils.sizes import round_up

__all__ = [
    "EventDetectionModel",
    "load_model_yaml",
    "event_frame",
    "find_event_model",
    "set_partition",
]


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
        raise FileNotFoundError(
            f"model YAML '{cfg}' not found (not a path, one of yolo_etram's cfg/models or a stock "
            "Ultralytics model YAML)"
        ) from None


def event_frame(x: torch.Tensor, channels: int = 2) -> torch.Tensor:
    """Sum a stacked histogram's time bins per polarity: ``(..., 2 * nbins, H, W)`` -> ``(..., 2, H, W)``.

    RVT's histogram channel is ``p * nbins + bin`` (polarity-major), so the sum is over contiguous halves."""
    return reduce(x, "... (p bins) h w -> ... p h w", "sum", p=channels)


class EventDetectionModel(DetectionModel):
    """A ``DetectionModel`` for event windows: recurrent (our YAMLs) or a stock YAML as a memoryless baseline.

    ``yaml["event"]`` (set from the data YAML by the trainer, saved in checkpoints) can change two things in
    :meth:`_predict_once`: ``input: event_frame`` sums the histogram's time bins per polarity (a 2-channel event frame)
    inside the model, so every user of the model still feeds histograms; ``memory: false`` resets the state before
    every window (the memoryless ablation of a recurrent model).

    Args:
        cfg: model YAML (path, bare name of one of ours or of a stock Ultralytics model, or dict).
        ch: input channels (histogram channels, ``2 * nbins``); defaults to the YAML's ``channels``.
        nc: number of classes (overrides the YAML's).
        verbose: print the model summary.
    """

    def __init__(
        self, cfg: str | Path | dict = "rvt-t.yaml", ch: int | None = None, nc: int | None = None, verbose=True
    ):
        BaseModel.__init__(self)
        register_layers()
        cfg = dict(load_model_yaml(cfg))
        ch = ch or cfg.get("channels", 20)
        event = cfg.get("event") or {}
        model_ch = 2 if event.get("input") == "event_frame" else ch  # what the first layer sees
        cfg = _with_backbone_channels(cfg, model_ch)
        _initialize_yolo_model(self, cfg, model_ch, nc, verbose)
        self.yaml["channels"] = ch  # what callers feed (exporters size their dummy input from it)
        head = self.model[-1]
        if not isinstance(head, Detect):
            raise TypeError(
                f"{type(self).__name__}: the last YAML row must be a Detect head, got {type(head).__name__}"
            )
        head.inplace = self.inplace
        self.stride = head.stride = self._probe_strides()
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
            return self._run_layers(x, profile, embed)
        x = x.reshape(-1, *x.shape[-3:])  # every window on its own: one step of batch B*T from a zero state
        self.reset_states()
        try:
            return self._run_layers(x, profile, embed)
        finally:
            self.reset_states()

    def _run_layers(self, x, profile=False, embed=None):
        """Ultralytics' layer loop; under autocast the head runs in float32 with its inputs cast up: bf16's 8-bit
        mantissa would round its anchor grid and decoded boxes by up to 4 pixels at 640 pixels, more than a small
        object can afford. (Profiling and embeddings take the stock loop.)"""
        device = x.device.type
        if profile or embed or not torch.is_autocast_enabled(device):
            return super()._predict_once(x, profile, embed)
        y, head = [], self.model[-1]
        for m in self.model:
            if m.f != -1:  # from earlier layers
                x = y[m.f] if isinstance(m.f, int) else [x if j == -1 else y[j] for j in m.f]
            if m is head:
                with torch.autocast(device, enabled=False):
                    return m(float_outputs(x))
            x = m(x)
            y.append(x if m.i in self.save else None)
        return x

    def _probe_strides(self) -> torch.Tensor:
        """Head strides from one forward on zeros of the smallest size the attention partitions divide."""
        h, w = self.input_multiple
        self.model.eval()
        self.model[-1].training = True  # the head returns its raw feature maps
        with torch.no_grad():
            feats = self.forward(torch.zeros(1, self.yaml["channels"], h, w))["feats"]
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

    @property
    def input_size(self) -> list[int]:
        """The input size this model was trained at (padded to fit its partitions): see :func:`trained_input_size`."""
        return trained_input_size(self)

    def info(self, detailed=False, verbose=True, imgsz=None):
        """Model summary; GFLOPs at ``imgsz`` (default: :attr:`input_size`, rounded up to fit the partitions).

        The FLOPs count does not include attention's matrix products and the LSTM's element-wise math (thop)."""
        from ultralytics.utils.torch_utils import model_info

        imgsz = imgsz or self.input_size
        imgsz = list(round_up((imgsz, imgsz) if isinstance(imgsz, int) else imgsz, self.input_multiple))
        try:
            return model_info(self, detailed=detailed, verbose=verbose, imgsz=imgsz)
        finally:
            self.reset_states()

    def _predict_augment(self, x):
        LOGGER.warning(
            "augment=True (test-time augmentation) would run extra forwards through the recurrent state; "
            "using single-scale prediction"
        )
        return self._predict_once(x)

    def init_criterion(self):
        """RVT's YOLOX loss for a YOLOX head (rvt-*-yolox.yaml), Ultralytics' own otherwise; either size-aware when
        the YAML has a ``size_aware`` entry (see :mod:`yolo_etram.nn.size_aware_loss`), mining hard negatives with the
        train argument ``hard_negatives`` (:mod:`yolo_etram.nn.hard_negatives`), with a temporal consistency term with
        ``temporal_consistency`` (:mod:`yolo_etram.nn.temporal_consistency`)."""
        from yolo_etram.nn.hard_negatives import HardNegatives, make_hard_negative
        from yolo_etram.nn.size_aware_loss import make_size_aware
        from yolo_etram.nn.temporal_consistency import gain_from_args, make_temporal_consistency
        from yolo_etram.nn.yolox_head import YOLOXDetect

        args = getattr(self, "args", None)
        mining, tc = HardNegatives.from_args(args), gain_from_args(args)
        if isinstance(self.model[-1], YOLOXDetect):
            from yolo_etram.nn.yolox_loss import YOLOXLoss

            return YOLOXLoss(self, self.yaml.get("size_aware"), hard_negatives=mining, temporal_consistency=tc)
        criterion = make_hard_negative(make_size_aware(super().init_criterion(), self.yaml.get("size_aware")), mining)
        return make_temporal_consistency(criterion, tc)

    def loss(self, batch: dict, preds=None):
        """Detection loss on the labeled frames only: an unlabeled window is not a negative example.

        ``batch["labeled"]`` (bool, one per frame ``b*T+t``) selects frames; padded frames are unlabeled. Without it,
        every frame counts, as in stock Ultralytics.
        """
        if getattr(self, "criterion", None) is None:
            self.criterion = self.init_criterion()
        if "twin" in batch and preds is None:
            return self._multires_loss(batch)
        if preds is None:
            preds = self.forward(batch["img"])
        with torch.autocast(batch["img"].device.type, enabled=False):  # the loss in float32, also under AMP
            return self._labeled_loss(batch, float_outputs(preds))

    def _multires_loss(self, batch: dict):
        """Multi-resolution training (:mod:`yolo_etram.data.twin`): the primary slots' loss plus the twin slots' loss,
        the twin slots streamed in a state bank of their own (their state never meets the other resolution). Each
        part is a sum over its frames, so the total weighs every frame alike; the logged items are their mean."""
        from recurrent import state_bank

        twin = batch["twin"]
        loss, items = self.loss({k: v for k, v in batch.items() if k != "twin"})
        with state_bank(self, "twin"):
            twin_loss, twin_items = self.loss(twin)
        n, m = len(batch["is_first"]), len(twin["is_first"])
        return loss + twin_loss, {k: (v * n + twin_items[k] * m) / (n + m) for k, v in items.items()}

    def reset_twin_states(self, mask: torch.Tensor | None = None) -> None:
        """:meth:`reset_states` for the twin slots of multi-resolution training (their own state bank)."""
        from recurrent import state_bank

        with state_bank(self, "twin"):
            self.reset_states(mask)

    def _labeled_loss(self, batch: dict, preds):
        labeled = batch.get("labeled")
        if labeled is None:
            return self.criterion(preds, batch)
        preds = self.criterion.parse_output(preds)
        keep = labeled.to(preds["scores"].device, torch.bool)
        if not keep.any():  # nothing labeled in this batch: a zero loss that keeps the graph
            zero = preds["scores"].sum() * 0.0
            names = self.criterion.loss_names
            return zero.repeat(len(names)), {k: torch.zeros((), device=zero.device) for k in names}
        sel = {k: v[keep] for k, v in preds.items() if k != "feats"}
        sel["feats"] = [f[keep] for f in preds["feats"]]
        clips = {"frames": keep.nonzero().squeeze(1), "windows": len(keep) // max(len(batch.get("is_first", [])), 1)}
        return self.criterion.loss(sel, {**batch, **boxes_on_frames(batch, keep), **clips})


ETRAM_INPUT_HW = (384, 640)
"""eTraM's model input (its 640x360 windows zero-padded to fit partition (6, 10)): the size of a model that records
no training size (a fresh YAML, a checkpoint older than the record)."""


def trained_input_size(model) -> list[int]:
    """The input size ``model`` was trained at, rounded up to its ``input_multiple``: our trainer's record
    (``yaml["event"]["input_hw"]``), else an ``(h, w)`` in Ultralytics' ``args["imgsz"]`` (RVT imports record RVT's),
    else :data:`ETRAM_INPUT_HW`.

    Example:
        >>> trained_input_size(EventYOLO("runs/demo/weights/best.pt").model)  # the demo: [192, 320]
    """
    hw = ((getattr(model, "yaml", None) or {}).get("event") or {}).get("input_hw")
    if not hw:
        args = getattr(model, "args", None) or {}
        imgsz = (args if isinstance(args, dict) else vars(args)).get("imgsz")
        hw = imgsz if isinstance(imgsz, (list, tuple)) and len(imgsz) == 2 else ETRAM_INPUT_HW
    return list(round_up([int(v) for v in hw], getattr(model, "input_multiple", (32, 32))))


BACKBONE_YAML_KEYS = ("temporal_attention",)
"""Top-level model YAML keys that are keyword arguments of the recurrent backbone (its row's arguments are positional,
as Ultralytics passes them)."""


def _with_backbone_channels(cfg: dict, ch: int) -> dict:
    """Set the input channels of a recurrent backbone row (its first argument) to ``ch``, so the data decides them, and
    hand it the YAML's :data:`BACKBONE_YAML_KEYS` (``temporal_attention: {memory: 4, stages: [1, 2]}``)."""
    rows = [list(r) for r in cfg["backbone"]]
    extra = {k: cfg[k] for k in BACKBONE_YAML_KEYS if cfg.get(k) is not None}
    for r in rows:
        if r[2] in PLUGIN_LAYER_NAMES and r[3]:
            r[3] = _positional_args(r[2], [ch, *r[3][1:]], extra)
    return {**cfg, "backbone": rows}


def _positional_args(name: str, args: list, extra: dict) -> list:
    """``args`` followed by ``extra`` keyword arguments of layer ``name``, as one positional list (the defaults filled
    in between)."""
    if not extra:
        return args
    cls = next(c for c in PLUGIN_LAYERS if c.__name__ == name)
    params = list(inspect.signature(cls).parameters.values())
    bound = inspect.signature(cls).bind_partial(*args)
    for key, value in extra.items():
        if key not in (p.name for p in params):
            raise ValueError(f"model YAML key '{key}': {name} takes no such argument")
        bound.arguments[key] = value
    last = max(i for i, p in enumerate(params) if p.name in bound.arguments)
    return [bound.arguments.get(p.name, p.default) for p in params[: last + 1]]


def find_event_model(model) -> EventDetectionModel | None:
    """The ``EventDetectionModel`` inside a model, EMA copy, DDP wrapper, ``AutoBackend`` or distillation wrapper (the
    student), if any."""
    seen = set()
    m = unwrap_model(model)
    while m is not None and id(m) not in seen:
        if isinstance(m, EventDetectionModel):
            return m
        seen.add(id(m))
        m = getattr(m, "backend", None) or getattr(m, "student_model", None) or getattr(m, "model", None)
        if isinstance(m, torch.nn.Sequential):
            return None
    return None


def set_partition(model: EventDetectionModel, partition) -> None:
    """Use the data's attention partition (it depends on the input size; partitions hold no weights)."""
    backbone = model.backbone
    if hasattr(backbone, "set_partition_size") and tuple(partition) != tuple(backbone.partition_size):
        LOGGER.info(f"Attention partition {tuple(backbone.partition_size)} -> {tuple(partition)} for this data")
        backbone.set_partition_size(tuple(partition))
