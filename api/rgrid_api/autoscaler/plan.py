"""The autoscaler's decisions, as one pure function of what it knows:
`plan(state, demand, config, now)`. No database, no provider, no clock: the
loop (`rgrid_api.autoscaler.loop`) gathers the state, calls this, and
carries the decisions out; the tests drive it table by table.

What it decides, every cycle:
- reconcile the instance rows with the one labelled list of servers: adopt
  a server whose row still waits for its create call's answer, forget rows
  whose server vanished, delete unknown servers after a grace period, and
  confirm deletions;
- end nodes that failed: an action error, no registration within the join
  timeout, a worker the control plane lost;
- scale up: demand that fits no live or pending node is bin-packed onto the
  cheapest allowed server type that fits, within max nodes, max pending,
  creates per cycle and the budget (every labelled server counts, orphans
  and creates of unknown outcome included);
- fail at once what no allowed type could ever run;
- scale down: drain a node idle for the idle timeout, near the end of a
  paid hour, never below the minimum.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from rgrid.states import INSTANCE_BILLED, INSTANCE_FINAL, INSTANCE_PENDING
from rgrid.wire import InstanceState, WorkerStatus
from rgrid_infra.provider import Server, ServerType


@dataclass(frozen=True)
class Need:
    """One execution waiting for a place to run."""

    key: str
    cpu: float
    memory_mb: int
    runtime: str


@dataclass(frozen=True)
class WorkerRoom:
    """Room on a live worker: free now, and its whole size (work as big as a
    busy node still fits there later)."""

    name: str
    cpus: float
    memory_mb: int
    runtimes: frozenset[str]
    size_cpus: float = 0.0
    size_memory_mb: int = 0


@dataclass(frozen=True)
class InstanceRecord:
    """A row of the instances table, with what the database knows of its worker."""

    name: str
    state: InstanceState
    server_id: str | None
    server_type: str
    location: str
    price: float
    requested_at: datetime
    state_since: datetime
    action_id: str | None = None
    action_error: str | None = None
    # The worker that registered under the instance's name: its status
    # (active, draining, dead, left), since when it has had no open attempt,
    # and when it ended (dead or left).
    worker_status: str | None = None
    idle_since: datetime | None = None
    worker_ended_at: datetime | None = None


@dataclass(frozen=True)
class Config:
    """The caps the planner keeps, built from the server's settings
    (`loop.config_from`), whose defaults are the only ones."""

    min_nodes: int
    max_nodes: int
    max_pending: int
    max_creates_per_cycle: int
    idle_s: float
    join_timeout_s: float
    budget_eur_per_hour: float
    # Seconds per billed unit (None: time is free, so idle nodes go at once),
    # and how close to its end a node may be drained.
    billing_period_s: float | None
    period_end_window_s: float
    # An unknown server is deleted only after this long (its creator may
    # still be about to write its row).
    orphan_grace_s: float
    # What a new node offers.
    runtimes: frozenset[str]


@dataclass(frozen=True)
class State:
    instances: list[InstanceRecord]
    # The labelled list call's answer; None when it failed this cycle (then
    # nothing is reconciled, nothing deleted, nothing created).
    servers: list[Server] | None
    live: list[WorkerRoom]  # free room on live, active workers
    types: list[ServerType]
    # (type, location) -> until when it is backed off (epoch seconds).
    backoff: Mapping[tuple[str, str], float] = field(default_factory=dict)
    # Scale-up is held back: why, and until when (None: until restart).
    held: str | None = None


@dataclass(frozen=True)
class Create:
    server_type: str
    location: str
    price: float
    cpus: float
    memory_mb: int


@dataclass
class Plan:
    creates: list[Create] = field(default_factory=list)
    # Row name -> server: a server found for a row that waited for it.
    adopt: dict[str, Server] = field(default_factory=dict)
    # Row name -> (new state, reason), for rows that change without a call.
    moves: dict[str, tuple[InstanceState, str]] = field(default_factory=dict)
    drains: list[str] = field(default_factory=list)
    # Row name -> reason: delete its server.
    deletes: dict[str, str] = field(default_factory=dict)
    orphans: list[Server] = field(default_factory=list)  # unknown servers to delete
    unschedulable: dict[str, str] = field(default_factory=dict)  # execution -> why
    blocked: list[str] = field(default_factory=list)  # why demand is left waiting
    unmet: int = 0


def _age(now: datetime, since: datetime) -> float:
    return (now - since).total_seconds()


def _fits(need: Need, cpus: float, memory_mb: int, runtimes: frozenset[str]) -> bool:
    return need.cpu <= cpus + 1e-9 and need.memory_mb <= memory_mb and need.runtime in runtimes


class _Bin:
    def __init__(self, name: str, cpus: float, memory_mb: int, runtimes: frozenset[str]) -> None:
        self.name, self.cpus, self.memory_mb, self.runtimes = name, cpus, memory_mb, runtimes

    def take(self, need: Need) -> bool:
        if not _fits(need, self.cpus, self.memory_mb, self.runtimes):
            return False
        self.cpus -= need.cpu
        self.memory_mb -= need.memory_mb
        return True


def plan(state: State, demand: list[Need], config: Config, now: datetime) -> Plan:
    out = Plan()
    by_name = {i.name: i for i in state.instances}
    types = {t.name: t for t in state.types}
    if state.servers is not None:
        _reconcile(state, state.servers, by_name, config, now, out)
    _end_failed_nodes(state, config, now, out)

    # Demand against what exists or is coming: live room first, then the
    # nodes still pending (their whole size).
    bins = [_Bin(c.name, c.cpus, c.memory_mb, c.runtimes) for c in state.live]
    for inst in state.instances:
        if inst.state in INSTANCE_PENDING and inst.name not in out.moves and inst.name not in out.deletes:
            stype = types.get(inst.server_type)
            if stype is not None:
                bins.append(_Bin(inst.name, stype.cpus, stype.memory_mb, config.runtimes))
    unmet = []
    for need in sorted(demand, key=lambda n: (-n.cpu, -n.memory_mb)):
        if not any(b.take(need) for b in bins):
            unmet.append(need)
    if state.types:
        for need in list(unmet):
            if any(_fits(need, c.size_cpus, c.size_memory_mb, c.runtimes) for c in state.live):
                continue  # a live node of that size exists: it waits for it
            if not any(_fits(need, t.cpus, t.memory_mb, config.runtimes) for t in state.types):
                out.unschedulable[need.key] = _why_never(need, state.types, config)
                unmet.remove(need)
    out.unmet = len(unmet)
    if state.servers is not None:
        _scale_up(state, unmet, config, now, out)
        _scale_down(state, demand, config, now, out)
    elif unmet:
        out.blocked.append(state.held or "the provider's list of servers is unavailable")
    return out


def _why_never(need: Need, types: list[ServerType], config: Config) -> str:
    if need.runtime not in config.runtimes:
        return f"no server the autoscaler may create offers {need.runtime} (it offers {', '.join(sorted(config.runtimes)) or 'none'})"
    biggest_cpu = max(t.cpus for t in types)
    biggest_mem = max(t.memory_mb for t in types)
    return (
        f"needs {need.cpu:g} CPU and {need.memory_mb} MB; the largest allowed server has "
        f"{biggest_cpu:g} CPU and {biggest_mem} MB"
    )


def _reconcile(
    state: State,
    servers: list[Server],
    by_name: dict[str, InstanceRecord],
    config: Config,
    now: datetime,
    out: Plan,
) -> None:
    listed = {s.name: s for s in servers}
    for inst in state.instances:
        server = listed.get(inst.name)
        if inst.state == InstanceState.REQUESTED:
            if server is not None:
                out.adopt[inst.name] = server
            elif _age(now, inst.state_since) > config.orphan_grace_s:
                out.moves[inst.name] = (InstanceState.ALLOCATION_FAILED, "the server never appeared")
        elif (
            inst.state
            in (
                InstanceState.ALLOCATED,
                InstanceState.JOINED,
                InstanceState.DRAINING,
                InstanceState.JOIN_TIMEOUT,
            )
            and server is None
        ):
            out.moves[inst.name] = (InstanceState.DELETED, "the server vanished (deleted outside rgrid?)")
        elif inst.state == InstanceState.DELETING and server is None:
            out.moves[inst.name] = (InstanceState.DELETED, "deletion confirmed")
    for server in servers:
        row = by_name.get(server.name)
        known = row is not None and row.state not in INSTANCE_FINAL
        if not known and _age(now, server.created_at) > config.orphan_grace_s:
            out.orphans.append(server)


def _end_failed_nodes(state: State, config: Config, now: datetime, out: Plan) -> None:
    for inst in state.instances:
        if inst.name in out.moves or inst.name in out.adopt:
            continue
        if inst.state == InstanceState.ALLOCATED:
            if inst.action_error:
                out.deletes[inst.name] = f"creation failed: {inst.action_error}"
            elif inst.worker_status is not None:
                out.moves[inst.name] = (InstanceState.JOINED, "its agent registered")
            elif _age(now, inst.requested_at) > config.join_timeout_s:
                out.moves[inst.name] = (
                    InstanceState.JOIN_TIMEOUT,
                    f"no agent registered within {config.join_timeout_s:.0f} s",
                )
        elif inst.state == InstanceState.JOIN_TIMEOUT:
            out.deletes[inst.name] = "it never joined"
        elif inst.state == InstanceState.JOINED and inst.worker_status == WorkerStatus.LEFT:
            out.deletes[inst.name] = "its worker left"
        elif inst.state == InstanceState.JOINED and inst.worker_status == WorkerStatus.DEAD:
            # An agent restarting misses a few heartbeats and comes back;
            # one dead for the grace period is replaced.
            ended = inst.worker_ended_at or inst.state_since
            if _age(now, ended) > config.orphan_grace_s:
                out.deletes[inst.name] = f"its worker has been dead for {config.orphan_grace_s:.0f} s"
        elif inst.state == InstanceState.DRAINING and inst.worker_status in (
            WorkerStatus.DEAD,
            WorkerStatus.LEFT,
            None,
        ):
            out.deletes[inst.name] = "drained"


def _price(server: Server, types: dict[str, ServerType]) -> float:
    """A listed server's € per hour; one of an unknown type counts at the
    highest known price, so the budget is never underestimated."""
    stype = types.get(server.server_type)
    price = stype.price_in(server.location) if stype else None
    if price is not None:
        return price
    return max((p for t in types.values() for p in t.prices.values()), default=0.0)


def spend(state: State) -> float:
    """€ per hour of every labelled server, plus creates of unknown outcome."""
    types = {t.name: t for t in state.types}
    servers = state.servers or []
    listed = {s.name for s in servers}
    total = sum(_price(s, types) for s in servers)
    total += sum(
        i.price for i in state.instances if i.state == InstanceState.REQUESTED and i.name not in listed
    )
    return total


def _scale_up(state: State, unmet: list[Need], config: Config, now: datetime, out: Plan) -> None:
    servers = state.servers or []
    known = {i.name for i in state.instances if i.state not in INSTANCE_FINAL}
    counted = {
        i.name for i in state.instances if i.state in INSTANCE_BILLED and i.state != InstanceState.DELETING
    }
    nodes = len(counted) + sum(1 for s in servers if s.name not in known)
    pending = sum(1 for i in state.instances if i.state in INSTANCE_PENDING)
    budget_left = config.budget_eur_per_hour - spend(state)
    wanted_min = max(0, config.min_nodes - nodes)
    if not unmet and not wanted_min:
        return
    if state.held:
        out.blocked.append(state.held)
        return
    t_now = now.timestamp()
    candidates = sorted(
        (
            (price, t.name, loc, t)
            for t in state.types
            for loc, price in t.prices.items()
            if state.backoff.get((t.name, loc), 0.0) <= t_now
        ),
        key=lambda c: (c[0], c[1], c[2]),
    )
    backed_off = any(until > t_now for until in state.backoff.values())
    new_bins: list[_Bin] = []

    def limit_reason(price: float) -> str | None:
        if nodes + len(out.creates) >= config.max_nodes:
            return f"max nodes ({config.max_nodes}) reached"
        if pending + len(out.creates) >= config.max_pending:
            return f"max pending ({config.max_pending}) reached"
        if len(out.creates) >= config.max_creates_per_cycle:
            return f"at most {config.max_creates_per_cycle} creates per cycle"
        if price > budget_left - sum(c.price for c in out.creates) + 1e-9:
            return f"budget: {config.budget_eur_per_hour:.4f} €/h would be crossed"
        return None

    def open_bin(need: Need | None) -> bool:
        for price, name, loc, t in candidates:
            if need is not None and not _fits(need, t.cpus, t.memory_mb, config.runtimes):
                continue
            why = limit_reason(price)
            if why is not None:
                if why not in out.blocked:
                    out.blocked.append(why)
                return False
            out.creates.append(Create(name, loc, price, t.cpus, t.memory_mb))
            b = _Bin(f"new-{len(out.creates)}", t.cpus, t.memory_mb, config.runtimes)
            if need is not None:
                b.take(need)
            new_bins.append(b)
            return True
        if backed_off:
            out.blocked.append("every fitting server type is backed off (no capacity)")
        return False

    for need in unmet:
        if any(b.take(need) for b in new_bins):
            continue
        if not open_bin(need):
            break
    while len(out.creates) < wanted_min and open_bin(None):
        pass


def _scale_down(state: State, demand: list[Need], config: Config, now: datetime, out: Plan) -> None:
    joined = [i for i in state.instances if i.state == InstanceState.JOINED and i.name not in out.deletes]
    keep = sum(
        1
        for i in state.instances
        if i.state in (InstanceState.REQUESTED, InstanceState.ALLOCATED, InstanceState.JOINED)
    ) - len(out.deletes)
    for inst in sorted(joined, key=lambda i: i.requested_at):
        if keep <= config.min_nodes:
            return
        if inst.worker_status != WorkerStatus.ACTIVE or inst.idle_since is None:
            continue
        if _age(now, inst.idle_since) < config.idle_s:
            continue
        if config.billing_period_s:
            into = _age(now, inst.requested_at) % config.billing_period_s
            if into < config.billing_period_s - config.period_end_window_s:
                continue
        if any(_fits(n, 1e9, 1 << 40, config.runtimes) for n in demand):
            continue  # work is waiting that this node may take
        out.drains.append(inst.name)
        keep -= 1
