"""`rgrid run`: ship a script and its files, run it, bring everything back."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from rgrid.batchplan import BatchPlan, plan_batch, uses_placeholder
from rgrid.cli.batch import run_batch
from rgrid.cli.connect import connect
from rgrid.cli.console import err, out, print_json, say
from rgrid.cli.parser import SCRIPT_ARGS, Commands, bounded_int, positive_int, script_and_args
from rgrid.client import Client
from rgrid.config import rgrid_home
from rgrid.errors import UsageError, exit_code_for
from rgrid.follow import follow, write_chunk
from rgrid.hashcache import sha256_files
from rgrid.inputs import RunPlan, plan_run
from rgrid.outcome import describe
from rgrid.projectconfig import RunOptions
from rgrid.projectconfig import resolve as resolve_options
from rgrid.requirements import RefusedRequirement, check_requirements
from rgrid.transfer import Progress, download, upload_missing
from rgrid.units import job_resources, parse_env
from rgrid.wire import ExecutionCreate, ExecutionView, InputFile, JobSpec, Status

PROGRESS_MIN_BYTES = 8 * 1024 * 1024


def _progress_factory(enabled: bool) -> Callable[[int], Progress]:
    """A bar for an upload big enough to watch, on a terminal only."""

    def factory(total: int) -> Progress:
        if not enabled or total < PROGRESS_MIN_BYTES or not err.is_terminal:
            return lambda _n: None
        from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

        bar = Progress(
            "[dim]rgrid: uploading",
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            console=err.rich,
            transient=True,
        )
        bar.start()
        task = bar.add_task("upload", total=total)

        def advance(n: int) -> None:
            bar.advance(task, n)
            if bar.tasks[0].completed >= total:
                bar.stop()

        return advance

    return factory


def _options_shown(options: RunOptions) -> dict[str, dict[str, object]]:
    """Each option a run gets and where it came from (for --dry-run)."""
    values = {
        "runtime": options.runtime,
        "cpu": options.cpu,
        "memory": options.memory,
        "timeout": options.timeout,
        "include": options.include,
        "env": sorted(e.partition("=")[0] for e in options.env),  # names only: values may be secrets
    }
    return {
        key: {"value": value, "from": options.sources.get(key, "command line")}
        for key, value in values.items()
    }


def _print_options(options: RunOptions) -> None:
    for key, shown in _options_shown(options).items():
        value = shown["value"]
        if isinstance(value, list):
            if not value:
                continue
            value = " ".join(value)
        out.print(f"option  {key} = {value}  ({shown['from']})", markup=False, highlight=False)


def _print_dry_run(plan: RunPlan, options: RunOptions, as_json: bool) -> None:
    files = [{"local": str(f.local), "remote": f.remote, "size": f.size} for f in plan.files]
    if as_json:
        modules = [f.remote for f in plan.modules]
        print_json(
            {
                "script": plan.script.remote,
                "args": plan.args,
                "files": files,
                "modules": modules,
                "options": _options_shown(options),
            }
        )
        return
    _print_options(options)
    out.print(f"script  {plan.script.local} -> {plan.script.remote}")
    for module in plan.modules:
        out.print(f"module  {module.remote}", markup=False, highlight=False)
    for use in plan.uses:
        kind = "file" if use.files else "pass"
        shown = use.original if use.original == use.rewritten else f"{use.original} -> {use.rewritten}"
        out.print(f"{kind:<7} {shown}")
    total = sum(f.size for f in plan.files)
    out.print(f"upload  {len(plan.files)} file(s), {total} bytes (unchanged files are skipped)")
    for f in plan.files:
        out.print(f"        {f.remote}  ({f.size} bytes)")


def _print_batch_dry_run(plan: BatchPlan, options: RunOptions, as_json: bool) -> None:
    if as_json:
        print_json(
            {
                "script": plan.script.remote,
                "shared": [f.remote for f in plan.shared],
                "modules": [f.remote for f in plan.modules],
                "inputs": [{"input": i.label, "args": i.args} for i in plan.inputs],
                "options": _options_shown(options),
            }
        )
        return
    _print_options(options)
    out.print(f"script  {plan.script.local} -> {plan.script.remote}")
    for module in plan.modules:
        out.print(f"module  {module.remote}", markup=False, highlight=False)
    modules = {f.remote for f in plan.modules}
    for f in (f for f in plan.shared if f.remote not in modules):
        out.print(f"shared  {f.remote}  ({f.size} bytes)")
    for i in plan.inputs:
        out.print(f"input   {i.label}: {' '.join(i.args)}")
    out.print(f"batch   {len(plan.inputs)} execution(s)")


def _requirements(script: str, explicit: str | None, disabled: bool) -> str | None:
    """--requirements FILE, else a requirements.txt beside the script, unless
    --no-requirements."""
    if disabled:
        return None
    path = Path(explicit) if explicit else Path(script).parent / "requirements.txt"
    if not path.is_file():
        if explicit:
            raise UsageError(f"--requirements: no such file: {explicit}")
        return None
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read requirements file {path}: {exc.__class__.__name__}") from None
    try:
        return check_requirements(text)
    except RefusedRequirement as exc:
        raise UsageError(f"{path}: {exc}") from None


def _submit(client: Client, plan: RunPlan, spec: JobSpec, show_progress: bool) -> ExecutionView:
    digests = sha256_files([f.local for f in plan.files], rgrid_home())
    shas = {f.remote: digests[f.local] for f in plan.files}
    by_sha = {shas[f.remote]: f.local for f in plan.files}
    sizes = {shas[f.remote]: f.size for f in plan.files}
    upload_missing(client, by_sha, sizes, _progress_factory(show_progress))
    body = ExecutionCreate(
        **dict(spec),
        script=InputFile(sha256=shas[plan.script.remote], path=plan.script.remote),
        args=plan.args,
        inputs=[InputFile(sha256=shas[f.remote], path=f.remote) for f in plan.inputs],
    )
    return client.create_execution(body)


def fetch_outputs(client: Client, execution_id: str, dest: Path) -> list[Path]:
    dest.mkdir(parents=True, exist_ok=True)
    return [download(client.storage, o, dest) for o in client.outputs(execution_id).outputs]


def where_outputs_went(paths: list[Path]) -> str:
    """ "3 files → ./report/": how many, and the folder they share (or the
    one file), as the user would type it."""
    if len(paths) == 1:
        shown, folder = paths[0].resolve(), False
    else:
        shown, folder = Path(os.path.commonpath([p.resolve() for p in paths])), True
    try:
        rel = shown.relative_to(Path.cwd().resolve()).as_posix()
        text = "./" if rel == "." else f"./{rel}{'/' if folder else ''}"
    except ValueError:
        text = f"{shown}{'/' if folder else ''}"
    return f"{len(paths)} file{'' if len(paths) == 1 else 's'} → {text}"


def _explain(execution: ExecutionView) -> None:
    if execution.status == Status.SUCCEEDED:
        return
    said = describe(execution.status, execution.failure_reason, execution.exit_code)
    detail = f": {execution.failure_detail}" if execution.failure_detail else ""
    say(f"execution {execution.id} {said}{detail}")


def run(
    script: str,
    args: list[str],
    runtime: str | None,
    cpu: float | None,
    memory: str | None,
    timeout: str | None,
    env: list[str],
    include: list[str],
    no_auto_include: bool,
    output_dir: str,
    remote_only: bool,
    detach: bool,
    retries: int,
    requirements: str | None,
    no_requirements: bool,
    network: str,
    verbose: bool,
    json_out: bool,
    dry_run: bool,
    batch: str | None,
    parallel: int | None,
    cache: bool,
) -> int:
    """Run SCRIPT on the grid as if it ran here; exit with its exit code."""
    options = resolve_options(
        {
            "runtime": runtime,
            "cpu": cpu,
            "memory": memory,
            "timeout": timeout,
            "include": include,
            "env": env,
        },
        Path.cwd(),
    )
    runtime, include = options.runtime, options.include
    try:
        resources = job_resources(options.cpu, options.memory, options.timeout)
        env_values = parse_env(options.env)
    except UsageError as exc:
        raise UsageError(f"{exc}{options.where_set(str(exc))}") from None
    if network not in ("default", "none"):
        raise UsageError(f"invalid --network {network!r}: use 'default' or 'none'")
    if batch is None and uses_placeholder(args):
        raise UsageError("'{}' in the arguments marks where a batch input goes: it needs --batch GLOB")
    if batch is None and parallel is not None:
        raise UsageError("--parallel limits a batch: it needs --batch GLOB")
    spec = JobSpec(
        env=env_values,
        runtime=runtime,
        resources=resources,
        retries=retries,
        requirements=_requirements(script, requirements, no_requirements),
        network=network != "none",
        verbose=verbose,
        cache=cache,
    )
    if batch is not None:
        batch_plan = plan_batch(script, batch, args, include, Path.cwd(), not no_auto_include)
        for note in batch_plan.notes:
            say(note)
        if dry_run:
            _print_batch_dry_run(batch_plan, options, json_out)
            return 0
        with connect(start_local=True) as client:
            return run_batch(
                client, batch_plan, spec, parallel, detach, json_out, Path(output_dir), remote_only
            )
    plan = plan_run(script, args, include, auto_include=not no_auto_include)
    for note in plan.notes:
        say(note)
    if dry_run:
        _print_dry_run(plan, options, json_out)
        return 0
    with connect(start_local=True) as client:
        execution = _submit(client, plan, spec, show_progress=not json_out)
        if detach:
            if json_out:
                print_json(execution)
            else:
                out.print(execution.id)
            return 0
        return follow_run(client, execution.id, json_out, Path(output_dir), remote_only)


def follow_run(client: Client, execution_id: str, json_out: bool, output_dir: Path, remote_only: bool) -> int:
    """Stream a run's output to its end (saying why it waits, if it does),
    bring its outputs back, and exit with its exit code. Ctrl+C leaves it
    running."""
    try:
        final = follow(
            client,
            execution_id,
            on_chunk=(lambda _c: None) if json_out else write_chunk,
            on_waiting=None if json_out else (lambda why: say(f"waiting: {why}")),
        )
    except KeyboardInterrupt:
        say(
            f"detached; {execution_id} goes on. Follow: rgrid wait {execution_id}"
            f"  Cancel: rgrid cancel {execution_id}"
        )
        return 130
    if not remote_only and final.status != Status.CANCELLED:
        landed = fetch_outputs(client, final.id, output_dir)
        if landed and not json_out and err.is_terminal:
            say(where_outputs_went(landed))
    if json_out:
        print_json(final)
    else:
        _explain(final)
    return exit_code_for(final)


def add_commands(commands: Commands) -> None:
    p = commands.add("run", run, passes=SCRIPT_ARGS)
    # Their defaults come from the project's file ([tool.rgrid] in
    # pyproject.toml, or rgrid.toml), else rgrid's own (rgrid.projectconfig).
    p.add_argument(
        "--runtime", help="Runtime, e.g. python or python:3.12 (default: python, or the project's)."
    )
    p.add_argument("--cpu", type=float, help="CPUs the script gets (default: 1, or the project's).")
    p.add_argument("--memory", help="Memory limit, e.g. 512M or 2G (default: 1G, or the project's).")
    p.add_argument("--timeout", help="Wall-time limit, e.g. 90s, 30m, 2h (default: 1h, or the project's).")
    p.add_argument(
        "--env",
        action="append",
        default=[],
        help="NAME=value for the script (repeatable); loader variables such as LD_PRELOAD too, "
        "applied only to the script's own unprivileged process.",
    )
    p.add_argument(
        "--include", action="append", default=[], help="Extra file or folder to ship (repeatable)."
    )
    p.add_argument(
        "--no-auto-include",
        action="store_true",
        help="Ship only the script, its file arguments and --include; not the modules it imports "
        "from its folder.",
    )
    p.add_argument("--output-dir", default=".", help="Where outputs land.")
    p.add_argument("--remote-only", action="store_true", help="Leave outputs on the grid.")
    p.add_argument("-d", "--detach", action="store_true", help="Submit and return at once.")
    p.add_argument(
        "--retries",
        type=bounded_int(0, 10),
        default=2,
        help="Extra attempts after infrastructure failures (0 to 10).",
    )
    p.add_argument(
        "--requirements",
        help="Requirements file to install (default: requirements.txt beside the script): package names "
        "with versions, extras and markers, or name @ https://...; no options, files or local paths.",
    )
    p.add_argument(
        "--no-requirements", action="store_true", help="Install nothing, even if requirements.txt exists."
    )
    p.add_argument("--network", default="default", help="'default' (the job may use the network) or 'none'.")
    p.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="Show the requirements installer's output in the job's log even when the install works "
        "(nothing to show when this node has them cached).",
    )
    p.add_argument("--json", dest="json_out", action="store_true", help="Print the execution as JSON.")
    p.add_argument("--dry-run", action="store_true", help="Show what would be shipped; run nothing.")
    p.add_argument(
        "--batch",
        metavar="GLOB",
        help="Run once per file this glob matches ('**' allowed); '{}' in ARGS marks where it goes.",
    )
    p.add_argument(
        "--parallel", metavar="N", type=positive_int, help="With --batch: at most N at once (server-side)."
    )
    p.add_argument(
        "--cache",
        action="store_true",
        help="Reuse an earlier succeeded run of the same script, inputs, args, runtime, requirements "
        "and env instead of running (only for scripts that do not read the clock, the network or "
        "randomness).",
    )
    script_and_args(p, "The script to run.", "Its arguments; local files are shipped.")
