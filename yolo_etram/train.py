"""``EventTrainer``: Ultralytics' detection trainer on streams of event histograms with truncated BPTT.

Each batch holds, for B stream slots, T consecutive windows of one sequence (``img`` uint8 ``(B, T, C, H, W)``). The
model runs the T steps carrying its LSTM state, the loss counts labeled frames only, and the state is detached at the
end of the batch and carried into the next one, where slots that start a new sequence are reset (``is_first``).

Usage:
    >>> from yolo_etram.train import EventTrainer
    >>> trainer = EventTrainer(overrides={"model": "rvt-t.yaml", "data": "etram-synth.yaml", "epochs": 1, "batch": 2})
    >>> trainer.train()
"""

from __future__ import annotations

import math
import os
import time
from copy import copy

import yolo_etram._env  # noqa: F401

import numpy as np
import torch
import torch.nn.functional as F
from ultralytics.data.build import InfiniteDataLoader
from ultralytics.models.yolo.detect import DetectionTrainer
from ultralytics.utils import DEFAULT_CFG, LOGGER, RANK
from ultralytics.utils.torch_utils import unwrap_model

from yolo_etram.data.data_yaml import event_settings, load_event_data
from yolo_etram.data.dataset import EventClipDataset, collate_clips
from yolo_etram.errors import NonFiniteLossError, UnsupportedOptionError
from yolo_etram.data.render import plot_event_batch
from yolo_etram.data.augment import AugConfig
from yolo_etram.data.sampler import MixedSampler, RandomClipSampler, StreamSampler
from yolo_etram.model import RecurrentDetectionModel, load_model_yaml
from yolo_etram.nn import stateful_layers

# Event-appropriate defaults; any of them given by the user wins.
EVENT_TRAIN_DEFAULTS = dict(
    optimizer="AdamW",
    weight_decay=0.0,  # RVT
    warmup_epochs=1.0,
    warmup_bias_lr=0.0,  # stock 0.1 suits SGD; with AdamW it would blow up the biases during warm-up
    cos_lr=False,
    close_mosaic=0,
    mosaic=0.0, mixup=0.0, cutmix=0.0, copy_paste=0.0,
    hsv_h=0.0, hsv_s=0.0, hsv_v=0.0, degrees=0.0, translate=0.0, scale=0.0, shear=0.0, perspective=0.0, flipud=0.0,
)
# Image augmentations that would corrupt event histograms: refused when switched on.
IMAGE_AUGMENTATIONS = ("mosaic", "mixup", "cutmix", "copy_paste", "hsv_h", "hsv_s", "hsv_v", "degrees", "translate",
                       "scale", "shear", "perspective", "flipud")


def event_overrides(overrides: dict | None) -> dict:
    """Our defaults under the user's overrides, plus RVT's learning-rate rule and one optimizer step per batch."""
    user = dict(overrides or {})
    out = {**EVENT_TRAIN_DEFAULTS, **user}
    batch = int(out.get("batch", DEFAULT_CFG.batch) or DEFAULT_CFG.batch)
    if "lr0" not in user and batch >= 1:
        out["lr0"] = 2e-4 * math.sqrt(batch / 8)  # RVT: 2e-4 * sqrt(effective batch / 8)
    if "nbs" not in user and batch >= 1:
        out["nbs"] = batch  # step every batch (stock nbs=64 with small batches barely steps)
    return out


def check_event_args(args) -> None:
    """Stop with a clear message on options that cannot work on event streams."""
    problems = []
    if args.batch is not None and float(args.batch) < 1:
        problems.append(f"batch={args.batch} (AutoBatch) would run probe forwards through the recurrent state; "
                        "give a batch size >= 1 (the number of stream slots)")
    if args.multi_scale:
        problems.append("multi_scale resizes histograms and changes the state's shape between batches")
    if args.rect:
        problems.append("rect batching reorders frames; event batches are already exact-size streams")
    if args.cache:
        problems.append("cache: prepared histograms are read from HDF5 per clip; image caching does not apply")
    if args.augment:
        problems.append("augment (test-time augmentation) runs extra forwards through the recurrent state")
    on = [k for k in IMAGE_AUGMENTATIONS if float(getattr(args, k, 0) or 0) > 0]
    if on:
        problems.append(f"image augmentations {', '.join(on)} would corrupt event histograms; event clips get "
                        "horizontal flips (fliplr) and zoom-out drawn once per sequence instead")
    if problems:
        raise UnsupportedOptionError("unsupported for event streams: " + "; ".join(problems))


def use_all_cpu_threads(device) -> None:
    """On CPU, compute with every core: Ultralytics' ``select_device`` keeps one free for image decoding, which event
    clips barely need (one small HDF5 read per clip), and that would halve the recurrent model's throughput."""
    if torch.device(device).type == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)


def pad_to_multiple(img: torch.Tensor, multiple: tuple[int, int]) -> torch.Tensor:
    """Zero-pad the last two dimensions bottom/right to multiples of ``multiple`` (box coordinates are unchanged)."""
    h, w = img.shape[-2:]
    ph, pw = -h % multiple[0], -w % multiple[1]
    return F.pad(img, (0, pw, 0, ph)) if ph or pw else img


def preprocess_event_batch(batch: dict, device, multiple: tuple[int, int], half: bool = False) -> dict:
    """Move a collated event batch to ``device``: uint8 counts to float (no /255), zero-padded bottom/right, boxes
    renormalised from the stored frame to the padded one."""
    for k, v in batch.items():
        if isinstance(v, torch.Tensor):
            batch[k] = v.to(device, non_blocking=device.type not in {"cpu", "mps"})
    img = batch["img"].half() if half else batch["img"].float()
    h, w = img.shape[-2:]
    img = pad_to_multiple(img, multiple)
    hp, wp = img.shape[-2:]
    if (hp, wp) != (h, w) and len(batch["bboxes"]):
        scale = torch.tensor([w / wp, h / hp, w / wp, h / hp], device=batch["bboxes"].device)
        batch["bboxes"] = batch["bboxes"] * scale
    batch["img"] = img
    batch["stored_hw"] = (h, w)
    return batch


class EventTrainer(DetectionTrainer):
    """Train a recurrent detector on prepared event data (``yolo train model=rvt-t.yaml data=etram.yaml``).

    Data YAML event keys (see ``yolo_etram.data.data_yaml``) set the clip length T, the sampling mode and the Prophesee
    evaluation filter; ``batch`` is the number of stream slots B (each batch holds B x T windows).
    """

    def __init__(self, cfg=DEFAULT_CFG, overrides: dict | None = None, _callbacks=None):
        from yolo_etram.experiment import reset_peak_memory

        self.created_at = time.time()  # the experiment record's wall time counts set-up too
        reset_peak_memory()  # and its peak memory is this run's, also after other runs in the same process
        super().__init__(cfg, event_overrides(overrides), _callbacks)
        check_event_args(self.args)
        use_all_cpu_threads(self.device)

    def get_dataset(self) -> dict:
        data = load_event_data(self.args.data)
        if data.get("yaml_file"):
            self.args.data = data["yaml_file"]
        return data

    @property
    def stateless(self) -> bool:
        """A model without stateful layers (a stock YAML): it trains on single windows drawn at random."""
        return self.model is not None and not isinstance(self.model, str) and not stateful_layers(self.model)

    def build_dataset(self, img_path: str, mode: str = "train", batch: int | None = None) -> EventClipDataset:
        data = self._train_data(mode)
        sampling = "random" if mode == "train" and data["sampling"] == "random" else "stream"
        return EventClipDataset(img_path, seq_len=data["seq_len"], sampling=sampling, names=data["names"],
                                representation=data.get("representation"))

    def _train_data(self, mode: str) -> dict:
        """The data settings a split is loaded with: stateless models train on random single windows."""
        if mode == "train" and self.stateless:
            return {**self.data, "seq_len": 1, "sampling": "random"}
        return self.data

    def get_dataloader(self, dataset_path: str, batch_size: int = 16, rank: int = 0, mode: str = "train"):
        dataset = self.build_dataset(dataset_path, mode, batch_size)
        if mode != "train":  # Ultralytics doubles the batch for validation; slots beyond the sequences only pad
            batch_size = max(1, min(batch_size, len(dataset.sequences)))
        sampler = build_sampler(dataset, self._train_data(mode), batch_size, mode, seed=self.args.seed, rank=rank,
                                hflip=self.args.fliplr)
        return InfiniteDataLoader(dataset, batch_size=batch_size, shuffle=False, sampler=sampler,
                                  num_workers=min(self.args.workers, os.cpu_count() or 1) if mode == "train" else 0,
                                  collate_fn=collate_clips, pin_memory=self.device.type == "cuda", drop_last=False)

    def preprocess_batch(self, batch: dict) -> dict:
        self.batches_seen = getattr(self, "batches_seen", 0) + 1  # names the step if the loss goes non-finite
        model = unwrap_model(self.model)
        batch = preprocess_event_batch(batch, self.device, model.input_multiple)
        model.reset_states(batch["is_first"])
        return batch

    def set_model_attributes(self):
        super().set_model_attributes()
        model = unwrap_model(self.model)
        if self.data.get("partition"):
            set_partition(model, self.data["partition"])
        if self.stateless:
            LOGGER.info(f"{model.yaml.get('yaml_file', 'model')}: no recurrent state; training on single windows "
                        "drawn at random (a memoryless frame baseline)")
        model.yaml["event"] = event_settings(self.data)  # saved with the model: predict rebuilds the same windows

    def get_model(self, cfg=None, weights=None, verbose: bool = True) -> RecurrentDetectionModel:
        cfg = {**load_model_yaml(cfg), "event": event_settings(self.data)}  # input and memory settings shape the model
        if self.data.get("size_aware") is not None:  # the data YAML's loss option wins over the model YAML's
            cfg["size_aware"] = self.data["size_aware"]
        model = RecurrentDetectionModel(cfg, nc=self.data["nc"], ch=self.data["channels"], verbose=verbose and RANK == -1)
        if weights:
            model.load(weights)
        return model

    def get_validator(self):
        from yolo_etram.val import EventValidator

        head = unwrap_model(self.model).model[-1]  # YOLOX heads: iou/obj/cls losses
        self.loss_names = tuple(getattr(head, "loss_names", ("box_loss", "cls_loss", "dfl_loss")))
        return EventValidator(self.test_loader, save_dir=self.save_dir, args=copy(self.args), _callbacks=self.callbacks)

    def optimizer_step(self):
        """Stop on a non-finite loss before it reaches the weights (and the EMA), naming the step."""
        if self.loss is not None and not torch.isfinite(self.loss).all():
            items = ", ".join(f"{k} {float(v):.4g}" for k, v in (self.loss_items or {}).items())
            raise NonFiniteLossError(
                f"non-finite loss at epoch {self.epoch + 1}, batch {self.batches_seen} of this run ({items}); the "
                f"weights were not updated. Lower lr0 (now {self.args.lr0:g}), check the data, or resume from {self.last}")
        super().optimizer_step()

    def final_eval(self):
        """Validate ``best.pt`` (stock), then write the run's ``experiment_results.json``."""
        super().final_eval()
        if RANK in {-1, 0}:
            from yolo_etram.experiment import write_record

            LOGGER.info(f"Experiment record: {write_record(self)}")

    def auto_batch(self):
        raise UnsupportedOptionError("AutoBatch is not supported for event streams: give batch >= 1 (stream slots)")

    def _setup_train(self):
        import ultralytics.engine.trainer as engine

        stock_check_amp = engine.check_amp
        engine.check_amp = _check_amp_offline  # the stock check downloads yolo26n.pt
        try:
            super()._setup_train()
        finally:
            engine.check_amp = stock_check_amp
        # results.csv takes its columns from the first epoch's row: give epochs without validation the Prophesee
        # columns too, in the order validation returns them (Ultralytics' metrics, ours, then the val losses)
        from yolo_etram.val import PROPHESEE_COLUMNS

        stock = {k: v for k, v in self.metrics.items() if not k.startswith("val/")}
        losses = {k: v for k, v in self.metrics.items() if k.startswith("val/")}
        self.metrics = {**stock, **dict.fromkeys(PROPHESEE_COLUMNS, 0.0), **losses}

    def plot_training_samples(self, batch: dict, ni: int) -> None:
        plot_frames(batch, self.data["names"], self.save_dir / f"train_batch{ni}.jpg")

    def plot_training_labels(self):
        labels = self.train_loader.dataset.labels
        if not labels:
            return
        from ultralytics.utils.plotting import plot_labels

        boxes = np.concatenate([lb["bboxes"] for lb in labels], 0)
        cls = np.concatenate([lb["cls"] for lb in labels], 0)
        plot_labels(boxes, cls.squeeze(), names=self.data["names"], save_dir=self.save_dir, on_plot=self.on_plot)


def set_partition(model, partition) -> None:
    """Use the data's attention partition (it depends on the input size; partitions hold no weights)."""
    backbone = model.model[0]
    if hasattr(backbone, "set_partition_size") and tuple(partition) != tuple(backbone.partition_size):
        LOGGER.info(f"Attention partition {tuple(backbone.partition_size)} -> {tuple(partition)} for this data")
        backbone.set_partition_size(tuple(partition))


def build_sampler(dataset, data: dict, batch_size: int, mode: str, seed: int = 0, rank: int = -1, hflip: float = 0.5):
    """Stream sampler for validation; the data YAML's ``sampling`` mode for training (rank-aware under DDP), with
    RVT's augmentations (``hflip`` is the flip probability, Ultralytics' ``fliplr``)."""
    import dataclasses

    import torch.distributed as dist

    world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    rank = max(rank, 0) if world > 1 else 0
    if mode != "train":
        return StreamSampler(dataset, batch_size, shuffle=False, seed=seed, augment=False)
    stream_aug = dataclasses.replace(AugConfig.stream(), hflip=hflip)
    random_aug = dataclasses.replace(AugConfig.random(), hflip=hflip)
    if data["sampling"] == "random":
        return RandomClipSampler(dataset, batch_size, seed=seed, rank=rank, world_size=world, augment=random_aug)
    if data["sampling"] == "mixed":
        return MixedSampler(dataset, batch_size, random_fraction=data["mixed_random_fraction"], seed=seed, rank=rank,
                            world_size=world, stream_augment=stream_aug, random_augment=random_aug)
    return StreamSampler(dataset, batch_size, shuffle=True, seed=seed, rank=rank, world_size=world, augment=stream_aug)


def plot_frames(batch: dict, names: dict, fname, max_frames: int = 16, preds=None) -> None:
    """Render the labeled frames of a batch (stored resolution) with their boxes (or ``preds``) to ``fname``."""
    img = batch["img"]
    frames = img.reshape(-1, *img.shape[-3:])
    hp, wp = frames.shape[-2:]
    h, w = batch.get("stored_hw", (hp, wp))
    keep = torch.nonzero(batch["labeled"]).flatten()[:max_frames].tolist()
    boxes = []
    for f in keep:
        if preds is not None:
            p = preds[f]
            boxes.append((p["bboxes"].cpu().numpy(), p["cls"].cpu().numpy(), p["conf"].cpu().numpy()))
            continue
        sel = (batch["batch_idx"] == f).cpu()
        xywh = batch["bboxes"][sel].cpu().numpy() * np.array([wp, hp, wp, hp])
        xyxy = np.concatenate([xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2], 1)
        boxes.append((xyxy, batch["cls"][sel].cpu().numpy().reshape(-1), None))
    if keep:
        titles = [batch["im_file"][f] for f in keep]
        plot_event_batch(frames[keep, :, :h, :w].cpu().numpy(), boxes, names, fname, max_frames, titles)


def _check_amp_offline(model) -> bool:
    """AMP on CUDA without the stock check's ``yolo26n.pt`` download; the LSTM state stays float32 either way."""
    device = next(model.parameters()).device
    if device.type != "cuda":
        return False
    LOGGER.info("AMP: enabled on CUDA (stock check skipped: it downloads yolo26n.pt); LSTM state stays float32")
    return True
