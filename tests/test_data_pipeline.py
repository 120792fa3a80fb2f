"""Training data pipeline: clip dataset, stream/random/mixed samplers, sequence-consistent augmentation, collate."""

import pickle

import numpy as np
import pytest
import torch
from rawdata import random_boxes, random_events

from yolo_etram.data.augment import AugConfig, AugParams, augment_clip, hflip, zoom_in, zoom_in_window, zoom_out
from yolo_etram.data.dataset import EventClipDataset, collate_clips
from yolo_etram.data.io import write_boxes, write_events_h5
from yolo_etram.data.prepare import PrepareConfig, prepare_dataset
from yolo_etram.data.prepared import PreparedSequence
from yolo_etram.data.sampler import PAD_CLIP, PAD_KEY, ClipKey, MixedSampler, RandomClipSampler, StreamSampler

W, H, T = 96, 64, 4
# (duration s, labels start s, label gap (from, to) s or None): different lengths, late first labels, a label gap
RECORDINGS = [
    (1.6, 0.0, None),
    (0.8, 0.5, None),
    (1.2, 0.0, (0.5, 0.8)),
    (0.6, 0.0, None),
    (1.0, 0.3, None),
    (0.9, 0.0, None),
    (1.4, 0.6, None),
]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("clips")
    for i, (dur, start, gap) in enumerate(RECORDINGS):
        us = int(dur * 1e6)
        stem = root / "raw" / "train" / f"rec_{i:02d}"
        stem.parent.mkdir(parents=True, exist_ok=True)
        write_events_h5(f"{stem}_td.h5", *random_events(4000 + 3000 * i, us, W, H, seed=i), W, H)
        boxes = random_boxes(us, W, H, seed=i)
        keep = boxes["t"] >= start * 1e6
        if gap:
            keep &= (boxes["t"] < gap[0] * 1e6) | (boxes["t"] >= gap[1] * 1e6)
        write_boxes(f"{stem}_bbox.npy", boxes[keep])
    prepare_dataset(
        root / "raw", root / "prep", PrepareConfig(kind="etram", downsample=1), splits=("train",), progress=False
    )
    return root / "prep" / "train"


@pytest.fixture(scope="module")
def ds(prepared):
    return EventClipDataset(prepared, seq_len=T)


def stream_windows(ds):
    """(seq, window) of every window in the streaming ranges."""
    return {(int(c["seq"]), w) for c in ds.clips_stream for w in range(c["start"], c["stop"])}


# ----------------------------------------------------------------------------------------------------------------------
# Dataset: clip tables and items
# ----------------------------------------------------------------------------------------------------------------------


def test_clip_tables(ds):
    assert len(ds.sequences) == len(RECORDINGS) and ds.hw == (H, W) and ds.channels == 20
    late = 0
    for i, seq in enumerate(ds.sequences):
        first, stop = ds.stream_clip_ranges[i]
        clips = ds.clips_stream[first:stop]
        begin = max(int(seq.frame_repr_idx.min()) - T + 1, 0)
        late += begin > 0
        assert clips["start"][0] == begin and clips["stop"][-1] == len(seq)
        np.testing.assert_array_equal(clips["start"][1:], clips["stop"][:-1])  # consecutive, no gap, no overlap
        assert np.all(clips["stop"][:-1] - clips["start"][:-1] == T) and 0 < clips["stop"][-1] - clips["start"][-1] <= T
        assert clips["first"].tolist() == [True] + [False] * (len(clips) - 1) and np.all(clips["seq"] == i)
    assert late >= 2  # the fixture has sequences whose labels start late
    expected = sorted((i, int(r)) for i, s in enumerate(ds.sequences) for r in s.frame_repr_idx if r >= T - 1)
    got = sorted((int(c["seq"]), int(c["stop"]) - 1) for c in ds.clips_random)
    assert got == expected and np.all(ds.clips_random["stop"] - ds.clips_random["start"] == T)
    assert len(ds) == len(ds.clips_stream)
    assert len(EventClipDataset(ds.root, seq_len=T, sampling="random")) == len(ds.clips_random)


def test_item_one_read_padding_and_labels(ds, monkeypatch):
    calls = []
    original = PreparedSequence.histograms

    def counting(self, start, stop):
        calls.append((self.name, start, stop))
        return original(self, start, stop)

    monkeypatch.setattr(PreparedSequence, "histograms", counting)
    seq_id = 2
    last = int(ds.stream_clip_ranges[seq_id, 1]) - 1
    row = ds.clips_stream[last]
    n = int(row["stop"] - row["start"])
    assert n < T, "fixture: the last clip of this sequence should be short"
    item = ds[last]
    assert calls == [(ds.sequences[seq_id].name, int(row["start"]), int(row["stop"]))]
    assert item["img"].dtype == torch.uint8 and item["img"].shape == (T, 20, H, W)
    seq = ds.sequences[seq_id]
    np.testing.assert_array_equal(item["img"][:n].numpy(), original(seq, int(row["start"]), int(row["stop"])))
    assert not item["img"][n:].any()
    assert item["padded"].tolist() == [False] * n + [True] * (T - n)
    assert item["window_idx"].tolist() == list(range(row["start"], row["stop"])) + [-1] * (T - n)
    np.testing.assert_array_equal(item["window_t"][:n].numpy(), seq.window_t[row["start"] : row["stop"]])
    assert item["is_first"] is False and item["seq_id"] == seq_id
    for t in range(n):
        w = int(row["start"]) + t
        raw = seq.window_labels(w)
        if raw is None or not len(raw):
            assert item["labels"][t] is None and not item["labeled"][t]
        else:
            assert item["labeled"][t]
            ref = np.stack([raw["class_id"], raw["x"], raw["y"], raw["x"] + raw["w"], raw["y"] + raw["h"]], 1)
            np.testing.assert_allclose(item["labels"][t][:, :5], ref.astype(np.float32))
            assert item["labels"][t].shape[1] == 8  # + motion code, seconds stopped (UNKNOWN, 0 without motion), track
    assert all(b is None for b in item["labels"][n:])
    # a plain (clip, aug) tuple and a ClipKey read the same clip; the key may override is_first
    assert torch.equal(ds[(last, None)]["img"], item["img"]) and ds[ClipKey(last, is_first=True)]["is_first"]


def test_padded_clip_and_random_item(ds):
    item = ds[PAD_CLIP]
    assert not item["img"].any() and item["padded"].all() and not item["labeled"].any()
    assert item["is_first"] is False and item["seq_id"] == -1 and (item["window_idx"] == -1).all()
    rnd = ds[ClipKey(3, None, True)]
    row = ds.clips_random[3]
    assert rnd["is_first"] is True and rnd["window_idx"].tolist() == list(range(row["start"], row["stop"]))
    assert int(row["stop"]) - 1 in ds.sequences[int(row["seq"])].frame_repr_idx


def test_ultralytics_labels_names_and_class_map(ds, prepared):
    n_labeled = sum(
        int(b is not None and len(b) > 0)
        for i, s in enumerate(ds.sequences)
        for b in (ds.window_boxes(i, int(w)) for w in s.frame_repr_idx)
    )
    assert len(ds.labels) == n_labeled > 0
    lb = ds.labels[0]
    assert lb["cls"].shape[1] == 1 and lb["bboxes"].shape[1] == 4 and lb["shape"] == (H, W)
    assert lb["im_file"].startswith(ds.sequences[0].name + ":")
    allb = np.concatenate([lb["bboxes"] for lb in ds.labels])
    assert allb.min() >= 0 and allb.max() <= 1 and (allb[:, 2:] > 0).all()
    assert ds.names == {0: "0", 1: "1", 2: "2"}
    mapped = EventClipDataset(prepared, seq_len=T, class_map={0: 0, 1: 0}, names=["vehicle"])  # class 2 dropped
    assert mapped.names == {0: "vehicle"}
    cls = np.concatenate([lb["cls"] for lb in mapped.labels])
    assert set(np.unique(cls)) == {0.0} and len(cls) < len(np.concatenate([lb["cls"] for lb in ds.labels]))


def test_pickles_without_handles_or_label_cache(ds):
    ds[0]
    assert "labels" in ds.__dict__ or ds.labels  # build the cache
    clone = pickle.loads(pickle.dumps(ds))
    assert "labels" not in clone.__dict__
    assert torch.equal(clone[1]["img"], ds[1]["img"])


# ----------------------------------------------------------------------------------------------------------------------
# Stream sampler
# ----------------------------------------------------------------------------------------------------------------------


def slot_columns(keys, batch_size):
    return [keys[b::batch_size] for b in range(batch_size)]


@pytest.mark.parametrize("batch_size,world_size", [(1, 1), (2, 1), (3, 1), (2, 2), (1, 3)])
def test_stream_sampler_invariants(ds, batch_size, world_size):
    visited, seq_rank, steps = [], {}, set()
    for rank in range(world_size):
        sampler = StreamSampler(ds, batch_size, shuffle=True, seed=7, rank=rank, world_size=world_size, augment=True)
        sampler.set_epoch(3)
        keys = list(sampler)
        assert len(keys) == len(sampler) == sampler.steps_per_epoch * batch_size
        steps.add(sampler.steps_per_epoch)
        for column in slot_columns(keys, batch_size):
            real = [k for k in column if k.clip != PAD_CLIP]
            assert column[: len(real)] == real  # padding only after the slot ran out
            seqs_in_slot = []
            for k in real:
                row = ds.clips_stream[k.clip]
                s = int(row["seq"])
                if not seqs_in_slot or seqs_in_slot[-1] != s:
                    assert row["first"], "a sequence must start with its first clip"
                    assert s not in seqs_in_slot and s not in seq_rank, "a sequence is walked once, by one slot"
                    seqs_in_slot.append(s)
                    seq_rank[s] = rank
                    prev, aug = None, k.aug
                else:
                    assert not row["first"] and k.clip == prev + 1, "clips of a sequence in order, back to back"
                    assert k.aug == aug, "one augmentation per sequence"
                prev = k.clip
                assert ds[k]["is_first"] == bool(row["first"])
                visited += [(s, w) for w in range(row["start"], row["stop"])]
            for k in column[len(real) :]:
                assert k == PAD_KEY
    assert len(steps) == 1, "all ranks run the same number of steps"
    assert len(visited) == len(set(visited)) and set(visited) == stream_windows(ds)  # each window exactly once
    assert sorted(seq_rank) == list(range(len(ds.sequences)))  # ranks: disjoint and complete


def test_stream_sampler_balances_slots(ds):
    sampler = StreamSampler(ds, 3, seed=0)
    counts = ds.stream_clip_ranges[:, 1] - ds.stream_clip_ranges[:, 0]
    loads = sorted(sum(counts[s] for s in slot) for slot in sampler.sequences_of_rank(0))
    assert sampler.steps_per_epoch == loads[-1] and loads[-1] - loads[0] <= counts.max()
    assert sum(loads) == len(ds.clips_stream)


def test_stream_sampler_determinism_and_epochs(ds):
    a, b = StreamSampler(ds, 2, seed=1, augment=True), StreamSampler(ds, 2, seed=1, augment=True)
    assert a.keys(0) == b.keys(0) and a.keys(5) == b.keys(5)
    orders = {tuple(k.clip for k in a.keys(e)) for e in range(6)}
    assert len(orders) > 1, "a new sequence order per epoch"
    assert a.keys(0) != StreamSampler(ds, 2, seed=2, augment=True).keys(0)
    fixed = StreamSampler(ds, 2, shuffle=False)
    assert fixed.keys(0) == fixed.keys(1) and all(k.aug is None for k in fixed.keys(0))
    assert [k for k in fixed.keys(0) if k.clip != PAD_CLIP][:1] == [ClipKey(0)]
    with pytest.raises(ValueError, match="zoom-in"):
        StreamSampler(ds, 2, augment=AugConfig.random())


def test_sampler_epoch_advances_without_repeats(ds):
    sampler = StreamSampler(ds, 2, seed=3)
    assert list(sampler) == sampler.keys(0) and list(sampler) == sampler.keys(1)  # advances on its own
    sampler.set_epoch(1)  # late set_epoch (the loader's workers prefetched epoch 1): never served twice
    assert list(sampler) == sampler.keys(2)
    resumed = StreamSampler(ds, 2, seed=3)
    resumed.set_epoch(5)
    assert list(resumed) == sampler.keys(5)


def test_drop_incomplete(ds):
    sampler = StreamSampler(ds, 2, seed=0, drop_incomplete=True)
    keys = list(sampler)
    assert PAD_KEY not in keys and sampler.steps_per_epoch < StreamSampler(ds, 2, seed=0).steps_per_epoch


# ----------------------------------------------------------------------------------------------------------------------
# Random and mixed samplers
# ----------------------------------------------------------------------------------------------------------------------


def test_random_sampler(ds):
    ranks = [RandomClipSampler(ds, 2, seed=4, rank=r, world_size=2, augment=True) for r in range(2)]
    keys = [s.keys(1) for s in ranks]
    assert len(keys[0]) == len(keys[1]) == ranks[0].steps_per_epoch * 2 == (len(ds.clips_random) // 2) // 2 * 2
    ids = [k.clip for ks in keys for k in ks]
    assert len(ids) == len(set(ids)), "ranks draw disjoint clips within an epoch"
    assert all(k.random for ks in keys for k in ks)
    for k in keys[0][:6]:
        item = ds[k]
        row = ds.clips_random[k.clip]
        assert item["is_first"] is True and not item["padded"].any()
        assert int(row["stop"]) - 1 in ds.sequences[int(row["seq"])].frame_repr_idx  # ends on a labeled window
    augs = [k.aug for k in RandomClipSampler(ds, 2, seed=4, augment=True).keys(0)]
    assert len(set(augs)) == len(augs), "augmentation drawn per clip"
    assert any(a.zoom_in > 1 for a in augs) and ranks[0].keys(1) == keys[0] and ranks[0].keys(2) != keys[0]


def test_mixed_sampler(ds):
    assert (MixedSampler(ds, 8).n_stream, MixedSampler(ds, 8).n_random) == (4, 4)  # RVT's 1:1
    assert MixedSampler(ds, 2, random_fraction=0.9).n_random == 1  # at least one stream slot
    mixed = MixedSampler(ds, 4, random_fraction=0.5, seed=5, augment=True)
    keys = mixed.keys(2)
    assert len(keys) == len(mixed) == mixed.steps_per_epoch * 4
    stream = StreamSampler(ds, 2, seed=5, augment=True)
    assert mixed.steps_per_epoch == stream.steps_per_epoch
    assert [k for t in range(mixed.steps_per_epoch) for k in keys[4 * t : 4 * t + 2]] == stream.keys(2)
    assert all(k.random for t in range(mixed.steps_per_epoch) for k in keys[4 * t + 2 : 4 * t + 4])
    batch = collate_clips([ds[k] for k in keys[:4]])
    assert batch["is_first"][2:].all() and batch["is_first"][:2].all()  # first step: every stream slot starts
    batch = collate_clips([ds[k] for k in keys[4:8]])
    assert batch["is_first"][2:].all()  # random slots restart every clip


# ----------------------------------------------------------------------------------------------------------------------
# Augmentation
# ----------------------------------------------------------------------------------------------------------------------


def rect_clip(boxes, t=3, c=2):
    """A clip with each integer box drawn as a filled rectangle (value k+1 for box k) in every frame."""
    img = torch.zeros(t, c, H, W, dtype=torch.uint8)
    for k, (x1, y1, x2, y2) in enumerate(boxes):
        img[..., y1:y2, x1:x2] = k + 1
    lab = np.array([[k, *b] for k, b in enumerate(boxes)], np.float32)
    return img, [lab.copy() for _ in range(t)]


def pixel_box(img, value):
    ys, xs = torch.nonzero(img[0, 0] == value, as_tuple=True)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


BOXES = [(5, 7, 25, 30), (60, 20, 90, 50), (40, 40, 48, 60)]


def test_hflip_convention_and_involution():
    img, labels = rect_clip(BOXES)
    fimg, flab = hflip(img, labels)
    for k, (x1, y1, x2, y2) in enumerate(BOXES):
        np.testing.assert_array_equal(flab[0][k, 1:], [W - x2, y1, W - x1, y2])
        np.testing.assert_array_equal(pixel_box(fimg, k + 1), flab[0][k, 1:])  # lands exactly on the pixels
    img2, lab2 = hflip(fimg, flab)
    assert torch.equal(img2, img) and all(np.array_equal(a, b) for a, b in zip(lab2, labels))
    # RVT's top-left/width form, x' = W - 1 - x - w, is one pixel left of the flipped pixels
    x, w = BOXES[0][0], BOXES[0][2] - BOXES[0][0]
    assert flab[0][0, 1] == (W - 1 - x - w) + 1


@pytest.mark.parametrize("factor,ux,uy", [(1.2, 0.0, 0.0), (1.13, 0.7, 0.4), (1.05, 1.0, 1.0)])
def test_zoom_out_keeps_boxes_on_pixels(factor, ux, uy):
    img, labels = rect_clip(BOXES)
    zimg, zlab = zoom_out(img, labels, factor, ux, uy)
    zh, zw = int(H / factor), int(W / factor)
    assert zimg.shape == img.shape and zimg.dtype == torch.uint8
    assert (zimg[0, 0] > 0).sum() < (img[0, 0] > 0).sum()
    for k in range(len(BOXES)):
        np.testing.assert_allclose(pixel_box(zimg, k + 1), zlab[0][k, 1:], atol=1.0)
    x0, y0 = int(ux * (W - zw)), int(uy * (H - zh))
    assert not zimg[..., :y0, :].any() and not zimg[..., :, :x0].any() and not zimg[..., y0 + zh :, :].any()


@pytest.mark.parametrize("ubox", [0.0, 0.5, 0.999])
def test_zoom_in_contains_chosen_box_and_keeps_alignment(ubox):
    img, labels = rect_clip(BOXES)
    labels[0] = None  # an unlabeled frame stays unlabeled
    factor = 1.5
    zimg, zlab = zoom_in(img, labels, factor, 0.3, 0.6, ubox)
    chosen = min(int(ubox * len(BOXES)), len(BOXES) - 1)
    assert zlab[0] is None and chosen in zlab[-1][:, 0]
    row = zlab[-1][zlab[-1][:, 0] == chosen][0]
    x1, y1, x2, y2 = BOXES[chosen]
    np.testing.assert_allclose(row[3] - row[1], (x2 - x1) * W / int(W / factor), rtol=1e-5)  # whole box kept
    for b in zlab[-1]:
        np.testing.assert_allclose(pixel_box(zimg, int(b[0]) + 1), b[1:], atol=1.0)
    assert np.all(zlab[-1][:, 3] > zlab[-1][:, 1]) and np.all(zlab[-1][:, 1:] >= 0)
    assert zlab[-1][:, [1, 3]].max() <= W and zlab[-1][:, [2, 4]].max() <= H


def test_zoom_in_window_bounds_and_last_box():
    box = np.array([60, 20, 90, 50], np.float32)
    for u in (0.0, 0.5, 0.9999):
        x0, y0 = zoom_in_window(box, (H, W), (42, 64), u, u)
        assert x0 <= 60 and x0 + 64 >= 90 and 0 <= x0 <= W - 64 and y0 <= 20 and y0 + 42 >= 50
    big = np.array([10, 5, 90, 60], np.float32)  # larger than the window: the window lies inside it
    x0, y0 = zoom_in_window(big, (H, W), (42, 64), 0.5, 0.5)
    assert 10 <= x0 and x0 + 64 <= 90 and 5 <= y0 and y0 + 42 <= 60
    img, labels = rect_clip(BOXES)
    _, zlab = zoom_in(img, labels, 1.4, 0.5, 0.5, ubox=0.99)  # RVT's randint could never pick the last box
    assert 2 in zlab[-1][:, 0]


def test_aug_config_probabilities():
    rng = np.random.default_rng(0)
    stream = [AugConfig.stream().sample(rng) for _ in range(4000)]
    assert all(p.zoom_in == 1 for p in stream)
    assert abs(np.mean([p.hflip for p in stream]) - 0.5) < 0.04
    assert abs(np.mean([p.zoom_out > 1 for p in stream]) - 0.5) < 0.04
    assert all(1 <= p.zoom_out <= 1.2 for p in stream)
    rnd = [AugConfig.random().sample(rng) for _ in range(4000)]
    assert abs(np.mean([p.zoom_in > 1 for p in rnd]) - 0.64) < 0.04
    assert abs(np.mean([p.zoom_out > 1 for p in rnd]) - 0.16) < 0.03
    assert all(1 <= p.zoom_in <= 1.5 and not (p.zoom_in > 1 and p.zoom_out > 1) for p in rnd)
    img, labels = rect_clip(BOXES)
    assert AugParams().identity and augment_clip(img, labels, AugParams()) == (img, labels)


def test_stream_augmentation_is_sequence_consistent(ds):
    sampler = StreamSampler(ds, 2, seed=0, augment=AugConfig(hflip=1.0, zoom=0.0))
    keys = [k for k in sampler.keys(0) if k.clip != PAD_CLIP]
    assert all(k.aug.hflip for k in keys)
    for k in keys:
        row = ds.clips_stream[k.clip]
        plain, flipped = ds[k.clip], ds[k]
        assert torch.equal(flipped["img"], plain["img"].flip(-1))
        for a, b in zip(plain["labels"], flipped["labels"]):
            if a is not None:
                np.testing.assert_allclose(b[:, [1, 3]], W - a[:, [3, 1]])
        assert flipped["is_first"] == bool(row["first"])


def test_dataset_applies_same_zoom_to_every_frame(ds):
    key = ClipKey(0, AugParams(zoom_out=1.2, ux=0.5, uy=0.5))
    plain, zoomed = ds[0], ds[key]
    ref, _ = zoom_out(plain["img"], plain["labels"], 1.2, 0.5, 0.5)
    assert torch.equal(zoomed["img"], ref)
    assert zoomed["labeled"].tolist() == plain["labeled"].tolist()


# ----------------------------------------------------------------------------------------------------------------------
# Collate and the Ultralytics loader
# ----------------------------------------------------------------------------------------------------------------------


def test_collate(ds):
    last = int(ds.stream_clip_ranges[0, 1]) - 1
    items = [ds[0], ds[PAD_CLIP], ds[last]]
    batch = collate_clips(items)
    B = len(items)
    assert batch["img"].shape == (B, T, 20, H, W) and batch["img"].dtype == torch.uint8
    for k in ("labeled", "padded", "window_idx", "window_t"):
        assert batch[k].shape == (B * T,)
    assert batch["labeled"].dtype == batch["padded"].dtype == torch.bool and batch["window_t"].dtype == torch.int64
    assert batch["is_first"].tolist() == [True, False, False] and batch["seq_id"].tolist() == [0, -1, 0]
    assert batch["cls"].dtype == batch["bboxes"].dtype == batch["batch_idx"].dtype == torch.float32
    n = sum(len(b) for it in items for b in it["labels"] if b is not None)
    assert batch["cls"].shape == (n, 1) and batch["bboxes"].shape == (n, 4) and batch["batch_idx"].shape == (n,)
    frames = sorted(set(batch["batch_idx"].long().tolist()))
    assert frames == [b * T + t for b, it in enumerate(items) for t in range(T) if it["labels"][t] is not None]
    assert frames == torch.nonzero(batch["labeled"]).flatten().tolist()
    f = frames[0]
    lab = items[f // T]["labels"][f % T]
    x1, y1, x2, y2 = lab[0, 1:5]
    np.testing.assert_allclose(
        batch["bboxes"][0].numpy(), [(x1 + x2) / 2 / W, (y1 + y2) / 2 / H, (x2 - x1) / W, (y2 - y1) / H], rtol=1e-6
    )
    assert batch["cls"][0, 0] == lab[0, 0]
    assert batch["motion"].shape == (n, 2) and batch["motion"][0].tolist() == lab[0, 5:7].tolist()
    assert len(batch["im_file"]) == len(batch["ori_shape"]) == len(batch["ratio_pad"]) == B * T
    assert batch["im_file"][1] == f"{ds.sequences[0].name}:1" and batch["im_file"][T] == "<pad>"
    assert batch["ori_shape"][0] == batch["resized_shape"][0] == (H, W)
    assert batch["ratio_pad"][0] == ((1.0, 1.0), (0.0, 0.0))


def batches_through_loader(ds, num_workers, epochs=2):
    from ultralytics.data.build import InfiniteDataLoader

    sampler = MixedSampler(ds, 3, random_fraction=0.34, seed=11, augment=True)
    loader = InfiniteDataLoader(
        ds, batch_size=3, shuffle=False, sampler=sampler, num_workers=num_workers, collate_fn=collate_clips
    )
    assert len(loader) == sampler.steps_per_epoch and len(loader.sampler) % loader.batch_size == 0
    out = []
    try:
        for epoch in range(epochs):
            sampler.set_epoch(epoch)  # what the trainer does (under DDP), after workers may have prefetched
            out.append(list(loader))
    finally:
        loader.close()
    return out


def test_infinite_dataloader_same_batches_for_any_workers(ds):
    single, multi = batches_through_loader(ds, 0), batches_through_loader(ds, 2)
    assert [len(e) for e in single] == [len(e) for e in multi]
    order = [[(b["seq_id"].tolist(), b["window_idx"].tolist()) for b in e] for e in single]
    assert order[0] != order[1], "each epoch has its own order"
    for e in range(len(single)):
        for a, b in zip(single[e], multi[e]):
            assert a.keys() == b.keys()
            for k in a:
                if isinstance(a[k], torch.Tensor):
                    assert torch.equal(a[k], b[k]), k
                else:
                    assert a[k] == b[k], k


def test_reads_rvt_prepared_split(golden):
    ds = EventClipDataset(golden / "rvt_prepared", split="val", seq_len=5)
    seq = ds.sequences[0]
    assert ds.hw == (360, 640) and seq.downsample == 2
    for clip in range(len(ds)):
        item = ds[clip]
        for t, w in enumerate(item["window_idx"].tolist()):
            raw = seq.window_labels(w) if w >= 0 else None
            if raw is None or not len(raw):
                assert item["labels"][t] is None
            else:
                np.testing.assert_array_equal(item["labels"][t][:, 1:3], np.stack([raw["x"], raw["y"]], 1))
    assert {int(w) for c in range(len(ds)) for w in ds[c]["window_idx"] if w >= 0} == set(
        range(max(int(seq.frame_repr_idx.min()) - 4, 0), len(seq))
    )
