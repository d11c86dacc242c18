"""The `rgrid` command. Server-side commands (server, db, worker, ...) are
plugged in through the `rgrid.commands` entry point group and loaded only
when asked for, so client commands start fast and never import the server."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from rgrid.cli import completion, costs, inspect, local, run, web
from rgrid.cli.console import as_text, err, out
from rgrid.cli.parser import Commands, Parser, dispatch
from rgrid.errors import EXIT_CANCELLED, EXIT_INFRA, RgridError

CLIENT_COMMANDS = {
    "completion",
    "run",
    "status",
    "logs",
    "list",
    "cancel",
    "retry",
    "wait",
    "download",
    "init",
    "local",
    "workers",
    "autoscaler",
    "cost",
    "estimate",
    "console",
}


class ShowVersion(argparse.Action):
    """`--version`, looked up only when asked: reading the installed
    package's metadata costs the run path some 45 ms."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *_args: Any) -> None:
        from rgrid.version import VERSION

        out.print(f"rgrid {VERSION}", markup=False, highlight=False)
        parser.exit()


def build_parser(with_plugins: bool) -> Parser:
    parser = Parser(prog="rgrid", description="Run scripts on a Ray grid as if they ran here.")
    parser.add_argument("--version", action=ShowVersion, help="Print rgrid's version and exit.")
    commands = Commands(parser)
    run.add_commands(commands)
    inspect.add_commands(commands)
    costs.add_commands(commands)
    local.add_commands(commands)
    completion.add_commands(commands)
    web.add_commands(commands)
    if with_plugins:
        # Scanning installed packages' entry points costs tens of ms: only
        # server-side commands pay for it.
        from importlib.metadata import entry_points

        for ep in entry_points(group="rgrid.commands"):
            ep.load()(commands)
    return parser


def main() -> None:
    argv = sys.argv[1:]
    completing = "_ARGCOMPLETE" in os.environ
    parser = build_parser(with_plugins=completing or not argv or argv[0] not in CLIENT_COMMANDS)
    if completing:
        # The shell asks what may come next (`rgrid completion`): argcomplete
        # answers from the parser and exits; a run never imports it.
        import argcomplete

        argcomplete.autocomplete(parser)
    try:
        code = dispatch(parser, argv)
    except RgridError as exc:
        err.print(f"[red]rgrid: error:[/red] {as_text(str(exc))}", markup=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err.print("rgrid: interrupted")
        sys.exit(EXIT_CANCELLED)
    except Exception as exc:
        if os.environ.get("RGRID_DEBUG"):
            raise
        err.print(
            f"[red]rgrid: internal error:[/red] {exc.__class__.__name__}: {as_text(str(exc))} "
            "(set RGRID_DEBUG=1 for the traceback)"
        )
        sys.exit(EXIT_INFRA)
    sys.exit(code)
