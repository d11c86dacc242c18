"""A 405 names every method its path takes.

rgrid declares one route per method (GET and POST /v1/executions are two),
and Starlette answers a method no route takes with the Allow header of the
first route whose path matched: a client told "Allow: GET" for a path that
takes POST too. This wraps the app and names them all."""

from __future__ import annotations

from collections.abc import Sequence

from starlette.routing import BaseRoute, Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class AllowEveryMethod:
    def __init__(self, app: ASGIApp, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self.routes = routes

    def allowed(self, scope: Scope) -> list[str]:
        methods: set[str] = set()
        for route in self.routes:
            if isinstance(route, Route) and route.methods and route.matches(scope)[0] != Match.NONE:
                methods |= route.methods
        return sorted(methods)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 405:
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"allow"]
                headers.append((b"allow", ", ".join(self.allowed(scope)).encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, sending)
