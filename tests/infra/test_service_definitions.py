"""Production supervises itself the way the local grid does: the systemd
units and docker-compose.yml restart every piece, stop nodes by draining
them, and run the node agent (not a bare `ray start`) on every node."""

from __future__ import annotations

import configparser
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
UNITS = sorted((ROOT / "infra" / "rgrid_infra" / "systemd").glob("*.service"))
# Keys systemd < 254 does not know yet; it ignores them (the unit then
# restarts every RestartSec instead of backing off).
NEWER_KEYS = ("RestartSteps", "RestartMaxDelaySec")


class UnitFile(configparser.ConfigParser):
    """systemd keys are case-sensitive; ConfigParser lowercases by default."""

    def optionxform(self, optionstr: str) -> str:
        return optionstr


def unit(path: Path) -> configparser.ConfigParser:
    parser = UnitFile(strict=False, interpolation=None)
    parser.read(path)
    return parser


def test_there_is_a_unit_for_the_server_the_head_and_workers() -> None:
    assert [p.name for p in UNITS] == ["rgrid-head.service", "rgrid-server.service", "rgrid-worker.service"]


@pytest.mark.parametrize("path", UNITS, ids=lambda p: p.name)
def test_units_restart_always_and_stop_the_main_process_first(path: Path) -> None:
    u = unit(path)
    assert u["Service"]["Restart"] == "always"
    assert u["Unit"]["StartLimitIntervalSec"] == "0"
    # SIGTERM to the main process only (the agent drains, the server closes
    # its driver), SIGKILL to whatever is left after TimeoutStopSec.
    assert u["Service"]["KillMode"] == "mixed"
    assert u["Service"]["ExecStart"].startswith("/opt/rgrid/.venv/bin/rgrid ")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
@pytest.mark.parametrize("path", UNITS, ids=lambda p: p.name)
def test_units_pass_systemd_analyze_verify(path: Path, tmp_path: Path) -> None:
    rgrid = Path(sys.executable).parent / "rgrid"
    copy = tmp_path / path.name
    copy.write_text(path.read_text().replace("/opt/rgrid/.venv/bin/rgrid", str(rgrid)))
    result = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True, text=True)
    complaints = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if line.strip() and not any(f"Unknown key '{key}'" in line for key in NEWER_KEYS)
    ]
    assert result.returncode == 0 and complaints == [], complaints


def test_compose_restarts_everything_and_runs_the_agent_on_every_node() -> None:
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    lasting = {name: s for name, s in services.items() if not name.endswith("-setup")}
    assert all(s["restart"] in ("always", "unless-stopped") for s in lasting.values())
    for node in ("ray-head", "worker"):
        assert services[node]["command"].split()[:2] == ["rgrid", "worker"]
        assert services[node]["init"] is True  # signals reach the agent; orphans are reaped
    assert "ray-head" not in services["api"].get("depends_on", {})  # the API outlives Ray
    assert "--address" not in services["worker"]["command"]  # the API says where the head is
    assert services["worker"]["stop_grace_period"]  # drain before the container goes


def test_presigned_urls_are_signed_by_a_minio_identity_limited_to_the_bucket(tmp_path: Path) -> None:
    """Compose runs the setup once before the API starts and hands the API
    the limited identity; the script, run against a recording `mc`, makes
    the bucket, a policy on that bucket alone, and the user."""
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    assert services["api"]["depends_on"]["minio-setup"] == {"condition": "service_completed_successfully"}
    assert services["api"]["environment"]["RGRID_S3_PRESIGN_ACCESS_KEY"] == "rgrid-presign"
    calls = tmp_path / "calls"
    mc = tmp_path / "mc"
    mc.write_text(
        f'#!/bin/sh\necho "$@" >> {calls}\nfor a; do case "$a" in *.json|/tmp/*) cat "$a" >> {calls};; esac; done\n'
    )
    mc.chmod(0o755)
    env = {
        "PATH": f"{tmp_path}:/usr/bin:/bin",
        "MINIO_URL": "http://minio:9000",
        "MINIO_ROOT_USER": "root",
        "MINIO_ROOT_PASSWORD": "rootpw",
        "RGRID_S3_BUCKET": "rgrid",
        "RGRID_S3_PRESIGN_ACCESS_KEY": "rgrid-presign",
        "RGRID_S3_PRESIGN_SECRET_KEY": "signer-secret",
    }
    script = ROOT / "infra" / "rgrid_infra" / "minio" / "presign-identity.sh"
    result = subprocess.run(["sh", str(script)], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    log = calls.read_text()
    assert "mb --ignore-existing rgrid/rgrid" in log
    assert "admin user add rgrid rgrid-presign signer-secret" in log
    assert "admin policy attach rgrid rgrid-presign --user rgrid-presign" in log
    policy = json.loads(log[log.index("{") : log.rindex("}") + 1])
    resources = {r for statement in policy["Statement"] for r in statement["Resource"]}
    assert resources == {"arn:aws:s3:::rgrid/*"}
    actions = {a for statement in policy["Statement"] for a in statement["Action"]}
    assert actions == {"s3:GetObject", "s3:PutObject"}
