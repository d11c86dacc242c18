"""Several dispatchers on one PostgreSQL database claim at the same time:
together they never run a batch past its `parallel` cap, and never take the
same execution twice."""

from __future__ import annotations

import threading

from rgrid_api.attempts import claim_queued
from rgrid_api.db.engine import make_engine, make_sessionmaker
from rgrid_api.db.migrate import upgrade
from tests.api.test_batches import make_batch
from tests.integration.test_migrations import fresh_database
from tests.support.memstorage import MemoryStorage
from tests.support.services import Postgres


def test_concurrent_dispatchers_keep_the_cap(postgres: Postgres) -> None:
    url = fresh_database(postgres, "batch_cap")
    upgrade(url)
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    with sessions() as session:
        make_batch(session, MemoryStorage(), 40, parallel=3)
    start = threading.Barrier(6)
    claimed: list[str] = []
    lock = threading.Lock()

    def dispatcher() -> None:
        start.wait()
        for _ in range(5):
            with sessions() as session:
                got = [c.execution_id for c in claim_queued(session, 30.0)]
                session.commit()
            with lock:
                claimed.extend(got)

    threads = [threading.Thread(target=dispatcher) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    engine.dispose()
    assert len(claimed) == 3
    assert len(set(claimed)) == 3
