"""User errors: bad input files or options. Their message names the file or argument, the problem and what to do;
the CLIs print it as one line and exit with status 2 instead of a traceback."""

from __future__ import annotations


class EtramError(Exception):
    """Base class of the errors a user can fix."""


class EventDataError(EtramError, ValueError):
    """A raw or prepared file, or a data YAML, that cannot be used."""


class UnsupportedOptionError(EtramError, ValueError):
    """An option that cannot work on event streams or with a recurrent model."""


class ExperimentError(EtramError, ValueError):
    """An ablation spec that cannot be run, or a run of it that failed (named by file and run)."""


class NonFiniteLossError(EtramError, FloatingPointError):
    """Training produced a NaN or infinite loss: stopped before the optimizer step could corrupt the weights."""


class NonFiniteOutputError(EtramError, FloatingPointError):
    """A model produced NaN or infinite outputs for an input window (named by recording and time)."""


def one_line(message, limit: int | None = None) -> str:
    """A message (or exception) on one line: HDF5 and numpy errors may span several; ``limit`` cuts it to that many
    characters, marked with "..."."""
    text = " ".join(str(message).split())
    return text[:limit] + "..." if limit is not None and len(text) > limit else text


def run_cli(fn, *args, prog: str = "etram-yolo") -> int:
    """Call ``fn(*args)``; turn a user error into one line on stderr and exit status 2."""
    import sys

    try:
        rc = fn(*args)
    except EtramError as e:
        print(f"{prog}: error: {one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    return rc or 0
