"""How event windows become model inputs: the one typed source of the event settings.

:class:`EventSettings` names the representation (see :mod:`.representations`), its time bins and cutoff, the window
rule (a duration in ms, or RVT's constant count: the last N events) and the downsampling. From them follow the input
channels and dtype. ``prepare`` writes them beside the data (``event_settings.json`` in the representation folder),
the trainer records them in the model (``yaml["event"]``), every export carries them in its metadata, and prediction on
a recording rebuilds its windows from them. Two settings that disagree stop with one line naming both.

Folder names are RVT's (``{name}_{dt|ne}={value}_nbins={nbins}[_cutoff={cutoff}]``, the cutoff only for the
mixed-density stack, as RVT names them), so data prepared by RVT is recognised by its name alone. RVT steps its windows
every 50 ms whatever their length; another step (ours: ``step_ms``) is named by a ``_step={ms}`` suffix.

Usage:
    >>> from yolo_etram.data.event_settings import EventSettings
    >>> s = EventSettings("vtei", window_ms=50)
    >>> s.folder_name, s.channels, s.dtype
    ('vtei_dt=50_nbins=5', 5, 'int8')
    >>> EventSettings.from_folder_name("mixeddensity_stack_dt=50_nbins=10_cutoff=32").cutoff
    32
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from yolo_etram.utils.errors import EventDataError

from .representations import REPRESENTATIONS, EventRepresentation, check_downsample, representation_class

SETTINGS_FILE = "event_settings.json"
FOLDER_RE = re.compile(
    r"(?P<name>[a-z_]+?)_(?P<rule>dt|ne)=(?P<value>\d+)_nbins=(?P<nbins>\d+)(?:_cutoff=(?P<cutoff>\d+))?"
    r"(?:_step=(?P<step>\d+))?"
)
_UNSET = object()


@dataclass(frozen=True)
class EventSettings:
    """The event settings of a dataset, a model or an export.

    Args:
        representation: one of :data:`~.representations.REPRESENTATIONS` (default RVT's stacked histogram).
        nbins: time bins (default: the representation's, 10 for RVT's, 5 for ReYOLOv8's).
        cutoff: saturation (default: the representation's, 10 for the histogram, 32 for the mixed-density stack).
        window_ms: each window's length in ms (without ``window_events``).
        window_events: RVT's constant-count windows: each window is the last N events up to its end.
        downsample: 1, or 2 (RVT's halving of 1280x720 sensors).
        step_ms: the time between window ends (RVT: 50 ms, whatever the window's length): the model's frame rate.
    """

    representation: str = "stacked_histogram"
    nbins: int | None = None
    cutoff: int | None | object = _UNSET
    window_ms: int = 50
    window_events: int | None = None
    downsample: int = 1
    step_ms: int = 50

    def __post_init__(self):
        try:
            cls = representation_class(self.representation)
        except ValueError as e:
            raise EventDataError(str(e)) from None
        defaults = {f.name: f.default for f in fields(cls)}  # the representation's own defaults
        if self.nbins is None:
            object.__setattr__(self, "nbins", defaults["nbins"])
        if self.cutoff is _UNSET:
            object.__setattr__(self, "cutoff", defaults["cutoff"])
        for key in ("nbins", "window_ms", "step_ms"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise EventDataError(f"event settings: {key} must be a positive integer, not {value!r}")
        if self.window_events is not None:
            if (
                isinstance(self.window_events, bool)
                or not isinstance(self.window_events, int)
                or self.window_events < 1
            ):
                raise EventDataError(
                    f"event settings: window_events must be a positive integer, not {self.window_events!r}"
                )
        try:
            check_downsample(self.downsample, "event settings: downsample")
            self.build(2, 2)  # the representation checks nbins and cutoff
        except ValueError as e:
            raise EventDataError(str(e)) from None

    # ------------------------------------------------------------------------------------------------ derived
    @property
    def rep_class(self) -> type[EventRepresentation]:
        return REPRESENTATIONS[self.representation]

    @property
    def channels(self) -> int:
        return self.rep_class.polarities * self.nbins

    @property
    def dtype(self) -> str:
        return self.rep_class.dtype.name

    @property
    def polarities(self) -> int:
        """2: OFF and ON channel groups (``p * nbins + bin``); 1: one signed value per bin."""
        return self.rep_class.polarities

    @property
    def window_us(self) -> int:
        return self.window_ms * 1000

    @property
    def step_us(self) -> int:
        return self.step_ms * 1000

    @property
    def folder_name(self) -> str:
        """RVT's folder name under ``event_representations_v2``, e.g. ``stacked_histogram_dt=50_nbins=10``."""
        rule = f"ne={self.window_events}" if self.window_events else f"dt={self.window_ms}"
        cutoff = f"_cutoff={self.cutoff}" if self.representation == "mixeddensity_stack" and self.cutoff else ""
        step = f"_step={self.step_ms}" if self.step_ms != 50 else ""
        return f"{self.representation}_{rule}_nbins={self.nbins}{cutoff}{step}"

    def build(self, height: int, width: int) -> EventRepresentation:
        """The representation for a ``height`` x ``width`` sensor."""
        return self.rep_class(height, width, nbins=self.nbins, cutoff=self.cutoff, downsample=self.downsample)

    def describe(self) -> str:
        """One short phrase, for messages: ``vtei, 5 bins, 50 ms windows, downsample 2 (5 int8 channels)``."""
        cut = f", cutoff {self.cutoff}" if self.cutoff is not None else ""
        window = f"last {self.window_events} events" if self.window_events else f"{self.window_ms} ms windows"
        window += f" every {self.step_ms} ms"
        return (
            f"{self.representation}, {self.nbins} bins{cut}, {window}, downsample {self.downsample} "
            f"({self.channels} {self.dtype} channels)"
        )

    # ------------------------------------------------------------------------------------------------ (de)serialise
    def to_dict(self) -> dict:
        """The settings with their derived ``channels`` and ``dtype`` (recorded for readers that do not import us)."""
        return {**asdict(self), "channels": self.channels, "dtype": self.dtype}

    @classmethod
    def from_dict(cls, d: dict, source: str = "event settings") -> EventSettings:
        """Settings from :meth:`to_dict`'s dict, or a model's ``yaml["event"]`` (older ones lack most keys: RVT's
        stacked histogram with ``channels / 2`` bins). The recorded ``channels``/``dtype`` must agree."""
        d = dict(d or {})
        rep = d.get("representation") or "stacked_histogram"
        if rep not in REPRESENTATIONS:  # older models stored the folder name here
            parsed = cls.from_folder_name(rep)
            if parsed is None:
                raise EventDataError(
                    f"{source}: unknown representation '{rep}' (choose from {', '.join(REPRESENTATIONS)})"
                )
            return cls.from_dict({**asdict(parsed), **{k: v for k, v in d.items() if k != "representation"}}, source)
        kwargs = {f.name: d[f.name] for f in fields(cls) if f.name in d}
        kwargs["representation"] = rep
        if "nbins" not in d and d.get("channels"):
            kwargs["nbins"] = int(d["channels"]) // representation_class(rep).polarities
        try:
            s = cls(**kwargs)
        except EventDataError as e:
            raise EventDataError(f"{source}: {e}") from None
        for key in ("channels", "dtype"):
            if d.get(key) is not None and d[key] != getattr(s, key):
                raise EventDataError(f"{source}: {key} {d[key]!r} does not fit {s.describe()}")
        return s

    @classmethod
    def from_folder_name(cls, name: str | None, downsample: int = 1) -> EventSettings | None:
        """The settings a folder name says (RVT's names and ours); None for a name that says nothing."""
        m = FOLDER_RE.fullmatch(name or "")
        if not m or m["name"] not in REPRESENTATIONS:
            return None
        value = int(m["value"])
        kwargs = {"window_events": value} if m["rule"] == "ne" else {"window_ms": value}
        if m["step"] is not None:
            kwargs["step_ms"] = int(m["step"])
        if m["cutoff"] is not None:
            kwargs["cutoff"] = int(m["cutoff"])
        elif m["name"] == "mixeddensity_stack":
            kwargs["cutoff"] = None  # RVT names the cutoff when it has one
        try:
            return cls(m["name"], int(m["nbins"]), downsample=downsample, **kwargs)
        except EventDataError:
            return None

    def save(self, folder: str | Path) -> Path:
        from yolo_etram.utils.files import save_text_atomic

        path = Path(folder) / SETTINGS_FILE
        save_text_atomic(path, json.dumps(self.to_dict(), indent=1))
        return path

    @classmethod
    def load(cls, folder: str | Path) -> EventSettings | None:
        """The settings written beside prepared data, or None where there are none (data prepared by RVT)."""
        path = Path(folder) / SETTINGS_FILE
        if not path.is_file():
            return None
        try:
            d = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise EventDataError(f"{path}: unreadable event settings ({e}); re-run prepare") from e
        return cls.from_dict(d, str(path))

    # ------------------------------------------------------------------------------------------------ checks
    def same_frames(self, other: EventSettings) -> bool:
        """Whether both build the same kind of frame (representation, bins, cutoff, downsampling): the window's
        length and step may differ (a model run at another frame rate)."""
        window = {"window_ms": 50, "window_events": None, "step_ms": 50}
        return replace(self, **window) == replace(other, **window)

    def require_same(self, other: EventSettings, mine: str, theirs: str, windows: bool = True) -> None:
        """Stop with one line when ``other`` builds different inputs than ``self`` (``mine``/``theirs`` name them);
        ``windows=False`` lets the window's length and step differ (see :meth:`same_frames`)."""
        if (self != other) if windows else not self.same_frames(other):
            raise EventDataError(
                f"{mine} uses {self.describe()} but {theirs} holds {other.describe()}; prepare the data with the "
                "model's settings (etram-yolo prepare --representation ...) or use a model trained on this data"
            )
