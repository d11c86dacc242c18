"""The `rgrid` command. Server-side commands (server, db, worker, ...) are
plugged in through the `rgrid.commands` entry point group and loaded only
when asked for, so client commands start fast and never import the server."""

from __future__ import annotations

import os
import sys

import typer

from rgrid.cli import costs, inspect, local, run
from rgrid.cli.console import err
from rgrid.errors import EXIT_CANCELLED, EXIT_INFRA, EXIT_USAGE, RgridError

CLIENT_COMMANDS = {
    "run",
    "status",
    "logs",
    "list",
    "cancel",
    "retry",
    "download",
    "init",
    "local",
    "workers",
    "autoscaler",
    "cost",
    "estimate",
}


def build_app(with_plugins: bool) -> typer.Typer:
    app = typer.Typer(
        help="Run scripts on a Ray grid as if they ran here.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
    )
    # Everything after the script belongs to the script, options included.
    script_args = {"allow_interspersed_args": False}
    app.command(context_settings=script_args)(run.run)
    app.command()(inspect.status)
    app.command()(inspect.logs)
    app.command("list")(inspect.list_)
    app.command()(inspect.cancel)
    app.command()(inspect.retry)
    app.command("download")(inspect.download_)
    app.command()(inspect.workers)
    app.command()(costs.cost)
    app.command(context_settings=script_args)(costs.estimate)
    app.add_typer(costs.autoscaler_app, name="autoscaler")
    app.command()(local.init)
    app.add_typer(local.local_app, name="local")
    if with_plugins:
        # Scanning installed packages' entry points costs tens of ms: only
        # server-side commands pay for it.
        from importlib.metadata import entry_points

        for ep in entry_points(group="rgrid.commands"):
            obj = ep.load()
            if isinstance(obj, typer.Typer):
                app.add_typer(obj, name=ep.name)
            else:
                passthrough = {"allow_extra_args": True, "ignore_unknown_options": True}
                app.command(ep.name, context_settings=passthrough)(obj)
    return app


def main() -> None:
    argv = sys.argv[1:]
    app = build_app(with_plugins=not argv or argv[0] not in CLIENT_COMMANDS)
    try:
        result = app(args=argv, prog_name="rgrid", standalone_mode=False)
    except RgridError as exc:
        err.print(f"[red]rgrid: error:[/red] {exc}", markup=True)
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.TyperException as exc:
        ctx = getattr(exc, "ctx", None)
        where = ctx.command_path if ctx is not None else "rgrid"
        err.print(f"[red]rgrid: error:[/red] {exc.format_message()} (see `{where} --help`)")
        sys.exit(EXIT_USAGE if exc.exit_code == 2 else exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        err.print("rgrid: interrupted")
        sys.exit(EXIT_CANCELLED)
    except Exception as exc:
        if os.environ.get("RGRID_DEBUG"):
            raise
        err.print(
            f"[red]rgrid: internal error:[/red] {exc.__class__.__name__}: {exc} "
            "(set RGRID_DEBUG=1 for the traceback)"
        )
        sys.exit(EXIT_INFRA)
    sys.exit(result if isinstance(result, int) else 0)
