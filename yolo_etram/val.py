"""``EventValidator``: stream every validation sequence whole and in order, score the labeled frames with the
Prophesee protocol (the field's headline metric, RVT's evaluation) and with Ultralytics' own metrics beside it.

Usage:
    >>> from yolo_etram import EventYOLO
    >>> metrics = EventYOLO("runs/detect/train/weights/best.pt").val(data="etram.yaml", split="test")
    >>> metrics["prophesee/AP"]
"""

from __future__ import annotations

import json
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

import yolo_etram._env  # noqa: F401

import numpy as np
import torch
from ultralytics.models.yolo.detect import DetectionValidator
from ultralytics.utils import LOGGER
from ultralytics.utils.metrics import DetMetrics
from ultralytics.utils.torch_utils import unwrap_model

from yolo_etram.data.data_yaml import load_event_data
from yolo_etram.data.dataset import EventClipDataset, collate_clips
from yolo_etram.data.io import EVAL_BBOX_DTYPE
from yolo_etram.data.motion import UNKNOWN, motion_subsets
from yolo_etram.metrics.prophesee import PropheseeEvaluator, plot_pr_curves, save_sequence_npy, to_eval_boxes
from yolo_etram.model import RecurrentDetectionModel, fit_to_multiple
from yolo_etram.train import build_sampler, plot_frames, preprocess_event_batch, use_all_cpu_threads

PROPHESEE_KEYS = ("AP", "AP_50", "AP_75", "AP_S", "AP_M", "AP_L")
PROPHESEE_COLUMNS = tuple(f"prophesee/{k}" for k in (*PROPHESEE_KEYS, "AP_all"))


def native_model(model) -> RecurrentDetectionModel | None:
    """The ``RecurrentDetectionModel`` inside a model, EMA copy, DDP wrapper or ``AutoBackend``, if any."""
    seen = set()
    m = unwrap_model(model)
    while m is not None and id(m) not in seen:
        if isinstance(m, RecurrentDetectionModel):
            return m
        seen.add(id(m))
        m = getattr(m, "backend", None) or getattr(m, "model", None)
        if isinstance(m, torch.nn.Sequential):
            return None
    return None


@contextmanager
def _event_data_checks():
    """Make the standalone validator read event data YAMLs (our names, defaults, build-on-first-use)."""
    import ultralytics.engine.validator as engine

    stock = engine.check_det_dataset
    engine.check_det_dataset = lambda data, split=None, **kw: load_event_data(data, split)
    try:
        yield
    finally:
        engine.check_det_dataset = stock


class EventDetMetrics(DetMetrics):
    """Ultralytics' detection metrics plus the Prophesee protocol's, which is the fitness (it picks ``best.pt``)."""

    def __init__(self, names: dict | None = None):
        super().__init__(names or {})
        self.prophesee: dict = {}

    @property
    def results_dict(self) -> dict:
        out = {k: float(v) for k, v in zip(self.keys, self.mean_results())}  # Ultralytics' own
        out.update({c: float(self.prophesee.get(c.split("/")[1], 0.0)) for c in PROPHESEE_COLUMNS})
        out["fitness"] = self.fitness
        return out

    @property
    def fitness(self) -> float:
        return float(self.prophesee["AP"]) if self.prophesee else super().fitness

    def __getitem__(self, key: str):
        return self.results_dict[key]


class EventValidator(DetectionValidator):
    """Validate a recurrent detector on prepared event sequences; headline metric: Prophesee AP."""

    def __init__(self, dataloader=None, save_dir=None, args=None, _callbacks=None):
        super().__init__(dataloader, save_dir, args, _callbacks)
        self.metrics = EventDetMetrics()
        self.prophesee: dict = {}

    def __call__(self, trainer=None, model=None):
        if trainer is None:
            data = load_event_data(self.args.data, self.args.split)
            self.args.imgsz = padded_size(data, self.args.split)  # the warmup forward must fit the partitions
            with _event_data_checks():
                return super().__call__(trainer, model)
        return super().__call__(trainer, model)

    def build_dataset(self, img_path: str, mode: str = "val", batch: int | None = None) -> EventClipDataset:
        return EventClipDataset(img_path, seq_len=self.data["seq_len"], names=self.data["names"],
                                representation=self.data.get("representation"))

    def get_dataloader(self, dataset_path: str, batch_size: int):
        from ultralytics.data.build import InfiniteDataLoader

        dataset = self.build_dataset(dataset_path)
        batch_size = max(1, min(batch_size, len(dataset.sequences)))  # more slots than sequences would only pad
        return InfiniteDataLoader(dataset, batch_size=batch_size, shuffle=False,
                                  sampler=build_sampler(dataset, self.data, batch_size, "val"),
                                  num_workers=0, collate_fn=collate_clips, drop_last=False)

    def init_metrics(self, model):
        super().init_metrics(model)
        self.is_custom_json = self.build_gdict = False  # save_json writes Prophesee .npy files (get_stats)
        self.eval_ids = None
        self.native = native_model(model)
        if self.native is None:
            raise TypeError("EventValidator needs a recurrent event model (RecurrentDetectionModel)")
        if self.data.get("partition"):
            from yolo_etram.train import set_partition

            set_partition(self.native, self.data["partition"])
        use_all_cpu_threads(self.device)
        self.native.reset_states()  # the warmup (and earlier validations of this EMA copy) leave state behind
        self.seq_gt, self.seq_pred, self.seq_motion = defaultdict(list), defaultdict(list), defaultdict(list)
        self.seq_names = [s.name for s in self.dataloader.dataset.sequences]

    def preprocess(self, batch: dict) -> dict:
        batch = preprocess_event_batch(batch, self.device, self.native.input_multiple, half=self.args.quantize == 16)
        self.native.reset_states(batch["is_first"])
        return batch

    def pred_to_json(self, predn: dict, pbatch: dict) -> None:
        """COCO-json predictions do not apply: ``save_json`` writes per-sequence Prophesee ``.npy`` files instead."""

    def _prepare_batch(self, si: int, batch: dict) -> dict:
        pbatch = super()._prepare_batch(si, {**batch, "img": batch["img"].reshape(-1, *batch["img"].shape[-3:])})
        return pbatch

    def update_metrics(self, preds: list[dict], batch: dict) -> None:
        """Score labeled, unpadded frames only: an unlabeled window has no ground truth, a padded one is no frame."""
        frames = torch.nonzero(batch["labeled"] & ~batch["padded"]).flatten().tolist()
        if not frames:
            return
        self._collect_prophesee(preds, batch, frames)
        remap = {f: i for i, f in enumerate(frames)}
        bidx = batch["batch_idx"].long().tolist()
        keep = torch.tensor([b in remap for b in bidx], dtype=torch.bool, device=batch["cls"].device)
        img = batch["img"].reshape(-1, *batch["img"].shape[-3:])[frames]
        sub = {
            "img": img,
            "batch_idx": torch.tensor([remap[b] for b in bidx if b in remap], device=batch["cls"].device),
            "cls": batch["cls"][keep],
            "bboxes": batch["bboxes"][keep],
            **{k: [batch[k][f] for f in frames] for k in ("im_file", "ori_shape", "ratio_pad")},
        }
        super().update_metrics([preds[f] for f in frames], sub)

    def _collect_prophesee(self, preds: list[dict], batch: dict, frames: list[int]) -> None:
        hp, wp = batch["img"].shape[-2:]
        seq_len = batch["img"].shape[1]
        for f in frames:
            seq = self.seq_names[int(batch["seq_id"][f // seq_len])]
            t = int(batch["window_t"][f])
            sel = batch["batch_idx"] == f
            xywh = batch["bboxes"][sel].cpu().numpy() * np.array([wp, hp, wp, hp], np.float32)
            xyxy = np.concatenate([xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2], 1)
            self.seq_gt[seq].append(to_eval_boxes(xyxy, np.ones(len(xyxy)), batch["cls"][sel].cpu().numpy().ravel(), t))
            if "motion" in batch:
                self.seq_motion[seq].append(batch["motion"][sel].cpu().numpy())
            p = preds[f]
            self.seq_pred[seq].append(to_eval_boxes(p["bboxes"].cpu().numpy(), p["conf"].cpu().numpy(),
                                                    p["cls"].cpu().numpy(), t))

    def get_stats(self) -> dict:
        h, w = self.dataloader.dataset.hw
        ev = self.data["eval"]
        evaluator = PropheseeEvaluator(list(self.names.values()), h, w, skip_ts_us=ev["skip_ts_us"],
                                       min_box_diag=ev["min_box_diag"], min_box_side=ev["min_box_side"])
        empty = np.zeros(0, EVAL_BBOX_DTYPE)
        for seq in self.seq_names:
            gt = np.concatenate(self.seq_gt[seq]) if self.seq_gt.get(seq) else empty
            pred = np.concatenate(self.seq_pred[seq]) if self.seq_pred.get(seq) else empty
            subsets = self._motion_subsets(seq, len(gt))
            evaluator.add_sequence(seq, gt, pred, subsets)
            if self.args.save_json:
                save_sequence_npy(self.save_dir, seq, gt, pred)
                if subsets:  # the motion code and seconds stopped of every ground-truth box, row-aligned
                    np.save(self.save_dir / f"{seq}_gt_motion.npy", np.concatenate(self.seq_motion[seq]))
        self.prophesee = evaluator.evaluate(per_class=True, groups=self.data.get("groups") or None,
                                            curves=bool(self.args.plots))
        self.metrics.prophesee = self.prophesee
        if self.args.save_json or self.args.plots:
            self.save_dir.mkdir(parents=True, exist_ok=True)
            (self.save_dir / "metrics.json").write_text(json.dumps(_jsonable(self.prophesee), indent=1))
        if self.args.plots:
            plot_pr_curves(self.prophesee, self.save_dir / "prophesee_PR_curve.png")
        return super().get_stats()  # Ultralytics' metrics + Prophesee's (EventDetMetrics.results_dict)

    def _motion_subsets(self, seq: str, n_gt: int) -> dict | None:
        """Moving / stationary ground-truth subsets of a sequence with motion ground truth (synthetic data)."""
        rows = self.seq_motion.get(seq)
        motion = np.concatenate(rows) if rows else np.zeros((0, 2), np.float32)
        if len(motion) != n_gt or not n_gt or (motion[:, 0] == UNKNOWN).any():
            return None
        return motion_subsets(motion[:, 0].astype(np.int8), motion[:, 1])

    def print_results(self) -> None:
        super().print_results()
        r = self.prophesee
        LOGGER.info("Prophesee protocol (RVT evaluation): " + ", ".join(f"{k} {r[k]:.4f}" for k in PROPHESEE_KEYS)
                    + f", class-agnostic AP (eTraM 'All') {r['AP_all']:.4f}")
        if r.get("per_class"):
            LOGGER.info("  per class AP: " + ", ".join(f"{n} {v:.4f}" for n, v in r["per_class"].items()))
        if r.get("groups"):
            LOGGER.info("  per group AP: " + ", ".join(f"{n} {v:.4f}" for n, v in r["groups"].items()))
        if r.get("subsets"):
            LOGGER.info("  by motion AP: " + ", ".join(f"{n} {v['AP']:.4f} ({v['n_gt']} boxes)"
                                                       for n, v in r["subsets"].items()))

    def plot_val_samples(self, batch: dict, ni: int) -> None:
        plot_frames(batch, self.names, self.save_dir / f"val_batch{ni}_labels.jpg")

    def plot_predictions(self, batch: dict, preds: list[dict], ni: int, max_det=None) -> None:
        plot_frames(batch, self.names, self.save_dir / f"val_batch{ni}_pred.jpg", preds=preds)


def padded_size(data: dict, split: str = "val") -> list[int]:
    """The model input size for a split: its stored size, zero-padded to fit the data's attention partition."""
    from yolo_etram.data.prepared import PreparedSequence, list_sequences

    seqs = list_sequences(data.get(split) or data["val"])
    if not seqs:
        return [384, 640]
    part = data.get("partition") or (6, 10)
    stride = 32  # the backbone's last stage
    hw = PreparedSequence(seqs[0], data.get("representation")).hw
    return list(fit_to_multiple(hw, (stride * part[0], stride * part[1])))


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items() if not isinstance(v, np.ndarray) or v.size < 1000}
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return x
