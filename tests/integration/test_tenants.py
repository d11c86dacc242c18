"""One grid, many tenants, attacked and shared as they would be: a node
that tries to move the head, keys of both roles on every route, the caps
and limits that keep one key from holding the API, and the fair share of a
busy grid. Real API servers (SQLite and PostgreSQL), real Ray, real S3."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import update

from rgrid.client import Client
from rgrid.config import Target
from rgrid.errors import EXIT_AUTH, EXIT_INFRA, ApiError
from rgrid.hashcache import sha256_file
from rgrid.local import components
from rgrid.local.procs import free_port
from rgrid.transfer import upload_missing
from rgrid.wire import (
    BatchCreate,
    BatchItem,
    ExecutionCreate,
    InputFile,
    Resources,
    Status,
    WorkerRegistration,
    ray_token_fingerprint,
)
from rgrid_api.auth import runner_token
from rgrid_api.db.engine import make_engine
from rgrid_api.db.models import Worker
from tests.conftest import run_cli
from tests.support.services import (
    HEAD_TOKEN,
    WORKER_TOKEN,
    ApiServer,
    RayHead,
    S3Server,
    start_api,
    start_worker,
)


def _upload(client: Client, path: Path) -> InputFile:
    sha = sha256_file(path)
    upload_missing(client, {sha: path}, {sha: path.stat().st_size}, lambda _t: lambda _n: None)
    return InputFile(sha256=sha, path=path.name)


def _agent(api: ApiServer, token: str) -> httpx.Client:
    return httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {token}"}, timeout=10)


def _joined(api: ApiServer, worker_id: str) -> httpx.Client:
    """A node an operator set up: it joins with the worker token, then
    speaks with the credential that bought."""
    with _agent(api, WORKER_TOKEN) as enrolling:
        grant = enrolling.post("/v1/workers/join", json={"id": worker_id})
    assert grant.status_code == 200, grant.text
    return _agent(api, grant.json()["credential"])


def test_the_worker_token_only_joins_and_no_node_speaks_for_another(api: ApiServer, client: Client) -> None:
    """The shared worker token (every compose worker holds it) buys a
    node a credential for an id no live node holds, and speaks for no node
    itself: it cannot register, beat, drain or take an id that lives."""
    suffix = os.urandom(3).hex()
    mine, yours = f"join-a-{suffix}", f"join-b-{suffix}"
    reg = {id_: WorkerRegistration(id=id_, host_name="h").model_dump(mode="json") for id_ in (mine, yours)}
    with _agent(api, WORKER_TOKEN) as token:
        refused = token.post("/v1/workers/register", json=reg[mine])
        assert refused.status_code == 403 and "only joins" in refused.json()["detail"]
        assert token.post(f"/v1/workers/{mine}/heartbeat").status_code == 403
    with _joined(api, mine) as a, _joined(api, yours) as b:
        assert a.post("/v1/workers/register", json=reg[mine]).status_code == 200
        assert b.post("/v1/workers/register", json=reg[yours]).status_code == 200
        for call in ("heartbeat", "drain", "leave"):
            assert a.post(f"/v1/workers/{yours}/{call}").status_code == 403
        assert a.post("/v1/workers/register", json=reg[yours]).status_code == 403
        with _agent(api, WORKER_TOKEN) as token:
            taken = token.post("/v1/workers/join", json={"id": mine})  # a live node's id
            assert taken.status_code == 409 and "active" in taken.json()["detail"]
            for head in [w.id for w in client.workers().workers if w.id.endswith("head")]:
                refused = token.post("/v1/workers/join", json={"id": head})
                assert refused.status_code == 409 and "Ray head" in refused.json()["detail"]
        assert a.post(f"/v1/workers/{mine}/leave").status_code == 200
        # An id whose node left is still its own: it comes back with the
        # credential it kept, and nobody joins in its place.
        with _agent(api, WORKER_TOKEN) as token:
            left = token.post("/v1/workers/join", json={"id": mine})
            assert left.status_code == 409 and "forget-node" in left.json()["detail"]
        assert a.post("/v1/workers/register", json=reg[mine]).status_code == 200
        a.post(f"/v1/workers/{mine}/leave")
        b.post(f"/v1/workers/{yours}/leave")
    with _agent(api, "not-the-worker-token") as stranger:
        assert stranger.post("/v1/workers/join", json={"id": f"join-c-{suffix}"}).status_code == 401


def test_only_a_node_with_a_working_credential_gets_the_ray_token(
    api: ApiServer, ray_head: RayHead, tmp_path: Path
) -> None:
    """A rotated Ray token is fetched by nodes with their own credential.
    The shared worker token, an API key and a forgotten node's credential
    get nothing: a node removed from the grid stays out of the new cluster."""
    worker_id = f"token-{os.urandom(3).hex()}"
    token = ray_head.token_path.read_text().strip()
    with _joined(api, worker_id) as node:
        reg = WorkerRegistration(id=worker_id, host_name="h").model_dump(mode="json")
        ack = node.post("/v1/workers/register", json=reg)
        assert ack.status_code == 200 and ack.json()["ray_token_fp"] == ray_token_fingerprint(token)
        fetched = node.get("/v1/workers/ray-token")
        assert fetched.status_code == 200 and fetched.json() == {"token": token}
        with _agent(api, WORKER_TOKEN) as enrolling:
            assert enrolling.get("/v1/workers/ray-token").status_code == 403
        with _agent(api, api.api_key) as user:
            assert user.get("/v1/workers/ray-token").status_code == 401
        assert node.post(f"/v1/workers/{worker_id}/leave").status_code == 200
        forgot = run_cli(["server", "forget-node", worker_id], tmp_path, api.env)
        assert forgot.returncode == 0, forgot.stderr
        deadline = time.monotonic() + 30  # servers drop a cached credential within RGRID_KEY_CACHE_S
        while (code := node.get("/v1/workers/ray-token").status_code) != 401:
            assert code == 200 and time.monotonic() < deadline, code
            time.sleep(0.5)


def test_a_bootstrap_token_made_by_hand_is_spent_once(
    api: ApiServer, ray_head: RayHead, tmp_path: Path
) -> None:
    """`rgrid server bootstrap-token ID`: a node set up by hand joins without
    the shared worker token; the token buys one credential, bound to ID,
    and the grid's Ray token, once."""
    worker_id = f"hand-{os.urandom(3).hex()}"
    made = run_cli(["server", "bootstrap-token", worker_id], tmp_path, api.env)
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    with _agent(api, token) as node:
        grant = node.post("/v1/workers/bootstrap")
        assert grant.status_code == 200, grant.text
        assert grant.json()["worker_id"] == worker_id
        assert grant.json()["ray_token"] == ray_head.token_path.read_text().strip()
        assert node.post("/v1/workers/bootstrap").status_code == 401  # spent
    bad = run_cli(["server", "bootstrap-token", "no/such id"], tmp_path, api.env)
    assert bad.returncode == 2 and "invalid worker id" in bad.stderr and "Traceback" not in bad.stderr


def test_no_node_can_move_the_head_or_speak_for_it(api: ApiServer, client: Client, tmp_path: Path) -> None:
    """The head-announce attack: with a node's credential (and with the
    shared worker token), announce a fake head and keep beating; take the
    head's own id; drain it. All are refused, the driver stays where it
    is, and jobs keep completing."""
    heads = [w for w in client.workers().workers if w.id.endswith("head")]
    deadline = time.monotonic() + 90
    while api.env["RGRID_DATABASE_URL"].startswith("sqlite") and not heads:
        assert time.monotonic() < deadline, "the test grid's head never registered with the SQLite API"
        time.sleep(0.5)
        heads = [w for w in client.workers().workers if w.id.endswith("head")]
    fake = WorkerRegistration(id="evil-node", host_name="evil", ray_address="203.0.113.9:6379")
    with _agent(api, WORKER_TOKEN) as token:
        assert token.post("/v1/workers/register", json=fake.model_dump(mode="json")).status_code == 403
    with _joined(api, "evil-node") as node:
        for _ in range(3):
            refused = node.post("/v1/workers/register", json=fake.model_dump(mode="json"))
            assert refused.status_code == 403 and "head" in refused.json()["detail"]
        for head in heads:
            taken = WorkerRegistration(id=head.id, host_name="evil")
            assert node.post("/v1/workers/register", json=taken.model_dump(mode="json")).status_code == 403
            assert node.post(f"/v1/workers/{head.id}/heartbeat").status_code == 403
            assert node.post(f"/v1/workers/{head.id}/drain").status_code == 403
            assert node.post(f"/v1/workers/{head.id}/leave").status_code == 403
        # A plain registration (no head address) is still welcome, and its
        # answer names the real head, not the fake one.
        plain = node.post(
            "/v1/workers/register",
            json=WorkerRegistration(id="evil-node", host_name="p").model_dump(mode="json"),
        )
        assert plain.status_code == 200
        assert plain.json()["ray_address"] != "203.0.113.9:6379"
        assert node.post("/v1/workers/evil-node/leave").status_code == 200
    with _agent(api, "rgw_n_not-a-credential") as stranger:
        assert stranger.post("/v1/workers/register", json=fake.model_dump(mode="json")).status_code == 401
    # The API's key is no node credential either.
    with _agent(api, api.api_key) as user:
        assert user.post("/v1/workers/register", json=fake.model_dump(mode="json")).status_code == 401
    script = tmp_path / "ok.py"
    script.write_text("print('still here')\n")
    run = client.create_execution(ExecutionCreate(script=_upload(client, script)))
    deadline = time.monotonic() + 120
    while not (view := client.get_execution(run.id)).status.final:
        assert time.monotonic() < deadline, "a job did not complete after the attack"
        time.sleep(0.2)
    assert view.status == Status.SUCCEEDED


def test_a_node_joins_once_keeps_its_credential_and_joins_again_when_it_is_forgotten(
    api: ApiServer, client: Client, ray_head: RayHead, tmp_path: Path
) -> None:
    """A node an operator set up (the worker token in its environment)
    whose kept credential the API does not know (a reset database) drops it
    and joins again; what it keeps is its own credential, 0600, never the
    worker token."""
    worker_id = f"rejoiner-{os.urandom(3).hex()}"
    kept = tmp_path / "local" / "credentials" / f"{worker_id}.json"
    kept.parent.mkdir(parents=True)
    kept.write_text(json.dumps({"worker_id": worker_id, "credential": "rgw_n_forgotten"}))
    node = start_worker(tmp_path, worker_id, ray_head, api.url, num_cpus=1)
    try:
        deadline = time.monotonic() + 60
        while not any(w.id == worker_id for w in client.workers().workers):
            assert time.monotonic() < deadline, f"the node never registered: {node.log.read_text()[-2000:]}"
            time.sleep(0.5)
        grant = json.loads(kept.read_text())
        assert grant["worker_id"] == worker_id
        assert grant["credential"] not in ("rgw_n_forgotten", WORKER_TOKEN)
        assert oct(kept.stat().st_mode & 0o777) == "0o600"
        assert "joining again" in node.log.read_text()
    finally:
        node.stop()


def test_a_ticket_alone_speaks_for_nothing_and_no_node_hijacks_another_nodes_attempt(
    api: ApiServer, client: Client, tmp_path: Path
) -> None:
    """A running attempt's ticket (its token, as a raylet it passed
    through could read it) with no node credential, or with another node's,
    gets no call taken: no spec, no logs, no output URLs, no forged
    result. The attempt ends as its own node reports it."""
    script = tmp_path / "victim.py"
    script.write_text("import time\nprint('begun', flush=True)\ntime.sleep(4)\nprint('the real end')\n")
    run = client.create_execution(ExecutionCreate(script=_upload(client, script)))
    deadline = time.monotonic() + 90
    while (view := client.get_execution(run.id)).status != Status.RUNNING:
        assert time.monotonic() < deadline and not view.status.final, f"never ran: {view.status}"
        time.sleep(0.1)
    number = view.attempts[-1].number
    token = runner_token(api.env["RGRID_RUNNER_SECRET"], run.id, number)
    base = f"{api.url}/v1/runner/{run.id}/{number}"
    forged = {"exit_code": 0, "duration_s": 0.1, "logs": [{"stream": "stdout", "data": "forged\n"}]}
    suffix = os.urandom(3).hex()
    thief_id = f"hijacker-{suffix}"
    calls = [
        ("/start", {"worker": "t", "worker_id": thief_id}),
        ("/renew", None),
        ("/logs", {"lines": [{"stream": "stdout", "data": "forged\n"}]}),
        ("/outputs", {"paths": ["stolen.txt"]}),
        ("/complete", forged),
    ]
    ticket_only = {"Authorization": f"Bearer {token}"}
    for path, body in calls:
        assert httpx.post(base + path, json=body, headers=ticket_only, timeout=10).status_code == 401, path
    with _joined(api, thief_id) as thief:
        # A registered node of its own, naming itself: the attempt is still not its.
        registered = WorkerRegistration(id=thief_id, host_name="t").model_dump(mode="json")
        assert thief.post("/v1/workers/register", json=registered).status_code == 200
        theirs = {**ticket_only, "X-Rgrid-Node": thief.headers["Authorization"].removeprefix("Bearer ")}
        for path, body in calls:
            answer = httpx.post(base + path, json=body, headers=theirs, timeout=10)
            assert answer.status_code == (409 if path == "/start" else 403), (path, answer.text)
        thief.post(f"/v1/workers/{thief_id}/leave")
    deadline = time.monotonic() + 90
    while not (view := client.get_execution(run.id)).status.final:
        assert time.monotonic() < deadline, "the victim's attempt never ended"
        time.sleep(0.2)
    assert view.status == Status.SUCCEEDED
    logs = "".join(chunk.data for chunk in client.logs(run.id).chunks)
    assert "the real end" in logs and "forged" not in logs


def test_the_head_token_alone_may_name_the_head(api: ApiServer, ray_head: RayHead) -> None:
    """One announcement of the head's real address: refused with a node's
    credential, accepted with the head's (how the head's agent says where it
    is). Without a Ray node id it never becomes the current head, and it
    leaves at once."""
    body = WorkerRegistration(id="second-head", host_name="h", ray_address=ray_head.address).model_dump(
        mode="json"
    )
    with _joined(api, "second-head") as node:
        assert node.post("/v1/workers/register", json=body).status_code == 403
    with _agent(api, HEAD_TOKEN) as head:
        assert head.post("/v1/workers/register", json=body).status_code == 200
        assert head.post("/v1/workers/second-head/leave").status_code == 200


# Every route of the API and who may call it. A route missing here fails the
# test: each new route has to say which role it needs.
PUBLIC, USER, ADMIN, AGENT, RUNNER = "public", "user", "admin", "agent", "runner"
ROUTES = {
    ("GET", "/healthz"): PUBLIC,
    ("POST", "/v1/uploads/plan"): USER,
    ("POST", "/v1/uploads/complete"): USER,
    ("POST", "/v1/executions"): USER,
    ("GET", "/v1/executions"): USER,
    ("GET", "/v1/executions/{execution_id}"): USER,
    ("POST", "/v1/executions/{execution_id}/cancel"): USER,
    ("POST", "/v1/executions/{execution_id}/retry"): USER,
    ("GET", "/v1/executions/{execution_id}/outputs"): USER,
    ("GET", "/v1/executions/{execution_id}/logs"): USER,
    ("POST", "/v1/batches"): USER,
    ("GET", "/v1/batches"): USER,
    ("GET", "/v1/batches/{batch_id}"): USER,
    ("GET", "/v1/batches/{batch_id}/outputs"): USER,
    ("POST", "/v1/batches/{batch_id}/retry"): USER,
    ("POST", "/v1/batches/{batch_id}/cancel"): USER,
    ("GET", "/v1/cost"): USER,
    ("POST", "/v1/estimate"): USER,
    ("GET", "/v1/grid"): USER,
    ("POST", "/v1/console/link"): USER,
    ("GET", "/v1/workers"): ADMIN,
    ("GET", "/v1/autoscaler"): ADMIN,
    ("GET", "/metrics"): ADMIN,
    ("POST", "/v1/grid/workers/{worker_id}/drain"): ADMIN,
    ("POST", "/v1/workers/bootstrap"): AGENT,
    ("POST", "/v1/workers/join"): AGENT,
    ("POST", "/v1/workers/register"): AGENT,
    ("POST", "/v1/workers/{worker_id}/heartbeat"): AGENT,
    ("POST", "/v1/workers/{worker_id}/drain"): AGENT,
    ("POST", "/v1/workers/{worker_id}/leave"): AGENT,
    ("GET", "/v1/workers/{worker_id}/running"): AGENT,
    ("GET", "/v1/workers/ray-token"): AGENT,
    ("POST", "/v1/runner/{execution_id}/{attempt}/start"): RUNNER,
    ("POST", "/v1/runner/{execution_id}/{attempt}/renew"): RUNNER,
    ("POST", "/v1/runner/{execution_id}/{attempt}/logs"): RUNNER,
    ("POST", "/v1/runner/{execution_id}/{attempt}/outputs"): RUNNER,
    ("POST", "/v1/runner/{execution_id}/{attempt}/complete"): RUNNER,
}


def _concrete(path: str) -> str:
    return (
        path.replace("{execution_id}", "zzzzzzzzzzzz")
        .replace("{batch_id}", "b-zzzzzzzzzz")
        .replace("{worker_id}", "no-such-node")
        .replace("{attempt}", "1")
    )


def test_every_route_says_which_role_it_needs(api: ApiServer) -> None:
    admin_key, user_key = api.api_key, api.create_key("rolecheck")
    schema = httpx.get(f"{api.url}/v1/openapi.json", headers={"Authorization": f"Bearer {admin_key}"}).json()
    served = {(method.upper(), path) for path, ops in schema["paths"].items() for method in ops}
    assert served == set(ROUTES), f"routes without a role here: {served ^ set(ROUTES)}"
    for (method, path), role in sorted(ROUTES.items()):
        url = f"{api.url}{_concrete(path)}"
        for key, is_admin in ((user_key, False), (admin_key, True)):
            code = httpx.request(method, url, headers={"Authorization": f"Bearer {key}"}, json={}).status_code
            where = f"{method} {path} with {'an admin' if is_admin else 'a user'} key"
            if role in (AGENT, RUNNER):
                assert code == 401, where  # an API key is no node's nor runner's credential
            elif role == ADMIN and not is_admin:
                assert code == 403, where
            else:
                assert code not in (401, 403), where
        if role != PUBLIC:
            assert httpx.request(method, url, json={}).status_code == 401, f"{method} {path} without a key"


def test_a_user_sees_counts_and_its_own_cost_and_an_admin_sees_the_grid(
    api: ApiServer, client: Client, tmp_path: Path
) -> None:
    env_user = {**api.env, "RGRID_HOME": str(tmp_path / "u"), "RGRID_API_URL": api.url}
    env_user["RGRID_API_KEY"] = api.create_key("erin")
    env_admin = {**env_user, "RGRID_API_KEY": api.api_key}
    with Client(Target(api.url, env_user["RGRID_API_KEY"])) as erin:
        grid = erin.grid()
        assert grid.role == "user" and grid.cpus >= 1
        report = erin.cost(None)
        assert report.nodes == [] and report.owners_eur is None and report.idle_eur is None
    listing = run_cli(["workers"], tmp_path, env_user)
    assert listing.returncode == 0, listing.stderr
    assert "CPUs free" in listing.stdout and "admin key" in listing.stdout
    assert not any(w.id in listing.stdout for w in client.workers().workers)
    for argv in (["autoscaler", "status"], ["workers", "drain", "no-such-node"]):
        refused = run_cli(argv, tmp_path, env_user)
        assert refused.returncode == EXIT_AUTH and "admin" in refused.stderr, refused.stderr
        assert "Traceback" not in refused.stderr
    user_json = json.loads(run_cli(["workers", "--json"], tmp_path, env_user).stdout)
    assert user_json["workers"] is None and user_json["grid"]["role"] == "user"
    admin_view = run_cli(["workers", "--json"], tmp_path, env_admin)
    assert admin_view.returncode == 0, admin_view.stderr
    listed = json.loads(admin_view.stdout)["workers"]
    assert [w["id"] for w in listed] == [w.id for w in client.workers().workers]
    assert client.cost(None).owners_eur is not None


def test_an_admin_cancels_anyones_run_and_drains_a_node(
    api: ApiServer, client: Client, tmp_path: Path
) -> None:
    with Client(Target(api.url, api.create_key("frank"))) as frank:
        script = tmp_path / "long.py"
        script.write_text("import time\ntime.sleep(600)\n")
        run = frank.create_execution(ExecutionCreate(script=_upload(frank, script)))
        with Client(Target(api.url, api.create_key("grace"))) as grace, pytest.raises(ApiError) as err:
            grace.cancel(run.id)  # another user cannot
        assert err.value.status == 404
        assert client.cancel(run.id).id == run.id  # the admin can
        deadline = time.monotonic() + 60
        while not (view := frank.get_execution(run.id)).status.final:
            assert time.monotonic() < deadline, "the admin's cancel did not end the run"
            time.sleep(0.2)
        assert view.status == Status.CANCELLED
    with _joined(api, "drain-me") as node:
        reg = WorkerRegistration(id="drain-me", host_name="d")
        assert node.post("/v1/workers/register", json=reg.model_dump(mode="json")).status_code == 200
        assert client.drain_worker("drain-me").status == "draining"
        # The node learns it from its next heartbeat's answer.
        assert node.post("/v1/workers/drain-me/heartbeat").json()["status"] == "draining"
        node.post("/v1/workers/drain-me/leave")
        assert client.drain_worker("drain-me").status == "left"  # nothing to drain: says so
    for head in [w for w in client.workers().workers if w.id.endswith("head")]:
        with pytest.raises(ApiError) as err:
            client.drain_worker(head.id)  # its leaving would take the cluster with it
        assert err.value.status == 409 and "Ray head" in str(err.value)


def _unthrottled(http: httpx.Client, url: str, wait: float) -> httpx.Response:
    """A long-poll, past the rate limit (waited out as it asks)."""
    while True:
        resp = http.get(url, params={"wait": wait})
        if resp.status_code != 429 or "rate limit" not in resp.json()["detail"]:
            return resp
        time.sleep(float(resp.headers["Retry-After"]))


def _held(http: httpx.Client, url: str) -> None:
    """A 20 s long-poll that gets in: refused while the other probe holds
    the key's one slot, it asks again (for 30 s at most)."""
    deadline = time.monotonic() + 30
    while _unthrottled(http, url, 20.0).status_code == 429 and time.monotonic() < deadline:
        time.sleep(0.1)


@pytest.fixture
def strict_api(tmp_path: Path, s3: S3Server, ray_head: RayHead) -> Iterator[ApiServer]:
    """An API with tight limits and no Ray to be found: what is submitted
    stays queued, so each cap is met exactly."""
    nowhere = dataclasses.replace(ray_head, address=f"127.0.0.1:{free_port()}")
    server = start_api(
        tmp_path / "api",
        f"sqlite:///{tmp_path / 'rgrid.db'}",
        s3,
        nowhere,
        s3.endpoint,
        extra_env={
            "RGRID_MAX_QUEUED": "3",
            "RGRID_RATE_LIMIT_PER_S": "5",
            "RGRID_RATE_LIMIT_BURST": "5",
            "RGRID_LONG_POLLS_PER_KEY": "1",
        },
    )
    yield server
    server.proc.stop()


def test_caps_and_limits_answer_429_with_one_line_and_lose_nothing(
    strict_api: ApiServer, tmp_path: Path
) -> None:
    api = strict_api
    script = tmp_path / "job.py"
    script.write_text("print('hi')\n")
    env = {
        **api.env,
        "RGRID_HOME": str(tmp_path / "h"),
        "RGRID_API_URL": api.url,
        "RGRID_API_KEY": api.api_key,
    }
    with Client(Target(api.url, api.api_key)) as client:
        ref = _upload(client, script)
        accepted = [client.create_execution(ExecutionCreate(script=ref)) for _ in range(3)]
    # The queued cap: the CLI exits 75 with the server's one line.
    over = run_cli(["run", "-d", "job.py"], tmp_path, env)
    assert over.returncode == EXIT_INFRA, over.stderr
    lines = [line for line in over.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "queued cap reached" in lines[0] and "3" in lines[0], over.stderr
    # A batch past the cap is refused whole.
    with Client(Target(api.url, api.api_key)) as client:
        batch = BatchCreate(
            script=ref,
            items=[BatchItem(input=f"{i}", inputs=[], args=[]) for i in range(2)],
            resources=Resources(),
        )
        with pytest.raises(ApiError, match="queued cap reached"):
            client.create_batch(batch)
    # The rate limit: 429 with Retry-After once the burst is spent ...
    headers = {"Authorization": f"Bearer {api.api_key}"}
    with httpx.Client(headers=headers) as http:
        for _ in range(200):
            if (limited := http.get(f"{api.url}/v1/executions")).status_code == 429:
                break
    assert limited.status_code == 429, "200 requests in a row and never limited"
    assert int(limited.headers["Retry-After"]) >= 1 and "rate limit" in limited.json()["detail"]
    # ... which the CLI waits out instead of failing.
    listing = run_cli(["list"], tmp_path, env)
    assert listing.returncode == 0, listing.stderr
    # The long-poll cap: while one wait is held, another on the same key is
    # refused at once (a short wait that comes back 200 means the first was
    # not held yet: ask again, at a pace that leaves the first its share of
    # the key's rate limit).
    wait_url = f"{api.url}/v1/executions/{accepted[0].id}/logs"
    with httpx.Client(timeout=30, headers=headers) as a, httpx.Client(timeout=30, headers=headers) as b:
        held = threading.Thread(target=lambda: _held(a, wait_url), daemon=True)
        held.start()
        deadline = time.monotonic() + 30
        while (second := _unthrottled(b, wait_url, 0.2)).status_code != 429:
            assert time.monotonic() < deadline, "the second long-poll was never refused"
            time.sleep(0.5)
        assert "waiting requests" in second.json()["detail"] and "Retry-After" in second.headers
        held.join(timeout=60)
        assert not held.is_alive()
    # Nothing accepted was lost.
    with Client(Target(api.url, api.api_key)) as client:
        assert [client.get_execution(e.id).status for e in accepted] == [Status.QUEUED] * 3


def test_another_owners_runs_go_next_behind_a_large_batch(
    api: ApiServer, client: Client, tmp_path: Path
) -> None:
    """Owner A's batch fills the grid's two slots and queues far beyond them;
    owner B's two runs, submitted after, each start before more than a
    grid's worth of A's inputs (two, plus the dispatch margin) start: about
    one attempt's duration on a full grid, never the batch's length."""
    job = tmp_path / "work.py"
    job.write_text("import time, sys\ntime.sleep(1.5)\nprint(sys.argv[1:])\n")
    ref = _upload(client, job)
    batch = client.create_batch(
        BatchCreate(
            script=ref,
            items=[BatchItem(input=f"i{n}", args=[str(n)]) for n in range(40)],
            resources=Resources(cpu=1, memory_mb=256, timeout_s=120),
        )
    )
    try:
        deadline = time.monotonic() + 120
        while client.get_batch(batch.id, executions=False).counts.get(Status.RUNNING, 0) < 2:
            assert time.monotonic() < deadline, "the batch never filled the grid"
            time.sleep(0.2)
        view = client.get_batch(batch.id, executions=False)
        # The queue stays in the database: Ray got only what it can start.
        assert view.counts.get(Status.QUEUED, 0) >= 30, view.counts
        with Client(Target(api.url, api.create_key("bea"))) as bea:
            b_ref = _upload(bea, job)
            submitted = time.time()
            runs = [
                bea.create_execution(
                    ExecutionCreate(script=b_ref, args=[f"b{n}"], resources=Resources(cpu=1, memory_mb=256))
                )
                for n in range(2)
            ]
            deadline = time.monotonic() + 120
            while not all((v := bea.get_execution(r.id)).status.final for r in runs):
                assert time.monotonic() < deadline, f"B's runs did not finish: {v.status}"
                time.sleep(0.2)
            b_views = [bea.get_execution(r.id) for r in runs]
        assert all(v.status == Status.SUCCEEDED for v in b_views)
        last_b_start = max(v.started_at.timestamp() for v in b_views if v.started_at)
        a_views = [client.get_execution(e.id) for e in client.get_batch(batch.id).executions]
        overtook = [
            v for v in a_views if v.started_at and submitted < v.started_at.timestamp() < last_b_start
        ]
        assert len(overtook) <= 3, [v.id for v in overtook]
        assert sum(1 for v in a_views if v.status == Status.QUEUED) >= 20
    finally:
        client.cancel_batch(batch.id)


def _in_ray(ray_head: RayHead, code: str) -> str:
    """What `code` prints, run as a client of the test grid's GCS (with the
    Ray token, as a node would be); its first argument is the GCS address."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RGRID_", "RAY_"))}
    env.update(components.ray_env(ray_head.token_path))
    out = subprocess.run(
        [sys.executable, "-c", code, ray_head.address], env=env, capture_output=True, text=True, timeout=90
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def _head_node_id(ray_head: RayHead) -> str:
    """The test head's Ray node id, as the GCS has it (worker `local-head`)."""
    return _in_ray(
        ray_head,
        "import sys, time; from rgrid_runner.ray_compat import alive_nodes\n"
        "deadline = time.monotonic() + 60\n"
        "while not (nodes := alive_nodes(sys.argv[1], 'rgrid_worker_local-head')):\n"
        "    assert time.monotonic() < deadline, 'the head node never joined its GCS'\n"
        "    time.sleep(0.2)\n"
        "print(nodes[0].node_id)",
    )


def test_a_node_cannot_take_another_nodes_ray_id_nor_get_it_fenced(
    api: ApiServer, client: Client, ray_head: RayHead, tmp_path: Path
) -> None:
    """Node id theft: a node registers with the head's Ray node id and is
    refused. An id that got in unchecked (as a runner's report can put one)
    is checked again before fencing: when the thief is declared dead, the
    node it named is not fenced and jobs keep running there."""
    victim = _head_node_id(ray_head)
    with _joined(api, "thief-node") as thief:
        stolen = WorkerRegistration(id="thief-node", host_name="t", ray_node_id=victim)
        refused = thief.post("/v1/workers/register", json=stolen.model_dump(mode="json"))
        assert refused.status_code == 403 and "not worker thief-node's node" in refused.json()["detail"]
        honest = WorkerRegistration(id="thief-node", host_name="t")
        assert thief.post("/v1/workers/register", json=honest.model_dump(mode="json")).status_code == 200
    engine = make_engine(api.env["RGRID_DATABASE_URL"])
    with engine.begin() as conn:
        conn.execute(update(Worker).where(Worker.id == "thief-node").values(ray_node_id=victim))
    engine.dispose()
    deadline = time.monotonic() + 60
    while any(w.id == "thief-node" for w in client.workers().workers):
        assert time.monotonic() < deadline, "the silent thief was never declared dead"
        time.sleep(0.5)
    script = tmp_path / "after.py"
    script.write_text("print('the victim still runs jobs')\n")
    runs = [client.create_execution(ExecutionCreate(script=_upload(client, script))) for _ in range(2)]
    deadline = time.monotonic() + 120
    while not all(client.get_execution(r.id).status.final for r in runs):
        assert time.monotonic() < deadline, (
            "jobs stopped running after the thief's death: its victim was fenced"
        )
        time.sleep(0.3)
    assert all(client.get_execution(r.id).status == Status.SUCCEEDED for r in runs)
    assert _job_cpus(ray_head) == 2.0  # the victim is not draining in Ray either


def _job_cpus(ray_head: RayHead) -> float:
    """The CPUs of the job nodes Ray counts (alive and not draining)."""
    return float(
        _in_ray(
            ray_head,
            "import sys; from rgrid_runner.ray_compat import job_nodes; "
            "print(sum(cpus for cpus, _ in job_nodes(sys.argv[1], 'rgrid_runtime_')))",
        )
    )
