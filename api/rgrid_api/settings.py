"""Server configuration, read from RGRID_* environment variables.

One object is built per process and passed explicitly, so tests can run
several differently configured servers side by side.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from rgrid.hosts import is_loopback

# Built-in values of the secrets: fine for a server only this machine can
# reach, refused anywhere else (see `default_secrets_in_use`).
DEFAULT_RUNNER_SECRET = "change-me"
DEFAULT_WORKER_TOKEN = "change-me-too"
DEFAULT_HEAD_TOKEN = "change-me-three"


# `host:port`, the port 1-65535.
METRICS_BIND_PATTERN = r"^[A-Za-z0-9.:\[\]-]+:([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])$"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RGRID_", extra="ignore")

    database_url: str = "sqlite:///rgrid.db"

    s3_endpoint: str = "127.0.0.1:9000"
    # Presigned URLs are signed for a host name: the one laptops use
    # (public) and the one workers use (runner) may both differ from the one
    # the API reaches storage under.
    s3_public_endpoint: str | None = None
    s3_runner_endpoint: str | None = None
    s3_secure: bool = False
    s3_access_key: str = "minioadmin"
    s3_secret_key: SecretStr = SecretStr("minioadmin")
    # The identity presigned URLs are signed with: one limited to the bucket
    # (read, write, list), so no URL ever carries the storage's root identity.
    # Unset: the one above signs too.
    s3_presign_access_key: str | None = None
    s3_presign_secret_key: SecretStr | None = None
    s3_bucket: str = "rgrid"
    s3_region: str = "us-east-1"
    presign_expiry_s: int = 900
    storage_wait_s: float = 60.0
    multipart_threshold: int = 64 * 1024 * 1024
    multipart_part_size: int = 16 * 1024 * 1024

    ray_address: str = "127.0.0.1:6379"
    # The URL runners use to call back into the API.
    runner_api_url: str = "http://127.0.0.1:8080"
    # Signs per-attempt runner tokens; a job never sees it.
    runner_secret: SecretStr = SecretStr(DEFAULT_RUNNER_SECRET)

    # What `--runtime python` means.
    default_runtime: str = "python:3.11"

    # Node agents authenticate with this token; a job never sees it.
    worker_token: SecretStr = SecretStr(DEFAULT_WORKER_TOKEN)
    # The head's agent alone holds this: only it may say where the Ray head
    # is (the worker token and node credentials cannot).
    head_token: SecretStr = SecretStr(DEFAULT_HEAD_TOKEN)
    heartbeat_timeout_s: float = 10.0
    # `host:port` where /metrics is served without a key, for a Prometheus
    # on the operator's private network (docs/operations.md, "Metrics").
    # Unset: only the API's own /metrics, for admin keys.
    metrics_bind: str | None = Field(default=None, pattern=METRICS_BIND_PATTERN)
    monitor_interval_s: float = 1.0

    lease_s: float = 30.0
    dispatch_poll_s: float = 1.0
    log_wait_max_s: float = 25.0

    # Sharing the grid (docs/operations.md, "Tenants"). The dispatcher hands
    # Ray what the grid can start now plus this share of its CPUs.
    dispatch_margin: float = 0.05
    # Each owner's caps, unless one of its keys sets its own: CPUs of its
    # dispatched and running work (None: no cap; runs over it wait), and
    # executions queued (a submission past it is refused with 429).
    max_running_cpus: float | None = None
    max_queued: int = 200_000
    # Per API key, per server: requests a second (0: no limit) with bursts
    # up to rate_limit_burst, and long-polls (logs --follow) held open.
    rate_limit_per_s: float = 50.0
    rate_limit_burst: float = 200.0
    long_polls_per_key: int = 16
    # The largest object one upload may be; incomplete uploads (and the
    # multipart uploads storage keeps for them) are deleted after this long.
    max_input_bytes: int = 50 * 1024**3
    upload_grace_s: float = 24 * 3600.0

    bootstrap_api_key: SecretStr | None = None
    # How long a server trusts what it learned about an API key or a node's
    # credential: a revoked one stops working (and a role change applies)
    # within this many seconds.
    key_cache_s: float = 5.0
    bootstrap_owner: str = "local"
    # The web console (`rgrid_api.console`): how long a browser stays
    # logged in, and how long a one-time login link (`rgrid console`) works.
    console_session_s: float = 12 * 3600.0
    console_link_s: float = 60.0

    host: str = "127.0.0.1"
    port: int = 8080

    # The autoscaler (docs/operations.md lists every setting): which
    # provider, the caps, and the budget. `none` turns it off.
    autoscaler_provider: str = "none"
    autoscaler_min_nodes: int = 0
    autoscaler_max_nodes: int = 4
    autoscaler_max_pending: int = 4
    autoscaler_max_creates_per_cycle: int = 2
    autoscaler_idle_s: float = 300.0
    autoscaler_join_timeout_s: float = 900.0
    autoscaler_budget_eur_per_hour: float = 1.0
    autoscaler_interval_s: float = 15.0
    autoscaler_orphan_grace_s: float = 300.0
    # Every server the autoscaler creates carries rgrid-cluster=<this>.
    cluster_name: str = "rgrid"

    hcloud_token: SecretStr | None = None
    hcloud_endpoint: str = "https://api.hetzner.cloud/v1"
    hcloud_server_types: str = "cx23,cx33,cx43"
    hcloud_locations: str = "fsn1,nbg1"
    hcloud_image: str = "debian-12"
    hcloud_network: str | None = None
    hcloud_firewall: str | None = None
    hcloud_ssh_keys: str = ""
    # Python versions a provisioned worker installs, and where it gets rgrid
    # (always at exactly this server's version): the package name, and a
    # folder of wheels (URL) if rgrid is not on the index.
    hcloud_runtimes: str = "3.11,3.12"
    hcloud_package: str = "rgrid"
    hcloud_find_links: str | None = None

    # The local provider: worker nodes on this machine (`rgrid local up
    # --max-workers N` sets these), their size and (for trying the budget) price.
    local_nodes_dir: Path = Path("rgrid-nodes")
    local_ray_temp_dir: Path | None = None
    local_work_root: Path | None = None
    local_node_cpus: float = 1.0
    local_node_memory_mb: int = 2048
    local_node_eur_per_hour: float = 0.0

    def default_secrets_in_use(self, host: str) -> list[str]:
        """The variables still at their built-in value, or empty, when the
        server binds to anything but loopback (anyone could then mint runner
        tokens or join workers: an empty token matches an empty bearer)."""
        if is_loopback(host):
            return []
        secrets = (
            ("RGRID_RUNNER_SECRET", self.runner_secret, DEFAULT_RUNNER_SECRET),
            ("RGRID_WORKER_TOKEN", self.worker_token, DEFAULT_WORKER_TOKEN),
            ("RGRID_HEAD_TOKEN", self.head_token, DEFAULT_HEAD_TOKEN),
        )
        return [
            name
            for name, value, default in secrets
            if value.get_secret_value() == default or not value.get_secret_value().strip()
        ]

    @property
    def client_presign_endpoint(self) -> str:
        return self.s3_public_endpoint or self.s3_endpoint

    @property
    def runner_presign_endpoint(self) -> str:
        return self.s3_runner_endpoint or self.client_presign_endpoint
