"""The job network's rules and commands as built (the kernel's side is
tested in tests/integration/test_job_network.py), and the node agent's
refusal to run unisolated jobs for a remote grid."""

from __future__ import annotations

from pathlib import Path

import pytest

from rgrid.errors import UsageError
from rgrid_runner.commands import protect_node
from rgrid_runner.jobnet import DEFAULT_DENY, JobNetPolicy, JobNetwork, resolvers
from rgrid_runner.sandbox import Plain
from rgrid_runner.settings import RunnerSettings


def policy(**kw: str | None) -> JobNetPolicy:
    args: dict[str, str | None] = {"subnet": "10.254.0.0/16", "deny": None, "allow": "", "dns": "192.0.2.53"}
    args.update(kw)
    return JobNetPolicy.from_settings(str(args["subnet"]), args["deny"], str(args["allow"]), args["dns"])


def test_ruleset_refuses_the_node_and_denied_ranges() -> None:
    rules = policy().ruleset()
    assert 'iifname "rgj*" reject with icmpx type admin-prohibited' in rules.split("chain forward")[0]
    for cidr in DEFAULT_DENY:
        assert cidr in rules
    assert 'iifname "rgj*" ip daddr 192.0.2.53 udp dport 53 accept' in rules
    assert 'oifname "rgj*" drop' in rules
    assert 'ip saddr 10.254.0.0/16 oifname != "rgj*" masquerade' in rules
    # Replaced atomically: declared, deleted, declared anew in one file.
    assert rules.startswith("table inet rgrid_jobs\ndelete table inet rgrid_jobs\n")


def test_allowed_ranges_come_before_the_denied_ones() -> None:
    rules = policy(allow="10.0.5.10/32,10.9.0.0/16").ruleset()
    assert rules.index("10.0.5.10/32, 10.9.0.0/16 } accept") < rules.index(
        "reject with icmpx type admin-prohibited\n    ", rules.index("chain forward")
    )


def test_operator_deny_list_replaces_the_default() -> None:
    rules = policy(deny="203.0.113.0/24").ruleset()
    assert "203.0.113.0/24" in rules and "10.0.0.0/8" not in rules


@pytest.mark.parametrize("bad", [{"subnet": "fd00::/64"}, {"subnet": "10.254.0.0/30"}, {"deny": "fd00::/8"}])
def test_bad_settings_are_refused(bad: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        policy(**bad)


def test_each_slot_has_its_own_pair_of_addresses() -> None:
    p = policy()
    assert p.addresses(0) == ("10.254.0.1", "10.254.0.2")
    assert p.addresses(5) == ("10.254.0.21", "10.254.0.22")
    assert p.slots() == 16384


def test_resolvers_skip_a_loopback_stub(tmp_path: Path) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text(
        "# generated\nnameserver 127.0.0.53\nnameserver 10.255.255.53\nnameserver fd00::1\nsearch x\n"
    )
    assert resolvers(conf) == ["10.255.255.53"]
    assert policy(dns="9.9.9.9, 1.1.1.1").resolv_conf() == "nameserver 9.9.9.9\nnameserver 1.1.1.1\n"


def test_docker_network_is_the_bridge_the_rules_match(tmp_path: Path) -> None:
    command = JobNetwork(policy(), "w1", tmp_path).docker_network_command("docker", "10.253.0.0/24")
    assert command == [
        "docker",
        "network",
        "create",
        "--driver=bridge",
        "--subnet=10.253.0.0/24",
        "--opt=com.docker.network.bridge.name=rgj-docker",
        "--opt=com.docker.network.bridge.enable_ip_masquerade=true",
        "rgrid-jobs",
    ]


def test_unisolated_nodes_serve_only_a_local_grid() -> None:
    settings = RunnerSettings()
    protect_node(Plain(), settings, "w1", "http://127.0.0.1:8080")
    with pytest.raises(UsageError, match="RGRID_ALLOW_UNISOLATED"):
        protect_node(Plain(), settings, "w1", "http://10.0.0.2:8080")
    protect_node(Plain(), RunnerSettings(allow_unisolated=True), "w1", "http://10.0.0.2:8080")
