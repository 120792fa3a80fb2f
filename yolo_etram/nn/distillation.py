"""Knowledge distillation of recurrent event detectors through Ultralytics' own ``distill_model=teacher.pt``.

Ultralytics' ``DistillationModel`` (``ultralytics/nn/distill_model.py``) wraps the student, runs the frozen teacher
on the same batch under ``no_grad`` and adds ``dis`` times a score-weighted L2 between the student's neck outputs
(through 1x1 projectors) and the teacher's, at the Detect head's input levels, weighted per location by the teacher's
best class probability (``dis_loss``); the teacher is stripped from checkpoints and ``best.pt`` holds the student.
:class:`EventDistillationModel` adds what a recurrent teacher needs:

- its state in lockstep with the student's: :meth:`reset_states` resets the same stream slots of both, the teacher
  carries its state across batches like the student, and it runs in eval mode (BatchNorm statistics frozen);
- the probe forward that sizes the projectors at a frame the attention partitions of both models accept (Ultralytics
  probes a square ``imgsz`` frame), leaving no state behind;
- the teacher's event settings checked against the student's data (one line naming both);
- a teacher at another resolution (a 1280x720 teacher for a 640x360 student): it reads each clip from the data YAML's
  ``twin`` (:mod:`yolo_etram.data.twin`: the same windows and augmentation, ``batch["teacher_img"]``), and each
  student level learns from the teacher's level at the same stride in the scene: with a 2x teacher, the student's
  stride 8 from the teacher's stride 16 and so on; where the teacher has no such level (the student's coarsest), from
  its coarsest level average-pooled to the student's grid (its score weights max-pooled alike);
- the teacher's cost, timed per training batch (:attr:`teacher_ms`, logged by the trainer).

The student's loss (the labeled frames, as always) and the distillation term over every window of the clip are
summed. Both models need the same number of head levels (e.g. rvt-b into rvt-t; both 4-scale).

Example:
    >>> yolo train model=rvt-t.yaml data=etram.yaml distill_model=rvt-b-etram.pt dis=6.0
    >>> yolo train model=rvt-t.yaml data=etram-twin.yaml distill_model=rvt-t-full-res.pt  # data YAML with twin:
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F
from torch import nn
from ultralytics.nn.distill_model import DistillationModel
from ultralytics.utils import LOGGER


class EventDistillationModel(DistillationModel):
    """Ultralytics' ``DistillationModel`` for recurrent event detectors (see the module docstring).

    Args:
        teacher_model: a ``.pt`` path or an ``EventDetectionModel``.
        student_model: the ``EventDetectionModel`` being trained (``args`` set by the trainer). Its event record
            (``yaml["event"]``, the data's settings and attention partition, written by the trainer before the
            wrap) gives the teacher its partition and is checked against the teacher's.
    """

    def __init__(self, teacher_model, student_model):
        from yolo_etram.nn.detection_model import find_event_model, set_partition

        record = getattr(student_model, "event", None) or {}
        partition = record.get("partition")
        if not isinstance(teacher_model, torch.nn.Module):
            from yolo_etram import EventYOLO

            name = str(teacher_model)
            teacher_model = EventYOLO(name).model
            resolution = _check_settings(teacher_model, record, name)
        else:
            resolution = _check_settings(find_event_model(teacher_model), record, "the teacher")
        teacher = find_event_model(teacher_model)
        if teacher is None:
            raise ValueError(f"distill_model: {type(teacher_model).__name__} is not an event detector")
        teacher = teacher.float()
        if partition:
            set_partition(teacher, partition)
        probe = _square_multiple(student_model.input_multiple, teacher.input_multiple)
        args = student_model.args
        student_model.args = _with_imgsz(args, probe)  # Ultralytics probes a square imgsz x imgsz frame
        try:
            super().__init__(teacher_model=teacher, student_model=student_model)
        finally:
            student_model.args = args
            self.reset_states()  # the probe leaves no state behind
        self.resolution = resolution  # the teacher's input size over the student's (1: the same input)
        self.level_map = None
        if self.resolution != 1:
            self.level_map = level_map(student_model.stride, teacher.stride, self.resolution)
            self.projector = self._scene_projectors(probe)
            pairs = ", ".join(
                f"{int(student_model.stride[i])} <- {int(teacher.stride[j])}" + (f" pooled {k}x{k}" if k > 1 else "")
                for i, (j, k) in enumerate(self.level_map)
            )
            LOGGER.info(
                f"distillation: the teacher reads each clip from the data's twin at {self.resolution}x the student's "
                f"resolution; student stride <- teacher stride: {pairs}"
            )
        self.teacher_ms = 0.0
        self.teacher_batches = 0
        self.teacher_model.register_forward_pre_hook(_start_clock)
        self.teacher_model.register_forward_hook(self._stop_clock)

    @property
    def reads_twin(self) -> bool:
        """Whether the teacher reads each clip at another resolution, from the data YAML's ``twin``."""
        return getattr(self, "resolution", 1) != 1

    def _scene_projectors(self, side: int) -> nn.ModuleList:
        """1x1 projectors from each student level to the teacher level it learns from (:func:`level_map`)."""
        ch = self.student_model.yaml.get("channels", 20)
        device = next(self.student_model.parameters()).device
        self._teacher_feats.clear()
        self._student_feats.clear()
        with torch.no_grad():
            self.teacher_model(torch.zeros(1, ch, side, side, device=device))
            self.student_model.eval()
            self.student_model(torch.zeros(1, ch, side, side, device=device))
            self.student_model.train()
        levels = enumerate(self.level_map)
        dims = [(self._student_feats[i].shape[1], self._teacher_feats[j].shape[1]) for i, (j, _) in levels]
        self._teacher_feats.clear()
        self._student_feats.clear()
        self.reset_states()
        return nn.ModuleList(
            nn.Sequential(nn.Conv2d(s, t, 1), nn.ReLU(inplace=True), nn.Conv2d(t, t, 1)) for s, t in dims
        ).to(device)

    def loss(self, batch, preds=None):
        """Ultralytics' loss; with a teacher at another resolution, the teacher reads ``batch["teacher_img"]`` and
        each student level is matched to the teacher's level at the same scene stride (:func:`level_map`)."""
        if not self.reads_twin or not self.training:
            return super().loss(batch, preds)
        if "teacher_img" not in batch:
            raise ValueError(
                f"the teacher reads {self.resolution}x the student's resolution: the batch needs teacher_img "
                "(a data YAML with twin:)"
            )
        self._teacher_feats.clear()
        self._student_feats.clear()
        with torch.no_grad():
            self.teacher_model(batch["teacher_img"])
        preds = self.student_model(batch["img"])
        regular_loss, loss_items = self.student_model.loss(batch, preds)
        n = len(self.feats_idx) - 1
        head = self._teacher_feats[n]
        scores = (
            self.decouple_outputs(head, branch="one2many")["scores"]
            + self.decouple_outputs(head, branch="one2one")["scores"]
        ) / 2
        neck = [self._teacher_feats[j] for j in range(n)]
        parts = torch.split(scores, [f.shape[-2] * f.shape[-1] for f in neck], dim=-1)
        weights = [p.sigmoid().max(dim=1, keepdim=True).values.view(-1, 1, *f.shape[-2:]) for p, f in zip(parts, neck)]
        loss_distill = torch.zeros(1, device=batch["img"].device)
        for i, (j, k) in enumerate(self.level_map):
            student = self.projector[i](self.decouple_outputs(self._student_feats[i]))
            size = student.shape[-2:]
            teacher = _on_grid(F.avg_pool2d(neck[j], k) if k > 1 else neck[j], size)
            weight = _on_grid(F.max_pool2d(weights[j], k) if k > 1 else weights[j], size)
            mse = F.mse_loss(student, teacher, reduction="none")
            loss_distill += (mse * weight).sum() / (weight.sum() * student.shape[1] + 1e-9) * self.dis
        loss_items["dis_loss"] = loss_distill.detach()
        return torch.cat([regular_loss, loss_distill * batch["img"].shape[0]]), loss_items

    @property
    def input_multiple(self) -> tuple[int, int]:
        return self.student_model.input_multiple

    @property
    def event(self) -> dict:
        return self.student_model.event

    def reset_states(self, mask: torch.Tensor | None = None) -> None:
        """Reset the same stream slots (all with ``mask`` None) of the student and the teacher."""
        self.student_model.reset_states(mask)
        if self.teacher_model is not None:
            self.teacher_model.reset_states(mask)

    def _stop_clock(self, module, inputs, output) -> None:
        if self.training:
            self.teacher_ms += (time.perf_counter() - module._distill_clock) * 1e3
            self.teacher_batches += 1

    def describe_cost(self) -> str:
        """The teacher's forward time per training batch, for the log."""
        per = self.teacher_ms / max(self.teacher_batches, 1)
        return f"distillation: the teacher took {per:.0f} ms per training batch ({self.teacher_batches} batches)"


def _start_clock(module, inputs) -> None:
    module._distill_clock = time.perf_counter()


def _square_multiple(a: tuple[int, int], b: tuple[int, int]) -> int:
    """The smallest square side that both models' input multiples divide."""
    side = 1
    for m in (*a, *b):
        side = side * int(m) // math.gcd(side, int(m))
    return side


def _with_imgsz(args, imgsz: int):
    from types import SimpleNamespace

    values = dict(args) if isinstance(args, dict) else dict(vars(args))
    return SimpleNamespace(**{**values, "imgsz": imgsz})


def _check_settings(teacher, student_record: dict, name: str) -> int:
    """The teacher must read windows as the student's data builds them, or at another resolution only (then it reads
    the data YAML's twin). Returns the teacher's input size over the student's: 1, or e.g. 2 (downsample 1 vs 2)."""
    if not student_record or teacher is None or not getattr(teacher, "event", None):
        return 1
    from dataclasses import replace

    from yolo_etram.data.event_settings import EventSettings

    theirs = EventSettings.from_dict(student_record, "the student's data")
    mine = EventSettings.from_dict(teacher.event, name)
    if mine.downsample != theirs.downsample and replace(mine, downsample=theirs.downsample).same_frames(theirs):
        if theirs.downsample % mine.downsample:
            raise ValueError(
                f"distill_model: {name} reads downsample {mine.downsample}, the student {theirs.downsample}: the "
                "teacher's resolution must be a whole multiple of the student's"
            )
        return theirs.downsample // mine.downsample
    mine.require_same(theirs, name, "the student's data", windows=False)
    return 1


def level_map(student_strides, teacher_strides, ratio: int) -> list[tuple[int, int]]:
    """For each student level, the teacher level it learns from and the pooling that puts it on the student's grid.

    A student level of stride ``s`` sees the scene at ``s * ratio`` teacher pixels: the teacher's level of that
    stride (pool 1), else its coarsest finer level whose stride divides it (pooled by the quotient).

    Example:
        >>> level_map([8, 16, 32], [8, 16, 32], 2)  # rvt-t into rvt-t from a 2x teacher
        [(1, 1), (2, 1), (2, 2)]
    """
    t = [int(round(float(v))) for v in teacher_strides]
    out = []
    for s in (int(round(float(v))) for v in student_strides):
        scene = s * ratio
        finer = [j for j, tj in enumerate(t) if tj <= scene and scene % tj == 0]
        if not finer:
            raise ValueError(f"distill_model: the teacher has no level at or below stride {scene} (strides {t})")
        j = max(finer, key=lambda j: t[j])
        out.append((j, scene // t[j]))
    return out


def _on_grid(x: torch.Tensor, size) -> torch.Tensor:
    """``x`` cropped or zero-padded (bottom/right, where both inputs are padded) to ``size``."""
    h, w = int(size[0]), int(size[1])
    x = x[..., :h, :w]
    return F.pad(x, (0, w - x.shape[-1], 0, h - x.shape[-2])) if x.shape[-2:] != (h, w) else x
