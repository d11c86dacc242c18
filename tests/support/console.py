"""What the console's tests share: a login link from the real CLI, a
logged-in HTTP client, the API's database, and runs submitted as a user
does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from sqlalchemy import Engine, create_engine

from tests.support.services import ApiServer


def cli_env(api: ApiServer, key: str, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RGRID_")}
    env.update(RGRID_HOME=str(home), RGRID_API_URL=api.url, RGRID_API_KEY=key)
    return env


def login_link(api: ApiServer, key: str, home: Path) -> str:
    """The last line `rgrid console --no-open` prints, as a user runs it."""
    done = subprocess.run(
        [sys.executable, "-m", "rgrid", "console", "--no-open"],
        env=cli_env(api, key, home),
        text=True,
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


@contextmanager
def logged_in(api: ApiServer, key: str, home: Path) -> Iterator[httpx.Client]:
    """An HTTP client holding a console session for `key` (through a link)."""
    with httpx.Client(base_url=api.url, timeout=30) as browser:
        answer = browser.get(login_link(api, key, home))
        assert answer.status_code == 303, answer.text
        browser.cookies.set("rgrid_console", answer.cookies["rgrid_console"], path="/ui")
        yield browser


def csrf_of(html: str) -> str:
    marker = 'name="csrf" value="'
    start = html.index(marker) + len(marker)
    return html[start : html.index('"', start)]


@contextmanager
def database(api: ApiServer) -> Iterator[Engine]:
    engine = create_engine(api.env["RGRID_DATABASE_URL"].replace("postgresql://", "postgresql+psycopg://"))
    try:
        yield engine
    finally:
        engine.dispose()


def submit(api: ApiServer, key: str, home: Path, cwd: Path, *args: str) -> str:
    """`rgrid run -d --json ARGS` as a user runs it; the execution's id."""
    done = subprocess.run(
        [sys.executable, "-m", "rgrid", "run", "-d", "--json", *args],
        cwd=cwd,
        env=cli_env(api, key, home),
        text=True,
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return str(json.loads(done.stdout)["id"])
