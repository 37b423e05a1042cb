"""`kvctl certs init`: peer and client certificates from CAs of their own, and the way an older directory
(one CA for everything) is brought to that layout."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.cli.conftest import REPO, kvctl_command


def _certs_init(directory: Path) -> str:
    done = subprocess.run(kvctl_command("certs", "init", "--dir", str(directory), "--names", "n1,n2"),
                          capture_output=True, text=True, cwd=REPO, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_certs_init_lists_both_cas_and_both_certificates_of_each_member(tmp_path: Path) -> None:
    out = _certs_init(tmp_path / "certs")
    assert f"client CA: {tmp_path / 'certs' / 'ca.crt'}" in out
    assert f"peer CA: {tmp_path / 'certs' / 'peer' / 'ca.crt'}" in out
    assert f"n2 (peer port): {tmp_path / 'certs' / 'peer' / 'n2.crt'}" in out
    assert "older kvctl" not in out


def test_an_older_directory_gains_a_peer_ca_and_is_told_what_to_do(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    _certs_init(certs)
    shutil.rmtree(certs / "peer")
    client_ca = (certs / "ca.crt").read_bytes()
    out = _certs_init(certs)
    assert "made by an older kvctl" in out and "--peer-trusted-ca-file" in out
    assert (certs / "ca.crt").read_bytes() == client_ca and (certs / "peer" / "n1.crt").exists()
