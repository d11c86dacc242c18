"""A job's options (`rgrid.wire.JobSpec`) as an execution's columns, and
back: the one place the database side of a job option is written. A new
option is a field of JobSpec, a column (and its migration), and a line in
each function here."""

from __future__ import annotations

from typing import Any

from rgrid.wire import JobSpec, Resources
from rgrid_api.db.models import Execution


def columns(spec: JobSpec, runtime: str) -> dict[str, Any]:
    """The execution's columns for `spec`, with the runtime resolved
    (`python` -> `python:3.11`). `cache` is no column: it only decides, at
    submission, whether an earlier result is reused."""
    return {
        "env": spec.env,
        "runtime": runtime,
        "requirements": spec.requirements,
        "network": spec.network,
        "verbose": spec.verbose,
        "cpu": spec.resources.cpu,
        "memory_mb": spec.resources.memory_mb,
        "timeout_s": spec.resources.timeout_s,
        "retries": spec.retries,
    }


def of(execution: Execution) -> JobSpec:
    """The options an execution runs with (a rerun reuses no result)."""
    return JobSpec(
        env=execution.env,
        runtime=execution.runtime,
        resources=Resources(cpu=execution.cpu, memory_mb=execution.memory_mb, timeout_s=execution.timeout_s),
        retries=execution.retries,
        requirements=execution.requirements,
        network=execution.network,
        verbose=execution.verbose,
    )
