"""The privileged side of a node: runs the attempts Ray places here.

Ray's processes run unprivileged (rgrid_runner.rayuser), and anyone with
the Ray token can run code in them. So the Ray task (rgrid_runner.raytask)
only relays: it hands its attempt's ids, token and API to this service,
over a Unix socket that only the Ray user may call, and waits for the end.
The service takes nothing else from it (no code, no path, no environment),
and the API only if it is the node's own or one its operator listed. It checks the caller's uid by the socket's peer credentials
and the request's every field, and runs the attempt in a fresh process of
its own (rgrid_runner.attemptproc) against the API the node was configured
with (or one the operator listed: `ApiUrls`). That API vouches for the
attempt: with a wrong token it hands out no spec, and the attempt ends
before it starts anything.

When the Ray task ends (cancelled, fenced, its raylet gone), the connection
closes and the attempt is abandoned: its process stops the job, reports
nothing, cleans up and exits, or is killed (its sandbox dies with it, by
bubblewrap's die-with-parent). Attempt processes are kept between attempts
(rgrid's code imported, the node's configuration built, a work disk
formatted ahead, connections open), as Ray kept its workers: an attempt
starts as fast as it did inside a warm Ray worker, and costs no new
process. One always waits for the next attempt.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rgrid.wire import RAY_NODE_ID_PATTERN

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 4096
REQUEST_TIMEOUT_S = 10.0
# Attempt processes kept waiting for the next attempt.
MAX_IDLE = 4
# An abandoned attempt stops its job (SIGTERM, then SIGKILL after the
# supervisor's grace) and cleans up within this, or is killed.
ABANDON_GRACE_S = 30.0
# What the relay reads back when the service would not run the attempt.
REFUSED = "refused"
# The node's own credential, in its attempt processes' environment only
# (never Ray's): every runner call presents it, so a ticket alone speaks
# for nothing.
NODE_CREDENTIAL_ENV = "RGRID_NODE_CREDENTIAL"


class AttemptRequest(BaseModel):
    """All a Ray task may say: which attempt, with the token the API gave
    it, and the Ray node it runs on."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    execution_id: str = Field(pattern=r"^[0-9a-z]{4,32}$")
    attempt: int = Field(ge=1, le=1_000_000)
    token: str = Field(pattern=r"^[0-9a-f]{64}$")
    ray_node_id: str | None = Field(default=None, pattern=RAY_NODE_ID_PATTERN)
    # The ticket's API; None: the node's own. Another host is refused.
    api_url: str | None = Field(default=None, max_length=2048)


class AttemptOrder(AttemptRequest):
    """What the service tells its attempt process: the request, with the
    API it checked."""

    api_url: str


class ApiUrls:
    """The APIs a ticket may name: the node's own, and what the operator
    adds in RGRID_NODE_API_URLS (exact URLs, or `http://host:*` for any
    port of a host: a test grid whose Ray serves several API servers).
    Anything else is refused: the attempt process takes its spec, and so
    every name and path it uses, from that API."""

    def __init__(self, own: str, extra: str = "") -> None:
        self.own = own.rstrip("/")
        entries = [e.strip().rstrip("/") for e in extra.split(",") if e.strip()]
        self.exact = {self.own, *(e for e in entries if not e.endswith(":*"))}
        self.any_port = {e.removesuffix(":*") for e in entries if e.endswith(":*")}

    def allows(self, url: str) -> bool:
        url = url.rstrip("/")
        if url in self.exact:
            return True
        try:
            parts = urlsplit(url)
            port = parts.port  # a malformed port raises here
        except ValueError:
            return False
        return (
            port is not None
            and parts.scheme in ("http", "https")
            and parts.username is None
            and parts.password is None
            and parts.path == ""
            and f"{parts.scheme}://{parts.hostname}" in self.any_port
        )


def peer_uid(conn: socket.socket) -> int:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


class AttemptService:
    """Listens on `path` for the Ray user's requests (`caller_uid`; this
    process's own uid when Ray runs as its caller)."""

    def __init__(
        self,
        path: Path,
        caller_uid: int,
        caller_gid: int,
        apis: ApiUrls,
        env: dict[str, str],
        max_attempts: int,
    ) -> None:
        self.path = path
        self.caller_uid = caller_uid
        self.caller_gid = caller_gid
        self.apis = apis
        self.env = env
        self._room = threading.BoundedSemaphore(max_attempts)
        self._idle: list[subprocess.Popen[bytes]] = []
        self._idle_lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._stopped = threading.Event()

    # -- lifecycle ---------------------------------------------------------
    def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        _sweep_dead_sockets(self.path.parent)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # Created with no access for anyone, then opened to the Ray user's group only.
        old = os.umask(0o177)
        try:
            sock.bind(str(self.path))
        finally:
            os.umask(old)
        if os.geteuid() == 0:
            os.chown(self.path, 0, self.caller_gid)
            self.path.chmod(0o660)
        sock.listen(64)
        self._sock = sock
        threading.Thread(target=self._accept, name="rgrid-attempt-service", daemon=True).start()
        self._refill()
        log.info("attempt service listening on %s", self.path)

    def stop(self) -> None:
        self._stopped.set()
        if self._sock is not None:
            self._sock.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        with self._idle_lock:
            idle, self._idle = self._idle, []
        for proc in idle:
            _kill(proc)

    # -- serving -------------------------------------------------------------
    def _accept(self) -> None:
        assert self._sock is not None
        while not self._stopped.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), name="rgrid-attempt", daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            uid = peer_uid(conn)
            if uid != self.caller_uid:
                log.warning("refused an attempt request from uid %d", uid)
                return
            request = self._read_request(conn)
            if request is None:
                return
            if request.api_url is not None and not self.apis.allows(request.api_url):
                log.warning(
                    "refused %s attempt %d: its API is not this node's", request.execution_id, request.attempt
                )
                _refuse(conn)
                return
            if not self._room.acquire(blocking=False):
                log.warning(
                    "refused %s attempt %d: every slot is running", request.execution_id, request.attempt
                )
                _refuse(conn)
                return
            try:
                result = self._run(conn, request)
            finally:
                self._room.release()
            with contextlib.suppress(OSError):
                conn.sendall(f"{result}\n".encode())

    def _read_request(self, conn: socket.socket) -> AttemptRequest | None:
        conn.settimeout(REQUEST_TIMEOUT_S)
        data = b""
        try:
            while b"\n" not in data and len(data) <= MAX_REQUEST_BYTES:
                chunk = conn.recv(MAX_REQUEST_BYTES)
                if not chunk:
                    break
                data += chunk
            return AttemptRequest.model_validate_json(data.partition(b"\n")[0])
        except (OSError, ValidationError, ValueError):
            log.warning("refused a malformed attempt request (%d bytes)", len(data))
            _refuse(conn)
            return None
        finally:
            conn.settimeout(None)

    def _run(self, conn: socket.socket, request: AttemptRequest) -> str:
        """Run the attempt to its end; abandon it if the caller goes away."""
        proc = self._take()
        order = AttemptOrder(**{**request.model_dump(), "api_url": request.api_url or self.apis.own})
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(order.model_dump_json().encode() + b"\n")
            proc.stdin.flush()
        except OSError:
            _kill(proc)
            return REFUSED
        out, caller = proc.stdout.fileno(), conn.fileno()
        while True:
            ready, _, _ = select.select([caller, out], [], [])
            if out in ready:
                result = proc.stdout.readline().decode(errors="replace").strip()
                if not result:  # it died during the attempt
                    _kill(proc)
                    return "crashed"
                self._keep(proc)
                return result
            if caller in ready:
                # The relay sends nothing after its request: its socket
                # turning readable means it closed (or misbehaves).
                log.warning(
                    "the Ray task of %s attempt %d ended: stopping it", request.execution_id, request.attempt
                )
                _abandon(proc)
                return "abandoned"

    def _take(self) -> subprocess.Popen[bytes]:
        """A waiting attempt process, or a fresh one; when none is left
        waiting, one more starts in the background for the next attempt."""
        proc = None
        with self._idle_lock:
            while self._idle and proc is None:
                candidate = self._idle.pop()
                proc = candidate if candidate.poll() is None else None
            empty = not self._idle
        if empty:
            threading.Thread(target=self._refill, name="rgrid-attempt-spare", daemon=True).start()
        return proc or self._spawn()

    def _keep(self, proc: subprocess.Popen[bytes]) -> None:
        """Keep a process that reported for the next attempt (its code
        imported, its connections to the API and storage open), up to
        MAX_IDLE; close the others (they exit on end of input)."""
        with self._idle_lock:
            if not self._stopped.is_set() and len(self._idle) < MAX_IDLE:
                self._idle.append(proc)
                return
        _close(proc)

    def _refill(self) -> None:
        with self._idle_lock:
            if self._stopped.is_set() or self._idle:
                return
        self._keep(self._spawn())

    def _spawn(self) -> subprocess.Popen[bytes]:
        # A process group of its own (a Ctrl+C meant for the agent is not
        # its, and killing the group ends the attempt's tree), in the
        # agent's session: a node crash (its session killed) or a hang takes
        # it with the node, as it took Ray's workers.
        return subprocess.Popen(
            [sys.executable, "-m", "rgrid_runner.attemptproc"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=self.env,
            cwd="/",
            process_group=0,
        )


def _sweep_dead_sockets(directory: Path) -> None:
    """Sockets of agents that died without removing theirs (named
    <digest>-<pid>.sock): gone once their pid is."""
    for path in directory.glob("*-*.sock"):
        pid = path.stem.rpartition("-")[2]
        if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def _refuse(conn: socket.socket) -> None:
    """Say no, and read what the caller still sends (up to a bound) so that
    closing does not reset the connection before the answer is read."""
    with contextlib.suppress(OSError):
        conn.sendall(f"{REFUSED}\n".encode())
        conn.shutdown(socket.SHUT_WR)
        conn.settimeout(1.0)
        drained = 0
        while drained < 16 * MAX_REQUEST_BYTES and (chunk := conn.recv(MAX_REQUEST_BYTES)):
            drained += len(chunk)


def _abandon(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM: the attempt stops its job, reports nothing and cleans up
    (its network, cgroup and disk); killed if that takes too long."""
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(ABANDON_GRACE_S)
    except subprocess.TimeoutExpired:
        _kill(proc)


def _close(proc: subprocess.Popen[bytes]) -> None:
    """End of input: an idle attempt process exits by itself."""
    with contextlib.suppress(OSError):
        if proc.stdin is not None:
            proc.stdin.close()


def _kill(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
