"""How to reach a cluster: endpoints plus transport security, from arguments or the environment.

Kept separate from the clients so that the launcher (`raftkv.localcluster`), `kvctl` and both clients
build channels the same way: a channel that works for one of them works for all of them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path

import grpc
import grpc.aio

from raftkv.security.grpc_options import channel_options

DEFAULT_ENDPOINT = "127.0.0.1:2379"

def _channel_options() -> list[tuple[str, int | str]]:
    """The project's channel arguments, minus pings on idle connections: etcd's server counts those as
    abuse (PermitWithoutStream=false) and answers with GOAWAY, and a client has nothing to keep alive
    between calls. Streams (watch, lease keep-alive) are still pinged."""
    options = channel_options(max_receive_bytes=MAX_RECEIVE_BYTES, max_send_bytes=MAX_SEND_BYTES,
                              max_reconnect_backoff_ms=1_000)
    return [(k, v) for k, v in options if k != "grpc.keepalive_permit_without_calls"]


#: etcd's default request limit is 1.5 MiB; gRPC's own limit is set above it so that the server, not
#: the client library, gets to refuse a large request with etcd's "request is too large".
MAX_SEND_BYTES = 2 * 1024 * 1024 + 512 * 1024
MAX_RECEIVE_BYTES = 64 * 1024 * 1024  # ranges and snapshots chunks can be large; the server bounds them


class ConfigError(ValueError):
    """The connection settings are unusable (missing certificate files, half a key pair, ...)."""


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def split_endpoint(endpoint: str) -> tuple[str, str | None]:
    """Return (``host:port`` gRPC target, scheme or None) for an etcdctl-style endpoint."""
    for scheme in ("https", "http"):
        prefix = f"{scheme}://"
        if endpoint.startswith(prefix):
            return endpoint[len(prefix):].rstrip("/"), scheme
    return endpoint.rstrip("/"), None


def split_user(user: str | None, password: str | None = None) -> dict[str, str | None]:
    """``name:password`` (etcdctl's ``--user``) into its parts; a separate ``password`` wins."""
    if user is None:
        return {"user": None, "password": password}
    name, colon, inline = user.partition(":")
    return {"user": name, "password": password if password is not None else (inline if colon else None)}


@dataclass(frozen=True)
class ClientConfig:
    """Endpoints and credentials. Mutual TLS unless ``insecure`` (the server default is mTLS too).

    ``http://`` endpoints force plaintext and ``https://`` force TLS, as with etcdctl; a bare
    ``host:port`` follows ``insecure``.
    """

    endpoints: tuple[str, ...] = (DEFAULT_ENDPOINT,)
    cacert: str | None = None
    cert: str | None = None
    key: str | None = None
    insecure: bool = False
    dial_timeout: float = 2.0
    #: etcd user and password: the client authenticates and sends the token with every call (etcdctl's
    #: ``--user name:password``). Without them, with a client certificate, the server takes its CN as user.
    user: str | None = None
    password: str | None = None

    def __post_init__(self) -> None:
        if not self.endpoints:
            raise ConfigError("no endpoints given; pass --endpoints or set KVCTL_ENDPOINTS")
        if (self.cert is None) != (self.key is None):
            raise ConfigError("--cert and --key must be given together")
        if self.password is not None and not self.user:
            raise ConfigError("a password needs a user name (--user name:password)")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> ClientConfig:
        """Read KVCTL_ENDPOINTS/CACERT/CERT/KEY/INSECURE/USER/PASSWORD; explicit non-None ``overrides``
        win. KVCTL_USER may be ``name:password``, as etcdctl's ``--user``."""
        env = os.environ if env is None else env
        values: dict[str, object] = {
            "endpoints": tuple(e for e in env.get("KVCTL_ENDPOINTS", DEFAULT_ENDPOINT).split(",") if e),
            "cacert": env.get("KVCTL_CACERT") or None,
            "cert": env.get("KVCTL_CERT") or None,
            "key": env.get("KVCTL_KEY") or None,
            "insecure": _truthy(env.get("KVCTL_INSECURE")),
            **split_user(env.get("KVCTL_USER") or None, env.get("KVCTL_PASSWORD")),
        }
        for name, value in overrides.items():
            if value is not None:
                values[name] = tuple(value) if name == "endpoints" else value  # type: ignore[arg-type]
        return cls(**values)  # type: ignore[arg-type]

    def login(self) -> tuple[str, str] | None:
        """(user, password) to authenticate with, or None to rely on the certificate."""
        return None if not self.user else (self.user, self.password or "")

    def with_endpoints(self, endpoints: Sequence[str]) -> ClientConfig:
        return replace(self, endpoints=tuple(endpoints))

    def uses_tls(self, endpoint: str) -> bool:
        _, scheme = split_endpoint(endpoint)
        return scheme == "https" or (scheme is None and not self.insecure)

    @cached_property
    def credentials(self) -> grpc.ChannelCredentials:
        """mTLS credentials, read once per config (every channel of a client shares them)."""
        def read(path: str | None, what: str) -> bytes | None:
            if path is None:
                return None
            try:
                return Path(path).read_bytes()
            except OSError as exc:
                raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from exc

        return grpc.ssl_channel_credentials(
            root_certificates=read(self.cacert, "CA certificate"),
            private_key=read(self.key, "client key"),
            certificate_chain=read(self.cert, "client certificate"),
        )

    def channel(self, endpoint: str) -> grpc.Channel:
        """A blocking channel to one endpoint."""
        target, _ = split_endpoint(endpoint)
        if self.uses_tls(endpoint):
            return grpc.secure_channel(target, self.credentials, options=_channel_options())
        return grpc.insecure_channel(target, options=_channel_options())

    def aio_channel(self, endpoint: str) -> grpc.aio.Channel:
        """An asyncio channel to one endpoint (create it inside the running event loop)."""
        target, _ = split_endpoint(endpoint)
        if self.uses_tls(endpoint):
            return grpc.aio.secure_channel(target, self.credentials, options=_channel_options())
        return grpc.aio.insecure_channel(target, options=_channel_options())
