"""Synthetic eTraM-like recordings: a static event camera over a road with traffic that stops and goes.

The project's embedded default dataset. It is written in the raw eTraM layout, so everything downstream (``prepare``,
training, evaluation, prediction) treats it exactly like a real split::

    OUT/{train,val,test}/synth_<split>_<i:04d>_td.h5       events/{x,y,p,t,width,height}, blosc zstd
    OUT/{train,val,test}/synth_<split>_<i:04d>_bbox.npy    Prophesee boxes at 30 Hz (BBOX_DTYPE)
    OUT/{train,val,test}/synth_<split>_<i:04d>_motion.npz  optional extra ground truth, row-aligned with the boxes

How a recording is made (one module per step):

1. ``scene``: a ground plane seen obliquely by a static camera (rows farther away are smaller) holds a road:
   sidewalks, a parking lane, bike lanes, two lanes each way, a zebra crossing, and building facades behind. The
   background is rendered once.
2. ``traffic``: a traffic simulation (20 ms steps, starting ``warmup_s`` before the recording so the road is
   populated) moves pedestrians, vehicles and micromobility (drawn by ``sprites``): vehicles queue behind each other
   and yield to pedestrians on the crossing, pedestrians wait at the curb, cross, walk and pause, some objects halt for
   ``stop_duration_s`` at random, cars park and leave. Stopped objects keep their labels but stop emitting events: the
   case recurrent memory is for.
3. ``event_generator`` and ``sensor``: a DVS model renders the scene every ``render_dt_us`` (only the regions that
   changed), keeps a per-pixel log-intensity reference, and emits ON/OFF events each time the log intensity crosses
   the pixel's contrast threshold (per-pixel mismatch), with timestamps interpolated inside the step. Background-
   activity noise and hot pixels are added. Events are generated and written ``chunk_s`` at a time, so memory does
   not grow with duration.
4. ``ground_truth``: boxes at exactly 30 Hz (``t = int(k * 1e6 / 30)``, k >= 1) for every object at least partly visible
   (full object box, clipped to the frame), class ids in eTraM's 3-class (default) or 8-class scheme, ``track_id`` =
   object id; and the motion ground truth (``MOTION_DTYPE``, defined in ``yolo_etram.data.motion``).

``config`` holds ``SynthConfig`` and the class names; ``writer`` writes recordings and datasets and is the CLI;
``make_dataset`` makes a whole training set (recordings, prepared sequences, data YAML) in one call.
Everything is a function of the seed: the same config gives identical files.

This package imports numpy, PyYAML and the standard library only (h5py and hdf5plugin come in through ``..io`` when a
file is
written; no torch, no Ultralytics): it starts fast. Speed: a 10 s recording takes about 4 s at 640x360 and 13 s at
1280x720 on one CPU core; peak memory follows the events of one chunk, not the duration.

Usage:
    >>> from yolo_etram.data.synth import SynthConfig, synthesize_dataset
    >>> synthesize_dataset("datasets/etram_synth_raw", {"train": 4, "val": 1, "test": 1},
    ...                    SynthConfig(width=640, height=360, duration_s=10))
    $ etram-yolo synth datasets/etram_synth_raw --width 640 --height 360 --train 4 --val 1 --test 1
"""

from ..motion import MOTION_DTYPE
from .config import COARSE_CLASS_NAMES, FINE_CLASS_NAMES, FINE_TO_COARSE, SynthConfig, label_times_us
from .make_dataset import make_synthetic_dataset, prophesee_eval_for_height
from .writer import main, recording_paths, recording_seed, synthesize_dataset, synthesize_recording

__all__ = [
    "SynthConfig",
    "synthesize_dataset",
    "synthesize_recording",
    "make_synthetic_dataset",
    "prophesee_eval_for_height",
    "recording_paths",
    "recording_seed",
    "label_times_us",
    "FINE_CLASS_NAMES",
    "COARSE_CLASS_NAMES",
    "FINE_TO_COARSE",
    "MOTION_DTYPE",
    "main",
]
