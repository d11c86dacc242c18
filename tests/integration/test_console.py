"""The web console's doors, attacked over HTTP as a hostile page or
tenant would: login links used twice or late, forms without their CSRF
token or from another origin, a revoked key's session, another owner's
ids, and what a job prints reaching the page as text. Real API servers on
SQLite and PostgreSQL, real Ray and S3, the real CLI."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from sqlalchemy import text

from tests.support.console import csrf_of, database, logged_in, login_link, submit
from tests.support.services import ApiServer


def test_a_login_link_works_once(api: ApiServer, tmp_path: Path) -> None:
    link = login_link(api, api.api_key, tmp_path / "home")
    assert link.startswith(f"{api.url}/ui/login/")
    first = httpx.get(link)
    assert first.status_code == 303 and first.headers["location"] == "/ui/"
    cookie = first.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/ui" in cookie
    assert "secure" not in cookie  # plain http on loopback; Secure over https
    again = httpx.get(link)
    assert again.status_code == 401
    assert "used already or has expired" in again.text
    assert "rgrid_console=" not in again.headers.get("set-cookie", "")
    with httpx.Client(base_url=api.url, cookies={"rgrid_console": first.cookies["rgrid_console"]}) as browser:
        runs = browser.get("/ui/")
    assert runs.status_code == 200 and "<h1>Runs</h1>" in runs.text


def test_over_https_the_session_cookie_is_secure_and_host_only(api: ApiServer, tmp_path: Path) -> None:
    """Behind a TLS proxy on the same host (it says X-Forwarded-Proto, which
    the server trusts from 127.0.0.1) the cookie is `__Host-`, Secure, Path=/."""
    link = login_link(api, api.api_key, tmp_path / "home")
    answer = httpx.get(link, headers={"X-Forwarded-Proto": "https"})
    assert answer.status_code == 303
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith("__Host-rgrid_console=")
    assert "Secure" in cookie and "Path=/;" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
    token = cookie.split(";", 1)[0].split("=", 1)[1]
    https = {"X-Forwarded-Proto": "https"}
    assert (
        httpx.get(f"{api.url}/ui/", headers=https, cookies={"__Host-rgrid_console": token}).status_code == 200
    )
    # Over https only the host-only name is read: a plain-named cookie
    # (which another port of the host could set) is no session there.
    assert httpx.get(f"{api.url}/ui/", headers=https, cookies={"rgrid_console": token}).status_code == 303


def test_an_expired_login_link_is_refused(api: ApiServer, tmp_path: Path) -> None:
    link = login_link(api, api.api_key, tmp_path / "home")
    with database(api) as engine, engine.begin() as conn:
        conn.execute(
            text("UPDATE console_links SET expires_at = :past"),
            {"past": datetime.now(UTC) - timedelta(seconds=1)},
        )
    assert httpx.get(link).status_code == 401
    assert httpx.get(f"{api.url}/ui/login/not-a-link").status_code == 401


def test_the_key_form_logs_in_with_its_csrf_token_only(api: ApiServer) -> None:
    with httpx.Client(base_url=api.url) as browser:
        form = browser.get("/ui/login")
        assert form.status_code == 200
        token = csrf_of(form.text)
        refused = browser.post("/ui/login", data={"csrf": token, "key": "rg_wrong"})
        assert refused.status_code == 401 and "refused" in refused.text
        browser.get("/ui/login")
        token = csrf_of(browser.get("/ui/login").text)
        no_token = browser.post("/ui/login", data={"key": api.api_key})
        assert no_token.status_code == 403 and "rgrid_console=" not in no_token.headers.get("set-cookie", "")
        token = csrf_of(browser.get("/ui/login").text)
        elsewhere = browser.post(
            "/ui/login", data={"csrf": token, "key": api.api_key}, headers={"Origin": "https://evil.example"}
        )
        assert elsewhere.status_code == 403
        token = csrf_of(browser.get("/ui/login").text)
        done = browser.post("/ui/login", data={"csrf": token, "key": api.api_key})
        assert done.status_code == 303
        browser.cookies.set("rgrid_console", done.cookies["rgrid_console"], path="/ui")
        assert browser.get("/ui/").status_code == 200


def test_pages_need_a_session_and_forbid_inline_script(api: ApiServer, tmp_path: Path) -> None:
    for path in ("/ui/", "/ui/cost", "/ui/grid", "/ui/runs/abc"):
        answer = httpx.get(f"{api.url}{path}")
        assert answer.status_code == 303 and answer.headers["location"] == "/ui/login", path
    assert httpx.get(f"{api.url}/ui/live/rows?ids=x").status_code == 401
    with httpx.Client(base_url=api.url, cookies={"rgrid_console": "forged"}) as forged:
        assert forged.get("/ui/").status_code == 303
    with logged_in(api, api.api_key, tmp_path / "home") as browser:
        page = browser.get("/ui/")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["referrer-policy"] == "same-origin"
    assert re.search(r"<script(?![^>]*\bsrc=)", page.text) is None  # no inline script
    assert re.search(r"\son[a-z]+\s*=", page.text) is None  # no inline event handler


def test_a_revoked_key_ends_its_sessions_at_once(api: ApiServer, tmp_path: Path) -> None:
    key = api.create_key("console-revokee")
    with logged_in(api, key, tmp_path / "home") as browser:
        assert browser.get("/ui/").status_code == 200
        subprocess.run(
            [sys.executable, "-m", "rgrid", "server", "revoke-key", "--owner", "console-revokee"],
            env=api.env,
            check=True,
            capture_output=True,
        )
        gone = browser.get("/ui/")
        assert gone.status_code == 303 and gone.headers["location"] == "/ui/login"


def test_actions_need_the_sessions_csrf_token_and_origin(api: ApiServer, tmp_path: Path) -> None:
    (tmp_path / "sleep.py").write_text("import time\ntime.sleep(300)\n")
    run_id = submit(api, api.api_key, tmp_path / "home", tmp_path, "sleep.py")
    with logged_in(api, api.api_key, tmp_path / "home") as browser:
        page = browser.get(f"/ui/runs/{run_id}")
        assert page.status_code == 200
        token = csrf_of(page.text)
        assert browser.post(f"/ui/runs/{run_id}/cancel").status_code == 403
        assert browser.post(f"/ui/runs/{run_id}/cancel", data={"csrf": "stale"}).status_code == 403
        cross = browser.post(
            f"/ui/runs/{run_id}/cancel", data={"csrf": token}, headers={"Sec-Fetch-Site": "cross-site"}
        )
        assert cross.status_code == 403
        assert browser.get(f"/ui/runs/{run_id}").text.count("Cancel") >= 1
        done = browser.post(f"/ui/runs/{run_id}/cancel", data={"csrf": token})
        assert done.status_code == 303 and done.headers["location"] == f"/ui/runs/{run_id}"
    deadline = time.monotonic() + 60
    with httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {api.api_key}"}) as c:
        while c.get(f"/v1/executions/{run_id}").json()["status"] != "cancelled":
            assert time.monotonic() < deadline, "the console's cancel did not cancel"
            time.sleep(0.2)


def test_another_owners_run_reads_as_a_missing_one(api: ApiServer, tmp_path: Path) -> None:
    (tmp_path / "hi.py").write_text("print('hi')\n")
    theirs = submit(api, api.api_key, tmp_path / "home", tmp_path, "hi.py")
    missing = "x" * len(theirs)
    with logged_in(api, api.create_key("mallory"), tmp_path / "home-m") as browser:
        answers = {
            name: [browser.get(path.format(id=i)) for path in ("/ui/runs/{id}", "/ui/runs/{id}/log.txt")]
            for name, i in (("theirs", theirs), ("missing", missing))
        }
        token = csrf_of(browser.get("/ui/").text)
        cancel = browser.post(f"/ui/runs/{theirs}/cancel", data={"csrf": token})
    for a, b in zip(answers["theirs"], answers["missing"], strict=True):
        assert a.status_code == b.status_code == 404
        assert a.text.replace(theirs, "ID") == b.text.replace(missing, "ID")
    assert cancel.status_code == 404


def test_a_runs_page_shows_it_as_text_with_its_outputs_log_and_retry(api: ApiServer, tmp_path: Path) -> None:
    hostile = "<script>alert('x')</script><img src=x onerror=alert(1)>"
    (tmp_path / "xss.py").write_text(
        f"import sys\nprint({hostile!r})\nprint(sys.argv[1], file=sys.stderr)\n"
        "open('result.txt', 'w').write('forty-two')\n"
    )
    run_id = submit(
        api, api.api_key, tmp_path / "home", tmp_path, "--env", "SECRET_TOKEN=hunter2", "xss.py", hostile
    )
    assert wait_final(api, run_id) == "succeeded"
    with logged_in(api, api.api_key, tmp_path / "home") as browser:
        page = browser.get(f"/ui/runs/{run_id}").text
        listing = browser.get("/ui/").text
        whole = browser.get(f"/ui/runs/{run_id}/log.txt")
        retried = browser.post(f"/ui/runs/{run_id}/retry", data={"csrf": csrf_of(page)})
    assert hostile not in page and "<img src=x" not in page and "<script>alert" not in page
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;" in page
    assert "SECRET_TOKEN" in page and "hunter2" not in page
    assert "<script>alert" not in listing
    assert (
        whole.headers["content-type"].startswith("text/plain")
        and whole.headers["x-content-type-options"] == "nosniff"
    )
    assert whole.text == f"{hostile}\n{hostile}\n"  # stdout and stderr, whole, in order
    link = re.search(r'<a href="([^"]+)" rel="noreferrer">result.txt</a>', page)
    assert link is not None, page
    assert httpx.get(link[1].replace("&amp;", "&")).text == "forty-two"  # the presigned download
    assert retried.status_code == 303
    again = retried.headers["location"].removeprefix("/ui/runs/")
    assert again != run_id and wait_final(api, again) == "succeeded"


def wait_final(api: ApiServer, run_id: str) -> str:
    with httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {api.api_key}"}) as c:
        deadline = time.monotonic() + 120
        while (status := c.get(f"/v1/executions/{run_id}").json()["status"]) not in ("succeeded", "failed"):
            assert time.monotonic() < deadline
            time.sleep(0.3)
    return str(status)


def test_filters_narrow_the_list_and_bad_ones_say_so(api: ApiServer, tmp_path: Path) -> None:
    (tmp_path / "fails.py").write_text("raise SystemExit(3)\n")
    (tmp_path / "works.py").write_text("print('ok')\n")
    failing = submit(api, api.api_key, tmp_path / "home", tmp_path, "fails.py")
    working = submit(api, api.api_key, tmp_path / "home", tmp_path, "works.py")
    assert (wait_final(api, failing), wait_final(api, working)) == ("failed", "succeeded")
    with logged_in(api, api.api_key, tmp_path / "home") as browser:

        def shown(query: str) -> set[str]:
            answer = browser.get(f"/ui/?{query}")
            assert answer.status_code == 200, (query, answer.text)
            return {i for i in (failing, working) if f'id="row-{i}"' in answer.text}

        assert shown("script=fails.py") == {failing}
        assert shown("status=failed&script=fails.py") == {failing}
        assert shown("status=succeeded&script=fails.py") == set()
        assert shown(f"q={failing[:6]}") == {failing}
        assert shown("since=1h") == {failing, working}
        assert shown("since=2000-01-01") == {failing, working}
        assert shown(f"since={(datetime.now(UTC) + timedelta(hours=1)).isoformat()}") == set()
        for query, says in (
            ("since=yesterday", "since takes 30m, 24h, 7d or an ISO date"),
            ("since=99999999999d", "since reaches back before the year 1"),
            ("status=bogus", "no status &#39;bogus&#39;"),
            ("after=zzzzzzzzzz", "no run &#39;zzzzzzzzzz&#39; to page on from"),
            ("batch=b-zzzzzzzz", "no batch"),
            ("q=%25%25", "no run"),
        ):
            answer = browser.get(f"/ui/?{query}")
            assert answer.status_code == 200 and says in answer.text, (query, answer.text[-600:])
            assert 'id="row-' not in answer.text
        for query in ("limit=abc", "limit=0", "limit=100000"):
            answer = browser.get(f"/ui/?{query}")
            assert answer.status_code == 400 and answer.headers["content-type"].startswith("text/html"), query
            assert "limit" in answer.text
        assert browser.get("/ui/live/rows?ids=" + "a" * 5000).status_code == 400
        assert "evil" not in httpx.get(f"{api.url}/ui/login?problem=evil").text


def test_a_login_link_sent_by_another_site_is_refused_and_kept(api: ApiServer, tmp_path: Path) -> None:
    link = login_link(api, api.api_key, tmp_path / "home")
    planted = httpx.get(link, headers={"Sec-Fetch-Site": "cross-site"})
    assert planted.status_code == 403 and "another site" in planted.text
    assert httpx.get(link, headers={"Sec-Fetch-Site": "same-site"}).status_code == 403
    assert httpx.get(link, headers={"Sec-Fetch-Site": "none"}).status_code == 303  # still unused until then


def test_a_live_stream_ends_with_its_session(api: ApiServer, tmp_path: Path) -> None:
    (tmp_path / "ticks.py").write_text(
        "import time\nfor n in range(240):\n    print(n, flush=True)\n    time.sleep(0.5)\n"
    )
    run_id = submit(api, api.api_key, tmp_path / "home", tmp_path, "ticks.py")
    with logged_in(api, api.api_key, tmp_path / "home") as browser:
        token = csrf_of(browser.get(f"/ui/runs/{run_id}").text)
        with browser.stream("GET", f"/ui/runs/{run_id}/events", timeout=60) as stream:
            lines = stream.iter_lines()
            until_log = time.monotonic() + 90
            while "event: log" not in next(lines):
                assert time.monotonic() < until_log, "no log event came"
            assert browser.post("/ui/logout", data={"csrf": token}).status_code == 303
            ended_by = time.monotonic() + 30
            for line in lines:
                if line == "event: logged-out":
                    break
                assert time.monotonic() < ended_by, "the stream outlived its session"
            else:
                raise AssertionError("the stream closed without saying the session ended")
    with httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {api.api_key}"}) as c:
        c.post(f"/v1/executions/{run_id}/cancel")


def test_odd_parameters_are_said_never_a_server_error(api: ApiServer, tmp_path: Path) -> None:
    with logged_in(api, api.api_key, tmp_path / "home") as browser:
        for query in (
            "after=%00",
            "script=a%00b",
            "after=" + "x" * 300,
            "since=0001-01-01T00:00:00%2B14:00",
            "since=9999-12-31T23:59:59-14:00",
            "q=%C3%A9",
            "status=%00",
        ):
            answer = browser.get(f"/ui/?{query}")
            assert answer.status_code == 200 and 'class="problem"' in answer.text, (query, answer.text[-400:])
        assert browser.get("/ui/batches/b-zzzzzzzz?after=%00").status_code == 404
        unknown = browser.get("/ui/no/such/page")
        assert unknown.status_code == 404 and unknown.headers["content-type"].startswith("text/html")
