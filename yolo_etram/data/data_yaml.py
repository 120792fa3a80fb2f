"""Event data YAMLs: Ultralytics data YAMLs plus event keys, with defaults and the build-on-first-use synthetic set.

Event keys (all optional): ``representation`` (folder under ``event_representations_v2``, needed only when a sequence
holds several; its event settings come from the data, see :mod:`.event_settings`), ``downsample`` (checked against the
data),
``seq_len`` (windows per clip, the truncated-BPTT length), ``sampling`` (``stream``, ``random`` or ``mixed``),
``mixed_random_fraction``, ``partition`` (attention partition for this input size), ``eval`` (Prophesee filter:
``skip_ts_us``, ``min_box_diag``, ``min_box_side``), ``groups`` (name -> class ids, for grouped AP), ``input``
(``histogram``, the stacked histogram as stored, or ``event_frame``: its time bins summed per polarity, 2 channels, the
eTraM paper's frame baseline input), ``memory`` (false: reset a recurrent model's state at every window, the
memoryless ablation), ``size_aware`` (``{a, tau}``: the size-aware loss, see :mod:`yolo_etram.nn.size_aware_loss`),
``twin`` (the same recordings prepared at another resolution, read in lockstep by multi-resolution training and a
full-resolution teacher, see :mod:`.twin`) and ``synth`` (how to build the data with our generator when ``path``
does not exist). A YAML with any of these keys is event data (:func:`is_event_data`).

Usage:
    >>> from yolo_etram.data.data_yaml import load_event_data
    >>> data = load_event_data("etram-synth.yaml")  # builds datasets/etram_synth on first use
"""

from __future__ import annotations

from pathlib import Path

import yaml

from yolo_etram.utils.errors import EventDataError, one_line

from .event_settings import EventSettings
from .representations import check_downsample
from .sampler import Sampling

EVENT_DEFAULTS = {
    "channels": None,
    "representation": None,
    "downsample": None,
    "seq_len": 5,
    "sampling": "stream",
    "mixed_random_fraction": 0.5,
    "partition": None,
    "eval": {"skip_ts_us": 500_000, "min_box_diag": 30, "min_box_side": 10},
    "groups": {},
    "input": "histogram",
    "memory": True,
    "size_aware": None,
    "twin": None,
}
EVENT_KEYS = (*(k for k in EVENT_DEFAULTS if k != "channels"), "synth")
"""The keys that make a data YAML event data (``channels`` alone does not: stock image YAMLs may set it)."""
INPUTS = ("histogram", "event_frame")


def read_data_yaml(data: str | Path | dict) -> tuple[dict, Path | None]:
    """The YAML as a dict and its file (None for a dict), resolving our bare names (``etram.yaml``)."""
    if isinstance(data, dict):
        return dict(data), None
    from yolo_etram.utils.paths import find_cfg

    path = find_cfg(data, "datasets")
    if path is None:
        raise EventDataError(f"data YAML '{data}' not found (neither a path nor one of yolo_etram's cfg/datasets)")
    try:
        d = yaml.safe_load(Path(path).read_text()) or {}
    except (yaml.YAMLError, OSError, UnicodeDecodeError) as e:  # OSError: a folder or an unreadable file
        raise EventDataError(f"{path}: not a readable YAML file ({one_line(e)}); give a data YAML") from e
    if not isinstance(d, dict):
        raise EventDataError(
            f"{path}: a data YAML must be a mapping (path, train, val, names, ...), not a {type(d).__name__}"
        )
    return d, Path(path)


def resolve_root(path: str | Path, yaml_file: Path | None) -> Path:
    """Where a data YAML's ``path`` points: absolute as is; relative: the working directory if it exists there, else
    Ultralytics' ``datasets_dir`` (where stock YAMLs put their data)."""
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        return p.resolve()
    from ultralytics.utils import DATASETS_DIR

    return (Path(DATASETS_DIR) / p).resolve()


def build_synthetic(root: Path, spec: dict, twin: Path | None = None) -> None:
    """Synthesize raw recordings next to ``root`` (``<root>_raw``, or ``spec["raw"]`` beside ``root``) and prepare them
    into ``root`` at ``spec["downsample"]`` (default 1), and into ``twin`` at full resolution when given."""
    from .synth import SynthConfig, make_synthetic_dataset

    spec = dict(spec)
    splits = spec.pop("splits", {"train": 4, "val": 1, "test": 1})
    raw = root.parent / spec.pop("raw") if spec.get("raw") else None
    downsample = int(spec.pop("downsample", 1))
    make_synthetic_dataset(root, splits, SynthConfig(**spec), raw=raw, downsample=downsample)
    if twin is not None:
        make_synthetic_dataset(twin, splits, SynthConfig(**spec), raw=raw or root.with_name(root.name + "_raw"))


def add_synthetic_representation(root: Path, name: str, src) -> None:
    """Synthetic data names a representation it was not prepared with: prepare it (beside the others) from the
    recordings the data was built from (``<root>_raw``), as the data itself is built on first use."""
    from .prepare import PrepareConfig, prepare_dataset
    from .prepared import REPR_ROOT, list_sequences

    seqs = [s for split in ("train", "val", "test") for s in list_sequences(root / split)]
    raw = root.with_name(root.name + "_raw")
    if not seqs or all((s / REPR_ROOT / name).is_dir() for s in seqs) or not raw.is_dir():
        return
    settings = EventSettings.from_folder_name(name)
    if settings is None:
        raise EventDataError(
            f"{src}: representation '{name}' is no folder name prepare writes (e.g. vtei_dt=50_nbins=5)"
        )
    cfg = PrepareConfig(
        kind="etram",
        window_ms=settings.window_ms,
        nbins=settings.nbins,
        cutoff=settings.cutoff,
        downsample=1,
        representation=settings.representation,
        window_events=settings.window_events,
        step_ms=settings.step_ms,
    )
    prepare_dataset(raw, root, cfg, workers=2, progress=False)


def load_event_data(data: str | Path | dict, split: str | None = None) -> dict:
    """Load and check an event data YAML: absolute split paths, class names, event keys with defaults.

    Raises :class:`EventDataError` with the file and the problem when something does not fit."""
    d, yaml_file = read_data_yaml(data)
    src = yaml_file or "data dict"
    if "names" not in d and "nc" not in d:
        raise EventDataError(f"{src}: needs 'names' (or 'nc')")
    names = d.get("names") or {i: f"class{i}" for i in range(int(d["nc"]))}
    if isinstance(names, (list, tuple)):
        names = dict(enumerate(names))
    d["names"] = {int(k): str(v) for k, v in names.items()}
    d["nc"] = len(d["names"])
    channels_given = d.get("channels") is not None
    for key, value in EVENT_DEFAULTS.items():
        if isinstance(value, dict):
            d[key] = {**value, **(d.get(key) or {})}
        elif d.get(key) is None:
            d[key] = value
    if d["sampling"] not in {m.value for m in Sampling}:
        raise EventDataError(f"{src}: sampling '{d['sampling']}' is not one of {', '.join(m.value for m in Sampling)}")
    if d["downsample"] is not None:
        try:
            d["downsample"] = check_downsample(d["downsample"], f"{src}: downsample")
        except ValueError as e:
            raise EventDataError(str(e)) from None
    if d["input"] not in INPUTS:
        raise EventDataError(f"{src}: input '{d['input']}' is not one of {', '.join(INPUTS)}")
    root = resolve_root(d.get("path", "."), yaml_file)
    twin = resolve_root(d["twin"], yaml_file) if d.get("twin") else None
    if d.get("synth") and not (root.exists() and (twin is None or twin.exists())):
        build_synthetic(root, d["synth"], twin)
    if d.get("synth") and d.get("representation"):
        add_synthetic_representation(root, d["representation"], src)
    d["path"] = str(root)
    for s in ("train", "val", "test"):
        if d.get(s):
            p = Path(d[s])
            d[s] = str(p if p.is_absolute() else root / p)
    needed = [split] if split else ["train", "val"]
    for s in needed:
        if not d.get(s):
            raise EventDataError(f"{src}: no '{s}' split")
        if not Path(d[s]).is_dir():
            raise EventDataError(
                f"{src}: {s} folder {d[s]} does not exist (prepare the data with `etram-yolo prepare`)"
            )
    settings = check_channels(d, needed, src, channels_given)
    if settings is not None:
        d["event_settings"] = settings.to_dict()
        if d["input"] == "event_frame" and settings.polarities != 2:
            raise EventDataError(
                f"{src}: input event_frame sums the time bins of each polarity, but {settings.representation} "
                "stores one signed value per bin; use input: histogram"
            )
    for g, ids in d["groups"].items():
        bad = [i for i in ids if int(i) not in d["names"]]
        if bad:
            raise EventDataError(f"{src}: group '{g}' names unknown class ids {bad}")
    if d["twin"]:
        d["twin"], d["twin_settings"] = check_twin_data(d, needed, src, yaml_file)
    d["yaml_file"] = str(yaml_file) if yaml_file else None
    return d


def check_twin_data(d: dict, splits: list[str], src, yaml_file: Path | None) -> tuple[str, dict | None]:
    """The twin's root (resolved as ``path`` is) and its event settings; its split folders must exist."""
    from .prepared import PreparedSequence, list_sequences
    from .twin import twin_split

    twin = resolve_root(d["twin"], yaml_file)
    settings = None
    for s in splits:
        folder = twin_split({**d, "twin": str(twin)}, d[s])
        if not folder.is_dir():
            raise EventDataError(f"{src}: twin {twin} has no {s} folder {folder} (prepare the same recordings there)")
        seqs = list_sequences(folder)
        if seqs and settings is None:
            settings = PreparedSequence(seqs[0], d.get("representation")).settings
    return str(twin), settings.to_dict() if settings is not None else None


def is_event_data(data) -> bool:
    """Whether ``data`` names an event data YAML (one with any event key), as opposed to a stock image data YAML."""
    if not isinstance(data, (str, Path, dict)):
        return False
    try:
        d, _ = read_data_yaml(data)
    except EventDataError:
        return False
    return isinstance(d, dict) and any(k in d for k in EVENT_KEYS)


def check_channels(d: dict, splits: list[str], src, given: bool = True) -> EventSettings | None:
    """The event settings of the prepared data (each split's first sequence; all splits must agree). ``channels`` and
    ``downsample``, when the YAML sets them, must fit them; when it does not, they are taken from the data."""
    from .prepared import PreparedSequence, list_sequences

    c = d.get("channels")
    if given and (isinstance(c, bool) or not isinstance(c, int) or c < 1):
        raise EventDataError(f"{src}: channels must be a positive integer (the representation's), not {c!r}")
    settings, first = None, None
    for s in splits:
        seqs = list_sequences(d[s])
        if not seqs:
            continue  # the dataset says so, naming the folder
        seq = PreparedSequence(seqs[0], d.get("representation"))
        if settings is None:
            settings, first = seq.settings, f"{s} ({seq.repr_dir})"
        else:
            settings.require_same(seq.settings, first, f"{s} ({seq.repr_dir})")
        if given and seq.channels != c:
            raise EventDataError(
                f"{src}: channels is {c} but the prepared data of {s} ({seq.h5_path}) has "
                f"{seq.channels} channels ({seq.settings.describe()}); set channels: {seq.channels} or leave it out"
            )
    if settings is None:
        d["channels"] = c if given else 20
        d["downsample"] = d["downsample"] or 1
        return None
    d["channels"] = settings.channels
    if d["downsample"] is not None and d["downsample"] != settings.downsample:
        raise EventDataError(
            f"{src}: downsample is {d['downsample']} but the prepared data of {first} is stored at downsample "
            f"{settings.downsample}; set downsample: {settings.downsample} or leave it out"
        )
    d["downsample"] = settings.downsample
    return settings


def data_settings(data: dict) -> EventSettings:
    """The event settings of a loaded data YAML's prepared data (RVT's defaults when it has no sequence yet)."""
    if data.get("event_settings"):
        return EventSettings.from_dict(data["event_settings"], str(data.get("yaml_file") or "data"))
    parsed = EventSettings.from_folder_name(data.get("representation"), int(data.get("downsample") or 1))
    return parsed or EventSettings(
        nbins=int(data.get("channels") or 20) // 2, downsample=int(data.get("downsample") or 1)
    )


def event_settings(data: dict) -> dict:
    """What prediction needs to rebuild the training windows (:class:`EventSettings`, see :func:`data_settings`) and
    how the model reads them (partition, input, memory).

    Stored in the model (``model.yaml["event"]``) by the trainer, so checkpoints predict on raw recordings alone."""
    return {
        **data_settings(data).to_dict(),
        "partition": list(data.get("partition") or []),
        "input": data.get("input") or "histogram",
        "memory": bool(data.get("memory", True)),
    }
