"""`rgrid run` driven as a user drives it: a subprocess in a project folder,
against a real API (SQLite and PostgreSQL), real Ray and a real S3 server."""

from __future__ import annotations

import json
import os
import pty
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.support.s3proxy import S3Proxy

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    folder = tmp_path / "project"
    shutil.copytree(EXAMPLES, folder / "examples")
    return folder


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_hello_runs_and_brings_outputs_back(project: Path, rgrid_env: dict[str, str]) -> None:
    result = run_cli(["run", "examples/hello.py", "examples/data.csv"], project, rgrid_env)
    assert result.returncode == 0, result.stderr
    assert "read 6 rows from examples/data.csv" in result.stdout
    assert "mean temperature 8.88 °C over 3 cities" in result.stdout
    summary = json.loads((project / "summary.json").read_text())
    assert summary == {"rows": 6, "cities": ["Berlin", "Helsinki", "Lisbon"], "mean_temp_c": 8.88}
    assert "Traceback" not in result.stderr


def test_failing_script_exit_code_and_stderr(project: Path, rgrid_env: dict[str, str]) -> None:
    result = run_cli(["run", "examples/fail.py"], project, rgrid_env)
    assert result.returncode == 3
    assert "checking input..." in result.stdout
    assert "error: the input has no 'price' column" in result.stderr
    assert "exit code 3" in result.stderr


def test_outputs_in_subfolder_keep_their_paths(project: Path, rgrid_env: dict[str, str]) -> None:
    out = project / "out"
    result = run_cli(
        ["run", "--output-dir", str(out), "examples/report.py", "examples/data.csv"], project, rgrid_env
    )
    assert result.returncode == 0, result.stderr
    names = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert names == ["report/berlin.txt", "report/helsinki.txt", "report/index.txt", "report/lisbon.txt"]
    assert (out / "report/index.txt").read_text() == "Berlin\nHelsinki\nLisbon\n"
    assert not (project / "report").exists()


def test_stdout_and_stderr_are_separated_and_ordered(project: Path, rgrid_env: dict[str, str]) -> None:
    write(
        project,
        "both.py",
        "import sys\nfor i in range(50):\n    print(f'out {i}')\n    print(f'err {i}', file=sys.stderr)\n",
    )
    result = run_cli(["run", "both.py"], project, rgrid_env)
    assert result.returncode == 0
    assert result.stdout.splitlines() == [f"out {i}" for i in range(50)]
    assert [line for line in result.stderr.splitlines() if line.startswith("err")] == [
        f"err {i}" for i in range(50)
    ]


def test_flag_value_paths_are_shipped_and_missing_paths_pass_through(
    project: Path, rgrid_env: dict[str, str]
) -> None:
    write(
        project,
        "show.py",
        "import sys, os\n"
        "for a in sys.argv[1:]:\n"
        "    v = a.split('=', 1)[-1]\n"
        "    print(a, os.path.isfile(v))\n",
    )
    result = run_cli(
        ["run", "show.py", "--input=examples/data.csv", "nothere/missing.csv", "--n", "5"], project, rgrid_env
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "--input=examples/data.csv True",
        "nothere/missing.csv False",
        "--n False",
        "5 False",
    ]


def test_same_base_name_from_two_folders_never_collide(
    project: Path, rgrid_env: dict[str, str], tmp_path: Path
) -> None:
    write(project, "a/data.csv", "from a\n")
    write(project, "b/data.csv", "from b\n")
    outside = write(tmp_path / "elsewhere", "data.csv", "from outside\n")
    write(project, "cat.py", "import sys\nfor p in sys.argv[1:]:\n    print(open(p).read().strip())\n")
    result = run_cli(["run", "cat.py", "a/data.csv", "b/data.csv", str(outside)], project, rgrid_env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["from a", "from b", "from outside"]


def test_names_with_spaces_and_non_ascii(project: Path, rgrid_env: dict[str, str]) -> None:
    write(project, "dätä files/größe 1.csv", "zwölf\n")
    write(
        project,
        "copy it.py",
        "import sys, shutil\n"
        "shutil.copy(sys.argv[1], 'résumé out.txt')\nprint(open(sys.argv[1]).read().strip())\n",
    )
    result = run_cli(["run", "copy it.py", "dätä files/größe 1.csv"], project, rgrid_env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "zwölf"
    assert (project / "résumé out.txt").read_text() == "zwölf\n"


def test_directory_argument_ships_a_tree(project: Path, rgrid_env: dict[str, str]) -> None:
    write(project, "tree/one.txt", "1")
    write(project, "tree/sub/two.txt", "2")
    write(
        project,
        "walk.py",
        "import os, sys\n"
        "for root, _d, files in sorted(os.walk(sys.argv[1])):\n"
        "    for f in sorted(files):\n"
        "        p = os.path.join(root, f)\n"
        "        print(p, open(p).read())\n",
    )
    result = run_cli(["run", "walk.py", "tree"], project, rgrid_env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["tree/one.txt 1", "tree/sub/two.txt 2"]


def test_include_ships_files_the_script_opens_itself(project: Path, rgrid_env: dict[str, str]) -> None:
    write(project, "conf/settings.json", '{"factor": 7}')
    write(project, "use_conf.py", "import json\nprint(json.load(open('conf/settings.json'))['factor'] * 6)\n")
    result = run_cli(["run", "--include", "conf", "use_conf.py"], project, rgrid_env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "42"


def test_the_scripts_own_modules_are_shipped_beside_it(project: Path, rgrid_env: dict[str, str]) -> None:
    write(
        project,
        "app/main.py",
        "import helper\nfrom shapes import area\nprint(helper.greet(), area.square(3))\n",
    )
    write(project, "app/helper.py", "def greet():\n    return 'hello from helper'\n")
    write(project, "app/shapes/__init__.py", "")
    write(
        project,
        "app/shapes/area.py",
        "from .units import unit\ndef square(n):\n    return f'{n * n} {unit}'\n",
    )
    write(project, "app/shapes/units.py", "unit = 'm2'\n")
    dry = run_cli(["run", "--dry-run", "app/main.py"], project, rgrid_env)
    assert dry.returncode == 0, dry.stderr
    assert [line.split()[1] for line in dry.stdout.splitlines() if line.startswith("module")] == [
        "app/helper.py",
        "app/shapes/__init__.py",
        "app/shapes/area.py",
        "app/shapes/units.py",
    ]
    result = run_cli(["run", "app/main.py"], project, rgrid_env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "hello from helper 9 m2"
    alone = run_cli(["run", "--no-auto-include", "app/main.py"], project, rgrid_env)
    assert alone.returncode == 1
    assert "ModuleNotFoundError: No module named 'helper'" in alone.stderr


def test_outputs_keep_the_jobs_modes_and_a_terminal_hears_where_they_went(
    project: Path, rgrid_env: dict[str, str]
) -> None:
    write(
        project,
        "modes.py",
        "import os\n"
        "os.makedirs('report', exist_ok=True)\n"
        "open('report/run.sh', 'w').write('echo hi\\n'); os.chmod('report/run.sh', 0o755)\n"
        "open('report/private.txt', 'w').write('x'); os.chmod('report/private.txt', 0o600)\n"
        "open('report/plain.txt', 'w').write('y')\n",
    )
    primary, secondary = pty.openpty()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "rgrid", "run", "modes.py"],
            cwd=project,
            env={**rgrid_env, "COLUMNS": "120"},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=secondary,
            timeout=120,
            preexec_fn=lambda: os.umask(0o022),
        )
        os.close(secondary)
        said = b""
        while True:
            try:
                chunk = os.read(primary, 4096)
            except OSError:  # the terminal's other end is closed: all read
                break
            if not chunk:
                break
            said += chunk
    finally:
        os.close(primary)
    assert done.returncode == 0, said
    assert "3 files → ./report/" in said.decode()
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (project / "report").iterdir()}
    assert modes == {"run.sh": 0o755, "private.txt": 0o600, "plain.txt": 0o644}


def test_env_values_reach_the_script_and_secrets_do_not(project: Path, rgrid_env: dict[str, str]) -> None:
    write(
        project,
        "env.py",
        "import os\n"
        "print(os.environ.get('GREETING'), os.environ.get('RGRID_EXECUTION_ID') is not None)\n"
        "print(sorted(k for k in os.environ if 'SECRET' in k or k.startswith(('RGRID_S3', 'RGRID_RUNNER', 'RGRID_DATABASE', 'AWS'))))\n",
    )
    result = run_cli(["run", "--env", "GREETING=hej", "env.py"], project, rgrid_env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["hej True", "[]"]


def test_timeout_is_124_and_kills_the_script(project: Path, rgrid_env: dict[str, str]) -> None:
    write(project, "slow.py", "import time\nprint('started', flush=True)\ntime.sleep(60)\n")
    result = run_cli(["run", "--timeout", "2s", "slow.py"], project, rgrid_env)
    assert result.returncode == 124
    assert "started" in result.stdout
    assert "timeout" in result.stderr


def test_dry_run_shows_classification_and_runs_nothing(project: Path, rgrid_env: dict[str, str]) -> None:
    result = run_cli(
        ["run", "--dry-run", "--json", "examples/hello.py", "examples/data.csv", "--n", "5"],
        project,
        rgrid_env,
    )
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["args"] == ["examples/data.csv", "--n", "5"]
    assert sorted(f["remote"] for f in plan["files"]) == ["examples/data.csv", "examples/hello.py"]
    assert not (project / "summary.json").exists()


def test_second_run_uploads_nothing_unchanged(
    project: Path, rgrid_env: dict[str, str], s3_proxy: S3Proxy
) -> None:
    """Client uploads pass the storage proxy (workers use storage directly),
    so its PUT count is exactly what the CLI uploaded."""
    write(project, "unique.csv", f"city,date,temp_c\nOslo,2026-11-01,{os.getpid()}.{time.time_ns()}\n")
    args = ["run", "examples/hello.py", "unique.csv"]
    before = s3_proxy.puts
    assert run_cli(args, project, rgrid_env).returncode == 0
    assert s3_proxy.puts - before >= 1  # the new CSV, and hello.py unless an earlier test sent it
    before = s3_proxy.puts
    second = run_cli(args, project, rgrid_env)
    assert second.returncode == 0 and "read 1 rows" in second.stdout
    assert s3_proxy.puts == before
    write(project, "unique.csv", "city,date,temp_c\nOslo,2026-11-02,3.0\n")
    assert run_cli(args, project, rgrid_env).returncode == 0
    assert s3_proxy.puts - before == 1


def test_storage_failing_during_upload_is_a_clear_75(
    project: Path, rgrid_env: dict[str, str], s3_proxy: S3Proxy
) -> None:
    write(project, "fresh.csv", f"city,date,temp_c\nRome,2026-11-01,{time.time_ns()}\n")
    s3_proxy.fail_puts = 1000
    try:
        result = run_cli(["run", "examples/hello.py", "fresh.csv"], project, rgrid_env)
    finally:
        s3_proxy.fail_puts = 0
    assert result.returncode == 75
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "storage refused the upload of fresh.csv" in lines[0]
    listed = run_cli(["list", "--json"], project, rgrid_env).stdout
    assert "fresh.csv" not in listed
    retried = run_cli(["run", "examples/hello.py", "fresh.csv"], project, rgrid_env)
    assert retried.returncode == 0, retried.stderr
