"""The node agent's reactions to what the control plane answers, in one
process: the API is an httpx transport in memory and the "raylet" a
sleeping child process (no Ray, no server), and the agent is driven tick
by tick as its loop drives it."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator

import httpx
import pytest

from rgrid.wire import WorkerAck, WorkerRegistration, WorkerStatus
from rgrid_runner.agent import AgentConfig, NodeAgent
from rgrid_runner.nodetoken import NodeRayToken

RAYLET = [sys.executable, "-c", "import time; time.sleep(120)"]


class ControlPlane:
    """What the API answers a node: `status` and `ray_address` on every
    register and heartbeat; every call it got, in order."""

    def __init__(self) -> None:
        self.status = WorkerStatus.ACTIVE
        self.ray_address: str | None = "10.9.0.1:6379"
        self.calls: list[tuple[str, dict | None]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        self.calls.append((request.url.path.removeprefix("/v1/workers/"), body))
        ack = WorkerAck(status=self.status, ray_address=self.ray_address)
        return httpx.Response(200, content=ack.model_dump_json())


@pytest.fixture
def control_plane() -> ControlPlane:
    return ControlPlane()


@pytest.fixture
def agent(control_plane: ControlPlane) -> Iterator[NodeAgent]:
    config = AgentConfig(
        api_url="http://api.test",
        token="node-credential",
        registration=WorkerRegistration(id="node-7", host_name="h", runtimes=["python:3.11"]),
        address=None,  # a worker that learns the head's address from the API
        heartbeat_s=0.0,
    )
    node = NodeAgent(config, RAYLET, {}, NodeRayToken({}))
    node.http = httpx.Client(
        base_url="http://api.test/v1/workers", transport=httpx.MockTransport(control_plane)
    )
    yield node
    node._stop_raylet(graceful=False)


def joined_at(agent: NodeAgent) -> str:
    """The last argument the running raylet was started with."""
    assert agent.raylet is not None and agent.raylet.poll() is None
    args = agent.raylet.args
    assert isinstance(args, list)
    return str(args[-1])


def test_a_worker_asks_the_api_where_the_head_is_then_joins_and_beats(
    agent: NodeAgent, control_plane: ControlPlane
) -> None:
    agent._tend()
    assert joined_at(agent) == "--address=10.9.0.1:6379"
    agent._tend()  # registers its fresh node
    agent._tend()  # then beats
    assert [path for path, _ in control_plane.calls] == ["register", "register", "node-7/heartbeat"]
    assert control_plane.calls[0][1] is not None and control_plane.calls[0][1]["id"] == "node-7"


def test_a_new_head_address_restarts_the_raylet_there_at_once(
    agent: NodeAgent, control_plane: ControlPlane
) -> None:
    for _ in range(3):
        agent._tend()
    first = agent.raylet
    control_plane.ray_address = "10.9.0.2:6380"  # the head restarted elsewhere
    agent._tend()
    assert first is not None and first.poll() is not None  # the old raylet is gone
    assert agent.raylet is None
    agent._tend()  # not a crash: no pause before the fresh one
    assert joined_at(agent) == "--address=10.9.0.2:6380"


def test_the_control_planes_drain_stops_the_loop(agent: NodeAgent, control_plane: ControlPlane) -> None:
    for _ in range(3):
        agent._tend()
    assert not agent._drain.is_set()
    control_plane.status = WorkerStatus.DRAINING
    agent._tend()
    assert agent._drain.is_set()  # `run` leaves its loop and drains the node
    assert agent.raylet is not None and agent.raylet.poll() is None  # running work finishes first


def test_a_node_declared_dead_starts_afresh_and_backs_off_if_it_keeps_dying(
    agent: NodeAgent, control_plane: ControlPlane
) -> None:
    for _ in range(3):
        agent._tend()
    first = agent.raylet
    control_plane.status = WorkerStatus.DEAD
    agent._tend()
    assert first is not None and first.poll() is not None and agent.raylet is None
    control_plane.status = WorkerStatus.ACTIVE
    agent._tend()  # a first crash: a fresh raylet at once
    assert agent.raylet is not None and agent.policy.restarts == 1
    agent._tend()  # registers the fresh node
    control_plane.status = WorkerStatus.DEAD
    agent._tend()  # and is declared dead again
    assert agent.raylet is None
    control_plane.status = WorkerStatus.ACTIVE
    agent._tend()
    assert agent.raylet is None and not agent.policy.may_start()  # twice in a row: it waits


def test_an_api_that_forgot_the_node_is_registered_with_again(
    agent: NodeAgent, control_plane: ControlPlane
) -> None:
    for _ in range(3):
        agent._tend()

    def forgot(request: httpx.Request) -> httpx.Response:
        control_plane.calls.append((request.url.path.removeprefix("/v1/workers/"), None))
        return httpx.Response(404, json={"detail": "no such worker"})

    agent.http = httpx.Client(base_url="http://api.test/v1/workers", transport=httpx.MockTransport(forgot))
    agent._tend()
    assert not agent.registered
    agent.http = httpx.Client(
        base_url="http://api.test/v1/workers", transport=httpx.MockTransport(control_plane)
    )
    agent._tend()
    assert agent.registered and control_plane.calls[-1][0] == "register"
