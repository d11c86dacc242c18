"""A fake of the parts of the Hetzner Cloud API that rgrid calls: a real
HTTP server on loopback, so the real `hcloud` SDK talks to it unchanged.

Resources: servers (with creation and deletion actions), actions,
server_types (prices and per-location availability), locations, images,
networks, firewalls, ssh_keys. Behaviour: label selectors, pagination,
latency, `RateLimit-*` headers and 429, Hetzner's error format, injectable
errors, and a boot hook that can start a real local worker for each server
once its creation action succeeds.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

TOKEN = "fake-hcloud-token"


def _type(
    id_: int, name: str, cores: int, memory_gb: float, prices: dict[str, float], unavailable: tuple = ()
) -> dict:
    return {
        "id": id_,
        "name": name,
        "description": name.upper(),
        "category": "shared",
        "cores": cores,
        "memory": memory_gb,
        "disk": 40,
        "storage_type": "local",
        "cpu_type": "shared",
        "architecture": "x86",
        "deprecation": None,
        "prices": [
            {
                "location": loc,
                "price_hourly": {"net": f"{p / 1.19:.10f}", "gross": f"{p:.10f}"},
                "price_monthly": {"net": f"{p * 730 / 1.19:.10f}", "gross": f"{p * 730:.10f}"},
                "included_traffic": 21990232555520,
                "price_per_tb_traffic": {"net": "1.0000", "gross": "1.1900"},
            }
            for loc, p in prices.items()
        ],
        "locations": [
            {
                "id": i + 1,
                "name": loc,
                "deprecation": None,
                "available": loc not in unavailable,
                "recommended": True,
            }
            for i, loc in enumerate(prices)
        ],
    }


def default_server_types() -> list[dict]:
    """Three sizes in two locations, priced like 2026's shared x86 servers."""
    return [
        _type(1, "cx23", 2, 4, {"fsn1": 0.0072, "nbg1": 0.0072}),
        _type(2, "cx33", 4, 8, {"fsn1": 0.0119, "nbg1": 0.0119}),
        _type(3, "cx43", 8, 16, {"fsn1": 0.0223, "nbg1": 0.0223}),
    ]


LOCATIONS = [
    {"id": 1, "name": "fsn1", "description": "Falkenstein DC Park 1", "country": "DE", "city": "Falkenstein",
     "latitude": 50.47612, "longitude": 12.370071, "network_zone": "eu-central"},
    {"id": 2, "name": "nbg1", "description": "Nuremberg DC Park 1", "country": "DE", "city": "Nuremberg",
     "latitude": 49.452102, "longitude": 11.076665, "network_zone": "eu-central"},
]  # fmt: skip


@dataclass
class Injected:
    """An error the fake answers instead of doing the call."""

    method: str
    path: str  # a prefix of the path after /v1
    status: int
    code: str
    message: str
    times: int = 1
    match: dict[str, Any] = field(default_factory=dict)  # fields the JSON body must have


def _matches(selector: str, labels: dict[str, str]) -> bool:
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if term.startswith("!"):
            if term[1:] in labels:
                return False
        elif "!=" in term:
            k, v = term.split("!=", 1)
            if labels.get(k) == v:
                return False
        elif "=" in term:
            k, v = term.split("=", 1)
            if labels.get(k.rstrip("=")) != v:
                return False
        elif term not in labels:
            return False
    return True


class FakeHcloud:
    def __init__(
        self,
        *,
        latency_s: float = 0.0,
        action_s: float = 0.1,
        rate_limit: int = 3600,
        boot: Callable[[dict, str], None] | None = None,
        halt: Callable[[dict], None] | None = None,
        server_types: list[dict] | None = None,
    ) -> None:
        self.latency_s = latency_s
        self.action_s = action_s
        self.rate_limit = rate_limit
        self.boot = boot
        self.halt = halt
        self.server_types = server_types if server_types is not None else default_server_types()
        self.servers: dict[int, dict] = {}
        self.user_data: dict[int, str] = {}
        self.actions: dict[int, dict] = {}
        self.errors: list[Injected] = []
        self.action_errors: set[str] = set()  # server names whose create action fails
        self.create_delay_s = 0.0  # answer a create only after this long (it is done at once)
        self.throttled_until = 0.0
        self.requests: list[tuple[float, str, str]] = []
        self.remaining = rate_limit
        self._hour: int | None = None  # the hour the rate limit counts
        self._next_id = 1000
        self._lock = threading.RLock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    # -- running ---------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> FakeHcloud:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- test controls ---------------------------------------------------
    def inject(self, method: str, path: str, status: int, code: str, message: str = "", **kw: Any) -> None:
        with self._lock:
            self.errors.append(Injected(method, path, status, code, message or code, **kw))

    def throttle(self, seconds: float) -> None:
        """Answer every call with 429 for this long (RateLimit-Reset says until when)."""
        self.throttled_until = time.time() + seconds

    def add_server(
        self, name: str, labels: dict[str, str], server_type: str = "cx23", location: str = "fsn1"
    ) -> dict:
        """A server made behind rgrid's back (the console, a crashed creator)."""
        with self._lock:
            server = self._new_server(name, server_type, location, labels)
            server["status"] = "running"
            return server

    def remove_server(self, server_id: int) -> None:
        """Delete a server as the console would, without rgrid knowing."""
        with self._lock:
            server = self.servers.pop(server_id, None)
        if server is not None and self.halt is not None:
            self.halt(server)

    def calls(self, method: str | None = None, path: str | None = None) -> int:
        return sum(
            1
            for _, m, p in self.requests
            if (method is None or m == method) and (path is None or p.startswith(path))
        )

    # -- the API ---------------------------------------------------------
    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def _new_server(self, name: str, type_name: str, location: str, labels: dict[str, str]) -> dict:
        stype = next(t for t in self.server_types if t["name"] == type_name)
        loc = next(loc for loc in LOCATIONS if loc["name"] == location)
        sid = self._new_id()
        server = {
            "id": sid,
            "name": name,
            "status": "initializing",
            "created": datetime.now(UTC).isoformat(),
            "public_net": {"ipv4": None, "ipv6": None, "floating_ips": [], "firewalls": []},
            "private_net": [
                {"network": 1, "ip": f"10.0.0.{sid % 250 + 2}", "alias_ips": [], "mac_address": ""}
            ],
            "server_type": stype,
            "location": loc,
            "image": {"id": 1, "name": "debian-12", "type": "system", "status": "available"},
            "iso": None,
            "rescue_enabled": False,
            "locked": False,
            "backup_window": None,
            "outgoing_traffic": 0,
            "ingoing_traffic": 0,
            "included_traffic": 0,
            "protection": {"delete": False, "rebuild": False},
            "labels": dict(labels),
            "volumes": [],
            "load_balancers": [],
            "primary_disk_size": 40,
            "placement_group": None,
        }
        self.servers[sid] = server
        return server

    def _action(self, command: str, server_id: int, fails: bool) -> dict:
        aid = self._new_id()
        action = {
            "id": aid,
            "command": command,
            "status": "running",
            "progress": 0,
            "started": datetime.now(UTC).isoformat(),
            "finished": None,
            "resources": [{"id": server_id, "type": "server"}],
            "error": None,
        }
        self.actions[aid] = action
        timer = threading.Timer(self.action_s, self._finish, (aid, server_id, command, fails))
        timer.daemon = True
        timer.start()
        return action

    def _finish(self, aid: int, server_id: int, command: str, fails: bool) -> None:
        with self._lock:
            action = self.actions[aid]
            action.update(progress=100, finished=datetime.now(UTC).isoformat())
            if fails:
                action.update(
                    status="error", error={"code": "action_failed", "message": "server creation failed"}
                )
                server = self.servers.get(server_id)
                if server:
                    server["status"] = "off"
                return
            action["status"] = "success"
            server = self.servers.get(server_id)
            if command != "create_server" or server is None:
                return
            server["status"] = "running"
            user_data = self.user_data.get(server_id, "")
        if self.boot is not None:
            self.boot(server, user_data)

    def _take_error(self, method: str, path: str, body: dict) -> Injected | None:
        with self._lock:
            for err in self.errors:
                if (
                    err.method == method
                    and path.startswith(err.path)
                    and all(body.get(k) == v for k, v in err.match.items())
                ):
                    err.times -= 1
                    if err.times <= 0:
                        self.errors.remove(err)
                    return err
        return None

    def handle(self, method: str, url: str, body: dict) -> tuple[int, dict]:
        parsed = urlparse(url)
        path = parsed.path.removeprefix("/v1")
        query = {k: v[0] for k, v in parse_qs(parsed.query).items()}
        err = self._take_error(method, path, body)
        if err is not None:
            return err.status, {"error": {"code": err.code, "message": err.message, "details": {}}}
        with self._lock:
            return self._route(method, path, query, body)

    def _route(self, method: str, path: str, query: dict[str, str], body: dict) -> tuple[int, dict]:
        simple = {
            "/locations": ("locations", LOCATIONS),
            "/server_types": ("server_types", self.server_types),
            "/images": ("images", [{"id": 1, "name": "debian-12", "type": "system", "status": "available",
                                    "architecture": "x86", "labels": {}}]),
            "/networks": ("networks", [{"id": 1, "name": "rgrid", "ip_range": "10.0.0.0/16", "labels": {},
                                        "subnets": [], "routes": [], "servers": [], "protection": {"delete": False},
                                        "created": "2026-01-01T00:00:00+00:00"}]),
            "/firewalls": ("firewalls", [{"id": 1, "name": "rgrid-workers", "labels": {}, "rules": [],
                                          "applied_to": [], "created": "2026-01-01T00:00:00+00:00"}]),
            "/ssh_keys": ("ssh_keys", [{"id": 1, "name": "ops", "fingerprint": "00:11", "public_key": "ssh-ed25519 A",
                                        "labels": {}, "created": "2026-01-01T00:00:00+00:00"}]),
        }  # fmt: skip
        if method == "GET" and path in simple:
            key, items = simple[path]
            if "name" in query:
                items = [i for i in items if i["name"] == query["name"]]
            return self._page(key, items, query)
        if method == "GET" and path == "/servers":
            items = list(self.servers.values())
            if "label_selector" in query:
                items = [s for s in items if _matches(query["label_selector"], s["labels"])]
            if "name" in query:
                items = [s for s in items if s["name"] == query["name"]]
            return self._page("servers", items, query)
        if method == "POST" and path == "/servers":
            return self._create(body)
        if m := re.fullmatch(r"/servers/(\d+)", path):
            server = self.servers.get(int(m[1]))
            if server is None:
                return 404, {"error": {"code": "not_found", "message": "server not found", "details": {}}}
            if method == "GET":
                return 200, {"server": server}
            if method == "DELETE":
                del self.servers[server["id"]]
                if self.halt is not None:
                    threading.Thread(target=self.halt, args=(server,), daemon=True).start()
                return 200, {"action": self._action("delete_server", server["id"], False)}
        if method == "GET" and (m := re.fullmatch(r"/actions/(\d+)", path)):
            action = self.actions.get(int(m[1]))
            if action is None:
                return 404, {"error": {"code": "not_found", "message": "action not found", "details": {}}}
            return 200, {"action": action}
        return 404, {"error": {"code": "not_found", "message": f"no route {method} {path}", "details": {}}}

    def _create(self, body: dict) -> tuple[int, dict]:
        name = body.get("name", "")
        if any(s["name"] == name for s in self.servers.values()):
            return 409, {"error": {"code": "uniqueness_error", "message": "server name is already used",
                                   "details": {"fields": [{"name": "name"}]}}}  # fmt: skip
        stype = next((t for t in self.server_types if t["name"] == body.get("server_type")), None)
        if stype is None:
            return 400, {"error": {"code": "invalid_input", "message": "unknown server type", "details": {}}}
        location = body.get("location", "fsn1")
        where = next((loc for loc in stype["locations"] if loc["name"] == location), None)
        if where is None or not where["available"]:
            return 412, {"error": {"code": "resource_unavailable", "message": "server type unavailable here",
                                   "details": {}}}  # fmt: skip
        if len(body.get("user_data") or "") > 32 * 1024:
            return 400, {"error": {"code": "invalid_input", "message": "user_data too long", "details": {}}}
        server = self._new_server(name, stype["name"], location, body.get("labels") or {})
        self.user_data[server["id"]] = body.get("user_data") or ""
        action = self._action("create_server", server["id"], name in self.action_errors)
        return 201, {"server": server, "action": action, "next_actions": [], "root_password": None}

    def _page(self, key: str, items: list, query: dict[str, str]) -> tuple[int, dict]:
        page, per_page = int(query.get("page", 1)), int(query.get("per_page", 25))
        last = max(1, -(-len(items) // per_page))
        chunk = items[(page - 1) * per_page : page * per_page]
        pagination = {
            "page": page,
            "per_page": per_page,
            "previous_page": page - 1 if page > 1 else None,
            "next_page": page + 1 if page < last else None,
            "last_page": last,
            "total_entries": len(items),
        }
        return 200, {key: chunk, "meta": {"pagination": pagination}}

    # -- HTTP --------------------------------------------------------------
    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _serve(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else {}
                if fake.latency_s:
                    time.sleep(fake.latency_s)
                now = time.time()
                with fake._lock:
                    fake.requests.append((now, method, urlparse(self.path).path.removeprefix("/v1")))
                    hour = int(now // 3600)
                    if fake._hour != hour:
                        fake._hour, fake.remaining = hour, fake.rate_limit
                    fake.remaining = max(0, fake.remaining - 1)
                reset = math.ceil(
                    max(fake.throttled_until, (hour + 1) * 3600 if fake.remaining == 0 else now)
                )
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    status, payload = 401, {"error": {"code": "unauthorized", "message": "unable to authenticate",
                                                      "details": {}}}  # fmt: skip
                elif now < fake.throttled_until or fake.remaining == 0:
                    status, payload = 429, {"error": {"code": "rate_limit_exceeded",
                                                      "message": "limit of 3600 requests per hour reached",
                                                      "details": {}}}  # fmt: skip
                else:
                    status, payload = fake.handle(method, self.path, body)
                    if method == "POST" and status == 201 and fake.create_delay_s:
                        time.sleep(fake.create_delay_s)
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.send_header("RateLimit-Limit", str(fake.rate_limit))
                    self.send_header("RateLimit-Remaining", str(fake.remaining))
                    self.send_header("RateLimit-Reset", str(reset))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out and went away

            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

            def do_DELETE(self) -> None:
                self._serve("DELETE")

        return Handler
