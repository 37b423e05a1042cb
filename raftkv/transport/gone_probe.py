"""Is the peer's process gone? The probe a broken raft stream is followed by.

A killed process is not a silent one: its kernel closes its sockets at once, and a connect to its port is
refused. A partition, a paused process or a hung machine never refuses; the probe then times out, which
proves nothing. Only "nothing serves there" lets a follower fail over without waiting out an election
timeout (``PeerTransport``'s ``on_peer_gone``); Raft's pre-vote and check-quorum keep a wrong verdict safe.
"""

from __future__ import annotations

import asyncio
import contextlib

#: How long the connect probe after a broken stream may take. A refusal is immediate (one round trip);
#: a probe still waiting after this long is a silent peer, which is not reported.
GONE_PROBE_TIMEOUT = 0.25
#: How long an accepted probe connection is held to see whether a dying listener resets it, and how many
#: accepted-then-dropped connects in a row count as nothing serving there.
GONE_PROBE_SETTLE = 0.05
GONE_PROBE_ATTEMPTS = 3


async def nothing_serves(address: str, timeout: float, settle: float = GONE_PROBE_SETTLE) -> bool:
    """Whether nothing serves ``host:port`` any more: a TCP connect is refused (nothing listens), or each
    of a few is accepted and then closed on us before a byte (a listener closing as its process dies, or a
    relay in front of a dead process). Timing out, holding the connection, or failing otherwise (no
    route, unparsable address) proves nothing: False.

    A killed process closes its listening socket a moment after its connections, so a connect at that
    moment may still be accepted, into the backlog of a listener about to close (which then resets it);
    hence each accepted connection is held for ``settle`` seconds: a live server says nothing before our
    TLS hello and keeps it open, a dying one drops it, and the connect is tried again.
    """
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        return False
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    for _ in range(GONE_PROBE_ATTEMPTS):
        try:
            async with asyncio.timeout_at(deadline):  # not wait_for: on 3.11 it can swallow a cancel
                reader, writer = await asyncio.open_connection(host.strip("[]"), int(port))
        except ConnectionRefusedError:
            return True
        except (TimeoutError, OSError):
            return False
        try:
            async with asyncio.timeout(settle):
                dropped = await reader.read(1) == b""
        except TimeoutError:
            dropped = False
        except OSError:
            dropped = True
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        if not dropped:
            return False
    return True
