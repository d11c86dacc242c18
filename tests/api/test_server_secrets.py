"""No default secrets in production: `rgrid server` bound to anything but
loopback refuses the built-in runner secret and worker token."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr

from rgrid_api.settings import Settings


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_loopback_may_use_the_defaults(host: str) -> None:
    assert Settings().default_secrets_in_use(host) == []


def test_any_other_bind_names_each_default_left() -> None:
    assert Settings().default_secrets_in_use("0.0.0.0") == [
        "RGRID_RUNNER_SECRET",
        "RGRID_WORKER_TOKEN",
        "RGRID_HEAD_TOKEN",
    ]
    only_token = Settings(runner_secret=SecretStr("a-long-random-value"), head_token=SecretStr("c"))
    assert only_token.default_secrets_in_use("10.0.0.2") == ["RGRID_WORKER_TOKEN"]
    every = Settings(runner_secret=SecretStr("a"), worker_token=SecretStr("b"), head_token=SecretStr("c"))
    assert every.default_secrets_in_use("10.0.0.2") == []
    # An empty token would match an empty bearer ("Bearer \u00a0" strips to "").
    empty = Settings(runner_secret=SecretStr("a"), worker_token=SecretStr(" "), head_token=SecretStr("c"))
    assert empty.default_secrets_in_use("10.0.0.2") == ["RGRID_WORKER_TOKEN"]


def test_server_refuses_to_start_with_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RGRID_")}
    env.update(RGRID_DATABASE_URL=f"sqlite:///{tmp_path / 'db'}", RGRID_RUNNER_SECRET="s3cr3t-value")
    result = subprocess.run(
        [sys.executable, "-m", "rgrid", "server", "--host", "0.0.0.0"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "RGRID_WORKER_TOKEN" in lines[0] and "RGRID_RUNNER_SECRET" not in lines[0]
    assert not (tmp_path / "db").exists()
