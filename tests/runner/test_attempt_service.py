"""The attempt service is the one door from Ray's unprivileged processes to
root on a node. These tests knock on it as a hostile Ray worker would: as
another uid, with malformed requests, with fields that try to pass code,
paths or environment. Only the Ray user is heard, and only an attempt's ids
and token."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from rgrid_runner.attemptservice import REFUSED, ApiUrls, AttemptService
from rgrid_runner.rayuser import RayAccount, as_ray_user, ray_account

# A server and processes as the Ray user: not the fast loop.
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="the service guards root; it needs root to test"),
]

GOOD = {"execution_id": "abcdefgh12", "attempt": 1, "token": "a" * 64}


@pytest.fixture
def account() -> RayAccount:
    found = ray_account("rgrid-ray")
    assert found is not None
    return found


@pytest.fixture
def service(tmp_path: Path, account: RayAccount) -> Iterator[AttemptService]:
    # Where the Ray user can reach it, as /run/rgrid is on a node.
    directory = Path("/run/rgrid-test") / tmp_path.name
    svc = AttemptService(
        directory / "s.sock",
        caller_uid=account.uid,
        caller_gid=account.gid,
        apis=ApiUrls("http://127.0.0.1:9"),
        env={"PATH": "/usr/bin:/bin"},
        max_attempts=2,
    )
    svc.start()
    yield svc
    svc.stop()
    directory.rmdir()


def ask_as_ray_user(account: RayAccount, path: Path, payload: bytes) -> str:
    """One request from a process of the Ray user, as a Ray worker sends it."""
    snippet = (
        "import socket, sys\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        f"s.connect({str(path)!r})\n"
        "s.sendall(sys.stdin.buffer.read())\n"
        "s.shutdown(socket.SHUT_WR)\n"
        "data = b''\n"
        "while chunk := s.recv(4096):\n"
        "    data += chunk\n"
        "print(data.decode().strip())\n"
    )
    done = subprocess.run(
        as_ray_user(account, [sys.executable, "-c", snippet]),
        input=payload,
        capture_output=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode().strip()


def test_only_the_ray_users_group_may_open_the_socket(service: AttemptService, account: RayAccount) -> None:
    st = service.path.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (0, account.gid, 0o660)


def test_another_uid_gets_no_answer(service: AttemptService) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:  # root, not the Ray user
        conn.settimeout(10)
        conn.connect(str(service.path))
        try:
            conn.sendall(json.dumps(GOOD).encode() + b"\n")
            answer = conn.recv(100)
        except (BrokenPipeError, ConnectionResetError):  # closed before (or with) the request unread
            answer = b""
        assert answer == b""


@pytest.mark.parametrize(
    "payload",
    [
        {**GOOD, "argv": ["/bin/sh", "-c", "id"]},
        {**GOOD, "env": {"LD_PRELOAD": "/tmp/evil.so"}},
        {**GOOD, "api_url": "http://evil.example:8000"},
        {**GOOD, "api_url": "http://user:pw@127.0.0.1:9"},
        {**GOOD, "api_url": "file:///etc/shadow"},
        {**GOOD, "work_root": "/etc"},
        {**GOOD, "execution_id": "../../etc/passwd"},
        {**GOOD, "execution_id": "abc; rm -rf /"},
        {**GOOD, "token": "not-hex"},
        {**GOOD, "attempt": -1},
        {**GOOD, "ray_node_id": "x" * 56},
        "not json at all",
        "x" * 10_000,
    ],
)
def test_a_request_with_anything_but_ids_and_a_token_is_refused(
    service: AttemptService, account: RayAccount, payload: object
) -> None:
    raw = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
    assert ask_as_ray_user(account, service.path, raw + b"\n") == REFUSED


@pytest.mark.parametrize(
    ("requested", "allowed"),
    [
        ("http://127.0.0.1:9", True),  # the node's own
        ("http://127.0.0.1:9/", True),
        ("http://10.0.0.2:8080", True),  # listed by the operator
        ("http://127.0.0.1:8123", False),  # another port of the node's API host is not enough
        ("http://10.0.0.2:8081", False),
        ("http://192.168.7.7:31337", True),  # `http://192.168.7.7:*`: any port of that host
        ("https://192.168.7.7:31337", False),
        ("http://192.168.7.7:31337/evil", False),
        ("http://u:p@192.168.7.7:31337", False),
        ("http://192.168.7.7:notaport", False),
        ("http://evil.example", False),
        ("ftp://127.0.0.1:9", False),
    ],
)
def test_a_ticket_may_name_only_the_nodes_api_or_one_the_operator_listed(
    requested: str, allowed: bool
) -> None:
    apis = ApiUrls("http://127.0.0.1:9", "http://10.0.0.2:8080, http://192.168.7.7:*")
    assert apis.allows(requested) is allowed
