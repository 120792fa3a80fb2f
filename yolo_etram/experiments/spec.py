"""An ablation spec: variants (train arguments or model YAMLs) x seeds, on one data YAML, with the hypothesis it tests.

.. code-block:: yaml

    data: path/to/data.yaml        # one data YAML for every run (relative: to the spec's folder, then the cwd)
    seeds: [0, 1, 2]
    train: {model: rvt-t.yaml, epochs: 3, batch: 2, imgsz: 320}   # common train arguments
    baseline: base
    variants:                                                   # name -> the train arguments that differ
      base: {}
      noflip: {fliplr: 0.0}                                     # (Ultralytics' default fliplr is 0.5)
      tbptt10: {data_keys: {seq_len: 10}}                       # data-YAML event keys that differ
    hypothesis: "per-sequence horizontal flips raise small-object AP"
    name: flips                    # optional: the ablation's name (default: the spec file's stem)

Every key of ``train`` and of a variant is an Ultralytics train argument or ``model``; ``data``, ``seed``,
``project``, ``name``, ``exist_ok`` and ``resume`` belong to the ablation and are refused there. A variant's
``data_keys`` changes event keys of the data YAML for that variant (:data:`DATA_KEYS`: clip length, sampling, the
size-aware loss, the memoryless ablation, ...): the ablation writes the variant's data YAML beside its runs. Anything
else is a one-line error naming the spec file and the key, and so is a variant that changes nothing (e.g.
``fliplr: 0.5``, which is already Ultralytics' default).

Usage:
    >>> spec = AblationSpec.load("small_objects.yaml")  # cfg/ablations/, by name
    >>> [run.name for run in spec.runs()]
    ['base-seed0', 'noflip-seed0', 'tbptt10-seed0', 'base-seed1', ...]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from yolo_etram.utils.errors import ExperimentError

RESERVED = ("data", "seed", "project", "name", "exist_ok", "resume")
"""Train arguments that the ablation itself sets for every run."""
DATA_KEYS = (
    "seq_len",
    "sampling",
    "mixed_random_fraction",
    "input",
    "memory",
    "size_aware",
    "groups",
    "eval",
    "representation",
)
"""Data-YAML event keys a variant may change (``data_keys``): the same recordings and labels, seen another way
(``representation``: another prepared folder of the same sequences; synthetic data prepares it on first use)."""


@dataclass(frozen=True)
class Run:
    """One training run of an ablation: a variant at a seed, with its full train arguments."""

    variant: str
    seed: int
    args: dict[str, Any]

    @property
    def name(self) -> str:
        return f"{self.variant}-seed{self.seed}"


def variant_data_yaml(out: Path, variant: str) -> Path:
    """Where the ablation writes the data YAML of a variant with ``data_keys``."""
    return out / "data" / f"{variant}.yaml"


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
    data_keys: dict[str, dict[str, Any]] = field(default_factory=dict)

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
            fail("variants must map names to the train arguments that differ (e.g. {base: {}, noflip: {fliplr: 0.0}})")
        variants = {str(k): dict(v or {}) for k, v in variants.items()}
        data_keys = {k: v.pop("data_keys") for k, v in variants.items() if "data_keys" in v}
        for k, keys in data_keys.items():
            if not isinstance(keys, dict) or not keys:
                fail(f"variants.{k}.data_keys must map data-YAML keys to values, e.g. {{seq_len: 10}}")
            if unknown := sorted(set(keys) - set(DATA_KEYS)):
                fail(f"variants.{k}.data_keys: {unknown} cannot vary in an ablation; these can: {list(DATA_KEYS)}")
        baseline = str(raw.get("baseline", next(iter(variants))))
        if baseline not in variants:
            fail(f"baseline '{baseline}' is not one of the variants {list(variants)}")
        train = dict(raw.get("train") or {})
        for where, args in (("train", train), *((f"variants.{k}", v) for k, v in variants.items())):
            check_train_args(args, f"{path}: {where}")
        if "model" not in train and not all("model" in v for v in variants.values()):
            fail("no model: give train.model (or a model in every variant)")
        for name, overrides in variants.items():
            if name != baseline and name not in data_keys and (same := no_op(train, overrides, variants[baseline])):
                fail(
                    f"variant '{name}' trains exactly as the baseline: {same} is already in effect (the trainer's "
                    "default); change it to another value"
                )
        return cls(
            path=path,
            data=str(raw["data"]),
            seeds=tuple(seeds),
            train=train,
            baseline=baseline,
            variants=variants,
            hypothesis=str(raw.get("hypothesis") or ""),
            name=str(raw.get("name") or path.stem),
            data_keys=data_keys,
        )

    def data_path(self) -> str:
        """The data YAML: relative to the spec's folder if it is there, else as given (cwd, bare names of ours)."""
        p = Path(self.data)
        beside = self.path.parent / p
        return str(beside.resolve()) if not p.is_absolute() and beside.exists() else self.data

    def runs(self, out: Path | None = None) -> list[Run]:
        """Every run, seed by seed (so an interrupted ablation has complete pairs for the seeds it finished); a variant
        with ``data_keys`` trains on its data YAML in ``out`` (:meth:`write_variant_data`)."""
        return [
            Run(variant, seed, {**self.train, **overrides, "seed": seed, "data": self.run_data(variant, out)})
            for seed in self.seeds
            for variant, overrides in self.variants.items()
        ]

    def run_data(self, variant: str, out: Path | None) -> str:
        if variant not in self.data_keys:
            return self.data_path()
        if out is None:
            raise ExperimentError(f"{self.path}: variant {variant} changes data keys: give the ablation's folder")
        return str(variant_data_yaml(out, variant))

    def write_variant_data(self, out: Path) -> None:
        """The data YAML of each variant with ``data_keys``: the spec's data YAML (its ``path`` made absolute, so the
        copy finds the same prepared sequences), with the variant's keys on top."""
        from yolo_etram.data.data_yaml import read_data_yaml, resolve_root

        if not self.data_keys:
            return
        base, yaml_file = read_data_yaml(self.data_path())
        base["path"] = str(resolve_root(base.get("path", "."), yaml_file))
        for variant, keys in self.data_keys.items():
            path = variant_data_yaml(out, variant)
            path.parent.mkdir(parents=True, exist_ok=True)
            data = {**base, **keys}
            if "representation" in keys:  # its channels (and downsampling) are read from the prepared data
                data.pop("channels", None)
            path.write_text(yaml.safe_dump(data, sort_keys=False))


def no_op(train: dict, overrides: dict, baseline: dict) -> str | None:
    """``key=value`` of a variant whose every override is already what the baseline trains with (our trainer's event
    defaults over Ultralytics' defaults), or None when the variant changes something."""
    from ultralytics.cfg import DEFAULT_CFG_DICT

    from yolo_etram.train import EVENT_TRAIN_DEFAULTS

    effective = {**DEFAULT_CFG_DICT, **EVENT_TRAIN_DEFAULTS, **train, **baseline}
    if not overrides or any(effective.get(k) != v for k, v in overrides.items()):
        return None
    return ", ".join(f"{k}={v}" for k, v in overrides.items())


def check_train_args(args: dict, where: str) -> None:
    """Refuse keys that are not Ultralytics train arguments (or ``model``), and the keys the ablation sets itself."""
    from ultralytics.cfg import DEFAULT_CFG_DICT

    from yolo_etram.data.train_args import TRAIN_ARGS
    from yolo_etram.integrations.ultralytics import register_train_args

    register_train_args(TRAIN_ARGS)  # ours (data/train_args.py) pass Ultralytics' argument check
    if reserved := sorted(k for k in args if k in RESERVED):
        raise ExperimentError(f"{where}: {reserved} are set by the ablation for every run; remove them")
    if unknown := sorted(k for k in args if k not in DEFAULT_CFG_DICT):
        raise ExperimentError(f"{where}: {unknown} are not Ultralytics train arguments")
