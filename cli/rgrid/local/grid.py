"""The embedded grid in RGRID_HOME/local: S3 server, Ray head, API server.

`up` is idempotent and repairs: a piece that is not running (or not
healthy) is started again, and the API is restarted whenever a piece it
depends on was. `down` stops exactly the process groups recorded in
state.json. A file lock keeps two CLIs from starting the grid at once.
"""

from __future__ import annotations

import fcntl
import secrets as pysecrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from rgrid.config import Target, read_json, write_private
from rgrid.errors import RgridError
from rgrid.local import components as c
from rgrid.local.procs import (
    alive,
    free_port,
    port_in_use,
    session_members,
    spawn,
    stop_session,
)

START_TIMEOUT_S = {"s3": 60.0, "ray": 90.0, "api": 60.0}
ORDER = ("s3", "ray", "api")
PORT_NAMES = {"s3": c.S3_PORTS, "ray": c.RAY_PORTS, "api": c.API_PORTS}
HEALTH = {"s3": c.s3_healthy, "ray": c.ray_healthy, "api": c.api_healthy}


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
        data = read_json(self.secrets_path)
        if not data:
            data = {
                "api_key": "rg_" + pysecrets.token_urlsafe(32),
                "s3_access_key": "rgrid" + pysecrets.token_hex(6),
                "s3_secret_key": pysecrets.token_urlsafe(30),
                "runner_secret": pysecrets.token_urlsafe(32),
            }
            write_private(self.secrets_path, data)
        return data

    def log_path(self, name: str) -> Path:
        return self.dir / "logs" / f"{name}.log"

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(self.dir / "lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    # -- queries -----------------------------------------------------------
    def running(self) -> bool:
        """Cheap check used on every `rgrid run`: are all recorded pids alive?"""
        pieces = self._state().get("pieces", {})
        return all(alive(pieces.get(n, {}).get("pid")) for n in ORDER)

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
        pieces = self._state().get("pieces", {})
        out = []
        for name in ("ray", "api", "s3"):
            piece = pieces.get(name)
            if piece is None:
                out.append(PieceStatus(name, "stopped", None, None, self.log_path(name)))
                continue
            pid = piece["pid"]
            if not alive(pid):
                state = "crashed"
            else:
                state = "running" if HEALTH[name](piece["ports"]) else "unhealthy"
            out.append(PieceStatus(name, state, pid, _url(name, piece["ports"]), self.log_path(name)))
        return out

    # -- actions -----------------------------------------------------------
    def up(self, say: Callable[[str], None]) -> None:
        with self._locked():
            state = self._state()
            pieces = state.setdefault("pieces", {})
            restarted: set[str] = set()
            for name in ("s3", "ray"):
                if not self._healthy(pieces.get(name), name):
                    self._start(name, pieces, say)
                    restarted.add(name)
            if restarted or not self._healthy(pieces.get("api"), "api"):
                self._start("api", pieces, say)
                restarted.add("api")
            self._save(state)
            for name in sorted(restarted, key=ORDER.index):
                self._wait_healthy(name, pieces[name])

    def down(self) -> list[str]:
        with self._locked():
            state = self._state()
            stopped = []
            for name in reversed(ORDER):
                piece = state.get("pieces", {}).pop(name, None)
                if piece and session_members(piece["pid"]):
                    stop_session(piece["pid"])
                    stopped.append(name)
            self._save(state)
            return stopped

    def _healthy(self, piece: dict | None, name: str) -> bool:
        return bool(piece) and alive(piece["pid"]) and HEALTH[name](piece["ports"])

    def _ports(self, name: str, previous: dict | None) -> dict[str, int]:
        """Reuse the previous ports when they are all free, else pick new ones."""
        old = (previous or {}).get("ports", {})
        if old and set(old) == set(PORT_NAMES[name]) and not any(port_in_use(p) for p in old.values()):
            return old
        return {p: free_port() for p in PORT_NAMES[name]}

    def _start(self, name: str, pieces: dict, say: Callable[[str], None]) -> None:
        previous = pieces.get(name)
        if previous:
            # A crashed leader may leave members behind (a raylet holding ports).
            stop_session(previous["pid"])
        ports = self._ports(name, previous)
        secrets = self.secrets()
        if name == "s3":
            launch = c.s3_launch(self.dir, ports, secrets)
        elif name == "ray":
            launch = c.ray_launch(self.home, ports, self.dir / "work")
        else:
            launch = c.api_launch(self.dir, {**ports, "s3": pieces["s3"]["ports"]["s3"],
                                             "gcs": pieces["ray"]["ports"]["gcs"]}, secrets)
        say(f"starting {name}")
        pid = spawn(launch.argv, launch.env, self.log_path(name), self.dir)
        pieces[name] = {"pid": pid, "ports": ports, "started_at": time.time()}

    def _wait_healthy(self, name: str, piece: dict) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S[name]
        while time.monotonic() < deadline:
            if HEALTH[name](piece["ports"]):
                return
            if not alive(piece["pid"]):
                raise RgridError(f"local {name} exited while starting; see {self.log_path(name)}")
            time.sleep(0.1)
        raise RgridError(f"local {name} did not become healthy in {START_TIMEOUT_S[name]:.0f} s; "
                         f"see {self.log_path(name)}")


def _url(name: str, ports: dict[str, int]) -> str:
    if name == "ray":
        return f"http://127.0.0.1:{ports['dashboard']}"
    if name == "api":
        return f"http://127.0.0.1:{ports['api']}"
    return f"http://127.0.0.1:{ports['s3']}"
