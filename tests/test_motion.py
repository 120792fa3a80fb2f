"""Motion ground truth (moving / stopped / parked) from the generator through prepare and the dataset to AP per
subset in the evaluator and the validator."""

import numpy as np
import pytest
from events_fixture import raw_dir

from yolo_etram.data.motion import (
    MOTION_DTYPE,
    MOVING,
    PARKED,
    STOPPED,
    UNKNOWN,
    align_motion,
    motion_columns,
    motion_subsets,
)
from yolo_etram.metrics.prophesee import PropheseeEvaluator, to_eval_boxes


def motion_rows(rows):
    return np.array(rows, dtype=MOTION_DTYPE)


def test_align_motion_joins_on_time_and_track():
    motion = motion_rows([(100, 1, True, 0, True), (100, 2, False, 2_500_000, True), (200, 1, False, 9_000_000, False)])
    labels = np.zeros(4, [("t", "<u8"), ("track_id", "<u4")])
    labels["t"], labels["track_id"] = [200, 100, 100, 300], [1, 2, 1, 1]
    aligned = align_motion(labels, motion)
    assert aligned["t"].tolist() == [200, 100, 100, 300] and aligned["track_id"].tolist() == [1, 2, 1, 1]
    codes, still = motion_columns(aligned)
    assert codes.tolist() == [PARKED, STOPPED, MOVING, UNKNOWN]
    np.testing.assert_allclose(still, [0.0, 2.5, 0.0, 0.0])


def test_motion_subsets_bin_stopped_objects_by_time():
    codes = np.array([MOVING, STOPPED, STOPPED, STOPPED, PARKED, UNKNOWN])
    still = np.array([0, 0.5, 2.0, 7.0, 0, 0], np.float32)
    s = motion_subsets(codes, still)
    assert s["moving"].tolist() == [1, 0, 0, 0, 0, 0] and s["stationary"].tolist() == [0, 1, 1, 1, 0, 0]
    assert s["parked"].tolist() == [0, 0, 0, 0, 1, 0]
    assert [s[k].nonzero()[0].tolist() for k in ("stationary 0-1s", "stationary 1-3s", "stationary >3s")] == [
        [1],
        [2],
        [3],
    ]


def test_prepare_carries_motion_and_the_dataset_puts_it_in_the_batch(tiny_events):
    import yaml

    from yolo_etram.data.dataset import EventClipDataset, collate_clips
    from yolo_etram.data.prepared import list_sequences

    data = yaml.safe_load(tiny_events.read_text())
    raw = raw_dir(tiny_events) / "train"
    seq = list_sequences(f"{data['path']}/train")[0]
    labels = np.load(seq / "labels_v2" / "labels.npz")["labels"]
    motion = np.load(seq / "labels_v2" / "motion.npy")
    assert len(motion) == len(labels) and (motion["stationary_for_us"] >= 0).all()
    raw_motion = np.load(raw / f"{seq.name}_motion.npz")["motion"]
    i = len(labels) // 2  # one row checked against the raw file by hand
    match = raw_motion[(raw_motion["t"] == labels["t"][i]) & (raw_motion["track_id"] == labels["track_id"][i])]
    assert len(match) == 1 and match[0] == motion[i]

    ds = EventClipDataset(f"{data['path']}/train", seq_len=3)
    batch = collate_clips([ds[k] for k in range(len(ds))][:4])
    assert batch["motion"].shape == (len(batch["cls"]), 2)
    assert set(batch["motion"][:, 0].tolist()) <= {MOVING, STOPPED, PARKED}


def disjoint_boxes(n, rng, size=20, grid=10):
    cells = rng.choice(grid * grid, n, replace=False)
    x, y = (cells % grid) * 40.0, (cells // grid) * 40.0
    return np.stack([x, y, x + size, y + size], 1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_subset_ap_equals_ap_without_the_other_objects(seed):
    """Scoring a subset equals scoring a copy of the data from which the other ground truth and the detections of it
    were removed by hand."""
    rng = np.random.default_rng(seed)
    gts, preds = [], []
    for frame in range(6):
        t = 600_000 + frame * 100_000
        xyxy = disjoint_boxes(8, rng)
        cls = rng.integers(0, 2, len(xyxy))
        member = rng.random(len(xyxy)) < 0.5
        member[0] = True  # the cut copy below keeps a frame only while it holds subset ground truth
        found = rng.random(len(xyxy)) < 0.7
        jitter = xyxy[found] + rng.normal(0, 1.5, (found.sum(), 4))
        fp = np.array([[900.0, 900.0, 920.0, 920.0]]) + rng.uniform(0, 50, (2, 1))
        gts.append((to_eval_boxes(xyxy, None, cls, t), member))
        preds.append(
            (
                to_eval_boxes(
                    np.concatenate([jitter, fp]),
                    rng.random(found.sum() + 2),
                    np.concatenate([cls[found], rng.integers(0, 2, 2)]),
                    t,
                ),
                np.concatenate([member[found], [True, True]]),
            )
        )
    gt = np.concatenate([g for g, _ in gts])
    member = np.concatenate([m for _, m in gts])
    pred = np.concatenate([p for p, _ in preds])
    pred_keep = np.concatenate([k for _, k in preds])
    kw = dict(classes=["a", "b"], height=1000, width=1000, skip_ts_us=500_000, min_box_diag=0, min_box_side=0)
    whole = PropheseeEvaluator(**kw)
    whole.add_sequence("s", gt, pred, {"member": member, "other": ~member})
    result = whole.evaluate()["subsets"]["member"]
    cut = PropheseeEvaluator(**kw)
    cut.add_sequence("s", gt[member], pred[pred_keep])
    expected = cut.evaluate()
    assert result["AP"] == pytest.approx(expected["AP"], abs=1e-12)
    assert result["AP_all"] == pytest.approx(expected["AP_all"], abs=1e-12)
    assert result["n_gt"] == int(member.sum())


def test_subsets_need_every_sequence():
    ev = PropheseeEvaluator(["a"], 100, 100, skip_ts_us=0, min_box_diag=0, min_box_side=0)
    box = to_eval_boxes(np.array([[0.0, 0, 20, 20]]), None, np.array([0]), 1000)
    ev.add_sequence("with", box, box, {"moving": np.array([True])})
    ev.add_sequence("without", box, box)
    assert "subsets" not in ev.evaluate()
    with pytest.raises(ValueError, match="subset 'moving' has 2 entries"):
        ev.add_sequence("bad", box, box, {"moving": np.array([True, False])})
