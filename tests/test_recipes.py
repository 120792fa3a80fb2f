"""RVT's and eTraM's training recipes (``cfg/recipes/*.yaml``): each is a valid Ultralytics config of our train
arguments, names our model and data YAMLs, and trains (one step here, on tiny data, at the recipe's settings)."""

from pathlib import Path

import pytest
import yaml
from ultralytics.cfg import get_cfg
from ultralytics.utils import DEFAULT_CFG

import yolo_etram.train  # noqa: F401  (registers max_steps and the event train arguments)
from yolo_etram import EventYOLO
from yolo_etram.utils.paths import find_cfg

RECIPES = sorted((Path(__file__).resolve().parents[1] / "cfg" / "recipes").glob("*.yaml"))


def test_every_recipe_is_there():
    assert {r.stem for r in RECIPES} == {"rvt-gen1", "rvt-gen4", "etram-3cls", "etram-8cls"}


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_recipe_parses_and_trains_one_step(recipe, tiny_events, tmp_path):
    spec = yaml.safe_load(recipe.read_text())
    args = get_cfg(DEFAULT_CFG, spec)  # Ultralytics' own check of every key (ours registered) and type
    assert find_cfg(spec["model"]).is_file() and find_cfg(spec["data"]).is_file()
    assert args.optimizer == "AdamW" and args.weight_decay == 0.0 and args.iou == 0.45
    assert (args.max_steps > 0) != (spec.get("epochs") is not None)  # RVT's recipes count steps, eTraM's epochs

    steps = []
    model = EventYOLO(spec["model"])
    model.add_callback("on_train_batch_end", lambda t: steps.append(t.epoch))
    # the recipe as given, on tiny data: two stream slots (the tiny set has two training sequences), 128 pixels
    model.train(
        cfg=str(recipe), data=str(tiny_events), max_steps=1, batch=2, imgsz=128, workers=0, val=False, plots=False,
        project=str(tmp_path), name=recipe.stem,
    )  # fmt: skip
    assert len(steps) == 1 and model.trainer.args.lr0 == spec["lr0"] and model.trainer.args.lrf == spec["lrf"]
