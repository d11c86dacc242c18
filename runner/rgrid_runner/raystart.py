"""`ray start`, keeping a loopback node address as given.

When a node joins a cluster, Ray replaces 127.0.0.1 by the machine's
outward address (to be reachable from other machines) and listens there.
The embedded grid runs every node on one machine and must stay on loopback,
so for a loopback address this launcher keeps it. Other addresses (real
clusters) are untouched.
"""

from __future__ import annotations

import sys


def main() -> None:
    import ray._private.services as services
    from ray.scripts.scripts import main as ray_main

    original = services.resolve_ip_for_localhost
    services.resolve_ip_for_localhost = lambda host: host if host == "127.0.0.1" else original(host)
    sys.argv = ["ray", *sys.argv[1:]]
    ray_main()


if __name__ == "__main__":
    main()
