"""Provenance, usage and `retry --exact` on a real migrated database, as a
hostile node or a careless retry would try them: a package set no
interpreter text can pass for, usage cut to what a run could use, and an
exact retry refused wherever pinning cannot mean "the same"."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError
from sqlalchemy.orm import Session

from rgrid.wire import RunnerEnvironment, RunnerResult, RunnerStart, Usage
from rgrid_api.attempts import check_outputs, claim_queued, complete_attempt, start_attempt
from rgrid_api.costs import estimate
from rgrid_api.db.models import Attempt, Execution
from rgrid_api.errors import Conflict
from rgrid_api.executions import exact_spec
from rgrid_api.provenance import package_set_sha256
from tests.api.conftest import LEASE_S, submit
from tests.support.memstorage import MemoryStorage

MIB = 2**20


def _run(
    session: Session,
    storage: MemoryStorage,
    requirements: str | None,
    environment: RunnerEnvironment | None,
    usage: Usage | None = None,
) -> Execution:
    execution = submit(session, storage, "alice")
    execution.requirements = requirements
    session.commit()
    (claimed,) = claim_queued(session, LEASE_S)
    session.commit()
    start_attempt(session, execution.id, claimed.attempt, RunnerStart(worker="w"), LEASE_S, trusted=True)
    session.commit()
    result = RunnerResult(exit_code=0, duration_s=2.0, usage=usage, environment=environment)
    complete_attempt(
        session, execution.id, claimed.attempt, check_outputs(storage, execution.id, claimed.attempt, result)
    )
    session.commit()
    session.refresh(execution)
    return execution


def test_an_exact_retry_pins_the_set_it_ran_with(session: Session, storage: MemoryStorage) -> None:
    ran = _run(
        session,
        storage,
        "tomli-w<1.1\n",
        RunnerEnvironment(interpreter="CPython 3.11.7", packages=["tomli-w==1.0.0"], rgrid_version="0.1.0"),
    )
    assert exact_spec(session, ran).requirements == "tomli-w==1.0.0"


@pytest.mark.parametrize(
    ("requirements", "packages", "said"),
    [
        (None, ["numpy==2.1.0"], "ran without requirements: nothing to pin"),
        ("mylib @ https://example.com/mylib.tar.gz\n", ["mylib==0.1.0"], "from a URL"),
        ("mylib@https://example.com/mylib.tar.gz\n", ["mylib==0.1.0"], "from a URL"),
        ("numpy\n", [], "no package set was recorded"),
    ],
)
def test_an_exact_retry_is_refused_where_a_pin_cannot_mean_the_same(
    session: Session, storage: MemoryStorage, requirements: str | None, packages: list[str], said: str
) -> None:
    environment = RunnerEnvironment(interpreter="CPython 3.11.7", packages=packages, rgrid_version="0.1.0")
    ran = _run(session, storage, requirements, environment)
    with pytest.raises(Conflict, match=said):
        exact_spec(session, ran)


def test_an_exact_retry_of_a_run_before_sets_were_recorded_says_so(
    session: Session, storage: MemoryStorage
) -> None:
    ran = _run(session, storage, "numpy\n", None)
    with pytest.raises(Conflict, match="it ran before rgrid recorded them"):
        exact_spec(session, ran)


def test_no_interpreter_text_passes_for_package_lines() -> None:
    """A hostile node's interpreter that carries package lines is refused,
    and the set's hash keeps interpreter and lines apart whatever they say."""
    for forged in ("CPython 3.11.2\nnumpy==1.26.0", "CPython 3.11.2 numpy==1.26.0"):
        with pytest.raises(ValidationError):
            RunnerEnvironment(interpreter=forged, packages=[], rgrid_version="0")
    one = RunnerEnvironment(interpreter="CPython 3.11.2", packages=["a==1", "b==2"], rgrid_version="0")
    assert package_set_sha256(one) == package_set_sha256(
        one.model_copy(update={"packages": ["b==2", "a==1"]})
    )
    assert package_set_sha256(one) != package_set_sha256(
        one.model_copy(update={"interpreter": "CPython 3.11.3"})
    )


def test_a_nodes_usage_is_finite_and_cut_to_what_the_run_could_use(
    session: Session, storage: MemoryStorage
) -> None:
    for absurd in (math.inf, math.nan):
        with pytest.raises(ValidationError):
            Usage(cpu_seconds=absurd, wall_seconds=1.0)
    lie = Usage(cpu_seconds=1e8, peak_memory_bytes=2**49, wall_seconds=1e8)
    ran = _run(session, storage, None, None, usage=lie)  # 1 CPU, 256 MiB, a 60 s timeout
    attempt = session.get(Attempt, ran.attempts[-1].id)
    assert attempt is not None
    assert attempt.wall_seconds == 60 + 600
    assert attempt.cpu_seconds == pytest.approx(660 * 1.05 + 1)
    assert attempt.peak_memory_bytes == 256 * MIB


def test_estimate_suggests_cpu_and_memory_from_measured_runs(
    session: Session, storage: MemoryStorage
) -> None:
    for peak in (100, 200, 150):
        _run(
            session,
            storage,
            None,
            None,
            usage=Usage(cpu_seconds=1.4, peak_memory_bytes=peak * MIB, wall_seconds=2.0),
        )
    script = session.query(Execution).first()
    assert script is not None
    guess = estimate(session, "alice", script.script_sha256, script.script_name, 1.0, None)
    assert guess.runs == 3 and guess.busy_cpus == 0.7 and guess.peak_memory_bytes == 200 * MIB
    assert guess.suggested_cpu == 1.0 and guess.suggested_memory_mb == 256
