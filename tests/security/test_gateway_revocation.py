"""The client port's HTTP side and the CRL, in-process over real TLS: the verdict is the connection's, as
etcd's (it refuses a revoked certificate at the handshake). A revoked client's kept-alive connection gets
the refusal once and is closed, whatever it pipelined after; a connection opened before its certificate
was revoked stays served, and the next one is refused. The cluster-level proof (every member, gRPC and
HTTP) is tests/cluster/test_cert_lifecycle.py."""

from __future__ import annotations

import asyncio
import json
import os
import ssl
from pathlib import Path

from raftkv.api.gateway.calls import MethodTable
from raftkv.api.gateway.http import Gateway, PlainEndpoints
from raftkv.api.receive_limit import ReceiveLimit
from raftkv.security.certs import init_cluster_certs, issue_client, load_issued, write_issued
from raftkv.security.revocation import RevocationList
from raftkv.security.tls import ReloadingSSLContext, TLSFiles

from .crls import signed_crl

REQUEST = b"GET /health HTTP/1.1\r\nHost: member\r\n\r\n"


async def _healthy() -> bool:
    return True


async def _until_closed(reader: asyncio.StreamReader) -> list[tuple[int, bytes]]:
    """The responses the server sends up to the one that closes the connection: (status, body)."""
    answers = []
    while True:
        lines = (await reader.readuntil(b"\r\n\r\n")).decode().split("\r\n")
        length = next(int(line.split(":")[1]) for line in lines if line.lower().startswith("content-length:"))
        answers.append((int(lines[0].split()[1]), await reader.readexactly(length)))
        if "connection: close" in (line.lower() for line in lines):
            return answers


async def _serve(gateway: Gateway, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """As the client port hands a connection over: the connection closes when the gateway is done."""
    try:
        await gateway.serve(reader, writer)
    finally:
        writer.close()


def test_a_revoked_client_is_refused_once_per_connection(tmp_path: Path) -> None:
    init_cluster_certs(tmp_path, ["n1"])
    ca = load_issued(tmp_path / "ca.crt", tmp_path / "ca.key")
    clients = {}
    for name in ("mallory", "alice"):
        issued = issue_client(ca, name)
        write_issued(issued, tmp_path / f"{name}.crt", tmp_path / f"{name}.key")
        clients[name] = issued.cert
    crl_path = tmp_path / "client.crl"
    crl_path.write_bytes(signed_crl(ca, [clients["mallory"]]))
    crl = RevocationList(crl_path, tmp_path / "ca.crt")
    gateway = Gateway(MethodTable(), PlainEndpoints(_healthy, lambda: ""), ReceiveLimit.for_requests(1024), crl)
    server_tls = ReloadingSSLContext(TLSFiles(tmp_path / "ca.crt", tmp_path / "n1.crt", tmp_path / "n1.key"))()

    def client_tls(name: str) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
        context.load_cert_chain(tmp_path / f"{name}.crt", tmp_path / f"{name}.key")
        context.check_hostname = False
        return context

    async def scenario() -> None:
        server = await asyncio.start_server(lambda r, w: _serve(gateway, r, w), "127.0.0.1", 0, ssl=server_tls)
        port = server.sockets[0].getsockname()[1]
        try:
            # Three requests pipelined on one kept-alive connection: one refusal, which closes it.
            reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_tls("mallory"))
            writer.write(REQUEST * 3)
            ((status, body),) = await asyncio.wait_for(_until_closed(reader), 10)
            assert status == 401 and "revoked" in json.loads(body)["error"], body
            writer.close()

            # alice keeps her connection open while her certificate is revoked: it stays served, as etcd's.
            reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_tls("alice"))
            writer.write(REQUEST)
            await reader.readuntil(b'{"health":"true"}')
            crl_path.write_bytes(signed_crl(ca, [clients["mallory"], clients["alice"]]))
            stat = crl_path.stat()
            os.utime(crl_path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # a change within a tick
            writer.write(REQUEST)
            await asyncio.wait_for(reader.readuntil(b'{"health":"true"}'), 10)
            writer.close()
            reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_tls("alice"))
            writer.write(REQUEST)
            ((status, _body),) = await asyncio.wait_for(_until_closed(reader), 10)
            assert status == 401
            writer.close()
        finally:
            server.close()
            await server.wait_closed()

    asyncio.run(scenario())
