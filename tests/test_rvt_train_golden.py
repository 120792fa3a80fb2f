"""``rvt_eval=True`` reproduces RVT's ``validation.py`` on a checkpoint written by RVT's own ``train.py``.

The fixture (``tests/fixtures/rvt_train``) was made by RVT's unmodified code (commit and package versions in
``rvt_val.json``) with::

    RVT_VENV/bin/python benchmarks/rvt_train_golden.py --rvt RVT_DIR --data GOLDEN/rvt_prepared \\
        --out tests/fixtures/rvt_train --steps 60 --lr 0.003

RVT's ``train.py`` trained RVT-T (gen4, 3 classes) for 60 steps (one-cycle schedule, peak learning rate 0.003) on the
golden set's RVT-prepared train split and wrote ``rvt_t_60steps.ckpt`` (Lightning's file, without its optimizer,
scheduler and callback states; RVT saves no ``hyper_parameters``, so the import takes the gen4 preset); RVT's
``validation.py`` then validated that file on the val split at RVT's evaluation thresholds (confidence 0.001 on
obj x cls, NMS 0.45), and ``rvt_val_detections.npz`` holds what RVT's Prophesee evaluator received per labeled frame
(``pred``: t, x, y, w, h, class_id, class_confidence): 1562 boxes on 15 frames, AP 0.0395 (``rvt_val.json``).
Ultralytics' stock NMS on the same ``score: cls`` head (ranked by cls) keeps other boxes on 11 of the 15 frames.

Here the same file is imported by :func:`~yolo_etram.nn.rvt_import.import_rvt` (through the restricted Lightning
reader; ``score="cls"``: RVT reports ``class_confidence``) and validated by our validator under ``rvt_eval=True`` on
the same RVT-prepared val split: the same boxes frame for frame, and RVT's AP.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

FIXTURE = Path(__file__).parent / "fixtures" / "rvt_train"
REPO = Path(__file__).resolve().parents[1]
AP_NAMES = ("AP", "AP_50", "AP_75", "AP_S", "AP_M", "AP_L")


@pytest.fixture(scope="module")
def ours(golden, tmp_path_factory):
    """Our validation of RVT's checkpoint: (per-frame predictions by label time, metrics, import report)."""
    from yolo_etram import EventYOLO
    from yolo_etram.nn.rvt_import import import_rvt

    tmp = tmp_path_factory.mktemp("rvt_train_golden")
    data = yaml.safe_load((REPO / "cfg" / "datasets" / "gen4.yaml").read_text())
    data["path"] = str(golden / "rvt_prepared")
    (tmp / "data.yaml").write_text(yaml.safe_dump(data))
    pt, report = import_rvt(FIXTURE / "rvt_t_60steps.ckpt", tmp / "rvt_t.pt", preset="gen4", score="cls")
    model = EventYOLO(pt)
    seen = {}
    model.add_callback("on_val_end", lambda v: seen.update(pred=v.seq_pred, gt=v.seq_gt, prophesee=v.prophesee))
    model.val(data=str(tmp / "data.yaml"), split="val", rvt_eval=True, batch=1, workers=0, plots=False, project=tmp)
    (seq,) = seen["pred"]
    times = [int(g["t"][0]) for g in seen["gt"][seq]]  # every labeled frame of the golden set has boxes
    return dict(zip(times, seen["pred"][seq])), seen["prophesee"], report


@pytest.fixture(scope="module")
def rvt():
    d = np.load(FIXTURE / "rvt_val_detections.npz")
    bounds = np.cumsum(np.r_[0, d["frame_n"]])
    frames = {int(t): d["pred"][a:b] for t, a, b in zip(d["frame_t"], bounds[:-1], bounds[1:])}
    return frames, json.loads((FIXTURE / "rvt_val.json").read_text())


def _match(ours: np.ndarray, theirs: np.ndarray) -> np.ndarray:
    """For each of RVT's boxes, the index of our box of its class with the nearest corners (ties of near-equal scores
    may be ordered otherwise, so boxes are paired by position); every box of ours is used once."""
    fields = ("x", "y", "w", "h")
    a, b = (np.stack([boxes[k] for k in fields], 1) for boxes in (ours, theirs))
    dist = np.abs(b[:, None] - a[None]).max(-1)
    dist[theirs["class_id"][:, None] != ours["class_id"][None]] = np.inf
    idx = dist.argmin(1) if len(a) else np.zeros(0, int)
    assert len(set(idx.tolist())) == len(idx)
    return idx


def test_the_checkpoint_is_rvts_lightning_file():
    """What RVT's ``train.py`` wrote (its training states stripped), read by our restricted reader: Lightning's keys
    and the whole detector, without a configuration (RVT saves none)."""
    from yolo_etram.nn.lightning_checkpoint import read_lightning_checkpoint
    from yolo_etram.utils.checkpoints import restricted_load

    ckpt = restricted_load(FIXTURE / "rvt_t_60steps.ckpt")
    assert set(ckpt) == {"epoch", "global_step", "pytorch-lightning_version", "state_dict", "loops"}
    assert (ckpt["global_step"], ckpt["pytorch-lightning_version"]) == (60, "1.8.6")
    read = read_lightning_checkpoint(FIXTURE / "rvt_t_60steps.ckpt")
    assert len(read.state_dict) > 300 and all(k.startswith("mdl.") for k in read.state_dict)
    assert not read.config and not read.hints.found


@pytest.mark.slow
def test_same_boxes_per_frame_as_rvts_validation(ours, rvt):
    by_t, _, report = ours
    frames, record = rvt
    assert report.backbone and report.neck and report.head and not report.missing and not report.not_loaded
    assert sorted(by_t) == sorted(frames)
    assert [len(by_t[t]) for t in sorted(frames)] == [len(frames[t]) for t in sorted(frames)]
    assert sum(len(f) for f in frames.values()) == record["boxes"] > 1000
    for t, theirs in frames.items():
        mine = by_t[t][_match(by_t[t], theirs)]
        np.testing.assert_array_equal(mine["class_id"], theirs["class_id"], err_msg=f"frame t={t}")
        np.testing.assert_allclose(mine["class_confidence"], theirs["class_confidence"], rtol=0, atol=1e-5)
        for k in ("x", "y", "w", "h"):
            np.testing.assert_allclose(mine[k], theirs[k], rtol=0, atol=2e-3, err_msg=f"frame t={t}, {k}")


@pytest.mark.slow
def test_same_ap_as_rvts_validation(ours, rvt):
    _, prophesee, _ = ours
    _, record = rvt
    for k in AP_NAMES:
        assert prophesee[k] == pytest.approx(record["metrics"][k], abs=1e-6), k
