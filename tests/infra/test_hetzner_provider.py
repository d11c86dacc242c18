"""The Hetzner provider, through the real `hcloud` SDK, against the fake
Hetzner Cloud API on loopback."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from rgrid_infra.hetzner import HetznerConfig, HetznerProvider
from rgrid_infra.provider import CLUSTER_LABEL, BootContext, CreateRequest, ProviderError
from tests.support.fake_hcloud import TOKEN, FakeHcloud

LABELS = {CLUSTER_LABEL: "test"}


@pytest.fixture
def fake() -> Iterator[FakeHcloud]:
    with FakeHcloud() as f:
        yield f


def provider(fake: FakeHcloud, **kw: object) -> HetznerProvider:
    config = HetznerConfig(token=str(kw.pop("token", TOKEN)), endpoint=fake.url, **kw)  # type: ignore[arg-type]
    return HetznerProvider(config)


def request(name: str, location: str = "fsn1", stype: str = "cx23") -> CreateRequest:
    return CreateRequest(name, stype, location, LABELS, "#cloud-config\n{}\n")


def test_server_types_come_with_prices_from_the_api(fake: FakeHcloud) -> None:
    types = {
        t.name: t for t in provider(fake, server_types=("cx23", "cx43"), locations=("fsn1",)).server_types()
    }
    assert set(types) == {"cx23", "cx43"}
    assert types["cx23"].cpus == 2 and types["cx23"].memory_mb == 4096
    assert types["cx23"].prices == {"fsn1": pytest.approx(0.0072)}
    fake.server_types[0]["prices"][0]["price_hourly"]["gross"] = "0.0100000000"
    assert provider(fake).server_types()[0].price_in("fsn1") == pytest.approx(0.01)


def test_create_list_by_label_across_pages_and_delete(fake: FakeHcloud) -> None:
    p = provider(fake)
    for i in range(30):  # more than one page
        p.create(request(f"test-{i}"))
    fake.add_server("someone-else", {CLUSTER_LABEL: "other"})
    listed = p.list_servers(LABELS)
    assert len(listed) == 30 and all(s.labels[CLUSTER_LABEL] == "test" for s in listed)
    p.delete(listed[0].id)
    p.delete(listed[0].id)  # already gone: still a success
    assert len(p.list_servers(LABELS)) == 29


def test_a_name_that_exists_is_reported_not_duplicated(fake: FakeHcloud) -> None:
    p = provider(fake)
    p.create(request("test-1"))
    with pytest.raises(ProviderError) as err:
        p.create(request("test-1"))
    assert err.value.kind == ProviderError.EXISTS
    assert len(fake.servers) == 1


def test_a_timed_out_create_retried_by_the_sdk_makes_one_server(
    fake: FakeHcloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    import rgrid_infra.hetzner as hz

    monkeypatch.setattr(hz, "TIMEOUT_S", (1.0, 0.5))
    fake.create_delay_s = 1.0
    p = provider(fake)
    with pytest.raises(ProviderError) as err:
        p.create(request("test-1"))
    # The SDK retried the POST after the timeout; the name was taken by then.
    assert err.value.kind == ProviderError.EXISTS
    assert fake.calls("POST", "/servers") >= 2 and len(fake.servers) == 1


@pytest.mark.parametrize(
    ("status", "code", "kind"),
    [
        (412, "resource_unavailable", ProviderError.UNAVAILABLE),
        (412, "placement_error", ProviderError.UNAVAILABLE),
        (403, "resource_limit_exceeded", ProviderError.LIMIT),
        (403, "forbidden", ProviderError.AUTH),
        (500, "server_error", ProviderError.OTHER),
    ],
)
def test_errors_are_classified(fake: FakeHcloud, status: int, code: str, kind: str) -> None:
    fake.inject("POST", "/servers", status, code)
    with pytest.raises(ProviderError) as err:
        provider(fake).create(request("test-1"))
    assert err.value.kind == kind


def test_a_wrong_token_is_an_authentication_error(fake: FakeHcloud) -> None:
    with pytest.raises(ProviderError) as err:
        provider(fake, token="wrong").list_servers(LABELS)
    assert err.value.kind == ProviderError.AUTH


def test_429_says_when_to_come_back_and_no_call_is_made_meanwhile(fake: FakeHcloud) -> None:
    p = provider(fake)
    fake.throttle(3)
    with pytest.raises(ProviderError) as err:
        p.list_servers(LABELS)
    assert err.value.kind == ProviderError.RATE_LIMITED
    assert err.value.retry_at is not None and err.value.retry_at >= time.time() + 1
    # The SDK did not retry on its own schedule.
    assert fake.calls("GET", "/servers") == 1


def test_a_failed_creation_action_is_reported(fake: FakeHcloud) -> None:
    fake.action_errors.add("test-bad")
    p = provider(fake)
    created = p.create(request("test-bad"))
    assert created.action_id is not None
    deadline = time.monotonic() + 5
    while not (result := p.action_result(created.action_id)).done:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert "failed" in (result.error or "")
    good = p.create(request("test-good"))
    assert good.action_id is not None
    while not (result := p.action_result(good.action_id)).done:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert result.error is None


def test_worker_user_data_is_small_and_holds_no_long_lived_secret(fake: FakeHcloud) -> None:
    boot = BootContext("test-1", "http://10.0.0.2:8080", "rgw_b_single-use", "1.2.3", 2, 4096)
    data = provider(fake).render_user_data(boot)
    assert data.startswith("#cloud-config\n") and len(data.encode()) <= 32 * 1024
    assert "rgw_b_single-use" in data and "'rgrid==1.2.3'" in data
    for secret in ("RGRID_WORKER_TOKEN=", "RGRID_RUNNER_SECRET", "S3_SECRET", "RAY_AUTH_TOKEN=", TOKEN):
        assert secret not in data
    wheels = provider(fake, find_links="http://10.0.0.2:8000/wheels").render_user_data(boot)
    assert "--find-links http://10.0.0.2:8000/wheels 'rgrid==1.2.3'" in wheels


def test_network_firewall_and_ssh_keys_are_attached_by_name(fake: FakeHcloud) -> None:
    p = provider(fake, network="rgrid", firewall="rgrid-workers", ssh_keys=("ops",))
    p.create(request("test-1"))
    boot = BootContext("test-2", "http://10.0.0.2:8080", "rgw_b_x", "1.2.3", 2, 4096)
    # Ray's ports open to the network's own range only.
    assert "ip saddr 10.0.0.0/16 accept" in p.render_user_data(boot)
    with pytest.raises(ProviderError, match="no network named 'nope'"):
        provider(fake, network="nope").create(request("test-3"))


def test_the_control_server_generates_its_secrets_at_first_boot() -> None:
    from rgrid_infra.cloudinit import render_control

    data = render_control("1.2.3")
    assert data.startswith("#cloud-config\n") and len(data.encode()) <= 32 * 1024
    assert "'rgrid==1.2.3'" in data and "rgrid-server.service" in data and "rgrid-head.service" in data
    # Secrets are made on the server (from /dev/urandom), never carried in.
    assert "/dev/urandom" in data and "RGRID_HCLOUD_TOKEN=" not in data
