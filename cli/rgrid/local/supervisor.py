"""The local grid's supervisor: one background process per RGRID_HOME that
starts every piece of the grid, watches it, and restarts it when it crashes
or hangs, so that nobody has to type `rgrid local up` again.

Pieces start in dependency order: the S3 server and the Ray head at once,
the API once S3 answers, the extra worker nodes once the head's GCS does.
Whether a running piece must be restarted is `verdict.failure` (its
process ended, it never became healthy, or it stayed unhealthy while what
it needs was up); restarts follow the grid's restart schedule
(`rgrid.restarts`).
The Ray head's restart needs nothing else restarted: the API's driver and
the worker agents follow the head through the database. Only a piece whose
address changed makes the pieces configured with that address restart.

Each restart is recorded in state.json (count, reason, time), which
`rgrid local status` shows. SIGTERM stops every piece, in reverse order,
and the supervisor with them. A supervisor that died leaves its pieces
running; the next one adopts them.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

from rgrid.filelock import FileLock
from rgrid.local import components as c
from rgrid.local.grid import PORT_NAMES, LocalGrid, healthy, kind
from rgrid.local.nodes import remove_all
from rgrid.local.procs import alive, free_ports, port_in_use, spawn, stop_session
from rgrid.local.state import LocalGridState, Piece, SupervisorRecord
from rgrid.local.verdict import Watched, failure

log = logging.getLogger("rgrid.local.supervisor")

TICK_S = 0.5
# Started only once these are healthy (a node joining before the head's GCS
# listens can hang), and only blamed for being unhealthy while they are.
DEPENDS = {"s3": (), "api": ("s3",), "ray": (), "worker": ("ray",)}


class Supervisor:
    def __init__(self, grid: LocalGrid) -> None:
        self.grid = grid
        self.watched: dict[str, Watched] = {}
        self._stop = threading.Event()

    def run(self) -> int:
        lock = FileLock(self.grid.dir / "supervisor.lock")
        if not lock.acquire(wait=False):
            log.info("another supervisor runs this grid")
            return 0
        signal.signal(signal.SIGTERM, lambda *_: self._stop.set())
        signal.signal(signal.SIGINT, lambda *_: self._stop.set())
        with self.grid.locked():
            state = self.grid.read_state()
            state.supervisor = SupervisorRecord(pid=os.getpid(), started_at=time.time())
            self.grid.save_state(state)
        log.info("supervising the local grid in %s", self.grid.dir)
        try:
            while not self._stop.is_set():
                try:
                    self._round()
                except Exception:
                    log.exception("supervision round failed; trying again")
                self._stop.wait(TICK_S)
        finally:
            self._stop_all()
            lock.release()
        return 0

    # -- one round ---------------------------------------------------------
    def _round(self) -> None:
        with self.grid.locked():
            state = self.grid.read_state()
            pieces = state.pieces
            wanted = self.grid.names(state)
            for name in [n for n in pieces if n not in wanted]:
                self._retire(name, pieces)
            changed = False
            for name in wanted:
                changed |= self._tend(name, state)
            if changed:
                self.grid.save_state(state)

    def _tend(self, name: str, state: LocalGridState) -> bool:
        """Check one piece, start or restart it if due. True if state changed."""
        pieces = state.pieces
        w = self.watched.setdefault(name, Watched())
        piece = pieces.get(name)
        now = time.monotonic()
        if piece is not None and piece.pid:
            why = self._failure(name, piece, w, pieces, now)
            if why is None:
                return False
            self._record_crash(name, piece, w, why)
            return True
        if not all(self._ok(dep, pieces) for dep in DEPENDS[kind(name)]):
            return False
        if not w.policy.may_start():
            return False
        self._start(name, state, w)
        return True

    def _failure(
        self, name: str, piece: Piece, w: Watched, pieces: dict[str, Piece], now: float
    ) -> str | None:
        """Why a recorded piece must be restarted, or None if it may run on."""
        exited = None
        if w.proc is not None:
            code = w.proc.poll()
            exited = _describe_exit(code) if code is not None else None
        elif not alive(piece.pid):
            exited = "exited"
        return failure(
            w,
            kind(name),
            exited,
            lambda: healthy(name, piece),
            lambda: all(self._ok(dep, pieces) for dep in DEPENDS[kind(name)]),
            now,
        )

    def _ok(self, name: str, pieces: dict[str, Piece]) -> bool:
        w = self.watched.get(name)
        piece = pieces.get(name)
        return piece is not None and bool(piece.pid) and w is not None and w.ok

    def _record_crash(self, name: str, piece: Piece, w: Watched, why: str) -> None:
        if piece.pid:
            stop_session(piece.pid)  # whatever it left behind (a raylet holding ports)
        pause = w.policy.crashed()
        piece.pid = None
        piece.restarts += 1
        piece.last_reason, piece.last_crash_at, piece.next_start_in_s = why, time.time(), pause
        w.proc, w.ok, w.healthy_once, w.unhealthy_since = None, False, False, None
        log.warning("%s %s; restarting it in %.0f s", name, why, pause)

    # -- starting ----------------------------------------------------------
    def _start(self, name: str, state: LocalGridState, w: Watched) -> None:
        previous = state.pieces.get(name)
        known = state.ports.get(name)
        # A restarted head moves: on one machine, the other nodes' raylets
        # still name the old GCS address, and Ray refuses to start a head
        # there. The API and the agents follow it through the database.
        ports = self.ports(name, state, fresh=name == "ray" and previous is not None)
        moved = known not in (None, ports)
        launch = self._launch(name, ports, state)
        proc = spawn(launch.argv, launch.env, self.grid.log_path(name), self.grid.dir)
        # Restarts and why are kept across the new process (`rgrid local status`).
        piece = previous or Piece()
        piece.pid, piece.ports, piece.started_at = proc.pid, ports, time.time()
        state.pieces[name] = piece
        w.proc, w.started, w.ok, w.healthy_once = proc, time.monotonic(), False, False
        w.policy.started()
        log.info("started %s (pid %d)", name, proc.pid)
        if moved:
            self._restart_dependents(name, state.pieces)

    def _restart_dependents(self, name: str, pieces: dict[str, Piece]) -> None:
        """A piece on new ports: those started with its old address restart."""
        for other in list(pieces):
            if other != name and name in _configured_with(other):
                piece = pieces.pop(other)
                if piece.pid:
                    stop_session(piece.pid)
                self.watched.pop(other, None)
                log.info("%s moved: restarting %s", name, other)

    def ports(self, name: str, state: LocalGridState, fresh: bool = False) -> dict[str, int]:
        """The piece's ports: the ones it had while they are all free (and
        not `fresh`), else new ones. Kept in state.json across restarts, so
        the pieces that know a piece's address keep working when it comes back."""
        known = state.ports.get(name)
        names = PORT_NAMES[kind(name)]
        if fresh or not known or set(known) != set(names) or any(port_in_use(p) for p in known.values()):
            known = dict(zip(names, free_ports(len(names)), strict=True))
            state.ports[name] = known
        return dict(known)

    def _launch(self, name: str, ports: dict[str, int], state: LocalGridState) -> c.Launch:
        home, secrets = self.grid.home, self.grid.secrets()
        token = c.ensure_ray_token(self.grid.ray_token_path())
        work_root = self.grid.dir / "work"
        if name == "s3":
            return c.s3_launch(self.grid.dir, ports, secrets)
        if name == "api":
            # RGRID_RAY_ADDRESS is only where to look first: the head's agent
            # announces where it really is through the database.
            gcs = state.ports.get("ray", {}).get("gcs") or self.ports("ray", state)["gcs"]
            settings = {}
            if state.max_workers:
                settings.update(c.autoscaler_env(home, self.grid.dir, state.max_workers))
            settings.update(state.settings)
            return c.api_launch(
                self.grid.dir,
                {**ports, "s3": state.pieces["s3"].ports["s3"], "gcs": gcs},
                secrets,
                token,
                state.database_url,
                settings,
            )
        api_url = f"http://127.0.0.1:{(state.ports.get('api') or self.ports('api', state))['api']}"
        if name == "ray":
            # Autoscaling: the head runs no jobs, so the grid really goes to zero.
            cpus = 0 if state.max_workers else None
            return c.ray_launch(home, ports, work_root, api_url, secrets, token, num_cpus=cpus)
        gcs = state.pieces["ray"].ports["gcs"]
        return c.worker_launch(home, f"local-{name}", ports, gcs, work_root, api_url, secrets, token)

    # -- stopping ----------------------------------------------------------
    def _retire(self, name: str, pieces: dict[str, Piece]) -> None:
        piece = pieces.pop(name)
        self.watched.pop(name, None)
        if piece.pid:
            stop_session(piece.pid)
        log.info("stopped %s (no longer wanted)", name)

    def _stop_all(self) -> None:
        with self.grid.locked():
            state = self.grid.read_state()
            for name in self.grid.stop_order(state):
                piece = state.pieces.pop(name, None)
                if piece is not None and piece.pid:
                    stop_session(piece.pid)
                    log.info("stopped %s", name)
            for node in remove_all(c.nodes_dir(self.grid.dir)):
                log.info("stopped autoscaled node %s", node)
            state.supervisor = None
            self.grid.save_state(state)


def _configured_with(name: str) -> tuple[str, ...]:
    """Pieces whose address is baked into this piece's configuration."""
    return {"api": ("s3",), "ray": ("api",), "worker": ("api",)}.get(kind(name), ())


def _describe_exit(code: int) -> str:
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # health checks, twice a second
    sys.exit(Supervisor(LocalGrid(Path(sys.argv[1]))).run())


if __name__ == "__main__":
    main()
