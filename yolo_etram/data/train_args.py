"""Every train argument of ours beyond Ultralytics' own, each off by default, in one place: the event-domain
augmentation (:mod:`yolo_etram.data.event_augment`), ``max_steps`` (RVT's recipes count optimizer steps, not epochs:
:class:`yolo_etram.data.build.StepBudget`), ``small_sampling`` (:mod:`yolo_etram.data.small_sampling`), ``multires``
(multi-resolution training from the data YAML's ``twin``: :mod:`yolo_etram.data.twin`) and the loss
levers (``hard_negatives``: :mod:`yolo_etram.nn.hard_negatives`; ``temporal_consistency``:
:mod:`yolo_etram.nn.temporal_consistency`), and ``rvt_eval`` (RVT's evaluation, :mod:`yolo_etram.nn.rvt_eval`),
which validation reads as well.
``EventYOLO``, the trainer, ablation specs and the commands register them with Ultralytics' defaults, so that
``yolo train ... max_steps=400000`` passes its argument check.

Example:
    >>> from yolo_etram.data.train_args import TRAIN_ARGS
    >>> TRAIN_ARGS["max_steps"], TRAIN_ARGS["small_sampling"]
    (0, 0.0)
"""

from __future__ import annotations

from .event_augment import TRAIN_ARGS as AUGMENT_ARGS

STEP_ARGS = {"max_steps": 0}
SAMPLING_ARGS = {  # small-object sampling (:mod:`yolo_etram.data.small_sampling`), multi-resolution (:mod:`..twin`)
    "small_sampling": 0.0,
    "multires": 0.0,
}
LOSS_ARGS = {  # :mod:`yolo_etram.nn.hard_negatives`, :mod:`yolo_etram.nn.temporal_consistency`
    "hard_negatives": 0.0,
    "hard_negative_weight": 2.0,
    "temporal_consistency": 0.0,
}
EVAL_ARGS = {"rvt_eval": False}  # validate as RVT's validation.py (:mod:`yolo_etram.nn.rvt_eval`)
TRAIN_ARGS = {**AUGMENT_ARGS, **STEP_ARGS, **SAMPLING_ARGS, **LOSS_ARGS, **EVAL_ARGS}
