"""The API does not need Ray to serve: with no Ray head to be found (its
driver process keeps failing to join), submissions, status, logs, outputs,
listing and cancels all work, and executions wait in the queue."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from rgrid.client import Client
from rgrid.config import Target
from rgrid.hashcache import sha256_file
from rgrid.local.procs import alive, free_port
from rgrid.transfer import upload_missing
from rgrid.wire import ExecutionCreate, InputFile, Status
from tests.support.services import RayHead, S3Server, start_api


def test_api_serves_and_queues_with_no_ray_head(tmp_path: Path, s3: S3Server, ray_head: RayHead) -> None:
    nowhere = dataclasses.replace(ray_head, address=f"127.0.0.1:{free_port()}")
    server = start_api(tmp_path / "api", f"sqlite:///{tmp_path / 'rgrid.db'}", s3, nowhere, s3.endpoint)
    try:
        script = tmp_path / "job.py"
        script.write_text("print('hi')\n")
        sha = sha256_file(script)
        with Client(Target(server.url, server.api_key)) as client:
            upload_missing(client, {sha: script}, {sha: script.stat().st_size}, lambda _t: lambda _n: None)
            body = ExecutionCreate(script=InputFile(sha256=sha, path="job.py"))
            kept = client.create_execution(body)
            dropped = client.create_execution(body)
            assert client.get_execution(kept.id).status == Status.QUEUED
            assert client.logs(kept.id).chunks == []
            assert client.outputs(kept.id).outputs == []
            assert {e.id for e in client.list_executions().executions} == {kept.id, dropped.id}
            cancelled = client.cancel(dropped.id)
            assert (cancelled.status, cancelled.failure_reason) == (Status.CANCELLED, "cancelled")
            assert client.get_execution(kept.id).status == Status.QUEUED
        assert alive(server.proc.pid)
    finally:
        server.proc.stop()
