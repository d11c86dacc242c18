"""The autoscaler's state, and what runs cost."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter
from pydantic import BeforeValidator
from sqlalchemy import select

from rgrid.states import INSTANCE_FINAL
from rgrid.wire import AutoscalerStatus, CostReport, Estimate, EstimateRequest, InstanceState, InstanceView
from rgrid_api.autoscaler import report
from rgrid_api.costs import Price, cost_report, estimate
from rgrid_api.db.models import Instance
from rgrid_api.db.times import aware
from rgrid_api.deps import Admin, Owner, ReadDB, State, User

router = APIRouter(prefix="/v1", tags=["autoscaler"])


@router.get("/autoscaler", response_model=AutoscalerStatus)
def status(_admin: Admin, session: ReadDB, state: State) -> AutoscalerStatus:
    now = datetime.now(UTC)
    provider = state.settings.autoscaler_provider
    rows = session.scalars(
        select(Instance).where(Instance.state.not_in(INSTANCE_FINAL)).order_by(Instance.requested_at)
    )
    nodes = [
        InstanceView(
            name=i.name,
            state=InstanceState(i.state),
            provider=i.provider,
            server_type=i.server_type,
            location=i.location,
            price_eur_per_hour=i.price_eur_per_hour,
            age_s=(now - aware(i.requested_at)).total_seconds(),
            reason=i.reason,
        )
        for i in rows
    ]
    if provider == "none":
        return AutoscalerStatus(
            provider=provider,
            active=False,
            nodes=nodes,
            blocked=["autoscaling is off (RGRID_AUTOSCALER_PROVIDER=none)"],
        )
    reported = report.read(session)
    session.rollback()
    if reported is None:
        return AutoscalerStatus(
            provider=provider, active=False, nodes=nodes, blocked=["no autoscaler cycle ran yet"]
        )
    age = (now - reported.at).total_seconds()
    last = reported.report
    # An autoscaler that has not reported for three cycles is not running.
    active = age < 3 * state.settings.autoscaler_interval_s + 30
    blocked = list(last.blocked)
    if not active:
        blocked.insert(0, f"no autoscaler has reported for {age:.0f} s")
    return AutoscalerStatus(
        provider=provider,
        active=active,
        report_age_s=age,
        caps=last.caps,
        spend_eur_per_hour=last.spend_eur_per_hour,
        demand=last.demand,
        unmet=last.unmet,
        blocked=blocked,
        backoff=last.backoff,
        nodes=nodes,
    )


def _iso_time(value: object) -> object:
    """A time as ISO 8601 (2026-12-01T00:00:00Z): a bare number is refused,
    though pydantic would read it as seconds since 1970."""
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return value
        raise ValueError("give a time as ISO 8601, such as 2026-12-01T00:00:00Z")
    return value


@router.get("/cost", response_model=CostReport)
def cost(
    caller: User, session: ReadDB, since: Annotated[datetime | None, BeforeValidator(_iso_time)] = None
) -> CostReport:
    """The caller's executions' cost; an admin's report adds the nodes, the
    idle time and every owner's share."""
    start = aware(since) if since else datetime.now(UTC) - timedelta(days=30)
    return cost_report(session, caller.owner, start, whole_grid=caller.admin)


@router.post("/estimate", response_model=Estimate)
def estimate_run(body: EstimateRequest, owner: Owner, session: ReadDB, state: State) -> Estimate:
    """From the owner's history of the script; priced at the cheapest server
    type the autoscaler may create that fits the run."""
    price = None
    if state.autoscaler is not None:
        fitting = [
            (p, t.cpus)
            for t in state.autoscaler.known_types()
            for p in t.prices.values()
            if t.cpus >= body.cpu
        ]
        if fitting:
            cheapest = min(fitting)
            price = Price(cheapest[0], cheapest[1])
    return estimate(session, owner, body.script_sha256, body.script_name, body.cpu, price)
