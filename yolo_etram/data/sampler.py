"""Batch-order samplers for event clips: streaming (RVT's stream mode), random access, and RVT's mixed batches.

The main process decides the whole order of an epoch; DataLoader workers only load the clip named by each key, so the
batch order (and with it the recurrent state's meaning) does not depend on the number of workers, and one state bank
in the model suffices. Every sampler yields a flat list of :class:`ClipKey` in which each run of ``batch_size`` keys is
one batch, slot 0 first, so ``InfiniteDataLoader(dataset, batch_size=B, sampler=s, shuffle=False)`` yields whole
batches and ``len(s)`` is always a multiple of ``B``.

``is_first`` per slot (read by the trainer to reset the state rows of the slots that start a sequence):

- stream slot: True on the first clip of a sequence's stream range, False on later clips and on padded clips (a padded
  clip is all zeros with no labels; it only appears after a slot has run out of sequences for this epoch);
- random slot: True on every clip (the state restarts from zero for each clip, as in RVT).

Epochs: ``set_epoch(e)`` fixes the order of epoch ``e`` (deterministic for ``seed`` and ``e``, the same on every rank).
Each new iteration also advances by itself to an epoch greater than the last one it served, because a DataLoader with
workers starts iterating the next epoch (prefetch) before the trainer calls ``set_epoch``: so no epoch order is ever
served twice, with or without workers, and ``set_epoch`` before the first iteration (resume) starts at that epoch.

Usage:
    >>> from yolo_etram.data.dataset import EventClipDataset, collate_clips
    >>> from yolo_etram.data.sampler import StreamSampler
    >>> from ultralytics.data.build import InfiniteDataLoader
    >>> ds = EventClipDataset("datasets/etram/train", seq_len=5)
    >>> sampler = StreamSampler(ds, batch_size=8, augment=True, rank=0, world_size=1)
    >>> loader = InfiniteDataLoader(ds, batch_size=8, shuffle=False, sampler=sampler, collate_fn=collate_clips)
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from enum import Enum
from typing import NamedTuple

import numpy as np
from torch.utils.data import Sampler

from .augment import AugConfig, AugParams, resolve_aug


class Sampling(str, Enum):
    """How training batches are drawn (the data YAML's ``sampling``); compares equal to its string value."""

    STREAM = "stream"  # B slots walk whole sequences in order, state carried (RVT's streaming)
    RANDOM = "random"  # random clips ending on a label, state reset per clip (RVT's random access)
    MIXED = "mixed"  # RVT's mixed batches: stream slots first, then random ones


PAD_CLIP = -1
"""Clip id of a fully padded empty clip (zeros, no labels, ``is_first=False``)."""


class ClipKey(NamedTuple):
    """What a sampler sends to the dataset for one batch slot.

    A plain ``(clip, aug)`` tuple or an int clip id also work as keys; they index the dataset's active table.

    Attributes:
        clip: row of ``dataset.clips_random`` if ``random`` else of ``dataset.clips_stream``; ``PAD_CLIP`` = padding.
        aug: augmentation applied to the whole clip, or None.
        random: which clip table ``clip`` indexes.
        is_first: overrides the table's ``is_first`` when not None.
        twin: read the clip from the data's twin (the same recordings prepared at another resolution, see
            :mod:`.twin`) instead: multi-resolution training's second-resolution slots.
    """

    clip: int
    aug: AugParams | None = None
    random: bool = False
    is_first: bool | None = None
    twin: bool = False


PAD_KEY = ClipKey(PAD_CLIP)


def greedy_partition(loads: np.ndarray, order: np.ndarray, n_bins: int) -> list[list[int]]:
    """Deal items in ``order`` to ``n_bins`` bins, each to the least-loaded bin (lowest index on ties)."""
    heap = [(0, b) for b in range(n_bins)]
    bins: list[list[int]] = [[] for _ in range(n_bins)]
    for i in order:
        load, b = heapq.heappop(heap)
        bins[b].append(int(i))
        heapq.heappush(heap, (load + int(loads[i]), b))
    return bins


class _EpochSampler(Sampler):
    """Shared epoch logic: ``keys(epoch)`` is a pure function; ``__iter__`` picks the epoch (see the module doc)."""

    def __init__(self, batch_size: int, seed: int, rank: int, world_size: int):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size, self.seed = int(batch_size), int(seed)
        self.rank, self.world_size = max(int(rank), 0), max(int(world_size), 1)
        if self.rank >= self.world_size:
            raise ValueError(f"rank {rank} out of range for world_size {world_size}")
        self.epoch, self._served = 0, -1

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def keys(self, epoch: int) -> list[ClipKey]:
        raise NotImplementedError

    @property
    def steps_per_epoch(self) -> int:
        raise NotImplementedError

    def __len__(self) -> int:
        return self.steps_per_epoch * self.batch_size

    def __iter__(self) -> Iterator[ClipKey]:
        self._served = max(self.epoch, self._served + 1)
        return iter(self.keys(self._served))


class StreamSampler(_EpochSampler):
    """B slots, each walking whole sequences clip after clip, in order (RVT's streaming, without per-worker copies).

    Per epoch: sequences (those with stream clips) are shuffled, then dealt longest-first to the least-loaded of the
    ``world_size * batch_size`` slots (slot ``b`` of rank ``r`` is global slot ``b * world_size + r``), so every rank
    gets a disjoint share of similar size and all ranks run the same number of steps. Each slot walks its sequences in a
    shuffled order; a slot that has run out yields :data:`PAD_KEY` until the longest slot of all ranks finishes.
    Augmentation is drawn once per sequence, so all clips of a sequence share one flip/zoom.

    Args:
        dataset: an ``EventClipDataset`` (uses ``clips_stream`` and ``stream_clip_ranges``).
        batch_size: slots per batch on this rank.
        shuffle: shuffle sequences each epoch (False: sequences in dataset order, for validation).
        seed: base seed; the order of epoch ``e`` depends only on ``(seed, e)``.
        rank, world_size: DDP rank and number of ranks.
        augment: True for RVT's streaming augmentation, an :class:`AugConfig`, or False/None for none. Zoom-in is not
            allowed: its window depends on the boxes of each clip and would differ between clips of one sequence.
        drop_incomplete: stop an epoch when the first slot runs out (no padded keys; the tails of the other slots
            are skipped for that epoch).
        repeats: walks of each sequence per epoch (small-object sampling; default once each). Each walk is dealt
            like a sequence of its own and starts from a fresh state, with its own augmentation draw.

    Usage:
        >>> sampler = StreamSampler(ds, batch_size=4, augment=True)
        >>> sampler.set_epoch(3)
        >>> keys = list(sampler)  # steps_per_epoch * 4 keys, slot 0..3 per step
    """

    def __init__(
        self,
        dataset,
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        augment: AugConfig | bool | None = False,
        drop_incomplete: bool = False,
        repeats: np.ndarray | None = None,
    ):
        super().__init__(batch_size, seed, rank, world_size)
        ranges = np.asarray(dataset.stream_clip_ranges, dtype=np.int64)  # (n_seq, 2): [first clip, stop)
        if repeats is not None:  # a sequence walked k times is k walks, each dealt like a sequence
            ranges = np.repeat(ranges, np.asarray(repeats, np.int64), axis=0)
        self.ranges = ranges
        self.clip_counts = self.ranges[:, 1] - self.ranges[:, 0]
        self.shuffle, self.drop_incomplete = shuffle, drop_incomplete
        self.augment = resolve_aug(augment, AugConfig.stream())
        if self.augment is not None and self.augment.has_zoom_in:
            raise ValueError("zoom-in is for random-access clips only; streaming augmentation must not enable it")
        loads = [sum(self.clip_counts[s] for s in slot) for slot in self._slots(0)]
        self._steps = (min(loads) if drop_incomplete else max(loads)) if loads else 0

    @property
    def n_slots(self) -> int:
        return self.batch_size * self.world_size

    def _slots(self, epoch: int) -> list[list[int]]:
        """Sequence ids of every global slot, in walking order."""
        seqs = np.flatnonzero(self.clip_counts > 0)
        if self.shuffle:
            seqs = np.random.default_rng([self.seed, epoch, 0]).permutation(seqs)
        order = seqs[np.argsort(-self.clip_counts[seqs], kind="stable")]  # longest first; ties keep the shuffle
        slots = greedy_partition(self.clip_counts, order, self.n_slots)
        if self.shuffle:
            rng = np.random.default_rng([self.seed, epoch, 1])
            return [list(rng.permutation(s)) if s else s for s in slots]
        return [sorted(s) for s in slots]

    @property
    def steps_per_epoch(self) -> int:
        """Batches per epoch; the same for every epoch and every rank (the longest slot, or the shortest)."""
        return self._steps

    def sequences_of_rank(self, epoch: int) -> list[list[int]]:
        """Sequence ids of each of this rank's ``batch_size`` slots in epoch ``epoch``, in walking order."""
        slots = self._slots(epoch)
        return [slots[b * self.world_size + self.rank] for b in range(self.batch_size)]

    def keys(self, epoch: int) -> list[ClipKey]:
        augs = {}
        if self.augment is not None:  # one draw per sequence, in sequence order: the same on every rank
            rng = np.random.default_rng([self.seed, epoch, 2])
            augs = dict(enumerate(self.augment.sample_many(rng, len(self.ranges))))
        columns = []
        for slot in self.sequences_of_rank(epoch):
            keys = [ClipKey(c, augs.get(s)) for s in slot for c in range(*self.ranges[s])]
            columns.append((keys + [PAD_KEY] * self._steps)[: self._steps])
        return [columns[b][t] for t in range(self._steps) for b in range(self.batch_size)]


class RandomClipSampler(_EpochSampler):
    """Random clips ending on labeled windows (RVT's random access), ``is_first=True`` on every clip.

    Per epoch a permutation of all random clips is split across ranks (``perm[rank::world_size]``, cut to an equal
    length), and cut into ``len // batch_size`` batches (RVT drops the last incomplete batch); when there are fewer
    clips than a batch the permutation wraps so an epoch has at least one batch. Augmentation is drawn per clip.

    Args:
        dataset: an ``EventClipDataset`` (uses ``clips_random``).
        augment: True for RVT's random-access augmentation (with zoom-in), an :class:`AugConfig`, or False/None.
        weights: one per clip (small-object sampling): each epoch then draws its clips with replacement, with
            probability proportional to the weight, the draws of all ranks split between them.

    Usage:
        >>> sampler = RandomClipSampler(ds, batch_size=8, seed=0, augment=True)
    """

    def __init__(
        self,
        dataset,
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        augment: AugConfig | bool | None = False,
        weights: np.ndarray | None = None,
    ):
        super().__init__(batch_size, seed, rank, world_size)
        self.n_clips = len(dataset.clips_random)
        self.p = None if weights is None else np.asarray(weights, np.float64) / np.sum(weights)
        if self.n_clips < self.world_size:
            raise ValueError(f"{self.n_clips} random clips for {self.world_size} ranks: need at least one per rank")
        self.per_rank = self.n_clips // self.world_size
        self.augment = resolve_aug(augment, AugConfig.random())

    @property
    def steps_per_epoch(self) -> int:
        return max(self.per_rank // self.batch_size, 1)

    def draw(self, epoch: int, n: int) -> list[ClipKey]:
        """``n`` keys of this rank for epoch ``epoch``: its shares of successive permutations (no repeat within one)."""
        ids = []
        for cycle in range(-(-n // self.per_rank)):
            rng = np.random.default_rng([self.seed, epoch, 3, cycle])
            if self.p is None:
                perm = rng.permutation(self.n_clips)
            else:  # weighted, with replacement: the same draws on every rank, each rank its share
                perm = rng.choice(self.n_clips, size=self.per_rank * self.world_size, p=self.p)
            ids.extend(perm[self.rank :: self.world_size][: self.per_rank].tolist())
        ids = ids[:n]
        if self.augment is None:
            return [ClipKey(c, None, True) for c in ids]
        augs = self.augment.sample_many(np.random.default_rng([self.seed, epoch, 4, self.rank]), len(ids))
        return [ClipKey(c, a, True) for c, a in zip(ids, augs)]

    def keys(self, epoch: int) -> list[ClipKey]:
        return self.draw(epoch, self.steps_per_epoch * self.batch_size)


class MixedSampler(_EpochSampler):
    """RVT's mixed batches: the first ``batch_size - n_random`` slots stream, the last ``n_random`` are random clips.

    ``n_random = round(batch_size * random_fraction)``, kept within ``[1, batch_size - 1]`` when ``0 < random_fraction
    < 1`` (RVT: ``min(round(bs * w_r / (w_r + w_s)), bs - 1)`` with w_r = w_s = 1). The streaming part defines the
    epoch (every streaming window once, like :class:`StreamSampler` with ``batch_size - n_random`` slots); the random
    slots are filled with as many random clips as that takes. Stream slots come first in each batch, then random ones
    (RVT's ``merge_mixed_batches``); ``is_first`` is per slot as described in the module doc.

    Usage:
        >>> sampler = MixedSampler(ds, batch_size=8, random_fraction=0.5, augment=True)
        >>> sampler.n_stream, sampler.n_random
        (4, 4)
    """

    def __init__(
        self,
        dataset,
        batch_size: int,
        random_fraction: float = 0.5,
        shuffle: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        augment: bool = False,
        stream_augment: AugConfig | None = None,
        random_augment: AugConfig | None = None,
        repeats: np.ndarray | None = None,
        weights: np.ndarray | None = None,
    ):
        super().__init__(batch_size, seed, rank, world_size)
        if not 0 <= random_fraction <= 1:
            raise ValueError(f"random_fraction must be in [0, 1], got {random_fraction}")
        n_random = int(round(batch_size * random_fraction))
        if 0 < random_fraction < 1 and batch_size > 1:
            n_random = min(max(n_random, 1), batch_size - 1)
        self.n_random, self.n_stream = n_random, batch_size - n_random
        stream_aug = stream_augment or (AugConfig.stream() if augment else None)
        random_aug = random_augment or (AugConfig.random() if augment else None)
        self.stream = (
            StreamSampler(dataset, self.n_stream, shuffle, seed, rank, world_size, stream_aug, repeats=repeats)
            if self.n_stream
            else None
        )
        self.random = (
            RandomClipSampler(dataset, self.n_random, seed, rank, world_size, random_aug, weights=weights)
            if self.n_random
            else None
        )

    @property
    def steps_per_epoch(self) -> int:
        return self.stream.steps_per_epoch if self.stream else self.random.steps_per_epoch

    def keys(self, epoch: int) -> list[ClipKey]:
        steps, ns, nr = self.steps_per_epoch, self.n_stream, self.n_random
        stream = self.stream.keys(epoch) if self.stream else []
        random = self.random.draw(epoch, steps * nr) if self.random else []
        return [k for t in range(steps) for k in stream[t * ns : (t + 1) * ns] + random[t * nr : (t + 1) * nr]]
