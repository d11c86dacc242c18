"""The provider the server's settings name (RGRID_AUTOSCALER_PROVIDER)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from rgrid_api.settings import Settings
from rgrid_infra.hetzner import HetznerConfig, HetznerProvider
from rgrid_infra.local import LocalConfig, LocalProvider
from rgrid_infra.provider import Provider

PROVIDERS = ("none", "local", "hetzner")


def _names(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


def make_provider(settings: Settings) -> Provider | None:
    """None when autoscaling is off. A provider that cannot work as
    configured raises ValueError with the setting to fix."""
    name = settings.autoscaler_provider
    if name == "none":
        return None
    if name == "local":
        return LocalProvider(
            LocalConfig(
                nodes_dir=settings.local_nodes_dir,
                ray_temp_dir=settings.local_ray_temp_dir or Path(tempfile.gettempdir()) / "rgrid-nodes",
                work_root=settings.local_work_root,
                cpus=settings.local_node_cpus,
                memory_mb=settings.local_node_memory_mb,
                eur_per_hour=settings.local_node_eur_per_hour,
            )
        )
    if name == "hetzner":
        if settings.hcloud_token is None:
            raise ValueError("RGRID_AUTOSCALER_PROVIDER=hetzner needs RGRID_HCLOUD_TOKEN")
        return HetznerProvider(
            HetznerConfig(
                token=settings.hcloud_token.get_secret_value(),
                endpoint=settings.hcloud_endpoint,
                server_types=_names(settings.hcloud_server_types),
                locations=_names(settings.hcloud_locations),
                image=settings.hcloud_image,
                network=settings.hcloud_network,
                firewall=settings.hcloud_firewall,
                ssh_keys=_names(settings.hcloud_ssh_keys),
                runtimes=_names(settings.hcloud_runtimes),
                package=settings.hcloud_package,
                find_links=settings.hcloud_find_links,
            )
        )
    raise ValueError(f"RGRID_AUTOSCALER_PROVIDER must be one of {', '.join(PROVIDERS)}, not {name!r}")


def offered_runtimes(settings: Settings) -> frozenset[str]:
    """What a node the autoscaler creates offers to jobs: a local node, what
    this machine has; a provisioned one, what its cloud-init installs."""
    if settings.autoscaler_provider == "local":
        from rgrid_runner.runtimes import detect

        return frozenset(detect())
    return frozenset(f"python:{v}" for v in _names(settings.hcloud_runtimes))
