"""An ablation spec: variants (train arguments or model YAMLs) x seeds, on one data YAML, with the hypothesis it tests.

.. code-block:: yaml

    data: path/to/data.yaml        # one data YAML for every run (relative: to the spec's folder, then the cwd)
    seeds: [0, 1, 2]
    train: {model: rvt-t.yaml, epochs: 3, batch: 2, imgsz: 320}   # common train arguments
    baseline: base
    variants: {base: {}, hflip: {fliplr: 0.5}}                  # name -> the train arguments that differ
    hypothesis: "horizontal flips raise small-object AP"
    name: hflip                    # optional: the ablation's name (default: the spec file's stem)

Every key of ``train`` and of a variant is an Ultralytics train argument or ``model``; ``data``, ``seed``,
``project``, ``name``, ``exist_ok`` and ``resume`` belong to the ablation and are refused there. Anything else is a
one-line error naming the spec file and the key.

Usage:
    >>> spec = AblationSpec.load("cfg/ablations/hflip.yaml")
    >>> [run.name for run in spec.runs()]
    ['base-seed0', 'hflip-seed0', 'base-seed1', ...]
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from yolo_etram.utils.errors import ExperimentError

RESERVED = ("data", "seed", "project", "name", "exist_ok", "resume")
"""Train arguments that the ablation itself sets for every run."""


@dataclass(frozen=True)
class Run:
    """One training run of an ablation: a variant at a seed, with its full train arguments."""

    variant: str
    seed: int
    args: dict[str, Any]

    @property
    def name(self) -> str:
        return f"{self.variant}-seed{self.seed}"


@dataclass(frozen=True)
class AblationSpec:
    """A parsed, checked ablation spec (see the module docstring)."""

    path: Path
    data: str
    seeds: tuple[int, ...]
    train: dict[str, Any]
    baseline: str
    variants: dict[str, dict[str, Any]]
    hypothesis: str = ""
    name: str = ""

    @classmethod
    def load(cls, path: str | Path) -> AblationSpec:
        from yolo_etram.utils.paths import find_cfg

        path = find_cfg(path, "ablations") or Path(path)  # bare names of ours (small_objects.yaml) from anywhere
        try:
            raw = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as e:
            raise ExperimentError(f"{path}: unreadable ablation spec ({e})") from e
        if not isinstance(raw, dict):
            raise ExperimentError(f"{path}: an ablation spec is a YAML mapping (data, seeds, train, variants, ...)")
        return cls.from_dict(raw, path)

    @classmethod
    def from_dict(cls, raw: dict, path: Path) -> AblationSpec:
        def fail(msg: str):
            raise ExperimentError(f"{path}: {msg}")

        known = {"data", "seeds", "train", "baseline", "variants", "hypothesis", "name"}
        if unknown := sorted(set(raw) - known):
            fail(f"unknown key(s) {unknown}; a spec has {sorted(known)}")
        for key in ("data", "seeds", "variants"):
            if key not in raw:
                fail(f"'{key}' is missing")
        seeds = raw["seeds"]
        if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds):
            fail(f"seeds must be a list of integers, got {seeds!r}")
        if len(set(seeds)) != len(seeds):
            fail(f"seeds repeat: {seeds}")
        variants = raw["variants"]
        if not isinstance(variants, dict) or not variants:
            fail("variants must map names to the train arguments that differ (e.g. {base: {}, hflip: {fliplr: 0.5}})")
        variants = {str(k): dict(v or {}) for k, v in variants.items()}
        baseline = str(raw.get("baseline", next(iter(variants))))
        if baseline not in variants:
            fail(f"baseline '{baseline}' is not one of the variants {list(variants)}")
        train = dict(raw.get("train") or {})
        for where, args in (("train", train), *((f"variants.{k}", v) for k, v in variants.items())):
            check_train_args(args, f"{path}: {where}")
        if "model" not in train and not all("model" in v for v in variants.values()):
            fail("no model: give train.model (or a model in every variant)")
        return cls(
            path=path,
            data=str(raw["data"]),
            seeds=tuple(seeds),
            train=train,
            baseline=baseline,
            variants=variants,
            hypothesis=str(raw.get("hypothesis") or ""),
            name=str(raw.get("name") or path.stem),
        )

    def data_path(self) -> str:
        """The data YAML: relative to the spec's folder if it is there, else as given (cwd, bare names of ours)."""
        p = Path(self.data)
        beside = self.path.parent / p
        return str(beside.resolve()) if not p.is_absolute() and beside.exists() else self.data

    def runs(self) -> list[Run]:
        """Every run, seed by seed (so an interrupted ablation has complete pairs for the seeds it finished)."""
        return [
            Run(variant, seed, {**self.train, **overrides, "seed": seed, "data": self.data_path()})
            for seed in self.seeds
            for variant, overrides in self.variants.items()
        ]


def check_train_args(args: dict, where: str) -> None:
    """Refuse keys that are not Ultralytics train arguments (or ``model``), and the keys the ablation sets itself."""
    from ultralytics.cfg import DEFAULT_CFG_DICT

    if reserved := sorted(k for k in args if k in RESERVED):
        raise ExperimentError(f"{where}: {reserved} are set by the ablation for every run; remove them")
    if unknown := sorted(k for k in args if k not in DEFAULT_CFG_DICT):
        raise ExperimentError(f"{where}: {unknown} are not Ultralytics train arguments")
