"""The gRPC channel arguments every raftkv server and channel uses (research notes §4.2).

- ``grpc.so_reuseport`` is on by default in gRPC: a second node started on the same port would not fail
  but silently share the traffic. Servers turn it off so a port clash is an error.
- Keepalive must be agreed by both ends: a server that refuses pings more often than every 5 minutes
  answers an eager client with GOAWAY ``too_many_pings``. Servers here accept pings every 5 s, even
  without calls, and never count strikes; channels ping every 10 s so a dead peer is noticed quickly
  (a Raft stream or a watch can be idle for long stretches).
- Message size limits are explicit parameters: the server's receive limit bounds a request (etcd uses the
  request limit plus 512 KiB of framing), and the Raft transport needs room for a full batch of entries.
"""

from __future__ import annotations

ChannelArgs = list[tuple[str, int | str]]

DEFAULT_MAX_MESSAGE_BYTES = 4 << 20
MIN_PING_INTERVAL_MS = 5_000
KEEPALIVE_TIME_MS = 10_000
KEEPALIVE_TIMEOUT_MS = 5_000


def _keepalive(time_ms: int = KEEPALIVE_TIME_MS, timeout_ms: int = KEEPALIVE_TIMEOUT_MS) -> ChannelArgs:
    return [
        ("grpc.keepalive_time_ms", time_ms),
        ("grpc.keepalive_timeout_ms", timeout_ms),
        ("grpc.keepalive_permit_without_calls", 1),
    ]


def server_options(
    max_receive_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, max_send_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
) -> ChannelArgs:
    """Arguments for ``grpc.aio.server(options=...)``."""
    assert max_receive_bytes > 0 and max_send_bytes > 0
    return [
        ("grpc.so_reuseport", 0),
        ("grpc.max_receive_message_length", max_receive_bytes),
        ("grpc.max_send_message_length", max_send_bytes),
        ("grpc.http2.min_ping_interval_without_data_ms", MIN_PING_INTERVAL_MS),
        ("grpc.http2.max_ping_strikes", 0),  # 0: never GOAWAY a client for pinging too often
        *_keepalive(),
    ]


def channel_options(
    max_receive_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    max_send_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    max_reconnect_backoff_ms: int | None = None,
    target_name_override: str | None = None,
    keepalive_time_ms: int = KEEPALIVE_TIME_MS,
    keepalive_timeout_ms: int = KEEPALIVE_TIMEOUT_MS,
) -> ChannelArgs:
    """Arguments for ``grpc.aio.secure_channel``/``insecure_channel``.

    ``max_reconnect_backoff_ms`` caps gRPC's own reconnect backoff (default 120 s), which Raft peers want
    short: a member that comes back should be reached within about a second. gRPC also uses the minimum
    reconnect backoff as the connect timeout (20 s by default), so it is set to the same cap: an attempt
    to reach a blackholed peer gives up after about a second instead of stalling its queue for 20 s.
    Keepalive bounds how long a silently dead connection goes unnoticed. ``target_name_override``
    makes TLS check that name instead of the dialled host, for dialling through a proxy in tests.
    """
    assert max_receive_bytes > 0 and max_send_bytes > 0
    options: ChannelArgs = [
        ("grpc.max_receive_message_length", max_receive_bytes),
        ("grpc.max_send_message_length", max_send_bytes),
        ("grpc.http2.max_pings_without_data", 0),
        *_keepalive(keepalive_time_ms, keepalive_timeout_ms),
    ]
    if max_reconnect_backoff_ms is not None:
        options += [
            ("grpc.initial_reconnect_backoff_ms", min(100, max_reconnect_backoff_ms)),
            ("grpc.min_reconnect_backoff_ms", max_reconnect_backoff_ms),
            ("grpc.max_reconnect_backoff_ms", max_reconnect_backoff_ms),
        ]
    if target_name_override is not None:
        options.append(("grpc.ssl_target_name_override", target_name_override))
    return options
