"""`ray start`, keeping a loopback node address as given.

When a node joins a cluster, Ray replaces 127.0.0.1 by the machine's
outward address (to be reachable from other machines) and listens there.
The embedded grid runs every node on one machine and must stay on loopback,
so for a loopback address this launcher keeps it. Other addresses (real
clusters) are untouched.
"""

from __future__ import annotations

import sys

from rgrid_runner.ray_compat import keep_loopback_node_address


def main() -> None:
    from ray.scripts.scripts import main as ray_main

    keep_loopback_node_address()
    sys.argv = ["ray", *sys.argv[1:]]
    ray_main()


if __name__ == "__main__":
    main()
