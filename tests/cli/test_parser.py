"""The command-line grammar: what reaches a command, and how bad input fails."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from rgrid.cli.main import build_parser
from rgrid.cli.parser import (
    _HANDLER,
    _PASSES,
    EXTRA_ARGS,
    SCRIPT_ARGS,
    Commands,
    Parser,
    dispatch,
    script_and_args,
)
from rgrid.errors import UsageError

Seen = dict[str, object]


def _grammar(seen: Seen) -> Parser:
    def run(script: str, args: list[str], detach: bool) -> int:
        seen.update(script=script, args=args, detach=detach)
        return 7

    def node(head: bool, extra: list[str]) -> None:
        seen.update(head=head, extra=extra)

    def serve(port: int | None) -> int:
        seen.update(served=port)
        return 0

    def create(owner: str) -> int:
        seen.update(owner=owner)
        return 0

    root = Parser(prog="rgrid")
    commands = Commands(root)
    runner = commands.add("run", run, passes=SCRIPT_ARGS)
    runner.add_argument("-d", "--detach", action="store_true")
    script_and_args(runner, "script", "args")
    commands.add("worker", node, passes=EXTRA_ARGS).add_argument("--head", action="store_true")
    server = commands.group("server", "serve", default=serve)
    server.parser.add_argument("--port", type=int)
    server.add("create-key", create).add_argument("--owner", required=True)
    commands.group("local", "the local grid")
    return root


@pytest.mark.parametrize(
    ("argv", "script", "args"),
    [
        (["run", "s.py"], "s.py", []),
        (["run", "-d", "s.py", "--batch", "x", "-d"], "s.py", ["--batch", "x", "-d"]),
        (["run", "s.py", "--", "a"], "s.py", ["--", "a"]),
        (["run", "--", "s.py", "a"], "s.py", ["a"]),
        (["run", "--", "s.py", "--", "a"], "s.py", ["--", "a"]),
        (["run", "s.py", "a", "--", "b", "-h"], "s.py", ["a", "--", "b", "-h"]),
    ],
)
def test_everything_after_the_script_is_the_scripts_exactly(
    argv: list[str], script: str, args: list[str]
) -> None:
    seen: Seen = {}
    assert dispatch(_grammar(seen), argv) == 7
    assert seen["script"] == script and seen["args"] == args


def test_unknown_options_go_on_only_where_a_command_passes_them() -> None:
    seen: Seen = {}
    grammar = _grammar(seen)
    assert dispatch(grammar, ["worker", "--head", "--num-cpus=2", "--port", "6379"]) == 0
    assert seen == {"head": True, "extra": ["--num-cpus=2", "--port", "6379"]}
    with pytest.raises(UsageError, match=r"unrecognized arguments: --bogus \(see `rgrid run --help`\)"):
        dispatch(grammar, ["run", "--bogus", "s.py"])


def test_a_group_runs_its_default_or_its_subcommand_with_only_its_own_options() -> None:
    seen: Seen = {}
    grammar = _grammar(seen)
    assert dispatch(grammar, ["server", "--port", "80"]) == 0 and seen == {"served": 80}
    seen.clear()
    assert dispatch(grammar, ["server", "create-key", "--owner", "o"]) == 0 and seen == {"owner": "o"}
    assert dispatch(grammar, ["local"]) == 2  # no subcommand: its help
    assert dispatch(grammar, []) == 2


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run"], "required: script"),
        (["server", "create-key"], "required: --owner"),
        (["server", "--port", "x"], "invalid int value"),
        (["nope"], "invalid choice"),
    ],
)
def test_bad_input_is_one_usage_error(argv: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        dispatch(_grammar({}), argv)


def test_the_real_grammar_builds_and_rejects_a_zero_parallel() -> None:
    with pytest.raises(UsageError, match="--parallel: must be at least 1"):
        dispatch(build_parser(with_plugins=False), ["run", "--parallel", "0", "s.py"])


def test_the_cli_passes_a_scripts_own_flags_through(tmp_path: Path) -> None:
    (tmp_path / "s.py").write_text("print(1)\n")
    argv = [sys.executable, "-m", "rgrid", "run", "--dry-run", "--json", "s.py", "--", "--json", "-h"]
    done = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["args"] == ["--", "--json", "-h"]
    usage = subprocess.run(
        [sys.executable, "-m", "rgrid", "run", "--cpu", "many", "s.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert usage.returncode == 2
    assert usage.stderr.strip().splitlines() == [
        "rgrid: error: argument --cpu: invalid float value: 'many' (see `rgrid run --help`)"
    ]


def _commands(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield name, sub
                yield from ((f"{name} {inner}", p) for inner, p in _commands(sub))


def test_every_option_of_every_command_reaches_its_handler() -> None:
    """`dispatch` passes a handler only the options it names, so an option
    whose dest is misspelled would be dropped silently: none is."""
    checked = 0
    for name, parser in _commands(build_parser(with_plugins=True)):
        handler = parser.get_default(_HANDLER)
        if handler is None:
            continue
        code = handler.__code__
        accepted = set(code.co_varnames[: code.co_argcount + code.co_kwonlyargcount])
        passes = parser.get_default(_PASSES)
        implied = {"args"} if passes == SCRIPT_ARGS else {"extra"} if passes == EXTRA_ARGS else set()
        dests = {a.dest for a in parser._actions if a.dest not in ("help", argparse.SUPPRESS)}
        assert dests | implied <= accepted, (
            f"rgrid {name}: {sorted((dests | implied) - accepted)} never reach it"
        )
        checked += 1
    assert checked >= 20  # every command of the CLI, the server and the node


def test_help_shows_defaults_and_version_prints_one_line() -> None:
    shown = subprocess.run(
        [sys.executable, "-m", "rgrid", "run", "--help"], capture_output=True, text=True, timeout=60
    )
    assert shown.returncode == 0
    text = " ".join(shown.stdout.split())
    assert "(default: 1G, or the project's)" in text and "(default: .)" in text and "(default: 2)" in text
    assert "--dry-run Show what would be shipped; run nothing. --batch" in text  # flags show none
    version = subprocess.run(
        [sys.executable, "-m", "rgrid", "--version"], capture_output=True, text=True, timeout=60
    )
    assert version.returncode == 0
    assert version.stdout.startswith("rgrid ") and len(version.stdout.splitlines()) == 1
