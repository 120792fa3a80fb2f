"""Twin data: the same recordings prepared twice (e.g. 640x360 and 1280x720), read in lockstep.

A data YAML's ``twin`` key names a second prepared set of the same recordings, with the same split folders, sequences,
windows and label frames, at another resolution (or representation)::

    path: datasets/etram_ds2        # what the model trains on: 640x360 (prepare --downsample 2)
    train: train
    val: val
    twin: datasets/etram_full       # the same recordings at 1280x720 (prepare --downsample 1)

Two levers read it, each with a :class:`TwinClipDataset` over both sets and one clip key for both, so a clip is the
same windows with the same augmentation draw (flip and zoom are relative, so they move the same scene at both sizes):

- ``multires=F`` (multi-resolution training): the last ``round(F * batch)`` stream slots read the twin for the whole
  run (``ClipKey.twin``); each slot keeps one resolution, and the model streams them in a state bank of their own
  (:func:`recurrent.state_bank`), so no state ever meets another resolution. The batch carries them as
  ``batch["twin"]``, a batch of its own.
- a twin teacher (``distill_model=`` a model trained on the twin's settings): every item carries ``teacher_img``, the
  same clip from the twin, for the teacher (:mod:`yolo_etram.nn.distillation`).

Usage:
    >>> from yolo_etram.data.twin import TwinClipDataset, collate_twin
    >>> ds = TwinClipDataset(EventClipDataset("ds2/train"), EventClipDataset("full/train"), teacher=True)
    >>> batch = collate_twin([ds[0], ds[1]])  # img (2, T, 20, 360, 640), teacher_img (2, T, 20, 720, 1280)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from yolo_etram.utils.errors import EventDataError

from .dataset import EventClipDataset, collate_clips
from .sampler import ClipKey

__all__ = ["TwinClipDataset", "TwinSlots", "check_twin", "collate_twin", "twin_data", "twin_split", "twin_slots"]


def twin_split(data: dict, split_path: str | Path) -> Path:
    """The twin's folder of the split at ``split_path`` (the same path relative to the data's root)."""
    root, twin = Path(data["path"]), Path(data["twin"])
    try:
        return twin / Path(split_path).resolve().relative_to(root.resolve())
    except ValueError:
        return twin / Path(split_path).name


def twin_data(data: dict) -> dict:
    """The loaded data dict of the twin itself (to validate on it): its root, split folders and event settings, and
    the Prophesee box filter scaled by the size ratio (RVT's gen4 filter is diagonal 60 / side 20 at 1280x720, 30 / 10
    downsampled by 2)."""
    settings = data.get("twin_settings") or {}
    ratio = int(data.get("downsample") or 1) / int(settings.get("downsample") or 1)
    ev = dict(data["eval"])
    ev["min_box_diag"], ev["min_box_side"] = ev["min_box_diag"] * ratio, ev["min_box_side"] * ratio
    out = {**data, "path": data["twin"], "eval": ev, "twin": None, "twin_settings": None}
    out.update({s: str(twin_split(data, data[s])) for s in ("train", "val", "test") if data.get(s)})
    if settings:
        out["event_settings"], out["downsample"] = settings, settings.get("downsample", 1)
    return out


def check_twin(a: EventClipDataset, b: EventClipDataset) -> None:
    """Both sets must hold the same recordings cut into the same windows with the same label frames: one line
    naming both folders and the first difference otherwise."""
    where = f"twin data {b.root} does not match {a.root}"
    names_a, names_b = [s.name for s in a.sequences], [s.name for s in b.sequences]
    if names_a != names_b:
        extra = sorted(set(names_a) ^ set(names_b))
        raise EventDataError(f"{where}: other sequences ({', '.join(extra[:3]) or 'another order'})")
    for sa, sb in zip(a.sequences, b.sequences):
        if len(sa) != len(sb) or not np.array_equal(sa.window_t, sb.window_t):
            raise EventDataError(f"{where}: sequence {sa.name} has other windows ({len(sa)} vs {len(sb)})")
        if not np.array_equal(sa.frame_repr_idx, sb.frame_repr_idx):
            raise EventDataError(f"{where}: sequence {sa.name} has other label frames")
    if a.seq_len != b.seq_len:
        raise EventDataError(f"{where}: clips of {a.seq_len} and {b.seq_len} windows")


def twin_slots(batch: int, fraction: float) -> int:
    """How many of ``batch`` stream slots read the twin for ``multires=fraction``: ``round(fraction * batch)``, kept
    within ``[1, batch - 1]`` (both resolutions in every batch), as RVT keeps mixed batches' random slots."""
    if not 0 < fraction < 1:
        raise ValueError(f"multires={fraction}: the share of slots that read the twin, in (0, 1)")
    if batch < 2:
        raise ValueError(f"multires needs at least 2 stream slots (one per resolution), batch={batch}")
    return min(max(int(round(batch * fraction)), 1), batch - 1)


class TwinClipDataset(Dataset):
    """The clips of ``primary`` and, under the same keys, of ``twin`` (checked by :func:`check_twin`).

    Args:
        primary: the clips the model trains on.
        twin: the same clips from the twin data.
        teacher: every item also carries ``teacher_img``, the twin's clip (a twin teacher's input); otherwise a key
            with ``twin=True`` reads the whole item from the twin (multi-resolution training).

    Everything else (clip tables, sequences, settings) is the primary's, so samplers and the trainer see one dataset.
    """

    def __init__(self, primary: EventClipDataset, twin: EventClipDataset, teacher: bool = False):
        check_twin(primary, twin)
        self.primary, self.twin, self.teacher = primary, twin, teacher

    def __len__(self) -> int:
        return len(self.primary)

    def __getattr__(self, name):
        if name in ("primary", "twin", "teacher"):  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.primary, name)

    def __getitem__(self, key) -> dict:
        key = self.primary._parse(key)
        if self.teacher:
            item = self.primary[key]
            item["teacher_img"] = self.twin[key]["img"]
            return item
        item = (self.twin if key.twin else self.primary)[key]
        item["twin"] = key.twin
        return item

    def close(self) -> None:
        self.primary.close()
        self.twin.close()


class TwinSlots:
    """A sampler whose last ``n_twin`` keys of every batch read the twin (``ClipKey.twin``): those stream slots keep
    the twin's resolution for the whole run. Everything else is the wrapped sampler's."""

    def __init__(self, sampler, n_twin: int):
        self.sampler, self.n_twin = sampler, int(n_twin)
        self.batch_size = sampler.batch_size

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        first_twin = self.batch_size - self.n_twin
        for i, key in enumerate(self.sampler):
            key = ClipKey(*key) if not isinstance(key, ClipKey) else key
            yield key._replace(twin=True) if i % self.batch_size >= first_twin else key

    def __getattr__(self, name):
        if name == "sampler":
            raise AttributeError(name)
        return getattr(self.sampler, name)


def collate_twin(items: list[dict]) -> dict:
    """:func:`collate_clips` for twin items: ``teacher_img`` stacked beside ``img``; multi-resolution items split into
    the primary slots' batch and ``batch["twin"]``, the twin slots' batch (each slot keeps its place in its part)."""
    if "teacher_img" in items[0]:
        batch = collate_clips(items)
        batch["teacher_img"] = torch.stack([item["teacher_img"] for item in items])
        return batch
    primary = [item for item in items if not item.get("twin")]
    twin = [item for item in items if item.get("twin")]
    if not primary:
        raise ValueError("a multi-resolution batch without primary slots")
    batch = collate_clips(primary)
    if twin:
        batch["twin"] = collate_clips(twin)
    return batch
