"""Cloud-init user data: for a worker the autoscaler creates, and for the
control server an operator creates once.

User data is readable by any process on the server (the metadata service
serves it), so it never carries a long-lived secret:
- a worker gets one single-use bootstrap token with a short expiry; its
  agent exchanges it at first contact for the node's own credential and the
  grid's Ray token, both kept in files only root reads;
- the control server generates its own secrets at first boot.

`python -m rgrid_infra.cloudinit control` prints the control server's.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from importlib.resources import files

from rgrid_infra.provider import BootContext

MAX_USER_DATA = 32 * 1024
VENV = "/opt/rgrid/.venv"
CREDENTIAL_FILE = "/var/lib/rgrid/worker-credential.json"
RAY_TOKEN_FILE = "/etc/rgrid/ray-token"
UV_INSTALL = "curl -LsSf https://astral.sh/uv/install.sh | env UV_INSTALL_DIR=/usr/local/bin sh"
# Hetzner's metadata service names the server's address on its private network.
PRIVATE_IP = (
    "curl -s http://169.254.169.254/hetzner/v1/metadata/private-networks | sed -n 's/^- ip: //p' | head -n1"
)


@dataclass(frozen=True)
class WorkerBoot:
    boot: BootContext
    runtimes: tuple[str, ...]  # Python versions to install ("3.11", ...)
    package: str  # what `uv pip install` gets, before ==version
    provider: str
    private_cidr: str = "10.0.0.0/8"
    find_links: str | None = None  # a folder of wheels, for an rgrid not on the index


# What every machine that runs jobs needs: the sandbox (bubblewrap,
# libseccomp for its filter, e2fsprogs for the work disks) and the job network.
NODE_PACKAGES = ("bubblewrap", "libseccomp2", "e2fsprogs", "nftables", "iproute2", "curl", "ca-certificates")


def unit(name: str) -> str:
    return files("rgrid_infra").joinpath("systemd", name).read_text()


def _firewall(private_cidr: str) -> str:
    """The host firewall: Ray's ports (and everything else but SSH) only
    from the private network. The job network's rules (installed by the
    agent) sit in a table of their own."""
    return f"""#!/usr/sbin/nft -f
table inet rgrid_host
delete table inet rgrid_host
table inet rgrid_host {{
  chain input {{
    type filter hook input priority 0; policy drop;
    ct state established,related accept
    iif lo accept
    meta l4proto {{ icmp, ipv6-icmp }} accept
    tcp dport 22 accept
    ip saddr {private_cidr} accept
  }}
}}
"""


def _cloud_config(doc: dict) -> str:
    # JSON is YAML: no YAML writer needed, and no quoting surprises.
    return "#cloud-config\n" + json.dumps(doc, indent=1) + "\n"


def render_worker(w: WorkerBoot) -> str:
    """A worker: system packages, uv, the Python runtimes, rgrid at exactly
    the control plane's version (Ray's versions must match), the host
    firewall, then `rgrid worker` under systemd (root, drains on stop)."""
    b = w.boot
    env = "\n".join(
        [
            f"RGRID_API_URL={b.api_url}",
            f"RGRID_BOOTSTRAP_TOKEN={b.bootstrap_token}",
            f"RGRID_CREDENTIAL_FILE={CREDENTIAL_FILE}",
            "RAY_AUTH_MODE=token",
            f"RAY_AUTH_TOKEN_PATH={RAY_TOKEN_FILE}",
            "",
        ]
    )
    pythons = " ".join(w.runtimes)
    links = f" --find-links {w.find_links}" if w.find_links else ""
    runtimes = ",".join(f"python:{v}=/opt/rgrid/python/{v}/bin/python3" for v in w.runtimes)
    doc = {
        "package_update": True,
        "packages": list(NODE_PACKAGES),
        "write_files": [
            {"path": "/etc/rgrid/node.env", "permissions": "0600", "content": env},
            {"path": "/etc/nftables.conf", "permissions": "0644", "content": _firewall(w.private_cidr)},
            {"path": "/etc/systemd/system/rgrid-worker.service", "content": unit("rgrid-worker.service")},
        ],
        "runcmd": [
            "systemctl enable --now nftables",
            UV_INSTALL,
            f"UV_PYTHON_INSTALL_DIR=/opt/rgrid/pythons uv python install {pythons}",
            *[
                f"mkdir -p /opt/rgrid/python/{v} && ln -sfn $(UV_PYTHON_INSTALL_DIR=/opt/rgrid/pythons "
                f"uv python find {v} | xargs dirname) /opt/rgrid/python/{v}/bin"
                for v in w.runtimes
            ],
            f"uv venv --python {w.runtimes[0]} {VENV}",
            f"uv pip install --python {VENV}/bin/python{links} '{w.package}=={b.version}'",
            f'echo "RGRID_PRIVATE_IP=$({PRIVATE_IP})" >> /etc/rgrid/node.env',
            f'echo "RGRID_RUNTIMES={runtimes}" >> /etc/rgrid/node.env',
            f'echo "RGRID_PROVIDER={w.provider}" >> /etc/rgrid/node.env',
            "systemctl daemon-reload",
            "systemctl enable --now rgrid-worker",
        ],
    }
    data = _cloud_config(doc)
    if len(data.encode()) > MAX_USER_DATA:
        raise ValueError(f"worker user data is {len(data.encode())} bytes; Hetzner takes {MAX_USER_DATA}")
    return data


def render_control(version: str, package: str = "rgrid") -> str:
    """The control server: PostgreSQL, MinIO, the Ray head and `rgrid
    server`. Every secret is generated on the server at first boot; the
    operator adds RGRID_HCLOUD_TOKEN to /etc/rgrid/server.env over SSH."""
    setup = f"""#!/bin/sh
set -eu
umask 077
install -d -m 0755 /etc/rgrid /var/lib/rgrid /opt/rgrid
id rgrid >/dev/null 2>&1 || useradd --system --home /var/lib/rgrid rgrid
chown rgrid:rgrid /var/lib/rgrid
rand() {{ head -c 32 /dev/urandom | base64 | tr -d '/+=' ; }}
[ -f /etc/rgrid/ray-token ] || rand > /etc/rgrid/ray-token
chown rgrid:rgrid /etc/rgrid/ray-token
if [ ! -f /etc/rgrid/server.env ]; then
  PG=$(rand); S3=$(rand); HEAD=$(rand); SIGN=$(rand)
  su postgres -c "psql -c \\"CREATE ROLE rgrid LOGIN PASSWORD '$PG'\\"; createdb -O rgrid rgrid"
  PRIVATE_IP=$({PRIVATE_IP})
  cat > /etc/rgrid/minio.env <<EOF
MINIO_ROOT_USER=rgrid
MINIO_ROOT_PASSWORD=$S3
MINIO_VOLUMES=/var/lib/minio
EOF
  cat > /etc/rgrid/server.env <<EOF
RGRID_DATABASE_URL=postgresql+psycopg://rgrid:$PG@127.0.0.1/rgrid
RGRID_S3_ENDPOINT=127.0.0.1:9000
RGRID_S3_RUNNER_ENDPOINT=$PRIVATE_IP:9000
RGRID_S3_ACCESS_KEY=rgrid
RGRID_S3_SECRET_KEY=$S3
RGRID_S3_PRESIGN_ACCESS_KEY=rgrid-presign
RGRID_S3_PRESIGN_SECRET_KEY=$SIGN
RGRID_RUNNER_SECRET=$(rand)
RGRID_WORKER_TOKEN=$(rand)
RGRID_HEAD_TOKEN=$HEAD
RGRID_RUNNER_API_URL=http://$PRIVATE_IP:8080
RGRID_RAY_ADDRESS=$PRIVATE_IP:6379
RGRID_PRIVATE_IP=$PRIVATE_IP
RGRID_API_URL=http://127.0.0.1:8080
RAY_AUTH_MODE=token
RAY_AUTH_TOKEN_PATH=/etc/rgrid/ray-token
RGRID_AUTOSCALER_PROVIDER=none
EOF
  # The head's agent gets its own credential and nothing of the server's:
  # its raylet and Ray's workers must hold no control-plane secret.
  cat > /etc/rgrid/node.env <<EOF
RGRID_API_URL=http://127.0.0.1:8080
RGRID_HEAD_TOKEN=$HEAD
RGRID_PRIVATE_IP=$PRIVATE_IP
RAY_AUTH_MODE=token
RAY_AUTH_TOKEN_PATH=/etc/rgrid/ray-token
EOF
  chmod 600 /etc/rgrid/node.env
  chown rgrid:rgrid /etc/rgrid/server.env
fi
"""
    doc = {
        "package_update": True,
        "packages": ["postgresql", *NODE_PACKAGES],
        "write_files": [
            {"path": "/opt/rgrid/setup.sh", "permissions": "0700", "content": setup},
            {"path": "/etc/systemd/system/rgrid-server.service", "content": unit("rgrid-server.service")},
            {"path": "/etc/systemd/system/rgrid-head.service", "content": unit("rgrid-head.service")},
            {"path": "/etc/systemd/system/minio.service", "content": _MINIO_UNIT},
            {
                "path": "/opt/rgrid/minio-presign-identity.sh",
                "permissions": "0700",
                "content": _minio_script(),
            },
        ],
        "runcmd": [
            UV_INSTALL,
            f"uv venv --python 3.11 {VENV}",
            f"uv pip install --python {VENV}/bin/python '{package}=={version}'",
            "curl -fsSL -o /usr/local/bin/minio https://dl.min.io/server/minio/release/linux-amd64/minio",
            "chmod 0755 /usr/local/bin/minio",
            "curl -fsSL -o /usr/local/bin/mc https://dl.min.io/client/mc/release/linux-amd64/mc",
            "chmod 0755 /usr/local/bin/mc",
            "/opt/rgrid/setup.sh",
            f"su rgrid -s /bin/sh -c 'set -a; . /etc/rgrid/server.env; {VENV}/bin/rgrid db upgrade'",
            "systemctl daemon-reload",
            "systemctl enable --now minio",
            "sh -c 'set -a; . /etc/rgrid/minio.env; . /etc/rgrid/server.env; MINIO_URL=http://127.0.0.1:9000; "
            "MINIO_ROOT_USER=$RGRID_S3_ACCESS_KEY; RGRID_S3_BUCKET=${RGRID_S3_BUCKET:-rgrid}; "
            "/opt/rgrid/minio-presign-identity.sh'",
            "systemctl enable --now rgrid-head rgrid-server",
        ],
    }
    return _cloud_config(doc)


def _minio_script() -> str:
    return files("rgrid_infra").joinpath("minio", "presign-identity.sh").read_text()


_MINIO_UNIT = """[Unit]
Description=MinIO object storage for rgrid
After=network-online.target

[Service]
EnvironmentFile=/etc/rgrid/minio.env
ExecStart=/usr/local/bin/minio server $MINIO_VOLUMES --address :9000
Restart=always

[Install]
WantedBy=multi-user.target
"""


def main() -> None:
    from importlib.metadata import version

    if sys.argv[1:] != ["control"]:
        sys.exit("usage: python -m rgrid_infra.cloudinit control")
    sys.stdout.write(render_control(version("rgrid")))


if __name__ == "__main__":
    main()
