"""Every job option survives the database: a spec submitted as an
execution is written to its columns, committed, and read back from a new
session the same (a new JobSpec field without a column of its name fails
here). `cache` is decided at submission and read back as False, so a rerun
reuses no result."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from rgrid.wire import ExecutionCreate, InputFile, JobSpec, Resources
from rgrid_api import jobspec
from rgrid_api.db.models import Execution
from rgrid_api.executions import create_execution
from tests.api.conftest import upload
from tests.support.memstorage import MemoryStorage


def test_every_job_option_survives_the_database(
    session: Session, sessions: sessionmaker[Session], storage: MemoryStorage
) -> None:
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
    script = InputFile(sha256=upload(session, storage, "alice", b"print(1)\n"), path="job.py")
    execution_id = create_execution(
        session, "alice", ExecutionCreate(script=script, **dict(spec)), spec.runtime
    ).id
    session.commit()
    with sessions() as reader:
        stored = reader.get(Execution, execution_id)
        assert stored is not None
        back = jobspec.of(stored)
    assert back == spec.model_copy(update={"cache": False})
    assert set(JobSpec.model_fields) - {"cache"} <= {
        name for name in JobSpec.model_fields if getattr(back, name) != getattr(JobSpec(), name)
    }
