"""RVT and eTraM release checkpoints (PyTorch Lightning 1.8 ``.ckpt``) read safely, and what their configuration says.

Besides ``state_dict`` such a file holds Lightning's loop, callback, optimizer and scheduler states and, when the
training code saved them, ``hyper_parameters`` as an omegaconf ``DictConfig`` (RVT's Hydra ``full_config``). The file is
read with :func:`~yolo_etram.utils.checkpoints.restricted_load`: tensors and plain containers are rebuilt, every other
object becomes an inert record, nothing named by the file is imported or run, and omegaconf is not needed.
:func:`rvt_hints` reads the model size, class count, dataset, input size, partition and event representation from the
configuration, where the file has one; :func:`~yolo_etram.nn.rvt_import.import_rvt` uses them as defaults.

Usage:
    >>> ckpt = read_lightning_checkpoint("rvt-b-etram.ckpt")
    >>> ckpt.hints  # RVTHints(embed_dim=64, nc=3, dataset='etram', partition=(6, 10), ...)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from yolo_etram.utils.checkpoints import CheckpointError, restricted_load, to_plain

__all__ = ["LightningCheckpoint", "RVTHints", "read_lightning_checkpoint", "rvt_hints"]


@dataclass
class RVTHints:
    """What an RVT configuration says about the model and its data (None where it does not say)."""

    embed_dim: int | None = None
    nc: int | None = None
    dataset: str | None = None  # gen1, gen4 or etram
    downsample: int | None = None
    partition: tuple[int, int] | None = None
    imgsz: tuple[int, int] | None = None  # the padded input size (in_res_hw)
    nbins: int | None = None
    window_ms: int | None = None
    representation: str | None = None  # the folder name RVT trained on (dataset.ev_repr_name), e.g. RVT's default
    found: list[str] = field(default_factory=list)  # the config keys these came from

    def __str__(self) -> str:
        said = {k: v for k, v in vars(self).items() if v is not None and k != "found"}
        return ", ".join(f"{k} {v}" for k, v in said.items()) or "nothing"


@dataclass
class LightningCheckpoint:
    """A read RVT/eTraM checkpoint: its tensors, its configuration as plain data, and the hints drawn from it."""

    path: Path
    state_dict: dict[str, torch.Tensor]
    config: dict
    hints: RVTHints


def read_lightning_checkpoint(path: str | Path, allow_unsafe_pickle: bool = False) -> LightningCheckpoint:
    """Read an RVT/eTraM ``.ckpt`` (or a plain saved state dict) without running anything from the file.

    ``allow_unsafe_pickle`` is an escape hatch for files the restricted reader refuses (a global that could run code):
    it unpickles fully, which runs whatever the file says; use it only for files you trust."""
    path = Path(path)
    if allow_unsafe_pickle:
        if not path.is_file():
            raise CheckpointError(f"{path}: no such checkpoint file")
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    else:
        ckpt = restricted_load(path)
    sd = ckpt.get("state_dict", ckpt) if isinstance(ckpt, Mapping) else None
    if not isinstance(sd, Mapping) or not sd:
        raise CheckpointError(f"{path}: holds no state_dict of tensors (an RVT/eTraM Lightning checkpoint has one)")
    tensors = {str(k): v for k, v in sd.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"{path}: its state_dict holds no tensors")
    config = to_plain(ckpt.get("hyper_parameters")) if isinstance(ckpt, Mapping) else None
    config = config if isinstance(config, dict) else {}
    return LightningCheckpoint(path, tensors, config, rvt_hints(config))


def _get(tree: dict, dotted: str):
    node = tree
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def rvt_hints(config: dict) -> RVTHints:
    """Read RVT's Hydra configuration (``hyper_parameters`` or its ``full_config``/``config`` entry): model size
    (``model.backbone.embed_dim``), classes (``model.head.num_classes``), dataset (``dataset.name``; gen4 data whose
    path or name says eTraM counts as eTraM), downsampling (``dataset.downsample_by_factor_2``), input size
    (``model.backbone.in_res_hw``), partition (``...attention.partition_size``, else from ``partition_split_32``) and
    representation (``dataset.ev_repr_name``)."""
    from yolo_etram.data.event_settings import EventSettings

    for key in ("full_config", "config", "cfg"):
        if isinstance(config.get(key), Mapping):
            config = config[key]
            break
    hints = RVTHints()

    def take(attr: str, key: str, convert=lambda v: v):
        value = _get(config, key)
        if value is None or isinstance(value, str) and value.startswith(("???", "${")):
            return
        try:
            setattr(hints, attr, convert(value))
            hints.found.append(key)
        except (TypeError, ValueError):
            pass

    take("embed_dim", "model.backbone.embed_dim", int)
    take("nc", "model.head.num_classes", int)
    take("imgsz", "model.backbone.in_res_hw", lambda v: (int(v[0]), int(v[1])))
    take("partition", "model.backbone.stage.attention.partition_size", lambda v: (int(v[0]), int(v[1])))
    take("downsample", "dataset.downsample_by_factor_2", lambda v: 2 if bool(v) else 1)
    name = str(_get(config, "dataset.name") or "").lower()
    if name:
        where = f"{name} {_get(config, 'dataset.path') or ''}".lower()
        hints.dataset = "etram" if "etram" in where else name if name in ("gen1", "gen4") else None
        hints.found.append("dataset.name")
    if hints.partition is None and hints.imgsz is not None:
        split = _get(config, "model.backbone.partition_split_32")
        if isinstance(split, int) and split > 0:
            hints.partition = (hints.imgsz[0] // (32 * split), hints.imgsz[1] // (32 * split))
            hints.found.append("model.backbone.partition_split_32")
    parsed = EventSettings.from_folder_name(str(_get(config, "dataset.ev_repr_name") or ""))
    if parsed:
        hints.window_ms, hints.nbins, hints.representation = parsed.window_ms, parsed.nbins, parsed.folder_name
        hints.found.append("dataset.ev_repr_name")
    return hints
