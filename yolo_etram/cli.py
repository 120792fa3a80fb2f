"""``etram-yolo``: the stock Ultralytics CLI with this plugin active, plus ``prepare``, ``synth``, ``convert``,
``import-rvt``, ``compare`` and ``ablate``.

Usage:
    etram-yolo synth datasets/etram_synth_raw --train 4 --val 2 --test 1
    etram-yolo prepare datasets/etram_synth_raw datasets/etram_synth --kind etram --workers 2
    etram-yolo convert recording.raw recording_td.h5                 # between .raw, .dat, _td.h5 and .npy
    etram-yolo train model=rvt-t.yaml data=etram-synth.yaml epochs=1
    etram-yolo import-rvt rvt-b.ckpt --model rvt-b-yolox.yaml --out rvt-b-etram.pt
    etram-yolo compare runs/detect/train runs/detect/train2      # experiment records side by side
    etram-yolo ablate cfg/ablations/small_objects.yaml             # variants x seeds, intervals, paired tests
"""

from __future__ import annotations

import sys

DATA_COMMANDS = {
    "prepare": "yolo_etram.data.prepare",
    "synth": "yolo_etram.data.synth",
    "convert": "yolo_etram.data.convert",
    "import-rvt": "yolo_etram.nn.rvt_import",
    "compare": "yolo_etram.metrics.records",
    "ablate": "yolo_etram.experiments.ablate",
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    from yolo_etram.utils.errors import run_cli

    if argv and argv[0] in DATA_COMMANDS:
        import importlib

        return run_cli(importlib.import_module(DATA_COMMANDS[argv[0]]).main, argv[1:])
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(__doc__)
        if not argv or argv[0] != "help":
            return 0
    from yolo_etram.ultralytics_cli import run_ultralytics

    return run_cli(run_ultralytics, argv)


if __name__ == "__main__":
    sys.exit(main())
