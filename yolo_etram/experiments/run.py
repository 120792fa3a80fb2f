"""One run of an ablation, in its own process: ``python -m yolo_etram.experiments.run JOB.json``.

``JOB.json`` holds ``{"run": folder, "args": train arguments incl. model, seed, data, "resume": bool}``; the run
trains into ``folder`` (an ordinary Ultralytics run folder), or resumes from its ``weights/last.pt``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def resumable(last: Path) -> bool:
    """Whether ``last.pt`` is a checkpoint mid-training (Ultralytics strips the epoch of a finished one: a finished
    run without its record, whose final validation failed, is trained again)."""
    from ultralytics.nn.tasks import torch_safe_load

    from yolo_etram.integrations.ultralytics import event_seams

    with event_seams():
        ckpt, _ = torch_safe_load(str(last))
    return int(ckpt.get("epoch", -1)) >= 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    job = json.loads(Path(argv[0]).read_text())
    folder = Path(job["run"])
    from yolo_etram import EventYOLO
    from yolo_etram.utils.errors import run_cli

    def train() -> int:
        last = folder / "weights" / "last.pt"
        if job.get("resume") and resumable(last):
            EventYOLO(str(last)).train(resume=True)
        else:
            args = dict(job["args"])
            model = args.pop("model")
            EventYOLO(model).train(**args, project=str(folder.parent), name=folder.name, exist_ok=True)
        return 0

    return run_cli(train, prog="etram-yolo ablate")


if __name__ == "__main__":
    sys.exit(main())
