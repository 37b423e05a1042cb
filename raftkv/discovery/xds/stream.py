"""One aggregated discovery stream (ADS, state of the world), as a sans-I/O state machine.

The client sends a ``DiscoveryRequest`` per resource type: the names it wants, the version it last
accepted and the nonce of the response it is answering (with ``error_detail`` set when it rejects it, a
NACK). The server answers with every wanted resource of that type it has, a version and a fresh nonce.
``AdsStream`` holds, per type, what the client asked for and what was last sent; the driver
(``server.py``) feeds it requests and "the registry changed" ticks and writes out what it returns.

Rules kept here, once (the xDS protocol, envoyproxy's "xDS REST and gRPC protocol" document):

- A request whose nonce is not the latest one sent for its type answers a response the client has not
  seen the newest of: it is ignored, the client will ACK or NACK the newer one with its current names.
- A version is a digest of the bytes sent, so a tick that changes nothing sends nothing, and a version a
  client NACKed is not sent again until the resources change.
- A load assignment is sent only once its service has been listed: sending an empty one first would fail
  the client's first calls for want of endpoints, while holding it back only delays them.
- A name that is not a service name (an ``xdstp://`` name, a path) gets no resource: the client treats it
  as absent after its own timeout, which is what it is.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import logging
from collections.abc import Iterable, Mapping
from typing import Protocol

from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2

from raftkv.discovery import record
from raftkv.discovery.xds import resources

log = logging.getLogger("raftkv.discovery.xds")


class Registry(Protocol):
    """What a stream reads: the services known, and the instances of one once it has been listed."""

    def services(self) -> Iterable[str]: ...

    def instances(self, service: str) -> Mapping[str, record.Instance] | None:
        """None until the service's first listing arrived."""


def is_service_name(name: str) -> bool:
    try:
        record.check_name("service name", name)
    except record.RecordError:
        return False
    return True


@dataclasses.dataclass
class _TypeState:
    names: frozenset[str] = frozenset()
    #: An empty first request for listeners or clusters means "all of them" (Envoy asks so; gRPC never).
    wildcard: bool = False
    subscribed: bool = False
    sent_version: str = ""
    sent_nonce: str = ""
    acked_version: str = ""
    nacked_version: str = ""
    last_error: str = ""


class AdsStream:
    """The server side of one ADS stream; see the module docstring."""

    def __init__(self, policy: resources.Policy, registry: Registry) -> None:
        self.policy, self.registry = policy, registry
        self.node_id = ""
        self._types: dict[str, _TypeState] = {}
        self._nonces = itertools.count(1)

    def services(self) -> set[str]:
        """Every service some subscription of this stream names: the ones whose registry must be followed."""
        wanted: set[str] = set()
        for state in self._types.values():
            wanted.update(n for n in state.names if is_service_name(n))
        return wanted

    @property
    def wildcard(self) -> bool:
        """True if some subscription asks for every resource of its type (a new service concerns it)."""
        return any(s.wildcard for s in self._types.values())

    def state(self, type_url: str) -> _TypeState | None:
        return self._types.get(type_url)

    def receive(self, request: discovery_pb2.DiscoveryRequest) -> list[discovery_pb2.DiscoveryResponse]:
        """Fold one request in; returns the responses to send (none or one)."""
        if request.node.id:
            self.node_id = request.node.id
        type_url = request.type_url
        if type_url not in resources.TYPE_URLS:
            log.warning("xDS client %s asked for unknown type %s; ignored", self.node_id, type_url)
            return []
        state = self._types.setdefault(type_url, _TypeState())
        if request.response_nonce and request.response_nonce != state.sent_nonce:
            return []  # stale: it answers an older response than the newest one sent
        if not state.subscribed:
            state.subscribed = True
            state.wildcard = not request.resource_names and type_url in (resources.LISTENER, resources.CLUSTER)
        state.names = frozenset(request.resource_names)
        if request.response_nonce:
            if request.HasField("error_detail"):
                state.nacked_version, state.last_error = state.sent_version, request.error_detail.message
                log.warning("xDS client %s rejected %s version %s: %s", self.node_id, _short(type_url),
                            state.sent_version, state.last_error)
            else:
                state.acked_version, state.last_error = request.version_info, ""
        response = self._response(type_url, state, force=not request.response_nonce)
        return [] if response is None else [response]

    def refresh(self) -> list[discovery_pb2.DiscoveryResponse]:
        """The registry changed: the responses that bring the client up to date, in LDS→EDS order."""
        out = []
        for type_url in resources.TYPE_URLS:
            state = self._types.get(type_url)
            if state is not None and state.subscribed:
                response = self._response(type_url, state, force=False)
                if response is not None:
                    out.append(response)
        return out

    def _names(self, state: _TypeState) -> list[str]:
        names = set(self.registry.services()) if state.wildcard else state.names
        return sorted(n for n in names if is_service_name(n))

    def _resources(self, type_url: str, state: _TypeState) -> list[any_pb2.Any]:
        out = []
        for name in self._names(state):
            if type_url == resources.ENDPOINT:
                instances = self.registry.instances(name)
                if instances is None:
                    continue
                out.append(resources.build(type_url, name, self.policy, instances.values()))
            else:
                out.append(resources.build(type_url, name, self.policy))
        return out

    def _response(self, type_url: str, state: _TypeState,
                  force: bool) -> discovery_pb2.DiscoveryResponse | None:
        """A response if what the client should have differs from what it was sent. ``force``: the client
        (re)opened the subscription without answering anything, so it has nothing: send even if equal."""
        body = self._resources(type_url, state)
        version = _digest(body)
        if not force and version == state.sent_version:
            return None
        if version == state.nacked_version and not force:
            return None
        state.sent_version, state.sent_nonce = version, str(next(self._nonces))
        return discovery_pb2.DiscoveryResponse(version_info=version, resources=body, type_url=type_url,
                                               nonce=state.sent_nonce)


def _digest(body: list[any_pb2.Any]) -> str:
    h = hashlib.sha256()
    for item in body:
        h.update(item.SerializeToString(deterministic=True))
        h.update(b"\0")
    return h.hexdigest()[:16]


def _short(type_url: str) -> str:
    return type_url.rsplit(".", 1)[-1]
