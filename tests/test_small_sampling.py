"""Small-object sampling (``small_sampling``): clip weights by hand, weighted random clips at the right rates and
split between ranks, whole sequences walked more often in stream slots, and one-line refusals."""

import logging

import numpy as np
import pytest
import yaml
from test_data_pipeline import ds, prepared  # noqa: F401  (fixtures)
from ultralytics.utils import LOGGER

from yolo_etram import EventYOLO
from yolo_etram.data.build import small_sampling_plan
from yolo_etram.data.sampler import PAD_CLIP, MixedSampler, RandomClipSampler, StreamSampler
from yolo_etram.data.small_sampling import MAX_WEIGHT, SmallSampling, clip_weights, walks
from yolo_etram.utils.errors import UnsupportedOptionError


def test_weights_by_hand():
    classes = [np.array([1]), np.array([0, 1]), np.array([], np.int64), np.array([2])]
    counts = np.array([10, 50, 5])
    factor = SmallSampling.parse(3, [0, 2], "data.yaml")
    np.testing.assert_array_equal(clip_weights(classes, factor, counts), [1, 3, 1, 3])
    inverse = SmallSampling.parse("inverse", None, "data.yaml")  # n_max / n_c of the rarest class held
    np.testing.assert_array_equal(clip_weights(classes, inverse, counts), [1, 5, 1, 10])
    rare = clip_weights([np.array([2])], inverse, np.array([1000, 1000, 1]))
    assert rare[0] == MAX_WEIGHT  # capped
    np.testing.assert_array_equal(walks(np.array([1.0, 2.4, 2.6, 10.0])), [1, 2, 3, 10])


def test_settings_and_refusals():
    for off in (0, 0.0, None, False, "0", 1):
        assert SmallSampling.parse(off, None, "d.yaml") is None
    with pytest.raises(UnsupportedOptionError, match=r"small_sampling=3 needs the small classes: add groups"):
        SmallSampling.parse(3, None, "d.yaml")
    with pytest.raises(UnsupportedOptionError, match=r"give a factor > 1 \(e.g. 3\) or 'inverse'"):
        SmallSampling.parse("often", [0], "d.yaml")
    with pytest.raises(UnsupportedOptionError, match=r"the factor must be in \(1, 10\]"):
        SmallSampling.parse(50, [0], "d.yaml")


def test_weighted_random_clips_come_at_their_rates_and_ranks_split_the_draws(ds):  # noqa: F811
    n = len(ds.clips_random)
    weights = np.ones(n)
    weights[:3] = 5.0  # three clips five times as likely
    sampler = RandomClipSampler(ds, 2, seed=0, weights=weights)
    drawn = np.concatenate([[k.clip for k in sampler.keys(e)] for e in range(400)])
    share = np.isin(drawn, [0, 1, 2]).mean()
    expected = 15 / (n - 3 + 15)
    assert share == pytest.approx(expected, rel=0.1) and len(set(drawn)) > 3
    assert [k.clip for k in sampler.keys(7)] == [
        k.clip for k in RandomClipSampler(ds, 2, seed=0, weights=weights).keys(7)
    ]
    ranks = [RandomClipSampler(ds, 1, seed=0, rank=r, world_size=2, weights=weights) for r in range(2)]
    a, b = ([k.clip for k in s.keys(3)] for s in ranks)
    assert len(a) == len(b) == ranks[0].steps_per_epoch and all(k.random for k in ranks[0].keys(3))
    plain = RandomClipSampler(ds, 2, seed=0)
    assert sorted(k.clip for k in plain.keys(0)) != sorted(drawn[: len(plain.keys(0))].tolist())


def test_streams_walk_weighted_sequences_whole_and_more_often(ds):  # noqa: F811
    n_seq = len(ds.stream_clip_ranges)
    repeats = np.ones(n_seq, np.int64)
    repeats[0] = 3
    base, more = StreamSampler(ds, 2, seed=1), StreamSampler(ds, 2, seed=1, repeats=repeats)
    clips0 = int(np.diff(ds.stream_clip_ranges[0])[0])
    keys = [k for k in more.keys(0) if k.clip != PAD_CLIP]
    assert len(keys) == len([k for k in base.keys(0) if k.clip != PAD_CLIP]) + 2 * clips0
    starts = [k for k in keys if ds.clips_stream[k.clip]["first"] and int(ds.clips_stream[k.clip]["seq"]) == 0]
    assert len(starts) == 3  # three walks of sequence 0, each from its first clip (a fresh state)
    everything = more.keys(0)
    for column in ([k for k in everything[b::2] if k.clip != PAD_CLIP] for b in range(2)):  # walks whole, in order
        for k0, k1 in zip(column, column[1:]):
            if not ds.clips_stream[k1.clip]["first"]:
                assert k1.clip == k0.clip + 1
    assert more.steps_per_epoch >= base.steps_per_epoch
    mixed = MixedSampler(ds, 2, random_fraction=0.5, seed=1, repeats=repeats, weights=np.ones(len(ds.clips_random)))
    assert mixed.stream.steps_per_epoch == StreamSampler(ds, 1, seed=1, repeats=repeats).steps_per_epoch


def test_the_plan_reads_classes_from_the_labels(ds):  # noqa: F811
    counts = ds.class_counts()
    assert counts.sum() == sum(len(label["cls"]) for label in ds.labels) > 0  # every labeled box once
    classes = ds.random_clip_classes()
    for row, got in zip(ds.clips_random[:20], classes[:20]):
        boxes = [ds.window_boxes(int(row["seq"]), w) for w in range(row["start"], row["stop"])]
        want = np.unique(np.concatenate([b[:, 0] for b in boxes if b is not None] or [np.zeros(0)]))
        np.testing.assert_array_equal(got, want.astype(np.int64))
    rare = int(np.argmin(np.where(counts > 0, counts, counts.max() + 1)))
    spec = SmallSampling.parse(4, [rare], "d.yaml")
    weights, repeats = small_sampling_plan(ds, "mixed", spec)
    holds = np.array([rare in c for c in classes])
    np.testing.assert_array_equal(weights, np.where(holds, 4.0, 1.0))
    seq_holds = np.array([rare in c for c in ds.sequence_classes()])
    np.testing.assert_array_equal(repeats, np.where(seq_holds, 4, 1))
    assert small_sampling_plan(ds, "stream", None) == (None, None)
    w, r = small_sampling_plan(ds, "random", spec)
    assert r is None and w is not None


def test_training_reads_the_small_group_and_refuses_without_it(tiny_events, tmp_path):
    """Through the trainer: the data YAML's small group weighs the mixed sampler; without the group, one line."""
    spec = yaml.safe_load(tiny_events.read_text())
    spec.update(path=str(tiny_events.parent), sampling="mixed", groups={"small": [0]})
    data = tmp_path / "small.yaml"
    data.write_text(yaml.safe_dump(spec))
    lines = []
    LOGGER.addHandler(handler := _ListHandler(lines))
    level = LOGGER.level
    LOGGER.setLevel("INFO")
    try:
        model = EventYOLO("rvt-t.yaml")
        args = dict(epochs=1, max_steps=1, batch=2, imgsz=128, workers=0, val=False, plots=False, project=str(tmp_path))
        model.train(data=str(data), small_sampling=3, name="small", **args)
    finally:
        LOGGER.removeHandler(handler)
        LOGGER.setLevel(level)
    said = [line for line in lines if line.startswith("small_sampling (x3 for clips holding small classes [0])")]
    assert len(said) == 1 and "random clips drawn by weight" in said[0] and "streams keep whole sequences" in said[0]
    assert model.trainer.train_loader.sampler.random.p is not None  # the weights reached the sampler

    spec.pop("groups")
    data.write_text(yaml.safe_dump(spec))
    with pytest.raises(UnsupportedOptionError, match=r"small_sampling=3 needs the small classes"):
        EventYOLO("rvt-t.yaml").train(data=str(data), small_sampling=3, name="refused", **args)


class _ListHandler(logging.Handler):
    def __init__(self, lines: list):
        super().__init__()
        self.lines = lines

    def emit(self, record):
        self.lines.append(record.getMessage())
