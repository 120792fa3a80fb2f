"""The typed event settings: names, records, and the one-line errors when two settings disagree."""

import json

import numpy as np
import pytest

from yolo_etram.data.event_settings import EventSettings
from yolo_etram.utils.errors import EventDataError


@pytest.mark.parametrize(
    "settings, folder, channels, dtype",
    [
        (EventSettings(), "stacked_histogram_dt=50_nbins=10", 20, "uint8"),
        (EventSettings("mixeddensity_stack"), "mixeddensity_stack_dt=50_nbins=10_cutoff=32", 10, "int8"),
        (EventSettings(window_events=50_000), "stacked_histogram_ne=50000_nbins=10", 20, "uint8"),
        (EventSettings("vtei"), "vtei_dt=50_nbins=5", 5, "int8"),
        (EventSettings("mdes", window_ms=20), "mdes_dt=20_nbins=5", 5, "int8"),
        (EventSettings("voxel_grid", nbins=3), "voxel_grid_dt=50_nbins=3", 6, "float16"),
        (EventSettings(window_ms=20, step_ms=20), "stacked_histogram_dt=20_nbins=10_step=20", 20, "uint8"),
    ],
)
def test_folder_names_channels_and_round_trips(settings, folder, channels, dtype, tmp_path):
    assert (settings.folder_name, settings.channels, settings.dtype) == (folder, channels, dtype)
    assert EventSettings.from_folder_name(folder) == settings  # RVT's names say everything but a histogram's cutoff
    assert EventSettings.from_dict(json.loads(json.dumps(settings.to_dict()))) == settings
    settings.save(tmp_path)
    assert EventSettings.load(tmp_path) == settings
    rep = settings.build(8, 12)
    assert rep.shape == (channels, 8, 12) and rep.dtype == np.dtype(dtype)


def test_older_model_records_read_as_rvts_histogram():
    """Models trained before the settings were typed recorded downsample, nbins, window_ms and channels only."""
    old = {"downsample": 2, "nbins": 10, "window_ms": 50, "channels": 20, "partition": [6, 10], "input": "histogram"}
    assert EventSettings.from_dict(old) == EventSettings(downsample=2)
    assert EventSettings.from_dict({"channels": 8}).nbins == 4
    assert EventSettings.from_dict({"representation": "stacked_histogram_dt=20_nbins=10"}).window_ms == 20
    with pytest.raises(EventDataError, match="channels 5 does not fit"):
        EventSettings.from_dict({"representation": "stacked_histogram", "nbins": 10, "channels": 5}, "model.pt")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"representation": "sparse"}, "unknown representation 'sparse'"),
        ({"representation": "vtei", "cutoff": 3}, "vtei has no cutoff"),
        ({"cutoff": 300}, "cutoff must be in 1..255"),
        ({"step_ms": 0}, "step_ms must be a positive integer"),
        ({"downsample": 3}, "not a downsampling factor"),
        ({"nbins": 0}, "nbins must be a positive integer"),
    ],
)
def test_impossible_settings_are_refused_in_one_line(kwargs, message):
    with pytest.raises(EventDataError, match=message) as e:
        EventSettings(**kwargs)
    assert "\n" not in str(e.value)


def test_a_mismatch_names_both_settings():
    with pytest.raises(EventDataError) as e:
        EventSettings("vtei").require_same(EventSettings(), "model.pt", "data.yaml")
    msg = str(e.value)
    assert (
        "\n" not in msg and "model.pt uses vtei, 5 bins" in msg and "data.yaml holds stacked_histogram, 10 bins" in msg
    )
    EventSettings("vtei").require_same(EventSettings("vtei", nbins=5), "a", "b")  # equal: silent
