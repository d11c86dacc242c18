"""The node agent: runs beside the raylet on every node.

It starts the raylet as its child in its own process group (killing that
group is a node crash), registers the node with the API, heartbeats every
`heartbeat_s`, and stops the node if the control plane declared it dead
(its attempts were given to others). SIGTERM drains: the node is marked
draining (the API gives it no new attempt, Ray is asked to place nothing
more there), running attempts finish, then the raylet stops and the node
leaves.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import threading
import time
from dataclasses import dataclass

import httpx

from rgrid.wire import WorkerAck, WorkerRegistration, WorkerStatus
from rgrid_runner.ray_compat import alive_node_ids, drain_node

log = logging.getLogger(__name__)

DRAIN_POLL_S = 1.0
NODE_ID_WAIT_S = 30.0
RAYLET_STOP_GRACE_S = 15.0


@dataclass(frozen=True)
class AgentConfig:
    api_url: str
    token: str
    registration: WorkerRegistration
    heartbeat_s: float = 2.0
    gcs_address: str | None = None


class NodeAgent:
    def __init__(self, config: AgentConfig, raylet_argv: list[str], raylet_env: dict[str, str]) -> None:
        self.config = config
        self.raylet_argv = raylet_argv
        self.raylet_env = raylet_env
        self.http = httpx.Client(
            base_url=config.api_url.rstrip("/") + "/v1/workers",
            headers={"Authorization": f"Bearer {config.token}"},
            timeout=10.0,
        )
        self._drain = threading.Event()
        self.raylet: subprocess.Popen[bytes] | None = None

    @property
    def worker_id(self) -> str:
        return self.config.registration.id

    def run(self) -> int:
        signal.signal(signal.SIGTERM, lambda *_: self._drain.set())
        signal.signal(signal.SIGINT, lambda *_: self._drain.set())
        self.raylet = subprocess.Popen(self.raylet_argv, env=self.raylet_env)
        started = time.monotonic()
        registered = False
        node_id: str | None = None
        while True:
            if self.raylet.poll() is not None:
                log.error("raylet exited with %s; the node is gone", self.raylet.returncode)
                self._post(f"{self.worker_id}/leave")
                return self.raylet.returncode or 1
            if self._drain.is_set():
                return self._drain_and_leave()
            if not registered or (node_id is None and time.monotonic() - started < NODE_ID_WAIT_S):
                # Register at once (attempts may start as soon as the raylet
                # joins); register again, an upsert, once Ray names the node.
                node_id = self._ray_node_id()
                registration = self.config.registration.model_copy(update={"ray_node_id": node_id})
                registered = self._post("register", registration) is not None or registered
            else:
                ack = self._post(f"{self.worker_id}/heartbeat")
                if ack is not None and ack.status == WorkerStatus.DEAD:
                    log.error("the control plane declared this node dead; stopping it")
                    self._stop_raylet()
                    return 1
            self._drain.wait(self.config.heartbeat_s)

    def _post(self, path: str, body: WorkerRegistration | None = None) -> WorkerAck | None:
        try:
            resp = self.http.post(f"/{path}", json=body.model_dump() if body else None)
            resp.raise_for_status()
            return WorkerAck.model_validate_json(resp.content)
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("API call %s failed: %s", path, exc)
            return None

    def _running(self) -> int:
        try:
            resp = self.http.get(f"/{self.worker_id}/running")
            resp.raise_for_status()
            return int(resp.json())
        except (httpx.HTTPError, ValueError):
            return -1

    def _drain_and_leave(self) -> int:
        log.info("draining: no new work, waiting for running attempts")
        self._post(f"{self.worker_id}/drain")
        self._drain_in_ray()
        while self.raylet is not None and self.raylet.poll() is None and self._running() != 0:
            self._post(f"{self.worker_id}/heartbeat")
            time.sleep(DRAIN_POLL_S)
        self._stop_raylet()
        self._post(f"{self.worker_id}/leave")
        return 0

    def _ray_node_id(self) -> str | None:
        """This node's id in Ray: the alive node carrying our marker resource."""
        if not self.config.gcs_address:
            return None
        try:
            found = alive_node_ids(self.config.gcs_address, f"rgrid_worker_{self.worker_id}")
        except Exception as exc:  # noqa: BLE001 - the GCS may still be starting
            log.info("Ray node id not known yet: %s", exc)
            return None
        return found[0] if found else None

    def _drain_in_ray(self) -> None:
        """Ask Ray's GCS to place nothing more on this node."""
        node_id = self._ray_node_id()
        if node_id is None or not self.config.gcs_address:
            return
        try:
            accepted, why = drain_node(self.config.gcs_address, node_id, "rgrid worker stopping")
            if not accepted:
                log.warning("Ray refused to drain the node: %s", why)
        except Exception as exc:  # noqa: BLE001 - drain is best effort; the API refuses new work anyway
            log.warning("could not drain the node in Ray: %s", exc)

    def _stop_raylet(self) -> None:
        if self.raylet is None or self.raylet.poll() is not None:
            return
        self.raylet.terminate()
        try:
            self.raylet.wait(RAYLET_STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            self.raylet.kill()
            self.raylet.wait()
