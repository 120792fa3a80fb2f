"""``python -m yolo_etram.data.synth OUT ...``: the same as ``etram-yolo synth OUT ...``."""

import sys

from .writer import main

sys.exit(main())
