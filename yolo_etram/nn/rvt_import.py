"""Import RVT Lightning checkpoints (``mdl.backbone.*``, ``mdl.fpn.*``, ``mdl.yolox_head.*``) into our models.

The backbone maps onto ``model.model[0]`` (:func:`recurrent.load_rvt_backbone`). RVT's YOLOX PAFPN maps onto the
stock-layer neck of the ``rvt-*-3scale.yaml`` models, whose YAML key ``rvt_pafpn`` names the row of each RVT layer:
RVT's ``BaseConv`` and Ultralytics' ``Conv`` share their inner names (``conv``, ``bn``), and RVT's ``CSPLayer``
(``conv1, conv2, conv3, m.j.conv1, m.j.conv2``) is Ultralytics' ``C3`` (``cv1, cv2, cv3, m.j.cv1, m.j.cv2``). RVT's
BatchNorms use PyTorch's eps 1e-5 (Ultralytics sets 1e-3), so imported neck BNs get RVT's eps. RVT's YOLOX head
(``mdl.yolox_head.*``) loads into a last row of type :class:`~yolo_etram.nn.yolox_head.YOLOXDetect`
(``rvt-*-yolox.yaml``),
whose module names are RVT's; a ``Detect`` head has no counterpart, and the head is reported as not loaded. A YAML
key ``rvt_head_levels`` places RVT's three head levels (strides 8, 16, 32) in a head with more
(``rvt-*-yolox-4scale.yaml``: levels 1-3, after the new stride-4 level 0). Every tensor outside the backbone that the
checkpoint does not fill is listed in the report as starting fresh.

:func:`import_rvt` (``etram-yolo import-rvt``) writes an imported model as an ordinary checkpoint of ours, which
``yolo val/predict/export`` and ``EventYOLO`` load like a trained one.

Usage:
    >>> from yolo_etram import EventYOLO
    >>> model = EventYOLO("rvt-b-yolox.yaml")
    >>> print(model.load_rvt("rvt-b.ckpt"))  # backbone, PAFPN and YOLOX head
    $ etram-yolo import-rvt rvt-b.ckpt --model rvt-b-yolox.yaml --out rvt-b-etram.pt
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from recurrent import load_rvt_backbone, strip_lightning_prefix
from yolo_etram.nn.batchnorm import set_batchnorm

_CSP_NAMES = ((r"\.conv1\.", ".cv1."), (r"\.conv2\.", ".cv2."), (r"\.conv3\.", ".cv3."))


@dataclass
class RVTImportReport:
    """What :func:`load_rvt_checkpoint` loaded and what it could not place."""

    backbone: int = 0
    neck: int = 0
    head: int = 0
    not_loaded: list[str] = field(default_factory=list)  # RVT keys with no place in this model
    missing: list[str] = field(default_factory=list)  # our neck/head keys the checkpoint did not provide
    fresh: list[str] = field(default_factory=list)  # our modules (rows, head levels) that keep their initial weights
    from_config: str = ""  # what the checkpoint's configuration set (import_rvt)

    def __str__(self) -> str:
        heads = [k for k in self.not_loaded if ".yolox_head." in k or k.startswith("yolox_head.")]
        other = [k for k in self.not_loaded if k not in heads]
        s = f"RVT import: {self.backbone} backbone, {self.neck} neck and {self.head} head tensors loaded"
        if heads:
            s += f"; {len(heads)} YOLOX head tensors not loaded (this model's Detect head is trained anew)"
        if other:
            s += f"; {len(other)} other tensors not loaded: {', '.join(other[:8])}{' ...' if len(other) > 8 else ''}"
        if self.missing:
            s += f"; {len(self.missing)} tensors missing from the checkpoint: {', '.join(self.missing[:8])}"
        if self.fresh:
            s += f"; starting fresh: {', '.join(self.fresh)}"
        if self.from_config:
            s += f"; from the checkpoint's configuration: {self.from_config}"
        return s


def rvt_pafpn_state_dict(sd: dict, rows: dict[str, int]) -> dict[str, torch.Tensor]:
    """RVT ``fpn.*`` tensors renamed to ``model.<row>.*`` keys of our neck."""
    out = {}
    for key, tensor in sd.items():
        if not key.startswith("fpn."):
            continue
        name, rest = key[4:].split(".", 1)
        if name not in rows:
            continue
        rest = "." + rest
        if name.startswith("C3_"):
            for pattern, repl in _CSP_NAMES:
                rest = re.sub(pattern, repl, rest)
        out[f"model.{rows[name]}{rest}"] = tensor
    return out


_HEAD_LEVEL = re.compile(r"^(stems|cls_convs|reg_convs|cls_preds|reg_preds|obj_preds)\.(\d+)\.")


def rvt_head_state_dict(sd: dict, row: int, levels: list[int] | None = None) -> dict[str, torch.Tensor]:
    """RVT ``yolox_head.*`` tensors renamed to ``model.<row>.*`` keys of a ``YOLOXDetect`` (same inner names); RVT's
    head level ``k`` goes to level ``levels[k]`` (default: the same level)."""
    out = {}
    for k, v in sd.items():
        if not k.startswith("yolox_head."):
            continue
        rest = k[len("yolox_head.") :]
        if levels is not None:
            m = _HEAD_LEVEL.match(rest)
            if m and int(m[2]) >= len(levels):
                raise RuntimeError(f"RVT head level {m[2]} has no place in rvt_head_levels {list(levels)}")
            rest = _HEAD_LEVEL.sub(lambda m: f"{m[1]}.{levels[int(m[2])]}.", rest) if m else rest
        out[f"model.{row}.{rest}"] = v
    return out


def fresh_modules(model: nn.Module, loaded: set[str]) -> list[str]:
    """What outside the backbone keeps its initial weights: runs of rows (``rows 19-22``) and head levels
    (``row 23 level 0``), each with its tensor count."""
    rows, levels = {}, {}
    for k in model.state_dict():
        if k in loaded or k.startswith("model.0."):
            continue
        parts = k.split(".")
        m = _HEAD_LEVEL.match(".".join(parts[2:]) + ".")
        if m:
            key = f"row {parts[1]} level {m[2]}"
            levels[key] = levels.get(key, 0) + 1
        else:
            rows[int(parts[1])] = rows.get(int(parts[1]), 0) + 1
    empty = {i for i, m in enumerate(model.model) if not m.state_dict()}  # Upsample, Concat: bridge a run
    runs, out = [], []
    for r in sorted(rows):
        if runs and all(x in empty for x in range(runs[-1][1] + 1, r)):
            runs[-1][1] = r
        else:
            runs.append([r, r])
    for a, b in runs:
        n = sum(rows[r] for r in rows if a <= r <= b)
        out.append(f"row {a} ({n} tensors)" if a == b else f"rows {a}-{b} ({n} tensors)")
    return out + [f"{name} ({n} tensors)" for name, n in levels.items()]


def load_rvt_checkpoint(
    model: nn.Module, path_or_sd: str | Path | dict, allow_unsafe_pickle: bool = False
) -> RVTImportReport:
    """Load an RVT checkpoint's backbone, PAFPN (where the YAML maps it) and YOLOX head (where the last row is a
    ``YOLOXDetect``) into an ``EventDetectionModel``.

    Shapes are checked; weights that do not match (another size, another class count) raise ``RuntimeError``.
    """
    if isinstance(path_or_sd, (str, Path)):
        from yolo_etram.nn.lightning_checkpoint import read_lightning_checkpoint

        path_or_sd = read_lightning_checkpoint(path_or_sd, allow_unsafe_pickle).state_dict
    sd = strip_lightning_prefix(path_or_sd)
    report = RVTImportReport()
    backbone = load_rvt_backbone(
        model.model[0], {f"backbone.{k[9:]}": v for k, v in sd.items() if k.startswith("backbone.")}, strict=True
    )
    report.backbone = len(backbone.loaded)
    rows = dict((getattr(model, "yaml", None) or {}).get("rvt_pafpn") or {})
    neck = rvt_pafpn_state_dict(sd, rows)
    from yolo_etram.nn.yolox_head import YOLOXDetect

    head_row = len(model.model) - 1 if isinstance(model.model[-1], YOLOXDetect) else None
    levels = (getattr(model, "yaml", None) or {}).get("rvt_head_levels")
    head = rvt_head_state_dict(sd, head_row, levels) if head_row is not None else {}
    own = model.state_dict()
    for part, found in (("PAFPN", neck), ("YOLOX head", head)):
        bad = [
            (k, tuple(v.shape), tuple(own[k].shape)) for k, v in found.items() if k in own and v.shape != own[k].shape
        ]
        if bad or any(k not in own for k in found):
            hint = (
                " (another class count: build the model with the checkpoint's nc)"
                if any(".cls_preds." in k for k, *_ in bad)
                else ""
            )
            raise RuntimeError(
                f"RVT {part} weights do not fit this model{hint}: shape mismatches {bad[:4]}, "
                f"unknown keys {[k for k in found if k not in own][:4]}"
            )
    model.load_state_dict({**neck, **head}, strict=False)
    report.neck, report.head = len(neck), len(head)
    used_rows = [*rows.values(), *([head_row] if head_row is not None else [])]
    prefixes = {f"model.{r}." for r in used_rows}
    report.missing = [k for k in own if any(k.startswith(p) for p in prefixes) and k not in neck and k not in head]
    if levels is not None:  # the head's extra levels are new by design, not missing
        report.missing = [k for k in report.missing if not _is_level(k, head_row, set(levels))]
    report.fresh = fresh_modules(model, {*neck, *head})
    if backbone.fresh_keys:  # layers RVT does not have (temporal attention: an exact no-op until trained)
        report.fresh.insert(0, f"row 0 temporal attention ({len(backbone.fresh_keys)} tensors)")
    for r in used_rows:
        set_batchnorm(model.model[r])  # RVT's (PyTorch default) BatchNorm settings
    used = {f"fpn.{n}." for n in rows} | ({"yolox_head."} if head_row is not None else set())
    report.not_loaded = [k for k in sd if not k.startswith("backbone.") and not any(k.startswith(p) for p in used)]
    return report


def _is_level(key: str, row: int | None, levels: set[int]) -> bool:
    """True for a head tensor of ``row`` on a level outside ``levels``."""
    m = _HEAD_LEVEL.match(key[len(f"model.{row}.") :] + ".") if key.startswith(f"model.{row}.") else None
    return bool(m) and int(m[2]) not in levels


# ---------------------------------------------------------------------------------------------------------------------
# A whole RVT checkpoint -> a checkpoint of ours (``etram-yolo import-rvt``)
# ---------------------------------------------------------------------------------------------------------------------

# How each dataset's RVT models read their input (rvt_spec 2, 3.6): class names, downsampling, partition, padded size.
PRESETS = {
    "etram": dict(names=("pedestrian", "vehicle", "micromobility"), downsample=2, partition=(6, 10), imgsz=(384, 640)),
    "gen4": dict(names=("pedestrian", "two-wheeler", "car"), downsample=2, partition=(6, 10), imgsz=(384, 640)),
    "gen1": dict(names=("car", "pedestrian"), downsample=1, partition=(8, 10), imgsz=(256, 320)),
}
SIZES = {32: "t", 48: "s", 64: "b"}  # RVT embed_dim -> model size


class RVTImportError(RuntimeError):
    """An RVT checkpoint that cannot be imported as asked (a user error: the CLI prints one line)."""


def import_rvt(
    checkpoint: str | Path,
    out: str | Path | None = None,
    model: str | Path | None = None,
    nc: int | None = None,
    names: list[str] | None = None,
    preset: str | None = None,
    downsample: int | None = None,
    nbins: int | None = None,
    window_ms: int | None = None,
    partition: tuple[int, int] | None = None,
    score: str | None = None,
    allow_unsafe_pickle: bool = False,
) -> tuple[Path, RVTImportReport]:
    """Import a whole RVT/eTraM Lightning checkpoint and save it as an ordinary checkpoint of ours.

    The file is read without running anything from it (:mod:`yolo_etram.nn.lightning_checkpoint`); its configuration
    (``hyper_parameters``, where the file has one) gives the dataset, downsampling, partition, input size and
    representation. Each option given here wins over the file, and the file over the defaults: the model YAML
    ``rvt-{t,s,b}-yolox.yaml`` by the checkpoint's embed dim, ``nc`` from its head, and names, downsampling and
    partition from ``preset`` (default: the file's dataset, else ``etram``: 3 classes, 1280x720 downsampled to 640x360,
    padded to 384x640, partition (6, 10)). The model carries ``yaml["event"]``, so it predicts on raw recordings.
    The saved dict has the layout of Ultralytics' trainer checkpoints (``model``, ``train_args``, ``date``,
    ``version``, ...), weights in float32. Returns the output path and the import report.

    Usage:
        >>> path, report = import_rvt("rvt-b.ckpt", "rvt-b-etram.pt")
        >>> EventYOLO(path).predict("recording_td.h5", save=True)
    """
    from datetime import datetime

    from ultralytics import __version__
    from ultralytics.cfg import DEFAULT_CFG_DICT

    from recurrent import infer_rvt_backbone_cfg
    from yolo_etram.data.data_yaml import event_settings
    from yolo_etram.data.event_settings import EventSettings
    from yolo_etram.nn.detection_model import EventDetectionModel, load_model_yaml
    from yolo_etram.nn.lightning_checkpoint import RVTHints, read_lightning_checkpoint

    hints = RVTHints()
    if isinstance(checkpoint, (str, Path)):
        read = read_lightning_checkpoint(checkpoint, allow_unsafe_pickle)
        sd, hints = read.state_dict, read.hints
    else:
        sd = checkpoint
    preset = preset or hints.dataset or "etram"
    if preset not in PRESETS:
        raise RVTImportError(f"unknown preset '{preset}': use one of {', '.join(PRESETS)}")
    p = PRESETS[preset]
    stripped = strip_lightning_prefix(sd)
    try:
        backbone = infer_rvt_backbone_cfg(sd)
    except (KeyError, ValueError) as e:
        raise RVTImportError(f"{checkpoint}: not an RVT checkpoint with a recognisable backbone ({e})") from e
    if model is None:
        if backbone.embed_dim not in SIZES:
            raise RVTImportError(f"embed dim {backbone.embed_dim} is no RVT size (32, 48, 64): pass --model")
        model = f"rvt-{SIZES[backbone.embed_dim]}-yolox.yaml"
    head_cls = stripped.get("yolox_head.cls_preds.0.weight")
    names = list(names) if names else None
    nc = (
        nc
        or (len(names) if names else None)
        or (head_cls.shape[0] if head_cls is not None else None)
        or hints.nc
        or len(p["names"])
    )
    if names is None:
        names = list(p["names"]) if len(p["names"]) == nc else [str(i) for i in range(nc)]
    if len(names) != nc:
        raise RVTImportError(f"{len(names)} names given for {nc} classes")
    channels = backbone.in_channels
    nbins = nbins or hints.nbins or channels // 2
    window_ms = window_ms or hints.window_ms or 50
    partition = tuple(partition or hints.partition or p["partition"])
    downsample = downsample if downsample is not None else hints.downsample or p["downsample"]
    trained = EventSettings.from_folder_name(hints.representation) or EventSettings()
    settings = EventSettings(
        trained.representation,
        nbins,
        trained.cutoff,
        window_ms,
        trained.window_events,
        downsample,
    )
    if settings.channels != channels:
        raise RVTImportError(
            f"{checkpoint}: the backbone takes {channels} input channels but {settings.describe()} has "
            f"{settings.channels}; pass --nbins"
        )
    event = event_settings({"event_settings": settings.to_dict(), "partition": list(partition)})
    cfg = {**load_model_yaml(model), "event": event}
    net = EventDetectionModel(cfg, ch=channels, nc=nc, verbose=False)
    net.model[0].set_partition_size(partition)
    try:
        report = load_rvt_checkpoint(net, sd)
    except RuntimeError as e:
        raise RVTImportError(f"{checkpoint} does not fit {model}: {e}") from e
    report.from_config = str(hints) if hints.found else ""
    if score is not None:
        net.model[-1].score = score
    if hints.imgsz and all(s % m == 0 for s, m in zip(hints.imgsz, net.input_multiple)):
        imgsz = list(hints.imgsz)  # the size RVT padded its input to
    else:
        imgsz = list(p["imgsz"]) if partition == tuple(p["partition"]) else list(net.input_multiple)
    train_args = {**DEFAULT_CFG_DICT, "task": "detect", "mode": "train", "model": str(model), "imgsz": imgsz}
    net.names, net.nc, net.args = dict(enumerate(names)), nc, train_args
    net.reset_states()
    if out is None and not isinstance(checkpoint, (str, Path)):
        raise RVTImportError("give an output path when importing from a state dict")
    out = Path(out) if out else Path(checkpoint).with_suffix(".pt")
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "epoch": -1,
            "best_fitness": None,
            "model": net.float().eval(),
            "ema": None,
            "updates": None,
            "optimizer": None,
            "scaler": None,
            "train_args": train_args,
            "train_metrics": {},
            "train_results": {},
            "date": datetime.now().astimezone().isoformat(),
            "version": __version__,
            "license": "AGPL-3.0 (https://ultralytics.com/license)",
            "docs": "https://docs.ultralytics.com",
            "rvt_import": {"checkpoint": str(checkpoint), "report": str(report)},
        },
        out,
    )
    return out, report


def main(argv: list[str] | None = None) -> int:
    """``etram-yolo import-rvt CKPT``: an RVT/eTraM checkpoint as a checkpoint that ``yolo val/predict/export`` use."""
    import argparse

    from yolo_etram.utils.errors import EventDataError

    ap = argparse.ArgumentParser(
        prog="etram-yolo import-rvt",
        description="Import a whole RVT or eTraM Lightning checkpoint (backbone, PAFPN, YOLOX head) into "
        "rvt-{t,s,b}-yolox.yaml and save it as an ordinary checkpoint (yolo val/predict/export model=OUT).",
    )
    ap.add_argument("checkpoint", help="RVT .ckpt (Lightning; state_dict keys mdl.*)")
    ap.add_argument("--model", help="model YAML (default: rvt-{t,s,b}-yolox.yaml by the checkpoint's size)")
    ap.add_argument("--out", help="output .pt (default: the checkpoint's name with .pt)")
    ap.add_argument(
        "--preset",
        choices=tuple(PRESETS),
        default=None,
        help="class names, downsampling and partition of the data the checkpoint was trained on (default: the "
        "dataset its configuration names, else etram: 3 classes, 1280x720 -> 640x360 padded to 384x640)",
    )
    ap.add_argument("--nc", type=int, help="number of classes (default: the checkpoint's head)")
    ap.add_argument("--names", nargs="+", help="class names (default: the preset's when the count fits)")
    ap.add_argument(
        "--downsample", type=int, help="sensor-to-input downsampling factor (default: the file's, else the preset's)"
    )
    ap.add_argument("--nbins", type=int, help="histogram bins per polarity (default: the file's, else channels / 2)")
    ap.add_argument("--window-ms", type=int, default=None, help="window length in ms (default: the file's, else 50)")
    ap.add_argument(
        "--partition",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        help="attention partition (default: the file's, else the preset's)",
    )
    ap.add_argument(
        "--score",
        choices=("obj_cls", "cls"),
        help="eval score: obj_cls (default) or cls (RVT's COCO score, to reproduce RVT's AP)",
    )
    ap.add_argument(
        "--allow-unsafe-pickle",
        action="store_true",
        help="fully unpickle a checkpoint that the safe reader refuses because it names code to run: this runs that "
        "code; only for files you trust",
    )
    args = ap.parse_args(argv)
    if not Path(args.checkpoint).is_file():
        raise EventDataError(f"{args.checkpoint}: no such checkpoint file")
    try:
        out, report = import_rvt(
            args.checkpoint,
            args.out,
            args.model,
            args.nc,
            args.names,
            args.preset,
            args.downsample,
            args.nbins,
            args.window_ms,
            args.partition,
            args.score,
            args.allow_unsafe_pickle,
        )
    except (RuntimeError, FileNotFoundError) as e:  # RVTImportError, unreadable files
        raise EventDataError(str(e)) from e
    print(f"{report}\nimport-rvt: saved {out}")
    return 0
