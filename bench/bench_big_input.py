"""A big input: its first upload against a raw parallel multipart PUT to the
same S3 server, and what a rerun with the unchanged input costs on top of
the script's own time.

Run by hand:  uv run python bench/bench_big_input.py [--mib 1024] [--runs 3]
It starts a private local grid in a temp RGRID_HOME, writes a random file of
--mib MiB, and stops everything at the end. Figures go into docs/benchmarks.md.

- raw: minio's `put_object` with 16 MiB parts, 4 in parallel (what rgrid's
  client uses), straight to the grid's S3 server;
- rgrid upload: the client library's whole path (sha256, `uploads/plan`,
  parallel parts, `uploads/complete`, where the API verifies the sha256);
- rerun: `rgrid run size.py big.bin` with the file already uploaded and
  cached on the worker, against `rgrid run size.py small.bin`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from _grid import RGRID, client_code, grid_env, local_grid, rgrid, timed

from rgrid.local.grid import LocalGrid

SCRIPT = "import os, sys\nprint(os.path.getsize(sys.argv[1]))\n"


def timed_run(args: list[str], cwd: Path, env: dict[str, str]) -> float:
    return timed([*RGRID, *args], cwd, env)


def raw_put(home: Path, path: Path) -> float:
    from minio import Minio

    secrets = json.loads((home / "local" / "secrets.json").read_text())
    port = LocalGrid(home).read_state().pieces["s3"].ports["s3"]
    s3 = Minio(f"127.0.0.1:{port}", secrets["s3_access_key"], secrets["s3_secret_key"], secure=False)
    if not s3.bucket_exists("bench-raw"):
        s3.make_bucket("bench-raw")
    started = time.perf_counter()
    with open(path, "rb") as fh:
        s3.put_object(
            "bench-raw",
            "big.bin",
            fh,
            path.stat().st_size,
            part_size=16 * 1024 * 1024,
            num_parallel_uploads=4,
        )
    return time.perf_counter() - started


def downloads(home: Path, rounds: int) -> tuple[list[float], list[float]]:
    """The object raw_put stored, fetched through a presigned URL: one
    streamed GET hashed as it arrives, against rgrid.fetch's ranged parts
    (what a worker's input cache and the CLI's outputs use); taken in turn.
    Seconds, each side."""
    import hashlib
    from datetime import timedelta

    import httpx
    from minio import Minio

    from rgrid.fetch import fetch_into

    secrets = json.loads((home / "local" / "secrets.json").read_text())
    port = LocalGrid(home).read_state().pieces["s3"].ports["s3"]
    s3 = Minio(f"127.0.0.1:{port}", secrets["s3_access_key"], secrets["s3_secret_key"], secure=False)
    url = s3.presigned_get_object("bench-raw", "big.bin", expires=timedelta(hours=1))
    single: list[float] = []
    ranged: list[float] = []
    with httpx.Client(timeout=60) as http:
        for _ in range(rounds):
            with tempfile.TemporaryFile(dir=home) as fh:
                started = time.perf_counter()
                digest = hashlib.sha256()
                with http.stream("GET", url) as resp:
                    for chunk in resp.iter_bytes(1024 * 1024):
                        digest.update(chunk)
                        fh.write(chunk)
                single.append(time.perf_counter() - started)
            with tempfile.TemporaryFile(dir=home) as fh:
                started = time.perf_counter()
                fetch_into(http, url, fh.fileno())
                ranged.append(time.perf_counter() - started)
    return single, ranged


def client_upload(cwd: Path, env: dict[str, str]) -> float:
    code = """
import time
from pathlib import Path
from rgrid.cli.connect import connect
from rgrid.hashcache import sha256_file
from rgrid.transfer import upload_missing
client = connect(start_local=False)
path = Path("big.bin")
started = time.perf_counter()
sha = sha256_file(path)
upload_missing(client, {sha: path}, {sha: path.stat().st_size}, lambda t: (lambda n: None))
print(time.perf_counter() - started)
"""
    return float(client_code(code, cwd, env))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=3)
    opts = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="rgrid-bench-") as tmp:
        project = Path(tmp) / "project"
        project.mkdir()
        (project / "size.py").write_text(SCRIPT)
        (project / "small.bin").write_bytes(b"x")
        with open(project / "big.bin", "wb") as fh:
            for _ in range(opts.mib):
                fh.write(os.urandom(1024 * 1024))
        env = grid_env(Path(tmp) / "home")
        with local_grid(project, env):
            rgrid(["run", "size.py", "small.bin"], project, env)
            raw = raw_put(Path(tmp) / "home", project / "big.bin")
            upload = client_upload(project, env)
            single, ranged = downloads(Path(tmp) / "home", opts.runs)
            first = timed_run(["run", "size.py", "big.bin"], project, env)
            big = [timed_run(["run", "size.py", "big.bin"], project, env) for _ in range(opts.runs)]
            small = [timed_run(["run", "size.py", "small.bin"], project, env) for _ in range(opts.runs)]

    mib = opts.mib
    print(f"raw multipart PUT, {mib} MiB        : {raw:.2f} s ({mib / raw:.0f} MiB/s)")
    print(
        f"rgrid upload (hash, parts, verify) : {upload:.2f} s ({mib / upload:.0f} MiB/s) -> {raw / upload:.2f}x raw"
    )
    print(
        f"download, one stream, median       : {statistics.median(single):.2f} s "
        f"({mib / statistics.median(single):.0f} MiB/s)"
    )
    print(
        f"download, ranged parts, median     : {statistics.median(ranged):.2f} s "
        f"({mib / statistics.median(ranged):.0f} MiB/s) -> "
        f"{statistics.median(single) / statistics.median(ranged):.2f}x one stream"
    )
    print(f"first run on the worker (download) : {first:.2f} s")
    print(
        f"rerun, unchanged big input, median : {statistics.median(big):.3f} s {sorted(round(x, 3) for x in big)}"
    )
    print(f"same script, 1-byte input, median  : {statistics.median(small):.3f} s")
    print(f"big input's cost on a rerun        : {statistics.median(big) - statistics.median(small):.3f} s")


if __name__ == "__main__":
    main()
