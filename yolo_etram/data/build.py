"""Builders shared by the trainer and the validator (as Ultralytics' ``data/build.py``): the clip dataset of a split,
its batch-order sampler and loader, the move of a collated batch to the device, and the boxes of chosen frames.

Usage:
    >>> dataset = build_event_dataset("datasets/etram/val", data, mode="val")
    >>> loader = build_event_dataloader(dataset, data, batch=4, mode="val")
    >>> batch = preprocess_event_batch(next(iter(loader)), torch.device("cpu"), multiple=(192, 320))
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import torch
from einops import rearrange
from ultralytics.data.build import InfiniteDataLoader
from ultralytics.utils import LOGGER

from yolo_etram.utils.errors import EventDataError
from yolo_etram.utils.sizes import pad_to_multiple

from .augment import AugConfig
from .dataset import EventClipDataset, collate_clips
from .event_augment import EventAugConfig
from .sampler import MixedSampler, RandomClipSampler, Sampling, StreamSampler
from .small_sampling import SmallSampling, clip_weights, walks
from .twin import TwinClipDataset, TwinSlots, collate_twin, twin_split

__all__ = [
    "build_event_dataset",
    "build_sampler",
    "build_event_dataloader",
    "preprocess_event_batch",
    "boxes_on_frames",
    "frames",
]


TWIN_READERS = ("multires", "teacher")
"""What may read the data YAML's ``twin`` in lockstep (see :mod:`.twin`)."""


def build_event_dataset(
    img_path: str, data: dict, mode: str = "val", twin: str | None = None
) -> EventClipDataset | TwinClipDataset:
    """The clips of one split: random-access clips for ``sampling: random`` training, stream clips otherwise;
    with ``twin`` (``multires`` or ``teacher``), paired with the same split of the data YAML's ``twin``."""
    sampling = Sampling.RANDOM if mode == "train" and data["sampling"] == Sampling.RANDOM else Sampling.STREAM

    def clips(path) -> EventClipDataset:
        return EventClipDataset(
            path,
            seq_len=data["seq_len"],
            sampling=sampling,
            names=data["names"],
            representation=data.get("representation"),
        )

    if twin is None:
        return clips(img_path)
    if twin not in TWIN_READERS:
        raise ValueError(f"twin must be one of {TWIN_READERS}, not {twin!r}")
    if not data.get("twin"):
        raise EventDataError(
            f"{data.get('yaml_file') or 'data'}: {twin} reads each clip at a second resolution: add 'twin: <the same "
            "recordings prepared at that resolution>' to the data YAML"
        )
    return TwinClipDataset(clips(img_path), clips(twin_split(data, img_path)), teacher=twin == "teacher")


def build_sampler(
    dataset: EventClipDataset,
    data: dict,
    batch_size: int,
    mode: str,
    seed: int = 0,
    rank: int = -1,
    hflip: float = 0.5,
    events: EventAugConfig | None = None,
    small: SmallSampling | None = None,
):
    """Stream sampler for validation; the data YAML's ``sampling`` mode for training (rank-aware under DDP), with
    RVT's augmentations (``hflip`` is the flip probability, Ultralytics' ``fliplr``), the event-domain ones
    (``events``, checked against the data's event settings) and small-object sampling (``small``)."""
    import torch.distributed as dist

    world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    rank = dist.get_rank() if world > 1 else 0  # the global rank: Ultralytics passes LOCAL_RANK, wrong on 2+ nodes
    if mode != "train":
        return StreamSampler(dataset, batch_size, shuffle=False, seed=seed, augment=False)
    if events is not None and events.active:
        events.check(dataset.settings, str(dataset.root))
    stream_aug = dataclasses.replace(AugConfig.stream(), hflip=hflip, events=events)
    random_aug = dataclasses.replace(AugConfig.random(), hflip=hflip, events=events)
    weights, repeats = small_sampling_plan(dataset, data["sampling"], small)
    if data["sampling"] == Sampling.RANDOM:
        return RandomClipSampler(
            dataset, batch_size, seed=seed, rank=rank, world_size=world, augment=random_aug, weights=weights
        )
    if data["sampling"] == Sampling.MIXED:
        return MixedSampler(
            dataset,
            batch_size,
            random_fraction=data["mixed_random_fraction"],
            seed=seed,
            rank=rank,
            world_size=world,
            stream_augment=stream_aug,
            random_augment=random_aug,
            repeats=repeats,
            weights=weights,
        )
    return StreamSampler(
        dataset, batch_size, shuffle=True, seed=seed, rank=rank, world_size=world, augment=stream_aug, repeats=repeats
    )


def small_sampling_plan(dataset: EventClipDataset, sampling: str, small: SmallSampling | None):
    """Small-object sampling's random-clip weights and per-sequence walks (None where the mode has no such slots),
    said in one line: what it weighs, how many clips or sequences it favours and how much longer an epoch gets."""
    if small is None:
        return None, None
    counts = dataset.class_counts() if small.factor is None else None  # inverse class frequency needs the counts
    weights = repeats = None
    parts = []
    if sampling in (Sampling.RANDOM, Sampling.MIXED):
        weights = clip_weights(dataset.random_clip_classes(), small, counts)
        parts.append(f"random clips drawn by weight, {int((weights > 1).sum())} of {len(weights)} weigh more than 1")
    if sampling in (Sampling.STREAM, Sampling.MIXED):
        repeats = walks(clip_weights(dataset.sequence_classes(), small, counts))
        clips = np.diff(np.asarray(dataset.stream_clip_ranges), axis=1).ravel()
        parts.append(
            f"streams keep whole sequences: {int((repeats > 1).sum())} of {len(repeats)} walked up to "
            f"{int(repeats.max(initial=1))} times per epoch, {int(clips.sum())} -> {int((clips * repeats).sum())} clips"
        )
    LOGGER.info(f"small_sampling ({small.describe()}): " + "; ".join(parts))
    return weights, repeats


def build_event_dataloader(
    dataset: EventClipDataset,
    data: dict,
    batch: int,
    mode: str = "val",
    workers: int = 0,
    seed: int = 0,
    rank: int = -1,
    hflip: float = 0.5,
    pin_memory: bool = False,
    events: EventAugConfig | None = None,
    small: SmallSampling | None = None,
    twin_slots: int = 0,
):
    """Ultralytics' ``InfiniteDataLoader`` over whole batches in the sampler's order (workers only load clips).

    Validation uses at most one slot per sequence (more would only pad) and loads in the main process.
    ``twin_slots``: the last slots of every batch read the twin (multi-resolution training, a
    :class:`TwinClipDataset`)."""
    if mode != "train":
        batch = max(1, min(batch, len(dataset.sequences)))
    sampler = build_sampler(dataset, data, batch, mode, seed=seed, rank=rank, hflip=hflip, events=events, small=small)
    if twin_slots:
        sampler = TwinSlots(sampler, twin_slots)
    return InfiniteDataLoader(
        dataset,
        batch_size=batch,
        shuffle=False,
        sampler=sampler,
        num_workers=min(workers, os.cpu_count() or 1) if mode == "train" else 0,
        collate_fn=collate_twin if isinstance(dataset, TwinClipDataset) else collate_clips,
        pin_memory=pin_memory,
        drop_last=False,
    )


def preprocess_event_batch(
    batch: dict,
    device: torch.device,
    multiple: tuple[int, int],
    half: bool = False,
    teacher_multiple: tuple[int, int] | None = None,
) -> dict:
    """Move a collated event batch to ``device``: uint8 counts to float (no /255), zero-padded bottom/right, boxes
    renormalised from the stored frame to the padded one. A twin batch's parts alike: ``batch["twin"]`` (its own
    batch, padded to ``multiple``) and ``teacher_img`` (padded to ``teacher_multiple``)."""
    if "twin" in batch:
        batch["twin"] = preprocess_event_batch(batch["twin"], device, multiple, half)
    if "teacher_img" in batch:
        teacher = batch["teacher_img"].to(device, non_blocking=device.type not in {"cpu", "mps"})
        teacher = teacher.half() if half else teacher.float()
        batch["teacher_img"] = pad_to_multiple(teacher, teacher_multiple or multiple)
    for k, v in batch.items():
        if k == "teacher_img":
            continue
        if isinstance(v, torch.Tensor):
            batch[k] = v.to(device, non_blocking=device.type not in {"cpu", "mps"})
    img = batch["img"].half() if half else batch["img"].float()
    h, w = img.shape[-2:]
    img = pad_to_multiple(img, multiple)
    hp, wp = img.shape[-2:]
    if (hp, wp) != (h, w) and len(batch["bboxes"]):
        scale = torch.tensor([w / wp, h / hp, w / wp, h / hp], device=batch["bboxes"].device)
        batch["bboxes"] = batch["bboxes"] * scale
    batch["img"] = img
    batch["stored_hw"] = (h, w)
    return batch


def frames(img: torch.Tensor) -> torch.Tensor:
    """A batch's windows as frames: ``(B, T, C, H, W)`` -> ``(B * T, C, H, W)``, frame ``b * T + t``."""
    return rearrange(img, "b t c h w -> (b t) c h w") if img.ndim == 5 else img


def boxes_on_frames(batch: dict, keep: torch.Tensor) -> dict:
    """The per-box entries (``cls``, ``bboxes``, ``batch_idx``, and ``motion``, ``track`` when present) of the frames
    where ``keep`` (bool, one per frame ``b * T + t``) is True, with ``batch_idx`` renumbered to the kept frames'
    order."""
    keep = keep.to(torch.bool)
    batch_idx = batch["batch_idx"].long().to(keep.device)
    on_kept = keep[batch_idx]
    new_index = torch.cumsum(keep, 0) - 1
    out = {"batch_idx": new_index[batch_idx[on_kept]].to(batch["batch_idx"].dtype)}
    for k in ("cls", "bboxes", "motion", "track"):
        if k in batch:
            out[k] = batch[k][on_kept.to(batch[k].device)]
    return out


class StepBudget:
    """A training loader that stops yielding once the run's step count reaches ``max_steps``: epoch ``e`` has taken
    ``e * len(loader)`` steps before it (an epoch is one pass of the loader, one optimizer step per batch), so a
    resumed run stops at the same count. Everything else is the wrapped loader's."""

    def __init__(self, loader, max_steps: int, epoch):
        self.loader, self.max_steps, self.epoch = loader, int(max_steps), epoch

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        left = self.max_steps - self.epoch() * len(self.loader)
        for i, batch in enumerate(self.loader):
            if i >= left:
                return
            yield batch

    def __getattr__(self, name):
        if name == "loader":  # not set yet (a copy being built): no recursion
            raise AttributeError(name)
        return getattr(self.loader, name)
