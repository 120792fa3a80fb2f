"""Reading prepared sequences (RVT's and ours): windows, histogram slices, labels as RVT's loader serves them."""

import numpy as np
from rvt_reference import rvt_loader_labels

from yolo_etram.data.io import BBOX_DTYPE
from yolo_etram.data.prepared import PreparedSequence, list_sequences, scale_boxes


def test_reads_rvt_prepared_sequence(golden):
    seqs = list_sequences(golden / "rvt_prepared" / "val")
    assert [s.name for s in seqs] == ["golden_val_0000"]
    seq = PreparedSequence(seqs[0])
    assert len(seq) == 30 and seq.hw == (360, 640) and seq.channels == 20 and seq.downsample == 2
    h = seq.histograms(3, 8)
    assert h.shape == (5, 20, 360, 640) and h.dtype == np.uint8
    labeled = [w for w in range(len(seq)) if seq.window_labels(w) is not None]
    np.testing.assert_array_equal(labeled, seq.frame_repr_idx)
    for f in range(len(seq.frame_t)):
        ours = seq.frame_labels(f)
        start = seq.frame_label_idx[f]
        stop = seq.frame_label_idx[f + 1] if f + 1 < len(seq.frame_label_idx) else len(seq.labels)
        ref = rvt_loader_labels(seq.labels[start:stop], (720, 1280), 2)
        np.testing.assert_array_equal(
            np.stack([ours[k].astype(np.float32) for k in ("x", "y", "w", "h")], 1), ref[:, 1:5]
        )
        assert ours["x"].max() <= 639 and (ours["x"] + ours["w"]).max() <= 639


def test_scale_matches_rvt_on_edge_boxes():
    rng = np.random.default_rng(0)
    b = np.zeros(500, BBOX_DTYPE)
    b["x"], b["y"] = rng.uniform(-50, 1300, 500), rng.uniform(-50, 740, 500)
    b["w"], b["h"] = rng.uniform(0.1, 300, 500), rng.uniform(0.1, 200, 500)
    b["x"][:5] = [1279, 1278.5, 0, 1279.9, 1280]
    ours = scale_boxes(b, (360, 640), 2)
    ref = rvt_loader_labels(
        b[
            (np.clip(b["x"] + b["w"], 0, 1279) - np.clip(b["x"], 0, 1279) > 0)
            & (np.clip(b["y"] + b["h"], 0, 719) - np.clip(b["y"], 0, 719) > 0)
        ],
        (720, 1280),
        2,
    )
    np.testing.assert_array_equal(np.stack([ours[k] for k in ("x", "y", "w", "h")], 1), ref[:, 1:5])
