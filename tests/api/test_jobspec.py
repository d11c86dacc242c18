"""Every job option survives the database: a spec written as an
execution's columns reads back the same (a new JobSpec field without a
column of its name fails here). `cache` is decided at submission and read
back as False, so a rerun reuses no result."""

from __future__ import annotations

from rgrid.wire import JobSpec, Resources
from rgrid_api import jobspec
from rgrid_api.db.models import Execution


def test_every_job_option_survives_the_database() -> None:
    spec = JobSpec(
        env={"A": "1"},
        runtime="python:3.12",
        resources=Resources(cpu=2.5, memory_mb=1536, timeout_s=90),
        retries=4,
        requirements="numpy==2.1.0\n",
        network=False,
        verbose=True,
        cache=True,
    )
    back = jobspec.of(Execution(**jobspec.columns(spec, spec.runtime)))
    assert back == spec.model_copy(update={"cache": False})
    assert set(JobSpec.model_fields) - {"cache"} <= {
        name for name in JobSpec.model_fields if getattr(back, name) != getattr(JobSpec(), name)
    }
