"""The node agent: runs beside the raylet on every node and keeps it joined.

It starts the raylet as its child (killing the agent's session is a node
crash), registers the node with the API, heartbeats every
`heartbeat_s`, and supervises the raylet: one that exits, or that the
cluster no longer knows (the head restarted, which makes a new cluster), is
replaced by a fresh one joining wherever the head is now. The API names the
head's address in every answer, so a head that moved is followed without
anyone typing a command. Restarts follow the grid's restart schedule.

Each raylet is a new Ray node. Once the agent registers the new node's id,
the API gives back whatever the node's earlier raylets left open, and
refuses a late runner of theirs. A node the control plane declared dead is
restarted the same way (its attempts were already given to others), and so
is one whose Ray token is no longer the grid's: the API names the token in
force by its fingerprint, and the agent fetches it with the node's
credential (`rgrid_api.raytoken`).
SIGTERM drains: the
node is marked draining (no new attempt; Ray is asked to place nothing
more here), running attempts finish, then the raylet stops and the node
leaves. The autoscaler drains a node the same way by marking it draining:
the agent learns it from an answer, drains, leaves, and then waits for its
server to be deleted (it does not exit, or systemd would start it again).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass

import httpx

from rgrid.http import http_client
from rgrid.restarts import RestartPolicy
from rgrid.wire import RayTokenGrant, WorkerAck, WorkerRegistration, WorkerStatus, ray_token_fingerprint
from rgrid_runner.nodetoken import NodeRayToken
from rgrid_runner.ray_compat import RayNode, alive_nodes, drain_node
from rgrid_runner.rayuser import with_ray_token

log = logging.getLogger(__name__)

TICK_S = 0.5
DRAIN_POLL_S = 1.0
# The GCS relays a drain to this node's raylet; a stop must not hang on it.
DRAIN_TIMEOUT_S = 10.0
RAYLET_STOP_GRACE_S = 15.0
GCS_CHECK_S = 1.0
GCS_CONNECT_TIMEOUT_S = 1.0


@dataclass(frozen=True)
class AgentConfig:
    api_url: str
    token: str
    registration: WorkerRegistration
    # A head serves the GCS at `address`; a worker joins `address` until the
    # API names another head address (None: wait for the API to name one).
    head: bool = False
    address: str | None = None
    heartbeat_s: float = 2.0


@dataclass(frozen=True)
class ClusterSnapshot:
    address: str
    reachable: bool
    node: RayNode | None
    taken_at: float


class ClusterView:
    """What the GCS says about this node, refreshed in a thread of its own:
    Ray's client takes some 40 s to give up on a GCS that is down, and
    heartbeats must never wait for that."""

    def __init__(self, marker: str) -> None:
        self.marker = marker
        self.address: str | None = None
        self.latest: ClusterSnapshot | None = None
        self._stop = threading.Event()

    def start(self) -> None:
        threading.Thread(target=self._run, name="rgrid-cluster-view", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(GCS_CHECK_S):
            address = self.address
            if address is not None:
                self.latest = self._look(address)

    def _look(self, address: str) -> ClusterSnapshot:
        taken_at = time.monotonic()
        host, _, port = address.rpartition(":")
        try:
            with socket.create_connection((host, int(port)), timeout=GCS_CONNECT_TIMEOUT_S):
                pass
            found = alive_nodes(address, self.marker)
        except Exception as exc:  # noqa: BLE001 - a GCS that is down or starting answers in many ways
            log.debug("GCS at %s not answering: %s", address, exc)
            return ClusterSnapshot(address, False, None, taken_at)
        return ClusterSnapshot(address, True, found[0] if found else None, taken_at)


class NodeAgent:
    def __init__(
        self,
        config: AgentConfig,
        raylet_argv: list[str],
        raylet_env: dict[str, str],
        ray_token: NodeRayToken,
    ) -> None:
        """`raylet_env`: the raylet's environment but for the Ray token,
        which `ray_token` holds (it may change while the agent runs)."""
        self.config = config
        self.raylet_argv = raylet_argv
        self.raylet_env = raylet_env
        self.ray_token = ray_token
        self.token_fp: str | None = None  # the token the raylet runs with
        self.http = http_client(
            base_url=config.api_url.rstrip("/") + "/v1/workers",
            headers={"Authorization": f"Bearer {config.token}"},
            timeout=10.0,
        )
        self._drain = threading.Event()
        self._stopped = threading.Event()  # a signal, as opposed to the control plane's request
        self.view = ClusterView(f"rgrid_worker_{self.worker_id}")
        self.policy = RestartPolicy()
        self.raylet: subprocess.Popen[bytes] | None = None
        self.joined: str | None = None  # the GCS address the raylet joined
        self.started_at = 0.0
        self.node: RayNode | None = None
        self.registered = False  # this raylet registered (its node id void until known)
        self.announced = False  # ... and with its Ray node id
        self.head_address = config.address
        self._next_beat = 0.0
        self._api_failing = False

    @property
    def worker_id(self) -> str:
        return self.config.registration.id

    def run(self) -> int:
        signal.signal(signal.SIGTERM, lambda *_: self._signalled())
        signal.signal(signal.SIGINT, lambda *_: self._signalled())
        self.view.start()
        try:
            while not self._drain.is_set():
                self._tend()
                self._drain.wait(TICK_S)
            code = self._drain_and_leave()
            if not self._stopped.is_set():
                log.info("drained at the control plane's request; waiting for this server to be deleted")
                self._stopped.wait()
            return code
        finally:
            self.view.stop()

    def _signalled(self) -> None:
        self._stopped.set()
        self._drain.set()

    # -- the raylet's life ---------------------------------------------------
    def _tend(self) -> None:
        if self.raylet is not None:
            code = self.raylet.poll()
            if code is not None:
                self._node_gone(f"raylet exited with {code}", crashed=True)
            elif why := self._lost_by_cluster():
                self._stop_raylet(graceful=False)
                self._node_gone(why, crashed=False)
        if self.raylet is None:
            self._start_node()
        else:
            self._report()

    def _lost_by_cluster(self) -> str | None:
        """Why the raylet no longer belongs to the cluster, if it does not."""
        snap = self.view.latest
        if self.node is None or snap is None or snap.taken_at < self.started_at:
            return None
        if snap.address == self.joined and snap.reachable and snap.node != self.node:
            return f"the cluster at {snap.address} no longer knows this node (the head restarted)"
        return None

    def _start_node(self) -> None:
        """Start a fresh raylet at the head's current address (a worker
        without one asks the API where the head is)."""
        if not self.policy.may_start():
            return
        address = self.config.address if self.config.head else self.head_address
        if address is None:
            ack = self._post("register", self._registration())
            if ack is not None:
                self._follow_token(ack)
            if ack is None or ack.ray_address is None:
                return  # no head known yet: ask again on the next tick
            address = self.head_address = ack.ray_address
        argv = [*self.raylet_argv, "--head" if self.config.head else f"--address={address}"]
        log.info("starting the raylet (%s)", "head" if self.config.head else f"joining {address}")
        env, token = self.raylet_env, self.ray_token.value
        if token is not None:
            env = with_ray_token(env, token)
        # Its own process group (in the agent's session), so the agent can
        # kill the whole node (raylet, GCS, dashboard) without killing itself.
        self.raylet = subprocess.Popen(argv, env=env, process_group=0, cwd="/")
        self.token_fp = ray_token_fingerprint(token) if token else None
        self.joined = address
        self.view.address = address
        self.started_at = time.monotonic()
        self.policy.started()
        self.registered = self.announced = False
        self._next_beat = 0.0

    def _node_gone(self, why: str, crashed: bool) -> None:
        pause = self.policy.crashed() if crashed else 0.0
        log.warning("%s; starting a fresh raylet in %.0f s", why, pause)
        self.raylet = None
        self.node = None

    # -- talking to the API ----------------------------------------------------
    def _registration(self) -> WorkerRegistration:
        node = self.node
        announced = None
        if self.config.head and node is not None and self.joined is not None:
            # Other nodes reach the head at the address Ray gave its node.
            announced = f"{node.ip}:{self.joined.rpartition(':')[2]}"
        return self.config.registration.model_copy(
            update={
                "ray_node_id": node.node_id if node else None,
                "ray_address": announced,
                "ray_token_fp": self.token_fp,
            }
        )

    def _report(self) -> None:
        """Register the fresh node at once (its old node id is void), again
        once Ray names it, then heartbeat."""
        snap = self.view.latest
        if self.node is None and snap is not None and snap.taken_at >= self.started_at and snap.node:
            self.node = snap.node
        if not self.registered or (self.node is not None and not self.announced):
            announcing = self.node is not None
            if (ack := self._post("register", self._registration())) is not None:
                self.registered = True
                self.announced = announcing
                self._follow_token(ack)
            return
        if time.monotonic() < self._next_beat:
            return
        self._next_beat = time.monotonic() + self.config.heartbeat_s
        ack = self._post(f"{self.worker_id}/heartbeat")
        if ack is None:
            return
        if ack.status == WorkerStatus.DRAINING:
            log.info("the control plane asks this node to drain")
            self._drain.set()
        elif ack.status == WorkerStatus.DEAD:
            self._stop_raylet(graceful=False)
            self._node_gone("the control plane declared this node dead", crashed=True)
        elif not self.config.head and ack.ray_address and ack.ray_address != self.joined:
            self.head_address = ack.ray_address
            self._stop_raylet(graceful=False)
            self._node_gone(f"the head moved to {ack.ray_address}", crashed=False)
        else:
            self._follow_token(ack)

    def _follow_token(self, ack: WorkerAck) -> None:
        """Move to the grid's Ray token if the API names another one than the
        raylet runs with: fetch it, keep it, start a fresh raylet with it.
        The API rolls a new token out only once no attempt runs, so the
        raylet's restart cuts nothing."""
        wanted = ack.ray_token_fp
        if wanted is None or wanted == self.token_fp:
            return
        # Another node sharing the token file may have fetched it already.
        token = self.ray_token.value if self.ray_token.fingerprint == wanted else self._fetch_token()
        if token is None or ray_token_fingerprint(token) != wanted:
            return  # asked again at the next answer
        self.ray_token.replace(token)
        if self.raylet is not None:
            self._stop_raylet(graceful=False)
            self._node_gone("the grid's Ray token was rotated", crashed=False)

    def _fetch_token(self) -> str | None:
        try:
            resp = self.http.get("/ray-token")
            resp.raise_for_status()
            return RayTokenGrant.model_validate_json(resp.content).token
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("could not fetch the grid's new Ray token: %s", exc)
            return None

    def _post(self, path: str, body: WorkerRegistration | None = None) -> WorkerAck | None:
        """One call to the API; a failure is logged when the API goes away
        and when it is back, not on every tick in between."""
        try:
            resp = self.http.post(f"/{path}", json=body.model_dump() if body else None)
            if resp.status_code == 404:
                self.registered = self.announced = False  # the API forgot us: register again
            resp.raise_for_status()
            ack = WorkerAck.model_validate_json(resp.content)
        except (httpx.HTTPError, ValueError) as exc:
            if not self._api_failing:
                log.warning("API call %s failed: %s (retrying quietly)", path, exc)
            self._api_failing = True
            return None
        if self._api_failing:
            log.info("the API answers again")
            self._api_failing = False
        return ack

    def _running(self) -> int:
        try:
            resp = self.http.get(f"/{self.worker_id}/running")
            resp.raise_for_status()
            return int(resp.json())
        except (httpx.HTTPError, ValueError):
            return -1

    # -- stopping ----------------------------------------------------------------
    def _drain_and_leave(self) -> int:
        log.info("draining: no new work, waiting for running attempts")
        self._post(f"{self.worker_id}/drain")
        self._drain_in_ray()
        while self.raylet is not None and self.raylet.poll() is None and self._running() != 0:
            self._post(f"{self.worker_id}/heartbeat")
            time.sleep(DRAIN_POLL_S)
        self._stop_raylet(graceful=True)
        self._post(f"{self.worker_id}/leave")
        return 0

    def _drain_in_ray(self) -> None:
        """Ask Ray's GCS to place nothing more on this node."""
        if self.node is None or self.joined is None:
            return
        try:
            accepted, why = drain_node(
                self.joined, self.node.node_id, "rgrid worker stopping", DRAIN_TIMEOUT_S
            )
            if not accepted:
                log.warning("Ray refused to drain the node: %s", why)
        except Exception as exc:  # noqa: BLE001 - drain is best effort; the API refuses new work anyway
            log.warning("could not drain the node in Ray: %s", exc)

    def _stop_raylet(self, graceful: bool) -> None:
        """`ray start` leads a process group of its own (raylet, GCS, agents).
        Gracefully, SIGTERM stops them in order (the group is killed if that
        hangs); a raylet whose cluster is gone has nothing left to finish,
        so its group is killed at once."""
        if self.raylet is None or self.raylet.poll() is not None:
            return
        if graceful:
            self.raylet.terminate()
            try:
                self.raylet.wait(RAYLET_STOP_GRACE_S)
                return
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.raylet.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.raylet.wait()
