"""Twin data (the same recordings prepared at two resolutions, read in lockstep): the data YAML's ``twin`` is checked
in one line, a clip is the same windows and augmentation at both sizes, multi-resolution training keeps each slot's
resolution and its own state bank and validates each resolution, and a full-resolution teacher distils into a
downsampled student through the twin, level matched to level at the same scene stride."""

import csv
import shutil
from copy import deepcopy

import numpy as np
import pytest
import torch
import yaml
from events_fixture import make_tiny_twin_data
from ultralytics.cfg import get_cfg

import yolo_etram.train  # noqa: F401  (registers our train arguments)
from recurrent import state_bank, stateful_layers
from yolo_etram import EventYOLO
from yolo_etram.data.augment import AugParams
from yolo_etram.data.build import build_event_dataloader, build_event_dataset
from yolo_etram.data.data_yaml import load_event_data
from yolo_etram.data.dataset import EventClipDataset
from yolo_etram.data.sampler import ClipKey, StreamSampler
from yolo_etram.data.twin import TwinClipDataset, TwinSlots, collate_twin, twin_slots
from yolo_etram.nn.detection_model import EventDetectionModel
from yolo_etram.nn.distillation import EventDistillationModel, _check_settings, level_map
from yolo_etram.utils.errors import EventDataError, UnsupportedOptionError
from yolo_etram.utils.paths import find_cfg

ARGS = dict(batch=2, imgsz=128, workers=0, plots=False, exist_ok=True)


@pytest.fixture(scope="module")
def twin_events(tmp_path_factory):
    return make_tiny_twin_data(tmp_path_factory.mktemp("twin"))


@pytest.fixture(scope="module")
def full_res_teacher(twin_events, tmp_path_factory):
    """A teacher trained one step on the full-resolution set (the twin)."""
    teacher = EventYOLO("rvt-t.yaml")
    full = twin_events.parents[1] / "full" / "data.yaml"
    teacher.train(data=str(full), max_steps=1, val=False, project=str(tmp_path_factory.mktemp("t")), **ARGS)
    return teacher.trainer.last


def _clips(twin_events):
    return _clips_of(load_event_data(twin_events))


def test_the_twin_is_loaded_and_a_mismatch_is_refused_in_one_line(twin_events, tmp_path):
    d, ds2, full = _clips(twin_events)
    assert d["twin_settings"]["downsample"] == 1 and d["event_settings"]["downsample"] == 2
    assert full.hw == (2 * ds2.hw[0], 2 * ds2.hw[1])
    broken = tmp_path / "broken"
    shutil.copytree(d["twin"] + "/train", broken / "train")
    spec = {**yaml.safe_load(twin_events.read_text()), "twin": str(broken)}
    with pytest.raises(EventDataError, match=r"twin .* has no val folder") as e:
        load_event_data(spec)
    assert "\n" not in str(e.value)
    shutil.rmtree(next((broken / "train").iterdir()))  # a recording missing from the twin
    with pytest.raises(EventDataError, match=r"twin data .* does not match .*: other sequences"):
        TwinClipDataset(ds2, EventClipDataset(broken / "train", seq_len=3))


def _column_of_mass(img: torch.Tensor) -> float:
    cols = img.float().sum(dim=(0, 1, 2))
    return float((cols * torch.arange(len(cols))).sum() / cols.sum() / len(cols))


@pytest.mark.parametrize("aug", [None, AugParams(hflip=True), AugParams(hflip=True, zoom_out=1.2, ux=0.7, uy=0.3)])
def test_a_clip_is_the_same_windows_and_augmentation_at_both_resolutions(twin_events, aug):
    _, ds2, full = _clips(twin_events)
    pair = TwinClipDataset(ds2, full, teacher=True)
    clip = int(np.argmax([len(ds2._boxes[int(r["seq"])].boxes) for r in ds2.clips_stream]))  # a clip with boxes
    item = pair[ClipKey(clip, aug)]
    twin = full[ClipKey(clip, aug)]
    assert torch.equal(item["teacher_img"], twin["img"])
    assert item["teacher_img"].shape[-2:] == (2 * item["img"].shape[-2], 2 * item["img"].shape[-1])
    assert torch.equal(item["window_idx"], twin["window_idx"])
    for a, b in zip(item["labels"], twin["labels"]):  # the same boxes, twice the size (RVT's ds2 rounding)
        assert (a is None) == (b is None)
        if a is not None:
            assert len(a) == len(b) and np.abs(a[:, 1:5] * 2 - b[:, 1:5]).max() <= 2.5
    # the events sit in the same place of the scene at both sizes: flips and zooms moved both alike
    assert abs(_column_of_mass(item["img"]) - _column_of_mass(item["teacher_img"])) < 0.02


def test_twin_slots_keep_one_resolution_per_slot_and_collate_apart(twin_events):
    d = load_event_data(twin_events)
    assert (twin_slots(4, 0.5), twin_slots(2, 0.1), twin_slots(3, 0.9)) == (2, 1, 2)
    for batch, fraction in ((1, 0.5), (4, 0.0), (4, 1.0)):
        with pytest.raises(ValueError, match="multires"):
            twin_slots(batch, fraction)
    ds = build_event_dataset(d["train"], d, "train", twin="multires")
    sampler = TwinSlots(StreamSampler(ds, 4, seed=0), 1)
    keys = list(sampler)
    assert [k.twin for k in keys] == [False, False, False, True] * (len(keys) // 4)
    batch = collate_twin([ds[k] for k in keys[:4]])
    assert batch["img"].shape[0] == 3 and batch["twin"]["img"].shape[0] == 1
    assert batch["twin"]["img"].shape[-2:] == (2 * batch["img"].shape[-2], 2 * batch["img"].shape[-1])
    loader = build_event_dataloader(ds, d, 2, "train", twin_slots=1)
    first = next(iter(loader))
    assert first["is_first"].tolist() == [True] and first["twin"]["is_first"].tolist() == [True]


def test_a_state_bank_keeps_each_resolutions_state_apart():
    torch.manual_seed(0)
    model = EventDetectionModel(str(find_cfg("rvt-t.yaml")), nc=3, ch=20, verbose=False).eval()
    model.backbone.set_partition_size((3, 4))
    small = [(torch.rand(1, 2, 20, 96, 128) < 0.1).float() * 2 for _ in range(2)]
    large = [(torch.rand(1, 2, 20, 192, 256) < 0.1).float() * 2 for _ in range(2)]
    alone = deepcopy(model)
    with torch.no_grad():
        model(small[0])
        with state_bank(model, "twin"):
            model(large[0])
        out_small = model(small[1])[0]
        with state_bank(model, "twin"):
            out_large = model(large[1])[0]
        alone(small[0])
        assert torch.allclose(out_small, alone(small[1])[0], atol=1e-5)  # the twin's forward left it untouched
        alone.reset_states()
        alone(large[0])
        assert torch.allclose(out_large, alone(large[1])[0], atol=1e-5)  # the twin bank carried its own state
    layer = stateful_layers(model)[0]
    assert layer._recurrent_banks["twin"][0] is not None
    assert deepcopy(model).backbone._recurrent_banks is None  # copies (EMA, checkpoints) carry no bank
    model.reset_twin_states(torch.tensor([True]))
    assert all((h == 0).all() for h, _ in layer._recurrent_banks["twin"][0])
    assert any((h != 0).any() for h, _ in layer.states)  # the default bank untouched
    model.reset_states()
    assert layer._recurrent_banks is None and layer.states is None


def test_multires_training_validates_each_resolution(twin_events, tmp_path):
    model = EventYOLO("rvt-t.yaml")
    model.train(data=str(twin_events), max_steps=2, multires=0.5, val=True, project=str(tmp_path), name="mr", **ARGS)
    trainer = model.trainer
    assert isinstance(trainer.train_loader.sampler, TwinSlots) and trainer.train_loader.sampler.n_twin == 1
    rows = list(csv.DictReader(open(trainer.save_dir / "results.csv")))
    assert {"twin/AP", "twin/AP_50", "prophesee/AP"} <= set(rows[-1]) and rows[-1]["twin/AP"] != ""
    assert trainer.model.yaml["event"]["twin"]["downsample"] == 1  # recorded: it validates on both resolutions
    full = twin_events.parents[1] / "full" / "data.yaml"
    metrics = EventYOLO(str(trainer.last)).val(data=str(full), batch=1, plots=False, project=str(tmp_path))
    assert "prophesee/AP" in metrics.results_dict


def test_multires_refusals(twin_events, tiny_events, tmp_path):
    for bad, match in (({"multires": 1.5}, "in \\(0, 1\\)"), ({"multires": 0.5, "batch": 1}, "2 or more stream slots")):
        with pytest.raises(UnsupportedOptionError, match=match):
            EventYOLO("rvt-t.yaml").train(data=str(twin_events), **{**ARGS, **bad, "project": str(tmp_path)})
    with pytest.raises(EventDataError, match="add 'twin: "):  # data without a twin
        EventYOLO("rvt-t.yaml").train(data=str(tiny_events), multires=0.5, max_steps=1, project=str(tmp_path), **ARGS)


def test_level_map_matches_scene_strides():
    assert level_map([8, 16, 32], [8, 16, 32], 2) == [(1, 1), (2, 1), (2, 2)]
    assert level_map([4, 8, 16, 32], [4, 8, 16, 32], 2) == [(1, 1), (2, 1), (3, 1), (3, 2)]
    assert level_map([8, 16, 32], [8, 16, 32], 1) == [(0, 1), (1, 1), (2, 1)]
    with pytest.raises(ValueError, match="no level at or below stride 4"):
        level_map([4, 8], [8, 16], 1)


def test_a_full_resolution_teacher_reads_the_twin(twin_events, full_res_teacher, tmp_path):
    teacher = EventYOLO(str(full_res_teacher)).model
    record = dict(teacher.event, downsample=2)
    assert _check_settings(teacher, record, "t.pt") == 2
    with pytest.raises(EventDataError, match="t.pt uses"):  # other bins are other inputs: refused
        _check_settings(teacher, dict(record, nbins=5, channels=10), "t.pt")
    student = EventYOLO("rvt-t.yaml")
    student.train(
        data=str(twin_events), max_steps=2, distill_model=str(full_res_teacher), dis=1.0, val=False,
        project=str(tmp_path), name="s", **ARGS,
    )  # fmt: skip
    rows = list(csv.DictReader(open(student.trainer.save_dir / "results.csv")))
    assert float(rows[-1]["train/dis_loss"]) > 0
    with pytest.raises(UnsupportedOptionError, match="multires with a teacher at another resolution"):
        EventYOLO("rvt-t.yaml").train(
            data=str(twin_events), max_steps=1, multires=0.5, distill_model=str(full_res_teacher),
            project=str(tmp_path), name="both", val=False, **ARGS,
        )  # fmt: skip


def test_the_twin_teacher_learns_each_level_from_its_scene_stride(full_res_teacher):
    torch.manual_seed(0)
    student = EventDetectionModel(str(find_cfg("rvt-t.yaml")), nc=3, ch=20, verbose=False)
    student.backbone.set_partition_size((3, 4))
    student.args = get_cfg(overrides={"imgsz": 128, "dis": 1.0})
    student.yaml["event"] = dict(EventYOLO(str(full_res_teacher)).model.event, downsample=2, partition=[3, 4])
    model = EventDistillationModel(str(full_res_teacher), student).train()
    assert model.reads_twin and model.level_map == [(1, 1), (2, 1), (3, 1), (3, 2)]  # rvt-t: strides 4-32
    seen = []
    model.teacher_model.register_forward_pre_hook(lambda m, args: seen.append(tuple(args[0].shape[-2:])))
    img = (torch.rand(1, 2, 20, 96, 128) < 0.1).float()
    batch = {
        "img": img,
        "teacher_img": (torch.rand(1, 2, 20, 192, 256) < 0.1).float(),
        "batch_idx": torch.tensor([1.0]),
        "cls": torch.tensor([[0.0]]),
        "bboxes": torch.tensor([[0.5, 0.5, 0.2, 0.3]]),
        "labeled": torch.tensor([False, True]),
        "is_first": torch.tensor([True]),
    }
    model.reset_states(batch["is_first"])
    loss, items = model.loss(batch)
    assert seen == [(192, 256)] and items["dis_loss"] > 0
    loss.sum().backward()
    assert all(p.grad is None for p in model.teacher_model.parameters())
    assert all(p.grad is not None for p in model.projector.parameters())
    with pytest.raises(ValueError, match="needs teacher_img"):
        model.loss({k: v for k, v in batch.items() if k != "teacher_img"})


def test_synthetic_twin_data_is_built_on_first_use(tmp_path):
    spec = {
        "path": str(tmp_path / "ds2"),
        "twin": str(tmp_path / "full"),
        "train": "train",
        "val": "val",
        "names": ["pedestrian", "vehicle", "micromobility"],
        "synth": {"width": 128, "height": 96, "duration_s": 1.0, "splits": {"train": 1, "val": 1}, "raw": "raw",
                  "downsample": 2},
    }  # fmt: skip
    d = load_event_data(spec)
    assert (tmp_path / "raw").is_dir() and not (tmp_path / "ds2_raw").exists()  # one set of recordings for both
    assert d["event_settings"]["downsample"] == 2 and d["twin_settings"]["downsample"] == 1
    _, ds2, full = _clips_of(d)
    assert full.hw == (96, 128) and ds2.hw == (48, 64)
    TwinClipDataset(ds2, full)  # the same windows and label frames


def _clips_of(d):
    return d, EventClipDataset(d["train"], seq_len=3), EventClipDataset(d["twin"] + "/train", seq_len=3)
