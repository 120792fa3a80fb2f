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

import functools
import math
import os
import time
import warnings
from copy import copy
from pathlib import Path

import numpy as np
import torch
from ultralytics.models.yolo.detect import DetectionTrainer
from ultralytics.utils import DEFAULT_CFG, LOGGER, RANK
from ultralytics.utils.torch_utils import get_torch_device_backend, unwrap_model

from recurrent import stateful_layers
from yolo_etram.data.build import StepBudget, build_event_dataloader, build_event_dataset, preprocess_event_batch
from yolo_etram.data.data_yaml import event_settings, load_event_data
from yolo_etram.data.dataset import EventClipDataset
from yolo_etram.data.event_augment import EventAugConfig
from yolo_etram.data.prepared import stored_size
from yolo_etram.data.render import plot_batch
from yolo_etram.data.sampler import Sampling
from yolo_etram.data.small_sampling import SmallSampling
from yolo_etram.data.train_args import TRAIN_ARGS
from yolo_etram.data.twin import twin_data, twin_slots
from yolo_etram.integrations.ultralytics import (
    cpu_capable_autocast,
    event_seams,
    offline_amp_check,
    patched,
    register_train_args,
    validating_alone,
)
from yolo_etram.metrics.plots import plot_validation_history
from yolo_etram.metrics.prophesee import PROPHESEE_COLUMNS, etram_columns
from yolo_etram.metrics.records import reset_peak_memory, write_record
from yolo_etram.nn.detection_model import EventDetectionModel, load_model_yaml, set_partition
from yolo_etram.nn.distillation import EventDistillationModel
from yolo_etram.nn.exported import traced_graph
from yolo_etram.nn.size_aware_loss import BUCKETS, feedback_update, set_bucket_weights, size_config
from yolo_etram.utils import distributed
from yolo_etram.utils.allocator import keep_freed_memory
from yolo_etram.utils.errors import NonFiniteLossError, UnsupportedOptionError
from yolo_etram.utils.precision import BF16_HARDWARE, cpu_bf16, cpu_name, require_cpu_bf16
from yolo_etram.utils.sizes import round_up
from yolo_etram.utils.threads import use_all_cpu_threads

register_train_args(TRAIN_ARGS)  # ours (data/train_args.py) pass Ultralytics' argument check

# Event-appropriate defaults; any of them given by the user wins.
EVENT_TRAIN_DEFAULTS = dict(
    optimizer="AdamW",
    weight_decay=0.0,  # RVT
    warmup_epochs=1.0,
    warmup_bias_lr=0.0,  # stock 0.1 suits SGD; with AdamW it would blow up the biases during warm-up
    cos_lr=False,
    close_mosaic=0,
    mosaic=0.0,
    mixup=0.0,
    cutmix=0.0,
    copy_paste=0.0,
    hsv_h=0.0,
    hsv_s=0.0,
    hsv_v=0.0,
    degrees=0.0,
    translate=0.0,
    scale=0.0,
    shear=0.0,
    perspective=0.0,
    flipud=0.0,
)
# Ultralytics' experiment loggers (modules of ultralytics.utils.callbacks) that log trainer.metrics at every epoch end.
METRIC_LOGGERS = ("tensorboard", "wb", "mlflow", "clearml", "comet", "dvc")
# Image augmentations that would corrupt event histograms: refused when switched on.
IMAGE_AUGMENTATIONS = (
    "mosaic",
    "mixup",
    "cutmix",
    "copy_paste",
    "hsv_h",
    "hsv_s",
    "hsv_v",
    "degrees",
    "translate",
    "scale",
    "shear",
    "perspective",
    "flipud",
)


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
        problems.append(
            f"batch={args.batch} (AutoBatch) would run probe forwards through the recurrent state; "
            "give a batch size >= 1 (the number of stream slots)"
        )
    world = distributed.world_size() if distributed.launched() else 1
    if args.batch is not None and float(args.batch) >= 1 and int(args.batch) % world:
        problems.append(
            f"batch={args.batch} stream slots do not split evenly over {world} ranks (each rank takes batch / "
            f"world size): give a multiple of {world}"
        )
    if args.multi_scale:
        problems.append("multi_scale resizes histograms and changes the state's shape between batches")
    if args.rect:
        problems.append("rect batching reorders frames; event batches are already exact-size streams")
    if args.cache:
        problems.append("cache: prepared histograms are read from HDF5 per clip; image caching does not apply")
    if args.augment:
        problems.append("augment (test-time augmentation) runs extra forwards through the recurrent state")
    if int(getattr(args, "max_steps", 0) or 0) > 0 and int(args.nbs or 0) not in (0, int(args.batch or 0)):
        problems.append(
            f"max_steps counts optimizer steps as batches; nbs={args.nbs} accumulates {args.nbs} / {args.batch} "
            "batches per step: leave nbs unset (one step per batch)"
        )
    multires = float(getattr(args, "multires", 0) or 0)
    if multires and not 0 < multires < 1:
        problems.append(f"multires={multires} is the share of stream slots that read the data's twin, in (0, 1)")
    elif multires and args.batch is not None and float(args.batch) >= 1 and int(args.batch) // world < 2:
        problems.append(
            f"multires needs 2 or more stream slots per rank (one per resolution at least), batch={args.batch}"
        )
    on = [k for k in IMAGE_AUGMENTATIONS if float(getattr(args, k, 0) or 0) > 0]
    if on:
        problems.append(
            f"image augmentations {', '.join(on)} would corrupt event histograms; event clips get "
            "horizontal flips (fliplr) and zoom-out drawn once per sequence instead"
        )
    if problems:
        raise UnsupportedOptionError("unsupported for event streams: " + "; ".join(problems))


class EventTrainer(DetectionTrainer):
    """Train a recurrent detector on prepared event data (``yolo train model=rvt-t.yaml data=etram.yaml``).

    Data YAML event keys (see ``yolo_etram.data.data_yaml``) set the clip length T, the sampling mode and the Prophesee
    evaluation filter; ``batch`` is the number of stream slots B (each batch holds B x T windows), over all ranks when
    distributed (each rank streams ``batch / world_size`` slots of its own share of the sequences).

    Distributed: under ``torchrun`` (one node or several) or Ultralytics' launcher (``device=0,1,...``) every rank
    joins the process group the launcher describes (:mod:`yolo_etram.utils.distributed`): NCCL on CUDA (device
    ``LOCAL_RANK``), gloo on CPU, the global ``WORLD_SIZE``.
    """

    def __init__(self, cfg=DEFAULT_CFG, overrides: dict | None = None, _callbacks=None):
        self.created_at = time.time()  # the experiment record's wall time counts set-up too
        reset_peak_memory()  # and its peak memory is this run's, also after other runs in the same process
        with event_seams():  # resume reads the checkpoint: nothing from the file runs
            super().__init__(cfg, event_overrides(overrides), _callbacks)
        if distributed.launched():  # a rank of torchrun or of Ultralytics' launcher: the launcher's world
            self.world_size, self.ddp = distributed.world_size(), False
        check_event_args(self.args)
        use_all_cpu_threads(self.device)
        keep_freed_memory(self.device)

    def train(self):
        """Ultralytics' training, with every checkpoint it opens (pretrained weights, resume, ``best.pt`` for the final
        validation) read by our restricted unpickler, and bf16 autocast available on CPU (:meth:`_set_cpu_amp`)."""
        import ultralytics.engine.trainer as engine

        with event_seams(), patched(engine, "autocast", cpu_capable_autocast(engine.autocast)):
            return super().train()

    def _set_cpu_amp(self) -> None:
        """``amp`` on CPU: bf16 autocast (float32 master weights, no gradient scaler, float32 recurrent state) where
        the CPU computes bf16 natively; elsewhere ``amp=True`` (the default) trains in float32 and says so in one
        line, and an explicit ``amp=bf16`` is refused."""
        amp = str(self.args.amp).lower()
        if self.device.type != "cpu" or amp in ("false", "fp32", "none", "0"):
            return
        if amp == "bf16":
            require_cpu_bf16("amp=bf16")
        if cpu_bf16():
            self.args.amp = "bf16"
            LOGGER.info(f"AMP: bf16 autocast on this CPU, {cpu_name()}; float32 master weights and recurrent state")
        else:
            self.args.amp = False
            LOGGER.info(
                f"AMP: off, training in float32: this CPU, {cpu_name()}, has no bf16 ({BF16_HARDWARE}); amp=False "
                "says the same without this line"
            )

    def _setup_ddp(self):
        """Join the launcher's process group (Ultralytics' version assumes CUDA and counts local devices), then give
        every rank rank 0's run directory."""
        if self.device.type == "cuda" or (self.args.device not in ("cpu", "mps") and torch.cuda.is_available()):
            devices = [d for d in str(self.args.device or "").split(",") if d.strip().isdigit()]
            index = (
                int(devices[distributed.local_rank()])
                if len(devices) > distributed.local_rank()
                else distributed.local_rank()
            )
            torch.cuda.set_device(index)
            self.device = torch.device("cuda", index)
            os.environ.setdefault("TORCH_NCCL_BLOCKING_WAIT", "1")  # a hung collective times out (Ultralytics too)
            self.accelerator = get_torch_device_backend(self.device)
        distributed.init_process_group(self.device)
        self.process_group = distributed.describe()  # for the run record, after the group is gone
        self.save_dir = Path(distributed.broadcast(str(self.save_dir)))
        self.wdir = self.save_dir / "weights"
        self.last, self.best, self.csv = self.wdir / "last.pt", self.wdir / "best.pt", self.save_dir / "results.csv"
        self.args.save_dir = str(self.save_dir)

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
        return build_event_dataset(img_path, self._train_data(mode), mode)

    def _train_data(self, mode: str) -> dict:
        """The data settings a split is loaded with: stateless models train on random single windows."""
        if mode == "train" and self.stateless:
            return {**self.data, "seq_len": 1, "sampling": Sampling.RANDOM.value}
        return self.data

    def get_dataloader(self, dataset_path: str, batch_size: int = 16, rank: int = 0, mode: str = "train"):
        loader = self._event_dataloader(dataset_path, batch_size, rank, mode)
        steps = int(self.args.max_steps or 0)
        if mode != "train" or steps <= 0:
            return loader
        # RVT trains for a number of steps: as many epochs as they need, the last one cut at the count (one optimizer
        # step per batch: nbs = batch). Set here, before Ultralytics sizes its schedule from the epochs.
        self.epochs = self.args.epochs = math.ceil(steps / len(loader))
        LOGGER.info(f"max_steps={steps}: {self.epochs} epochs of {len(loader)} steps, the last one cut at the count")
        return StepBudget(loader, steps, lambda: self.epoch)

    def _event_dataloader(self, dataset_path: str, batch_size: int, rank: int, mode: str):
        # Ultralytics doubles the batch for validation; the builder caps it at one slot per sequence
        reader = self._twin_reader() if mode == "train" else None
        return build_event_dataloader(
            build_event_dataset(dataset_path, self._train_data(mode), mode, twin=reader),
            self._train_data(mode),
            batch_size,
            mode,
            workers=self.args.workers,
            seed=self.args.seed,
            rank=rank,
            hflip=self.args.fliplr,
            pin_memory=self.device.type == "cuda",
            events=EventAugConfig.from_args(self.args),
            small=self._small_sampling() if mode == "train" else None,
            twin_slots=twin_slots(batch_size, self.args.multires) if reader == "multires" else 0,
        )

    def _twin_reader(self) -> str | None:
        """Who reads the data YAML's ``twin`` in training: ``multires`` (``multires=F``), ``teacher`` (a distillation
        teacher at another resolution, its settings checked against the twin's), or nobody."""
        wrapper = unwrap_model(self.model) if self.model is not None and not isinstance(self.model, str) else None
        teacher = isinstance(wrapper, EventDistillationModel) and wrapper.reads_twin
        multires = float(self.args.multires or 0) > 0
        if teacher and multires:
            raise UnsupportedOptionError(
                "multires with a teacher at another resolution: both read the twin, each its own way; use one"
            )
        if not (teacher or multires):
            return None
        twin = self.data.get("twin_settings")
        if teacher and twin:
            from yolo_etram.data.event_settings import EventSettings

            mine = EventSettings.from_dict(wrapper.teacher_model.event, str(self.args.distill_model))
            mine.require_same(EventSettings.from_dict(twin, "twin"), str(self.args.distill_model), "the twin data")
        return "teacher" if teacher else "multires"

    def _small_sampling(self) -> SmallSampling | None:
        """The ``small_sampling`` train argument, with the data YAML's small group (``groups: {small: [...]}``)."""
        small = (self.data.get("groups") or {}).get("small")
        return SmallSampling.parse(getattr(self.args, "small_sampling", 0), small, str(self.args.data))

    def preprocess_batch(self, batch: dict) -> dict:
        self.batches_seen = getattr(self, "batches_seen", 0) + 1  # names the step if the loss goes non-finite
        model = unwrap_model(self.model)
        teacher = getattr(model, "teacher_model", None)
        batch = preprocess_event_batch(
            batch, self.device, model.input_multiple, teacher_multiple=teacher.input_multiple if teacher else None
        )
        model.reset_states(batch["is_first"])
        if "twin" in batch:  # multi-resolution training: the twin slots' own state bank
            model.reset_twin_states(batch["twin"]["is_first"])
        return batch

    def set_model_attributes(self):
        super().set_model_attributes()
        model = unwrap_model(self.model)
        if self.data.get("partition"):
            set_partition(model, self.data["partition"])
        if self.stateless:
            LOGGER.info(
                f"{model.yaml.get('yaml_file', 'model')}: no recurrent state; training on single windows "
                "drawn at random (a memoryless frame baseline)"
            )
        # saved with the model: predict rebuilds the same windows, export defaults to the size it was trained at
        model.yaml["event"] = {**event_settings(self.data), "input_hw": self.input_size(model)}
        if self.multires and self.data.get("twin_settings"):  # trained at both resolutions: it validates on both
            model.yaml["event"]["twin"] = self.data["twin_settings"]

    def input_size(self, model) -> list[int] | None:
        """The model's input size in training: the training split's stored size, zero-padded to fit the partitions."""
        hw = stored_size(self.data, "train")
        return list(round_up(hw, model.input_multiple)) if hw is not None else None

    def get_model(self, cfg=None, weights=None, verbose: bool = True) -> EventDetectionModel:
        cfg = {**load_model_yaml(cfg), "event": event_settings(self.data)}  # input and memory settings shape the model
        if self.data.get("size_aware") is not None:  # the data YAML's loss option wins over the model YAML's,
            cfg["size_aware"] = _keep_bucket_weights(self.data["size_aware"], cfg.get("size_aware"))  # weights kept
        sa = size_config(cfg.get("size_aware"))
        if sa and sa["feedback"]:
            if not self.args.val:
                raise UnsupportedOptionError(
                    "size_aware feedback adapts its weights from every validation's AP_S/M/L: it needs val=True"
                )
            if self.world_size > 1:
                raise UnsupportedOptionError(
                    "size_aware feedback is not supported under DDP yet (rank 0 alone validates): train on one rank"
                )
            cfg["size_aware"] = sa  # checked, with its starting bucket weights recorded
        model = EventDetectionModel(cfg, nc=self.data["nc"], ch=self.data["channels"], verbose=verbose and RANK == -1)
        if weights:
            model.load(weights)
        return model

    def get_validator(self):
        from yolo_etram.val import EventValidator

        model = unwrap_model(self.model)
        if getattr(model, "criterion", None) is None:  # the loss names are the criterion's (dfl or l1, YOLOX's)
            model.criterion = model.init_criterion()
        self.loss_names = tuple(model.criterion.loss_names) + (("dis_loss",) if self.args.distill_model else ())
        return EventValidator(self.test_loader, save_dir=self.save_dir, args=copy(self.args), _callbacks=self.callbacks)

    def optimizer_step(self):
        """Stop on a non-finite loss before it reaches the weights (and the EMA), naming the step."""
        if self.loss is not None and not torch.isfinite(self.loss).all():
            items = ", ".join(f"{k} {float(v):.4g}" for k, v in (self.loss_items or {}).items())
            raise NonFiniteLossError(
                f"non-finite loss at epoch {self.epoch + 1}, batch {self.batches_seen} of this run ({items}); the "
                f"weights were not updated. Lower lr0 (now {self.args.lr0:g}), check the data, or resume from "
                f"{self.last}"
            )
        super().optimizer_step()

    def validate(self):
        """Validate the EMA model; under DDP rank 0 alone, over the whole split (the other ranks wait for it)."""
        if RANK > 0:
            return None, None
        with validating_alone(self):
            out = super().validate()
            if out[0] is not None and self.multires:
                out[0].update(self._validate_twin())
        self.validated_epoch = self.epoch
        self._size_feedback(out[0])
        return out

    @property
    def multires(self) -> bool:
        return float(getattr(self.args, "multires", 0) or 0) > 0

    def _validate_twin(self) -> dict:
        """Multi-resolution training reports each resolution: the EMA model on the twin's validation split too, as
        ``twin/AP``, ``twin/AP_50``, ... (the Prophesee filter scaled to the twin's size)."""
        from yolo_etram.val import EventValidator

        data = twin_data(self.data)
        if getattr(self, "twin_loader", None) is None:
            clips = build_event_dataset(data[self.args.split], data, "val")
            self.twin_loader = build_event_dataloader(clips, data, 2 * self.batch_size)
        validator = EventValidator(self.twin_loader, save_dir=self.save_dir / "twin", args=copy(self.args))
        validator.data_override = data
        hw = "x".join(map(str, self.twin_loader.dataset.hw[::-1]))
        LOGGER.info(f"Validating the twin resolution ({hw}, {data['path']}):")
        metrics = validator(trainer=self)
        return {f"twin/{k.split('/', 1)[1]}": v for k, v in metrics.items() if k.startswith("prophesee/")}

    def _size_feedback(self, metrics: dict | None) -> None:
        """Size-aware loss v2: new bucket weights from this validation's AP_S/M/L, into the model's and the EMA's YAML
        (so checkpoints carry them), their criteria and ``metrics`` (``results.csv``)."""
        model = unwrap_model(self.model)
        sa = size_config(model.yaml.get("size_aware"))
        if not sa or not sa["feedback"] or not metrics:
            return
        ap = {b: metrics.get(f"prophesee/AP_{b}") for b in BUCKETS}
        new = feedback_update(sa["bucket_weights"], ap, sa["feedback"])
        for m in (model, getattr(self.ema, "ema", None)):
            if m is not None:
                m.yaml["size_aware"] = {**sa, "bucket_weights": new}
                if getattr(m, "criterion", None) is not None:
                    set_bucket_weights(m.criterion, new)
        shown = ", ".join(f"{b} {w:.3f}" for b, w in zip(BUCKETS, new))
        LOGGER.info(f"size_aware feedback: bucket weights {shown} (from AP_S/M/L {[ap[b] for b in BUCKETS]})")
        metrics.update({f"size_aware/w_{b}": w for b, w in zip(BUCKETS, new)})

    def save_metrics(self, metrics: dict) -> None:
        """Ultralytics' ``results.csv`` row, with the validation cells left empty on an epoch that was not validated
        (Ultralytics repeats the last values, or zeros before the first validation: a plot would show fake jumps)."""
        if getattr(self, "validated_epoch", None) != self.epoch:
            metrics = {k: None if k in self.metrics else v for k, v in metrics.items()}
        cells = [self.epoch + 1, time.time() - self.train_time_start, *metrics.values()]
        header = "" if self.csv.exists() else ",".join(["epoch", "time", *metrics]) + "\n"
        self.csv.parent.mkdir(parents=True, exist_ok=True)
        with open(self.csv, "a", encoding="utf-8") as f:
            f.write(header + ",".join("" if v is None else f"{float(v):.6g}" for v in cells) + "\n")

    def final_eval(self):
        """Validate ``best.pt`` (stock), then write the run's ``experiment_results.json``; under DDP the process group
        is dissolved first and rank 0 does this alone."""
        distributed.leave()
        if RANK > 0:
            return
        self.validated_epoch = self.epoch + 1  # Ultralytics reports best.pt's metrics as epoch + 1
        if isinstance(wrapper := unwrap_model(self.model), EventDistillationModel):
            LOGGER.info(wrapper.describe_cost())
        with validating_alone(self):
            super().final_eval()
        LOGGER.info(f"Experiment record: {write_record(self)}")

    def setup_model(self):
        import ultralytics.engine.trainer as engine

        with patched(engine, "DistillationModel", EventDistillationModel):  # a resumed distillation too
            return super().setup_model()

    def auto_batch(self):
        raise UnsupportedOptionError("AutoBatch is not supported for event streams: give batch >= 1 (stream slots)")

    def _setup_train(self):
        import ultralytics.engine.trainer as engine

        self._set_cpu_amp()
        # the stock AMP check downloads yolo26n.pt; the stock DDP wrap passes device_ids=[None] on CPU
        with (
            patched(engine, "check_amp", offline_amp_check),
            patched(torch.nn.parallel, "DistributedDataParallel", _DistributedDataParallel),
            patched(engine, "DistillationModel", EventDistillationModel),  # distill_model= for recurrent teachers
        ):
            super()._setup_train()
        self._adapt_logger_callbacks()
        if self.metrics is None:  # ranks other than 0 never validate
            return
        # results.csv takes its columns from the first epoch's row: give epochs without validation the Prophesee
        # columns too, in the order validation returns them (Ultralytics' metrics, ours, then the val losses)
        stock = {k: v for k, v in self.metrics.items() if not k.startswith("val/")}
        losses = {k: v for k, v in self.metrics.items() if k.startswith("val/")}
        ours = (*PROPHESEE_COLUMNS, *etram_columns(list(self.data["names"].values())))
        sa = size_config(unwrap_model(self.model).yaml.get("size_aware"))
        feedback = {f"size_aware/w_{b}": 0.0 for b in BUCKETS} if sa and sa["feedback"] else {}
        twin = {f"twin/{k.split('/', 1)[1]}": 0.0 for k in ours if k.startswith("prophesee/")} if self.multires else {}
        self.metrics = {**stock, **dict.fromkeys(ours, 0.0), **losses, **twin, **feedback}  # as validate adds them

    def _adapt_logger_callbacks(self) -> None:
        """Ultralytics' experiment loggers, fitted to event runs. They log ``trainer.metrics`` at every epoch end, which
        holds zeros or the last validation's values on epochs that were not validated: there they see no validation
        metrics (TensorBoard then logs nothing; W&B, MLflow, ClearML, Comet and DVC their losses and learning rates).
        TensorBoard's model graph traces a square ``imgsz`` frame through the stateful model (the partitions refuse
        it, and a trace would bake the state in); ours traces one padded window with the states as inputs and
        outputs, as exported."""
        graph = functools.partial(_log_tensorboard_graph, hw=self.train_loader.dataset.hw)
        hooks = {
            ("tensorboard", "on_train_start"): graph,
            **{(name, "on_fit_epoch_end"): _without_stale_metrics for name in METRIC_LOGGERS},
        }
        for (name, event), ours in hooks.items():
            for i, hook in enumerate(self.callbacks[event]):
                if getattr(hook, "__module__", "") == f"ultralytics.utils.callbacks.{name}":
                    self.callbacks[event][i] = functools.partial(ours, hook=hook)

    def plot_metrics(self):
        """``results.png`` (Ultralytics' losses and ``metrics/*``) and ``validation_history.png`` (our APs)."""
        super().plot_metrics()
        plot_validation_history(self.csv, self.save_dir / "validation_history.png")

    def plot_training_samples(self, batch: dict, ni: int) -> None:
        plot_batch(batch, self.data["names"], self.save_dir / f"train_batch{ni}.jpg")

    def plot_training_labels(self):
        labels = self.train_loader.dataset.labels
        if not labels:
            return
        from ultralytics.utils.plotting import plot_labels

        boxes = np.concatenate([lb["bboxes"] for lb in labels], 0)
        cls = np.concatenate([lb["cls"] for lb in labels], 0)
        plot_labels(boxes, cls.squeeze(), names=self.data["names"], save_dir=self.save_dir, on_plot=self.on_plot)


def _keep_bucket_weights(data_cfg, model_cfg):
    """The data YAML's ``size_aware``, keeping the bucket weights a checkpoint's YAML learned by feedback (resume)."""
    learned = model_cfg.get("bucket_weights") if isinstance(model_cfg, dict) else None
    if learned and isinstance(data_cfg, dict) and data_cfg.get("feedback") and not data_cfg.get("bucket_weights"):
        return {**data_cfg, "bucket_weights": learned}
    return data_cfg


def _log_tensorboard_graph(trainer, hw, hook) -> None:
    import ultralytics.utils.callbacks.tensorboard as tensorboard

    model = unwrap_model(trainer.model)
    if tensorboard.WRITER is None or not stateful_layers(model):
        return hook(trainer)
    h, w = round_up(hw, model.input_multiple)
    try:
        with warnings.catch_warnings():  # torch's notes on its tracer, which add_graph uses: nothing to act on
            warnings.simplefilter("ignore", (FutureWarning, UserWarning))
            tensorboard.WRITER.add_graph(traced_graph(model, h, w), [])
        LOGGER.info(f"TensorBoard: model graph added (one {h}x{w} window, LSTM states in and out)")
    except Exception as e:  # a viewer's extra: never worth stopping a run for
        LOGGER.info(f"TensorBoard: no model graph for this model ({type(e).__name__}: {str(e).splitlines()[0]})")


def _without_stale_metrics(trainer, hook) -> None:
    if getattr(trainer, "validated_epoch", None) == trainer.epoch:
        return hook(trainer)
    metrics, trainer.metrics = trainer.metrics, {}
    try:
        hook(trainer)
    finally:
        trainer.metrics = metrics


class _DistributedDataParallel(torch.nn.parallel.DistributedDataParallel):
    """``DistributedDataParallel`` as Ultralytics builds it, with ``device_ids`` left out for a CPU module (gloo
    refuses ``[None]``); a subclass, so Ultralytics' ``isinstance`` unwrapping still finds the module."""

    def __init__(self, module, device_ids=None, **kwargs):
        on_cpu = next(module.parameters()).device.type == "cpu"
        super().__init__(module, device_ids=None if on_cpu else device_ids, **kwargs)
