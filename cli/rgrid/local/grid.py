"""The embedded grid in RGRID_HOME/local: S3 server, API server, Ray head
and extra worker nodes, kept running by the grid's supervisor
(`rgrid.local.supervisor`), a background process of its own.

`up` starts the supervisor if it is not running (it adopts pieces that are
still alive) and waits until every piece is healthy; `down` stops the
supervisor, which stops exactly the process sessions it started. state.json
(`rgrid.local.state`) is shared by both, under a file lock.
"""

from __future__ import annotations

import secrets as pysecrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from rgrid.config import Target, read_json, write_private
from rgrid.errors import RgridError
from rgrid.filelock import FileLock
from rgrid.local import components as c
from rgrid.local.nodes import records, remove_all
from rgrid.local.procs import alive, session_members, spawn, stop_session
from rgrid.local.state import LocalGridState, Piece

UP_TIMEOUT_S = 180.0
SUPERVISOR_STOP_S = 60.0
ORDER = ("s3", "api", "ray")
PORT_NAMES = {"s3": c.S3_PORTS, "ray": c.RAY_PORTS, "api": c.API_PORTS, "worker": c.WORKER_PORTS}
HEALTH = {"s3": c.s3_healthy, "ray": c.ray_healthy, "api": c.api_healthy, "worker": c.worker_healthy}


def kind(name: str) -> str:
    """worker-3 is a worker; the fixed pieces are their own kind."""
    return "worker" if name.startswith("worker-") else name


def healthy(name: str, piece: Piece) -> bool:
    """Whether the piece answers; never, if state.json lost its ports."""
    return _has_ports(name, piece.ports) and HEALTH[kind(name)](piece.ports)


def _has_ports(name: str, ports: dict[str, int]) -> bool:
    return set(PORT_NAMES[kind(name)]) <= set(ports)


@dataclass
class PieceStatus:
    name: str
    state: str  # running | unhealthy | restarting | crashed | stopped
    pid: int | None
    url: str | None
    log: Path
    restarts: int = 0
    last_reason: str | None = None
    last_crash_at: float | None = None


class LocalGrid:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.dir = home / "local"
        self.state_path = self.dir / "state.json"
        self.secrets_path = self.dir / "secrets.json"

    # -- state -------------------------------------------------------------
    def read_state(self) -> LocalGridState:
        """What state.json says; a damaged value reads as its default
        (`LocalGridState.read`). Only a file that is no JSON object at all
        is refused: what it started is then unknown, so the grid's
        processes must be stopped by hand before it goes."""
        try:
            return LocalGridState.read(read_json(self.state_path))
        except (ValueError, RecursionError) as exc:
            raise RgridError(
                f"{self.state_path} is not a state rgrid can read ({_first_problem(exc)}); "
                "stop what still runs of the grid by hand (`pgrep -af rgrid` lists it), then remove it"
            ) from None

    def save_state(self, state: LocalGridState) -> None:
        write_private(self.state_path, state.model_dump(mode="json"))

    def locked(self) -> AbstractContextManager[None]:
        """One writer of state.json at a time (the CLI or the supervisor)."""
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        return FileLock(self.dir / "lock").hold()

    def secrets(self) -> dict[str, str]:
        """The grid's secrets, generated on first use; a key added by a newer
        version is generated into an existing file too."""
        data = read_json(self.secrets_path)
        wanted = {
            "worker_token": lambda: pysecrets.token_urlsafe(32),
            "head_token": lambda: pysecrets.token_urlsafe(32),
            "api_key": lambda: "rg_" + pysecrets.token_urlsafe(32),
            "s3_access_key": lambda: "rgrid" + pysecrets.token_hex(6),
            "s3_secret_key": lambda: pysecrets.token_urlsafe(30),
            "s3_presign_access_key": lambda: "rgridsign" + pysecrets.token_hex(6),
            "s3_presign_secret_key": lambda: pysecrets.token_urlsafe(30),
            "runner_secret": lambda: pysecrets.token_urlsafe(32),
        }
        missing = {k: make() for k, make in wanted.items() if k not in data}
        if missing:
            data.update(missing)
            write_private(self.secrets_path, data)
        return data

    def ray_token_path(self) -> Path:
        return self.dir / "ray-token"

    def log_path(self, name: str) -> Path:
        return self.dir / "logs" / f"{name}.log"

    def names(self, state: LocalGridState) -> list[str]:
        return [*ORDER, *(f"worker-{i}" for i in range(1, state.workers + 1))]

    def stop_order(self, state: LocalGridState) -> list[str]:
        """Every piece to stop, the last started first: what is recorded
        beyond the wanted shape (a damaged `workers`) too."""
        names = self.names(state)
        return [*(n for n in state.pieces if n not in names), *reversed(names)]

    # -- queries -----------------------------------------------------------
    def supervisor_pid(self) -> int | None:
        record = self.read_state().supervisor
        return record.pid if record is not None and alive(record.pid) else None

    def running(self) -> bool:
        """Cheap check used on every `rgrid run`: the supervisor is alive
        (it heals the rest) and the API has been started."""
        return self.supervisor_pid() is not None and bool(self.read_state().pid_of("api"))

    def target(self) -> Target:
        api = self.read_state().pieces.get("api")
        if api is None or not _has_ports("api", api.ports):
            raise RgridError("the local grid's API is not running: rgrid local up")
        return Target(api_url=f"http://127.0.0.1:{api.ports['api']}", api_key=self.secrets()["api_key"])

    def dashboard_url(self) -> str | None:
        ray = self.read_state().pieces.get("ray")
        return _url("ray", ray.ports) if ray else None

    def autoscaled_nodes(self) -> list[dict]:
        """The nodes the autoscaler started here (name, pid, alive)."""
        return records(c.nodes_dir(self.dir))

    def node_info(self) -> dict | None:
        """What the local node offers (sandbox, runtimes), as its worker wrote it."""
        return read_json(c.node_info_path(self.home)) or None

    def status(self) -> list[PieceStatus]:
        state = self.read_state()
        supervised = self.supervisor_pid() is not None
        out = []
        for name in ["ray", "api", "s3", *self.names(state)[len(ORDER) :]]:
            piece = state.pieces.get(name)
            if piece is None:
                out.append(PieceStatus(name, "stopped", None, None, self.log_path(name)))
                continue
            pid = piece.pid
            if not alive(pid):
                health = "restarting" if supervised else "crashed"
            else:
                health = "running" if healthy(name, piece) else "unhealthy"
            out.append(
                PieceStatus(
                    name,
                    health,
                    pid if alive(pid) else None,
                    _url(name, piece.ports),
                    self.log_path(name),
                    piece.restarts,
                    piece.last_reason,
                    piece.last_crash_at,
                )
            )
        return out

    # -- actions -----------------------------------------------------------
    def up(
        self,
        say: Callable[[str], None],
        workers: int | None = None,
        database_url: str | None = None,
        max_workers: int | None = None,
        settings: dict[str, str] | None = None,
    ) -> None:
        """Have the supervisor run the grid and wait until every piece is
        healthy. `workers` (extra worker nodes beside the head),
        `database_url` (default: SQLite in RGRID_HOME), `max_workers` (the
        autoscaler's local nodes; 0: off) and `settings` (server settings
        passed on) are kept until changed."""
        with self.locked():
            state = self.read_state()
            running = bool(state.pieces)
            if workers is not None and state.workers != workers:
                if running:
                    say(f"worker nodes: {state.workers} -> {workers} (the others keep running)")
                state.workers = workers
            restart: dict[str, str] = {}
            if database_url is not None and state.database_url != (database_url or None):
                state.database_url = database_url or None
                restart["api"] = "it moves to the new database"
            if max_workers is not None and state.max_workers != max_workers:
                state.max_workers = max_workers
                restart["api"] = "the autoscaler's settings changed"
                restart["ray"] = "the head runs jobs only without autoscaled nodes"
                if not max_workers:
                    gone = remove_all(c.nodes_dir(self.dir))  # nobody would scale them down
                    if gone:
                        say(f"removed autoscaled nodes {', '.join(gone)}: the autoscaler is off")
            if settings is not None and state.settings != settings:
                state.settings = settings
                restart.setdefault("api", "its settings changed")
            for name, why in restart.items():
                piece = state.pieces.pop(name, None)
                if piece is not None and piece.pid:
                    say(f"restarting {piece_label(name)}: {why}")
                    stop_session(piece.pid)
            self.save_state(state)
            supervisor = None
            if self.supervisor_pid() is None:
                say("starting the supervisor")
                supervisor = spawn(
                    [sys.executable, "-m", "rgrid.local.supervisor", str(self.home)],
                    c.base_env(),
                    self.log_path("supervisor"),
                    self.dir,
                )
        self._wait_healthy(supervisor, say)

    def _wait_healthy(self, supervisor: subprocess.Popen[bytes] | None, say: Callable[[str], None]) -> None:
        """Until every piece is healthy, saying each as it comes up."""
        started = time.monotonic()
        deadline = started + UP_TIMEOUT_S
        ready = {p.name for p in self.status() if p.state == "running"}
        while time.monotonic() < deadline:
            if supervisor is not None and supervisor.poll() is not None and self.supervisor_pid() is None:
                raise RgridError(f"the local grid's supervisor exited; see {self.log_path('supervisor')}")
            pieces = self.status()
            for p in pieces:
                if p.state == "running" and p.name not in ready:
                    ready.add(p.name)
                    say(f"{piece_label(p.name)} is up ({time.monotonic() - started:.1f} s)")
            if self.supervisor_pid() is not None and all(p.state == "running" for p in pieces):
                return
            time.sleep(0.2)
        waiting = [p for p in self.status() if p.state != "running"]
        detail = "; ".join(f"{p.name} is {p.state} (see {p.log})" for p in waiting)
        raise RgridError(f"the local grid did not become healthy in {UP_TIMEOUT_S:.0f} s: {detail}")

    def down(self) -> list[str]:
        """Stop the supervisor (it stops its pieces), then anything recorded
        that is still alive (a supervisor that had died left it)."""
        running = [p.name for p in self.status() if p.pid is not None]
        pid = self.supervisor_pid()
        if pid is not None:
            stop_session(pid, grace_s=SUPERVISOR_STOP_S, first=signal.SIGTERM)
        with self.locked():
            state = self.read_state()
            for name in self.stop_order(state):
                piece = state.pieces.pop(name, None)
                if piece is not None and piece.pid and session_members(piece.pid):
                    stop_session(piece.pid)
            running += remove_all(c.nodes_dir(self.dir))
            state.supervisor = None
            self.save_state(state)
        return running


def _first_problem(exc: ValueError | RecursionError) -> str:
    """A damaged state file's first problem, with where it is."""
    if not isinstance(exc, ValidationError):
        return str(exc)
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"])
    return f"{where}: {error['msg']}" if where else error["msg"]


def piece_label(name: str) -> str:
    """How a piece is called where the user reads it."""
    fixed = {"s3": "S3 (SeaweedFS)", "ray": "the Ray head", "api": "the rgrid API"}
    return fixed.get(name) or f"worker node {name.removeprefix('worker-')}"


def describe_workers(state: LocalGridState) -> str:
    """The grid's worker mode, as `local status` shows it."""
    autoscaled = state.max_workers
    if autoscaled:
        return f"autoscaled 0–{autoscaled} worker nodes (the head runs no jobs)"
    fixed = state.workers
    return (
        f"{fixed} worker node{'' if fixed == 1 else 's'} beside the head"
        if fixed
        else "the head runs every job"
    )


def _url(name: str, ports: dict[str, int]) -> str | None:
    if kind(name) == "worker" or not _has_ports(name, ports):
        return None
    if name == "ray":
        return f"http://127.0.0.1:{ports['dashboard']}"
    if name == "api":
        return f"http://127.0.0.1:{ports['api']}"
    return f"http://127.0.0.1:{ports['s3']}"
