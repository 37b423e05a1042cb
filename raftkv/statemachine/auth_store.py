"""Users, roles and permissions, replicated: etcd 3.4's auth store (``auth/store.go``) on the ``auth``
sub-database, changed only by applying log entries.

Every replica applies the same auth requests in the same order, so the store is identical on every member
and travels in snapshots like the key-value state. Each change bumps the **auth revision**; requests carry
the revision their sender checked them against, and one checked against an older revision fails
(``AUTH_OLD_REVISION``), closing the gap between a check in the API layer and the apply.

Passwords arrive hashed (``raftkv.security.passwords``, by the member that received the request), so no
plaintext password is ever in the log or a snapshot. Simple tokens are not state: applying an auth request
reports how the members' in-memory tokens change (``TokenChange``) and the node applies that.

:class:`AuthState` is an immutable view of the store at one auth revision, with each user's unified
permissions computed on first use; :class:`AuthReader` keeps the newest view so a permission check costs
one LMDB lookup of the revision while nothing changes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from raftkv import errors
from raftkv.proto import auth_pb2, internal_pb2, rpc_pb2
from raftkv.statemachine.auth_perms import READ, WRITE, UnifiedPermissions
from raftkv.storage.env import Env, WriteTxn
from raftkv.storage.sealed import SealedTxn

ROOT_USER = "root"
ROOT_ROLE = "root"
_DB = "auth"
K_ENABLED = b"enabled"
K_REVISION = b"revision"
_USER = b"u/"
_ROLE = b"r/"
#: etcd commits revision 1 when it creates a store; the first change makes it 2.
INITIAL_REVISION = 1

#: The ``InternalRequest`` kinds this module applies.
AUTH_REQUESTS = frozenset({
    "auth_enable", "auth_disable", "authenticate", "user_add", "user_delete", "user_change_password",
    "user_grant_role", "user_revoke_role", "role_add", "role_delete", "role_grant_permission",
    "role_revoke_permission",
})
#: etcd's ``needAdminPermission``: only a user with the root role may make these once auth is on.
ADMIN_REQUESTS = AUTH_REQUESTS - {"authenticate"}


@dataclass(frozen=True, slots=True)
class AuthState:
    """The auth store at one revision. Never mutated; a change produces a new one."""

    enabled: bool
    revision: int
    users: Mapping[str, auth_pb2.User]
    roles: Mapping[str, auth_pb2.Role]
    _unified: dict[str, UnifiedPermissions] = field(default_factory=dict, compare=False, repr=False)

    def has_root_role(self, user_name: str) -> bool:
        user = self.users.get(user_name)
        return user is not None and ROOT_ROLE in user.roles

    def has_role(self, user_name: str, role: str) -> bool:
        user = self.users.get(user_name)
        return user is not None and role in user.roles

    def permissions(self, user: auth_pb2.User) -> UnifiedPermissions:
        name = user.name.decode()
        unified = self._unified.get(name)
        if unified is None:
            roles = (self.roles.get(role) for role in user.roles)
            unified = UnifiedPermissions.of(p for role in roles if role is not None for p in role.keyPermission)
            self._unified[name] = unified
        return unified

    def check(self, user_name: str, auth_revision: int, perm_type: int, key: bytes, range_end: bytes = b"") -> None:
        """etcd's ``isOpPermitted``: raises the error etcd answers, or returns if the operation may run."""
        if not self.enabled:
            return
        if auth_revision == 0:
            raise errors.USER_EMPTY.exception()  # no identity at all
        if auth_revision < self.revision:
            raise errors.AUTH_OLD_REVISION.exception()
        user = self.users.get(user_name)
        if user is None:
            raise errors.PERMISSION_DENIED.exception()
        if ROOT_ROLE in user.roles or self.permissions(user).allows(perm_type, key, range_end):
            return
        raise errors.PERMISSION_DENIED.exception()

    def check_read(self, user_name: str, auth_revision: int, key: bytes, range_end: bytes = b"") -> None:
        self.check(user_name, auth_revision, READ, key, range_end)

    def check_write(self, user_name: str, auth_revision: int, key: bytes, range_end: bytes = b"") -> None:
        self.check(user_name, auth_revision, WRITE, key, range_end)

    def check_admin(self, user_name: str) -> None:
        """etcd's ``IsAdminPermitted``."""
        if not self.enabled:
            return
        if not user_name:
            raise errors.USER_EMPTY.exception()
        if user_name not in self.users:
            raise errors.USER_NOT_FOUND.exception()
        if not self.has_root_role(user_name):
            raise errors.PERMISSION_DENIED.exception()


def _revision(txn: SealedTxn, env: Env) -> int:
    raw = txn.get(K_REVISION, db=env.db(_DB))
    return INITIAL_REVISION if raw is None else int.from_bytes(raw, "big")


def _load(txn: SealedTxn, env: Env, revision: int) -> AuthState:
    db = env.db(_DB)
    users: dict[str, auth_pb2.User] = {}
    roles: dict[str, auth_pb2.Role] = {}
    cursor = txn.cursor(db=db)
    for raw_key, value in cursor.iternext(keys=True, values=True):
        key = bytes(raw_key)
        if key.startswith(_USER):
            users[key[len(_USER):].decode()] = auth_pb2.User.FromString(value)
        elif key.startswith(_ROLE):
            roles[key[len(_ROLE):].decode()] = auth_pb2.Role.FromString(value)
    return AuthState(txn.get(K_ENABLED, db=db) == b"\x01", revision, users, roles)


class AuthReader:
    """The newest :class:`AuthState`, reloaded only when the stored revision changed.

    Safe to share between threads: states are immutable and the cached one is swapped in one assignment.
    A revision names one content on every replica (changes are applied in log order), so a cached state is
    right for any transaction that reads the same revision, a snapshot's included.
    """

    def __init__(self) -> None:
        self._state: AuthState | None = None
        self._lock = threading.Lock()

    def state(self, txn: SealedTxn, env: Env) -> AuthState:
        revision = _revision(txn, env)
        cached = self._state
        if cached is not None and cached.revision == revision:
            return cached
        with self._lock:
            state = _load(txn, env, revision)
            self._state = state
        return state


# --- applying auth requests ----------------------------------------------------------------------------


def apply(
    w: WriteTxn,
    state: AuthState,
    kind: str,
    body: object,
    header: internal_pb2.RequestHeader,
    index: int,
    result: internal_pb2.ApplyResult,
) -> None:
    """Apply one auth request (``kind`` in ``AUTH_REQUESTS``) into ``result``; raise ``EtcdException`` to
    refuse it before anything is written."""
    if kind in ADMIN_REQUESTS:
        state.check_admin(header.username)
    elif header.auth_revision < state.revision:
        # Authenticate: the password was checked against an older store (changed since); the API retries.
        raise errors.AUTH_OLD_REVISION.exception()
    response = getattr(result, kind)
    response.SetInParent()
    change = _APPLY[kind](_Tx(w), state, body, index)
    if change is not None:
        result.tokens.CopyFrom(change)


# --- the records of the auth sub-database (also what ``etcd_backend`` moves to and from etcd's buckets) ---


def user_record(user: auth_pb2.User) -> tuple[bytes, bytes]:
    return _USER + user.name, user.SerializeToString()


def role_record(role: auth_pb2.Role) -> tuple[bytes, bytes]:
    return _ROLE + role.name, role.SerializeToString()


def enabled_record(enabled: bool) -> tuple[bytes, bytes]:
    return K_ENABLED, b"\x01" if enabled else b"\x00"


def revision_record(revision: int) -> tuple[bytes, bytes]:
    return K_REVISION, revision.to_bytes(8, "big")


class _Tx:
    """Writes to the auth sub-database; every change commits a new revision, as etcd's ``commitRevision``."""

    def __init__(self, w: WriteTxn) -> None:
        self.w = w
        self.db = w.db(_DB)

    def put_user(self, user: auth_pb2.User) -> None:
        self.w.txn.put(*user_record(user), db=self.db)

    def delete_user(self, name: str) -> None:
        self.w.txn.delete(_USER + name.encode(), db=self.db)

    def put_role(self, role: auth_pb2.Role) -> None:
        self.w.txn.put(*role_record(role), db=self.db)

    def delete_role(self, name: str) -> None:
        self.w.txn.delete(_ROLE + name.encode(), db=self.db)

    def set_enabled(self, enabled: bool) -> None:
        self.w.txn.put(*enabled_record(enabled), db=self.db)

    def commit_revision(self, state: AuthState) -> None:
        self.w.txn.put(*revision_record(state.revision + 1), db=self.db)


def _copy_user(state: AuthState, name: str) -> auth_pb2.User:
    user = state.users.get(name)
    if user is None:
        raise errors.USER_NOT_FOUND.exception()
    copy = auth_pb2.User()
    copy.CopyFrom(user)
    return copy


def _copy_role(state: AuthState, name: str) -> auth_pb2.Role:
    role = state.roles.get(name)
    if role is None:
        raise errors.ROLE_NOT_FOUND.exception()
    copy = auth_pb2.Role()
    copy.CopyFrom(role)
    return copy


def _save_roles(tx: _Tx, state: AuthState, user: auth_pb2.User, roles: list[str]) -> None:
    del user.roles[:]
    user.roles.extend(roles)
    tx.put_user(user)


def _save_permissions(tx: _Tx, state: AuthState, role: auth_pb2.Role, perms: list[auth_pb2.Permission]) -> None:
    del role.keyPermission[:]
    role.keyPermission.extend(perms)
    tx.put_role(role)
    tx.commit_revision(state)


def _auth_enable(
    tx: _Tx, state: AuthState, req: rpc_pb2.AuthEnableRequest, index: int
) -> internal_pb2.TokenChange | None:
    if state.enabled:
        return None  # etcd: "Authentication already enabled", no change
    if ROOT_USER not in state.users:
        raise errors.ROOT_USER_NOT_EXIST.exception()
    if not state.has_root_role(ROOT_USER):
        raise errors.ROOT_ROLE_NOT_EXIST.exception()
    tx.set_enabled(True)
    tx.commit_revision(state)  # etcd 3.4 keeps the revision here; bumping it voids checks made while off
    return internal_pb2.TokenChange(revoke_all=True)


def _auth_disable(
    tx: _Tx, state: AuthState, req: rpc_pb2.AuthDisableRequest, index: int
) -> internal_pb2.TokenChange | None:
    if not state.enabled:
        return None
    tx.set_enabled(False)
    tx.commit_revision(state)
    return internal_pb2.TokenChange(revoke_all=True)


def _authenticate(
    tx: _Tx, state: AuthState, req: internal_pb2.InternalAuthenticateRequest, index: int
) -> internal_pb2.TokenChange | None:
    if not state.enabled:
        raise errors.AUTH_NOT_ENABLED.exception()
    user = state.users.get(req.name)
    if user is None or user.options.no_password:
        raise errors.AUTH_FAILED.exception()
    # The token names the entry that issued it: a member that has not applied it yet waits for it.
    return internal_pb2.TokenChange(issue_token=f"{req.simple_token}.{index}", user=req.name)


def _user_add(
    tx: _Tx, state: AuthState, req: rpc_pb2.AuthUserAddRequest, index: int
) -> internal_pb2.TokenChange | None:
    if not req.name:
        raise errors.USER_EMPTY.exception()
    if req.name in state.users:
        raise errors.USER_ALREADY_EXISTS.exception()
    no_password = req.options.no_password
    user = auth_pb2.User(name=req.name.encode(), options=auth_pb2.UserAddOptions(no_password=no_password))
    if not no_password:
        user.password = req.hashedPassword.encode()
    tx.put_user(user)
    tx.commit_revision(state)
    return None


def _user_delete(
    tx: _Tx, state: AuthState, req: rpc_pb2.AuthUserDeleteRequest, index: int
) -> internal_pb2.TokenChange | None:
    if state.enabled and req.name == ROOT_USER:
        raise errors.INVALID_AUTH_MGMT.exception()
    _copy_user(state, req.name)
    tx.delete_user(req.name)
    tx.commit_revision(state)
    return internal_pb2.TokenChange(user=req.name, revoke_user=True)


def _user_change_password(
    tx: _Tx, state: AuthState, req: rpc_pb2.AuthUserChangePasswordRequest, index: int
) -> internal_pb2.TokenChange | None:
    user = _copy_user(state, req.name)
    user.password = req.hashedPassword.encode()
    tx.put_user(user)
    tx.commit_revision(state)
    return internal_pb2.TokenChange(user=req.name, revoke_user=True)


def _user_grant_role(
    tx: _Tx, state: AuthState, req: rpc_pb2.AuthUserGrantRoleRequest, index: int
) -> internal_pb2.TokenChange | None:
    user = _copy_user(state, req.user)
    if req.role != ROOT_ROLE and req.role not in state.roles:
        raise errors.ROLE_NOT_FOUND.exception()
    if req.role in user.roles:
        return None  # etcd: already granted, no change
    _save_roles(tx, state, user, sorted([*user.roles, req.role]))
    tx.commit_revision(state)
    return None


def _user_revoke_role(
    tx: _Tx, state: AuthState, req: rpc_pb2.AuthUserRevokeRoleRequest, index: int
) -> internal_pb2.TokenChange | None:
    if state.enabled and req.name == ROOT_USER and req.role == ROOT_ROLE:
        raise errors.INVALID_AUTH_MGMT.exception()
    user = _copy_user(state, req.name)
    if req.role not in user.roles:
        raise errors.ROLE_NOT_GRANTED.exception()
    _save_roles(tx, state, user, [role for role in user.roles if role != req.role])
    tx.commit_revision(state)
    return None


def _role_add(
    tx: _Tx, state: AuthState, req: rpc_pb2.AuthRoleAddRequest, index: int
) -> internal_pb2.TokenChange | None:
    if not req.name:
        raise errors.ROLE_EMPTY.exception()
    if req.name in state.roles:
        raise errors.ROLE_ALREADY_EXISTS.exception()
    tx.put_role(auth_pb2.Role(name=req.name.encode()))
    tx.commit_revision(state)
    return None


def _role_delete(
    tx: _Tx, state: AuthState, req: rpc_pb2.AuthRoleDeleteRequest, index: int
) -> internal_pb2.TokenChange | None:
    if state.enabled and req.role == ROOT_ROLE:
        raise errors.INVALID_AUTH_MGMT.exception()
    _copy_role(state, req.role)
    tx.delete_role(req.role)
    for name in sorted(state.users):
        if state.has_role(name, req.role):
            user = _copy_user(state, name)
            _save_roles(tx, state, user, [role for role in user.roles if role != req.role])
    tx.commit_revision(state)
    return None


def _role_grant_permission(
    tx: _Tx, state: AuthState, req: rpc_pb2.AuthRoleGrantPermissionRequest, index: int
) -> internal_pb2.TokenChange | None:
    role = _copy_role(state, req.name)
    perm = req.perm
    for existing in role.keyPermission:
        if existing.key == perm.key and existing.range_end == perm.range_end:
            existing.permType = perm.permType  # the same range granted again: its type is replaced
            break
        _save_permissions(tx, state, role, list(role.keyPermission))
    else:  # sorted by key (stably), as etcd keeps them
        _save_permissions(tx, state, role, sorted([*role.keyPermission, perm], key=lambda p: p.key))
    return None


def _role_revoke_permission(
    tx: _Tx, state: AuthState, req: rpc_pb2.AuthRoleRevokePermissionRequest, index: int
) -> internal_pb2.TokenChange | None:
    role = _copy_role(state, req.role)
    kept = [p for p in role.keyPermission if not (p.key == req.key and p.range_end == req.range_end)]
    if len(kept) == len(role.keyPermission):
        raise errors.PERMISSION_NOT_GRANTED.exception()
    _save_permissions(tx, state, role, kept)
    return None


_APPLY: dict[str, Callable[..., internal_pb2.TokenChange | None]] = {
    "auth_enable": _auth_enable,
    "auth_disable": _auth_disable,
    "authenticate": _authenticate,
    "user_add": _user_add,
    "user_delete": _user_delete,
    "user_change_password": _user_change_password,
    "user_grant_role": _user_grant_role,
    "user_revoke_role": _user_revoke_role,
    "role_add": _role_add,
    "role_delete": _role_delete,
    "role_grant_permission": _role_grant_permission,
    "role_revoke_permission": _role_revoke_permission,
}
assert set(_APPLY) == AUTH_REQUESTS
