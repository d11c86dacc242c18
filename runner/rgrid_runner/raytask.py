"""The Ray task of one attempt: a relay to the node's attempt service.

Ray places the task on a node and watches it; the task runs as the Ray
user, which may do nothing privileged. It hands its ticket's ids and token
to the node's attempt service (rgrid_runner.attemptservice) and waits for
the attempt to end. If the task is cancelled, or its raylet dies (the
lifeline ends the worker process), the connection closes and the service
abandons the attempt.
"""

from __future__ import annotations

import socket

from rgrid.wire import AttemptTicket
from rgrid_runner.attemptservice import REFUSED, AttemptRequest
from rgrid_runner.lifeline import ensure_lifeline
from rgrid_runner.settings import runner_settings


class AttemptRefused(RuntimeError):
    """The node's attempt service would not run the attempt."""


def ray_node_id() -> str | None:
    try:
        import ray

        return ray.get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001 - outside Ray there is no node id
        return None


def run_attempt(ticket: AttemptTicket) -> str:
    ensure_lifeline()
    path = runner_settings().runner_socket
    if path is None:
        raise AttemptRefused("this node has no attempt service (RGRID_RUNNER_SOCKET is not set)")
    request = AttemptRequest(
        execution_id=ticket.execution_id,
        attempt=ticket.attempt,
        token=ticket.token,
        ray_node_id=ray_node_id(),
        api_url=ticket.api_url,
    )
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.connect(str(path))
        conn.sendall(request.model_dump_json().encode() + b"\n")
        answer = b""
        while chunk := conn.recv(4096):
            answer += chunk
    outcome = answer.decode(errors="replace").strip()
    if not outcome or outcome == REFUSED:
        raise AttemptRefused(
            f"the node's attempt service refused {ticket.execution_id} attempt {ticket.attempt}"
        )
    return outcome
