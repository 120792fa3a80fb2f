"""Checkpoints read without running anything from the file: a restricted unpickler for ``torch.load``.

Pickle files name the classes and functions they need (``module.name``) and call them while loading, so a plain
``torch.load`` of an untrusted file can run any command. Here every global a file names is sorted before anything is
imported or called:

- **torch's own weights-only allowlist** (tensor and storage rebuilders, dtypes, ``OrderedDict``, ...) and numpy's array
  and scalar rebuilders: used as they are;
- **trusted model classes** (only when the caller asks for them, for our own ``.pt`` files): ``torch.nn`` modules, the
  ``nn.Module`` subclasses and config dataclasses of Ultralytics, timm, ``recurrent`` and ``yolo_etram``, Ultralytics'
  loss and assigner classes and its ``IterableSimpleNamespace``: constructed, as Ultralytics' own
  ``ULTRALYTICS_SAFE_LOAD`` allowlist does;
- **refused**, naming the global: anything from a module that can reach the operating system or the interpreter
  (``os``, ``posix``, ``subprocess``, ``sys``, ``builtins.eval``/``exec``/``getattr``/``__import__``, ``importlib``,
  ``pickle``, ...), and any other function or class of torch, numpy or the trusted packages (``torch.load``,
  ``numpy.fromfile``, ...);
- **everything else** (``omegaconf.DictConfig``, Lightning's callback states, classes of packages that are not even
  installed) becomes an :class:`InertRecord`: a plain object holding the arguments and state the file gave it. Its
  module is never imported and nothing of it is ever called.

:func:`to_plain` turns records of configuration objects (omegaconf's ``DictConfig``/``ListConfig`` and their value
nodes, namespaces, dataclasses) into plain dicts and lists, so a Lightning checkpoint's ``hyper_parameters`` can be read
without omegaconf.

Usage:
    >>> ckpt = restricted_load("rvt-b.ckpt")  # a Lightning checkpoint, no flag needed
    >>> config = to_plain(ckpt.get("hyper_parameters"))
    >>> ckpt = restricted_load("best.pt", trusted_models=True)  # our checkpoints: model classes are constructed
"""

from __future__ import annotations

import functools
import importlib
import pickle
from pathlib import Path
from typing import Any

from yolo_etram.utils.errors import EtramError, one_line

__all__ = [
    "CheckpointError",
    "UnsafeCheckpointError",
    "InertRecord",
    "restricted_load",
    "to_plain",
    "load_ultralytics_checkpoint",
    "UNSAFE_PICKLE_ENV",
]

UNSAFE_PICKLE_ENV = "YOLO_ETRAM_UNSAFE_PICKLE"
"""Set to 1 to load ``.pt`` files with Ultralytics' full unpickling again (runs whatever the file names: trusted files
only)."""


class CheckpointError(EtramError, ValueError):
    """A checkpoint file that cannot be read (missing, truncated, corrupt, or not a PyTorch file)."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint that names a global able to run code; nothing of the file was executed."""


REFUSED_MODULES = frozenset(
    {
        "os",
        "posix",
        "nt",
        "subprocess",
        "sys",
        "importlib",
        "runpy",
        "shutil",
        "socket",
        "ctypes",
        "pickle",
        "_pickle",
        "marshal",
        "types",
        "code",
        "codeop",
        "pty",
        "signal",
        "multiprocessing",
        "threading",
        "_thread",
        "asyncio",
        "functools",
        "operator",
        "io",
        "_io",
        "tempfile",
        "webbrowser",
        "pydoc",
        "platform",
        "inspect",
        "gc",
        "ast",
        "dill",
        "cloudpickle",
        "joblib",
        "setuptools",
        "pip",
        "site",
        "sysconfig",
        "zipimport",
        "pkgutil",
        "urllib",
        "http",
        "ftplib",
        "smtplib",
        "telnetlib",
        "xmlrpc",
        "requests",
        "commands",
        "popen2",
    }
)
"""Modules whose names a checkpoint has no business using: refused outright (their top-level package counts)."""

SAFE_BUILTINS = frozenset(
    {
        "set",
        "frozenset",
        "slice",
        "complex",
        "bytearray",
        "bytes",
        "range",
        "dict",
        "list",
        "tuple",
        "int",
        "float",
        "bool",
        "str",
        "object",
    }
)
NUMPY_GLOBALS = frozenset(
    {
        "numpy.core.multiarray._reconstruct",
        "numpy._core.multiarray._reconstruct",
        "numpy.core.multiarray.scalar",
        "numpy._core.multiarray.scalar",
        "numpy.ndarray",
        "numpy.dtype",
        "numpy.core.numeric._frombuffer",
        "numpy._core.numeric._frombuffer",
    }
)
"""numpy's array, scalar and dtype rebuilders (``numpy.dtypes.*`` dtype classes are allowed too)."""
OTHER_GLOBALS = frozenset(
    {
        "copyreg._reconstructor",
        "collections.defaultdict",
        "collections.deque",
        "datetime.datetime",
        "datetime.date",
        "datetime.timedelta",
        "datetime.timezone",
        "argparse.Namespace",
        "types.SimpleNamespace",
    }
)
"""Pure constructors of plain data (``copyreg._reconstructor`` is how protocol 0/1 pickles rebuild objects)."""
TRUSTED_MODEL_PACKAGES = ("torch.nn", "ultralytics.nn", "timm", "recurrent", "yolo_etram", "torchvision.ops")
TRUSTED_MODEL_CLASSES = frozenset({"ultralytics.utils.IterableSimpleNamespace"})
TRUSTED_CLASS_MODULES = ("ultralytics.utils.loss", "ultralytics.utils.tal")  # classes a model's criterion may hold


class InertRecord:
    """What a checkpoint object of an unknown class becomes: its class name, constructor arguments and state, as data.

    Nothing about it is callable by the file: pickle's calls (``REDUCE``, ``NEWOBJ``, ``BUILD``, item and list
    appends) only store what they are given."""

    module: str = ""
    qualname: str = ""

    def __new__(cls, *args, **kwargs):
        obj = object.__new__(cls)
        obj.__dict__["_args"] = args
        return obj

    def __init__(self, *args, **kwargs):
        self.__dict__["_args"] = args

    def __setstate__(self, state):
        self.__dict__["_state"] = state

    def __setitem__(self, key, value):
        self.__dict__.setdefault("_items", {})[key] = value

    def append(self, value):
        self.__dict__.setdefault("_list", []).append(value)

    def extend(self, values):
        self.__dict__.setdefault("_list", []).extend(values)

    @property
    def args(self) -> tuple:
        return self.__dict__.get("_args", ())

    @property
    def state(self):
        return self.__dict__.get("_state")

    @property
    def items_set(self) -> dict:
        return self.__dict__.get("_items", {})

    @property
    def list_items(self) -> list:
        return self.__dict__.get("_list", [])

    def __repr__(self) -> str:
        return f"<inert {self.module}.{self.qualname}>"


_RECORD_CLASSES: dict[tuple[str, str], type] = {}


def _record_class(module: str, name: str) -> type:
    """One :class:`InertRecord` subclass per named class, so records say what they stand for."""
    key = (module, name)
    if key not in _RECORD_CLASSES:
        _RECORD_CLASSES[key] = type(
            name.rpartition(".")[2] or "Record",
            (InertRecord,),
            {"module": module, "qualname": name, "__module__": __name__},
        )
    return _RECORD_CLASSES[key]


@functools.lru_cache(maxsize=1)
def _torch_allowed() -> dict[str, Any]:
    from torch import _weights_only_unpickler

    return _weights_only_unpickler._get_allowed_globals()


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose ``find_class`` sorts every global as the module docstring says."""

    trusted_models = False

    def find_class(self, module: str, name: str):
        module, name = _python3_name(module, name)
        full = f"{module}.{name}"
        top = module.split(".")[0]
        allowed = _torch_allowed()
        if full in allowed:
            return allowed[full]
        if top == "builtins":
            if name in SAFE_BUILTINS:
                return getattr(importlib.import_module("builtins"), name)
            raise self._refuse(full)
        if full in NUMPY_GLOBALS or full in OTHER_GLOBALS or (module == "numpy.dtypes" and name.endswith("DType")):
            return getattr(importlib.import_module(module), name)
        if top in REFUSED_MODULES:
            raise self._refuse(full)
        if self.trusted_models and (
            full in TRUSTED_MODEL_CLASSES
            or module.startswith(TRUSTED_CLASS_MODULES)
            or _in_packages(module, TRUSTED_MODEL_PACKAGES)
        ):
            obj = self._import(module, name)
            if isinstance(obj, type) and (
                full in TRUSTED_MODEL_CLASSES or module.startswith(TRUSTED_CLASS_MODULES) or _is_module_class(obj)
            ):
                return obj
            raise self._refuse(full)
        if self.trusted_models and _in_packages(module, ("torch", "numpy", "ultralytics")):
            raise self._refuse(full)  # installed and callable, and not on any allowlist (torch.load, numpy.fromfile)
        return _record_class(module, name)  # never imported, never called

    def _import(self, module: str, name: str):
        from yolo_etram.utils import legacy

        legacy.install()  # checkpoints of earlier releases name moved modules
        try:
            obj = importlib.import_module(module)
            for part in name.split("."):
                obj = getattr(obj, part)
            return obj
        except (ImportError, AttributeError):
            from yolo_etram.utils.legacy import legacy_attribute

            try:
                return legacy_attribute(module, name)
            except AttributeError:
                raise CheckpointError(
                    f"the checkpoint needs {module}.{name}, which this installation does not "
                    "have; it was written by another version"
                ) from None

    @staticmethod
    def _refuse(full: str) -> UnsafeCheckpointError:
        return UnsafeCheckpointError(f"names the global {full}, which could run code while loading; nothing was run")


def _python3_name(module: str, name: str) -> tuple[str, str]:
    """The Python 3 name of a global: protocol 2 pickles (torch's default) write Python 2's (``__builtin__.eval``,
    ``commands.Popen`` for ``subprocess.Popen``), which pickle's own ``find_class`` maps back (``_compat_pickle``)."""
    import _compat_pickle

    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, name)]
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


def _in_packages(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def _is_module_class(obj: type) -> bool:
    """An ``nn.Module`` subclass, or a dataclass (layer configs such as ``RecurrentMaxViTCfg``)."""
    import dataclasses

    import torch

    return issubclass(obj, torch.nn.Module) or dataclasses.is_dataclass(obj)


class _TrustedModelsUnpickler(RestrictedUnpickler):
    trusted_models = True


class _PickleModule:
    """What ``torch.load(pickle_module=...)`` needs: an ``Unpickler`` class and ``load``."""

    def __init__(self, unpickler: type[pickle.Unpickler]):
        self.Unpickler = unpickler
        self.__name__ = f"yolo_etram restricted unpickler ({unpickler.__name__})"

    def load(self, file, **kwargs):
        return self.Unpickler(file, **kwargs).load()


_RESTRICTED = _PickleModule(RestrictedUnpickler)
_TRUSTED_MODELS = _PickleModule(_TrustedModelsUnpickler)


def restricted_load(path: str | Path, map_location="cpu", trusted_models: bool = False) -> Any:
    """``torch.load`` through :class:`RestrictedUnpickler`: nothing named by the file runs, unknown classes become
    :class:`InertRecord` s. ``trusted_models``: construct the model classes of torch, Ultralytics, timm and ours (for
    our own ``.pt`` checkpoints); without it (RVT's Lightning files) only tensors and plain containers are rebuilt.

    Raises :class:`UnsafeCheckpointError` naming the file and the global for a file that names code to run, and
    :class:`CheckpointError` for a file that cannot be read at all, each on one line."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if _is_torchscript(path):  # torch.load would hand it to torch.jit.load, which runs the archive's code
        raise CheckpointError(
            f"{path}: is a TorchScript archive, not a checkpoint; use it as an exported model (name it .torchscript)"
        )
    try:
        return torch.load(
            path,
            map_location=map_location,
            weights_only=False,
            pickle_module=_TRUSTED_MODELS if trusted_models else _RESTRICTED,
        )
    except UnsafeCheckpointError as e:
        raise UnsafeCheckpointError(f"{path}: {e} (load only files you trust with allow_unsafe_pickle=True)") from None
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from None
    except Exception as e:  # a damaged file reaches pickle and torch's zip reader as nearly any exception
        raise CheckpointError(
            f"{path}: not a readable PyTorch checkpoint, truncated or corrupt ({type(e).__name__}: {one_line(e, 200)})"
        ) from None


def to_plain(obj: Any) -> Any:
    """Records of configuration objects as plain Python: omegaconf ``DictConfig``/``ListConfig`` (their ``_content``)
    and value nodes (``_val``), namespaces and other objects (their state), recursively; dicts, lists and tuples are
    walked, everything else (tensors, numbers, strings) is returned as it is."""
    if isinstance(obj, InertRecord):
        state = obj.state[0] if isinstance(obj.state, tuple) and len(obj.state) == 2 else obj.state
        if isinstance(state, dict) and "_content" in state:
            return to_plain(state["_content"])
        if isinstance(state, dict) and "_val" in state:
            return to_plain(state["_val"])
        if obj.items_set or obj.list_items:
            return to_plain(obj.items_set or obj.list_items)
        if isinstance(state, dict):
            return {k: to_plain(v) for k, v in state.items() if not str(k).startswith("_")}
        return to_plain(state) if state is not None else [to_plain(a) for a in obj.args]
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_plain(v) for v in obj) if isinstance(obj, list) else tuple(to_plain(v) for v in obj)
    if hasattr(obj, "__dict__") and type(obj).__module__ in ("types", "argparse"):
        return {k: to_plain(v) for k, v in vars(obj).items()}
    return obj


def _is_torchscript(path: Path) -> bool:
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            return any(n.endswith(("/constants.pkl", "/code/")) or "/code/" in n for n in z.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def load_ultralytics_checkpoint(weight, safe_only=None):
    """Ultralytics' ``torch_safe_load(weight)`` through :func:`restricted_load` with model classes trusted: the same
    result (``(ckpt, file)``) for Ultralytics' and our checkpoints, but a file that names code to run is refused and
    unknown objects stay inert. Swapped in by :func:`yolo_etram.integrations.ultralytics.event_seams`;
    ``YOLO_ETRAM_UNSAFE_PICKLE=1`` restores full unpickling."""
    from ultralytics.nn.tasks import temporary_modules
    from ultralytics.utils.checks import check_suffix
    from ultralytics.utils.downloads import attempt_download_asset

    check_suffix(file=weight, suffix=".pt")
    file = attempt_download_asset(weight)  # a bare official name in the working directory or weights dir
    with temporary_modules(
        modules={
            "ultralytics.yolo.utils": "ultralytics.utils",
            "ultralytics.yolo.v8": "ultralytics.models.yolo",
            "ultralytics.yolo.data": "ultralytics.data",
        }
    ):
        ckpt = restricted_load(file, trusted_models=True)
    if not isinstance(ckpt, dict):  # a model saved with torch.save(model), as Ultralytics accepts it
        ckpt = {"model": getattr(ckpt, "model", ckpt)}
    return ckpt, file
