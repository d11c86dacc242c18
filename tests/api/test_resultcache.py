"""The result cache on a real migrated SQLite database: a hit is created
succeeded with the source's logs and outputs; anything that differs, a
failed source, or another owner is a miss."""

from __future__ import annotations

from sqlalchemy.orm import Session

from rgrid.wire import (
    BatchCreate,
    BatchItem,
    ExecutionCreate,
    InputFile,
    OutputFile,
    RunnerEnvironment,
    RunnerLogLine,
    RunnerResult,
    RunnerStart,
    Status,
)
from rgrid_api.attempts import check_outputs, claim_queued, complete_attempt, start_attempt
from rgrid_api.batches import batch_view, create_batch
from rgrid_api.executions import create_execution, list_outputs, read_logs
from rgrid_api.storage import output_key
from tests.api.conftest import LEASE_S, upload
from tests.support.memstorage import MemoryStorage


def body(
    session: Session, storage: MemoryStorage, owner: str, data: bytes, args: list[str]
) -> ExecutionCreate:
    script = upload(session, storage, owner, b"print('hi')\n")
    return ExecutionCreate(
        script=InputFile(sha256=script, path="job.py"),
        inputs=[InputFile(sha256=upload(session, storage, owner, data), path="in.csv")],
        args=args,
        cache=True,
    )


def run_to_end(
    session: Session,
    storage: MemoryStorage,
    execution_id: str,
    code: int,
    packages: list[str] | None = None,
) -> None:
    (claimed,) = [c for c in claim_queued(session, LEASE_S) if c.execution_id == execution_id]
    session.commit()
    start_attempt(session, execution_id, claimed.attempt, RunnerStart(worker="w"), LEASE_S, trusted=True)
    session.commit()
    storage.put(output_key(execution_id, claimed.attempt, "out.txt"), b"result")
    result = RunnerResult(
        exit_code=code,
        duration_s=1.5,
        outputs=[OutputFile(path="out.txt", size=6, sha256="0" * 64)],
        logs=[RunnerLogLine(stream="stdout", data="hello\n")],
        environment=RunnerEnvironment(
            interpreter="CPython 3.11.7", packages=packages or [], rgrid_version="0"
        ),
    )
    complete_attempt(
        session, execution_id, claimed.attempt, check_outputs(storage, execution_id, claimed.attempt, result)
    )
    session.commit()


def test_a_hit_is_the_earlier_result_and_nothing_runs(session: Session, storage: MemoryStorage) -> None:
    spec = body(session, storage, "alice", b"1\n", ["in.csv"])
    first = create_execution(session, "alice", spec, "python:3.11")
    session.commit()
    run_to_end(session, storage, first.id, 0)
    again = create_execution(session, "alice", spec, "python:3.11")
    session.commit()
    assert again.status == Status.SUCCEEDED and again.cached_from == first.id and again.exit_code == 0
    assert [c.data for c in read_logs(session, again.id, 0)] == ["hello\n"]
    assert [(o.path, o.size) for o in list_outputs(session, storage, again)] == [("out.txt", 6)]
    assert claim_queued(session, LEASE_S) == []
    session.commit()
    third = create_execution(session, "alice", spec, "python:3.11")
    session.commit()
    assert third.cached_from == first.id  # the original, not the copy


def test_anything_different_is_a_miss(session: Session, storage: MemoryStorage) -> None:
    spec = body(session, storage, "alice", b"1\n", ["in.csv"])
    first = create_execution(session, "alice", spec, "python:3.11")
    session.commit()
    run_to_end(session, storage, first.id, 0)
    misses = [
        spec.model_copy(update={"args": ["in.csv", "-v"]}),
        spec.model_copy(update={"env": {"K": "v"}}),
        spec.model_copy(update={"requirements": "tomli\n"}),
        spec.model_copy(update={"cache": False}),
    ]
    for miss in misses:
        assert create_execution(session, "alice", miss, "python:3.11").status == Status.QUEUED
        session.commit()
    assert create_execution(session, "alice", spec, "python:3.12").status == Status.QUEUED
    session.commit()
    other_input = body(session, storage, "alice", b"2\n", ["in.csv"])
    assert create_execution(session, "alice", other_input, "python:3.11").status == Status.QUEUED
    session.commit()


def test_never_from_a_failure_nor_across_owners(session: Session, storage: MemoryStorage) -> None:
    spec = body(session, storage, "alice", b"1\n", ["in.csv"])
    failed = create_execution(session, "alice", spec, "python:3.11")
    session.commit()
    run_to_end(session, storage, failed.id, 3)
    assert create_execution(session, "alice", spec, "python:3.11").status == Status.QUEUED
    session.commit()
    bobs = create_execution(session, "bob", body(session, storage, "bob", b"9\n", ["in.csv"]), "python:3.11")
    session.commit()
    run_to_end(session, storage, bobs.id, 0)
    same_content = body(session, storage, "mallory", b"9\n", ["in.csv"])
    assert create_execution(session, "mallory", same_content, "python:3.11").status == Status.QUEUED
    session.commit()


def test_a_batch_reruns_only_what_changed(session: Session, storage: MemoryStorage) -> None:
    script = upload(session, storage, "alice", b"print('hi')\n")
    shas = [upload(session, storage, "alice", f"{i}\n".encode()) for i in range(4)]

    def batch_of(inputs: list[str]) -> BatchCreate:
        return BatchCreate(
            script=InputFile(sha256=script, path="job.py"),
            items=[
                BatchItem(
                    input=f"d/{i}.csv", inputs=[InputFile(sha256=s, path=f"d/{i}.csv")], args=[f"d/{i}.csv"]
                )
                for i, s in enumerate(inputs)
            ],
            cache=True,
        )

    first = create_batch(session, "alice", batch_of(shas), "python:3.11")
    session.commit()
    for c in claim_queued(session, LEASE_S):
        start_attempt(session, c.execution_id, 1, RunnerStart(worker="w"), LEASE_S, trusted=True)
        session.commit()
        complete_attempt(
            session,
            c.execution_id,
            1,
            check_outputs(storage, c.execution_id, 1, RunnerResult(exit_code=0, duration_s=1)),
        )
        session.commit()
    assert batch_view(session, first).status == Status.SUCCEEDED
    changed = upload(session, storage, "alice", b"changed\n")
    second = create_batch(session, "alice", batch_of([shas[0], changed, shas[2], shas[3]]), "python:3.11")
    session.commit()
    assert batch_view(session, second).counts == {Status.SUCCEEDED: 3, Status.QUEUED: 1}
    assert [c.execution_id for c in claim_queued(session, LEASE_S)] == [
        batch_view(session, second).executions[1].id
    ]
    session.commit()


def test_a_result_made_with_other_packages_than_the_requirements_now_install_is_not_reused(
    session: Session, storage: MemoryStorage
) -> None:
    """The key takes the package set: at submission, the one these
    requirements last installed as for the owner; once run, its own."""
    spec = body(session, storage, "alice", b"1\n", ["in.csv"]).model_copy(
        update={"requirements": "numpy>=1\n"}
    )
    first = create_execution(session, "alice", spec, "python:3.11")
    session.commit()
    run_to_end(session, storage, first.id, 0, ["numpy==1.26.4"])
    assert create_execution(session, "alice", spec, "python:3.11").cached_from == first.id
    session.commit()
    # Another run of the same requirements (uncached, and it fails) installs numpy 2:
    # the result made with numpy 1 is no longer what a run would do.
    fresh = create_execution(session, "alice", spec.model_copy(update={"cache": False}), "python:3.11")
    session.commit()
    run_to_end(session, storage, fresh.id, 1, ["numpy==2.1.0"])
    again = create_execution(session, "alice", spec, "python:3.11")
    session.commit()
    assert again.status == Status.QUEUED and again.cached_from is None
    run_to_end(session, storage, again.id, 0, ["numpy==2.1.0"])
    assert create_execution(session, "alice", spec, "python:3.11").cached_from == again.id
    session.commit()
    # Bob's requirements drift on their own: alice's numpy 2 is not his, so
    # his result made with numpy 1 is still what his requirements install.
    bob = body(session, storage, "bob", b"1\n", ["in.csv"]).model_copy(update={"requirements": "numpy>=1\n"})
    bobs = create_execution(session, "bob", bob, "python:3.11")
    session.commit()
    run_to_end(session, storage, bobs.id, 0, ["numpy==1.26.4"])
    assert create_execution(session, "bob", bob, "python:3.11").cached_from == bobs.id
    session.commit()
