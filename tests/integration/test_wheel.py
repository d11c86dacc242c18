"""An installed wheel, not only this checkout, migrates its database (the
migrations ship inside rgrid_api) and renders cloud-init (the systemd units
ship inside rgrid_infra)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect

ROOT = Path(__file__).resolve().parents[2]


def test_wheel_runs_db_upgrade_from_a_fresh_venv(tmp_path: Path) -> None:
    uv = shutil.which("uv")
    if uv is None:
        pytest.fail("uv is needed to build the wheel (the README's tool)")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RGRID_", "VIRTUAL_ENV", "UV_"))}
    dist, venv, work = tmp_path / "dist", tmp_path / "venv", tmp_path / "elsewhere"
    work.mkdir()
    subprocess.run(
        [uv, "build", "--wheel", "-q", "-o", str(dist)], cwd=ROOT, env=env, check=True, timeout=300
    )
    (wheel,) = dist.glob("rgrid-*.whl")
    subprocess.run([uv, "venv", "-q", "-p", "3.11", str(venv)], cwd=work, env=env, check=True, timeout=120)
    subprocess.run(
        [uv, "pip", "install", "-q", "--python", str(venv / "bin" / "python"), str(wheel)],
        cwd=work,
        env=env,
        check=True,
        timeout=600,
    )
    url = f"sqlite:///{work / 'rgrid.db'}"
    result = subprocess.run(
        [str(venv / "bin" / "rgrid"), "db", "upgrade"],
        cwd=work,
        env={**env, "RGRID_DATABASE_URL": url},
        text=True,
        capture_output=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "up to date" in result.stdout
    engine = create_engine(url)
    try:
        assert {"executions", "attempts", "workers", "instances"} <= set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    control = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "rgrid_infra.cloudinit", "control"],
        cwd=work,
        env=env,
        text=True,
        capture_output=True,
        timeout=60,
    )
    assert control.returncode == 0, control.stderr
    assert "ExecStart=/opt/rgrid/.venv/bin/rgrid server" in control.stdout
    # The web console's templates and assets ship in the wheel (no CDN, no build step).
    console = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "from rgrid_api.console import STATIC; from rgrid_api.console.render import TEMPLATES;"
            "[TEMPLATES.get_template(t) for t in ('runs.html', 'run.html', 'batch.html', 'cost.html', 'grid.html')];"
            "print(sorted(p.name for p in STATIC.iterdir()))",
        ],
        cwd=work,
        env=env,
        text=True,
        capture_output=True,
        timeout=60,
    )
    assert console.returncode == 0, console.stderr
    assert console.stdout.strip() == "['console.css', 'console.js']"
