"""The ADS stream's protocol rules, without a network: what is sent for which request."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.rpc import status_pb2

from raftkv.discovery.record import Instance
from raftkv.discovery.xds import resources as res
from raftkv.discovery.xds.stream import AdsStream


class FakeRegistry:
    """The registry as a stream reads it (a plain dict: the real one is tested end to end)."""

    def __init__(self) -> None:
        self.listed: dict[str, dict[str, Instance]] = {}

    def services(self) -> Iterable[str]:
        return list(self.listed)

    def instances(self, service: str) -> Mapping[str, Instance] | None:
        return self.listed.get(service)


def request(type_url: str, names: list[str], version: str = "", nonce: str = "",
            error: str | None = None) -> discovery_pb2.DiscoveryRequest:
    req = discovery_pb2.DiscoveryRequest(type_url=type_url, resource_names=names, version_info=version,
                                         response_nonce=nonce)
    req.node.id = "test-node"
    if error is not None:
        req.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
    return req


def addrs(response: discovery_pb2.DiscoveryResponse) -> list[str]:
    out = []
    for packed in response.resources:
        cla = endpoint_pb2.ClusterLoadAssignment()
        assert packed.Unpack(cla)
        out += [f"{e.endpoint.address.socket_address.address}:{e.endpoint.address.socket_address.port_value}"
                for loc in cla.endpoints for e in loc.lb_endpoints]
    return out


def test_first_request_answered_and_ack_answers_nothing() -> None:
    stream = AdsStream(res.Policy(), FakeRegistry())
    [resp] = stream.receive(request(res.LISTENER, ["orders"]))
    assert resp.type_url == res.LISTENER and len(resp.resources) == 1 and resp.nonce
    assert stream.receive(request(res.LISTENER, ["orders"], resp.version_info, resp.nonce)) == []
    assert stream.state(res.LISTENER).acked_version == resp.version_info  # type: ignore[union-attr]
    assert stream.node_id == "test-node"
    assert stream.services() == {"orders"}


def test_endpoints_held_back_until_listed_then_follow_changes() -> None:
    registry = FakeRegistry()
    stream = AdsStream(res.Policy(), registry)
    [empty] = stream.receive(request(res.ENDPOINT, ["orders"]))
    assert list(empty.resources) == []  # not listed yet: no assignment rather than an empty one
    stream.receive(request(res.ENDPOINT, ["orders"], empty.version_info, empty.nonce))
    registry.listed["orders"] = {"a": Instance("a", "127.0.0.1:1")}
    [first] = stream.refresh()
    assert addrs(first) == ["127.0.0.1:1"]
    assert stream.refresh() == []  # nothing changed: nothing sent
    registry.listed["orders"]["b"] = Instance("b", "127.0.0.1:2", {"weight": 3})
    [second] = stream.refresh()
    assert addrs(second) == ["127.0.0.1:1", "127.0.0.1:2"]
    assert second.version_info != first.version_info and second.nonce != first.nonce


def test_stale_nonce_is_ignored() -> None:
    registry = FakeRegistry()
    registry.listed["orders"] = {}
    stream = AdsStream(res.Policy(), registry)
    [one] = stream.receive(request(res.ENDPOINT, ["orders"]))
    registry.listed["orders"] = {"a": Instance("a", "127.0.0.1:1")}
    [two] = stream.refresh()
    # The client's ACK of the first response crosses the second one: it must not trigger a third.
    assert stream.receive(request(res.ENDPOINT, ["orders", "other"], one.version_info, one.nonce)) == []
    assert stream.services() == {"orders"}
    assert stream.receive(request(res.ENDPOINT, ["orders"], two.version_info, two.nonce)) == []


def test_nacked_version_is_not_sent_again() -> None:
    registry = FakeRegistry()
    registry.listed["orders"] = {"a": Instance("a", "127.0.0.1:1")}
    stream = AdsStream(res.Policy(), registry)
    [resp] = stream.receive(request(res.ENDPOINT, ["orders"]))
    assert stream.receive(request(res.ENDPOINT, ["orders"], "", resp.nonce, error="bad")) == []
    assert stream.state(res.ENDPOINT).last_error == "bad"  # type: ignore[union-attr]
    assert stream.refresh() == []
    registry.listed["orders"]["b"] = Instance("b", "127.0.0.1:2")
    assert len(stream.refresh()) == 1  # new content: a new version the client may accept


def test_subscription_change_sends_the_new_set_and_unfollows() -> None:
    registry = FakeRegistry()
    stream = AdsStream(res.Policy(), registry)
    [one] = stream.receive(request(res.CLUSTER, ["orders"]))
    [two] = stream.receive(request(res.CLUSTER, ["orders", "users"], one.version_info, one.nonce))
    assert len(two.resources) == 2
    [three] = stream.receive(request(res.CLUSTER, ["users"], two.version_info, two.nonce))
    assert len(three.resources) == 1
    assert stream.services() == {"users"}


def test_wildcard_listeners_follow_the_known_services() -> None:
    registry = FakeRegistry()
    stream = AdsStream(res.Policy(), registry)
    [empty] = stream.receive(request(res.LISTENER, []))
    assert stream.wildcard and list(empty.resources) == []
    registry.listed["orders"] = {}
    [resp] = stream.refresh()
    assert len(resp.resources) == 1


def test_names_that_are_not_services_get_nothing() -> None:
    stream = AdsStream(res.Policy(), FakeRegistry())
    [resp] = stream.receive(request(res.LISTENER, ["xdstp://authority/envoy.config.listener.v3.Listener/x", ""]))
    assert list(resp.resources) == [] and stream.services() == set()


def test_unknown_type_is_ignored() -> None:
    stream = AdsStream(res.Policy(), FakeRegistry())
    assert stream.receive(request("type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig", ["x"])) == []
