"""What a compromised node runs as a Ray job: it looks for control-plane
secrets wherever the Ray user can read, and tries the node's attempt
service. It is given only the secrets' SHA-256 digests (so that it cannot
find them in its own arguments), and prints one JSON line, "SCAN {...}".

Usage: python secretscan.py EXECUTION_ID DIGEST... (the attempt service's
socket is named in the Ray worker's environment, as on any node).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import sys

TOKEN = re.compile(rb"[A-Za-z0-9_\-]{12,}")
# Kernel views, and installed software and its caches, where nothing is
# written at run time: the system's, /opt, package managers', Python
# environments' (site-packages) and git histories.
SKIP_TREES = (
    "/proc",
    "/sys",
    "/dev",
    "/usr",
    "/lib",
    "/lib64",
    "/lib32",
    "/bin",
    "/sbin",
    "/boot",
    "/opt",
    "/var/cache",
    "/var/lib/apt",
    "/var/lib/dpkg",
)
SKIP_NAMES = ("site-packages", ".git", "__pycache__")
MAX_FILE_BYTES = 64 * 1024 * 1024


def digests_in(data: bytes) -> set[str]:
    return {hashlib.sha256(tok).hexdigest() for tok in TOKEN.findall(data)}


def scan(wanted: set[str]) -> dict:
    hits: list[str] = []
    environs = files = 0
    me = os.getpid()
    installed = {os.path.realpath(sys.prefix), os.path.realpath(sys.base_prefix)}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        if int(pid) == me:
            continue
        for part in ("environ", "cmdline"):
            try:
                with open(f"/proc/{pid}/{part}", "rb") as fh:
                    data = fh.read()
            except OSError:
                continue
            environs += part == "environ"
            if found := digests_in(data) & wanted:
                hits.append(f"/proc/{pid}/{part}: {sorted(found)}")
    for top, dirs, names in os.walk("/"):
        dirs[:] = [
            d
            for d in dirs
            if d not in SKIP_NAMES
            and os.path.join(top, d) not in SKIP_TREES
            and os.path.realpath(os.path.join(top, d)) not in installed
        ]
        for name in names:
            path = os.path.join(top, name)
            try:
                if not os.path.isfile(path) or os.path.islink(path) or os.path.getsize(path) > MAX_FILE_BYTES:
                    continue
                with open(path, "rb") as fh:
                    data = fh.read()
            except OSError:
                continue
            files += 1
            if found := digests_in(data) & wanted:
                hits.append(f"{path}: {sorted(found)}")
    return {"hits": hits, "environs_read": environs, "files_read": files}


def ask_service(path: str, line: bytes) -> str:
    """What the node's attempt service answers to one request line."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(120)
            conn.connect(path)
            conn.sendall(line)
            answer = b""
            while chunk := conn.recv(4096):
                answer += chunk
        return answer.decode(errors="replace").strip()
    except OSError as exc:
        return f"error: {exc}"


def main() -> None:
    sock, execution_id, wanted = os.environ["RGRID_RUNNER_SOCKET"], sys.argv[1], set(sys.argv[2:])
    report = scan(wanted)
    report["uid"] = os.getuid()
    forged = {"execution_id": execution_id, "attempt": 1, "token": "0" * 64}
    report["forged_token"] = ask_service(sock, json.dumps(forged).encode() + b"\n")
    smuggled = {**forged, "argv": ["/bin/sh", "-c", "id"], "env": {"LD_PRELOAD": "/tmp/x.so"}}
    report["smuggled_fields"] = ask_service(sock, json.dumps(smuggled).encode() + b"\n")
    # An API of its own on the node's loopback, to hand a root runner a spec.
    with socket.socket() as fake:
        fake.bind(("127.0.0.1", 0))
        fake.listen()
        own_api = {**forged, "api_url": f"http://127.0.0.1:{fake.getsockname()[1]}"}
        report["own_api"] = ask_service(sock, json.dumps(own_api).encode() + b"\n")
    print("SCAN " + json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
