"""The FastAPI application: routes, error mapping, and the background pieces
(dispatcher) that share the process with it."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from anyio import CapacityLimiter
from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response

from rgrid.errors import StaleAttempt
from rgrid.version import VERSION
from rgrid.wire import ErrorAnswer, Role
from rgrid_api import console
from rgrid_api.allow import AllowEveryMethod
from rgrid_api.auth import SecretCache, caller_for_key, create_key, default_caps
from rgrid_api.autoscaler.loop import Autoscaler, config_from
from rgrid_api.autoscaler.providers import make_provider, offered_runtimes
from rgrid_api.beatpath import BeatFastPath
from rgrid_api.beats import Beats
from rgrid_api.credentials import worker_for
from rgrid_api.db.engine import make_engine, make_hot_reader, make_readers, make_sessionmaker
from rgrid_api.db.migrate import upgrade
from rgrid_api.deps import AppState, Owner
from rgrid_api.dispatcher import Dispatcher
from rgrid_api.driver_process import DriverProcess
from rgrid_api.errors import DomainError
from rgrid_api.finalviews import FinalViews
from rgrid_api.metrics import RequestTimer, registry_for, serve_metrics, watch
from rgrid_api.monitor import Monitor
from rgrid_api.notify import ChangeFeed
from rgrid_api.routes import (
    autoscaler,
    batches,
    console_links,
    executions,
    grid,
    health,
    metrics,
    runner,
    uploads,
    workers,
)
from rgrid_api.settings import Settings
from rgrid_api.storage import Storage
from rgrid_api.throttle import LongPolls, RateLimit, Throttled

log = logging.getLogger(__name__)

# The largest request is a batch of MAX_BATCH_ITEMS inputs (about 30 MB).
MAX_BODY_BYTES = 64 * 1024 * 1024
HOT_READ_THREADS = 4  # see AppState.hot_reads


def build_state(settings: Settings, with_dispatcher: bool = True) -> AppState:
    """Migrate the database, bootstrap the API key and the bucket, and wire
    the shared objects. Runs once per server start."""
    upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    sessions = make_sessionmaker(engine)
    watch(sessions)
    readers = make_readers(engine)
    read_engine = make_hot_reader(settings.database_url)
    node_credentials = SecretCache(readers, settings.key_cache_s, worker_for)
    if settings.bootstrap_api_key is not None:
        with sessions() as session:
            create_key(
                session,
                settings.bootstrap_owner,
                "bootstrap",
                settings.bootstrap_api_key.get_secret_value(),
                role=Role.ADMIN,
            )
            session.commit()
    storage = Storage(settings, settings.client_presign_endpoint)
    runner_storage = Storage(settings, settings.runner_presign_endpoint)
    _wait_for_storage(storage, settings.storage_wait_s)
    feed = ChangeFeed()
    provider = make_provider(settings)
    dispatcher = (
        Dispatcher(
            settings, sessions, readers, feed, DriverProcess(settings, sessions), fail_unfit=provider is None
        )
        if with_dispatcher
        else None
    )
    transport = dispatcher.transport if dispatcher else None
    monitor = Monitor(settings, sessions, feed, transport, storage)
    autoscaler = None
    if provider is not None:
        config = config_from(settings, provider, offered_runtimes(settings))
        autoscaler = Autoscaler(settings, sessions, feed, transport, provider, config)
    return AppState(
        settings=settings,
        sessions=sessions,
        readers=readers,
        read_engine=read_engine,
        # A pool of its own: a scrape never takes a connection the event
        # loop's hot read is waiting for.
        metrics=registry_for(make_hot_reader(settings.database_url)),
        hot_reads=CapacityLimiter(HOT_READ_THREADS),
        callers=SecretCache(readers, settings.key_cache_s, caller_for_key),
        node_credentials=node_credentials,
        beats=Beats(sessions, node_credentials),
        caps=default_caps(settings),
        rate_limit=RateLimit(settings.rate_limit_per_s, settings.rate_limit_burst),
        long_polls=LongPolls(settings.long_polls_per_key),
        final_views=FinalViews(),
        storage=storage,
        runner_storage=runner_storage,
        feed=feed,
        dispatcher=dispatcher,
        monitor=monitor,
        autoscaler=autoscaler,
    )


def _wait_for_storage(storage: Storage, wait_s: float) -> None:
    """Storage may still be starting (the local grid starts it beside us)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            storage.ensure_bucket()
            return
        except Exception as exc:
            if time.monotonic() > deadline:
                raise RuntimeError(f"object storage not reachable: {exc}") from exc
            log.info("waiting for object storage (%s)", exc.__class__.__name__)
            time.sleep(0.5)


# What any route may answer besides its own result, so the schema says so.
ERROR_ANSWERS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorAnswer, "description": description}
    for code, description in (
        (400, "The request could not be read."),
        (401, "No credential, or one the API refuses."),
        (403, "The credential may not do this (an admin key, another node's id)."),
        (404, "No such thing, or not the caller's."),
        (409, "It changed meanwhile (a stale attempt, a taken id)."),
        (413, "Too large."),
        (422, "The request did not validate, or asks what cannot be (a runtime no node offers)."),
        (429, "A cap or the rate limit: the message says which; Retry-After says when."),
        (503, "Storage or the database is briefly away: try again."),
    )
}


def create_app(settings: Settings, with_dispatcher: bool = True) -> FastAPI:
    state = build_state(settings, with_dispatcher)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        state.feed.bind(asyncio.get_running_loop())
        exporter = serve_metrics(state.settings.metrics_bind, state.metrics)
        state.beats.start()
        if state.dispatcher is not None:
            state.dispatcher.start()
        state.monitor.start()
        if state.autoscaler is not None:
            state.autoscaler.start()
        try:
            yield
        finally:
            if state.autoscaler is not None:
                await asyncio.to_thread(state.autoscaler.stop)
            await asyncio.to_thread(state.monitor.stop)
            if state.dispatcher is not None:
                await asyncio.to_thread(state.dispatcher.stop)
            await asyncio.to_thread(state.beats.stop)
            if exporter is not None:
                exporter.shutdown()

    # /healthz is the only route without a key (RGRID_METRICS_BIND serves
    # /metrics keyless on a port of its own), so the schema is served
    # under /v1 behind the same Bearer auth as everything else.
    app = FastAPI(
        title="rgrid",
        version=VERSION,
        lifespan=lifespan,
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        max_body_size=MAX_BODY_BYTES,
    )
    app.state.rgrid = state
    for router in (
        health.router,
        uploads.router,
        executions.router,
        batches.router,
        runner.router,
        workers.router,
        grid.router,
        autoscaler.router,
        metrics.router,
        console_links.router,
    ):
        app.include_router(router, responses=ERROR_ANSWERS)

    console.install(app)
    app.add_middleware(AllowEveryMethod, routes=app.routes)
    app.add_middleware(BeatFastPath, state=state)
    app.add_middleware(RequestTimer)

    @app.get("/v1/openapi.json", include_in_schema=False)
    def openapi_schema(_owner: Owner) -> JSONResponse:
        return JSONResponse(get_openapi(title=app.title, version=app.version, routes=app.routes))

    @app.exception_handler(DomainError)
    @app.exception_handler(StaleAttempt)
    async def domain_error(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 500)
        if status >= 500:
            log.warning("%s %s: %s", request.method, request.url.path, exc)
        if console.in_console(request):
            return await console.refusal(request, exc)
        return JSONResponse({"detail": str(exc)}, status_code=status)

    @app.exception_handler(Throttled)
    async def throttled(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, Throttled)
        answer = (
            await console.refusal(request, exc)
            if console.in_console(request)
            else JSONResponse({"detail": str(exc)}, status_code=429)
        )
        answer.headers["Retry-After"] = exc.retry_after
        return answer

    return app
