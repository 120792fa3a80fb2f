"""Temporal consistency loss (``temporal_consistency``): track ids reach the batch, pairs by hand, the term is 0 for
identical windows and pulls two scores together, both heads train with it, refusals."""

import csv

import numpy as np
import pytest
import torch
from ultralytics.cfg import get_cfg

import yolo_etram.train  # noqa: F401  (registers our train arguments)
from yolo_etram import EventYOLO
from yolo_etram.data.dataset import EventClipDataset, collate_clips
from yolo_etram.nn.detection_model import EventDetectionModel
from yolo_etram.nn.temporal_consistency import LOSS_NAME, consistency, gain_from_args, track_pairs
from yolo_etram.utils.errors import UnsupportedOptionError
from yolo_etram.utils.paths import find_cfg


def test_pairs_by_hand():
    # images of the loss batch at clip frames 0, 2, 4 (slot 0) and 5, 7 (slot 1) of T = 5 windows per clip
    frames = torch.tensor([0, 2, 4, 5, 7])
    batch_idx = torch.tensor([0, 0, 1, 1, 1, 2, 3, 4, 4])
    track = torch.tensor([1, 2, 2, 1, 3, 3, 1, 1, -1])
    pairs = track_pairs(batch_idx, track, frames, windows=5)
    # img0's 1 and 2 -> img1's; img1's 3 -> img2's; img3's 1 -> img4's; never img2 -> img3 (another clip), never -1
    assert sorted(map(tuple, pairs.tolist())) == [(0, 3), (1, 2), (4, 5), (6, 7)]
    q = torch.tensor([0.5, 0.2, 0.4, 0.1, 0.9, 0.6, 0.3, 0.3, 0.0])
    has = torch.ones(9, dtype=torch.bool)
    want = ((0.5 - 0.1) ** 2 + (0.2 - 0.4) ** 2 + (0.9 - 0.6) ** 2 + 0.0) / 4
    assert consistency(q, has, pairs).item() == pytest.approx(want)
    has[5] = False  # a box without anchors makes no pair
    assert consistency(q, has, pairs).item() == pytest.approx(((0.5 - 0.1) ** 2 + (0.2 - 0.4) ** 2) / 3)


def test_settings_and_refusals():
    assert gain_from_args(None) == 0 and gain_from_args({"temporal_consistency": 2}) == 2.0
    with pytest.raises(UnsupportedOptionError, match=r"temporal_consistency=-1: give a loss gain >= 0"):
        gain_from_args({"temporal_consistency": -1})


def test_track_ids_reach_the_batch(tiny_events):
    ds = EventClipDataset(tiny_events.parent / "train", seq_len=5)
    batch = collate_clips([ds[i] for i in range(2)])
    assert batch["track"].shape == batch["cls"].shape[:1] and (batch["track"] >= 0).all()
    labels = ds.sequences[0].labels
    assert "track_id" in labels.dtype.names  # prepare keeps them, as RVT does
    seq0 = batch["batch_idx"] < 5
    n_tracks = len(np.unique(labels["track_id"]))
    assert int(batch["track"][seq0].max()) < n_tracks  # dense within the sequence


def _model(yaml: str, gain: float) -> EventDetectionModel:
    torch.manual_seed(0)
    model = EventDetectionModel(str(find_cfg(yaml)), nc=3, ch=20, verbose=False)
    model.args = get_cfg(overrides={"temporal_consistency": gain})
    model.criterion = model.init_criterion()
    return model


def _two_windows(same: bool):
    """A clip of T=2 labeled windows holding one track; the second window's input equal to the first or not."""
    torch.manual_seed(1)
    x = torch.rand(1, 2, 20, 192, 320)
    if same:
        x[:, 1] = x[:, 0]
    box = torch.tensor([[0.5, 0.5, 0.2, 0.3]])
    return {
        "img": x,
        "batch_idx": torch.tensor([0.0, 1.0]),
        "cls": torch.tensor([[1.0], [1.0]]),
        "bboxes": box.repeat(2, 1),
        "track": torch.tensor([0.0, 0.0]),
        "labeled": torch.tensor([True, True]),
        "is_first": torch.tensor([True]),
    }, x


@pytest.mark.parametrize("yaml", ["rvt-t.yaml", "rvt-t-yolox.yaml"])
def test_the_term_is_zero_for_equal_windows_and_pulls_scores_together(yaml):
    model = _model(yaml, gain=1.0)
    assert model.criterion.loss_names[-1] == LOSS_NAME and len(model.criterion.loss_names) == 4
    plain = _model(yaml, gain=0.0)
    batch, x = _two_windows(same=True)
    model.train()
    img = x.flatten(0, 1)  # frame b*T + t; a fresh state per call
    model.reset_states(torch.tensor([True]))
    preds = model(img[:1])
    preds = {k: (torch.cat([v, v]) if k != "feats" else [torch.cat([f, f]) for f in v]) for k, v in preds.items()}
    loss, items = model.loss(batch, preds)
    base, _ = plain.loss(batch, preds)
    torch.testing.assert_close(loss[:3], base)  # the detection terms are the plain loss's
    assert items[LOSS_NAME].item() == 0.0  # the same predictions in both windows: nothing to make consistent

    batch, x = _two_windows(same=False)
    model.reset_states(torch.tensor([True]))
    preds = model(x)
    scores = preds["scores"]  # (2 windows, nc, anchors) logits
    scores.retain_grad()
    loss, _ = model.loss(batch, preds)
    assert loss[3] > 0
    loss[3].backward()
    g = scores.grad[:, 1]  # the box's class; only its anchors get gradient
    assert (g != 0).any(1).all() and (scores.grad[:, [0, 2]] == 0).all()
    # the two windows are pulled towards each other: within a window one sign, opposite signs across windows
    s0, s1 = torch.sign(g[0][g[0] != 0]), torch.sign(g[1][g[1] != 0])
    assert len(set(s0.tolist())) == len(set(s1.tolist())) == 1 and s0[0] == -s1[0]


@pytest.mark.parametrize("yaml", ["rvt-t.yaml", "rvt-t-yolox.yaml"])
def test_a_training_step_logs_the_term(yaml, tiny_events, tmp_path):
    model = EventYOLO(yaml)
    args = dict(max_steps=2, batch=2, imgsz=128, workers=0, val=False, plots=False, project=str(tmp_path))
    model.train(data=str(tiny_events), temporal_consistency=1.0, name="tc", **args)
    rows = list(csv.DictReader(open(model.trainer.save_dir / "results.csv")))
    assert rows and float(rows[-1][f"train/{LOSS_NAME}"]) >= 0


def test_the_wrapped_loss_copies_and_pickles():
    import copy
    import pickle

    crit = _model("rvt-t.yaml", gain=0.5).criterion
    for clone in (copy.deepcopy(crit), pickle.loads(pickle.dumps(crit))):
        assert (
            clone.gain == 0.5 and clone.loss_names == crit.loss_names and clone.stride.tolist() == crit.stride.tolist()
        )
