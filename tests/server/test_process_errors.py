"""Bad configuration stops ``raftkv`` with one line naming the problem and exit status 2, touching nothing."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from raftkv.security.certs import init_cluster_certs
from raftkv.security.tls import TLSFiles


def run_raftkv(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "raftkv.main", *args], capture_output=True, text=True, timeout=timeout
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tls_args(client: TLSFiles, peer: TLSFiles) -> list[str]:
    return [
        "--trusted-ca-file", str(client.ca), "--cert-file", str(client.cert), "--key-file", str(client.key),
        "--peer-trusted-ca-file", str(peer.ca), "--peer-cert-file", str(peer.cert), "--peer-key-file", str(peer.key),
    ]


@pytest.fixture
def tls_args(tmp_path: Path) -> list[str]:
    certs = init_cluster_certs(tmp_path / "certs", ["n1", "n2"])
    return _tls_args(certs.nodes["n1"], certs.peers["n1"])


def _urls(peer: int, client: int) -> list[str]:
    return [
        "--name", "n1",
        "--listen-peer-urls", f"https://127.0.0.1:{peer}",
        "--listen-client-urls", f"https://127.0.0.1:{client}",
        "--initial-cluster", f"n1=https://127.0.0.1:{peer}",
    ]


def _one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("raftkv: error:")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def test_missing_certificate_is_one_line(tmp_path: Path) -> None:
    line = _one_error_line(run_raftkv(*_urls(_free_port(), _free_port()), "--data-dir", str(tmp_path / "d")))
    assert "--trusted-ca-file" in line and "--insecure-plaintext" in line
    assert not (tmp_path / "d").exists()


def test_plaintext_url_needs_the_explicit_flag(tmp_path: Path, tls_args: list[str]) -> None:
    args = ["--listen-client-urls", f"http://127.0.0.1:{_free_port()}", "--data-dir", str(tmp_path / "d")]
    line = _one_error_line(run_raftkv(*tls_args, *args))
    assert "plaintext" in line


def test_unreadable_key_names_the_file(tmp_path: Path, tls_args: list[str]) -> None:
    key = Path(tls_args[tls_args.index("--key-file") + 1])
    key.write_text("not a key")
    line = _one_error_line(run_raftkv(*tls_args, *_urls(_free_port(), _free_port()), "--data-dir", str(tmp_path / "d")))
    assert str(key) in line


def test_port_in_use_is_one_line(tmp_path: Path, tls_args: list[str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        line = _one_error_line(run_raftkv(*tls_args, *_urls(port, _free_port()), "--data-dir", str(tmp_path / "d")))
    assert str(port) in line


def test_data_dir_of_another_cluster_is_refused(tmp_path: Path, tls_args: list[str]) -> None:
    peer, client = _free_port(), _free_port()
    data = str(tmp_path / "d")
    first = subprocess.Popen(
        [sys.executable, "-m", "raftkv.main", *tls_args, *_urls(peer, client), "--data-dir", data],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert first.stderr is not None
        for line in first.stderr:  # bootstrap done once it serves
            if "serving clients" in line:
                break
    finally:
        first.terminate()
        assert first.wait(timeout=30) == 0
    line = _one_error_line(
        run_raftkv(*tls_args, *_urls(peer, client), "--data-dir", data, "--initial-cluster-token", "other")
    )
    assert "belongs to another cluster" in line


def test_a_peer_port_trusting_the_client_ca_is_refused_with_the_way_out(tmp_path: Path) -> None:
    """A certificate directory of the older layout (one CA for everything) must not silently let client
    certificates act as members: the member refuses to start and says how to migrate."""
    node = init_cluster_certs(tmp_path / "certs", ["n1"]).nodes["n1"]
    args = ["--trusted-ca-file", str(node.ca), "--cert-file", str(node.cert), "--key-file", str(node.key)]
    line = _one_error_line(run_raftkv(*args, *_urls(_free_port(), _free_port()), "--data-dir", str(tmp_path / "d")))
    assert "any client certificate could act as a member" in line and "kvctl certs init" in line
    assert not (tmp_path / "d").exists()


def test_a_peer_certificate_of_another_member_is_refused(tmp_path: Path) -> None:
    certs = init_cluster_certs(tmp_path / "certs", ["n1", "n2"])
    args = _tls_args(certs.nodes["n1"], certs.peers["n2"])
    line = _one_error_line(run_raftkv(*args, *_urls(_free_port(), _free_port()), "--data-dir", str(tmp_path / "d")))
    assert "is issued to n2, not to this member ('n1')" in line
