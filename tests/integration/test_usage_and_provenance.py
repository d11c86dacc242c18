"""What a run used, what exactly it ran, and what the grid says of itself:
through the real CLI, API, Ray, sandbox and cgroups, on both databases."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import run_cli
from tests.support.services import ApiServer

MIB = 2**20

HOLD = """\
import time
block = bytearray(300 * 2**20)
for i in range(0, len(block), 4096):
    block[i] = 1
started = time.process_time()
while time.process_time() - started < 1.0:
    pass
print("held")
"""


def _status(execution_id: str, cwd: Path, env: dict[str, str]) -> dict[str, Any]:
    shown = run_cli(["status", execution_id, "--json"], cwd, env)
    assert shown.returncode == 0, shown.stderr
    return json.loads(shown.stdout)


def _last_id(cwd: Path, env: dict[str, str]) -> str:
    listed = run_cli(["list", "--json", "--limit", "1"], cwd, env)
    return json.loads(listed.stdout)["executions"][0]["id"]


def test_a_run_reports_what_it_used_and_status_says_it_as_seff_does(
    tmp_path: Path, rgrid_env: dict[str, str]
) -> None:
    """300 MiB held and one CPU-second burnt, measured by the kernel."""
    (tmp_path / "hold.py").write_text(HOLD)
    ran = run_cli(["run", "--memory", "2G", "hold.py"], tmp_path, rgrid_env)
    assert ran.returncode == 0 and ran.stdout == "held\n", ran.stderr
    execution_id = _last_id(tmp_path, rgrid_env)
    usage = _status(execution_id, tmp_path, rgrid_env)["attempts"][-1]["usage"]
    assert 0.85 * 300 * MIB <= usage["peak_memory_bytes"] <= 1.15 * 300 * MIB, usage
    assert 0.7 <= usage["cpu_seconds"] <= 1.3, usage
    assert usage["wall_seconds"] >= usage["cpu_seconds"] * 0.9 and usage["output_bytes"] == 0
    human = run_cli(["status", execution_id], tmp_path, rgrid_env).stdout
    assert "of 1 CPU (" in human and "of 2 GiB" in human, human
    # 15 % of 2 GiB used: the hint names a limit that holds the peak.
    assert "it would fit in --memory 512M" in human, human


def test_an_out_of_memory_kill_names_the_peak_and_a_larger_limit(
    tmp_path: Path, rgrid_env: dict[str, str]
) -> None:
    (tmp_path / "hold.py").write_text(HOLD)
    killed = run_cli(["run", "--memory", "128M", "hold.py"], tmp_path, rgrid_env)
    assert killed.returncode == 137, killed.stderr
    assert "killed for exceeding its memory limit (128 MiB, peak 128 MiB); try --memory 256M" in killed.stderr
    human = run_cli(["status", _last_id(tmp_path, rgrid_env)], tmp_path, rgrid_env).stdout
    assert "it ran out of its 128 MiB at a peak of 128 MiB: try --memory 256M" in human, human


def test_a_batchs_totals_are_the_sum_of_its_runs(tmp_path: Path, rgrid_env: dict[str, str]) -> None:
    (tmp_path / "data").mkdir()
    for n in (1, 2, 3):
        (tmp_path / "data" / f"{n}.txt").write_text(str(n * 40))
    (tmp_path / "grow.py").write_text(
        "import sys\nsize = int(open(sys.argv[1]).read())\nblock = bytearray(size * 2**20)\n"
        "for i in range(0, len(block), 4096):\n    block[i] = 1\nprint(size)\n"
    )
    ran = run_cli(["run", "--batch", "data/*.txt", "grow.py", "{}"], tmp_path, rgrid_env)
    assert ran.returncode == 0, ran.stderr
    batch_id = ran.stderr.split("batch ")[1].split(":")[0]
    batch = _status(batch_id, tmp_path, rgrid_env)
    runs = [_status(e["id"], tmp_path, rgrid_env)["attempts"][-1]["usage"] for e in batch["executions"]]
    peaks = sorted(u["peak_memory_bytes"] for u in runs)
    assert batch["usage"]["attempts"] == 3
    assert abs(batch["usage"]["cpu_seconds"] - sum(u["cpu_seconds"] for u in runs)) < 0.01
    assert batch["usage"]["median_peak_memory_bytes"] == peaks[1]
    assert batch["usage"]["max_peak_memory_bytes"] == peaks[2] > peaks[0] + 60 * MIB
    assert "CPU-hours over 3 attempts" in run_cli(["status", batch_id], tmp_path, rgrid_env).stdout


def test_provenance_names_every_byte_and_retry_exact_installs_the_same_packages(
    tmp_path: Path, rgrid_env: dict[str, str]
) -> None:
    """The hashes are the local files'; the lock names the installed
    version; `retry --exact` installs it again after the requirements file
    became a range that now resolves to a newer one."""
    marker = f"# {time.time_ns()}\n"  # a fresh environment for this test
    (tmp_path / "requirements.txt").write_text(marker + "tomli-w<1.1\n")
    (tmp_path / "table.csv").write_text("a,b\n1,2\n")
    (tmp_path / "which.py").write_text(
        "import sys\nfrom importlib.metadata import version\nprint(version('tomli-w'), open(sys.argv[1]).read().count(','))\n"
    )
    first = run_cli(["run", "which.py", "table.csv", "--flag"], tmp_path, rgrid_env, timeout=300)
    assert first.returncode == 0 and first.stdout == "1.0.0 2\n", first.stderr
    first_id = _last_id(tmp_path, rgrid_env)
    shown = _status(first_id, tmp_path, rgrid_env)["provenance"]
    digest = hashlib.sha256((tmp_path / "which.py").read_bytes()).hexdigest()
    assert shown["script"] == {
        "path": "which.py",
        "size": (tmp_path / "which.py").stat().st_size,
        "sha256": digest,
    }
    assert shown["inputs"] == [
        {
            "path": "table.csv",
            "size": 8,
            "sha256": hashlib.sha256(b"a,b\n1,2\n").hexdigest(),
        }
    ]
    assert shown["args"] == ["table.csv", "--flag"]
    assert shown["packages"] == ["tomli-w==1.0.0"]
    assert shown["interpreter"].startswith("CPython 3.11.")
    assert shown["attempts"][0]["worker"] and len(shown["attempts"][0]["ray_node_id"]) == 56
    assert shown["attempts"][0]["rgrid_version"]

    (tmp_path / "requirements.txt").write_text(marker + "tomli-w>=1.0\n")
    newer = run_cli(["run", "which.py", "table.csv"], tmp_path, rgrid_env, timeout=300)
    assert newer.returncode == 0 and not newer.stdout.startswith("1.0.0 "), newer.stdout + newer.stderr

    again = run_cli(["retry", first_id, "--exact", "--json"], tmp_path, rgrid_env)
    assert again.returncode == 0, again.stderr
    again_id = json.loads(again.stdout)["id"]
    waited = run_cli(["wait", again_id], tmp_path, rgrid_env, timeout=300)
    assert waited.stdout.startswith("1.0.0 "), waited.stdout + waited.stderr
    assert _status(again_id, tmp_path, rgrid_env)["provenance"]["packages"] == ["tomli-w==1.0.0"]


def _scrape(api: ApiServer) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    answer = httpx.get(f"{api.url}/metrics", headers={"Authorization": f"Bearer {api.api_key}"}, timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def test_metrics_parse_move_by_exactly_the_runs_made_and_are_for_admins(
    api: ApiServer, tmp_path: Path, rgrid_env: dict[str, str]
) -> None:
    (tmp_path / "ok.py").write_text("print('ok')\n")
    (tmp_path / "bad.py").write_text("raise SystemExit(3)\n")
    before = _scrape(api)
    assert run_cli(["run", "ok.py"], tmp_path, rgrid_env).returncode == 0
    assert run_cli(["run", "ok.py"], tmp_path, rgrid_env).returncode == 0
    assert run_cli(["run", "bad.py"], tmp_path, rgrid_env).returncode == 3
    after = _scrape(api)

    def moved(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert moved("rgrid_executions_finished_total", status="succeeded", reason="none") == 2
    assert moved("rgrid_executions_finished_total", status="failed", reason="exit_code") == 1
    assert moved("rgrid_execution_queue_wait_seconds_count") == 3
    assert moved("rgrid_execution_duration_seconds_count") == 3
    assert moved("rgrid_api_request_duration_seconds_count", route="/v1/executions", method="POST") == 3
    assert moved("rgrid_attempts_lost_total") == 0
    assert after[("rgrid_executions", (("state", "queued"),))] == 0
    # The test grid's node registered with the API on SQLite (other tests
    # may have registered more, on either).
    if "sqlite" in api.env["RGRID_DATABASE_URL"]:
        assert after[("rgrid_workers", (("status", "active"),))] >= 1
    assert after[("rgrid_cost_eur_total", ())] == 0  # no autoscaled server
    # No label carries an id: a route is its template.
    made = _last_id(tmp_path, rgrid_env)
    assert not any(made in value for _name, labels in after for _label, value in labels)
    user = httpx.get(f"{api.url}/metrics", headers={"Authorization": f"Bearer {api.create_key('mallory')}"})
    assert user.status_code == 403
    assert httpx.get(f"{api.url}/metrics").status_code == 401
