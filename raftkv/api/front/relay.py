"""The relay process: copies gRPC connections' bytes to and from grpcio's private listener.

The member hands each gRPC client connection over by file descriptor (``SCM_RIGHTS`` on a
``SOCK_SEQPACKET`` socket pair); the relay dials grpcio's private unix socket for it and moves bytes both
ways until either side closes, passing half-closes on. It never parses what it moves: TLS runs end to end
between the client and grpcio.

It runs as a process of its own (``python -m raftkv.api.front.relay``) so that none of the copying lands
on the member's Python thread: one ``epoll`` loop, level-triggered, one ``recv_into``/``send`` pair per
readable event, and a backlog only when the destination is full (then the source is not read until the
backlog drains — backpressure instead of buffering without bound).

The relay ends when the member's end of the socket pair closes (the member stopped or died), so it never
outlives its member.
"""

from __future__ import annotations

import argparse
import errno
import logging
import resource
import select
import socket
import sys

log = logging.getLogger("raftkv.relay")

#: Bytes moved per read. gRPC messages are mostly small; a large Range answer moves in chunks of this.
CHUNK_BYTES = 256 * 1024
#: File descriptors the member may hand over in one message.
MAX_FDS_PER_MESSAGE = 64
#: How long dialling grpcio's private listener may take before the client connection is dropped.
UPSTREAM_CONNECT_TIMEOUT = 2.0

_IN, _OUT = select.EPOLLIN, select.EPOLLOUT
_HANGUP = select.EPOLLHUP | select.EPOLLERR
_GONE = (errno.ECONNRESET, errno.EPIPE, errno.ENOTCONN, errno.ETIMEDOUT)


class _Direction:
    """Bytes flowing from ``src`` to ``dst``: ``backlog`` holds what ``dst`` could not take yet."""

    __slots__ = ("src", "dst", "backlog", "eof")

    def __init__(self, src: socket.socket, dst: socket.socket) -> None:
        self.src, self.dst = src, dst
        self.backlog = b""
        self.eof = False


class _Link:
    """One client connection and its upstream connection to grpcio."""

    __slots__ = ("client", "upstream", "client_fd", "upstream_fd", "up", "down")

    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client, self.upstream = client, upstream
        self.client_fd, self.upstream_fd = client.fileno(), upstream.fileno()
        self.up = _Direction(client, upstream)
        self.down = _Direction(upstream, client)

    def finished(self) -> bool:
        return self.up.eof and self.down.eof and not self.up.backlog and not self.down.backlog


class Relay:
    """The event loop. ``control`` is the relay's end of the socket pair the member hands sockets over."""

    def __init__(self, control: socket.socket, upstream_address: str) -> None:
        self._control = control
        self._upstream_address = upstream_address
        self._epoll = select.epoll()
        self._links: dict[int, _Link] = {}  # by the fileno of either of its sockets
        self._interest: dict[int, int] = {}
        self._buffer = bytearray(CHUNK_BYTES)
        self._view = memoryview(self._buffer)

    def run(self) -> None:
        self._epoll.register(self._control.fileno(), _IN)
        control_fd = self._control.fileno()
        while True:
            try:
                events = self._epoll.poll()
            except InterruptedError:
                continue
            for fd, mask in events:
                if fd == control_fd:
                    if not self._receive_sockets():
                        return
                    continue
                link = self._links.get(fd)
                if link is not None:
                    self._on_event(link, fd, mask)

    # ------------------------------------------------------------------ hand-over
    def _receive_sockets(self) -> bool:
        """Take the sockets the member sent; False once the member is gone."""
        try:
            message, fds, _flags, _address = socket.recv_fds(self._control, 16, MAX_FDS_PER_MESSAGE)
        except InterruptedError:
            return True
        except OSError as exc:
            log.error("relay: the member's control socket failed: %s", exc)
            return False
        if not message and not fds:
            return False
        for fd in fds:
            self._open(socket.socket(fileno=fd))
        return True

    def _open(self, client: socket.socket) -> None:
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            upstream.settimeout(UPSTREAM_CONNECT_TIMEOUT)
            upstream.connect(self._upstream_address)
        except OSError as exc:
            log.warning("relay: cannot reach the gRPC server at %r: %s", self._upstream_address, exc)
            upstream.close()
            client.close()
            return
        client.setblocking(False)
        upstream.setblocking(False)
        link = _Link(client, upstream)
        for sock in (client, upstream):
            self._links[sock.fileno()] = link
            self._interest[sock.fileno()] = _IN
            self._epoll.register(sock.fileno(), _IN)

    # ------------------------------------------------------------------ moving bytes
    def _on_event(self, link: _Link, fd: int, mask: int) -> None:
        """The fast path is one read and one write; interests change only when a backlog starts or ends."""
        incoming, outgoing = (link.up, link.down) if fd == link.client_fd else (link.down, link.up)
        changed = False
        try:
            if mask & _OUT and outgoing.backlog:
                changed = self._flush(outgoing)
            if mask & (_IN | _HANGUP) and not incoming.backlog and not incoming.eof:
                changed = self._pump(incoming) or changed
        except OSError as exc:
            if exc.errno not in _GONE:
                log.warning("relay: connection failed: %s", exc)
            self._close(link)
            return
        if link.finished() or (mask & _HANGUP and not mask & _IN):
            self._close(link)
        elif changed:
            self._update(link)

    def _pump(self, direction: _Direction) -> bool:
        """Move one chunk; True if the direction ended or now has a backlog."""
        try:
            count = direction.src.recv_into(self._buffer)
        except (BlockingIOError, InterruptedError):
            return False
        if count == 0:
            direction.eof = True
            direction.dst.shutdown(socket.SHUT_WR)
            return True
        try:
            sent = direction.dst.send(self._view[:count])
        except (BlockingIOError, InterruptedError):
            sent = 0
        if sent == count:
            return False
        direction.backlog = bytes(self._view[sent:count])
        return True

    def _flush(self, direction: _Direction) -> bool:
        """Write what is waiting; True once nothing is left."""
        try:
            sent = direction.dst.send(direction.backlog)
        except (BlockingIOError, InterruptedError):
            return False
        direction.backlog = direction.backlog[sent:]
        return not direction.backlog

    def _update(self, link: _Link) -> None:
        """Read a socket only while its direction has no backlog; watch for writability while it has one."""
        for fd, incoming, outgoing in ((link.client_fd, link.up, link.down), (link.upstream_fd, link.down, link.up)):
            wanted = (0 if incoming.backlog or incoming.eof else _IN) | (_OUT if outgoing.backlog else 0)
            if self._interest.get(fd) != wanted:
                self._interest[fd] = wanted
                self._epoll.modify(fd, wanted)

    def _close(self, link: _Link) -> None:
        for fd, sock in ((link.client_fd, link.client), (link.upstream_fd, link.upstream)):
            if self._links.pop(fd, None) is not None:
                self._interest.pop(fd, None)
                self._epoll.unregister(fd)
            sock.close()


def _raise_fd_limit() -> None:
    """Two descriptors per relayed connection: use the hard limit, not the (often 1024) soft one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m raftkv.api.front.relay", description=__doc__.splitlines()[0])
    parser.add_argument("--control-fd", type=int, required=True, help="the relay's end of the socket pair")
    parser.add_argument("--upstream", required=True, help="grpcio's unix socket (a leading @ means abstract)")
    parser.add_argument("--name", default="", help="the member's name, for log lines")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"%(asctime)s %(levelname)s {args.name} %(name)s: %(message)s")
    _raise_fd_limit()
    control = socket.socket(fileno=args.control_fd)
    upstream = "\0" + args.upstream[1:] if args.upstream.startswith("@") else args.upstream
    try:
        Relay(control, upstream).run()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
