"""The control plane on a real SQLite database with every migration applied
(so the state triggers are there too), storage in memory, no Ray, no S3:
the decisions of attempts, executions, workers and the monitor, called
directly and fast."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from rgrid.wire import ExecutionCreate, InputFile, Resources, WorkerRegistration
from rgrid_api.db.engine import make_engine, make_sessionmaker
from rgrid_api.db.migrate import upgrade
from rgrid_api.db.models import Execution, StoredObject
from rgrid_api.executions import create_execution
from rgrid_api.storage import object_key
from rgrid_api.workers import register
from tests.support.memstorage import MemoryStorage

LEASE_S = 30.0


@pytest.fixture(scope="session")
def migrated_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Migrate once; every test gets a copy of the file."""
    path = tmp_path_factory.mktemp("template") / "rgrid.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture
def db_path(migrated_template: Path, tmp_path: Path) -> Path:
    path = tmp_path / "rgrid.db"
    shutil.copy(migrated_template, path)
    return path


@pytest.fixture
def sessions(db_path: Path) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(f"sqlite:///{db_path}")
    yield make_sessionmaker(engine)
    engine.dispose()


@pytest.fixture
def session(sessions: sessionmaker[Session]) -> Iterator[Session]:
    with sessions() as s:
        yield s


@pytest.fixture
def storage() -> MemoryStorage:
    return MemoryStorage()


def upload(session: Session, storage: MemoryStorage, owner: str, data: bytes) -> str:
    """An object the owner uploaded and the API verified."""
    sha = hashlib.sha256(data).hexdigest()
    storage.put(object_key(owner, sha), data)
    known = select(StoredObject.id).where(StoredObject.owner == owner, StoredObject.sha256 == sha)
    if session.scalar(known) is None:
        session.add(
            StoredObject(owner=owner, sha256=sha, size=len(data), complete=True, created_at=datetime.now(UTC))
        )
    session.commit()
    return sha


def submit(
    session: Session,
    storage: MemoryStorage,
    owner: str = "alice",
    retries: int = 2,
    inputs: dict[str, bytes] | None = None,
) -> Execution:
    script = upload(session, storage, owner, b"print('hi')\n")
    files = [
        InputFile(sha256=upload(session, storage, owner, data), path=path)
        for path, data in (inputs or {}).items()
    ]
    body = ExecutionCreate(
        script=InputFile(sha256=script, path="job.py"),
        inputs=files,
        resources=Resources(cpu=1, memory_mb=256, timeout_s=60),
        retries=retries,
    )
    execution = create_execution(session, owner, body, "python:3.11")
    session.commit()
    return execution


def add_worker(session: Session, worker_id: str = "node-1", ray_node_id: str | None = None) -> str:
    register(
        session,
        WorkerRegistration(id=worker_id, host_name="h", runtimes=["python:3.11"], ray_node_id=ray_node_id),
    )
    session.commit()
    return worker_id
