"""The Ultralytics coupling in one place: every private name and every swap listed in
``yolo_etram/integrations/ultralytics.py`` exists in the installed Ultralytics, the source texts the swaps rely on are
still there, no private Ultralytics name is used without a row in that table, and the swaps are scoped to our calls."""

from __future__ import annotations

import inspect
import re
from importlib.metadata import version
from pathlib import Path

import pytest

from yolo_etram.integrations import ultralytics as integ

REPO = Path(__file__).resolve().parents[1]
WHERE = "see the table in yolo_etram/integrations/ultralytics.py"
# Ultralytics classes we subclass or call into: their private members are what "private API" means here.
ULTRALYTICS_OWNERS = (
    "ultralytics.nn.tasks",
    "ultralytics.nn.tasks:BaseModel",
    "ultralytics.nn.tasks:DetectionModel",
    "ultralytics.nn.modules.head:Detect",
    "ultralytics.engine.model:Model",
    "ultralytics.engine.trainer:BaseTrainer",
    "ultralytics.models.yolo.detect:DetectionTrainer",
    "ultralytics.engine.validator:BaseValidator",
    "ultralytics.models.yolo.detect.val:DetectionValidator",
    "ultralytics.engine.predictor:BasePredictor",
    "ultralytics.models.yolo.detect:DetectionPredictor",
    "ultralytics.engine.exporter:Exporter",
    "ultralytics.nn.autobackend:AutoBackend",
    "ultralytics.nn.backends.base:BaseBackend",
)


@pytest.mark.parametrize("owner,name", [*integ.PRIVATE_API, *integ.SWAPS, *integ.EXTENDED], ids=lambda v: str(v))
def test_every_listed_name_exists_in_the_installed_ultralytics(owner, name):
    try:
        obj = integ.resolve(owner)
    except (ImportError, AttributeError) as e:
        pytest.fail(f"Ultralytics {version('ultralytics')}: {owner} is gone ({e}); {WHERE}")
    assert hasattr(obj, name), f"Ultralytics {version('ultralytics')}: {owner}.{name} is gone; {WHERE}"


@pytest.mark.parametrize("owner,func,text", integ.SOURCE_CONTRACTS, ids=lambda v: str(v))
def test_the_swaps_still_reach_what_they_replace(owner, func, text):
    fn = getattr(integ.resolve(owner), func)
    # Ultralytics' decorators (try_export) keep the decorated function in their closure, without functools.wraps
    inner = [c.cell_contents for c in getattr(fn, "__closure__", None) or () if inspect.isfunction(c.cell_contents)]
    fn = next((f for f in inner if f.__name__ == func), inspect.unwrap(fn))
    source = inspect.getsource(fn)
    assert text in source, (
        f"Ultralytics {version('ultralytics')}: {owner}.{func} no longer uses '{text}', which a swap of ours relies "
        f"on; {WHERE}"
    )


def test_the_supported_version_is_the_pinned_and_installed_one():
    pins = dict(
        line.split("#")[0].strip().split("==")
        for line in (REPO / "requirements.txt").read_text().splitlines()
        if "==" in line.split("#")[0]
    )
    assert pins["ultralytics"] == integ.SUPPORTED_ULTRALYTICS, "requirements.txt and SUPPORTED_ULTRALYTICS disagree"
    assert version("ultralytics") == integ.SUPPORTED_ULTRALYTICS, (
        f"installed Ultralytics is not the supported one; {WHERE}"
    )


def private_members() -> dict[str, str]:
    """Private (single underscore) names of the Ultralytics objects we build on -> the owner that has it."""
    out = {}
    for owner in ULTRALYTICS_OWNERS:
        for name in dir(integ.resolve(owner)):
            if re.fullmatch(r"_[a-z]\w*", name) and not name.startswith("__"):
                out.setdefault(name, owner)
    return out


def test_no_private_ultralytics_name_is_used_without_a_row():
    private = private_members()
    assert "_setup_train" in private and "_predict_once" in private  # the scan finds private names at all
    listed = {name for _, name in (*integ.PRIVATE_API, *integ.SWAPS)}
    used = {}
    for path in (REPO / "yolo_etram").rglob("*.py"):
        text = path.read_text()
        if not re.search(r"^\s*(from|import) ultralytics", text, re.M):  # a file that never touches Ultralytics
            continue
        for name in set(re.findall(r"(?:\.|\bdef |\bimport |, )(_[a-z]\w*)\b", text)):
            if name in private:
                used.setdefault(name, path.relative_to(REPO))
    unlisted = {n: f"{used[n]} (Ultralytics: {private[n]})" for n in used if n not in listed}
    ours_only = {"_callbacks"}  # the constructor argument's name, passed through by keyword
    unlisted = {n: v for n, v in unlisted.items() if n not in ours_only}
    assert not unlisted, f"private Ultralytics names used without a row: {unlisted}; add them to {WHERE}"


def test_swaps_are_scoped_to_our_calls():
    """Building and using an EventYOLO leaves Ultralytics' own loading for stock code in the same process."""
    import ultralytics.nn.tasks as tasks
    from ultralytics.nn.backends import OpenVINOBackend

    from yolo_etram import EventYOLO
    from yolo_etram.utils.checkpoints import load_ultralytics_checkpoint

    stock_load, stock_ov = tasks.torch_safe_load, OpenVINOBackend.load_model
    EventYOLO("rvt-t.yaml")
    assert tasks.torch_safe_load is stock_load and OpenVINOBackend.load_model is stock_ov
    with integ.event_seams():
        assert tasks.torch_safe_load is load_ultralytics_checkpoint
        with integ.event_seams():  # nested calls (EventYOLO.train -> EventTrainer.train) keep ours
            assert tasks.torch_safe_load is load_ultralytics_checkpoint
        assert tasks.torch_safe_load is load_ultralytics_checkpoint
        assert getattr(OpenVINOBackend.load_model, "stateful_aware", False)
    assert tasks.torch_safe_load is stock_load and OpenVINOBackend.load_model is stock_ov


def test_our_train_arguments_join_ultralytics_defaults_at_their_defaults():
    """The event-domain augmentation keys pass Ultralytics' argument check, default off, and replace nothing."""
    from ultralytics.cfg import get_cfg
    from ultralytics.utils import DEFAULT_CFG, DEFAULT_CFG_DICT

    before = {k: DEFAULT_CFG_DICT[k] for k in ("fliplr", "epochs", "batch")}
    from yolo_etram.data.event_augment import TRAIN_ARGS

    args = integ.register_train_args(TRAIN_ARGS)
    assert {"suppress_polarity", "invert_polarity", "event_drop", "noise_rate", "hot_pixels"} <= set(args)
    assert all(DEFAULT_CFG_DICT[k] == getattr(DEFAULT_CFG, k) == v for k, v in args.items())
    assert not any(args[k] for k in ("suppress_polarity", "invert_polarity", "event_drop", "noise_rate", "hot_pixels"))
    assert get_cfg(DEFAULT_CFG, {"suppress_polarity": 0.3}).suppress_polarity == 0.3
    assert {k: DEFAULT_CFG_DICT[k] for k in before} == before
    assert integ.register_train_args(TRAIN_ARGS) == args  # idempotent


def test_wrap_backend_calls_wraps_one_object_only():
    class Backend:
        def forward(self, x):
            return x + 1

    a, b = Backend(), Backend()
    integ.wrap_backend_calls(a, forward=lambda forward, x: 10 * forward(x))
    assert a.forward(1) == 20 and b.forward(1) == 2 and Backend.forward(b, 1) == 2
