"""The resources a gRPC xDS client reads, field by field."""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2

from raftkv.discovery.record import Instance
from raftkv.discovery.xds import resources as res


def test_listener_names_its_route_over_ads() -> None:
    packed = res.build(res.LISTENER, "orders", res.Policy())
    listener = listener_pb2.Listener()
    assert packed.Unpack(listener) and listener.name == "orders"
    manager = http_connection_manager_pb2.HttpConnectionManager()
    assert listener.api_listener.api_listener.Unpack(manager)
    assert manager.rds.route_config_name == "orders" and manager.rds.config_source.HasField("ads")
    assert [f.name for f in manager.http_filters] == ["envoy.filters.http.router"]


def test_round_robin_cluster_with_outlier_detection() -> None:
    cluster = res.cluster("orders", res.Policy())
    assert cluster.type == cluster_pb2.Cluster.EDS and cluster.lb_policy == cluster_pb2.Cluster.ROUND_ROBIN
    assert cluster.eds_cluster_config.service_name == "orders"
    od = cluster.outlier_detection
    assert od.interval.seconds == 1 and od.base_ejection_time.seconds == 30
    assert od.max_ejection_percent.value == 50 and od.success_rate_stdev_factor.value == 1900
    assert not res.cluster("orders", res.Policy(outlier_detection=None)).HasField("outlier_detection")


def test_ring_hash_cluster_and_route_hash_policy() -> None:
    policy = res.Policy(balancing=res.Balancing.RING_HASH, hash_header="x-user")
    cluster = res.cluster("orders", policy)
    assert cluster.lb_policy == cluster_pb2.Cluster.RING_HASH
    assert cluster.ring_hash_lb_config.minimum_ring_size.value == 1024
    route = res.route("orders", policy)
    [action] = [r.route for r in route.virtual_hosts[0].routes]
    assert action.cluster == "orders" and action.hash_policy[0].header.header_name == "x-user"
    assert not res.route("orders", res.Policy()).virtual_hosts[0].routes[0].route.hash_policy


def test_load_assignment_weights_sorted_and_ipv6() -> None:
    cla = res.load_assignment("orders", [Instance("b", "[::1]:9", {"weight": 5}), Instance("a", "127.0.0.1:8")])
    endpoints = cla.endpoints[0].lb_endpoints
    got = [(e.endpoint.address.socket_address.address, e.endpoint.address.socket_address.port_value,
            e.load_balancing_weight.value) for e in endpoints]
    assert got == [("127.0.0.1", 8, 1), ("::1", 9, 5)]
    assert cla.endpoints[0].load_balancing_weight.value == 1


def test_retry_policy_only_when_asked() -> None:
    assert not res.route("orders", res.Policy()).virtual_hosts[0].routes[0].route.HasField("retry_policy")
    retry = res.route("orders", res.Policy(retry_on=("unavailable",))).virtual_hosts[0].routes[0].route.retry_policy
    assert retry.retry_on == "unavailable" and retry.num_retries.value == 2
