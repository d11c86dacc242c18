"""Whose fault a failed install is, read from what the real uv says: a
package that does not exist is the user's (exit 2), an index that does not
answer is the grid's (exit 75)."""

from __future__ import annotations

import http.server
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from rgrid_runner.build import users_fault, uv_binary

# Runs the real uv against an index on loopback: a server, so not the fast loop.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("venv") / "v"
    subprocess.run([str(uv_binary()), "venv", "-q", str(path)], check=True)
    return path


@pytest.fixture
def empty_index(tmp_path: Path) -> Iterator[str]:
    """A package index on loopback that knows no package (404 for each)."""
    handler = lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory=str(tmp_path))  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/simple"
    server.shutdown()


def install(venv: Path, index: str, requirement: str, tmp_path: Path) -> str:
    (tmp_path / "r.txt").write_text(requirement + "\n")
    done = subprocess.run(
        [
            str(uv_binary()),
            "pip",
            "install",
            "--no-cache",
            "--python",
            str(venv / "bin/python"),
            "-r",
            str(tmp_path / "r.txt"),
        ],
        env={"PATH": "/usr/bin:/bin", "UV_INDEX_URL": index, "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    return done.stdout + done.stderr


def test_a_package_the_index_does_not_have_is_the_users_fault(
    venv: Path, empty_index: str, tmp_path: Path
) -> None:
    reason = users_fault(install(venv, empty_index, "no-such-package-rgrid==1.0", tmp_path))
    assert reason is not None
    assert reason.startswith("Because no-such-package-rgrid") and "unsatisfiable" in reason


def test_an_index_that_does_not_answer_is_not(venv: Path, tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]  # nothing listens once the socket is closed
    output = install(venv, f"http://127.0.0.1:{closed}/simple", "requests", tmp_path)
    assert "Connection refused" in output
    assert users_fault(output) is None
