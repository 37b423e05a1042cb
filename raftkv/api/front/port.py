"""The client port: accept, classify by the first bytes, then hand gRPC to the relay and serve HTTP here.

The member keeps the listening socket (so a port in use is reported at start-up as before, and the port is
free the moment the member dies) and does only this per connection on its own thread: one ``accept``, one
``recv(MSG_PEEK)`` (rarely a few, for a client that sends its first bytes slowly) and, for gRPC, one
``sendmsg`` handing the descriptor to the relay process. Everything after that for gRPC is the relay's
and grpcio's.

Limits, so that slow or hostile clients cannot exhaust the member: a connection must say what it is within
``CLASSIFY_TIMEOUT`` seconds; at most ``MAX_UNCLASSIFIED`` connections may be undecided at once (more are
closed on arrival); at most ``MAX_HTTP_CONNECTIONS`` HTTP connections are served at once; a TLS handshake
for HTTP must finish within ``TLS_HANDSHAKE_TIMEOUT``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from raftkv.api.front.classify import PEEK_BYTES, Route, classify
from raftkv.process_stat import process_cpu_seconds

log = logging.getLogger("raftkv.front")

CLASSIFY_TIMEOUT = 10.0
MAX_UNCLASSIFIED = 512
MAX_HTTP_CONNECTIONS = 1024
TLS_HANDSHAKE_TIMEOUT = 10.0
LISTEN_BACKLOG = 1024
#: A connection whose first bytes are still incomplete is peeked again after this, doubling each time
#: (a level-triggered reader would spin on the bytes that peeking leaves in place).
REPEEK_FIRST_DELAY = 0.002
REPEEK_MAX_DELAY = 0.25
#: A relay that dies is started again; if it dies this often within a minute the member stops trying.
RELAY_RESTARTS_PER_MINUTE = 5

HttpHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def bind(host: str, port: int) -> socket.socket:
    """A listening socket for ``host:port`` (no SO_REUSEPORT: a second member on the port is an error).
    Raises OSError if the address cannot be bound."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host.strip("[]"), port))
        sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class RelayProcess:
    """The relay child (``raftkv.api.front.relay``): started, handed sockets, restarted if it dies."""

    def __init__(self, upstream: str, name: str) -> None:
        self._upstream = upstream
        self._name = name
        self._process: subprocess.Popen[bytes] | None = None
        self._control: socket.socket | None = None
        self._queue: list[socket.socket] = []
        self._pidfd = -1
        self._stopping = False
        self._restarts: list[float] = []
        #: CPU seconds of relays that have exited (the current one's are read from /proc).
        self._past_cpu = 0.0

    def start(self) -> None:
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with theirs:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "raftkv.api.front.relay", "--control-fd", str(theirs.fileno()),
                 "--upstream", self._upstream, "--name", self._name],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, close_fds=True,
            )
        mine.setblocking(False)
        self._control = mine
        loop = asyncio.get_running_loop()
        self._pidfd = os.pidfd_open(self._process.pid)
        loop.add_reader(self._pidfd, self._exited)

    def hand_over(self, sock: socket.socket) -> None:
        """Give ``sock`` to the relay; this process's copy is closed once sent."""
        self._queue.append(sock)
        if len(self._queue) == 1:
            self._send()

    def _send(self) -> None:
        control = self._control
        while self._queue and control is not None:
            sock = self._queue[0]
            try:
                socket.send_fds(control, [b"c"], [sock.fileno()])
            except BlockingIOError:
                asyncio.get_running_loop().add_writer(control, self._resume)
                return
            except OSError as exc:  # the relay is gone; its restart will not get these connections
                log.warning("cannot hand a connection to the relay: %s", exc)
            self._queue.pop(0)
            sock.close()

    def _resume(self) -> None:
        if self._control is not None:
            asyncio.get_running_loop().remove_writer(self._control)
        self._send()

    def cpu_seconds(self) -> float:
        """CPU time the relay processes have used, for the metrics (it is not in the member's own)."""
        return self._past_cpu + self._current_cpu()

    def _current_cpu(self) -> float:
        if self._process is None:
            return 0.0
        try:
            return process_cpu_seconds(self._process.pid)
        except OSError:
            return 0.0

    def _exited(self) -> None:
        assert self._process is not None
        self._past_cpu += self._current_cpu()
        code = self._process.wait()
        self._close_handles()
        if self._stopping:
            return
        now = time.monotonic()
        self._restarts = [t for t in self._restarts if now - t < 60] + [now]
        if len(self._restarts) > RELAY_RESTARTS_PER_MINUTE:
            log.error("the gRPC relay keeps exiting (last status %s); gRPC clients cannot connect", code)
            return
        log.error("the gRPC relay exited with status %s; starting it again", code)
        self.start()

    def _close_handles(self) -> None:
        loop = asyncio.get_running_loop()
        if self._pidfd >= 0:
            loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = -1
        if self._control is not None:
            loop.remove_writer(self._control)
            self._control.close()
            self._control = None
        for sock in self._queue:
            sock.close()
        self._queue.clear()

    async def stop(self, timeout: float = 2.0) -> None:
        """Close the control socket (the relay exits on that) and wait for it; kill it if it lingers."""
        self._stopping = True
        process = self._process
        if process is None:
            return
        if self._control is not None:
            asyncio.get_running_loop().remove_writer(self._control)
            self._control.close()
            self._control = None
        deadline = time.monotonic() + timeout
        while process.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        if self._pidfd >= 0:
            self._exited()


def _refuse(sock: socket.socket) -> None:
    """Close a connection without an answer, what it sent read first (a close with unread bytes is a
    reset, which etcd does not send a client whose request it refuses)."""
    with contextlib.suppress(OSError):
        while sock.recv(PEEK_BYTES):
            pass
    sock.close()


@dataclass(eq=False)
class _Undecided:
    """A connection that has not yet shown what it is: its reader is registered, or ``repeek`` is due."""

    sock: socket.socket
    expiry: asyncio.TimerHandle
    delay: float = REPEEK_FIRST_DELAY
    repeek: asyncio.TimerHandle | None = None


class ClientPort:
    """Serves listening sockets: gRPC connections to ``relay``, HTTP ones to ``http_handler``.

    ``ssl_context`` None means plaintext (``--insecure-plaintext``); otherwise it is asked, before each
    HTTP connection's handshake, for the context that terminates its TLS (the newest certificate files),
    and that must check client certificates as grpcio does.
    """

    def __init__(
        self,
        listeners: list[socket.socket],
        relay: RelayProcess,
        http_handler: HttpHandler,
        ssl_context: Callable[[], ssl.SSLContext] | None,
    ) -> None:
        self._listeners = listeners
        self._relay = relay
        self._http_handler = http_handler
        self._ssl = ssl_context
        self._undecided: dict[int, _Undecided] = {}
        self._http_tasks: set[asyncio.Task[None]] = set()
        self.refused = 0  # connections closed for their first bytes or for a limit (tests read it)

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        for listener in self._listeners:
            loop.add_reader(listener, self._accept, listener)

    async def stop(self) -> None:
        """Stop accepting and close every connection not yet handed over; HTTP connections end too."""
        loop = asyncio.get_running_loop()
        for listener in self._listeners:
            loop.remove_reader(listener)
            listener.close()
        for fd in list(self._undecided):
            self._drop(fd)
        for task in list(self._http_tasks):
            task.cancel()
        await asyncio.gather(*self._http_tasks, return_exceptions=True)

    # ------------------------------------------------------------------ accepting and deciding
    def _accept(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(64):  # a burst, then let the loop serve others
            try:
                sock, _address = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and friends: refuse this one, keep serving
                log.warning("cannot accept a client connection: %s", exc)
                return
            if len(self._undecided) >= MAX_UNCLASSIFIED:
                self.refused += 1
                sock.close()
                continue
            sock.setblocking(False)
            if sock.family != socket.AF_UNIX:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            fd = sock.fileno()
            entry = _Undecided(sock, loop.call_later(CLASSIFY_TIMEOUT, self._expire, fd))
            self._undecided[fd] = entry
            loop.add_reader(sock, self._peek, entry)

    def _peek(self, entry: _Undecided) -> None:
        loop = asyncio.get_running_loop()
        sock = entry.sock
        fd = sock.fileno()
        if entry.repeek is not None:
            entry.repeek = None
            loop.add_reader(sock, self._peek, entry)
        try:
            data = sock.recv(PEEK_BYTES, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(fd)
            return
        route = classify(data, self._ssl is not None) if data else Route.REFUSE
        if route is None:
            # The bytes stay in the socket, so its reader would fire again at once: pause instead, longer
            # each time, until more bytes may have come (or the connection expires).
            loop.remove_reader(sock)
            entry.repeek = loop.call_later(entry.delay, self._peek, entry)
            entry.delay = min(entry.delay * 2, REPEEK_MAX_DELAY)
            return
        self._forget(fd)
        if route is Route.GRPC:
            self._relay.hand_over(sock)
        elif route is Route.HTTP:
            self._serve_http(sock)
        else:
            self.refused += 1
            _refuse(sock)

    def _forget(self, fd: int) -> None:
        entry = self._undecided.pop(fd)
        entry.expiry.cancel()
        if entry.repeek is not None:
            entry.repeek.cancel()
        else:
            asyncio.get_running_loop().remove_reader(entry.sock)

    def _drop(self, fd: int) -> None:
        entry = self._undecided[fd]
        self._forget(fd)
        entry.sock.close()

    def _expire(self, fd: int) -> None:
        """The connection did not say what it is within ``CLASSIFY_TIMEOUT``."""
        if fd in self._undecided:
            self.refused += 1
            self._drop(fd)

    # ------------------------------------------------------------------ HTTP
    def _serve_http(self, sock: socket.socket) -> None:
        if len(self._http_tasks) >= MAX_HTTP_CONNECTIONS:
            self.refused += 1
            sock.close()
            return
        task = asyncio.get_running_loop().create_task(self._http(sock), name="http-connection")
        self._http_tasks.add(task)
        task.add_done_callback(self._http_tasks.discard)

    async def _http(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=64 * 1024)
        protocol = asyncio.StreamReaderProtocol(reader)
        try:
            transport, _ = await loop.connect_accepted_socket(
                lambda: protocol, sock, ssl=self._ssl() if self._ssl is not None else None,
                ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT if self._ssl is not None else None,
            )
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError) as exc:
            log.debug("HTTP client gone during its TLS handshake: %s", exc)
            sock.close()
            return
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        try:
            await self._http_handler(reader, writer)
        finally:
            writer.close()
