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
- the teacher's event settings checked against the student's data (one line naming both): a 1280x720 teacher needs
  each clip at both resolutions in lockstep, which the loader does not give yet;
- the teacher's cost, timed per training batch (:attr:`teacher_ms`, logged by the trainer).

The student's loss (the labeled frames, as always) and the distillation term over every window of the clip are
summed. Both models need the same number of head levels (e.g. rvt-b into rvt-t; both 4-scale).

Example:
    >>> yolo train model=rvt-t.yaml data=etram.yaml distill_model=rvt-b-etram.pt dis=6.0
"""

from __future__ import annotations

import math
import time

import torch
from ultralytics.nn.distill_model import DistillationModel


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
            _check_settings(teacher_model, record, name)
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
        self.teacher_ms = 0.0
        self.teacher_batches = 0
        self.teacher_model.register_forward_pre_hook(_start_clock)
        self.teacher_model.register_forward_hook(self._stop_clock)

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


def _check_settings(teacher, student_record: dict, name: str) -> None:
    """The teacher must read windows as the student's data builds them (resolution included)."""
    if not student_record or not getattr(teacher, "event", None):
        return
    from yolo_etram.data.event_settings import EventSettings

    theirs = EventSettings.from_dict(student_record, "the student's data")
    EventSettings.from_dict(teacher.event, name).require_same(theirs, name, "the student's data", windows=False)
