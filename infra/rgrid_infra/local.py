"""The local provider: "servers" are worker nodes on this machine, each its
own node agent and raylet in a session of its own, as `rgrid local up
--workers` starts them. It makes autoscaling real on one machine: the
autoscaler creates, lists, drains and deletes them exactly as it does
Hetzner servers, and each one joins through a bootstrap token.

The user data of a local server is the command that starts it (JSON).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from rgrid.local import nodes
from rgrid.local.components import provisioned_launch
from rgrid.local.procs import spawn
from rgrid_infra.provider import (
    ActionResult,
    BootContext,
    Created,
    CreateRequest,
    ProviderError,
    Server,
    ServerType,
)

LOCATION = "local"
TYPE_NAME = "local"


@dataclass(frozen=True)
class LocalConfig:
    nodes_dir: Path
    ray_temp_dir: Path
    work_root: Path | None = None
    cpus: float = 1.0
    memory_mb: int = 2048
    eur_per_hour: float = 0.0


class LocalProvider:
    name = "local"
    # Time on this machine costs nothing: an idle node may go at once.
    billing_period_s: float | None = None

    def __init__(self, config: LocalConfig) -> None:
        self.config = config
        config.nodes_dir.mkdir(parents=True, exist_ok=True, mode=0o700)

    def server_types(self) -> list[ServerType]:
        c = self.config
        return [ServerType(TYPE_NAME, c.cpus, c.memory_mb, {LOCATION: c.eur_per_hour})]

    def list_servers(self, labels: Mapping[str, str]) -> list[Server]:
        return [
            Server(
                id=r["name"],
                name=r["name"],
                server_type=r["server_type"],
                location=r["location"],
                labels=r["labels"],
                status="running" if r["alive"] else "off",
                created_at=datetime.fromisoformat(r["created_at"]),
                private_ip="127.0.0.1",
            )
            for r in nodes.records(self.config.nodes_dir)
            if all(r.get("labels", {}).get(k) == v for k, v in labels.items())
        ]

    def create(self, request: CreateRequest) -> Created:
        if nodes.record_path(self.config.nodes_dir, request.name).exists():
            raise ProviderError(ProviderError.EXISTS, f"a local node named {request.name} exists")
        if request.server_type != TYPE_NAME or request.location != LOCATION:
            raise ProviderError(ProviderError.UNAVAILABLE, f"no {request.server_type} in {request.location}")
        boot = json.loads(request.user_data)
        log = self.config.nodes_dir / "logs" / f"{request.name}.log"
        proc = spawn(boot["argv"], boot["env"], log, self.config.nodes_dir)
        created_at = datetime.now(UTC)
        record = {
            "name": request.name,
            "server_type": request.server_type,
            "location": request.location,
            "labels": dict(request.labels),
            "pid": proc.pid,
            "created_at": created_at.isoformat(),
        }
        nodes.write(self.config.nodes_dir, record)
        return Created(
            Server(request.name, request.name, TYPE_NAME, LOCATION, request.labels, "running", created_at)
        )

    def action_result(self, action_id: str) -> ActionResult:
        return ActionResult(done=True)  # creation is synchronous: there is no action

    def delete(self, server_id: str) -> None:
        nodes.remove(self.config.nodes_dir, server_id)

    def render_user_data(self, boot: BootContext) -> str:
        """`rgrid worker` for a new node, every port on loopback and chosen
        now; it joins wherever the API says the head is."""
        c = self.config
        launch = provisioned_launch(
            c.ray_temp_dir,
            nodes.node_dir(c.nodes_dir, boot.worker_id),
            boot.worker_id,
            boot.cpus,
            boot.memory_mb,
            boot.api_url,
            boot.bootstrap_token,
            c.work_root,
        )
        return json.dumps({"argv": launch.argv, "env": launch.env})
