"""What a registration looks like in the store: one key per instance, etcd's endpoints-manager JSON value.

The key is ``<namespace>/<service>/<instance-id>`` and the value is the JSON that etcd's Go
``naming/endpoints`` manager writes (``{"Op":0,"Addr":"host:port","Metadata":{...}}``), so grpc-go's
``etcd:///`` resolver, ``etcdctl get --prefix`` and raftkv read the same records. The instance id defaults to
the address, as in etcd's own examples: a restarted instance overwrites its old key instead of leaving a
second one behind.

Every rule about names and values lives here, once: the resolver, the registrar, ``kvctl service`` and the
web page all call it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

DEFAULT_NAMESPACE = "/services"
#: etcd's ``endpoints.Add`` operation; ``Delete`` (1) is never stored, only sent over Go's update channel.
OP_ADD = 0
#: The metadata key a balancer reads an instance's relative weight from.
WEIGHT_KEY = "weight"
#: Bound on the weight, so one instance cannot claim the whole ring or a scheduler's whole cycle.
MAX_WEIGHT = 1000


class RecordError(ValueError):
    """A service name, address or stored value does not follow the registration format."""


def check_name(what: str, name: str) -> str:
    """Service names and instance ids are one key segment: non-empty, no ``/``, no surrounding space."""
    if not name or "/" in name or name != name.strip():
        raise RecordError(f"{what} {name!r} must be a non-empty key segment without '/' or surrounding spaces")
    return name


def check_addr(addr: str) -> str:
    """``host:port`` with a numeric port (``[v6]:port`` too): what gRPC's ``ipv4:``/``dns:`` targets take."""
    host, sep, port = addr.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise RecordError(f"address {addr!r} must be host:port with a port between 1 and 65535")
    return addr


def normalize_namespace(namespace: str) -> str:
    """``/services`` and ``/services/`` name the same namespace; the empty string is the key space root."""
    return namespace.rstrip("/")


def service_prefix(service: str, namespace: str = DEFAULT_NAMESPACE) -> str:
    """The prefix holding a service's instances, always with its trailing slash: ``foo`` must not match
    ``foo2/...`` (etcd fixed exactly that bug in its resolver, PR #15021)."""
    return f"{normalize_namespace(namespace)}/{check_name('service name', service)}/"


def instance_key(service: str, instance_id: str, namespace: str = DEFAULT_NAMESPACE) -> str:
    return service_prefix(service, namespace) + check_name("instance id", instance_id)


def parse_weight(metadata: Mapping[str, Any]) -> int:
    """The weight an instance asked for in its metadata (default 1); bad values are refused loudly."""
    raw = metadata.get(WEIGHT_KEY, 1)
    try:
        weight = float(raw)
    except (TypeError, ValueError):
        raise RecordError(f"weight {raw!r} is not a number") from None
    if not math.isfinite(weight) or weight != int(weight) or not 1 <= weight <= MAX_WEIGHT:
        raise RecordError(f"weight {raw!r} must be a whole number from 1 to {MAX_WEIGHT}")
    return int(weight)


@dataclass(frozen=True)
class Instance:
    """One registered instance of a service, as every consumer of the registry sees it."""

    id: str
    addr: str
    metadata: Mapping[str, Any] = field(default_factory=dict)
    #: The lease the key is attached to (0: none) and the revision that last wrote it.
    lease: int = 0
    mod_revision: int = 0

    @property
    def weight(self) -> int:
        return parse_weight(self.metadata)

    def same_endpoint(self, other: Instance) -> bool:
        """Equal for a balancer: the lease or revision changing (a re-registration) is not a new endpoint."""
        return self.addr == other.addr and dict(self.metadata) == dict(other.metadata)


def encode(addr: str, metadata: Mapping[str, Any] | None = None) -> bytes:
    """The stored value for ``addr``: the JSON of Go's ``internal.Update{Op, Addr, Metadata}`` (fields in
    declaration order, map keys sorted, as ``json.Marshal`` writes them)."""
    check_addr(addr)
    if metadata is not None:
        parse_weight(metadata)
        metadata = {k: metadata[k] for k in sorted(metadata)}
    update = {"Op": OP_ADD, "Addr": addr, "Metadata": None if metadata is None else metadata}
    return json.dumps(update, separators=(",", ":")).encode()


def decode(key: bytes, value: bytes, *, lease: int = 0, mod_revision: int = 0) -> Instance:
    """The instance a stored key-value describes; raises ``RecordError`` for anything else."""
    instance_id = key.decode("utf-8", "replace").rsplit("/", 1)[-1]
    try:
        update = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RecordError(f"{key!r}: value is not JSON ({exc})") from None
    if not isinstance(update, dict) or update.get("Op", OP_ADD) != OP_ADD or not isinstance(update.get("Addr"), str):
        raise RecordError(f"{key!r}: value is not an endpoints-manager Add update with an Addr")
    metadata = update.get("Metadata")
    if metadata is None:
        metadata = {}
    elif not isinstance(metadata, dict):
        metadata = {"value": metadata}  # Go allows any JSON here; keep it visible without guessing
    instance = Instance(instance_id, check_addr(update["Addr"]), metadata, lease, mod_revision)
    _ = instance.weight  # refuse a bad weight here, not in the middle of a pick
    return instance
