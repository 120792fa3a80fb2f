"""Ultralytics' ``distill_model=`` on recurrent event detectors: the teacher's state resets with the student's slots and
is carried across batches, it stays frozen in eval mode (no gradient reaches it), the loss carries ``dis_loss``, a
training run logs the term and the teacher's cost and saves the student alone; a teacher built for other inputs is
refused in one line."""

import csv

import pytest
import torch
from ultralytics.cfg import get_cfg

import yolo_etram.train  # noqa: F401  (registers our train arguments)
from recurrent.state import stateful_layers
from yolo_etram import EventYOLO
from yolo_etram.nn.detection_model import EventDetectionModel
from yolo_etram.nn.distillation import EventDistillationModel, _check_settings
from yolo_etram.utils.errors import EventDataError
from yolo_etram.utils.paths import find_cfg

PARTITION = (3, 4)  # the tiny data's: 96x128 inputs


def _pair() -> EventDistillationModel:
    torch.manual_seed(0)
    student = EventDetectionModel(str(find_cfg("rvt-t.yaml")), nc=3, ch=20, verbose=False)
    teacher = EventDetectionModel(str(find_cfg("rvt-t.yaml")), nc=3, ch=20, verbose=False)
    for m in (student, teacher):
        m.backbone.set_partition_size(PARTITION)
    student.args = get_cfg(overrides={"imgsz": 128, "dis": 1.0})
    return EventDistillationModel(teacher, student)


def _states(model) -> list:
    return [m._recurrent_states for m in stateful_layers(model)]


def _batch(is_first: bool) -> dict:
    torch.manual_seed(1)
    img = (torch.rand(2, 2, 20, 96, 128) < 0.1).float() * 3
    return {
        "img": img,
        "batch_idx": torch.tensor([0.0, 3.0]),
        "cls": torch.tensor([[0.0], [1.0]]),
        "bboxes": torch.tensor([[0.5, 0.5, 0.2, 0.3], [0.3, 0.4, 0.1, 0.2]]),
        "labeled": torch.tensor([True, False, False, True]),
        "is_first": torch.tensor([is_first, is_first]),
    }


def test_the_teacher_is_frozen_and_steps_in_lockstep():
    model = _pair().train()
    assert not model.teacher_model.training and all(not p.requires_grad for p in model.teacher_model.parameters())
    assert all(s is None for s in _states(model.teacher_model) + _states(model.student_model))  # the probe left none
    model.reset_states(torch.tensor([True, True]))
    loss, items = model.loss(_batch(True))
    assert len(loss) == 4 and items["dis_loss"] > 0  # box, cls, dfl + the distillation term
    loss.sum().backward()
    assert all(p.grad is None for p in model.teacher_model.parameters())  # no gradient reaches the teacher
    assert any(p.grad is not None for p in model.projector.parameters())
    after_one = [h.clone() for s in _states(model.teacher_model) for h, _ in s]
    with torch.no_grad():
        model.loss(_batch(False))  # the next clip of the same streams: the teacher's state goes on
    carried = [h.clone() for s in _states(model.teacher_model) for h, _ in s]
    model.reset_states(torch.tensor([True, False]))  # stream 0 starts over, in both models
    for s in _states(model.teacher_model) + _states(model.student_model):
        for h, c in s:
            assert (h[0] == 0).all() and (c[0] == 0).all() and (h[1] != 0).any()
    assert any(not torch.equal(a, b) for a, b in zip(after_one, carried))
    assert model.teacher_batches == 2 and model.teacher_ms > 0 and "ms per training batch" in model.describe_cost()


def test_a_distilled_run_logs_the_term_and_saves_the_student(tiny_events, tmp_path):
    args = dict(batch=2, imgsz=128, workers=0, val=False, plots=False, project=str(tmp_path))
    teacher = EventYOLO("rvt-t.yaml")
    teacher.train(data=str(tiny_events), max_steps=1, name="teacher", **args)
    student = EventYOLO("rvt-t.yaml")
    student.train(
        data=str(tiny_events), max_steps=2, distill_model=str(teacher.trainer.last), dis=1.0, name="s", **args
    )
    rows = list(csv.DictReader(open(student.trainer.save_dir / "results.csv")))
    assert float(rows[-1]["train/dis_loss"]) > 0
    saved = EventYOLO(str(student.trainer.last)).model
    assert isinstance(saved, EventDetectionModel) and not hasattr(saved, "teacher_model")


def test_a_teacher_for_other_inputs_is_refused(tiny_events, tmp_path):
    """A teacher trained on other windows (here: other time bins) cannot see the student's clips; one at another
    resolution only reads the data's twin (``tests/test_twin.py``)."""
    teacher = EventYOLO("rvt-t.yaml")
    args = dict(batch=2, imgsz=128, workers=0, val=False, plots=False, project=str(tmp_path))
    teacher.train(data=str(tiny_events), max_steps=1, name="teacher", **args)
    event = teacher.trainer.model.event
    _check_settings(teacher.trainer.model, event, "teacher.pt")
    with pytest.raises(EventDataError, match=r"teacher.pt uses .* but the student's data holds"):
        _check_settings(teacher.trainer.model, {**event, "nbins": 5, "channels": 10}, "teacher.pt")
