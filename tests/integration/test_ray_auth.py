"""Ray requires the grid's token: without it (or with a wrong one) a driver,
a GCS client and the dashboard's job API are all refused. The token works,
which shows the refusals are the token's doing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx

from tests.support.services import RayHead

DRIVER = """
import sys, ray
try:
    ray.init(address=sys.argv[1], log_to_driver=False, logging_level="ERROR")
    print("CONNECTED", ray.cluster_resources().get("CPU", 0))
except Exception as exc:
    print("REFUSED", type(exc).__name__)
"""

GCS = """
import sys
from rgrid_runner.ray_compat import gcs_client
try:
    print("CONNECTED", len(gcs_client(sys.argv[1]).get_all_node_info(timeout=10)))
except Exception as exc:
    print("REFUSED", type(exc).__name__, str(exc)[:200])
"""


def python(code: str, address: str, env: dict[str, str], tmp_path: Path) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code, address],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return result.stdout.strip().splitlines()[-1]


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "RGRID_"))}
    env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    env["HOME"] = "/nonexistent"  # no ~/.ray/auth_token to fall back on
    return env


def test_without_the_token_everything_is_refused(ray_head: RayHead, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong-token"
    wrong.write_text("0" * 64)
    for env in (base_env(), {**base_env(), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(wrong)}):
        assert python(DRIVER, ray_head.address, env, tmp_path).startswith("REFUSED")
        assert python(GCS, ray_head.address, env, tmp_path).startswith("REFUSED")
    submit = httpx.post(f"{ray_head.dashboard}/api/jobs/", json={"entrypoint": "id"}, timeout=10)
    assert submit.status_code in (401, 403)
    forged = httpx.post(
        f"{ray_head.dashboard}/api/jobs/",
        json={"entrypoint": "id"},
        headers={"Authorization": "Bearer " + "0" * 64},
        timeout=10,
    )
    assert forged.status_code in (401, 403)


def test_with_the_token_ray_answers(ray_head: RayHead, tmp_path: Path) -> None:
    env = {**base_env(), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(ray_head.token_path)}
    assert python(GCS, ray_head.address, env, tmp_path).startswith("CONNECTED")
    token = ray_head.token_path.read_text().strip()
    version = httpx.get(
        f"{ray_head.dashboard}/api/version", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    assert version.status_code == 200
    assert oct(ray_head.token_path.stat().st_mode & 0o777) == "0o600"
