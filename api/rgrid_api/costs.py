"""What runs cost. A node costs its hourly price for the time it exists;
an execution costs its share of its node's time while it ran, by the CPU it
asked for; whatever of a node's time no execution used is its idle cost,
reported apart. Only autoscaled nodes have a price (an instance row); nodes
an operator started cost nothing here.

Hetzner bills started hours, so a node's own cost here is the time it
existed at its hourly price; the autoscaler drains nodes near the end of a
paid hour to waste little of it.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Row, and_, select
from sqlalchemy.orm import Session

from rgrid.sizing import memory_for_peak_mb, suggested_cpu
from rgrid.wire import CostReport, Estimate, InstanceState, NodeCost, Status
from rgrid_api.db.models import Attempt, Execution, Instance
from rgrid_api.db.times import aware
from rgrid_api.views import AttemptColumns


def _hours(start: datetime, end: datetime) -> float:
    return max(0.0, (end - start).total_seconds() / 3600)


@dataclass(frozen=True)
class Price:
    eur_per_hour: float
    cpus: float


def prices(db: Session | Connection, worker_ids: set[str]) -> dict[str, Price]:
    """The price and size of the nodes among these workers that have one."""
    if not worker_ids:
        return {}
    rows = db.execute(
        select(Instance.name, Instance.price_eur_per_hour, Instance.cpus).where(Instance.name.in_(worker_ids))
    )
    return {name: Price(price, cpus) for name, price, cpus in rows}


def _attempt_cost(a: Attempt | AttemptColumns, cpu: float, price: Price | None) -> float:
    if price is None or a.started_at is None or a.finished_at is None or price.cpus <= 0:
        return 0.0
    share = min(1.0, cpu / price.cpus)
    return _hours(aware(a.started_at), aware(a.finished_at)) * price.eur_per_hour * share


def execution_cost(
    db: Session | Connection, execution: Execution | Row[Any], attempts: Sequence[Attempt | AttemptColumns]
) -> float | None:
    """Its share of its nodes' time, once it is final (every attempt counts)."""
    return execution_costs(db, [(execution, attempts)])[execution.id]


def execution_costs(
    db: Session | Connection,
    executions: Sequence[tuple[Execution | Row[Any], Sequence[Attempt | AttemptColumns]]],
) -> dict[str, float | None]:
    """`execution_cost` of each (execution, its attempts), with one read of
    the nodes' prices for all of them (a page of the console's runs)."""
    known = prices(db, {a.worker_id for _e, attempts in executions for a in attempts if a.worker_id})
    costs: dict[str, float | None] = {}
    for execution, attempts in executions:
        if not Status(execution.status).final:
            costs[execution.id] = None
            continue
        total = sum(_attempt_cost(a, execution.cpu, known.get(a.worker_id or "")) for a in attempts)
        costs[execution.id] = round(total, 6)
    return costs


def spent_eur(db: Session | Connection, now: datetime) -> float:
    """What every autoscaled server has cost since the grid began: the
    servers `cost_report` bills, each for the time it existed."""
    rows = db.execute(
        select(Instance.price_eur_per_hour, Instance.requested_at, Instance.ended_at).where(
            Instance.state != InstanceState.ALLOCATION_FAILED
        )
    )
    return sum(price * _hours(aware(start), aware(end) if end else now) for price, start, end in rows)


@dataclass(frozen=True)
class CostedAttempt:
    """One ended attempt on a node, and its share of the node's price."""

    owner: str
    script: str
    finished_at: datetime
    eur: float


def costed_attempts(session: Session, owner: str | None, since: datetime) -> list[CostedAttempt]:
    """The attempts that ended on a node since `since` (owner None: every
    owner's), each with its cost."""
    query = (
        select(Attempt, Execution.cpu, Execution.owner, Execution.script_name)
        .join(Execution, Execution.id == Attempt.execution_id)
        .where(Attempt.finished_at.is_not(None), Attempt.finished_at >= since, Attempt.worker_id.is_not(None))
    )
    if owner is not None:
        query = query.where(Execution.owner == owner)
    rows = session.execute(query).all()
    known = prices(session, {a.worker_id for a, *_ in rows if a.worker_id})
    return [
        CostedAttempt(
            who,
            script,
            aware(attempt.finished_at),
            _attempt_cost(attempt, cpu, known.get(attempt.worker_id or "")),
        )
        for attempt, cpu, who, script in rows
        if attempt.finished_at is not None
    ]


def cost_report(session: Session, owner: str, since: datetime, whole_grid: bool = False) -> CostReport:
    """The owner's executions' cost since `since`; with whole_grid (an
    admin), also node-hours and € per node, every owner's share, and the
    nodes' idle cost."""
    now = datetime.now(UTC)
    nodes = []
    node_total = 0.0
    if whole_grid:
        for inst in session.scalars(
            select(Instance).where(Instance.state != InstanceState.ALLOCATION_FAILED)
        ):
            start = max(aware(inst.requested_at), since)
            end = aware(inst.ended_at) if inst.ended_at else now
            hours = _hours(start, end)
            if hours <= 0:
                continue
            eur = hours * inst.price_eur_per_hour
            node_total += eur
            nodes.append(
                NodeCost(
                    name=inst.name,
                    provider=inst.provider,
                    server_type=inst.server_type,
                    state=inst.state,
                    price_eur_per_hour=inst.price_eur_per_hour,
                    hours=round(hours, 4),
                    eur=round(eur, 6),
                )
            )
    owners: dict[str, float] = {}
    runs = 0
    for costed in costed_attempts(session, None if whole_grid else owner, since):
        owners[costed.owner] = owners.get(costed.owner, 0.0) + costed.eur
        runs += costed.owner == owner
    report = CostReport(since=since, executions_eur=round(owners.get(owner, 0.0), 6), attempts=runs)
    if whole_grid:
        report.nodes = sorted(nodes, key=lambda n: n.name)
        report.node_hours = round(sum(n.hours for n in nodes), 4)
        report.nodes_eur = round(node_total, 6)
        report.idle_eur = round(max(0.0, node_total - sum(owners.values())), 6)
        report.owners_eur = {who: round(eur, 6) for who, eur in sorted(owners.items())}
    return report


def estimate(
    session: Session, owner: str, script_sha256: str, script_name: str, cpu: float, price: Price | None
) -> Estimate:
    """Duration and cost of a run, from the owner's succeeded runs of the same
    script (same content first; else the same file name), and the --cpu and
    --memory their measured use suggests."""
    basis = "same script"
    rows = _history(session, owner, Execution.script_sha256 == script_sha256)
    if not rows:
        basis = "same script name (its content changed)"
        rows = _history(session, owner, Execution.script_name == script_name)
    if not rows:
        return Estimate(runs=0, basis="no history")
    durations = sorted(run.duration_s for run in rows)
    median = statistics.median(durations)
    p90 = _p90(durations)
    cost = None
    if price is not None and price.cpus > 0:
        cost = round(median / 3600 * price.eur_per_hour * min(1.0, cpu / price.cpus), 6)
    busy = sorted(
        run.cpu_seconds / run.wall_seconds for run in rows if run.cpu_seconds is not None and run.wall_seconds
    )
    peaks = [run.peak_memory_bytes for run in rows if run.peak_memory_bytes is not None]
    # The CPUs kept busy at the 90th percentile decide --cpu; the largest peak --memory.
    busy_p90 = _p90(busy) if busy else None
    return Estimate(
        runs=len(durations),
        basis=basis,
        median_s=median,
        p90_s=p90,
        cost_eur=cost,
        busy_cpus=round(busy_p90, 2) if busy_p90 is not None else None,
        peak_memory_bytes=max(peaks) if peaks else None,
        suggested_cpu=suggested_cpu(busy_p90) if busy_p90 is not None else None,
        suggested_memory_mb=memory_for_peak_mb(max(peaks)) if peaks else None,
    )


def _p90(ordered: list[float]) -> float:
    return ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]


def _history(session: Session, owner: str, match: object) -> list[Row[Any]]:
    """The owner's last 50 succeeded runs that match, with what their
    deciding attempt used."""
    return list(
        session.execute(
            select(
                Execution.duration_s,
                Attempt.cpu_seconds,
                Attempt.wall_seconds,
                Attempt.peak_memory_bytes,
            )
            .outerjoin(
                Attempt, and_(Attempt.execution_id == Execution.id, Attempt.number == Execution.attempt)
            )
            .where(
                Execution.owner == owner,
                Execution.status == Status.SUCCEEDED,
                Execution.duration_s.is_not(None),
                match,  # type: ignore[arg-type]
            )
            .order_by(Execution.finished_at.desc())
            .limit(50)
        )
    )
