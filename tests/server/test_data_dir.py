"""Whose data dir it is: a member keeps the id its data dir records, whatever URL it advertises now, and
never starts on another member's (``raftkv.server.data_dir``, real LMDB files)."""

from __future__ import annotations

from pathlib import Path

import pytest

from raftkv.security.tls import ConfigError
from raftkv.server.config import ServerConfig, parse_config
from raftkv.server.data_dir import open_store

FOUNDERS = {"n1": "http://127.0.0.1:2380", "n2": "http://127.0.0.1:2390"}


def _config(data: Path, name: str, peer_url: str) -> ServerConfig:
    """The flags of member ``name`` at ``peer_url``, its --initial-cluster saying so (as an operator's would)."""
    cluster = ",".join(f"{n}={u}" for n, u in {**FOUNDERS, name: peer_url}.items())
    return parse_config(["--insecure-plaintext", "--name", name, "--data-dir", str(data),
                         "--listen-peer-urls", peer_url, "--listen-client-urls", "http://127.0.0.1:2379",
                         "--initial-cluster", cluster])


def _open(data: Path, name: str, peer_url: str) -> int:
    store, member_id = open_store(_config(data, name, peer_url))
    store.close()
    return member_id


@pytest.fixture
def n1_data(tmp_path: Path) -> tuple[Path, int]:
    data = tmp_path / "n1"
    return data, _open(data, "n1", "http://127.0.0.1:2380")


def test_the_member_keeps_its_id_at_a_url_its_member_list_does_not_give_it_yet(
    n1_data: tuple[Path, int], caplog: pytest.LogCaptureFixture
) -> None:
    data, n1 = n1_data
    assert _open(data, "n1", "http://127.0.0.1:2380") == n1
    assert _open(data, "n1", "http://127.0.0.1:4444") == n1  # member update made while it was down
    assert "still gives it http://127.0.0.1:2380" in caplog.text


def test_another_members_data_dir_is_refused(n1_data: tuple[Path, int]) -> None:
    data, _ = n1_data
    with pytest.raises(ConfigError, match="belongs to another cluster or member"):
        _open(data, "n2", "http://127.0.0.1:2390")
    with pytest.raises(ConfigError, match="belongs to another cluster or member"):
        _open(data, "n3", "http://127.0.0.1:4444")
