"""The API's schema tells the truth: schemathesis sends a live API what its
schema allows, and what it does not, and checks every answer against the
schema (status codes, bodies, headers, auth). Any mismatch fails."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.services import ApiServer

pytestmark = pytest.mark.slow


def test_the_api_answers_as_its_schema_says(api: ApiServer, tmp_path: Path) -> None:
    key = api.create_key(f"schema-{os.urandom(3).hex()}")
    schemathesis = Path(sys.executable).parent / "schemathesis"
    result = subprocess.run(
        [
            str(schemathesis),
            f"--config-file={Path(__file__).with_name('schemathesis.toml')}",
            "run",
            f"{api.url}/v1/openapi.json",
            f"--url={api.url}",
            f"--header=Authorization: Bearer {key}",
            "--checks=all",
            "--max-examples=20",
            "--seed=7",
            "--request-timeout=30",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "NO_COLOR": "1"},
    )
    assert result.returncode == 0, _failures(result.stdout) + result.stderr[-2000:]


def _failures(report: str) -> str:
    """The failing operations, the checks they failed and what the API
    answered, each line cut short (generated bodies run to kilobytes)."""
    wanted = ("___", "- ", "[", "`", "Failures", "❌")
    return "\n".join(line[:300] for line in report.splitlines() if line.strip().startswith(wanted))
