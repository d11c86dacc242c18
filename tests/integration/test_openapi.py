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
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
