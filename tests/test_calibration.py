"""INT8 calibration inputs of a stateful export: every window comes with the states the float model carried into it,
zero at each sequence start, spread over the split (reference: a counting step function, whose state after k steps
of a sequence is k)."""

import numpy as np
import pytest
import torch
from events_fixture import make_tiny_event_data

from yolo_etram.data.calibration import calibration_inputs
from yolo_etram.data.data_yaml import load_event_data
from yolo_etram.data.prepared import PreparedSequence, list_sequences
from yolo_etram.utils.errors import EventDataError

HW = (96, 128)


def counting_step(images, states):
    """A stand-in model whose single state counts the windows it has seen in its stream."""
    return [states[0] + 1]


def zeros(batch=1):
    return lambda: [torch.zeros(batch, 1, 2, 2)]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return load_event_data(make_tiny_event_data(tmp_path_factory.mktemp("calib") / "d", val=2, test=0), "val")


def windows_per_sequence(data) -> list[int]:
    return [len(PreparedSequence(s, data.get("representation"))) for s in list_sequences(data["val"])]


def test_every_window_carries_the_states_of_its_stream(data):
    samples = calibration_inputs(data, "val", HW, 1, counting_step, zeros(), limit=10_000)
    lengths = windows_per_sequence(data)
    assert len(samples) == sum(lengths)  # stride 1: every window, once
    counts = [int(s[1][0, 0, 0, 0]) for s in samples]
    # one slot streams the sequences one after the other: the count restarts at 0 at each sequence start
    assert counts == [k for n in lengths for k in range(n)]
    images = samples[0][0]
    assert images.shape[0] == 1 and images.shape[-2:] == HW
    assert images.dtype == np.float32 and any(s[0].any() for s in samples)


def test_samples_are_spread_over_the_split_and_padded_to_the_export_size(data):
    total = sum(windows_per_sequence(data))
    samples = calibration_inputs(data, "val", (192, 256), 1, counting_step, zeros(), limit=5)
    assert len(samples) == 5
    assert samples[0][0].shape[-2:] == (192, 256) and not samples[0][0][..., 96:, :].any()  # zero-padded
    stride = -(-total // 5)
    walked = [int(s[1][0, 0, 0, 0]) for s in samples]
    assert walked[1] > 0 and len(set(walked)) > 1  # not the first five windows of one stream
    assert stride > 1
    half = calibration_inputs(data, "val", HW, 1, counting_step, zeros(), limit=10_000, fraction=0.5)
    assert len(half) == -(-total // 2)


def test_two_slots_carry_their_own_states(data):
    samples = calibration_inputs(data, "val", HW, 2, counting_step, zeros(2), limit=10_000)
    first = [s[1][:, 0, 0, 0].tolist() for s in samples[:3]]
    assert first == [[0, 0], [1, 1], [2, 2]]


def test_bad_calibration_requests_name_the_split(data):
    with pytest.raises(EventDataError, match="needs as many sequences"):
        calibration_inputs(data, "val", HW, 5, counting_step, zeros(5))
    with pytest.raises(EventDataError, match="larger than the export's imgsz"):
        calibration_inputs(data, "val", (48, 64), 1, counting_step, zeros())
