"""A job's options (`rgrid.wire.JobSpec`) as an execution's columns, and
back. Each option is the column of its own name, and each resource
(`Resources`) too: a new option is a field of JobSpec and a column of that
name (with its migration), and nothing here changes."""

from __future__ import annotations

from typing import Any

from rgrid.wire import JobSpec, Resources
from rgrid_api.db.models import Execution

# Not columns: the resources are flattened into theirs, and `cache` only
# decides, at submission, whether an earlier result is reused.
_NOT_COLUMNS = {"resources", "cache"}
OPTIONS = [name for name in JobSpec.model_fields if name not in _NOT_COLUMNS]
RESOURCES = list(Resources.model_fields)


def columns(spec: JobSpec, runtime: str) -> dict[str, Any]:
    """The execution's columns for `spec`, with the runtime resolved
    (`python` -> `python:3.11`)."""
    return {
        **{name: getattr(spec, name) for name in OPTIONS},
        **{name: getattr(spec.resources, name) for name in RESOURCES},
        "runtime": runtime,
    }


def of(execution: Execution) -> JobSpec:
    """The options an execution runs with (a rerun reuses no result)."""
    return JobSpec(
        **{name: getattr(execution, name) for name in OPTIONS},
        resources=Resources(**{name: getattr(execution, name) for name in RESOURCES}),
    )
