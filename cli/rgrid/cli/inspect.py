"""Reading and steering executions: status, logs, list, cancel, retry, download."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

from pydantic import BaseModel

from rgrid.cli.batch import fetch_batch_outputs, follow_batch
from rgrid.cli.connect import connect
from rgrid.cli.console import make_table, out, print_json, say
from rgrid.cli.parser import Commands, Parser, json_flag
from rgrid.cli.run import fetch_outputs, follow_run
from rgrid.client import Client
from rgrid.errors import UsageError, exit_code_for
from rgrid.follow import follow, write_chunk
from rgrid.outcome import describe
from rgrid.sizing import batch_usage_line, usage_hint, usage_line
from rgrid.wire import (
    BatchStatus,
    BatchView,
    ExecutionList,
    ExecutionView,
    FailureReason,
    Role,
    Status,
    is_batch_id,
)

ID_HELP = "Execution id or a unique prefix of it."
ANY_ID_HELP = "Execution or batch id (batch ids begin with b-), or a unique prefix of it."


def _emit(json_out: bool, value: BaseModel | dict | list, human: str) -> int:
    """Every reading command prints JSON with --json, one human line otherwise."""
    if json_out:
        print_json(value)
    else:
        out.print(human)
    return 0


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def _show(execution: ExecutionView) -> None:
    e = execution
    out.print(f"[bold]{e.id}[/bold]  {describe(e.status, e.failure_reason, e.exit_code)}")
    if e.waiting:
        out.print(f"  waiting   {e.waiting}", markup=False, highlight=False)
    if e.failure_detail:
        out.print(f"  why       {e.failure_detail}")
    if e.cached_from:
        out.print(f"  cached    the result of {e.cached_from}, reused (--cache): nothing ran")
    out.print(f"  script    {e.script} {' '.join(e.args)}")
    out.print(
        f"  resources {e.resources.cpu:g} cpu, {e.resources.memory_mb} MiB, "
        f"timeout {e.resources.timeout_s:g} s, runtime {e.runtime}"
    )
    out.print(
        f"  created   {_when(e.created_at)}   finished {_when(e.finished_at)}"
        + (f"   took {e.duration_s:.2f} s" if e.duration_s is not None else "")
    )
    if e.exit_code is not None:
        out.print(f"  exit code {e.exit_code}")
    measured = next((a for a in reversed(e.attempts) if a.usage is not None), None)
    if measured is not None and measured.usage is not None:
        out.print(f"  usage     {usage_line(measured.usage, e.resources)}", markup=False, highlight=False)
        hint = usage_hint(
            measured.usage,
            e.resources,
            out_of_memory=measured.failure_reason == FailureReason.OUT_OF_MEMORY,
            succeeded=measured.status == Status.SUCCEEDED,
        )
        if hint:
            out.print(f"  hint      {hint}", markup=False, highlight=False)
    if e.provenance is not None and e.provenance.interpreter:
        count = len(e.provenance.packages or [])
        out.print(
            f"  ran with  {e.provenance.interpreter}, {count} package{'' if count == 1 else 's'} "
            f"(the full list: rgrid status {e.id} --json)",
            markup=False,
            highlight=False,
        )
    if e.attempts:
        table = make_table("attempt", "status", "worker", "started", "finished", "exit", "reason")
        for a in e.attempts:
            table.add_row(
                str(a.number),
                a.status,
                a.worker or "-",
                _when(a.started_at),
                _when(a.finished_at),
                "-" if a.exit_code is None else str(a.exit_code),
                a.failure_reason or "-",
            )
        out.print(table)


# A batch this small is shown whole; a larger one by its counts and the
# inputs that did not succeed (drawing 5,000 rows took seconds).
WHOLE_BATCH_ROWS = 20


def show_batch(b: BatchView, all_rows: bool) -> None:
    done = sum(n for st, n in b.counts.items() if Status(st).final)
    counts = ", ".join(f"{n} {st}" for st, n in sorted(b.counts.items()))
    out.print(f"[bold]{b.id}[/bold]  {b.status}  {done}/{b.total} done ({counts})")
    out.print(f"  script    {b.script}" + (f"   at most {b.parallel} at a time" if b.parallel else ""))
    elapsed = ((b.finished_at or datetime.now(UTC)) - b.created_at).total_seconds()
    eta = (
        f"   ETA {elapsed / done * (b.total - done):.0f} s"
        if b.status == BatchStatus.RUNNING and done
        else ""
    )
    out.print(f"  created   {_when(b.created_at)}   elapsed {elapsed:.0f} s{eta}")
    if b.usage is not None and b.usage.attempts:
        out.print(f"  used      {batch_usage_line(b.usage)}", markup=False, highlight=False)
    whole = all_rows or b.total <= WHOLE_BATCH_ROWS
    shown = b.executions  # a large batch's were asked for notable ones only
    if shown:
        table = make_table("execution", "input", "status")
        for e in shown:
            table.add_row(e.id, e.input, describe(e.status, e.failure_reason, e.exit_code))
        out.print(table)
    if not whole:
        left = b.total - len(shown)
        out.print(
            f"  {left} more not shown (succeeded, queued, or past the first {WHOLE_BATCH_ROWS}): "
            f"rgrid status {b.id} --all"
        )


def _batch_to_show(client: Client, batch_id: str, whole: bool) -> BatchView:
    """A batch as `status` shows it: whole (--all, --json) or small, else
    its counts and the first notable inputs, filtered by the server."""
    if whole:
        return client.get_batch(batch_id)
    notable = client.get_batch(batch_id, notable=True, limit=WHOLE_BATCH_ROWS)
    return client.get_batch(batch_id) if notable.total <= WHOLE_BATCH_ROWS else notable


def status(execution_id: str, json_out: bool, all_: bool) -> int:
    """Show an execution: every attempt, what it used against what it asked
    for (with a hint when a limit was far off) and what exactly it ran
    (--json: its provenance: hashes, packages, nodes). Or a batch: its
    counts, its totals, and the first inputs that are running or ended
    other than succeeded (every input with --all)."""
    with connect(start_local=False) as client:
        shown: BaseModel = (
            _batch_to_show(client, execution_id, whole=all_ or json_out)
            if is_batch_id(execution_id)
            else client.get_execution(execution_id, provenance=True)
        )
    if json_out:
        print_json(shown)
    elif isinstance(shown, BatchView):
        show_batch(shown, all_)
    else:
        _show(cast(ExecutionView, shown))
    return 0


def logs(execution_id: str, follow_: bool, json_out: bool) -> int:
    """Print an execution's output (stdout to stdout, stderr to stderr);
    following it, exit as `rgrid run` would."""
    if is_batch_id(execution_id):
        raise UsageError(
            f"{execution_id} is a batch: `rgrid status {execution_id}` lists its executions, "
            "and `rgrid logs EXECUTION` prints one's output"
        )
    with connect(start_local=False) as client:
        if follow_ and not json_out:
            try:
                return exit_code_for(follow(client, execution_id))
            except KeyboardInterrupt:
                say(f"stopped following; {execution_id} goes on. Cancel: rgrid cancel {execution_id}")
                return 130
        after, chunks = 0, []
        while True:
            page = client.logs(execution_id, after=after)
            chunks.extend(page.chunks)
            if not page.chunks:
                break
            after = page.next_seq
    if json_out:
        print_json([c.model_dump(mode="json") for c in chunks])
    else:
        for chunk in chunks:
            write_chunk(chunk)
    return 0


def list_(limit: int, json_out: bool) -> int:
    """List your executions and batches, newest first; a batch is one line
    with its counts."""
    with connect(start_local=False) as client:
        page: ExecutionList = client.list_executions(limit)
        batches = client.list_batches(limit).batches
    if json_out:
        print_json({**page.model_dump(mode="json"), "batches": [b.model_dump(mode="json") for b in batches]})
        return 0
    rows = [
        (
            e.created_at,
            e.id,
            describe(e.status, e.failure_reason, e.exit_code),
            " ".join([e.script, *e.args])[:60],
            f"{e.duration_s:.2f} s" if e.duration_s is not None else "-",
        )
        for e in page.executions
        if e.batch_id is None
    ]
    rows += [
        (
            b.created_at,
            b.id,
            f"{b.status} ({', '.join(f'{n} {st}' for st, n in sorted(b.counts.items()))})",
            f"{b.script} × {b.total} inputs",
            "-",
        )
        for b in batches
    ]
    rows.sort(key=lambda r: _aware(r[0]), reverse=True)
    table = make_table("id", "status", "script", "created", "took")
    for created, ident, state, script, took in rows[:limit]:
        table.add_row(ident, state, script, _when(created), took)
    out.print(table)
    return 0


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def cancel(execution_id: str, json_out: bool) -> int:
    """Cancel an execution (a running script is killed), or everything of a
    batch that has not ended."""
    with connect(start_local=False) as client:
        if is_batch_id(execution_id):
            batch = client.cancel_batch(execution_id)
            cancelled = batch.counts.get(Status.CANCELLED, 0)
            stopping = batch.counts.get(Status.RUNNING, 0) + batch.counts.get(Status.DISPATCHED, 0)
            ended = batch.total - cancelled - stopping - batch.counts.get(Status.QUEUED, 0)
            said = f"{batch.id}: {cancelled} cancelled, {ended} had ended"
            return _emit(json_out, batch, said + (f", {stopping} being stopped" if stopping else ""))
        execution = client.cancel(execution_id)
    # A running script is being stopped: its end arrives a moment later.
    said = (
        "cancelling"
        if not execution.status.final
        else describe(execution.status, execution.failure_reason, execution.exit_code)
    )
    return _emit(json_out, execution, f"{execution.id}: {said}")


def retry(execution_id: str, failed: bool, exact: bool, json_out: bool, detach: bool, output_dir: str) -> int:
    """Run an execution again, with the same script, inputs and options, as
    a new execution linked to the old one (it prints the new id); with
    --exact, with the exact packages it ran with. A batch again as a new
    batch, followed with its bar unless -d (with --failed: its failed
    inputs only). Inputs you changed since: rgrid run --cache."""
    if exact and is_batch_id(execution_id):
        raise UsageError("--exact applies to one execution; retry a batch's inputs by their ids")
    with connect(start_local=False) as client:
        if is_batch_id(execution_id):
            batch = client.retry_batch(execution_id, failed_only=failed)
            if detach:
                return _emit(json_out, batch, batch.id)
            return follow_batch(client, batch, json_out, Path(output_dir), remote_only=False)
        if failed:
            raise UsageError("--failed applies to a batch (its id begins with b-)")
        execution = client.retry(execution_id, exact=exact)
    return _emit(json_out, execution, execution.id)


def wait_(execution_id: str, output_dir: str, remote_only: bool, json_out: bool) -> int:
    """Follow a detached run or batch again to its end: a run's output, a
    batch's bar; then its outputs, and its exit code as `run` gives it."""
    with connect(start_local=False) as client:
        if is_batch_id(execution_id):
            batch = client.get_batch(execution_id, executions=False)
            return follow_batch(client, batch, json_out, Path(output_dir), remote_only)
        return follow_run(client, execution_id, json_out, Path(output_dir), remote_only)


def download_(execution_id: str, dest: str, json_out: bool) -> int:
    """Download an execution's outputs into DEST (default: here); a batch's
    into DEST/outputs/<each input's folder>/."""
    with connect(start_local=False) as client:
        if is_batch_id(execution_id):
            paths = fetch_batch_outputs(client, client.get_batch(execution_id), Path(dest))
        else:
            paths = fetch_outputs(client, execution_id, Path(dest))
    return _emit(json_out, [str(p) for p in paths], "\n".join(str(p) for p in paths))


def workers(all_: bool, json_out: bool) -> int:
    """The grid's capacity; with an admin key, every node too: status,
    heartbeat age, running executions. --json prints {"grid": …, "workers":
    [...], or null for a user key}."""
    with connect(start_local=False) as client:
        grid = client.grid()
        listing = client.workers(include_ended=all_) if grid.role == Role.ADMIN else None
    if json_out:
        nodes = [w.model_dump(mode="json") for w in listing.workers] if listing is not None else None
        print_json({"grid": grid.model_dump(mode="json"), "workers": nodes})
        return 0
    out.print(
        f"{grid.nodes} node{'s' if grid.nodes != 1 else ''}, {grid.free_cpus:g} of {grid.cpus:g} CPUs free, "
        f"{grid.running} running, {grid.queued} queued"
    )
    if listing is None:
        out.print("[dim]each node's detail needs an admin key[/dim]")
        return 0
    table = make_table(
        "worker", "status", "heartbeat", "running", "runtimes", "sandbox", "provider", "type", "€/h", "pid"
    )
    for w in listing.workers:
        age = f"{w.heartbeat_age_s:.1f} s ago" if w.heartbeat_age_s is not None else "-"
        price = f"{w.price_eur_per_hour:.4f}" if w.price_eur_per_hour is not None else "-"
        table.add_row(
            w.id,
            w.status,
            age,
            str(w.running),
            ", ".join(w.runtimes),
            w.sandbox,
            w.provider,
            w.server_type or "-",
            price,
            str(w.pid or "-"),
        )
    out.print(table)
    return 0


def drain(worker_id: str) -> int:
    """Drain a node (admin): it takes no new work, finishes what it runs,
    and leaves."""
    with connect(start_local=False) as client:
        ack = client.drain_worker(worker_id)
    out.print(f"{worker_id}: {ack.status}")
    return 0


def _with_id(commands: Commands, name: str, handler: Callable[..., int], help_: str = ANY_ID_HELP) -> Parser:
    parser = commands.add(name, handler)
    parser.add_argument("execution_id", metavar="ID", help=help_)
    json_flag(parser)
    return parser


def add_commands(commands: Commands) -> None:
    _with_id(commands, "status", status).add_argument(
        "--all",
        dest="all_",
        action="store_true",
        help="A batch of more than 20 inputs: every input, not only the first running, failed or cancelled.",
    )
    logs_parser = _with_id(commands, "logs", logs, ID_HELP)
    logs_parser.add_argument(
        "-f", "--follow", dest="follow_", action="store_true", help="Keep printing until it ends."
    )
    listing = commands.add("list", list_)
    listing.add_argument("--limit", type=int, default=20, help="How many, newest first.")
    json_flag(listing)
    _with_id(commands, "cancel", cancel)
    retry_parser = _with_id(commands, "retry", retry)
    retry_parser.add_argument(
        "--failed",
        action="store_true",
        help="A batch: only its failed inputs, as they were (the same files).",
    )
    retry_parser.add_argument(
        "--exact",
        action="store_true",
        help="Install exactly the package versions it ran with (see rgrid status ID --json, "
        "provenance.packages), whatever its requirements file resolves to now.",
    )
    retry_parser.add_argument(
        "-d", "--detach", action="store_true", help="A batch: print its id and return at once."
    )
    retry_parser.add_argument("--output-dir", default=".", help="A batch: where its outputs land.")
    waiting = _with_id(commands, "wait", wait_)
    waiting.add_argument("--output-dir", default=".", help="Where outputs land.")
    waiting.add_argument("--remote-only", action="store_true", help="Leave outputs on the grid.")
    download_parser = _with_id(commands, "download", download_)
    download_parser.add_argument("dest", nargs="?", default=".", help="Folder to put outputs in.")
    nodes = commands.group("workers", "The grid's capacity, and (admins) its nodes.", default=workers)
    nodes.parser.add_argument(
        "--all", dest="all_", action="store_true", help="Include nodes that left or died (admins)."
    )
    json_flag(nodes.parser)
    nodes.add("drain", drain).add_argument("worker_id", metavar="WORKER", help="The node's worker id.")
