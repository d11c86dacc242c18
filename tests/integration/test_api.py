"""The API through the client library: uploads, dedupe, verification,
tenant isolation, and the admin path for keys."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from rgrid.client import Client
from rgrid.config import Target
from rgrid.errors import ApiError, AuthRefused, RgridError
from rgrid.hashcache import sha256_file
from rgrid.transfer import upload_missing
from rgrid.wire import ExecutionCreate, InputFile, ObjectSpec, UploadCompletion
from tests.support.s3proxy import S3Proxy
from tests.support.services import ApiServer

NO_PROGRESS = lambda _total: lambda _n: None  # noqa: E731


def make_file(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


def upload(client: Client, *paths: Path) -> int:
    by_sha = {sha256_file(p): p for p in paths}
    sizes = {s: p.stat().st_size for s, p in by_sha.items()}
    return upload_missing(client, by_sha, sizes, NO_PROGRESS)


def test_unchanged_files_are_not_uploaded_again(client: Client, tmp_path: Path) -> None:
    f = make_file(tmp_path, "a.bin", os.urandom(2048))
    assert upload(client, f) == 2048
    assert upload(client, f) == 0
    assert client.plan_uploads([ObjectSpec(sha256=sha256_file(f), size=2048)]).missing == []


def test_large_file_goes_up_in_parts_and_is_verified(
    client: Client, tmp_path: Path, s3_proxy: S3Proxy
) -> None:
    data = os.urandom(13 * 1024 * 1024)
    f = make_file(tmp_path, "big.bin", data)
    plan = client.plan_uploads([ObjectSpec(sha256=sha256_file(f), size=len(data))])
    assert len(plan.missing[0].parts) == 3
    before = s3_proxy.puts
    assert upload(client, f) == len(data)
    assert s3_proxy.puts - before == 3
    assert upload(client, f) == 0


def test_corrupted_upload_is_refused_and_not_usable(client: Client, tmp_path: Path) -> None:
    real = os.urandom(1000)
    claimed = hashlib.sha256(b"something else").hexdigest()
    plan = client.plan_uploads([ObjectSpec(sha256=claimed, size=1000)])
    httpx.put(str(plan.missing[0].url), content=real, timeout=120).raise_for_status()
    with pytest.raises(ApiError, match="corrupted"):
        client.complete_upload(UploadCompletion(sha256=claimed, size=1000))
    with pytest.raises(ApiError, match="not uploaded"):
        client.create_execution(ExecutionCreate(script=InputFile(sha256=claimed, path="x.py")))
    assert client.plan_uploads([ObjectSpec(sha256=claimed, size=1000)]).missing


def test_storage_errors_are_retried(client: Client, tmp_path: Path, s3_proxy: S3Proxy) -> None:
    f = make_file(tmp_path, "retry.bin", os.urandom(4096))
    s3_proxy.fail_puts = 2
    assert upload(client, f) == 4096
    assert s3_proxy.fail_puts == 0


def test_storage_failure_gives_a_clear_error_and_registers_nothing(
    client: Client, tmp_path: Path, s3_proxy: S3Proxy
) -> None:
    f = make_file(tmp_path, "fails.bin", os.urandom(4096))
    s3_proxy.fail_puts = 100
    try:
        with pytest.raises(RgridError, match=r"storage refused the upload of fails\.bin"):
            upload(client, f)
    finally:
        s3_proxy.fail_puts = 0
    sha = sha256_file(f)
    assert client.plan_uploads([ObjectSpec(sha256=sha, size=4096)]).missing
    with pytest.raises(ApiError, match="not uploaded"):
        client.create_execution(ExecutionCreate(script=InputFile(sha256=sha, path="x.py")))


def test_owners_cannot_see_each_other(api: ApiServer, client: Client, tmp_path: Path) -> None:
    script = make_file(tmp_path, "s.py", b"print('mine')\n")
    upload(client, script)
    sha = sha256_file(script)
    mine = client.create_execution(ExecutionCreate(script=InputFile(sha256=sha, path="s.py")))
    with Client(Target(api.url, api.create_key("bob"))) as bob:
        with pytest.raises(ApiError) as err:
            bob.get_execution(mine.id)
        assert err.value.status == 404
        assert mine.id not in {e.id for e in bob.list_executions().executions}
        with pytest.raises(ApiError):
            bob.cancel(mine.id)
        # Alice's upload is not Bob's: he must upload (and so own) the bytes himself.
        assert bob.plan_uploads([ObjectSpec(sha256=sha, size=script.stat().st_size)]).missing
        with pytest.raises(ApiError, match="not uploaded"):
            bob.create_execution(ExecutionCreate(script=InputFile(sha256=sha, path="s.py")))


def test_a_final_answer_is_served_again_only_to_its_owner(
    api: ApiServer, client: Client, tmp_path: Path
) -> None:
    """Final executions are answered from memory: the same answer, by exact
    id or prefix, and still a 404 for another owner."""
    script = make_file(tmp_path, "s.py", b"print('final')\n")
    upload(client, script)
    mine = client.create_execution(ExecutionCreate(script=InputFile(sha256=sha256_file(script), path="s.py")))
    client.cancel(mine.id)
    deadline = time.monotonic() + 60
    while not (first := client.get_execution(mine.id)).status.final:
        assert time.monotonic() < deadline, "the cancelled execution never ended"
        time.sleep(0.2)
    assert client.get_execution(mine.id) == first
    assert client.get_execution(mine.id[:6]) == first
    with Client(Target(api.url, api.create_key("carol"))) as carol:
        with pytest.raises(ApiError) as err:
            carol.get_execution(mine.id)
        assert err.value.status == 404


def test_a_revoked_key_is_refused_within_seconds(api: ApiServer) -> None:
    key = api.create_key("dave")
    with Client(Target(api.url, key)) as dave:
        dave.list_executions()
        out = subprocess.run(
            [sys.executable, "-m", "rgrid", "server", "revoke-key", "--owner", "dave"],
            env=api.env,
            check=True,
            capture_output=True,
            text=True,
        )
        assert out.stdout.strip() == "revoked 1 key"
        deadline = time.monotonic() + 15
        while True:
            try:
                dave.list_executions()
            except AuthRefused:
                break
            assert time.monotonic() < deadline, "the revoked key still worked after 15 s"
            time.sleep(0.2)


def test_wrong_key_is_refused(api: ApiServer) -> None:
    with Client(Target(api.url, "rg_not_a_real_key")) as c, pytest.raises(AuthRefused):
        c.list_executions()
    assert httpx.get(f"{api.url}/v1/executions").status_code == 401
    assert httpx.get(f"{api.url}/healthz").status_code == 200


def test_keys_are_stored_hashed(api: ApiServer) -> None:
    from sqlalchemy import create_engine, text

    url = api.env["RGRID_DATABASE_URL"].replace("postgresql://", "postgresql+psycopg://")
    engine = create_engine(url)
    with engine.connect() as conn:
        stored = [r[0] for r in conn.execute(text("SELECT key_hash FROM api_keys"))]
    engine.dispose()
    assert api.api_key not in stored
    assert hashlib.sha256(api.api_key.encode()).hexdigest() in stored


def test_openapi_is_served_to_key_holders_only(api: ApiServer) -> None:
    assert httpx.get(f"{api.url}/v1/openapi.json").status_code == 401
    spec = httpx.get(f"{api.url}/v1/openapi.json", headers={"Authorization": f"Bearer {api.api_key}"}).json()
    assert "/v1/executions" in spec["paths"]
    assert "/v1/uploads/plan" in spec["paths"]


def test_only_healthz_is_open(api: ApiServer) -> None:
    """Every route in the schema but /healthz refuses a request without a key."""
    spec = httpx.get(f"{api.url}/v1/openapi.json", headers={"Authorization": f"Bearer {api.api_key}"}).json()
    for path, methods in spec["paths"].items():
        concrete = path.replace("{execution_id}", "abc").replace("{attempt}", "1")
        for method in methods:
            status = httpx.request(method.upper(), f"{api.url}{concrete}").status_code
            assert (status == 200) if path == "/healthz" else (status == 401), (method, path, status)
