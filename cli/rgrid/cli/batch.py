"""`rgrid run --batch`: the same script over every file a glob matches, as
one batch the server runs at most `--parallel` at a time; one progress bar,
each input's outputs in its own folder, and a summary naming what failed."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from rgrid.batchplan import BatchPlan, output_folders
from rgrid.cli.console import err, out, print_json, say
from rgrid.client import Client
from rgrid.config import rgrid_home
from rgrid.errors import exit_code_for_batch
from rgrid.hashcache import sha256_files
from rgrid.inputs import LocalFile
from rgrid.outcome import describe
from rgrid.transfer import Progress, download, upload_missing
from rgrid.wire import BatchCreate, BatchItem, BatchStatus, BatchView, InputFile, JobSpec, Status

POLL_S = 0.5
DOWNLOAD_WORKERS = 8
SHOWN_FAILURES = 20
TAIL_LINES = 3


def _no_progress(_total: int) -> Progress:
    return lambda _n: None


def submit_batch(client: Client, plan: BatchPlan, spec: JobSpec, parallel: int | None) -> BatchView:
    """Hash and upload every file (each once), then create the whole batch in
    one call: nothing is submitted unless every input made it up."""
    files = plan.files
    digests = sha256_files([f.local for f in files], rgrid_home())
    by_sha = {digests[f.local]: f.local for f in files}
    sizes = {digests[f.local]: f.size for f in files}
    upload_missing(client, by_sha, sizes, _no_progress)

    def ref(f: LocalFile) -> InputFile:
        return InputFile(sha256=digests[f.local], path=f.remote)

    body = BatchCreate(
        script=ref(plan.script),
        shared=[ref(f) for f in plan.shared],
        items=[BatchItem(input=i.label, inputs=[ref(f) for f in i.files], args=i.args) for i in plan.inputs],
        parallel=parallel,
        **dict(spec),
    )
    return client.create_batch(body)


def watch_batch(client: Client, batch: BatchView, show_bar: bool) -> BatchView:
    """Poll the batch's counts until every execution is final, under one bar."""
    if not show_bar:
        while client.get_batch(batch.id, executions=False).status == BatchStatus.RUNNING:
            time.sleep(POLL_S)
        return client.get_batch(batch.id)
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.progress import Progress as Bar

    states = TextColumn("running {task.fields[running]}  failed {task.fields[failed]}")
    columns = (BarColumn(), MofNCompleteColumn(), states, TimeElapsedColumn(), TimeRemainingColumn())
    with Bar("[dim]rgrid:[/dim] batch", *columns, console=err.rich) as p:
        task = p.add_task("batch", total=batch.total, running=0, failed=0)
        while True:
            now = client.get_batch(batch.id, executions=False)
            done = sum(n for s, n in now.counts.items() if Status(s).final)
            running = now.counts.get(Status.RUNNING, 0) + now.counts.get(Status.DISPATCHED, 0)
            failed = now.counts.get(Status.FAILED, 0)
            p.update(task, completed=done, running=running, failed=failed)
            if now.status != BatchStatus.RUNNING:
                break
            time.sleep(POLL_S)
    return client.get_batch(batch.id)


def fetch_batch_outputs(client: Client, batch: BatchView, dest: Path) -> list[Path]:
    """Each input's outputs into dest/outputs/<its folder>/ (one API call for
    the whole batch, several downloads at a time)."""
    folders = output_folders([e.input for e in batch.executions])
    by_execution = client.batch_outputs(batch.id).outputs
    wanted = [
        (o, dest / "outputs" / folders[e.input])
        for e in batch.executions
        if e.status != Status.CANCELLED
        for o in by_execution.get(e.id, [])
    ]
    with ThreadPoolExecutor(DOWNLOAD_WORKERS) as pool:
        return list(pool.map(lambda job: download(client.storage, *job), wanted))


def _stderr_tail(client: Client, execution_id: str) -> list[str]:
    text, after = "", 0
    while True:
        page = client.logs(execution_id, after=after)
        text += "".join(c.data for c in page.chunks if c.stream == "stderr")
        if not page.chunks:
            break
        after = page.next_seq
    return [line for line in text.splitlines() if line.strip()][-TAIL_LINES:]


def summarize(client: Client, batch: BatchView, outputs: Path | None) -> None:
    """The counts (what --cache reused), where the outputs went, and each
    failure with the end of its stderr and how to run it again."""
    counts = ", ".join(f"{n} {s}" for s, n in sorted(batch.counts.items()))
    reused = sum(e.cached_from is not None for e in batch.executions)
    ran = f" ({reused} reused, {batch.total - reused} ran)" if reused else ""
    say(f"batch {batch.id}: {batch.total} inputs, {counts}{ran}")
    if outputs is not None and any(e.status == Status.SUCCEEDED for e in batch.executions):
        say(f"each input's outputs: {outputs / 'outputs'}/<its path without the extension>/")
    failed = [e for e in batch.executions if e.status == Status.FAILED]
    for e in failed[:SHOWN_FAILURES]:
        say(f"  {e.input}: {describe(e.status, e.failure_reason, e.exit_code)}")
        for line in _stderr_tail(client, e.id):
            err.print(f"      {line}", markup=False, highlight=False)
    if len(failed) > SHOWN_FAILURES:
        say(f"  ... and {len(failed) - SHOWN_FAILURES} more: rgrid status {batch.id}")
    if failed:
        say(
            f"the same inputs again: rgrid retry {batch.id} --failed; after changing them: "
            "rgrid run --cache --batch ... (what succeeded is reused)"
        )


def run_batch(
    client: Client,
    plan: BatchPlan,
    spec: JobSpec,
    parallel: int | None,
    detach: bool,
    json_out: bool,
    output_dir: Path,
    remote_only: bool,
) -> int:
    batch = submit_batch(client, plan, spec, parallel)
    if detach:
        if json_out:
            print_json(batch)
        else:
            out.print(batch.id)
        return 0
    return follow_batch(client, batch, json_out, output_dir, remote_only)


def follow_batch(
    client: Client, batch: BatchView, json_out: bool, output_dir: Path, remote_only: bool
) -> int:
    """Watch a batch to its end under one bar, bring its outputs back, sum
    it up; exit as `run --batch` does. Ctrl+C leaves it running."""
    try:
        # Inside the try: a Ctrl+C that lands while this line is written
        # still tells the user the batch id and that it goes on.
        say(
            f"batch {batch.id}: {batch.total} inputs"
            + (f", at most {batch.parallel} at a time" if batch.parallel else "")
        )
        final = watch_batch(client, batch, show_bar=not json_out and err.is_terminal)
    except KeyboardInterrupt:
        say(f"detached; {batch.id} goes on. Follow: rgrid wait {batch.id}  Cancel: rgrid cancel {batch.id}")
        return 130
    if not remote_only:
        fetch_batch_outputs(client, final, output_dir)
    if json_out:
        print_json(final)
    else:
        summarize(client, final, None if remote_only else output_dir)
    return exit_code_for_batch(final)
