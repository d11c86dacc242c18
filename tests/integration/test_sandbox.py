"""The runner's sandbox, limits, runtimes and dependency environments, end
to end through `rgrid run` with real bubblewrap and real cgroups. One
database backend is enough here: nothing below touches the database."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import rgrid_runner
from tests.conftest import run_cli
from tests.integration.test_cli_contract import processes_with
from tests.support.attacks import RECORDER_C
from tests.support.services import RayHead
from tests.support.testhosts import NetHost

pytestmark = pytest.mark.parametrize("api", ["sqlite"], indirect=True)


def script(folder: Path, name: str, text: str) -> str:
    (folder / name).write_text(text)
    return name


def test_job_environment_holds_no_secret(tmp_path: Path, rgrid_env: dict[str, str]) -> None:
    name = script(tmp_path, "env.py", "import json, os\nprint(json.dumps(sorted(os.environ)))\n")
    result = run_cli(["run", "--env", "MY_SETTING=1", name], tmp_path, rgrid_env)
    assert result.returncode == 0, result.stderr
    keys = set(json.loads(result.stdout))
    assert keys <= {
        "PATH",
        "LANG",
        "HOME",
        "TMPDIR",
        "PYTHONUNBUFFERED",
        "RGRID_EXECUTION_ID",
        "MY_SETTING",
        "PWD",
        "LC_CTYPE",
    }, keys


def test_preload_of_an_input_runs_only_as_the_job(tmp_path: Path, rgrid_env: dict[str, str]) -> None:
    """The attack as a tenant makes it: `--env LD_PRELOAD=` its own input.
    Every process that loads the library has the job's uid and no
    effective capability (it once ran in setpriv as root)."""
    gcc = shutil.which("gcc") or shutil.which("cc")
    assert gcc, "a C compiler is needed to build the attack library"
    (tmp_path / "recorder.c").write_text(RECORDER_C)
    subprocess.run(
        [gcc, "-shared", "-fPIC", "-o", str(tmp_path / "lib.so"), str(tmp_path / "recorder.c")], check=True
    )
    name = script(
        tmp_path,
        "probe.py",
        "import subprocess, sys\nsubprocess.run(['/bin/true'])\nprint(open('/job/record').read(), end='')\n",
    )
    result = run_cli(
        ["run", "--env", "LD_PRELOAD=/job/lib.so", "--env", "PATH=/job:/usr/bin:/bin", name, "lib.so"],
        tmp_path,
        rgrid_env,
    )
    assert result.returncode == 0, result.stderr
    lines = [line.split() for line in result.stdout.splitlines()]
    assert {n for n, _uid, _cap in lines} >= {"true"} and any(n.startswith("python") for n, _u, _c in lines)
    for process, uid, cap in lines:
        assert uid != "0" and cap == "0000000000000000", (process, uid, cap)


def test_host_files_are_invisible(
    tmp_path: Path, rgrid_env: dict[str, str], ray_head: RayHead, services_root: Path
) -> None:
    """The runner's code, the grid's state (RGRID_HOME-like dirs, the API's
    database), the work root holding other jobs' dirs and /root are absent."""
    secrets = [
        "/root",
        rgrid_runner.__file__,
        str(Path(rgrid_runner.__file__).parents[2] / "pyproject.toml"),
        str(services_root),
        str(services_root / "ray" / "work"),
        str(Path.home() / ".rgrid"),
        "/etc/shadow",
        "/proc/1/environ",
    ]
    code = (
        "import json, os, sys\nseen = {}\n"
        "for p in json.loads(sys.argv[1]):\n"
        "    try:\n"
        "        seen[p] = os.listdir(p) if os.path.isdir(p) else open(p).read()[:50]\n"
        "    except OSError as exc:\n"
        "        seen[p] = type(exc).__name__\n"
        "print(json.dumps(seen))\n"
    )
    name = script(tmp_path, "peek.py", code)
    result = run_cli(["run", name, json.dumps(secrets)], tmp_path, rgrid_env)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    for path in secrets[1:-1]:
        assert seen[path] in ("FileNotFoundError", "PermissionError"), (path, seen[path])
    # Only the empty path down to the job's interpreter exists under /root.
    assert seen["/root"] in (["pyenv"], [".pyenv"], "FileNotFoundError"), seen["/root"]
    assert "RGRID" not in str(seen["/proc/1/environ"])


def test_only_the_work_dir_and_tmp_are_writable(tmp_path: Path, rgrid_env: dict[str, str]) -> None:
    marker = f"rgrid-escape-{time.time_ns()}"
    code = (
        "import json, sys\nresult = {}\n"
        "for d in ['/usr', '/etc', '/root', '/tmp', '.', '/var/tmp', '/home']:\n"
        "    try:\n"
        "        open(f'{d}/" + marker + "', 'w').write('x')\n"
        "        result[d] = 'written'\n"
        "    except OSError as exc:\n"
        "        result[d] = type(exc).__name__\n"
        "print(json.dumps(result))\n"
    )
    name = script(tmp_path, "write.py", code)
    result = run_cli(["run", "--output-dir", "out", name], tmp_path, rgrid_env)
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout)
    assert outcome["."] == "written" and outcome["/tmp"] == "written"
    assert all(v != "written" for d, v in outcome.items() if d not in (".", "/tmp")), outcome
    assert not Path(f"/tmp/{marker}").exists()  # the job's /tmp is its own
    assert (tmp_path / "out" / marker).exists()  # the work dir file came back as an output


def test_memory_hog_is_out_of_memory(tmp_path: Path, rgrid_env: dict[str, str]) -> None:
    name = script(
        tmp_path, "hog.py", "blocks = []\nwhile True:\n    blocks.append(bytearray(16 * 1024 * 1024))\n"
    )
    result = run_cli(["run", "--memory", "128M", name], tmp_path, rgrid_env)
    assert result.returncode == 137
    assert "out_of_memory" in result.stderr


def test_timeout_leaves_no_process_behind(tmp_path: Path, rgrid_env: dict[str, str]) -> None:
    marker = f"grandchild-{time.time_ns()}"
    code = (
        "import os, subprocess, sys, time\n"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)', sys.argv[1]],\n"
        "                 start_new_session=True)\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    os.execv(sys.executable, [sys.executable, '-c', 'import time; time.sleep(600)', sys.argv[1]])\n"
        "print('spawned', flush=True)\ntime.sleep(600)\n"
    )
    name = script(tmp_path, "daemons.py", code)
    result = run_cli(["run", "--timeout", "3s", name, marker], tmp_path, rgrid_env)
    assert result.returncode == 124
    assert "spawned" in result.stdout
    assert processes_with(marker) == []


def test_fork_storm_hits_the_process_cap(tmp_path: Path, rgrid_env: dict[str, str]) -> None:
    code = (
        "import os, sys, time\nn = 0\n"
        "try:\n"
        "    while True:\n"
        "        if os.fork() == 0:\n"
        "            time.sleep(60)\n"
        "            os._exit(0)\n"
        "        n += 1\n"
        "except OSError as exc:\n"
        "    print('forked', n, type(exc).__name__)\n"
        "    sys.exit(5)\n"
    )
    name = script(tmp_path, "storm.py", code)
    result = run_cli(["run", "--timeout", "60s", name], tmp_path, rgrid_env)
    assert result.returncode == 5
    assert "forked" in result.stdout and int(result.stdout.split()[1]) < 128
    assert "process limit" in result.stderr


def test_symlink_to_a_host_file_is_not_an_output(tmp_path: Path, rgrid_env: dict[str, str]) -> None:
    code = (
        "import os\nos.symlink('/etc/hostname', 'leak')\nos.symlink('/usr', 'leakdir')\n"
        "open('real.txt', 'w').write('real')\n"
    )
    name = script(tmp_path, "links.py", code)
    result = run_cli(["run", "--output-dir", "out", name], tmp_path, rgrid_env)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["real.txt"]


def test_huge_output_is_capped_with_a_reason(tmp_path: Path, rgrid_env: dict[str, str]) -> None:
    name = script(tmp_path, "big.py", "open('big.bin', 'wb').write(b'x' * 16 * 1024 * 1024)\n")
    result = run_cli(["run", "--output-dir", "out", name], tmp_path, rgrid_env)
    assert result.returncode == 75
    assert "output_too_large" in result.stderr and "outputs exceed" in result.stderr
    assert not (tmp_path / "out" / "big.bin").exists()


def test_flood_of_log_is_capped(tmp_path: Path, rgrid_env: dict[str, str]) -> None:
    name = script(
        tmp_path, "flood.py", "import sys, time\nwhile True:\n    sys.stdout.write('y' * 65536 + '\\n')\n"
    )
    result = run_cli(["run", "--timeout", "120s", name], tmp_path, rgrid_env)
    assert result.returncode == 75
    assert "log exceeded" in result.stderr
    assert len(result.stdout) <= 1024 * 1024


def test_work_dir_cannot_fill_the_disk(tmp_path: Path, rgrid_env: dict[str, str]) -> None:
    """A disk fill and a million empty files each end at the job's own file
    system's limit, with the reason; the node runs another job meanwhile."""
    fill = script(
        tmp_path,
        "fill.py",
        "with open('fill.bin', 'wb') as fh:\n    while True:\n        fh.write(b'z' * 1024 * 1024)\n",
    )
    files = script(tmp_path, "files.py", "for i in range(1_000_000):\n    open(f'f{i}', 'w').close()\n")
    ok = script(tmp_path, "ok.py", "print('still running jobs')\n")
    started = [
        subprocess.Popen(
            [sys.executable, "-m", "rgrid", "run", "--timeout", "120s", "--memory", "256M", name],
            cwd=tmp_path,
            env=rgrid_env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for name in (fill, files)
    ]
    meanwhile = run_cli(["run", ok], tmp_path, rgrid_env)
    assert meanwhile.returncode == 0 and meanwhile.stdout == "still running jobs\n", meanwhile.stderr
    (_, fill_err), (_, files_err) = (p.communicate(timeout=180) for p in started)
    assert [p.returncode for p in started] == [75, 75]
    assert "output_too_large" in fill_err and f"limit of {64 * 1024 * 1024} bytes" in fill_err, fill_err
    assert "output_too_large" in files_err and "limit of 5000 files" in files_err, files_err


def test_network_none(tmp_path: Path, rgrid_env: dict[str, str], net_hosts: dict[str, NetHost]) -> None:
    """By default a job reaches public addresses (here: a test host in a
    documentation range); with --network none it has no network at all."""
    public = net_hosts["public"]
    code = (
        "import urllib.request\ntry:\n"
        f"    print(urllib.request.urlopen({public.url!r}, timeout=5).read().decode())\n"
        "except OSError as exc:\n    print(type(exc).__name__)\n"
    )
    name = script(tmp_path, "net.py", code)
    with_network = run_cli(["run", name], tmp_path, rgrid_env)
    assert with_network.stdout == f"{public.body}\n", with_network.stderr
    without = run_cli(["run", "--network", "none", name], tmp_path, rgrid_env)
    assert without.returncode == 0
    assert without.stdout == "URLError\n"


def test_runtimes_resolve_and_unknown_ones_fail_at_submission(
    tmp_path: Path, rgrid_env: dict[str, str]
) -> None:
    name = script(tmp_path, "v.py", "import sys\nprint('%d.%d' % sys.version_info[:2])\n")
    assert run_cli(["run", "--runtime", "python:3.12", name], tmp_path, rgrid_env).stdout == "3.12\n"
    assert run_cli(["run", name], tmp_path, rgrid_env).stdout == "3.11\n"
    unknown = run_cli(["run", "--runtime", "ruby:3", name], tmp_path, rgrid_env)
    assert unknown.returncode == 2 and "unknown runtime 'ruby:3'" in unknown.stderr
    missing = run_cli(["run", "--runtime", "python:3.13", name], tmp_path, rgrid_env)
    assert missing.returncode == 2
    assert "runtime_unavailable" in missing.stderr and "python:3.12" in missing.stderr


def test_requirements_install_once_and_are_reused(tmp_path: Path, rgrid_env: dict[str, str]) -> None:
    """Built in the job's sandbox, under seccomp: a wheel with a compiled
    extension (markupsafe's speedups) installs and loads."""
    marker = f"# {time.time_ns()}\n"  # a fresh cache key for this test session
    (tmp_path / "requirements.txt").write_text(marker + "tomli-w==1.2.0\nmarkupsafe==2.1.5\n")
    name = script(
        tmp_path,
        "uses_tomli_w.py",
        "import tomli_w\nfrom markupsafe import _speedups\nprint(tomli_w.dumps({'v': 1}).strip())\n",
    )
    first = run_cli(["run", name], tmp_path, rgrid_env, timeout=300)
    assert first.returncode == 0, first.stderr
    assert first.stdout == "v = 1\n"
    assert (
        "rgrid: installing tomli-w==1.2.0, markupsafe==2.1.5" in first.stderr
    )  # said, not the installer's chatter
    assert "rgrid: installed in" in first.stderr and "Resolved" not in first.stderr
    second = run_cli(["run", name], tmp_path, rgrid_env)
    assert second.returncode == 0 and second.stdout == "v = 1\n"
    assert "tomli-w" not in second.stderr
    plain = run_cli(["run", "--no-requirements", name], tmp_path, rgrid_env)
    assert plain.returncode == 1 and "ModuleNotFoundError" in plain.stderr


def test_verbose_shows_the_installers_output_as_it_works(tmp_path: Path, rgrid_env: dict[str, str]) -> None:
    (tmp_path / "reqs.txt").write_text(f"# {time.time_ns()}\ntomli-w==1.2.0\n")
    name = script(tmp_path, "uses_tomli_w.py", "import tomli_w\nprint(tomli_w.dumps({'v': 1}).strip())\n")
    shown = run_cli(["run", "-v", "--requirements", "reqs.txt", name], tmp_path, rgrid_env, timeout=300)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == "v = 1\n"  # the installer's words are never the script's stdout
    assert "Resolved" in shown.stderr and "tomli-w" in shown.stderr
    assert shown.stderr.index("rgrid: installing") < shown.stderr.index("Resolved")


def test_concurrent_runs_share_one_install(tmp_path: Path, rgrid_env: dict[str, str]) -> None:
    (tmp_path / "reqs.txt").write_text(f"# {time.time_ns()}\ntomli-w==1.2.0\n")
    name = script(tmp_path, "uses_tomli_w.py", "import tomli_w\nprint(tomli_w.dumps({'v': 1}).strip())\n")
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "rgrid", "run", "--requirements", "reqs.txt", "--cpu", "0.5", name],
            cwd=tmp_path,
            env=rgrid_env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    results = [p.communicate(timeout=300) for p in procs]
    assert [out for out, _err in results] == ["v = 1\n", "v = 1\n"]
    assert sum("tomli-w==1.2.0" in err for _out, err in results) == 1


def test_requirements_that_cannot_be_met_are_the_users_mistake(
    tmp_path: Path, rgrid_env: dict[str, str]
) -> None:
    """Exit 2 with uv's own reason, not 75: a CI job must not take a typo for an outage."""
    (tmp_path / "broken.txt").write_text("this-package-does-not-exist-rgrid-test==0.0.1\n")
    name = script(tmp_path, "x.py", "print('never')\n")
    for _ in range(2):  # a failed install is not cached: the second run fails the same way
        result = run_cli(["run", "--requirements", "broken.txt", name], tmp_path, rgrid_env, timeout=300)
        assert result.returncode == 2, result.stderr
        assert "failed: requirements" in result.stderr
        assert (
            "the requirements cannot be installed: Because this-package-does-not-exist-rgrid-test"
            in result.stderr
        )
        assert "never" not in result.stdout
    missing = run_cli(["run", "--requirements", "nope.txt", name], tmp_path, rgrid_env)
    assert missing.returncode == 2 and "--requirements: no such file" in missing.stderr


def test_sandbox_is_named_by_the_node(api: object, ray_head: RayHead, services_root: Path) -> None:
    info = json.loads((services_root / "ray" / "local" / "node.json").read_text())
    assert info == {"runtimes": ["python:3.11", "python:3.12"], "sandbox": "bubblewrap", "isolated": True}
    assert os.geteuid() == 0  # bubblewrap drops jobs to their own uid only as root


def test_script_dies_with_its_runner(tmp_path: Path, rgrid_env: dict[str, str]) -> None:
    """SIGKILL the Ray worker process running the attempt: the sandboxed
    script goes with it, and with no retries left the execution fails as
    worker_lost."""
    marker = f"orphan-{time.time_ns()}"
    name = script(tmp_path, "long.py", "import sys, time\nprint('up', flush=True)\ntime.sleep(600)\n")
    out = run_cli(["run", "-d", "--json", "--retries", "0", name, marker], tmp_path, rgrid_env)
    eid = json.loads(out.stdout)["id"]
    deadline = time.monotonic() + 60
    while not processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    sandboxes = [p for p in processes_with(marker) if "bwrap" in Path(f"/proc/{p}/cmdline").read_text()]
    assert sandboxes
    runner = int(Path(f"/proc/{sandboxes[0]}/stat").read_text().rsplit(")", 1)[1].split()[1])
    while (
        "bwrap" in Path(f"/proc/{runner}/cmdline").read_text()
        or "rgrid-join" in Path(f"/proc/{runner}/cmdline").read_text()
    ):
        runner = int(Path(f"/proc/{runner}/stat").read_text().rsplit(")", 1)[1].split()[1])
    os.kill(runner, 9)
    deadline = time.monotonic() + 30
    while processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_with(marker) == []
    status = {}
    while time.monotonic() < deadline + 60:
        status = json.loads(run_cli(["status", eid, "--json"], tmp_path, rgrid_env).stdout)
        if status["status"] in ("failed", "succeeded", "cancelled"):
            break
        time.sleep(0.2)
    assert status["status"] == "failed" and status["failure_reason"] == "worker_lost"

    # The killed runner never unmounted its work disk: a runner process of
    # that node does, after its next attempt.
    def disk_mounts() -> list[str]:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
        return [line for line in lines if eid in line and (" - ext4 " in line or " - overlay " in line)]

    assert disk_mounts()
    quick = script(tmp_path, "quick.py", "print('ok')\n")
    for _ in range(12):
        run_cli(["run", quick], tmp_path, rgrid_env)
        time.sleep(0.5)  # the sweep runs in the background after the attempt
        if not disk_mounts():
            break
    assert disk_mounts() == []


def test_a_job_cannot_change_its_cached_input(tmp_path: Path, rgrid_env: dict[str, str]) -> None:
    """Inputs come from the worker's shared cache, read-only: a job that
    tries to change one fails, and the next run reads the original."""
    (tmp_path / "data.csv").write_text("original\n")
    name = script(
        tmp_path,
        "tamper.py",
        "import os, sys\n"
        "for attempt in (lambda: open(sys.argv[1], 'a').write('x'), lambda: os.chmod(sys.argv[1], 0o666)):\n"
        "    try:\n"
        "        attempt()\n"
        "        print('changed')\n"
        "    except PermissionError:\n"
        "        print('refused')\n",
    )
    result = run_cli(["run", name, "data.csv"], tmp_path, rgrid_env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["refused", "refused"]
    reader = script(tmp_path, "read.py", "import sys\nprint(open(sys.argv[1]).read(), end='')\n")
    again = run_cli(["run", reader, "data.csv"], tmp_path, rgrid_env)
    assert again.returncode == 0, again.stderr
    assert again.stdout == "original\n"
