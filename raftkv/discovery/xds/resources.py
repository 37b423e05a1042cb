"""The xDS resources raftkv serves for one service: pure functions from the registry to Envoy's v3 protos.

A proxyless gRPC client that dials ``xds:///orders`` asks, in this order, for

    Listener "orders"               an API listener whose HttpConnectionManager names the route by RDS
    RouteConfiguration "orders"     one virtual host, every path to cluster "orders" (plus a hash policy
                                    when the cluster hashes)
    Cluster "orders"                type EDS, the balancing policy and outlier detection
    ClusterLoadAssignment "orders"  the registered instances, with their weights

All four carry the service name, so a resource name alone says which service's registrations it is built
from. The listener, route and cluster depend only on the service name and the ``Policy``; only the load
assignment changes as instances come and go, which is what the client expects (an EDS update moves no
connection that stays).

Only fields gRPC's xDS client reads are set (gRFC A27, A42, A50): ``LEAST_REQUEST`` is not among the
policies, because gRPC C-core NACKs it ("LB policy is not supported").
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable

from envoy.config.cluster.v3 import cluster_pb2, outlier_detection_pb2
from envoy.config.core.v3 import address_pb2, base_pb2, config_source_pb2, health_check_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import api_listener_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from google.protobuf import any_pb2, duration_pb2, message, wrappers_pb2

from raftkv.discovery import record

_PREFIX = "type.googleapis.com/"
LISTENER = _PREFIX + "envoy.config.listener.v3.Listener"
ROUTE = _PREFIX + "envoy.config.route.v3.RouteConfiguration"
CLUSTER = _PREFIX + "envoy.config.cluster.v3.Cluster"
ENDPOINT = _PREFIX + "envoy.config.endpoint.v3.ClusterLoadAssignment"
#: The order a client walks them in; also the order a server answers a new subscription in.
TYPE_URLS = (LISTENER, ROUTE, CLUSTER, ENDPOINT)
_HCM = _PREFIX + "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
_ROUTER = _PREFIX + "envoy.extensions.filters.http.router.v3.Router"


class Balancing(enum.Enum):
    ROUND_ROBIN = "round_robin"
    RING_HASH = "ring_hash"


@dataclasses.dataclass(frozen=True)
class OutlierDetection:
    """Passive ejection in the client (gRFC A50), as the cluster resource carries it.

    The anchors' defaults (Envoy, gRFC A50: interval 10 s, ``minimum_hosts`` 5, max 10 % ejected) never eject
    anything in a pool of three and take ten seconds to notice; these are tuned for small pools and fast
    notice while keeping the anchors' shape: an instance failing at least half of at least 10 calls in a
    one-second interval is ejected for 30 s times the number of times it was ejected (capped at 300 s), and
    never more than half of the pool is ejected, so a fault that hits every instance does not empty it.
    The success-rate algorithm (mean minus 1.9 standard deviations, Envoy's factor) needs 3 hosts."""

    interval_s: float = 1.0
    base_ejection_s: float = 30.0
    max_ejection_s: float = 300.0
    max_ejection_percent: int = 50
    failure_percentage_threshold: int = 50
    failure_percentage_minimum_hosts: int = 2
    failure_percentage_request_volume: int = 10
    success_rate_stdev_factor: float = 1.9
    success_rate_minimum_hosts: int = 3
    success_rate_request_volume: int = 20


@dataclasses.dataclass(frozen=True)
class Policy:
    """How clients of a service balance: one value for every service a management server serves."""

    balancing: Balancing = Balancing.ROUND_ROBIN
    #: Request header hashed for ``RING_HASH`` affinity; calls without it land on a random instance.
    hash_header: str = "x-affinity-key"
    #: gRFC A42's defaults (1024) and its cap on the client side (4096 entries).
    min_ring_size: int = 1024
    max_ring_size: int = 4096
    outlier_detection: OutlierDetection | None = dataclasses.field(default_factory=OutlierDetection)
    connect_timeout_s: float = 1.0
    #: gRPC status names the client retries on another instance (gRFC A44), e.g. ``("unavailable",)``;
    #: empty: no retries. Only for services whose calls are idempotent, so it is off unless asked for.
    retry_on: tuple[str, ...] = ()
    num_retries: int = 2


def _duration(seconds: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(int(seconds * 1e9))
    return d


def _pack(msg: message.Message, type_url: str) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(msg, type_url_prefix=_PREFIX)
    assert packed.type_url == type_url, (packed.type_url, type_url)
    return packed


def _ads() -> config_source_pb2.ConfigSource:
    """"Ask the server you are already talking to", over the aggregated stream."""
    return config_source_pb2.ConfigSource(ads=config_source_pb2.AggregatedConfigSource(),
                                          resource_api_version=config_source_pb2.V3)


def listener(service: str) -> listener_pb2.Listener:
    manager = hcm_pb2.HttpConnectionManager(
        rds=hcm_pb2.Rds(config_source=_ads(), route_config_name=service),
        http_filters=[hcm_pb2.HttpFilter(name="envoy.filters.http.router",
                                         typed_config=_pack(router_pb2.Router(), _ROUTER))],
    )
    return listener_pb2.Listener(name=service,
                                 api_listener=api_listener_pb2.ApiListener(api_listener=_pack(manager, _HCM)))


def route(service: str, policy: Policy) -> route_pb2.RouteConfiguration:
    action = route_components_pb2.RouteAction(cluster=service)
    if policy.retry_on:
        action.retry_policy.CopyFrom(route_components_pb2.RetryPolicy(
            retry_on=",".join(policy.retry_on), num_retries=wrappers_pb2.UInt32Value(value=policy.num_retries)))
    if policy.balancing is Balancing.RING_HASH:
        action.hash_policy.append(route_components_pb2.RouteAction.HashPolicy(
            header=route_components_pb2.RouteAction.HashPolicy.Header(header_name=policy.hash_header)))
    return route_pb2.RouteConfiguration(name=service, virtual_hosts=[route_components_pb2.VirtualHost(
        name=service, domains=["*"],
        routes=[route_components_pb2.Route(match=route_components_pb2.RouteMatch(prefix=""), route=action)])])


def _outlier(config: OutlierDetection) -> outlier_detection_pb2.OutlierDetection:
    u32 = wrappers_pb2.UInt32Value
    return outlier_detection_pb2.OutlierDetection(
        interval=_duration(config.interval_s),
        base_ejection_time=_duration(config.base_ejection_s),
        max_ejection_time=_duration(config.max_ejection_s),
        max_ejection_percent=u32(value=config.max_ejection_percent),
        enforcing_success_rate=u32(value=100),
        success_rate_minimum_hosts=u32(value=config.success_rate_minimum_hosts),
        success_rate_request_volume=u32(value=config.success_rate_request_volume),
        success_rate_stdev_factor=u32(value=int(config.success_rate_stdev_factor * 1000)),
        failure_percentage_threshold=u32(value=config.failure_percentage_threshold),
        enforcing_failure_percentage=u32(value=100),
        failure_percentage_minimum_hosts=u32(value=config.failure_percentage_minimum_hosts),
        failure_percentage_request_volume=u32(value=config.failure_percentage_request_volume),
    )


def cluster(service: str, policy: Policy) -> cluster_pb2.Cluster:
    resource = cluster_pb2.Cluster(
        name=service, type=cluster_pb2.Cluster.EDS,
        eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(eds_config=_ads(), service_name=service),
        connect_timeout=_duration(policy.connect_timeout_s),
    )
    if policy.balancing is Balancing.RING_HASH:
        resource.lb_policy = cluster_pb2.Cluster.RING_HASH
        resource.ring_hash_lb_config.CopyFrom(cluster_pb2.Cluster.RingHashLbConfig(
            minimum_ring_size=wrappers_pb2.UInt64Value(value=policy.min_ring_size),
            maximum_ring_size=wrappers_pb2.UInt64Value(value=policy.max_ring_size),
            hash_function=cluster_pb2.Cluster.RingHashLbConfig.XX_HASH))
    else:
        resource.lb_policy = cluster_pb2.Cluster.ROUND_ROBIN
    if policy.outlier_detection is not None:
        resource.outlier_detection.CopyFrom(_outlier(policy.outlier_detection))
    return resource


def _socket_address(addr: str) -> address_pb2.Address:
    host, _, port = record.check_addr(addr).rpartition(":")
    return address_pb2.Address(socket_address=address_pb2.SocketAddress(
        address=host.strip("[]"), port_value=int(port)))


def load_assignment(service: str, instances: Iterable[record.Instance]) -> endpoint_pb2.ClusterLoadAssignment:
    """Every registered instance, healthy (registrations are withdrawn while their health check fails),
    weighted by its metadata's ``weight``; sorted by address so equal sets give equal bytes."""
    endpoints = [
        endpoint_components_pb2.LbEndpoint(
            endpoint=endpoint_components_pb2.Endpoint(address=_socket_address(i.addr)),
            health_status=health_check_pb2.HEALTHY,
            load_balancing_weight=wrappers_pb2.UInt32Value(value=i.weight))
        for i in sorted(instances, key=lambda i: (i.addr, i.id))
    ]
    return endpoint_pb2.ClusterLoadAssignment(cluster_name=service, endpoints=[
        endpoint_components_pb2.LocalityLbEndpoints(
            locality=base_pb2.Locality(), lb_endpoints=endpoints,
            load_balancing_weight=wrappers_pb2.UInt32Value(value=1))])


def build(type_url: str, service: str, policy: Policy,
          instances: Iterable[record.Instance] = ()) -> any_pb2.Any:
    """One resource of ``type_url`` for ``service``, packed as a discovery response carries it."""
    if type_url == LISTENER:
        return _pack(listener(service), type_url)
    if type_url == ROUTE:
        return _pack(route(service, policy), type_url)
    if type_url == CLUSTER:
        return _pack(cluster(service, policy), type_url)
    if type_url == ENDPOINT:
        return _pack(load_assignment(service, instances), type_url)
    raise ValueError(f"unknown xDS resource type {type_url}")
