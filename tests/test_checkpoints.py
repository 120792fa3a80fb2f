"""Checkpoints never run code: RVT/eTraM Lightning checkpoints import with no flag and without omegaconf;
a file whose unpickling would run a command is refused and the command never runs; a class of a package that is not
installed stays an inert record (nothing imported, nothing installed); mutated pickle streams give our one-line error.

The test checkpoints are written here: a subprocess registers stand-in classes under omegaconf's and Lightning's module
names (``omegaconf.dictconfig.DictConfig`` and its value nodes, pickled the way omegaconf pickles them: ``NEWOBJ`` then
``BUILD`` with the instance ``__dict__``), so the files name exactly the globals a real release checkpoint names while
neither package is installed anywhere.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from yolo_etram.utils.checkpoints import (
    CheckpointError,
    InertRecord,
    UnsafeCheckpointError,
    restricted_load,
    to_plain,
)

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures" / "legacy_layout"

# RVT's Hydra configuration as the eTraM fork saves it (`save_hyperparameters` of `full_config`), the keys read
ETRAM_CONFIG = {
    "dataset": {
        "name": "gen4",
        "path": "/data/eTraM/rvt_preprocessed",
        "ev_repr_name": "stacked_histogram_dt=50_nbins=10",
        "resolution_hw": [720, 1280],
        "downsample_by_factor_2": True,
        "sequence_length": 5,
    },
    "model": {
        "name": "rnndet",
        "backbone": {
            "name": "MaxViTRNN",
            "embed_dim": 32,
            "input_channels": 20,
            "partition_split_32": 2,
            "in_res_hw": [384, 640],
            "stage": {"attention": {"dim_head": 32, "partition_size": [6, 10]}},
        },
        "fpn": {"depth": 0.33},
        "head": {"name": "YoloX", "num_classes": 3},
        "postprocess": {"confidence_threshold": 0.1, "nms_threshold": 0.45},
    },
    "training": {"learning_rate": 0.0002, "max_steps": 400000},
}

WRITER = r"""
import sys, types
import torch

def stand_in(module, name):
    parts = module.split(".")
    for i in range(1, len(parts) + 1):
        sys.modules.setdefault(".".join(parts[:i]), types.ModuleType(".".join(parts[:i])))
    cls = type(name, (), {"__module__": module, "__qualname__": name})
    setattr(sys.modules[module], name, cls)
    return cls

Metadata = stand_in("omegaconf.base", "ContainerMetadata")
AnyNode = stand_in("omegaconf.nodes", "AnyNode")
DictConfig = stand_in("omegaconf.dictconfig", "DictConfig")
ListConfig = stand_in("omegaconf.listconfig", "ListConfig")
Checkpoint = stand_in("pytorch_lightning.callbacks.model_checkpoint", "ModelCheckpoint")
Unknown = stand_in("definitely_not_installed_pkg.things", "Gadget")

def new(cls, **attrs):
    obj = cls.__new__(cls)
    obj.__dict__.update(attrs)
    return obj

def config(value, parent=None):
    if isinstance(value, dict):
        node = new(DictConfig, _metadata=new(Metadata, ref_type=object, object_type=dict, optional=True, key=None,
                                            flags={}), _parent=parent, _content={})
        node._content = {k: config(v, node) for k, v in value.items()}
        return node
    if isinstance(value, list):
        node = new(ListConfig, _metadata=new(Metadata, ref_type=object, object_type=list, optional=True, key=None,
                                            flags={}), _parent=parent, _content=[])
        node._content = [config(v, node) for v in value]
        return node
    return new(AnyNode, _val=value, _metadata=new(Metadata, ref_type=object, object_type=None, optional=True,
                                                 key=None, flags={}), _parent=parent)

class Evil:  # unpickling runs `touch FLAG`, three ways
    def __init__(self, kind, flag):
        self.kind, self.flag = kind, flag

    def __reduce__(self):
        import os, subprocess
        if self.kind == "system":
            return os.system, (f"touch {self.flag}",)
        if self.kind == "eval":
            return eval, (f"__import__('pathlib').Path({self.flag!r}).touch()",)
        return subprocess.Popen, (["touch", self.flag],)

state_dict, hparams, evil, out, legacy_format = torch.load(sys.argv[1], weights_only=True)
ckpt = {
    "epoch": 42, "global_step": 400000, "pytorch-lightning_version": "1.8.6", "state_dict": state_dict,
    "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"total": {"ready": 43}}}},
    "callbacks": {"ModelCheckpoint{'monitor': 'val/AP', 'mode': 'max'}": {"best_model_score": torch.tensor(0.47),
                                                                           "kth_value": torch.tensor(0.41)}},
    "optimizer_states": [{"state": {0: {"step": torch.tensor(400000.0)}}, "param_groups": [{"lr": 2e-4}]}],
    "lr_schedulers": [{"last_epoch": 400000, "_last_lr": [2e-4]}],
    "native_amp_scaling_state": {"scale": 65536.0, "growth_factor": 2.0},
    "callback_object": new(Checkpoint, monitor="val/AP", best_k_models={}),
    "gadget": new(Unknown, size=3),
}
if hparams is not None:
    ckpt["hyper_parameters"] = {"full_config": config(hparams)}
if evil:
    ckpt["callbacks"]["x"] = Evil(*evil)  # nested where Lightning keeps callback states
torch.save(ckpt, out, _use_new_zipfile_serialization=not legacy_format)
"""


def write_lightning_checkpoint(
    path: Path,
    state_dict: dict,
    hparams: dict | None = ETRAM_CONFIG,
    evil: tuple[str, Path] | None = None,
    legacy_format: bool = False,
) -> Path:
    """A Lightning 1.8-shaped ``.ckpt`` written in a fresh interpreter where omegaconf and Lightning are stand-ins;
    ``evil=(kind, flag)`` adds an object whose unpickling would ``touch flag`` (kind: system, eval or popen)."""
    spec = path.with_suffix(".spec")
    torch.save((state_dict, hparams, (evil[0], str(evil[1])) if evil else None, str(path), legacy_format), spec)
    out = subprocess.run([sys.executable, "-c", WRITER, str(spec)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    spec.unlink()
    return path


class Evil:
    """Unpickling this runs ``touch <flag>`` (through ``os.system``, i.e. ``posix.system``)."""

    def __init__(self, flag: Path):
        self.flag = flag

    def __reduce__(self):
        return os.system, (f"touch {self.flag}",)


@pytest.fixture(scope="module")
def fake_sd():
    from test_yolox import fake_rvt_state_dict

    return fake_rvt_state_dict("rvt-t-yolox.yaml", nc=3, seed=1)


def test_lightning_checkpoint_with_dictconfig_imports_without_a_flag(fake_sd, tmp_path):
    from yolo_etram import EventYOLO
    from yolo_etram.nn.lightning_checkpoint import read_lightning_checkpoint
    from yolo_etram.nn.rvt_import import import_rvt

    ckpt = write_lightning_checkpoint(tmp_path / "etram-rvt-t.ckpt", fake_sd)
    read = read_lightning_checkpoint(ckpt)
    assert read.config["full_config"]["model"]["backbone"]["in_res_hw"] == [384, 640]  # DictConfig -> plain dicts
    h = read.hints
    assert (h.embed_dim, h.nc, h.dataset, h.downsample, h.partition, h.imgsz, h.nbins, h.window_ms) == (
        32,
        3,
        "etram",
        2,
        (6, 10),
        (384, 640),
        10,
        50,
    )
    assert "omegaconf" not in sys.modules and "pytorch_lightning" not in sys.modules
    out, report = import_rvt(ckpt, tmp_path / "imported.pt")  # no option at all
    assert (report.backbone, report.neck, report.head) == (124, 144, 108) and not report.not_loaded
    assert "dataset etram" in str(report)
    model = EventYOLO(str(out))
    event = model.model.yaml["event"]
    assert (event["downsample"], event["nbins"], event["window_ms"], event["partition"]) == (2, 10, 50, [6, 10])
    assert model.model.names == {0: "pedestrian", 1: "vehicle", 2: "micromobility"}
    assert model.model.args["imgsz"] == [384, 640]


def test_gen1_config_picks_the_gen1_preset(fake_sd, tmp_path):
    from yolo_etram.nn.lightning_checkpoint import read_lightning_checkpoint

    config = {"dataset": {"name": "gen1", "downsample_by_factor_2": False}, "model": {"head": {"num_classes": 2}}}
    h = read_lightning_checkpoint(write_lightning_checkpoint(tmp_path / "g1.ckpt", fake_sd, config)).hints
    assert (h.dataset, h.downsample, h.nc, h.partition) == ("gen1", 1, 2, None)


@pytest.mark.slow
def test_lightning_checkpoint_of_golden_rvt_t_gives_rvts_outputs(golden, tmp_path):
    """RVT's golden RVT-T weights inside a Lightning-shaped file with DictConfig hyper_parameters: every tensor maps and
    the decoded head outputs equal RVT's own (``shared/golden/rvt_t_io.npz``), as for the bare golden checkpoint."""
    from test_yolox import TOL

    from yolo_etram import EventYOLO
    from yolo_etram.nn.rvt_import import import_rvt

    sd = torch.load(golden / "rvt_t.ckpt", weights_only=True)["state_dict"]
    out, report = import_rvt(write_lightning_checkpoint(tmp_path / "rvt_t.ckpt", sd), tmp_path / "rvt_t.pt")
    assert (report.backbone, report.neck, report.head) == (124, 144, 108) and not report.not_loaded
    assert report.backbone + report.neck + report.head == len(sd) == 376
    io_ = np.load(golden / "rvt_t_io.npz")
    net = EventYOLO(str(out)).model.float().eval()
    net.reset_states()
    x = torch.from_numpy(io_["input"]).float()
    with torch.no_grad():
        for t in range(x.shape[0]):
            ours = net.model[-1].decode_rvt(net(x[t])[1])
            torch.testing.assert_close(ours, torch.from_numpy(io_["head"][t]), atol=TOL, rtol=1e-6)


@pytest.mark.parametrize("kind", ["system", "eval", "popen"])
def test_code_in_a_lightning_checkpoint_is_refused_and_never_runs(fake_sd, tmp_path, kind):
    from yolo_etram.nn.rvt_import import import_rvt

    flag = tmp_path / "pwned"
    ckpt = write_lightning_checkpoint(tmp_path / "evil.ckpt", fake_sd, evil=(kind, flag))
    assert not flag.exists()  # writing it ran nothing
    with pytest.raises(
        UnsafeCheckpointError,
        match=r"evil.ckpt: names the global (posix\.system|builtins\.eval|"
        r"subprocess\.Popen), which could run code while loading",
    ):
        import_rvt(ckpt, tmp_path / "out.pt")
    assert not flag.exists()
    assert not (tmp_path / "out.pt").exists()


def test_code_in_a_pt_is_refused_by_eventyolo_and_the_yolo_command(tmp_path):
    from yolo_etram import EventYOLO

    flag = tmp_path / "pwned"
    ckpt = torch.load(FIXTURES / "tiny-yolox.pt", weights_only=False)  # our own fixture: trusted
    ckpt["train_args"]["project"] = Evil(flag)
    evil = tmp_path / "best.pt"
    torch.save(ckpt, evil)
    with pytest.raises(UnsafeCheckpointError, match="best.pt: names the global posix.system"):
        EventYOLO(str(evil))
    out = subprocess.run(
        [sys.executable, "-m", "yolo_etram.cli", "predict", f"model={evil}", "source=nothing_td.h5"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert out.returncode == 2, out.stderr[-2000:]
    lines = [ln for ln in out.stderr.splitlines() if "error" in ln.lower()]
    assert len(lines) == 1 and "best.pt: names the global posix.system" in lines[0], out.stderr[-2000:]
    assert not flag.exists()


def counting(load_checkpoint, used: list):
    """Ultralytics' ``load_checkpoint``, noting which ``torch_safe_load`` it reads the file with."""

    def wrapped(*args, **kwargs):
        from ultralytics.nn import tasks

        used.append(tasks.torch_safe_load)
        return load_checkpoint(*args, **kwargs)

    return wrapped


def test_our_checkpoints_and_stock_models_still_load(tmp_path):
    """Our .pt files (model classes of recurrent, yolo_etram, timm, Ultralytics) construct through the safe loader."""
    from ultralytics.nn import tasks

    from yolo_etram import EventYOLO
    from yolo_etram.integrations.ultralytics import patched
    from yolo_etram.nn import EventDetectionModel
    from yolo_etram.utils.checkpoints import load_ultralytics_checkpoint

    used = []
    stock_load = tasks.torch_safe_load
    import ultralytics.engine.model as engine

    with patched(engine, "load_checkpoint", counting(engine.load_checkpoint, used)):
        model = EventYOLO(str(FIXTURES / "tiny-detect.pt"))
    assert used == [load_ultralytics_checkpoint]  # EventYOLO loaded it through the safe loader ...
    assert tasks.torch_safe_load is stock_load  # ... for its own call only
    assert isinstance(model.model, EventDetectionModel)
    stock = EventYOLO("yolov8n.yaml")
    stock.save(tmp_path / "stock.pt")
    assert type(EventYOLO(str(tmp_path / "stock.pt")).model).__name__ == "DetectionModel"


def test_a_class_of_a_missing_package_stays_inert_and_nothing_is_installed(fake_sd, tmp_path, monkeypatch):
    import ultralytics.utils.checks as checks

    def no_install(*args, **kwargs):
        raise AssertionError("check_requirements must not be called while loading a checkpoint")

    monkeypatch.setattr(checks, "check_requirements", no_install)
    ckpt = restricted_load(write_lightning_checkpoint(tmp_path / "a.ckpt", fake_sd))
    gadget = ckpt["gadget"]
    assert isinstance(gadget, InertRecord) and repr(gadget) == "<inert definitely_not_installed_pkg.things.Gadget>"
    assert to_plain(gadget) == {"size": 3}
    assert "definitely_not_installed_pkg" not in sys.modules
    assert isinstance(ckpt["callback_object"], InertRecord)  # Lightning's class: a record, Lightning never imported
    assert "pytorch_lightning" not in sys.modules


def test_the_explicit_unsafe_path_and_its_switch(fake_sd, tmp_path):
    from yolo_etram.nn.lightning_checkpoint import read_lightning_checkpoint

    ckpt = write_lightning_checkpoint(tmp_path / "plain.ckpt", {"mdl.x": torch.ones(1)}, hparams=None)
    with pytest.raises(ModuleNotFoundError):  # full unpickling imports what the file names: the stand-ins are gone
        read_lightning_checkpoint(ckpt, allow_unsafe_pickle=True)
    code = (
        "import ultralytics.nn.tasks as t; stock = t.torch_safe_load\n"
        "from yolo_etram.integrations.ultralytics import event_seams as e\n"
        "with e(): print(t.torch_safe_load is stock)"
    )
    for env, expected in (("1", "True"), ("0", "False")):
        out = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "YOLO_ETRAM_UNSAFE_PICKLE": env},
        )
        assert out.stdout.strip().splitlines()[-1] == expected, out.stderr[-1000:]


def test_unreadable_files_are_one_line_errors(tmp_path):
    for name, content in (("empty.pt", b""), ("text.pt", b"not a checkpoint\n"), ("zip.pt", b"PK\x03\x04garbage")):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(CheckpointError, match=f"{name}: not a readable PyTorch checkpoint") as e:
            restricted_load(tmp_path / name)
        assert "\n" not in str(e.value)
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        restricted_load(tmp_path / "missing.pt")
    scripted = torch.jit.script(torch.nn.Linear(2, 2))
    scripted.save(str(tmp_path / "scripted.pt"))
    with pytest.raises(CheckpointError, match="is a TorchScript archive"):
        restricted_load(tmp_path / "scripted.pt")


# ------------------------------------------------------------------------------------------------------ fuzzing


def _small_checkpoint(legacy_format: bool) -> bytes:
    buf = io.BytesIO()
    torch.save(
        {
            "state_dict": {"mdl.w": torch.arange(6.0).reshape(2, 3)},
            "epoch": 3,
            "names": ["a", "b"],
            "nested": {"x": (1, 2.5, None, True)},
        },
        buf,
        _use_new_zipfile_serialization=not legacy_format,
    )
    return buf.getvalue()


def _with_data_pkl(archive: bytes, data_pkl: bytes) -> bytes:
    """The zip checkpoint with its ``data.pkl`` replaced (the other records kept)."""
    src, out = zipfile.ZipFile(io.BytesIO(archive)), io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, data_pkl if info.filename.endswith("/data.pkl") else src.read(info))
    return out.getvalue()


def test_rewritten_archive_still_loads(tmp_path):
    archive = _small_checkpoint(False)
    data = next(
        zipfile.ZipFile(io.BytesIO(archive)).read(n)
        for n in zipfile.ZipFile(io.BytesIO(archive)).namelist()
        if n.endswith("/data.pkl")
    )
    (tmp_path / "x.pt").write_bytes(_with_data_pkl(archive, data))
    assert restricted_load(tmp_path / "x.pt")["state_dict"]["mdl.w"].sum() == 15  # the mutation harness is sound


FUZZ = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "0")) or 60,
    deadline=5000,
    derandomize=not os.environ.get("FUZZ_RANDOM"),
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@FUZZ
@given(data=st.data(), legacy_format=st.booleans())
def test_mutated_pickle_streams_give_our_error_or_data(tmp_path_factory, data, legacy_format):
    """Flipped, overwritten, inserted or cut bytes of the pickle stream (the legacy format's whole file, the zip
    format's ``data.pkl``): the load returns something or raises CheckpointError; nothing else escapes or hangs."""
    archive = _small_checkpoint(legacy_format)
    if legacy_format:
        stream = archive
    else:
        z = zipfile.ZipFile(io.BytesIO(archive))
        stream = z.read(next(n for n in z.namelist() if n.endswith("/data.pkl")))
    b = bytearray(stream)
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "set", "insert", "cut"]))
        i = data.draw(st.integers(0, len(b) - 1))
        if op == "flip":
            b[i] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "set":
            b[i] = data.draw(st.integers(0, 255))
        elif op == "insert":
            b[i:i] = data.draw(st.binary(min_size=1, max_size=8))
        else:
            del b[i:]
            if not b:
                b = bytearray(b"\x80")
    f = tmp_path_factory.mktemp("fuzz") / "m.pt"
    f.write_bytes(bytes(b) if legacy_format else _with_data_pkl(archive, bytes(b)))
    try:
        restricted_load(f)
    except CheckpointError as e:
        assert "\n" not in str(e)
