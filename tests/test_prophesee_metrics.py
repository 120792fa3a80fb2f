"""Prophesee/COCO metrics: RVT's and the eTraM fork's numbers on the golden files, and the protocol's edge cases."""

import json

import numpy as np
import pytest

from yolo_etram.metrics.prophesee import (
    BACKENDS,
    BBOX_DTYPE,
    EVAL_BBOX_DTYPE,
    PropheseeEvaluator,
    etram_values,
    evaluate_folder,
    filter_eval_boxes,
    filter_mask,
    match_times,
    plot_pr_curves,
    save_sequence_npy,
    to_eval_boxes,
)

GEN4_CLASSES = ["pedestrian", "two-wheeler", "car"]
STAT_KEYS = ["AP", "AP_50", "AP_75", "AP_S", "AP_M", "AP_L", "AR_1", "AR_10", "AR_100"]


def boxes(t, x, y, w, h, cls, score=1.0) -> np.ndarray:
    """An EVAL_BBOX_DTYPE array from per-field values (scalars broadcast)."""
    n = max(np.size(v) for v in (t, x, y, w, h, cls, score))
    out = np.zeros(n, EVAL_BBOX_DTYPE)
    for name, v in zip(("t", "x", "y", "w", "h", "class_id", "class_confidence"), (t, x, y, w, h, cls, score)):
        out[name] = v
    return out


def synthetic_sequence(
    seed: int, n_frames: int = 30, period_us: int = 100_001, n_classes: int = 3, every_class: bool = False
):
    """GT at regular label times after the 0.5 s skip (by default more than 2 x 50 ms apart, so that frames do not
    share predictions), and predictions: jittered copies, drops, relabels, false
    positives."""
    rng = np.random.default_rng(seed)
    ts = 600_000 + period_us * np.arange(n_frames)
    per_frame = rng.integers(n_classes if every_class else 1, 6, n_frames)
    n = int(per_frame.sum())
    cls = rng.integers(0, n_classes, n)
    if every_class:  # the first boxes of each frame cover all classes
        cls[np.concatenate([np.cumsum(per_frame) - per_frame + k for k in range(n_classes)])] = np.repeat(
            np.arange(n_classes), n_frames
        )
    gt = boxes(
        np.repeat(ts, per_frame),
        rng.uniform(0, 500, n),
        rng.uniform(0, 250, n),
        rng.uniform(12, 140, n),
        rng.uniform(12, 110, n),
        cls,
    )
    pred = gt[rng.random(n) > 0.15]
    for f in ("x", "y", "w", "h"):
        pred[f] += rng.normal(0, 3, len(pred)).astype(np.float32)
    relabel = rng.random(len(pred)) < 0.1
    pred["class_id"][relabel] = rng.integers(0, n_classes, relabel.sum())
    pred["class_confidence"] = rng.uniform(0.3, 1.0, len(pred))
    fp = boxes(
        np.repeat(ts, 2),
        rng.uniform(0, 500, 2 * n_frames),
        rng.uniform(0, 250, 2 * n_frames),
        40,
        40,
        rng.integers(0, n_classes, 2 * n_frames),
        rng.uniform(0, 0.6, 2 * n_frames),
    )
    pred = np.concatenate([pred, fp])
    return gt, pred[np.argsort(pred["t"], kind="stable")]


def evaluate(sequences, classes=GEN4_CLASSES, backend="faster_coco_eval", evaluator_kwargs=None, **kwargs) -> dict:
    evaluator = PropheseeEvaluator(classes, 360, 640, backend=backend, **(evaluator_kwargs or {}))
    for i, (gt, pred) in enumerate(sequences):
        evaluator.add_sequence(f"seq{i}", gt, pred)
    return evaluator.evaluate(**kwargs)


# ------------------------------------------------------------------------------------------------------------- golden


@pytest.mark.parametrize("backend", BACKENDS)
def test_golden_rvt_and_etram_numbers(golden, backend):
    eval_dir = golden / "eval"
    rvt = json.loads((eval_dir / "rvt_eval.json").read_text())
    etram = json.loads((eval_dir / "etram_eval.json").read_text())
    # RVT calls evaluate_buffer(H_pad, W_pad) = (384, 640) for gen4 downsampled; height/width change nothing.
    result = evaluate_folder(eval_dir, classes=GEN4_CLASSES, height=384, width=640, backend=backend)

    for key in ("AP", "AP_50", "AP_75", "AP_S", "AP_M", "AP_L"):
        assert result[key] == pytest.approx(rvt[key], abs=1e-6), key
    assert result["AP"] == pytest.approx(0.4540, abs=5e-5)

    etram_keys = dict(
        zip(
            STAT_KEYS,
            ["AP", "AP_50", "AP_75", "AP_S", "AP_M", "AP_L", "AR_max_det=1", "AR_max_det=10", "AR_max_det=100"],
        )
    )
    for ours, theirs in etram_keys.items():
        assert result["agnostic"][ours] == pytest.approx(etram[theirs], abs=1e-6), ours
    assert result["AP_all"] == pytest.approx(0.5350, abs=5e-5)
    assert [round(result["per_class"][c], 3) for c in GEN4_CLASSES] == etram["info"]["per_class_AP"]
    assert etram_values(result, GEN4_CLASSES)["etram/AP50_all"] == pytest.approx(etram["AP_50"], abs=1e-6)

    for key in ("n_gt", "n_gt_after_filter", "n_pred", "n_pred_after_filter", "n_images"):
        assert result[key] == rvt["info"][key] == etram["info"][key], key
    assert result["sequences"] == rvt["info"]["sequences"]
    assert result["missing_predictions"] == [] and result["unused_prediction_files"] == []


def test_golden_backends_identical_and_size_independent(golden):
    eval_dir = golden / "eval"
    groups = {"vulnerable": [0, 1]}
    results = [
        evaluate_folder(eval_dir, classes=GEN4_CLASSES, height=h, width=w, backend=b, groups=groups)
        for b in BACKENDS
        for h, w in ((360, 640), (384, 640), (1, 1))
    ]
    reference = results[0]
    for r in results[1:]:
        for key in STAT_KEYS + ["AP_all"]:
            assert r[key] == pytest.approx(reference[key], abs=1e-12), key
        for c in GEN4_CLASSES:
            assert r["per_class"][c] == pytest.approx(reference["per_class"][c], abs=1e-12)
        assert r["groups"]["vulnerable"] == pytest.approx(reference["groups"]["vulnerable"], abs=1e-12)


def test_golden_prophesee_dtype_input(golden):
    """Files in the Prophesee BBOX_DTYPE (uint64 t, uint8 class_id) score like RVT's evaluation dtype."""
    eval_dir = golden / "eval"
    names = sorted(p.stem for p in (eval_dir / "gt").glob("*.npy"))

    def load(kind, name, dtype):
        raw = np.load(eval_dir / kind / f"{name}.npy")
        out = np.zeros(len(raw), dtype)
        for field in dtype.names:
            out[field] = raw[field]
        return out

    as_eval = evaluate([(load("gt", n, EVAL_BBOX_DTYPE), load("pred", n, EVAL_BBOX_DTYPE)) for n in names])
    as_psee = evaluate([(load("gt", n, BBOX_DTYPE), load("pred", n, BBOX_DTYPE)) for n in names])
    for key in STAT_KEYS + ["AP_all", "n_images", "n_gt_after_filter", "n_pred_after_filter"]:
        assert as_psee[key] == as_eval[key], key


# ---------------------------------------------------------------------------------------------------------- filtering


def test_filter_time_is_strict():
    b = boxes([499_999, 500_000, 500_001], 0, 0, 50, 50, 0)
    assert filter_eval_boxes(b)["t"].tolist() == [500_001]
    assert filter_mask(b, skip_ts_us=0).all()


def test_filter_diag_and_side_boundaries():
    # (w, h): diagonal exactly 30 is kept, sides exactly 10 are kept; anything under either threshold is dropped
    cases = {
        (18, 24): True,
        (18, 23.99): False,
        (10, 50): True,
        (9.99, 50): False,
        (50, 10): True,
        (50, 9.99): False,
        (10, 28.2): False,
        (29.9, 29.9): True,
        (40, 45): True,
    }
    b = boxes(1_000_000, 0, 0, [w for w, _ in cases], [h for _, h in cases], 0)
    assert filter_mask(b).tolist() == list(cases.values())
    assert filter_mask(b, min_box_diag=60, min_box_side=20).tolist() == [False] * 8 + [True]


def test_filter_squares_in_float32_like_rvt():
    # w² + h² is 899.99994 exactly but rounds to 900 in float32, as in RVT's float32 fields: kept
    w, h = np.float32(18.003435134887695), np.float32(23.99742317199707)
    assert float(w) ** 2 + float(h) ** 2 < 900
    assert filter_mask(boxes(1_000_000, 0, 0, w, h, 0)).tolist() == [True]


# ------------------------------------------------------------------------------------------------------ time matching


def rvt_style_walk(gt_t, pred_t, tol):
    """An independent two-pointer walk over the sorted arrays, the way RVT's ``_match_times`` is written."""
    frames, windows = np.unique(gt_t), []
    lo = hi = 0
    for ts in frames:
        while lo < len(pred_t) and pred_t[lo] < ts - tol:
            lo += 1
        hi = max(lo, hi)
        while hi < len(pred_t) and pred_t[hi] <= ts + tol:
            hi += 1
        windows.append(list(range(lo, hi)))
    return frames, windows


@pytest.mark.parametrize("seed", range(5))
def test_match_times_equals_pointer_walk(seed):
    rng = np.random.default_rng(seed)
    gt_t = np.sort(rng.choice(np.arange(0, 2_000_000, 33_333), 40))
    offsets = rng.choice([0, 20_000, 49_999, 50_000, 50_001, -50_000, -50_001, 70_000], 120)
    pred_t = np.sort(rng.choice(gt_t, 120) + offsets)
    frames, gt_frame, pred_index, pred_frame = match_times(gt_t, pred_t, 50_000)
    ref_frames, ref_windows = rvt_style_walk(gt_t, pred_t, 50_000)
    assert frames.tolist() == ref_frames.tolist()
    assert np.array_equal(frames[gt_frame], gt_t)
    assert pred_index.tolist() == [i for w in ref_windows for i in w]
    assert pred_frame.tolist() == [f for f, w in enumerate(ref_windows) for _ in w]


def test_match_times_window_edges_and_overlap():
    pred_t = np.array([950_000, 949_999, 1_030_000, 1_110_000, 1_110_001])
    order = np.argsort(pred_t)
    frames, _, pred_index, pred_frame = match_times(np.array([1_000_000, 1_060_000]), pred_t[order], 50_000)
    matched = [(int(pred_t[order][i]), int(frames[f])) for i, f in zip(pred_index, pred_frame)]
    # 50 000 µs away: matched; 50 001: not; between two frames 60 ms apart: in both
    assert matched == [(950_000, 1_000_000), (1_030_000, 1_000_000), (1_030_000, 1_060_000), (1_110_000, 1_060_000)]


@pytest.mark.parametrize("offset, expect_perfect", [(50_000, False), (-50_000, False), (50_001, True), (-50_001, True)])
def test_prediction_time_tolerance_in_scores(offset, expect_perfect):
    gt = boxes(1_000_000, 100, 100, 50, 50, 0)
    hit = boxes(1_000_000, 100, 100, 50, 50, 0, 0.5)
    false_positive = boxes(1_000_000 + offset, 300, 100, 50, 50, 0, 0.9)  # scores above the hit
    pred = np.sort(np.concatenate([hit, false_positive]), order="t")
    result = evaluate([(gt, pred)])
    assert (result["AP"] == pytest.approx(1.0)) == expect_perfect
    assert result["n_pred_in_images"] == (1 if expect_perfect else 2)


def test_frames_without_gt_after_filtering_drop_their_predictions():
    gt = np.concatenate([boxes(1_000_000, 100, 100, 60, 60, 1), boxes(1_200_000, 10, 10, 5, 5, 1)])  # 2nd: too small
    pred = np.concatenate([boxes(1_000_000, 100, 100, 60, 60, 1, 0.8), boxes(1_200_000, 200, 200, 60, 60, 1, 0.9)])
    result = evaluate([(gt, pred)])
    assert result["n_images"] == 1 and result["n_gt_after_filter"] == 1
    assert result["n_pred_after_filter"] == 2 and result["n_pred_in_images"] == 1
    assert result["AP"] == pytest.approx(1.0) and result["AP_all"] == pytest.approx(1.0)


def test_zero_tolerance_isolates_30hz_frames():
    """Whole sequences with time_tol_us=0 score like RVT's per-frame buffer: 33 ms frames stop sharing predictions."""
    gt, pred = synthetic_sequence(3, period_us=33_333)
    per_frame = PropheseeEvaluator(GEN4_CLASSES, 360, 640)
    for ts in np.unique(gt["t"]):
        per_frame.add_sequence(str(ts), gt[gt["t"] == ts], pred[pred["t"] == ts])
    by_frame = per_frame.evaluate()
    whole = evaluate([(gt, pred)], evaluator_kwargs={"time_tol_us": 0})
    windowed = evaluate([(gt, pred)])
    for key in STAT_KEYS + ["AP_all", "n_images", "n_pred_in_images"]:
        assert whole[key] == pytest.approx(by_frame[key], abs=1e-12), key
    assert windowed["n_pred_in_images"] > whole["n_pred_in_images"]
    assert windowed["AP"] < whole["AP"]


def test_unsorted_input_is_sorted_first():
    gt, pred = synthetic_sequence(4)
    rng = np.random.default_rng(0)
    sorted_result = evaluate([(gt, pred)])
    shuffled_result = evaluate([(gt[rng.permutation(len(gt))], pred[rng.permutation(len(pred))])])
    assert shuffled_result["n_images"] == sorted_result["n_images"]
    assert shuffled_result["AP"] == pytest.approx(sorted_result["AP"], abs=1e-6)


# --------------------------------------------------------------------------------------------------------- COCO side


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_detections_gives_zeros(backend):
    gt, pred = synthetic_sequence(1)
    far_away = pred.copy()
    far_away["t"] += 10_000_000  # predictions exist but match no labeled frame
    for preds in (pred[:0], None, far_away):
        result = evaluate([(gt, preds)], backend=backend, groups={"g": [0]}, curves=True)
        assert all(result[k] == 0.0 for k in STAT_KEYS + ["AP_all"])
        assert all(v == 0.0 for v in result["agnostic"].values())
        assert result["per_class"] == dict.fromkeys(GEN4_CLASSES, 0.0) and result["groups"] == {"g": 0.0}
        assert result["n_images"] > 0 and result["n_pred_in_images"] == 0
        assert result["curves"]["precision"].shape == (10, 101, 3)
    assert evaluate([])["AP"] == 0.0


def test_perfect_predictions_score_one():
    gt, _ = synthetic_sequence(2)
    pred = gt.copy()
    pred["class_confidence"] = np.linspace(0.2, 0.9, len(pred))
    result = evaluate([(gt, pred)])
    for key in ("AP", "AP_50", "AP_75", "AR_100", "AP_all"):
        assert result[key] == pytest.approx(1.0), key


def only_classes(sequences, classes):
    return [(gt[np.isin(gt["class_id"], classes)], pred[np.isin(pred["class_id"], classes)]) for gt, pred in sequences]


def test_group_ap_equals_ap_on_group_only_dataset():
    """With the same frames (every frame holds every class), a group's AP is the AP of a dataset with only its
    classes."""
    sequences = [synthetic_sequence(seed, every_class=True) for seed in (10, 11)]
    full = evaluate(sequences, groups={"g": [0, 2], "all": [0, 1, 2]})
    subset = evaluate(only_classes(sequences, [0, 2]))
    assert subset["n_images"] == full["n_images"]
    assert full["groups"]["g"] == pytest.approx(subset["AP"], abs=1e-12)
    assert full["groups"]["all"] == pytest.approx(full["AP"], abs=1e-12)
    assert 0 < full["groups"]["g"] < 1


def test_group_ap_counts_false_positives_on_frames_without_group_gt():
    """Frames are defined by all classes' ground truth: a group's false positives on a frame that only holds other
    classes still count, while a dataset cut down to the group drops that frame and them."""
    gt = np.concatenate([boxes(1_000_000, 100, 100, 60, 60, 0), boxes(1_200_000, 100, 100, 60, 60, 1)])
    pred = np.concatenate([boxes(1_000_000, 100, 100, 60, 60, 0, 0.5), boxes(1_200_000, 300, 100, 60, 60, 0, 0.9)])
    full = evaluate([(gt, pred)], groups={"g": [0]})
    subset = evaluate(only_classes([(gt, pred)], [0]))
    assert subset["AP"] == pytest.approx(1.0) and subset["n_images"] == 1
    assert full["groups"]["g"] == pytest.approx(full["per_class"]["pedestrian"]) == pytest.approx(0.5, abs=0.01)


def test_per_class_ap_equals_single_class_dataset_and_nan_without_gt():
    gt, pred = synthetic_sequence(12, n_classes=2, every_class=True)
    classes = ["a", "b", "never-labelled"]
    result = evaluate([(gt, pred)], classes=classes)
    for k in (0, 1):
        alone = evaluate(only_classes([(gt, pred)], [k]), classes=classes)
        assert result["per_class"][classes[k]] == pytest.approx(alone["AP"], abs=1e-12)
        assert result["per_class_AP50"][classes[k]] == pytest.approx(alone["AP_50"], abs=1e-12)  # eTraM's columns
    assert np.isnan(result["per_class"]["never-labelled"]) and np.isnan(result["per_class_AP50"]["never-labelled"])
    columns = etram_values(result, classes)
    assert list(columns) == ["etram/AP50_all", "etram/AP50_a", "etram/AP50_b", "etram/AP50_never-labelled"]
    assert columns["etram/AP50_all"] == result["agnostic"]["AP_50"] and columns["etram/AP50_a"] > 0
    assert result["AP"] == pytest.approx(np.mean([result["per_class"]["a"], result["per_class"]["b"]]), abs=1e-3)


def test_class_agnostic_ignores_swapped_classes():
    gt, _ = synthetic_sequence(5)
    pred = gt.copy()
    pred["class_id"] = (pred["class_id"] + 1) % 3  # every box right, every class wrong
    pred["class_confidence"] = np.linspace(0.2, 0.9, len(pred))
    result = evaluate([(gt, pred)])
    assert result["AP"] == 0.0
    assert result["AP_all"] == pytest.approx(1.0)
    noisy = evaluate([synthetic_sequence(6)])
    assert noisy["AP_all"] >= noisy["AP"]


def test_unknown_class_and_bad_group_are_rejected():
    gt = boxes(1_000_000, 0, 0, 50, 50, 3)
    with pytest.raises(ValueError, match="class_id 3"):
        PropheseeEvaluator(GEN4_CLASSES, 360, 640).add_sequence("s", gt, None)
    with pytest.raises(ValueError, match="group"):
        evaluate([synthetic_sequence(0)], groups={"bad": [5]})
    with pytest.raises(ValueError, match="backend"):
        PropheseeEvaluator(GEN4_CLASSES, 360, 640, backend="detectron2")


# ----------------------------------------------------------------------------------------------- conversion and files


def test_to_eval_boxes():
    xyxy = np.array([[10.5, 20.25, 60.5, 80.0], [0, 0, 1e-3, 3]], dtype=np.float64)
    out = to_eval_boxes(xyxy, np.array([0.9, 0.1]), np.array([2, 0]), 1_500_000)
    assert out.dtype == EVAL_BBOX_DTYPE
    assert out["t"].tolist() == [1_500_000, 1_500_000]
    assert out["w"].tolist() == [50.0, np.float32(1e-3) - np.float32(0)] and out["h"].tolist() == [59.75, 3.0]
    assert out["class_id"].tolist() == [2, 0]
    assert out["class_confidence"].tolist() == [np.float32(0.9), np.float32(0.1)]
    assert to_eval_boxes(xyxy, None, [0, 1], [1, 2])["class_confidence"].tolist() == [1.0, 1.0]


def test_save_and_evaluate_folder_round_trip(tmp_path):
    sequences = {f"rec_{i}": synthetic_sequence(20 + i) for i in range(2)}
    for name, (gt, pred) in sequences.items():
        paths = save_sequence_npy(tmp_path, name, gt, pred)
        assert [p.name for p in paths] == [f"{name}_gt.npy", f"{name}_pred.npy"]
    written = sorted(p.name for p in tmp_path.iterdir())  # no temporary files left behind
    assert written == sorted(f"rec_{i}_{k}.npy" for i in range(2) for k in ("gt", "pred"))
    loaded = np.load(tmp_path / "rec_0_pred.npy")
    assert loaded.dtype == EVAL_BBOX_DTYPE and np.array_equal(loaded, sequences["rec_0"][1])

    from_files = evaluate_folder(tmp_path, classes=GEN4_CLASSES, groups={"g": [1]})
    in_memory = evaluate(list(sequences.values()), groups={"g": [1]})
    for key in STAT_KEYS + ["AP_all", "n_images", "n_gt", "n_pred"]:
        assert from_files[key] == in_memory[key], key
    assert from_files["groups"] == in_memory["groups"] and from_files["sequences"] == list(sequences)

    (tmp_path / "rec_1_pred.npy").unlink()
    save_sequence_npy(tmp_path / "other", "stray", sequences["rec_0"][0], sequences["rec_0"][1])
    (tmp_path / "other" / "stray_gt.npy").unlink()
    (tmp_path / "other" / "stray_pred.npy").rename(tmp_path / "stray_pred.npy")
    partial = evaluate_folder(tmp_path)  # classes default to '0'..'2'
    assert partial["missing_predictions"] == ["rec_1"]
    assert partial["unused_prediction_files"] == [str(tmp_path / "stray_pred.npy")]
    assert partial["n_pred"] == len(sequences["rec_0"][1]) and set(partial["per_class"]) == {"0", "1", "2"}


def test_pr_curves_and_plot(tmp_path):
    result = evaluate([synthetic_sequence(30)], curves=True)
    curves = result["curves"]
    assert curves["precision"].shape == (10, 101, 3) and curves["precision_agnostic"].shape == (10, 101)
    # AP@0.5 is the mean of the IoU-0.5 curves
    assert curves["precision"][0].mean() == pytest.approx(result["AP_50"], abs=1e-12)
    path = plot_pr_curves(result, tmp_path / "plots" / "pr.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
    with pytest.raises(ValueError, match="curves"):
        plot_pr_curves(evaluate([synthetic_sequence(30)]), tmp_path / "x.png")
