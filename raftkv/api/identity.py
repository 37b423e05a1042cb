"""Who is calling, and what the auth store lets them do before a request runs (etcd's ``AuthInfoFromCtx``).

The identity of a call, as etcd 3.4 with ``--client-cert-auth`` decides it: the simple token in the ``token``
metadata, else in the ``authorization`` metadata (what the JSON gateway makes of the HTTP ``Authorization``
header, taken verbatim as etcd takes it: no ``Bearer``), if there is one — an unknown or expired token fails
the call with ``invalid auth token`` — and otherwise the CommonName of the verified client certificate. raftkv always
verifies client certificates on TLS listeners, so the CN rule always applies there.

Reads and watch creation are checked here, before they run; writes are stamped with the identity and the
auth revision it was judged at and checked again when applied (``raftkv.statemachine.authorize``). With
authentication off nothing is looked up: a call costs one attribute read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from raftkv import errors
from raftkv.api.metadata import Context, call_timeout
from raftkv.proto import internal_pb2, rpc_pb2
from raftkv.security.common_names import auth_common_names
from raftkv.server.backend import Backend
from raftkv.statemachine import authorize
from raftkv.statemachine.auth_store import AuthState

#: Where a token may be, in etcd's order of preference (``AuthInfoFromCtx``).
TOKEN_KEYS = ("token", "authorization")
#: How long a member waits for a token issued by an entry it has not applied yet.
TOKEN_WAIT_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class AuthInfo:
    """A caller's user name and the auth revision the decision about it was made at ("" / 0: nobody)."""

    username: str
    revision: int


def _token(context: Context) -> str | None:
    found: dict[str, str] = {}
    for key, value in context.invocation_metadata() or ():
        if key in TOKEN_KEYS and isinstance(value, str):
            found.setdefault(key, value)
    return next((found[key] for key in TOKEN_KEYS if key in found), None)


def common_name(context: Context) -> str | None:
    """The CN of the client certificate the TLS handshake verified, if any."""
    names = auth_common_names(context.auth_context())
    return names[0] if names else None


async def auth_info(context: Context, backend: Backend, state: AuthState | None = None) -> AuthInfo:
    """The caller as the current auth store sees it. Raises INVALID_AUTH_TOKEN for a token no longer valid."""
    state = state or backend.auth_state()
    if not state.enabled:
        return AuthInfo("", state.revision)
    token = _token(context)
    if token is not None:
        user = await backend.token_user(token, call_timeout(context, TOKEN_WAIT_SECONDS))
        if user is None:
            raise errors.INVALID_AUTH_TOKEN.exception()
        return AuthInfo(user, backend.auth_state().revision)
    name = common_name(context)
    return AuthInfo(name, state.revision) if name else AuthInfo("", 0)


async def stamp(context: Context, backend: Backend, header: internal_pb2.RequestHeader) -> None:
    """Carry the caller's identity in a request to be proposed; the applier decides with it."""
    info = await auth_info(context, backend)
    header.username, header.auth_revision = info.username, info.revision


async def check_read(context: Context, backend: Backend, key: bytes, range_end: bytes = b"") -> AuthInfo | None:
    """Refuse a read the caller may not make; returns the identity checked (None with auth off)."""
    return await _checked(context, backend, lambda state, info: state.check_read(info.username, info.revision,
                                                                                 key, range_end))


async def check_read_only_txn(context: Context, backend: Backend, request: rpc_pb2.TxnRequest) -> AuthInfo | None:
    """``check_read`` for a read-only transaction served without the log: the verdict the applier's
    (``statemachine.authorize``) would give it."""
    return await _checked(context, backend, lambda state, info: authorize.check_read_only_txn(
        state, info.username, info.revision, request))


async def _checked(
    context: Context, backend: Backend, check: Callable[[AuthState, AuthInfo], None]
) -> AuthInfo | None:
    """With auth on: who calls, then ``check`` against the auth state as it is once that is known."""
    state = backend.auth_state()
    if not state.enabled:
        return None
    info = await auth_info(context, backend, state)
    check(backend.auth_state(), info)
    return info


def check_still_current(backend: Backend, info: AuthInfo | None) -> None:
    """etcd's check after serving a read: the auth store must not have changed while it ran."""
    if info is not None and info.revision and info.revision != backend.auth_state().revision:
        raise errors.AUTH_OLD_REVISION.exception()


async def require_admin(context: Context, backend: Backend) -> AuthInfo:
    """Only a user with the root role passes once auth is on (auth management, membership, maintenance)."""
    info = await auth_info(context, backend)
    backend.auth_state().check_admin(info.username)
    return info


#: How etcd's maintenance service words the admin check's refusals (see ``errors.RAW_AUTH_*``).
_RAW = {
    errors.PERMISSION_DENIED: errors.RAW_AUTH_PERMISSION_DENIED,
    errors.USER_EMPTY: errors.RAW_AUTH_USER_EMPTY,
    errors.USER_NOT_FOUND: errors.RAW_AUTH_USER_NOT_FOUND,
    errors.INVALID_AUTH_TOKEN: errors.RAW_AUTH_INVALID_TOKEN,
}


async def require_admin_for_maintenance(context: Context, backend: Backend) -> None:
    """``require_admin`` with etcd's untranslated errors, as its ``authMaintenanceServer`` answers."""
    try:
        await require_admin(context, backend)
    except errors.EtcdException as exc:
        raise _RAW.get(exc.error, exc.error).exception() from None
