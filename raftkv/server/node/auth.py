"""What a member keeps in memory for authentication: the auth store's newest view and the simple tokens.

The auth state lives in the state machine (``raftkv.statemachine.auth_store``); every request reads it,
so the node keeps the last view and reloads it only when an applied entry changed it or a snapshot
replaced the state. Tokens change as applied auth entries say (``TokenChange``); a snapshot voids them
all, since they may have been revoked by entries this member skipped (clients authenticate again).
"""

from __future__ import annotations

from typing import Any

from raftkv.proto import internal_pb2
from raftkv.server.node.world import Store
from raftkv.server.tokens import SimpleTokens
from raftkv.statemachine.applier import AppliedEntry
from raftkv.statemachine.auth_store import AUTH_REQUESTS, AuthState


class NodeAuth:
    def __init__(self, store: Store[Any]) -> None:
        self._store = store
        self.tokens = SimpleTokens()
        self.state: AuthState = store.auth_state()

    def entry_applied(self, result: AppliedEntry) -> None:
        assert result.result is not None
        if result.result.WhichOneof("response") not in AUTH_REQUESTS:
            return
        if result.result.HasField("tokens"):
            self.tokens.apply(result.result.tokens)
        self.state = self._store.auth_state()

    def snapshot_installed(self) -> None:
        self.state = self._store.auth_state()
        self.tokens.apply(internal_pb2.TokenChange(revoke_all=True))
