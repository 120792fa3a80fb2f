"""Every representation through every command: prepare -> train -> val -> predict on the raw recording -> export ->
val on the export; prediction on a recording builds prepare's frames bit for bit; mismatched settings stop in one
line naming both."""

import contextlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from events_fixture import TINY, TINY_PARTITION

from yolo_etram import EventYOLO
from yolo_etram.data.event_settings import EventSettings
from yolo_etram.data.prepare import PrepareConfig
from yolo_etram.data.prepared import PreparedSequence, list_sequences
from yolo_etram.data.stream import EventWindowSource
from yolo_etram.data.synth import SynthConfig, make_synthetic_dataset
from yolo_etram.utils.errors import EventDataError

REPRESENTATIONS = ["stacked_histogram", "mixeddensity_stack", "vtei", "mdes", "voxel_grid"]
TRAIN = dict(epochs=1, batch=2, workers=0, imgsz=128, plots=False, seed=0, val=False, exist_ok=True)
VAL = dict(workers=0, plots=False, batch=1, exist_ok=True)


def tiny_data(root: Path, prepare: PrepareConfig, train: int = 1) -> Path:
    return make_synthetic_dataset(
        root / "prepared", {"train": train, "val": 1}, SynthConfig(**TINY, seed=3), raw=root / "raw", seq_len=3,
        partition=TINY_PARTITION, workers=1, progress=False, prepare=prepare,
        eval={"skip_ts_us": 500_000, "min_box_diag": 8, "min_box_side": 3},
    )  # fmt: skip


@pytest.mark.parametrize(
    "prepare",
    [PrepareConfig(representation=r) for r in REPRESENTATIONS] + [PrepareConfig(window_events=3000)],
    ids=[*REPRESENTATIONS, "count_windows"],
)
def test_predict_on_a_recording_builds_prepares_frames(prepare, tmp_path):
    data = tiny_data(tmp_path, prepare, train=0)
    seq = PreparedSequence(list_sequences(Path(data).parent / "val")[0])
    settings = prepare.settings()
    assert seq.settings == replace(settings, downsample=1) and seq.repr_dir.name == settings.folder_name
    raw = next((tmp_path / "raw" / "val").glob("*_td.h5"))
    live = {w.t_end: w.hist for w in EventWindowSource(raw, seq.settings)}
    common = [i for i, t in enumerate(seq.window_t) if int(t) in live]
    assert len(common) >= len(seq) - 1  # the windows end at multiples of 50 ms in both
    for i in common:
        frame = seq.histograms(i, i + 1)[0]
        assert frame.dtype == np.dtype(settings.dtype) and frame.shape[0] == settings.channels
        np.testing.assert_array_equal(live[int(seq.window_t[i])], frame)
    assert any(seq.histograms(i, i + 1).any() for i in common)


def recorded_settings(export: Path) -> EventSettings:
    """The event settings an export carries in its metadata (ONNX properties, TorchScript's config.txt, OpenVINO's
    metadata.yaml)."""
    import json

    if export.suffix == ".onnx":
        import onnx as onnx_lib

        meta = {m.key: m.value for m in onnx_lib.load(str(export)).metadata_props}
    elif export.suffix == ".torchscript":
        import torch

        extra = {"config.txt": ""}
        torch.jit.load(str(export), _extra_files=extra)
        meta = json.loads(extra["config.txt"])
    else:
        import yaml

        meta = yaml.safe_load((export / "metadata.yaml").read_text())
    event = meta["event"]
    return EventSettings.from_dict(json.loads(event) if isinstance(event, str) else event)


def run_pipeline(rep: str, root: Path, formats=("onnx",)) -> None:
    data = tiny_data(root, PrepareConfig(representation=rep))
    settings = EventSettings(rep)
    EventYOLO("rvt-t.yaml").train(data=str(data), project=str(root), name="run", **TRAIN)
    best = root / "run" / "weights" / "best.pt"
    model = EventYOLO(str(best))
    assert EventSettings.from_dict(model.model.yaml["event"]) == settings  # the checkpoint records them
    assert model.model.yaml["channels"] == settings.channels
    pt = model.val(data=str(data), project=str(root), name="val_pt", **VAL)
    raw = next((root / "raw" / "val").glob("*_td.h5"))
    results = list(EventYOLO(str(best)).predict(str(raw), conf=0.01, stream=True, save=False, verbose=False))
    assert len(results) > 10 and results[0].orig_img.shape[:2] == (TINY["height"], TINY["width"])
    for fmt in formats:
        with contextlib.chdir(root):
            export = root / EventYOLO(str(best)).export(format=fmt)
        assert recorded_settings(export) == settings  # every export records them
        exported = EventYOLO(str(export)).val(data=str(data), project=str(root), name=f"val_{fmt}", **VAL)
        for key in ("prophesee/AP", "prophesee/AP_50"):
            assert exported.results_dict[key] == pytest.approx(pt.results_dict[key], abs=2e-3), (fmt, key)


def test_vtei_through_every_command(tmp_path):
    run_pipeline("vtei", tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("rep", [r for r in REPRESENTATIONS if r != "vtei"])
def test_every_representation_through_every_command(rep, tmp_path):
    import importlib.util

    openvino = ("openvino",) if importlib.util.find_spec("openvino") else ()
    run_pipeline(rep, tmp_path, ("onnx", "torchscript", *openvino))


@pytest.fixture(scope="module")
def two_datasets(tmp_path_factory):
    """A VTEI model and histogram data: the mismatch every command must refuse."""
    root = tmp_path_factory.mktemp("mismatch")
    vtei = tiny_data(root / "vtei", PrepareConfig(representation="vtei"))
    hist = tiny_data(root / "hist", PrepareConfig())
    model = EventYOLO("rvt-t.yaml")
    model.train(data=str(vtei), project=str(root), name="run", **{**TRAIN, "epochs": 1})
    return root, root / "run" / "weights" / "best.pt", vtei, hist


def test_val_and_predict_refuse_data_of_other_settings(two_datasets):
    root, best, vtei, hist = two_datasets
    with pytest.raises(EventDataError) as e:
        EventYOLO(str(best)).val(data=str(hist), project=str(root), name="v", **VAL)
    msg = str(e.value)
    assert "\n" not in msg and "uses vtei, 5 bins" in msg and "holds stacked_histogram, 10 bins" in msg
    seq = list_sequences(Path(hist).parent / "val")[0]
    with pytest.raises(EventDataError, match="uses vtei.*holds stacked_histogram"):
        list(EventYOLO(str(best)).predict(str(seq), stream=True, save=False, verbose=False))
    with pytest.raises(EventDataError, match="uses vtei.*holds stacked_histogram"):
        list(EventYOLO(str(best)).predict(str(seq), data=str(hist), stream=True, save=False, verbose=False))


def test_data_yaml_selects_among_prepared_folders(two_datasets, tmp_path):
    """Two representations prepared into one folder: the data YAML names one; without a name, prepare's default is
    taken when it is among them, and anything else is an error."""
    import yaml

    from yolo_etram.data.data_yaml import load_event_data
    from yolo_etram.data.prepare import prepare_dataset

    root, _, _, hist = two_datasets
    raw, out = root / "hist" / "raw", tmp_path / "both"
    prepare_dataset(raw, out, PrepareConfig(downsample=1), progress=False)
    prepare_dataset(raw, out, PrepareConfig(downsample=1, representation="mdes"), progress=False)
    seq = list_sequences(out / "val")[0]
    assert sorted(p.name for p in (seq / "event_representations_v2").iterdir()) == [
        "mdes_dt=50_nbins=5", "stacked_histogram_dt=50_nbins=10",
    ]  # fmt: skip
    spec = {**yaml.safe_load(Path(hist).read_text()), "path": str(out), "channels": None}
    d = load_event_data({**spec, "representation": "mdes_dt=50_nbins=5"})
    assert d["channels"] == 5 and EventSettings.from_dict(d["event_settings"]) == EventSettings("mdes")
    assert load_event_data(spec)["channels"] == 20  # without a name: prepare's default, when it is among them
    for split in ("train", "val"):
        for s in list_sequences(out / split):
            folders = s / "event_representations_v2"
            (folders / "stacked_histogram_dt=50_nbins=10").rename(folders / "stacked_histogram_dt=100_nbins=10")
    with pytest.raises(EventDataError, match="name the representation"):
        load_event_data(spec)
    with pytest.raises(EventDataError, match="input event_frame sums the time bins"):
        load_event_data({**spec, "representation": "mdes_dt=50_nbins=5", "input": "event_frame"})
