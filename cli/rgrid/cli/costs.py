"""`rgrid autoscaler status`, `rgrid cost` and `rgrid estimate`: what the
grid is doing about machines, and what runs cost."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from rgrid.cli.connect import connect
from rgrid.cli.console import make_table, out, print_json
from rgrid.cli.parser import SCRIPT_ARGS, Commands, json_flag, script_and_args
from rgrid.errors import UsageError
from rgrid.hashcache import sha256_file
from rgrid.sizing import estimate_line
from rgrid.units import parse_since
from rgrid.wire import EstimateRequest


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def autoscaler_status(json_out: bool) -> int:
    """The provider and caps, each node (state, type, location, age, €/h), the
    pending demand, and why it is not scaling now."""
    with connect(start_local=False) as client:
        status = client.autoscaler()
    if json_out:
        print_json(status)
        return 0
    caps = status.caps
    state = "active" if status.active else "[red]not running[/red]"
    if status.provider == "none":
        state = "off"
    out.print(f"provider: [bold]{status.provider}[/bold] ({state})")
    if caps:
        out.print(
            f"caps: {caps.get('min_nodes')}–{caps.get('max_nodes')} nodes, at most {caps.get('max_pending')} "
            f"pending, budget {caps.get('budget_eur_per_hour')} €/h (spending {status.spend_eur_per_hour:.4f} €/h)"
        )
    out.print(f"demand: {status.demand} waiting, {status.unmet} that fit no live or pending node")
    table = make_table("node", "state", "type", "location", "age", "€/h", "why")
    for n in status.nodes:
        table.add_row(
            n.name,
            n.state,
            n.server_type,
            n.location,
            _age(n.age_s),
            f"{n.price_eur_per_hour:.4f}",
            n.reason or "",
        )
    if status.nodes:
        out.print(table)
    else:
        out.print("nodes: none")
    for why in status.blocked:
        out.print(f"[yellow]not scaling up:[/yellow] {why}")
    for where, until in status.backoff.items():
        out.print(f"backed off: {where} until {datetime.fromtimestamp(until, UTC):%H:%M:%S} UTC")
    return 0


def cost(since: str | None, json_out: bool) -> int:
    """Your executions' cost; with an admin key, also node-hours and € per
    node, every owner's share, and idle time."""
    try:
        start = parse_since(since) if since is not None else None
    except ValueError as exc:
        raise UsageError(f"--since {exc}") from None
    with connect(start_local=False) as client:
        report = client.cost(start)
    if json_out:
        print_json(report)
        return 0
    if report.executions_eur == 0 and not any(n.price_eur_per_hour for n in report.nodes):
        out.print(
            f"no priced node since {report.since:%Y-%m-%d %H:%M} UTC (a local grid costs nothing): "
            f"{report.attempts} attempts ran for free"
        )
        return 0
    table = make_table("node", "provider", "type", "state", "€/h", "hours", "€")
    for n in report.nodes:
        table.add_row(
            n.name,
            n.provider,
            n.server_type,
            n.state,
            f"{n.price_eur_per_hour:.4f}",
            f"{n.hours:.2f}",
            f"{n.eur:.4f}",
        )
    out.print(f"since {report.since:%Y-%m-%d %H:%M} UTC")
    if report.nodes:
        out.print(table)
    if report.node_hours is not None and report.nodes_eur is not None:
        out.print(f"nodes: {report.node_hours:.2f} node-hours, {report.nodes_eur:.4f} €")
    out.print(f"your executions: {report.executions_eur:.4f} € over {report.attempts} attempts")
    if report.owners_eur:
        out.print("by owner:")
        for who, eur in report.owners_eur.items():
            out.print(f"  {who}: {eur:.4f} €", markup=False, highlight=False)
    if report.idle_eur is not None:
        out.print(f"idle (no execution used it): {report.idle_eur:.4f} €")
    return 0


def estimate(script: str, args: list[str], cpu: float, json_out: bool) -> int:
    """Predict a run's duration and cost from your history of the same
    script, and the --cpu and --memory what those runs used suggests. `args` are taken so that a run's command line can be pasted
    after `rgrid estimate`; the history is the script's, whatever its args."""
    path = Path(script)
    if not path.is_file():
        raise UsageError(f"no such script: {script}")
    with connect(start_local=False) as client:
        guess = client.estimate(
            EstimateRequest(script_sha256=sha256_file(path), script_name=path.name, cpu=cpu)
        )
    if json_out:
        print_json(guess)
        return 0
    if not guess.runs or guess.median_s is None:
        out.print(f"no succeeded run of {path.name} yet: nothing to estimate from")
        return 0
    cost_text = f"{guess.cost_eur:.5f} €" if guess.cost_eur is not None else "unknown (no priced server type)"
    out.print(
        f"{path.name}: about {guess.median_s:.1f} s (90% within {guess.p90_s:.1f} s), {cost_text}; "
        f"from {guess.runs} runs of the {guess.basis}"
    )
    sized = estimate_line(guess)
    if sized:
        out.print(f"  {sized}", markup=False, highlight=False)
    return 0


def add_commands(commands: Commands) -> None:
    spent = commands.add("cost", cost)
    spent.add_argument("--since", help="From when: 30m, 24h, 7d or an ISO date (default: 30 days).")
    json_flag(spent)
    guess = commands.add("estimate", estimate, passes=SCRIPT_ARGS)
    guess.add_argument("--cpu", type=float, default=1.0, help="CPUs the run would ask for.")
    json_flag(guess)
    script_and_args(guess, "The script you would run.", "Its arguments (not used for the estimate).")
    autoscaler = commands.group("autoscaler", "The autoscaler of the grid.")
    json_flag(autoscaler.add("status", autoscaler_status))
