"""raftkv as the xDS control plane of grpcio's own xDS client: real raftkv cluster, real ``kvctl xds serve``
with mutual TLS, real demo instances registered through raftkv.discovery, a real ``xds:///`` channel."""

from __future__ import annotations

import json

from tests.xds.conftest import Env, eventually


def test_round_robin_follows_registrations(env: Env, service: str) -> None:
    for name in ("a", "b", "c"):
        env.instance(service, name)
    client = env.xds_client(service, env.xds_server())
    counts = client.calls(60)
    assert set(counts) == {"a", "b", "c"} and min(counts.values()) >= 10, counts

    env.registrations[0].stop()  # "a" deregisters: its key is deleted, the EDS update drops it
    eventually(lambda: "a" not in client.calls(30), what="a leaving the xDS client's rotation")
    assert set(client.calls(60)) == {"b", "c"}

    env.instance(service, "d")
    eventually(lambda: "d" in client.calls(30), what="d joining the xDS client's rotation")
    assert set(client.calls(90)) == {"b", "c", "d"}


def test_ring_hash_keeps_each_key_on_one_instance(env: Env, service: str) -> None:
    for name in ("a", "b", "c"):
        env.instance(service, name)
    client = env.xds_client(service, env.xds_server("--policy", "ring_hash"))
    homes = {}
    for key in (f"user-{i}" for i in range(12)):
        counts = client.calls(5, key)
        assert len(counts) == 1, (key, counts)
        homes[key] = next(iter(counts))
    assert len(set(homes.values())) >= 2, homes  # 12 keys on one instance of three: not hashing
    for key, home in homes.items():
        assert client.calls(3, key) == {home: 3}


def test_outlier_detection_ejects_a_failing_instance(env: Env, service: str) -> None:
    failing, _ = env.instance(service, "bad")
    for name in ("a", "b"):
        env.instance(service, name)
    client = env.xds_client(service, env.xds_server())
    assert set(client.calls(30)) == {"a", "b", "bad"}
    failing.mode = "fail"  # still registered and healthy to the registry: only the client can see it fail
    eventually(lambda: client.calls(60) == {"a": 30, "b": 30} or False, what="the failing instance ejected")


def test_bootstrap_document(env: Env) -> None:
    result = env.kvctl("xds", "bootstrap", "orders", "--server", "10.0.0.1:18000")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    [server] = doc["xds_servers"]
    assert server["server_uri"] == "10.0.0.1:18000" and server["server_features"] == ["xds_v3"]
    [creds] = server["channel_creds"]
    assert creds["type"] == "tls" and set(creds["config"]) == {
        "ca_certificate_file", "certificate_file", "private_key_file"}
    assert all(path.startswith("/") for path in creds["config"].values())
    assert doc["node"]["id"].startswith("orders~") and doc["node"]["cluster"] == "orders"

    plain = json.loads(env.kvctl("xds", "bootstrap", "orders", "--xds-insecure").stdout)
    assert plain["xds_servers"][0]["channel_creds"] == [{"type": "insecure"}]


def test_bootstrap_and_serve_errors(env: Env) -> None:
    bad = env.kvctl("xds", "bootstrap", "a/b")
    assert bad.returncode == 1 and bad.stderr.startswith("Error: service name 'a/b'"), bad.stderr
    missing = env.kvctl("xds", "bootstrap", "orders", "--cacert", "/nonexistent/ca.crt")
    assert missing.returncode == 1 and "CA certificate /nonexistent/ca.crt does not exist" in missing.stderr
    no_certs = env.kvctl("xds", "serve", "--listen", "127.0.0.1:0")
    assert no_certs.returncode == 1 and "--listen-cert" in no_certs.stderr, no_certs.stderr
    assert "Traceback" not in bad.stderr + missing.stderr + no_certs.stderr
