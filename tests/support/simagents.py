"""Simulated node agents: each joins with the worker token, registers,
then heartbeats at an interval, as `rgrid worker` does, and leaves. They
load an API the way a large grid would, without a raylet behind any of
them (bench/bench_heartbeats.py measures it; the liveness test uses it)."""

from __future__ import annotations

import asyncio
import os
import random
import time
from dataclasses import dataclass, field

import httpx

from rgrid.wire import WorkerRegistration

HEALTH_TIMEOUT_S = 1.0  # the local supervisor's


@dataclass
class Swarm:
    """What the agents saw."""

    latencies: list[tuple[float, float]] = field(default_factory=list)  # (sent at, seconds)
    errors: list[float] = field(default_factory=list)  # sent at
    health_failures: list[float] = field(default_factory=list)


async def _enrol(http: httpx.AsyncClient, worker_token: str, worker_id: str) -> str:
    grant = await http.post(
        "/v1/workers/join", json={"id": worker_id}, headers={"Authorization": f"Bearer {worker_token}"}
    )
    grant.raise_for_status()
    credential = str(grant.json()["credential"])
    reg = WorkerRegistration(id=worker_id, host_name="sim", resources={"CPU": 2}, runtimes=["python:3.11"])
    answer = await http.post(
        "/v1/workers/register",
        json=reg.model_dump(mode="json"),
        headers={"Authorization": f"Bearer {credential}"},
    )
    answer.raise_for_status()
    return credential


async def _agent(
    http: httpx.AsyncClient, worker_id: str, credential: str, interval_s: float, until: float, seen: Swarm
) -> None:
    """Beat until `until`, then leave (so that no dead nodes are left for
    the monitor to fence)."""
    await asyncio.sleep(random.uniform(0, interval_s))
    headers = {"Authorization": f"Bearer {credential}"}
    while time.monotonic() < until:
        started = time.monotonic()
        try:
            answer = await http.post(f"/v1/workers/{worker_id}/heartbeat", headers=headers)
            if answer.status_code != 200:
                seen.errors.append(started)
        except httpx.HTTPError:
            seen.errors.append(started)
        seen.latencies.append((started, time.monotonic() - started))
        await asyncio.sleep(max(0.0, interval_s - (time.monotonic() - started)))
    await http.post(f"/v1/workers/{worker_id}/leave", headers=headers)


async def _health(base: str, until: float, seen: Swarm) -> None:
    """/healthz every 0.5 s with the supervisor's timeout."""
    async with httpx.AsyncClient(base_url=base, timeout=HEALTH_TIMEOUT_S) as http:
        while time.monotonic() < until:
            try:
                (await http.get("/healthz")).raise_for_status()
            except httpx.HTTPError:
                seen.health_failures.append(time.monotonic())
            await asyncio.sleep(0.5)


async def swarm(
    base: str,
    worker_token: str,
    agents: int,
    interval_s: float,
    until: float,
    seen: Swarm,
    start_at: float | None = None,
) -> list[str]:
    """Enrol `agents` nodes, then (from `start_at`, if given: several
    swarms start together) beat every `interval_s` until `until`
    (time.monotonic, the same clock in every process); the ids they used."""
    limits = httpx.Limits(max_connections=agents, max_keepalive_connections=agents)
    async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as http:
        suffix = os.urandom(3).hex()
        ids = [f"sim-{suffix}-{n}" for n in range(agents)]
        credentials: list[str] = []
        for start in range(0, agents, 50):
            credentials += await asyncio.gather(
                *(_enrol(http, worker_token, i) for i in ids[start : start + 50])
            )
        if start_at is not None:
            await asyncio.sleep(max(0.0, start_at - time.monotonic()))
        beats = [_agent(http, i, c, interval_s, until, seen) for i, c in zip(ids, credentials, strict=True)]
        await asyncio.gather(*beats, _health(base, until, seen))
    return ids
