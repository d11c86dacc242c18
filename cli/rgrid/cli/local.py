"""`rgrid local up|down|status` and `rgrid init`."""

from __future__ import annotations

import os
import sys
import time
from contextlib import nullcontext

from rgrid.cli.console import err, make_table, out, print_json, say
from rgrid.cli.parser import Commands, bounded_int, json_flag
from rgrid.client import Client
from rgrid.config import Target, rgrid_home, save_remote
from rgrid.errors import UsageError
from rgrid.local.components import passed_settings
from rgrid.local.grid import LocalGrid, describe_workers


def up(workers: int | None, database_url: str | None, max_workers: int | None) -> int:
    """Start the local grid in the background; its supervisor keeps it running.
    RGRID_AUTOSCALER_*, RGRID_HCLOUD_*, RGRID_LOCAL_NODE_* and RGRID_CLUSTER_NAME
    set here are passed on to the grid's server."""
    if database_url and not database_url.startswith(("postgresql://", "sqlite:///")):
        raise UsageError(f"--database-url must be postgresql://... or sqlite:///..., not {database_url!r}")
    start_local_grid(
        LocalGrid(rgrid_home()), workers, database_url, max_workers, passed_settings(dict(os.environ))
    )
    return 0


def start_local_grid(
    grid: LocalGrid,
    workers: int | None = None,
    database_url: str | None = None,
    max_workers: int | None = None,
    settings: dict[str, str] | None = None,
) -> None:
    """Start (or change) the local grid, saying each piece as it comes up
    under a spinner on a terminal, and how long it all took."""
    started = time.monotonic()
    fresh = not grid.running()
    if fresh:
        say("starting the local grid (the first start takes up to a minute; later ones seconds)")
    with (
        err.rich.status("[dim]rgrid: waiting for the local grid[/dim]") if err.is_terminal else nullcontext()
    ):
        grid.up(say, workers, database_url, max_workers, settings)
    took = f" in {time.monotonic() - started:.0f} s" if fresh else ""
    say(f"local grid is up{took}; Ray dashboard: {grid.dashboard_url()}")


def down() -> int:
    """Stop every process the local grid started."""
    stopped = LocalGrid(rgrid_home()).down()
    say(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")
    return 0


def status_(json_out: bool) -> int:
    """Print every piece of the local grid, its URL, health and restarts (Ray dashboard first)."""
    grid = LocalGrid(rgrid_home())
    pieces = grid.status()
    supervisor = grid.supervisor_pid()
    healthy = 0 if supervisor and all(p.state == "running" for p in pieces) else 1
    api_url = next((p.url for p in pieces if p.name == "api" and p.url), None)
    console_url = f"{api_url.rstrip('/')}/ui/" if api_url else None
    if json_out:
        print_json(
            {
                "supervisor": {"pid": supervisor, "log": str(grid.log_path("supervisor"))},
                "pieces": [
                    {
                        "name": p.name,
                        "state": p.state,
                        "pid": p.pid,
                        "url": p.url,
                        "log": str(p.log),
                        "restarts": p.restarts,
                        "last_reason": p.last_reason,
                        "last_crash_at": p.last_crash_at,
                    }
                    for p in pieces
                ],
                "console": console_url,
                "node": grid.node_info(),
                "workers": describe_workers(grid.read_state()),
                "autoscaled_nodes": [
                    {"name": n["name"], "pid": n.get("pid"), "alive": n["alive"]}
                    for n in grid.autoscaled_nodes()
                ],
            }
        )
        return healthy
    labels = {"ray": "Ray dashboard", "api": "rgrid API", "s3": "S3 (SeaweedFS)"}
    labels.update(
        {p.name: f"worker node {p.name.split('-')[1]}" for p in pieces if p.name.startswith("worker-")}
    )
    table = make_table("piece", "state", "url", "pid", "restarts")
    for p in pieces:
        colour = {"running": "green", "stopped": "dim"}.get(p.state, "red")
        table.add_row(
            labels[p.name],
            f"[{colour}]{p.state}[/{colour}]",
            p.url or "-",
            str(p.pid or "-"),
            str(p.restarts),
        )
    out.print(table)
    if console_url:
        out.print(f"web console: {console_url} (`rgrid console` opens it logged in)")
    out.print(f"workers: {describe_workers(grid.read_state())}")
    autoscaled = grid.autoscaled_nodes()
    if autoscaled:
        names = ", ".join(n["name"] + ("" if n["alive"] else " (stopped)") for n in autoscaled)
        out.print(f"autoscaled nodes: {names} (`rgrid autoscaler status` for more)")
    for p in pieces:
        if p.last_crash_at:
            out.print(f"{labels[p.name]} last restarted {_ago(p.last_crash_at)}: {p.last_reason}")
    if supervisor:
        out.print(f"supervisor: pid {supervisor}; logs in {grid.log_path('supervisor').parent}")
    elif any(p.state != "stopped" for p in pieces):
        out.print("[red]supervisor: not running[/red] (`rgrid local up` starts it again)")
    node = grid.node_info()
    if node:
        warning = "" if node["isolated"] else "  [red](unisolated: jobs run as plain processes)[/red]"
        out.print(f"sandbox: {node['sandbox']}{warning}   runtimes: {', '.join(node['runtimes'])}")
    token = grid.ray_token_path()
    if token.exists():
        out.print(f"Ray token (the dashboard asks for it): {token}")
    return healthy


def _ago(at: float) -> str:
    seconds = max(0, int(time.time() - at))
    return f"{seconds} s ago" if seconds < 120 else f"{seconds // 60} min ago"


def _ask(option: str, question: str, secret: bool) -> str:
    """A value the user left out, asked for on a terminal (a key without
    echo); elsewhere, a usage error."""
    if not sys.stdin.isatty():
        raise UsageError(f"{option} is required")
    from rich.prompt import Prompt

    answer = Prompt.ask(question, console=err.rich, password=secret).strip()
    if not answer:
        raise UsageError(f"{option} is required")
    return answer


def init(api_url: str | None, api_key: str | None) -> int:
    """Point the CLI at a remote API and store its key (mode 0600)."""
    api_url = api_url or _ask("--api-url", "rgrid API URL", secret=False)
    api_key = api_key or _ask("--api-key", "API key", secret=True)
    with Client(Target(api_url=api_url.rstrip("/"), api_key=api_key)) as client:
        client.list_executions(limit=1)
    save_remote(rgrid_home(), api_url, api_key)
    say(f"saved; rgrid now talks to {api_url}")
    return 0


def add_commands(commands: Commands) -> None:
    setup = commands.add("init", init)
    setup.add_argument("--api-url", help="e.g. https://rgrid.example.com (asked for when left out).")
    setup.add_argument("--api-key", help="Your rgrid API key (asked for, without echo, when left out).")
    local = commands.group("local", "The embedded grid on this machine.")
    start = local.add("up", up)
    nodes = bounded_int(0, 16)
    start.add_argument(
        "--workers", type=nodes, help="Extra worker nodes beside the head (kept until changed)."
    )
    start.add_argument(
        "--database-url",
        help="Run the grid's API on this database, e.g. postgresql://... (kept until changed; an empty "
        "value goes back to SQLite in RGRID_HOME).",
    )
    start.add_argument(
        "--max-workers",
        type=nodes,
        help="Autoscale between 0 and N worker nodes on this machine (the head then runs no jobs; "
        "0 turns it off; kept until changed).",
    )
    local.add("down", down)
    json_flag(local.add("status", status_))
