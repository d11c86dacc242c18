"""The embedded grid in RGRID_HOME/local: S3 server, Ray head, API server.

`up` is idempotent and repairs: a piece that is not running (or not
healthy) is started again, and the API is restarted whenever a piece it
depends on was. `down` stops exactly the process groups recorded in
state.json. A file lock keeps two CLIs from starting the grid at once.
"""

from __future__ import annotations

import secrets as pysecrets
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from rgrid.config import Target, read_json, write_private
from rgrid.errors import RgridError
from rgrid.filelock import FileLock
from rgrid.local import components as c
from rgrid.local.procs import (
    alive,
    free_port,
    port_in_use,
    session_members,
    spawn,
    stop_session,
)

START_TIMEOUT_S = {"s3": 60.0, "ray": 90.0, "api": 60.0, "worker": 60.0}
ORDER = ("s3", "ray", "api")
PORT_NAMES = {"s3": c.S3_PORTS, "ray": c.RAY_PORTS, "api": c.API_PORTS, "worker": c.WORKER_PORTS}
HEALTH = {"s3": c.s3_healthy, "ray": c.ray_healthy, "api": c.api_healthy, "worker": c.worker_healthy}


def kind(name: str) -> str:
    """worker-3 is a worker; the fixed pieces are their own kind."""
    return "worker" if name.startswith("worker-") else name


@dataclass
class PieceStatus:
    name: str
    state: str  # running | unhealthy | crashed | stopped
    pid: int | None
    url: str | None
    log: Path


class LocalGrid:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.dir = home / "local"
        self.state_path = self.dir / "state.json"
        self.secrets_path = self.dir / "secrets.json"

    # -- state -------------------------------------------------------------
    def _state(self) -> dict:
        return read_json(self.state_path)

    def _save(self, state: dict) -> None:
        write_private(self.state_path, state)

    def secrets(self) -> dict[str, str]:
        """The grid's secrets, generated on first use; a key added by a newer
        version is generated into an existing file too."""
        data = read_json(self.secrets_path)
        wanted = {
            "worker_token": lambda: pysecrets.token_urlsafe(32),
            "api_key": lambda: "rg_" + pysecrets.token_urlsafe(32),
            "s3_access_key": lambda: "rgrid" + pysecrets.token_hex(6),
            "s3_secret_key": lambda: pysecrets.token_urlsafe(30),
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

    def _locked(self) -> AbstractContextManager[None]:
        """Two CLIs never start or stop the grid at once."""
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        return FileLock(self.dir / "lock").hold()

    # -- queries -----------------------------------------------------------
    def running(self) -> bool:
        """Cheap check used on every `rgrid run`: are all recorded pids alive?"""
        pieces = self._state().get("pieces", {})
        return all(alive(pieces.get(n, {}).get("pid")) for n in ORDER)

    def _names(self, state: dict) -> list[str]:
        return [*ORDER, *(f"worker-{i}" for i in range(1, state.get("workers", 0) + 1))]

    def target(self) -> Target:
        ports = self._state()["pieces"]["api"]["ports"]
        return Target(api_url=f"http://127.0.0.1:{ports['api']}", api_key=self.secrets()["api_key"])

    def dashboard_url(self) -> str | None:
        ray = self._state().get("pieces", {}).get("ray")
        return f"http://127.0.0.1:{ray['ports']['dashboard']}" if ray else None

    def node_info(self) -> dict | None:
        """What the local node offers (sandbox, runtimes), as its worker wrote it."""
        return read_json(c.node_info_path(self.home)) or None

    def status(self) -> list[PieceStatus]:
        state = self._state()
        pieces = state.get("pieces", {})
        out = []
        for name in ["ray", "api", "s3", *self._names(state)[len(ORDER) :]]:
            piece = pieces.get(name)
            if piece is None:
                out.append(PieceStatus(name, "stopped", None, None, self.log_path(name)))
                continue
            pid = piece["pid"]
            if not alive(pid):
                health = "crashed"
            else:
                health = "running" if HEALTH[kind(name)](piece["ports"]) else "unhealthy"
            out.append(PieceStatus(name, health, pid, _url(name, piece["ports"]), self.log_path(name)))
        return out

    # -- actions -----------------------------------------------------------
    def up(self, say: Callable[[str], None], workers: int | None = None) -> None:
        """Start what is not running healthily; `workers` sets how many extra
        worker nodes run beside the head (kept from the last call if None)."""
        with self._locked():
            state = self._state()
            pieces = state.setdefault("pieces", {})
            if workers is not None:
                for n in range(workers + 1, state.get("workers", 0) + 1):
                    gone = pieces.pop(f"worker-{n}", None)
                    if gone:
                        stop_session(gone["pid"])
                state["workers"] = workers
            api_ports = self._ports("api", pieces.get("api"), keep=self._healthy(pieces.get("api"), "api"))
            api_moved = api_ports != state.get("api_ports")
            state["api_ports"] = api_ports
            restarted: set[str] = set()
            if not self._healthy(pieces.get("s3"), "s3"):
                self._start("s3", pieces, state, say)
                restarted.add("s3")
            if api_moved or not self._healthy(pieces.get("ray"), "ray"):
                self._start("ray", pieces, state, say)
                restarted.add("ray")
            if restarted or not self._healthy(pieces.get("api"), "api"):
                self._start("api", pieces, state, say)
                restarted.add("api")
            for name in sorted(restarted, key=ORDER.index):
                self._wait_healthy(name, pieces[name])
            # Joining before the head's GCS listens can hang `ray start`.
            for name in self._names(state)[len(ORDER) :]:
                if "ray" in restarted or not self._healthy(pieces.get(name), "worker"):
                    self._start(name, pieces, state, say)
                    self._wait_healthy(name, pieces[name])
            self._save(state)

    def down(self) -> list[str]:
        with self._locked():
            state = self._state()
            stopped = []
            for name in reversed(self._names(state)):
                piece = state.get("pieces", {}).pop(name, None)
                if piece and session_members(piece["pid"]):
                    stop_session(piece["pid"])
                    stopped.append(name)
            self._save(state)
            return stopped

    def _healthy(self, piece: dict | None, name: str) -> bool:
        return piece is not None and alive(piece["pid"]) and HEALTH[kind(name)](piece["ports"])

    def _ports(self, name: str, previous: dict | None, keep: bool = False) -> dict[str, int]:
        """Reuse the previous ports when they are all free (or `keep`: still
        in use by the running piece itself), else pick new ones."""
        old = (previous or {}).get("ports", {})
        if (
            old
            and set(old) == set(PORT_NAMES[kind(name)])
            and (keep or not any(port_in_use(p) for p in old.values()))
        ):
            return old
        return {p: free_port() for p in PORT_NAMES[kind(name)]}

    def _start(self, name: str, pieces: dict, state: dict, say: Callable[[str], None]) -> None:
        """Start one piece and record it at once, so that nothing started is
        ever lost track of, even if a later step fails."""
        previous = pieces.get(name)
        if previous:
            # A crashed leader may leave members behind (a raylet holding ports).
            stop_session(previous["pid"])
        secrets = self.secrets()
        ray_token = c.ensure_ray_token(self.ray_token_path())
        api_url = f"http://127.0.0.1:{state['api_ports']['api']}"
        work_root = self.dir / "work"
        if name == "api":
            ports = state["api_ports"]
        else:
            ports = self._ports(name, previous)
        if name == "s3":
            launch = c.s3_launch(self.dir, ports, secrets)
        elif name == "ray":
            launch = c.ray_launch(self.home, ports, work_root, api_url, secrets, ray_token)
        elif name == "api":
            launch = c.api_launch(
                self.dir,
                {**ports, "s3": pieces["s3"]["ports"]["s3"], "gcs": pieces["ray"]["ports"]["gcs"]},
                secrets,
                ray_token,
            )
        else:
            launch = c.worker_launch(
                self.home,
                f"local-{name}",
                ports,
                pieces["ray"]["ports"]["gcs"],
                work_root,
                api_url,
                secrets,
                ray_token,
            )
        say(f"starting {name}")
        pid = spawn(launch.argv, launch.env, self.log_path(name), self.dir)
        pieces[name] = {"pid": pid, "ports": ports, "started_at": time.time()}
        self._save(state)

    def _wait_healthy(self, name: str, piece: dict) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S[kind(name)]
        while time.monotonic() < deadline:
            if HEALTH[kind(name)](piece["ports"]):
                return
            if not alive(piece["pid"]):
                raise RgridError(f"local {name} exited while starting; see {self.log_path(name)}")
            time.sleep(0.1)
        raise RgridError(
            f"local {name} did not become healthy in {START_TIMEOUT_S[kind(name)]:.0f} s; "
            f"see {self.log_path(name)}"
        )


def _url(name: str, ports: dict[str, int]) -> str | None:
    if kind(name) == "worker":
        return None
    if name == "ray":
        return f"http://127.0.0.1:{ports['dashboard']}"
    if name == "api":
        return f"http://127.0.0.1:{ports['api']}"
    return f"http://127.0.0.1:{ports['s3']}"
