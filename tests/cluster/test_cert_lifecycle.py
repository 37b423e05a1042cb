"""Certificates on a running cluster: renewed and their CA changed without a restart and without losing a
call, revoked by CRL on the client and the peer port, refused when expired or not yet valid."""

from __future__ import annotations

import base64
import datetime
import http.client
import json
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from raftkv.client import Client, ClientConfig
from raftkv.localcluster import LocalCluster
from raftkv.proto import raft_pb2_grpc, rpc_pb2, rpc_pb2_grpc
from raftkv.security.certs import (
    PEER_DIR,
    Issued,
    init_cluster_certs,
    issue_client,
    issue_node,
    load_issued,
    write_issued,
)

from ..security.crls import write_crl
from .conftest import ELECTION_MS, wait_for

REPO = Path(__file__).resolve().parents[2]


def ca_of(folder: Path) -> Issued:
    return load_issued(folder / "ca.crt", folder / "ca.key")


def files_for(folder: Path, name: str, issued: Issued, endpoints: tuple[str, ...]) -> ClientConfig:
    """``issued`` written into ``folder`` (the client or the peer folder), as a client configuration."""
    cert, key = folder / f"{name}.crt", folder / f"{name}.key"
    write_issued(issued, cert, key)
    return ClientConfig(endpoints=endpoints, cacert=str(folder / "ca.crt"), cert=str(cert), key=str(key))


def range_outcome(config: ClientConfig, url: str) -> grpc.StatusCode:
    """A local (serializable) read on one member: no consensus round, so only TLS and admission decide."""
    with config.channel(url) as channel:
        try:
            rpc_pb2_grpc.KVStub(channel).Range(rpc_pb2.RangeRequest(key=b"k", serializable=True), timeout=10)
        except grpc.RpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


def gateway_outcome(config: ClientConfig, url: str, path: str = "/v3/kv/range",
                    body: str = '{"key": "aw==", "serializable": true}') -> tuple[int, str]:
    """An HTTP request to the client port with ``config``'s certificate, on a new connection: a POST of
    ``body`` to a gateway path, a GET of any other; the status and the answer."""
    context = ssl.create_default_context(cafile=config.cacert)
    assert config.cert is not None and config.key is not None
    context.load_cert_chain(config.cert, config.key)
    host, port = url.removeprefix("https://").split(":")
    conn = http.client.HTTPSConnection(host, int(port), context=context, timeout=10)
    try:
        if path.startswith("/v3/"):
            conn.request("POST", path, body=body)
        else:
            conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def peer_outcome(config: ClientConfig, peer_url: str) -> tuple[grpc.StatusCode, str]:
    """A call on the peer port with ``config``'s certificate (it carries no Raft message)."""
    with config.channel(peer_url) as channel:
        try:
            raft_pb2_grpc.RaftPeerStub(channel).Stream(iter(()), timeout=5)
        except grpc.RpcError as exc:
            return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


@pytest.fixture
def crl_cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    client_crl, peer_crl = tmp_path / "client.crl", tmp_path / "peer.crl"
    cluster = LocalCluster(tmp_path / "cluster", size=3, kind="raftkv", tls=True, election_ms=ELECTION_MS,
                           extra_args=["--client-crl-file", str(client_crl), "--peer-crl-file", str(peer_crl)])
    init_cluster_certs(cluster.certs_dir, cluster.names)
    write_crl(client_crl, ca_of(cluster.certs_dir), [])
    write_crl(peer_crl, ca_of(cluster.certs_dir / PEER_DIR), [])
    with cluster:
        cluster.start()
        cluster.wait_ready(timeout=30, all_members=True)
        yield cluster


def test_revoked_certificate_refused_on_client_and_peer_port(crl_cluster: LocalCluster, tmp_path: Path) -> None:
    cluster = crl_cluster
    certs, peers = cluster.certs_dir, cluster.certs_dir / PEER_DIR
    everywhere = tuple(cluster.endpoints)
    mallory = files_for(certs, "mallory", issue_client(ca_of(certs), "mallory"), everywhere)
    # A certificate of the peer CA that is no member's (a member's stolen certificate would be revoked so).
    impostor_issued = issue_node(ca_of(peers), "impostor")
    impostor = files_for(peers, "impostor", impostor_issued, everywhere)
    url, peer = cluster.client_url("n1"), cluster.peer_url("n1")
    assert range_outcome(mallory, url) == grpc.StatusCode.OK
    assert gateway_outcome(mallory, url)[0] == 200
    assert peer_outcome(impostor, peer) == (grpc.StatusCode.OK, "")

    # Revoked while the members run: every listener of every member refuses them.
    write_crl(tmp_path / "client.crl", ca_of(certs), [load_issued(certs / "mallory.crt", certs / "mallory.key").cert])
    write_crl(tmp_path / "peer.crl", ca_of(peers), [impostor_issued.cert])
    for name in cluster.names:
        assert range_outcome(mallory, cluster.client_url(name)) == grpc.StatusCode.UNAUTHENTICATED
        # The same port's HTTP side (JSON gateway and the plain endpoints) refuses it too, as 401.
        for path in ("/v3/kv/range", "/health", "/metrics"):
            status, body = gateway_outcome(mallory, cluster.client_url(name), path)
            assert status == 401 and "revoked" in json.loads(body)["error"], (name, path, status, body)
        code, details = peer_outcome(impostor, cluster.peer_url(name))
        assert code == grpc.StatusCode.UNAUTHENTICATED and "revoked" in details, (code, details)
    assert gateway_outcome(cluster.client_config(), url)[0] == 200
    # Everyone else is unaffected, the members' own peer links included: the cluster still commits.
    with Client(config=cluster.client_config(), timeout=15) as client:
        client.put("after-revocation", "ok")
        assert client.get("after-revocation") is not None


def _issue_at(ca: Issued, name: str, not_before: datetime.datetime, not_after: datetime.datetime) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]),
                       critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    return Issued(cert, key)


def test_expired_and_not_yet_valid_certificates_refused(cluster: LocalCluster) -> None:
    now, day = datetime.datetime.now(datetime.UTC), datetime.timedelta(days=1)
    url, peer = cluster.client_url("n1"), cluster.peer_url("n1")
    for folder, port, outcome in ((cluster.certs_dir, url, lambda c: range_outcome(c, url)),
                                  (cluster.certs_dir / PEER_DIR, peer, lambda c: peer_outcome(c, peer)[0])):
        ca = ca_of(folder)
        expired = files_for(folder, "expired", _issue_at(ca, "expired", now - 3 * day, now - day), (port,))
        future = files_for(folder, "future", _issue_at(ca, "future", now + day, now + 3 * day), (port,))
        for config in (expired, future):
            assert outcome(config) == grpc.StatusCode.UNAVAILABLE, (folder, config.cert)  # the handshake fails
            if port == url:  # the client port's HTTP side fails the handshake too
                with pytest.raises((ssl.SSLError, ConnectionError)):
                    gateway_outcome(config, url)
    assert gateway_outcome(cluster.client_config(), url)[0] == 200
    assert range_outcome(cluster.client_config(), url) == grpc.StatusCode.OK


def served_certificate(url: str, folder: Path, name: str, alpn: str = "h2") -> x509.Certificate:
    """The certificate a member presents to a new connection at ``url`` (TLS only). On the client port
    ALPN ``h2`` reaches grpcio (through the relay), ``http/1.1`` the member's own HTTP side."""
    context = ssl.create_default_context(cafile=str(folder / "ca.crt"))
    context.load_cert_chain(str(folder / f"{name}.crt"), str(folder / f"{name}.key"))
    context.set_alpn_protocols([alpn])
    host, port = url.removeprefix("https://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname=host) as tls:
            der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def issuers(cluster: LocalCluster) -> set[str]:
    """The issuers of what every member serves on both ports (the client port's gRPC and HTTP sides)."""
    certs, peers = cluster.certs_dir, cluster.certs_dir / PEER_DIR
    found = set()
    for name in cluster.running():
        for alpn in ("h2", "http/1.1"):
            found.add(served_certificate(cluster.client_url(name), certs, "client", alpn).issuer.rfc4514_string())
        found.add(served_certificate(cluster.peer_url(name), peers, name).issuer.rfc4514_string())
    return found


class Load:
    """Writers on fresh connections (so new handshakes) until stopped: two through the Python client (gRPC)
    and one through the JSON gateway (the client port's HTTP side, one connection per request)."""

    def __init__(self, cluster: LocalCluster, scratch: Path) -> None:
        self._cluster = cluster
        self._scratch = scratch
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.failures: list[str] = []
        self.done = 0
        self.done_http = 0
        self._spared: set[str] = set()  # client URLs the HTTP writer leaves alone (a member to restart)
        self._in_flight: str | None = None  # the URL of the HTTP writer's request under way
        self.phase = "start"  # what the test did last, for the failures' messages
        self._threads = [threading.Thread(target=self._run, args=(i,)) for i in range(2)]
        self._threads.append(threading.Thread(target=self._run_http, args=(2,)))

    def _config(self, worker: int) -> ClientConfig:
        """The client certificate as it is now: a matching key and certificate, copied. (kvctl replaces the
        key, then the certificate; a client reading in between would hold a pair that cannot work.)"""
        certs = self._cluster.certs_dir
        while True:
            cert, key = (certs / "client.crt").read_bytes(), (certs / "client.key").read_bytes()
            public = x509.load_pem_x509_certificate(cert).public_key()
            private = serialization.load_pem_private_key(key, password=None)
            if public == private.public_key():
                break
        copy = self._scratch / f"load-{worker}"
        copy.mkdir(exist_ok=True)
        (copy / "client.crt").write_bytes(cert)
        (copy / "client.key").write_bytes(key)
        return ClientConfig(endpoints=tuple(self._cluster.endpoints), cacert=str(certs / "ca.crt"),
                            cert=str(copy / "client.crt"), key=str(copy / "client.key"))

    def _count(self, http: bool = False) -> None:
        with self._lock:
            self.done += 1
            self.done_http += http

    def _run(self, worker: int) -> None:
        n = 0
        while not self._stop.is_set():
            with Client(config=self._config(worker), timeout=20) as client:
                for _ in range(20):
                    try:
                        client.put(f"rotate/{worker}/{n % 50}", str(n))
                        self._count()
                    except Exception as exc:  # noqa: BLE001 - every failure is the finding
                        self.failures.append(f"{self.phase}: {exc!r}")
                    n += 1

    def spare(self, name: str) -> None:
        """Keep the HTTP writer off member ``name`` (about to be restarted). The gRPC writers fail over by
        themselves; one HTTP request per connection has no such help, and a restart is not a rotation."""
        url = self._cluster.client_url(name)
        self._spared.add(url)
        wait_for(lambda: self._in_flight != url, 30, f"the HTTP writer's request to {name} to end")

    def _run_http(self, worker: int) -> None:
        """A put per new connection, to each member in turn; every failure counts."""
        n = 0
        while not self._stop.is_set():
            config = self._config(worker)
            endpoints = [url for url in self._cluster.endpoints if url not in self._spared]
            url = endpoints[n % len(endpoints)]
            body = json.dumps({"key": base64.b64encode(f"rotate/http/{n % 50}".encode()).decode(),
                               "value": base64.b64encode(str(n).encode()).decode()})
            self._in_flight = url
            try:
                status, answer = gateway_outcome(config, url, "/v3/kv/put", body)
            except Exception as exc:  # noqa: BLE001 - every failure is the finding
                self.failures.append(f"{self.phase}: {url}: {exc!r}")
            else:
                if status == 200:
                    self._count(http=True)
                else:
                    self.failures.append(f"{self.phase}: HTTP {status} from {url}: {answer}")
            finally:
                self._in_flight = None
            n += 1

    def goes_on(self, what: str, calls: int = 30) -> None:
        mark, mark_http = self.done, self.done_http
        wait_for(lambda: self.done >= mark + calls and self.done_http > mark_http, 60, f"load to go on {what}")
        self.phase = f"after the load went on {what}"

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=90)


def kvctl_rotate(cluster: LocalCluster, *flags: str) -> str:
    done = subprocess.run([sys.executable, "-m", "cli.kvctl", "certs", "rotate", "--dir", str(cluster.base_dir),
                           *flags], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def caught_up(cluster: LocalCluster, name: str, key: str) -> bool:
    """Whether member ``name`` holds ``key`` locally (it receives the leader's appends)."""
    url = cluster.client_url(name)
    with cluster.client_config([url]).channel(url) as channel:
        try:
            got = rpc_pb2_grpc.KVStub(channel).Range(rpc_pb2.RangeRequest(key=key.encode(), serializable=True),
                                                     timeout=5)
        except grpc.RpcError:
            return False
    return bool(got.kvs)


def test_renewal_and_ca_change_under_load_lose_no_call(cluster: LocalCluster, tmp_path: Path) -> None:
    """`kvctl certs rotate` while clients keep writing, many on fresh connections: a renewal, then a change
    of both CAs in three steps (add the new CAs, renew everything, drop the old CAs). Every call succeeds
    and new connections on both ports get the new certificates. Then a follower is restarted: the others'
    outgoing links to it must dial with the new bundle and their renewed certificates, or it could not
    catch up (it knows only the new CAs by then)."""
    first = issuers(cluster)
    with Load(cluster, tmp_path) as load:
        load.goes_on("before any change")
        kvctl_rotate(cluster)
        load.goes_on("after the renewal")

        kvctl_rotate(cluster, "--add-ca")
        load.goes_on("after the new CAs joined the bundles")
        kvctl_rotate(cluster)
        wait_for(lambda: issuers(cluster).isdisjoint(first), 30, "every port to serve a certificate of a new CA")
        load.goes_on("after the renewal by the new CAs")
        kvctl_rotate(cluster, "--drop-old-ca")
        load.goes_on("after the old CAs were dropped")

        leader = wait_for(cluster.leader_name, 20, "a leader")
        follower = next(name for name in cluster.names if name != leader)
        load.spare(follower)
        cluster.stop_member(follower)
        cluster.start_member(follower)
        with Client(config=cluster.client_config(), timeout=20) as client:
            client.put("after-ca-change", "ok")
        wait_for(lambda: caught_up(cluster, follower, "after-ca-change"), 60,
                 f"{follower} to receive the leader's appends over a link dialled with the new CA")
        load.goes_on("after the restart")
    assert not load.failures, load.failures[:5]
    assert load.done > 0 and load.done_http > 0
