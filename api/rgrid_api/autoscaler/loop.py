"""The active autoscaler: every cycle it lists the cluster's servers (one
labelled call), reads the instances and the demand from the database, asks
`plan` what to do, and does it. One instance acts per database (the
monitor's leader pattern, with a lock of its own); the others wait.

Provider errors are handled where they happen:

| error | reaction |
|---|---|
| no capacity for a (type, location) | back it off, try the next at once |
| the project's limit | scale-up held for LIMIT_HOLD_S, and said so |
| 429 | no call at all until RateLimit-Reset |
| authentication refused | scale-up disabled until restart, and said so |
| a create whose answer was lost | its row waits; the list adopts it by name |

Scale-down and clean-up go on while scale-up is held or backed off.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from datetime import UTC, datetime
from typing import TypeVar

from sqlalchemy.orm import Session, sessionmaker

from rgrid.version import VERSION
from rgrid.wire import LIVE_WORKER_STATES, InstanceState, WorkerStatus
from rgrid_api.attempts import attempts_on_workers, fail_unschedulable
from rgrid_api.autoscaler import instances
from rgrid_api.autoscaler import plan as p
from rgrid_api.autoscaler.report import Report
from rgrid_api.autoscaler.report import write as write_report
from rgrid_api.credentials import issue_bootstrap
from rgrid_api.giveback import give_back
from rgrid_api.leader import LeaderLock
from rgrid_api.notify import ChangeFeed
from rgrid_api.settings import Settings
from rgrid_api.transport import Transport
from rgrid_api.workers import set_status
from rgrid_infra.provider import (
    CLUSTER_LABEL,
    ROLE_LABEL,
    WORKER_ROLE,
    BootContext,
    CreateRequest,
    Provider,
    ProviderError,
    ServerType,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

ADVISORY_LOCK_KEY = 0x726772696402  # "rgrid" + 2
BACKOFF_S = 300.0
LIMIT_HOLD_S = 600.0
TYPES_TTL_S = 3600.0


def config_from(settings: Settings, provider: Provider, runtimes: frozenset[str]) -> p.Config:
    return p.Config(
        min_nodes=settings.autoscaler_min_nodes,
        max_nodes=settings.autoscaler_max_nodes,
        max_pending=settings.autoscaler_max_pending,
        max_creates_per_cycle=settings.autoscaler_max_creates_per_cycle,
        idle_s=settings.autoscaler_idle_s,
        join_timeout_s=settings.autoscaler_join_timeout_s,
        budget_eur_per_hour=settings.autoscaler_budget_eur_per_hour,
        billing_period_s=provider.billing_period_s,
        period_end_window_s=max(300.0, 4 * settings.autoscaler_interval_s),
        orphan_grace_s=settings.autoscaler_orphan_grace_s,
        runtimes=runtimes,
    )


class Autoscaler:
    def __init__(
        self,
        settings: Settings,
        sessions: sessionmaker[Session],
        feed: ChangeFeed,
        transport: Transport | None,
        provider: Provider,
        config: p.Config,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.feed = feed
        self.transport = transport
        self.provider = provider
        self.config = config
        self.labels = {CLUSTER_LABEL: settings.cluster_name, ROLE_LABEL: WORKER_ROLE}
        self.backoff: dict[tuple[str, str], float] = {}
        self.held: str | None = None
        self.held_until: float | None = None  # None with a hold: until restart
        self.paused_until = 0.0  # 429: no call before this (epoch seconds)
        self.action_errors: dict[str, str] = {}
        self._actions_done: set[str] = set()  # no need to ask again
        self._replan = False  # a create found no capacity: try the next type or location now
        self._types: list[ServerType] = []
        self._types_at = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rgrid-autoscaler", daemon=True)
        self._leader = LeaderLock(sessions.kw["bind"], ADVISORY_LOCK_KEY, "autoscaler")
        self.active = threading.Event()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.active.clear()
        self._leader.release()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self._leader.hold():
                    if not self.active.is_set():
                        log.info("autoscaler active (%s)", self.provider.name)
                    self.active.set()
                    self.cycle()
                else:
                    self.active.clear()
            except Exception:
                log.exception("autoscaler cycle failed; trying again")
                self.active.clear()
                self._leader.release()
            self._stop.wait(self.settings.autoscaler_interval_s)

    # -- one cycle ---------------------------------------------------------------
    def cycle(self, now: datetime | None = None) -> p.Plan:
        now = now or datetime.now(UTC)
        t = now.timestamp()
        if self.held_until is not None and t >= self.held_until:
            self.held = self.held_until = None
        paused = t < self.paused_until
        servers = None if paused else self._call(self.provider.list_servers, self.labels)
        types = self._server_types(t) if not paused else self._types
        with self.sessions() as session:
            rows = instances.load(session)
            session.rollback()
        if not paused:
            self._check_actions(rows)
        with self.sessions() as session:
            state = p.State(
                instances=[replace(i, action_error=self.action_errors.get(i.name)) for i in rows],
                servers=servers,
                live=instances.live_capacity(session),
                types=types,
                backoff=dict(self.backoff),
                held=self._hold_reason(t),
            )
            demand = instances.demand(session)
            session.rollback()
        out = p.plan(state, demand, self.config, now)
        self._replan = False
        self._carry_out(out, state)
        self._report(state, demand, out, now)
        if self._replan:
            self._replan = False
            return self.cycle(now)
        return out

    def known_types(self) -> list[ServerType]:
        """The server types (with prices) the last cycle read."""
        return list(self._types)

    def _hold_reason(self, t: float) -> str | None:
        if t < self.paused_until:
            return f"rate limited by the provider until {datetime.fromtimestamp(self.paused_until, UTC):%H:%M:%S}"
        return self.held

    def _server_types(self, t: float) -> list[ServerType]:
        if not self._types or t - self._types_at > TYPES_TTL_S:
            found = self._call(self.provider.server_types)
            if found is not None:
                self._types, self._types_at = found, t
        return self._types

    def _check_actions(self, rows: list[p.InstanceRecord]) -> None:
        """Creation actions of servers that have not joined yet, until each is done."""
        pending = [
            (i.name, i.action_id)
            for i in rows
            if i.state == InstanceState.ALLOCATED and i.action_id and i.action_id not in self._actions_done
        ]
        for name, action_id in pending:
            result = self._call(self.provider.action_result, action_id)
            if result is not None and result.done:
                self._actions_done.add(action_id)
                if result.error:
                    self.action_errors[name] = result.error

    # -- doing it ------------------------------------------------------------------
    def _carry_out(self, out: p.Plan, state: p.State) -> None:
        by_name = {i.name: i for i in state.instances}
        gone: list[tuple[str, list[tuple[str, int]]]] = []
        with self.sessions() as session:
            for name, server in out.adopt.items():
                if instances.move(
                    session, name, InstanceState.ALLOCATED, "found by name", server_id=server.id
                ):
                    log.info("adopted server %s (%s)", name, server.id)
            for name, (to_state, reason) in out.moves.items():
                if not instances.move(session, name, to_state, reason):
                    continue  # another server moved it meanwhile
                log.info("instance %s: %s (%s)", name, to_state, reason)
                if to_state == InstanceState.DELETED and by_name[name].worker_status in LIVE_WORKER_STATES:
                    # The server is gone: so is its worker, and what ran there goes back.
                    set_status(session, name, WorkerStatus.DEAD)
                    gone.append((reason, attempts_on_workers(session, [name])))
            session.commit()
            for reason, attempts in gone:
                give_back(self.sessions, attempts, self.feed, self.transport, reason)
            for name in out.drains:
                if instances.move(session, name, InstanceState.DRAINING, "idle"):
                    set_status(session, name, WorkerStatus.DRAINING)
                    log.info("draining %s: idle", name)
            opened = {key: fail_unschedulable(session, key, why) for key, why in out.unschedulable.items()}
            session.commit()
        for key, attempt in opened.items():
            if attempt is not None and self.transport is not None:
                self.transport.cancel_task(key, attempt)
            self.feed.changed(key)
            log.warning("%s can never be placed: %s", key, out.unschedulable[key])
        for name, reason in out.deletes.items():
            self._delete(name, by_name[name].server_id, reason)
        for server in out.orphans:
            log.warning("deleting server %s (%s): no instance row knows it", server.name, server.id)
            self._call(self.provider.delete, server.id)
        self._create(out.creates)

    def _delete(self, name: str, server_id: str | None, reason: str) -> None:
        with self.sessions() as session:
            moved = instances.move(session, name, InstanceState.DELETING, reason)
            session.commit()
        if moved:
            log.info("deleting %s: %s", name, reason)
        if server_id is not None:
            self._call(self.provider.delete, server_id)
        self.action_errors.pop(name, None)

    def _create(self, creates: list[p.Create]) -> None:
        for create in creates:
            name = f"{self.settings.cluster_name}-{secrets.token_hex(4)}"
            with self.sessions() as session:
                instances.add(session, name, self.provider.name, create, "demand")
                token = issue_bootstrap(session, name, self.config.join_timeout_s)
                session.commit()
            boot = BootContext(
                worker_id=name,
                api_url=self.settings.runner_api_url,
                bootstrap_token=token,
                version=VERSION,
                cpus=create.cpus,
                memory_mb=create.memory_mb,
            )
            request = CreateRequest(
                name, create.server_type, create.location, self.labels, self.provider.render_user_data(boot)
            )
            try:
                created = self.provider.create(request)
            except ProviderError as exc:
                if not self._create_failed(name, create, exc):
                    return
                continue
            with self.sessions() as session:
                instances.move(
                    session,
                    name,
                    InstanceState.ALLOCATED,
                    "created",
                    server_id=created.server.id,
                    action_id=created.action_id,
                )
                session.commit()
            log.info(
                "created %s (%s in %s, %.4f €/h)", name, create.server_type, create.location, create.price
            )

    def _create_failed(self, name: str, create: p.Create, exc: ProviderError) -> bool:
        """React to a failed create; False when no more creates should be tried now."""
        if exc.kind in (ProviderError.EXISTS, ProviderError.OTHER):
            # Its outcome is unknown (or it exists): the row waits, counted
            # in the budget, and the list call adopts or forgets it.
            log.warning("create of %s: %s; the next list call settles it", name, exc)
            return exc.kind == ProviderError.EXISTS
        with self.sessions() as session:
            # The kind first: the metric of create failures is labelled by it.
            instances.move(session, name, InstanceState.ALLOCATION_FAILED, f"{exc.kind}: {exc}")
            session.commit()
        self._react(exc, (create.server_type, create.location))
        return False

    def _react(self, exc: ProviderError, where: tuple[str, str] | None = None) -> None:
        now = time.time()
        if exc.kind == ProviderError.UNAVAILABLE and where is not None:
            self.backoff[where] = now + BACKOFF_S
            self._replan = True
            log.warning("no capacity for %s in %s: backing off %.0f s", *where, BACKOFF_S)
        elif exc.kind == ProviderError.LIMIT:
            self.held, self.held_until = (
                f"the provider's resource limit is reached ({exc})",
                now + LIMIT_HOLD_S,
            )
            log.error("scale-up held: %s", self.held)
        elif exc.kind == ProviderError.AUTH:
            self.held, self.held_until = (
                f"scale-up disabled: the provider refused the credentials ({exc})",
                None,
            )
            log.error("%s", self.held)
        elif exc.kind == ProviderError.RATE_LIMITED:
            self.paused_until = max(self.paused_until, exc.retry_at or now + 60)
            log.warning("rate limited: no provider call until %s", time.ctime(self.paused_until))

    def _call(self, fn: Callable[..., T], *args: object) -> T | None:
        """A provider call whose failure is handled here; None if it failed."""
        if time.time() < self.paused_until:
            return None
        try:
            return fn(*args)
        except ProviderError as exc:
            log.warning("%s failed: %s", getattr(fn, "__name__", "provider call"), exc)
            self._react(exc)
            return None

    # -- reporting -----------------------------------------------------------------
    def _report(self, state: p.State, demand: list[p.Need], out: p.Plan, now: datetime) -> None:
        report = Report(
            provider=self.provider.name,
            cluster=self.settings.cluster_name,
            caps={k: v for k, v in asdict(self.config).items() if k != "runtimes"},
            spend_eur_per_hour=p.spend(state),
            demand=len(demand),
            unmet=out.unmet,
            blocked=out.blocked,
            backoff={
                f"{t}@{loc}": until for (t, loc), until in self.backoff.items() if until > now.timestamp()
            },
        )
        with self.sessions() as session:
            write_report(session, report, now)
            session.commit()
