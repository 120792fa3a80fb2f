"""Every train argument of ours beyond Ultralytics' own, each off by default, in one place: the event-domain
augmentation (:mod:`yolo_etram.data.event_augment`) and ``max_steps`` (RVT's recipes count optimizer steps, not
epochs: :class:`yolo_etram.data.build.StepBudget`). ``EventYOLO``, the trainer, ablation specs and the commands
register them with Ultralytics' defaults, so that ``yolo train ... max_steps=400000`` passes its argument check.

Example:
    >>> from yolo_etram.data.train_args import TRAIN_ARGS
    >>> TRAIN_ARGS["max_steps"], TRAIN_ARGS["suppress_polarity"]
    (0, 0.0)
"""

from __future__ import annotations

from .event_augment import TRAIN_ARGS as AUGMENT_ARGS

STEP_ARGS = {"max_steps": 0}
TRAIN_ARGS = {**AUGMENT_ARGS, **STEP_ARGS}
