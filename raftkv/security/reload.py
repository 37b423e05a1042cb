"""Following files an operator replaces under a running member (key, certificate, CA bundle, CRL).

One rule decides, for every listener and every outgoing channel, whether such files changed and what then
happens, so that the client port, the peer port and a member's own connections cannot disagree on it:

- a file changed when its *stamp* (mtime in nanoseconds, size, inode) differs from the last one seen; a
  file that cannot be ``stat``-ed has a stamp of its own, so its disappearing and coming back both count.
  The inode catches a replacement by ``rename`` that keeps the old mtime and size (``cp -p``, ``rsync -t``);
- after a change the files are loaded again; material that does not validate (say, half-way through being
  replaced) is ignored with a warning and the previous value stays in force until the files change again;
- a load equal to what is in force is no change: callers rebuild credentials only when something differs.

Checking costs one ``stat`` a file, so callers ask before every new connection or call.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Generic, TypeVar

from raftkv.security.config_error import ConfigError

_log = logging.getLogger("raftkv.tls")

T = TypeVar("T")
#: One ``(mtime_ns, size, inode)`` a file, in the order the files were named.
FileStamp = tuple[tuple[int, int, int], ...]
_MISSING = (-1, -1, -1)


def file_stamp(paths: Sequence[Path]) -> FileStamp:
    """What tells whether ``paths`` changed since another stamp: equal stamps, unchanged files."""
    stamps = []
    for path in paths:
        try:
            st = Path(path).stat()
        except OSError:
            stamps.append(_MISSING)
        else:
            stamps.append((st.st_mtime_ns, st.st_size, st.st_ino))
    return tuple(stamps)


class Reloaded(Generic[T]):
    """The newest valid value ``load`` makes of some files, loaded again when their stamp changes.

    ``load`` raises ``ConfigError`` for unusable files: at construction that propagates (refuse to start),
    later it is logged as "keeping the previous <keeping>" and the value stays. ``reloaded`` describes a new
    value for the log line that says it is in force. Safe to call from several threads: one of them loads."""

    def __init__(self, paths: Sequence[Path], load: Callable[[], T], keeping: str,
                 reloaded: Callable[[T], str]) -> None:
        self._paths = tuple(paths)
        self._load = load
        self._keeping = keeping
        self._reloaded = reloaded
        self._lock = threading.Lock()
        self._stamp = file_stamp(self._paths)
        self.value = load()

    def refresh(self) -> bool:
        """Load again if the files changed (a ``stat`` each otherwise); True if the value did."""
        stamp = file_stamp(self._paths)
        if stamp == self._stamp:
            return False
        with self._lock:
            if stamp == self._stamp:  # another thread loaded these files meanwhile
                return False
            self._stamp = stamp
            try:
                value = self._load()
            except ConfigError as exc:
                _log.warning("keeping the previous %s: %s", self._keeping, exc)
                return False
            if value == self.value:
                return False
            self.value = value
        _log.info("reloaded %s", self._reloaded(value))
        return True
