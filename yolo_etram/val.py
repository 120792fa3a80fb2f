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

import numpy as np
import torch
from ultralytics.models.yolo.detect import DetectionValidator
from ultralytics.utils import LOGGER
from ultralytics.utils.metrics import DetMetrics
from ultralytics.utils.ops import xywh2xyxy

from yolo_etram.data.build import (
    boxes_on_frames,
    build_event_dataloader,
    build_event_dataset,
    frames,
    preprocess_event_batch,
)
from yolo_etram.data.data_yaml import data_settings, load_event_data
from yolo_etram.data.dataset import EventClipDataset
from yolo_etram.data.event_settings import EventSettings
from yolo_etram.data.motion import UNKNOWN, motion_subsets
from yolo_etram.data.prepared import stored_size
from yolo_etram.data.render import plot_batch
from yolo_etram.integrations.ultralytics import event_seams, patched
from yolo_etram.metrics.plots import plot_pr_curves
from yolo_etram.metrics.prophesee import (
    AP_KEYS,
    EVAL_BBOX_DTYPE,
    PROPHESEE_COLUMNS,
    PropheseeEvaluator,
    etram_values,
    save_sequence_npy,
    to_eval_boxes,
)
from yolo_etram.nn import rvt_eval
from yolo_etram.nn.detection_model import find_event_model, set_partition
from yolo_etram.nn.exported import ExportedClipModel, install_state_runner
from yolo_etram.nn.inference_precision import apply_inference_precision
from yolo_etram.utils.allocator import keep_freed_memory
from yolo_etram.utils.serialize import jsonable
from yolo_etram.utils.sizes import round_up
from yolo_etram.utils.threads import use_all_cpu_threads


def ap_text(value) -> str:
    """An AP for the log: COCO's -1 (no ground truth of that kind, e.g. no large boxes) and NaN say so instead."""
    v = float(value)
    return "n/a (no boxes)" if v < 0 or v != v else f"{v:.4f}"


class EventDetMetrics(DetMetrics):
    """Ultralytics' detection metrics plus the Prophesee protocol's, which is the fitness (it picks ``best.pt``)."""

    def __init__(self, names: dict | None = None):
        super().__init__(names or {})
        self.prophesee: dict = {}

    @property
    def results_dict(self) -> dict:
        out = {k: float(v) for k, v in zip(self.keys, self.mean_results())}  # Ultralytics' own
        out.update({c: float(self.prophesee.get(c.split("/")[1], 0.0)) for c in PROPHESEE_COLUMNS})
        out.update(etram_values(self.prophesee, list(self.names.values())))
        out["fitness"] = self.fitness
        return out

    @property
    def fitness(self) -> float:
        return float(self.prophesee["AP"]) if self.prophesee else super().fitness

    def __getitem__(self, key: str):
        return self.results_dict[key]


def check_model_settings(backend, native, data: dict, name) -> None:
    """A trained model (or export) validates only on data built with its event settings: one line naming both."""
    record = native.event if native is not None else (getattr(backend, "metadata", None) or {}).get("event")
    if isinstance(record, str):
        record = json.loads(record)
    if record:
        source = data.get("yaml_file") or "the data"
        model, theirs = EventSettings.from_dict(record, f"{name}"), data_settings(data)
        if record.get("twin") and EventSettings.from_dict(record["twin"], f"{name}").same_frames(theirs):
            return  # trained at both resolutions (multires): the twin's is its own too
        model.require_same(theirs, f"{name}", f"{source}", windows=False)  # another frame rate is a study, not a bug
        if model != theirs:
            LOGGER.warning(f"{name} was trained on {model.describe()}; validating on {theirs.describe()}")


class EventValidator(DetectionValidator):
    """Validate a recurrent detector on prepared event sequences; headline metric: Prophesee AP."""

    def __init__(self, dataloader=None, save_dir=None, args=None, _callbacks=None):
        super().__init__(dataloader, save_dir, args, _callbacks)
        self.metrics = EventDetMetrics()
        self.prophesee: dict = {}
        self.precision = "fp32"  # what a standalone validation computes in (quantize=16 on CPU: bf16 autocast)
        self.data_override = None  # a training run's twin data (multires): validated beside the training data

    def __call__(self, trainer=None, model=None):
        if trainer is None:
            import ultralytics.engine.validator as engine

            data = load_event_data(self.args.data, self.args.split)
            # the standalone validator checks its data with check_det_dataset, which knows no event data YAML, and
            # builds its AutoBackend, whose stateful exports (ONNX, TorchScript, OpenVINO) need their states fed back
            with (
                event_seams(),
                patched(engine, "check_det_dataset", lambda data, split=None, **kw: load_event_data(data, split)),
                patched(engine, "AutoBackend", self._backend(engine.AutoBackend, data)),
            ):
                return super().__call__(trainer, model)
        return super().__call__(trainer, model)

    def _backend(self, autobackend, data: dict):
        """Ultralytics' AutoBackend, with a stateful export's runner installed before its warmup forward; the
        validation loader then steps as many streams as the export takes (``batch`` of the export). A PyTorch model
        warms up at the split's stored size padded to fit its attention partitions (``input_multiple``); an export
        at its own fixed size (Ultralytics reads it from the metadata)."""

        def build(*args, **kwargs):
            backend = autobackend(*args, **kwargs)
            runner = install_state_runner(backend)
            if runner is not None:
                self.args.batch = runner.batch
            native = find_event_model(backend)
            check_model_settings(backend, native, data, self.args.model)
            self.precision = apply_inference_precision(backend, self.args.quantize, self.args.model)
            hw = stored_size(data, self.args.split)
            if native is not None and hw is not None:
                if data.get("partition"):
                    set_partition(native, data["partition"])
                self.args.imgsz = list(round_up(hw, native.input_multiple))
            return backend

        return build

    def build_dataset(self, img_path: str, mode: str = "val", batch: int | None = None) -> EventClipDataset:
        return build_event_dataset(img_path, self.data, "val")

    def get_dataloader(self, dataset_path: str, batch_size: int):
        return build_event_dataloader(self.build_dataset(dataset_path), self.data, batch_size, "val")

    def init_metrics(self, model):
        if self.data_override is not None:
            self.data = self.data_override
        super().init_metrics(model)
        self.is_custom_json = self.build_gdict = False  # save_json writes Prophesee .npy files (get_stats)
        self.eval_ids = None
        if self.precision in ("bf16", "half"):  # the stock validator records only its own fp16 as quantize=16
            self.args.quantize = 16
        self.native = find_event_model(model)
        self.exported = None if self.native is not None else ExportedClipModel(model, self.dataloader)
        self.rvt_head = None
        if getattr(self.args, "rvt_eval", False):  # RVT's thresholds, and its NMS on a YOLOX head's raw outputs
            if self.native is None:
                rvt_eval.check_export(getattr(model, "metadata", None), self.args.model)
            rvt_eval.apply_preset(self.args)
            self.rvt_head = rvt_eval.yolox_head(self.native)
        if self.native is not None and self.data.get("partition"):
            set_partition(self.native, self.data["partition"])
        use_all_cpu_threads(self.device)
        keep_freed_memory(self.device)
        self.stream.reset_states()  # the warmup (and earlier validations of this EMA copy) leave state behind
        self.seq_gt, self.seq_pred, self.seq_motion = defaultdict(list), defaultdict(list), defaultdict(list)
        self.seq_names = [s.name for s in self.dataloader.dataset.sequences]

    @property
    def stream(self):
        """What carries the recurrent state: the PyTorch model, or the runner of an exported one."""
        return self.native if self.native is not None else self.exported

    def preprocess(self, batch: dict) -> dict:
        multiple = self.stream.input_multiple
        half = self.args.quantize == 16 and self.precision == "fp16"  # bf16 autocast takes float32 windows
        batch = preprocess_event_batch(batch, self.device, multiple, half=half)
        self.stream.reset_states(batch["is_first"])
        return batch

    def pred_to_json(self, predn: dict, pbatch: dict) -> None:
        """COCO-json predictions do not apply: ``save_json`` writes per-sequence Prophesee ``.npy`` files instead."""

    def postprocess(self, preds) -> list[dict]:
        """Ultralytics' NMS; under ``rvt_eval`` on a YOLOX head, RVT's postprocess (:mod:`yolo_etram.nn.rvt_eval`)."""
        _, raw = rvt_eval.split_raw(preds)
        if self.rvt_head is not None and raw is not None:
            return rvt_eval.rvt_detections(self.rvt_head, raw, self.args.conf, self.args.iou)
        return super().postprocess(preds)

    def _prepare_batch(self, si: int, batch: dict) -> dict:
        return super()._prepare_batch(si, {**batch, "img": frames(batch["img"])})

    def update_metrics(self, preds: list[dict], batch: dict) -> None:
        """Score labeled, unpadded frames only: an unlabeled window has no ground truth, a padded one is no frame."""
        keep = batch["labeled"] & ~batch["padded"]
        scored = torch.nonzero(keep).flatten().tolist()
        if not scored:
            return
        self._collect_prophesee(preds, batch, scored)
        sub = {
            "img": frames(batch["img"])[keep],
            **boxes_on_frames(batch, keep),
            **{k: [batch[k][f] for f in scored] for k in ("im_file", "ori_shape", "ratio_pad")},
        }
        super().update_metrics([preds[f] for f in scored], sub)

    def _collect_prophesee(self, preds: list[dict], batch: dict, frames: list[int]) -> None:
        hp, wp = batch["img"].shape[-2:]
        seq_len = batch["img"].shape[1]
        for f in frames:
            seq = self.seq_names[int(batch["seq_id"][f // seq_len])]
            t = int(batch["window_t"][f])
            sel = batch["batch_idx"] == f
            xyxy = xywh2xyxy(batch["bboxes"][sel].cpu().numpy() * np.array([wp, hp, wp, hp], np.float32))
            self.seq_gt[seq].append(to_eval_boxes(xyxy, np.ones(len(xyxy)), batch["cls"][sel].cpu().numpy().ravel(), t))
            if "motion" in batch:
                self.seq_motion[seq].append(batch["motion"][sel].cpu().numpy())
            p = preds[f]
            self.seq_pred[seq].append(
                to_eval_boxes(p["bboxes"].cpu().numpy(), p["conf"].cpu().numpy(), p["cls"].cpu().numpy(), t)
            )

    def get_stats(self) -> dict:
        h, w = self.dataloader.dataset.hw
        ev = self.data["eval"]
        evaluator = PropheseeEvaluator(
            list(self.names.values()),
            h,
            w,
            skip_ts_us=ev["skip_ts_us"],
            min_box_diag=ev["min_box_diag"],
            min_box_side=ev["min_box_side"],
        )
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
        self.prophesee = evaluator.evaluate(
            per_class=True, groups=self.data.get("groups") or None, curves=bool(self.args.plots)
        )
        self.metrics.prophesee = self.prophesee
        if self.args.save_json or self.args.plots:
            self.save_dir.mkdir(parents=True, exist_ok=True)
            (self.save_dir / "metrics.json").write_text(json.dumps(jsonable(self.prophesee), indent=1))
        if self.args.plots:
            plot_pr_curves(self.prophesee, self.save_dir / "prophesee_PR_curve.png")
        stats = super().get_stats()  # Ultralytics' metrics + Prophesee's (EventDetMetrics.results_dict)
        for size in ("small", "medium", "large"):  # save_json's COCO-by-size slots: ours are prophesee/AP_S/M/L
            stats.pop(f"metrics/mAP_{size}(B)", None)
        return stats

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
        LOGGER.info(
            "Prophesee protocol (RVT's evaluation; AP is COCO's at IoU 0.5:0.95): "
            + ", ".join(f"{k} {ap_text(r[k])}" for k in AP_KEYS)
            + f", class-agnostic AP {ap_text(r['AP_all'])}"
        )
        if r.get("per_class"):
            LOGGER.info("  per class AP: " + ", ".join(f"{n} {ap_text(v)}" for n, v in r["per_class"].items()))
            etram = ", ".join(f"{n} {ap_text(v)}" for n, v in r["per_class_AP50"].items())
            LOGGER.info(f"  eTraM paper's table (AP at IoU 0.5): All {ap_text(r['agnostic']['AP_50'])}, {etram}")
        if r.get("groups"):
            LOGGER.info("  per group AP: " + ", ".join(f"{n} {ap_text(v)}" for n, v in r["groups"].items()))
        if r.get("subsets"):
            LOGGER.info(
                "  by motion AP: "
                + ", ".join(f"{n} {ap_text(v['AP'])} ({v['n_gt']} boxes)" for n, v in r["subsets"].items())
            )

    def plot_val_samples(self, batch: dict, ni: int) -> None:
        plot_batch(batch, self.names, self.save_dir / f"val_batch{ni}_labels.jpg")

    def plot_predictions(self, batch: dict, preds: list[dict], ni: int, max_det=None) -> None:
        plot_batch(batch, self.names, self.save_dir / f"val_batch{ni}_pred.jpg", preds=preds)
