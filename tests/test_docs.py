"""The documentation tells the truth about the code: every command shown in a shell block of ``README.md``, ``docs/``
and ``benchmarks/RESULTS.md`` parses (our subcommands and scripts through their own argument parsers, ``yolo``
commands against Ultralytics' arguments, ``make`` against the Makefile), every module the layout names exists, and
relative links point at files that exist. The README stays a landing page."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "benchmarks" / "RESULTS.md"]
SHELL_LANGS = {"", "bash", "sh", "shell", "console"}
EXTERNAL = {
    "tensorboard",
    "pip",
    ".venv/bin/pip",
    "git",
    "cd",
    "export",
    "source",
    "srun",
    "sbatch",
    "ls",
    "cat",
    "time",
}
DATA_COMMANDS = ("prepare", "synth", "convert", "import-rvt", "compare", "ablate")


def shell_blocks(text: str) -> list[str]:
    """The bodies of the fenced blocks marked bash/sh/shell (or unmarked) in a Markdown text."""
    blocks, body, lang = [], None, None
    for line in text.splitlines():
        fence = re.match(r"^\s*```\s*(\S*)", line)
        if fence and body is None:
            body, lang = [], fence.group(1)
        elif fence:
            if lang in SHELL_LANGS:
                blocks.append("\n".join(body))
            body = None
        elif body is not None:
            body.append(line)
    return blocks


def shell_commands() -> list[tuple[str, str]]:
    """``(where, command)`` for every command line of every shell block (continuations joined, comments dropped)."""
    out = []
    for doc in DOCS:
        if not doc.is_file():
            continue
        for block in shell_blocks(doc.read_text()):
            for line in block.replace("\\\n", " ").splitlines():
                line = re.sub(r"(^|\s)#.*$", "", line).strip()
                if line:
                    out.append((doc.relative_to(REPO).as_posix(), line))
    return out


def split(command: str) -> list[str]:
    """Tokens of a command, with leading ``VAR=value`` assignments, ``$(which X)`` and ``torchrun``'s options gone."""
    command = re.sub(r"\$\(which ([\w-]+)\)", r"\1", command)
    tokens = shlex.split(command)
    while tokens and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", tokens[0]):
        tokens = tokens[1:]
    if tokens and tokens[0] == "torchrun":
        rest = [i for i, t in enumerate(tokens) if t in ("etram-yolo", "yolo") or t.endswith(".py")]
        assert rest, f"torchrun runs nothing of ours: {command}"
        tokens = tokens[rest[0] :]
    return tokens


COMMANDS = shell_commands()


def test_the_docs_show_commands_at_all():
    assert len(COMMANDS) > 20
    kinds = {split(c)[0] for _, c in COMMANDS}
    assert {"etram-yolo", "yolo", "make", "python"} <= kinds, kinds


def ultralytics_problems(tokens: list[str]) -> str | None:
    """Why ``yolo``/``etram-yolo`` Ultralytics arguments would not parse, or None."""
    from ultralytics.cfg import DEFAULT_CFG_DICT, MODES, TASKS
    from ultralytics.utils import SETTINGS

    from yolo_etram.data.train_args import TRAIN_ARGS
    from yolo_etram.integrations.ultralytics import register_train_args

    register_train_args(TRAIN_ARGS)  # as the yolo and etram-yolo commands do: our train arguments are arguments

    words = tokens[1:]
    if not words:
        return "no mode"
    if words[0] == "settings":
        unknown = [w.split("=")[0] for w in words[1:] if w.split("=")[0] not in SETTINGS]
        return f"unknown settings {unknown}" if unknown else None
    if words[0] in TASKS:
        words = words[1:]
    if not words or words[0] not in MODES:
        return f"'{words[0] if words else ''}' is not an Ultralytics mode ({', '.join(sorted(MODES))})"
    unknown = [w for w in words[1:] if w != "resume" and ("=" not in w or w.split("=")[0] not in DEFAULT_CFG_DICT)]
    return f"not Ultralytics arguments: {unknown}" if unknown else None


def test_yolo_commands_use_ultralytics_arguments():
    checked = 0
    for where, command in COMMANDS:
        tokens = split(command)
        if tokens[0] == "yolo" or (tokens[0] == "etram-yolo" and tokens[1:2] and tokens[1] not in DATA_COMMANDS):
            problem = ultralytics_problems(tokens)
            assert problem is None, f"{where}: `{command}`: {problem}"
            checked += 1
    assert checked > 5
    assert ultralytics_problems(["yolo", "train", "epoch=3"]) is not None  # the check can fail


def test_make_targets_exist():
    targets = set(re.findall(r"^([\w-]+):", (REPO / "Makefile").read_text(), re.M))
    for where, command in COMMANDS:
        tokens = split(command)
        if tokens[0] == "make":
            assert set(tokens[1:]) <= targets, f"{where}: `{command}`: no such make target (Makefile: {targets})"


def test_other_commands_are_known():
    for where, command in COMMANDS:
        tokens = split(command)
        if tokens[0] in ("etram-yolo", "yolo", "make", "python") or tokens[0] in EXTERNAL:
            continue
        if tokens[0] == "bash":
            assert (REPO / tokens[1]).is_file(), f"{where}: `{command}`: no script {tokens[1]}"
            continue
        pytest.fail(f"{where}: `{command}`: an unknown command ({tokens[0]}); show real commands in shell blocks")


PARSE_ONLY = r"""
import argparse, json, os, runpy, sys

class Parsed(Exception):
    pass

stock = argparse.ArgumentParser.parse_args
def parse_only(self, args=None, namespace=None):
    stock(self, args, namespace)
    raise Parsed()
argparse.ArgumentParser.parse_args = parse_only

results = []
for kind, target, argv in json.load(sys.stdin):
    sys.argv = [target, *argv]
    try:
        if kind == "module":
            import importlib
            importlib.import_module(target).main(argv)
        else:
            sys.path.insert(0, os.path.dirname(target))  # as `python script.py` puts the script's folder first
            runpy.run_path(target, run_name="__main__")
        results.append("ran without parsing arguments")
    except Parsed:
        results.append(None)
    except SystemExit as e:
        results.append(f"argument error (exit {e.code})")
    except Exception as e:
        results.append(f"{type(e).__name__}: {e}")
print(json.dumps(results))
"""


@pytest.mark.slow
def test_our_subcommands_and_scripts_parse_their_arguments():
    """``etram-yolo prepare/synth/convert/import-rvt/compare`` and ``python <script>.py`` lines, through the argument
    parsers themselves (in one child process; nothing runs past the parse)."""
    from yolo_etram.cli import DATA_COMMANDS as MODULES

    jobs, shown = [], []
    for where, command in COMMANDS:
        tokens = split(command)
        if tokens[0] == "etram-yolo" and tokens[1:2] and tokens[1] in DATA_COMMANDS:
            jobs.append(("module", MODULES[tokens[1]], tokens[2:]))
        elif tokens[0] == "python" and tokens[1:2] and tokens[1].endswith(".py"):
            assert (REPO / tokens[1]).is_file(), f"{where}: `{command}`: no script {tokens[1]}"
            jobs.append(("script", str(REPO / tokens[1]), tokens[2:]))
        else:
            continue
        shown.append((where, command))
    jobs.append(("module", MODULES["prepare"], ["--no-such-flag"]))  # the check can fail
    out = subprocess.run(
        [sys.executable, "-c", PARSE_ONLY],
        input=json.dumps(jobs),
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    results = json.loads(out.stdout.strip().splitlines()[-1])
    assert results[-1] is not None
    bad = [f"{w}: `{c}`: {r}" for (w, c), r in zip(shown, results[:-1]) if r is not None]
    assert not bad, "commands in the docs that do not parse:\n" + "\n".join(bad)
    assert len(shown) > 5


def test_every_module_the_layout_names_exists():
    text = (REPO / "docs" / "architecture.md").read_text()
    paths = set(re.findall(r"`((?:yolo_etram|recurrent|benchmarks|tests|cfg|examples)/[\w/.{},*-]+)`", text))
    assert len(paths) > 10, paths
    missing = []
    for p in paths:
        expanded = [p]
        if m := re.search(r"\{([^}]*)\}", p):  # yolo_etram/{train,val}.py
            expanded = [p[: m.start()] + alt + p[m.end() :] for alt in m.group(1).split(",")]
        for q in expanded:
            if "*" in q:
                ok = any(REPO.glob(q.rstrip("/")))
            else:
                ok = (REPO / q.rstrip("/")).exists()
            if not ok:
                missing.append(q)
    assert not missing, f"docs/architecture.md names modules that do not exist: {sorted(missing)}"


def test_relative_links_resolve():
    broken = []
    for doc in DOCS:
        if not doc.is_file():
            continue
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", doc.read_text()):
            if re.match(r"[a-z]+:", target):
                continue
            if not (doc.parent / target).exists():
                broken.append(f"{doc.relative_to(REPO)} -> {target}")
    assert not broken, f"broken links: {broken}"


def test_readme_is_a_landing_page():
    text = (REPO / "README.md").read_text()
    lines = text.splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; the rest belongs in docs/"
    for doc in DOCS:
        if doc.is_file():
            long = [i + 1 for i, line in enumerate(doc.read_text().splitlines()) if len(line) > 120]
            assert not long, f"{doc.relative_to(REPO)}: lines over 120 characters: {long[:10]}"


def test_the_repository_names_no_session_issue_or_outside_path():
    """What is committed speaks of the code, not of how it was made: no sessions, issue numbers or sibling folders."""
    outside = re.compile(r"\bissue #?\d+|\.\./shared|shared/(golden|real|tools)")
    session = re.compile(r"\b(this|last|earlier|previous|next|one|a) sessions?\b|\bsessions\b", re.I)
    hits = []
    for path in [*DOCS, *(REPO / "yolo_etram").rglob("*.py"), *(REPO / "benchmarks").glob("*.py")]:
        if not path.is_file():
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if outside.search(line) or (path.suffix == ".md" and session.search(line)):
                hits.append(f"{path.relative_to(REPO)}:{i}: {line.strip()[:100]}")
    assert not hits, "\n".join(hits)
