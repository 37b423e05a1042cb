"""The error every check of security files raises (TLS material, CRLs, certificate directories).

A module of its own so that the pieces that load files (``tls``) and the one that follows them as they
change (``reload``) share it without importing each other; ``raftkv.security.tls`` re-exports it.
"""

from __future__ import annotations

from pathlib import Path


class ConfigError(Exception):
    """Unusable security material; ``str()`` is one line naming the file, and ``path`` is that file."""

    def __init__(self, message: str, path: Path | None = None) -> None:
        super().__init__(message)
        self.path = path
