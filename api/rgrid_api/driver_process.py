"""Keeps the server's Ray driver process (`rgrid_runner.raydriver`) running
against the cluster's current head.

The server never joins Ray itself: Ray ends a driver whose GCS is gone, and
the API must keep serving while the head is down. This supervisor starts
the driver at the head's address (as the head's agent announced it in the
database, else RGRID_RAY_ADDRESS), restarts it when it exits (with the
grid's restart schedule), and replaces it when the head moved or restarted
(a new head is a new cluster, which a driver cannot follow). It gives the
driver the grid's Ray token in force (`rgrid_api.raytoken`), and says which
token its driver runs with: the claim hands nothing to a cluster on its way
out. Each driver process is one generation: when it ends, everything it held is reported
lost at once, so the dispatcher gives those attempts back without waiting
for their leases.
"""

from __future__ import annotations

import logging
import os
import queue
import subprocess
import sys
import threading
from dataclasses import dataclass, field

from sqlalchemy.orm import sessionmaker

from rgrid.restarts import RestartPolicy
from rgrid_api.raytoken import TokenState, current
from rgrid_api.settings import Settings
from rgrid_api.transport import Listener
from rgrid_api.workers import current_head
from rgrid_runner.driver_messages import (
    FROM_DRIVER,
    Cancel,
    Capacity,
    Connected,
    Fence,
    Submit,
    Verified,
    Verify,
    line,
)
from rgrid_runner.rayuser import as_ray_user, inherited_by_ray, ray_account, with_ray_token
from rgrid_runner.settings import runner_settings

log = logging.getLogger(__name__)

# How often the head's address is read and the driver checked: a read of the
# database each time, which is most of an idle server's work.
SUPERVISE_S = 1.0
VERIFY_TIMEOUT_S = 5.0
STOP_GRACE_S = 10.0


@dataclass
class _Driver:
    generation: int
    address: str
    head_node: str | None
    token_fp: str | None  # the Ray token it runs with
    proc: subprocess.Popen[bytes]
    connected: threading.Event = field(default_factory=threading.Event)
    capacity: Capacity | None = None  # as the driver last said
    reader: threading.Thread | None = None
    # Lines for its stdin, written by a thread of its own: a driver that
    # stops reading must never block the dispatcher or this supervisor.
    outbox: queue.SimpleQueue[bytes | None] = field(default_factory=queue.SimpleQueue)


class DriverProcess:
    """The transport: Ray, through a supervised child process."""

    def __init__(self, settings: Settings, sessions: sessionmaker) -> None:
        self.settings = settings
        self.sessions = sessions
        self.listener: Listener | None = None
        self.policy = RestartPolicy()
        self.ray_account = ray_account(runner_settings().ray_user)
        self.last_reason: str | None = None
        self._driver: _Driver | None = None
        self._generation = 0
        self._token = TokenState(None, None)  # as last read
        # Verify requests waiting for the driver's answer.
        self._requests = 0
        self._pending: dict[int, tuple[list[bool | None], threading.Event]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._supervise, name="rgrid-driver-supervisor", daemon=True)

    # -- lifecycle ---------------------------------------------------------
    def start(self, listener: Listener) -> None:
        self.listener = listener
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        driver = self._driver
        if driver is not None:
            self._end(driver, graceful=True)

    # -- what the dispatcher and the monitor use ---------------------------
    def ready(self) -> int | None:
        """The generation of a connected driver, or None."""
        driver = self._driver
        return driver.generation if driver is not None and driver.connected.is_set() else None

    def ray_token_fingerprint(self) -> str | None:
        driver = self._driver
        return driver.token_fp if driver is not None else None

    def capacity(self) -> Capacity | None:
        """The cluster's job nodes, as the connected driver last said."""
        driver = self._driver
        return driver.capacity if driver is not None and driver.connected.is_set() else None

    def alive(self, generation: int) -> bool:
        driver = self._driver
        return driver is not None and driver.generation == generation

    def submit(self, message: Submit) -> int | None:
        """Hand an attempt to the driver; the generation that took it, or None."""
        return self._send(message)

    def cancel_task(self, execution_id: str, attempt: int) -> None:
        self._send(Cancel(execution_id=execution_id, attempt=attempt))

    def fence_node(self, ray_node_id: str, worker_id: str) -> None:
        self._send(Fence(ray_node_id=ray_node_id, worker_id=worker_id))

    def verify_node(
        self, ray_node_id: str, worker_id: str, timeout_s: float = VERIFY_TIMEOUT_S
    ) -> bool | None:
        """Whether the Ray node is the worker's (its raylet carries the
        worker's resource), as the GCS says; None if no driver could ask."""
        with self._lock:
            self._requests += 1
            request = self._requests
            answer: list[bool | None] = []
            done = threading.Event()
            self._pending[request] = (answer, done)
        try:
            if self._send(Verify(request=request, ray_node_id=ray_node_id, worker_id=worker_id)) is None:
                return None
            done.wait(timeout_s)
            return answer[0] if answer else None
        finally:
            with self._lock:
                self._pending.pop(request, None)

    def _send(self, message: Submit | Cancel | Fence | Verify) -> int | None:
        with self._lock:
            driver = self._driver
            if driver is None:
                return None
            driver.outbox.put(line(message))
            return driver.generation

    def _write(self, driver: _Driver) -> None:
        """Feed the driver's stdin; None (or a driver gone) closes it, which
        asks the driver to leave Ray."""
        stdin = driver.proc.stdin
        assert stdin is not None
        try:
            while (data := driver.outbox.get()) is not None:
                stdin.write(data)
                stdin.flush()
        except OSError:
            pass  # it died; the supervisor reports its work lost
        finally:
            try:
                stdin.close()
            except OSError:
                pass

    # -- supervision -------------------------------------------------------
    def _head(self) -> tuple[str, str | None]:
        with self.sessions() as session:
            head = current_head(session)
            self._token = current(session)
            session.rollback()
        return (head.address, head.ray_node_id) if head else (self.settings.ray_address, None)

    def _supervise(self) -> None:
        while not self._stop.wait(SUPERVISE_S):
            try:
                address, node = self._head()
            except Exception as exc:  # noqa: BLE001 - the database may be away: keep what runs
                log.warning("cannot read the Ray head's address: %s", exc)
                continue
            driver = self._driver
            if driver is not None:
                code = driver.proc.poll()
                if code is not None:
                    self._lost(driver, f"Ray driver exited ({_describe(code)})", crashed=True)
                elif node is not None and (driver.address != address or driver.head_node not in (None, node)):
                    log.warning("the Ray head is now %s (node %s): starting a new driver", address, node)
                    self._end(driver, graceful=False)
                    self._lost(driver, "the Ray head restarted or moved", crashed=False)
                elif driver.head_node is None and node is not None and driver.connected.is_set():
                    driver.head_node = node
            if self._driver is None and self.policy.may_start() and not self._stop.is_set():
                self._spawn(address, node)

    def _spawn(self, address: str, node: str | None) -> None:
        self._generation += 1
        # Nothing of the server's configuration: the driver is a Ray process,
        # within reach of every node that holds the Ray token.
        # It runs as the Ray user too, where the server runs as root.
        env = inherited_by_ray(os.environ)
        env["RAY_ENABLE_UV_RUN_RUNTIME_ENV"] = "0"
        token = self._token
        if token.token is not None:
            env = with_ray_token(env, token.token)
        proc = subprocess.Popen(
            as_ray_user(self.ray_account, [sys.executable, "-m", "rgrid_runner.raydriver", address]),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            cwd="/",
        )
        driver = _Driver(self._generation, address, node, token.fingerprint, proc)
        driver.reader = threading.Thread(
            target=self._read, args=(driver,), name=f"rgrid-driver-{driver.generation}", daemon=True
        )
        driver.reader.start()
        threading.Thread(
            target=self._write, args=(driver,), name=f"rgrid-driver-{driver.generation}-in", daemon=True
        ).start()
        self.policy.started()
        with self._lock:
            self._driver = driver
        log.info("Ray driver %d starting for %s (pid %d)", driver.generation, address, proc.pid)

    def _read(self, driver: _Driver) -> None:
        assert driver.proc.stdout is not None
        for raw in driver.proc.stdout:
            try:
                message = FROM_DRIVER.validate_json(raw)
            except ValueError:
                log.warning("unreadable line from the Ray driver: %r", raw[:200])
                continue
            assert self.listener is not None
            if isinstance(message, Connected):
                driver.connected.set()
                self.listener.on_connected()
            elif isinstance(message, Capacity):
                driver.capacity = message
                self.listener.on_connected()  # more room may mean more to hand out
            elif isinstance(message, Verified):
                with self._lock:
                    waiting = self._pending.get(message.request)
                if waiting is not None:
                    waiting[0].append(message.ok)
                    waiting[1].set()
            else:
                self.listener.on_settled(driver.generation, message)

    def _end(self, driver: _Driver, graceful: bool) -> None:
        """Stop a driver: closing its stdin asks it to leave Ray."""
        with self._lock:
            if self._driver is driver:
                self._driver = None
        driver.outbox.put(None)
        if not graceful:
            driver.proc.kill()
        try:
            driver.proc.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            driver.proc.kill()
            driver.proc.wait()

    def _lost(self, driver: _Driver, reason: str, crashed: bool) -> None:
        with self._lock:
            if self._driver is driver:
                self._driver = None
        driver.outbox.put(None)  # its writer thread ends too
        if driver.reader is not None:
            driver.reader.join(timeout=5)  # settle what it reported before it went
        self.last_reason = reason
        pause = self.policy.crashed() if crashed else 0.0
        log.warning("%s; restarting it in %.0f s", reason, pause)
        if self.listener is not None:
            self.listener.on_lost(driver.generation, reason)


def _describe(code: int) -> str:
    return f"signal {-code}" if code < 0 else f"code {code}"
