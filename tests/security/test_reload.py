"""The one rule for files replaced under a running member (raftkv.security.reload): when they count as
changed, and what a reload that fails, or finds nothing new, leaves in force. The TLS listeners, the
member's own channels and the CRLs all follow it (tests/security/test_rotation.py shows them doing so)."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import pytest

from raftkv.security.config_error import ConfigError
from raftkv.security.reload import Reloaded, file_stamp


def _same_mtime(path: Path, like: Path) -> None:
    st = like.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_stamp_sees_a_rewrite_a_replacement_and_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "cert.pem"
    path.write_bytes(b"one")
    first = file_stamp([path])
    assert file_stamp([path]) == first

    path.write_bytes(b"three")  # another size
    assert file_stamp([path]) != first

    # Replaced by rename with the old size and mtime (``cp -p`` then ``mv``): only the inode tells (the
    # staged file is made while the old one exists, so the two cannot share an inode).
    before = file_stamp([path])
    staged = tmp_path / "staged"
    staged.write_bytes(b"other")
    _same_mtime(staged, path)
    staged.rename(path)
    assert file_stamp([path]) != before

    present = file_stamp([path])
    path.unlink()
    missing = file_stamp([path])
    assert missing != present and missing == file_stamp([tmp_path / "never"])


class _Files:
    """A value read from one file, refused as the real loaders refuse: a file that is missing, or reads
    ``bad``, does not validate."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.loads = 0

    def load(self) -> str:
        self.loads += 1
        try:
            text = self.path.read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read {self.path}", self.path) from exc
        if text == "bad":
            raise ConfigError(f"{self.path} is bad", self.path)
        return text


def _rewrite(path: Path, text: str) -> None:
    st = path.stat()
    path.write_text(text)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # a rewrite within one clock tick too


def test_reloaded_keeps_the_last_good_value(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "value"
    path.write_text("v1")
    files = _Files(path)
    reloaded = Reloaded([path], files.load, "value", lambda v: f"value {v}")
    assert reloaded.value == "v1" and files.loads == 1
    assert not reloaded.refresh() and files.loads == 1  # unchanged: a stat, no load

    caplog.set_level(logging.INFO, logger="raftkv.tls")
    _rewrite(path, "v2")
    assert reloaded.refresh() and reloaded.value == "v2"
    assert "reloaded value v2" in caplog.text

    _rewrite(path, "bad")  # half-way through a replacement: refused, the previous value stays
    assert not reloaded.refresh() and reloaded.value == "v2"
    assert "keeping the previous value" in caplog.text
    assert not reloaded.refresh() and files.loads == 3  # not tried again until the file changes again

    _rewrite(path, "v2")  # changed back to what is in force: no change to report
    assert not reloaded.refresh() and reloaded.value == "v2" and files.loads == 4

    path.unlink()  # gone: refused as unreadable, the value stays
    assert not reloaded.refresh() and reloaded.value == "v2" and files.loads == 5
    path.write_text("v3")  # back: a change
    assert reloaded.refresh() and reloaded.value == "v3"

    path.write_text("bad")
    with pytest.raises(ConfigError):
        Reloaded([path], files.load, "value", str)  # unusable at start: refuse to start


def test_one_thread_loads_a_change(tmp_path: Path) -> None:
    path = tmp_path / "value"
    path.write_text("v1")
    files = _Files(path)
    reloaded = Reloaded([path], files.load, "value", str)
    _rewrite(path, "v2")
    start = threading.Barrier(8)
    results: list[bool] = []

    def refresh() -> None:
        start.wait()
        results.append(reloaded.refresh())

    threads = [threading.Thread(target=refresh) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False] * 7 + [True] and files.loads == 2 and reloaded.value == "v2"
