"""``etcdserverpb.Auth``: users, roles, permissions and tokens, answered as etcd 3.4 answers them.

Changes (enable, disable, user and role management) are proposed through the log with the caller's
identity and checked when applied (``raftkv.statemachine.auth_store``: admin-only, etcd's errors), so every
member decides alike. Passwords are hashed here, on the member that received them, before proposing
(etcd 3.5's ``hashedPassword``): the log and snapshots never hold a plaintext password.

Listings and lookups (UserGet, UserList, RoleGet, RoleList, AuthStatus) are linearizable local reads:
a read barrier, then the member's auth store. UserGet is allowed for one's own user and RoleGet for one's
own roles, as in etcd.

Authenticate checks the password on this member (off the event loop: the KDF is slow on purpose) and
proposes only the user name and a fresh random token prefix; every member registers the token when it
applies the entry. If the store changed between the check and the apply the entry is refused and the
check is made again, as etcd's retry loop does.
"""

from __future__ import annotations

import asyncio

from raftkv import errors
from raftkv.api import identity
from raftkv.api.kv import DEFAULT_REQUEST_TIMEOUT, propose
from raftkv.api.metadata import Context, call_timeout, with_header
from raftkv.proto import internal_pb2, rpc_pb2, rpc_pb2_grpc
from raftkv.security.passwords import hash_password, verify_password
from raftkv.server.backend import Backend
from raftkv.server.tokens import new_prefix

#: How often Authenticate re-checks a password whose store changed meanwhile before giving up.
MAX_AUTHENTICATE_ATTEMPTS = 5


class AuthService(rpc_pb2_grpc.AuthServicer):
    def __init__(self, backend: Backend, request_timeout: float = DEFAULT_REQUEST_TIMEOUT) -> None:
        self._backend = backend
        self._timeout = request_timeout

    async def _change(self, kind: str, body: object, context: Context) -> internal_pb2.ApplyResult:
        request = internal_pb2.InternalRequest()
        getattr(request, kind).CopyFrom(body)
        return await propose(self._backend, request, context, self._timeout)

    async def _read(self, context: Context) -> identity.AuthInfo:
        await self._backend.read_barrier(call_timeout(context, self._timeout))
        return await identity.auth_info(context, self._backend)

    # --- enable, disable, status ------------------------------------------------------------------------

    async def AuthEnable(self, request: rpc_pb2.AuthEnableRequest, context: Context) -> rpc_pb2.AuthEnableResponse:
        result = await self._change("auth_enable", request, context)
        return with_header(result.auth_enable, self._backend)

    async def AuthDisable(
        self, request: rpc_pb2.AuthDisableRequest, context: Context
    ) -> rpc_pb2.AuthDisableResponse:
        result = await self._change("auth_disable", request, context)
        return with_header(result.auth_disable, self._backend)

    async def AuthStatus(self, request: rpc_pb2.AuthStatusRequest, context: Context) -> rpc_pb2.AuthStatusResponse:
        await self._backend.read_barrier(call_timeout(context, self._timeout))
        state = self._backend.auth_state()
        status = rpc_pb2.AuthStatusResponse(enabled=state.enabled, authRevision=state.revision)
        return with_header(status, self._backend)

    # --- tokens -----------------------------------------------------------------------------------------

    async def Authenticate(
        self, request: rpc_pb2.AuthenticateRequest, context: Context
    ) -> rpc_pb2.AuthenticateResponse:
        await self._backend.read_barrier(call_timeout(context, self._timeout))
        for _ in range(MAX_AUTHENTICATE_ATTEMPTS):
            state = self._backend.auth_state()
            if not state.enabled:
                raise errors.AUTH_NOT_ENABLED.exception()
            user = state.users.get(request.name)
            if user is None or user.options.no_password:
                raise errors.AUTH_FAILED.exception()
            if not await asyncio.to_thread(verify_password, request.password, user.password.decode()):
                raise errors.AUTH_FAILED.exception()
            entry = internal_pb2.InternalRequest(
                authenticate=internal_pb2.InternalAuthenticateRequest(name=request.name, simple_token=new_prefix())
            )
            entry.header.auth_revision = state.revision
            try:
                result = await propose(self._backend, entry, context, self._timeout)
            except errors.EtcdException as exc:
                if exc.error != errors.AUTH_OLD_REVISION:
                    raise
                continue  # the store changed after the password check: check again
            return with_header(rpc_pb2.AuthenticateResponse(token=result.tokens.issue_token), self._backend)
        raise errors.AUTH_OLD_REVISION.exception()

    # --- users ------------------------------------------------------------------------------------------

    async def UserAdd(self, request: rpc_pb2.AuthUserAddRequest, context: Context) -> rpc_pb2.AuthUserAddResponse:
        body = rpc_pb2.AuthUserAddRequest(name=request.name, options=request.options)
        if not request.options.no_password:
            body.hashedPassword = await asyncio.to_thread(hash_password, request.password)
        result = await self._change("user_add", body, context)
        return with_header(result.user_add, self._backend)

    async def UserChangePassword(
        self, request: rpc_pb2.AuthUserChangePasswordRequest, context: Context
    ) -> rpc_pb2.AuthUserChangePasswordResponse:
        body = rpc_pb2.AuthUserChangePasswordRequest(name=request.name)
        body.hashedPassword = await asyncio.to_thread(hash_password, request.password)
        result = await self._change("user_change_password", body, context)
        return with_header(result.user_change_password, self._backend)

    async def UserDelete(
        self, request: rpc_pb2.AuthUserDeleteRequest, context: Context
    ) -> rpc_pb2.AuthUserDeleteResponse:
        result = await self._change("user_delete", request, context)
        return with_header(result.user_delete, self._backend)

    async def UserGrantRole(
        self, request: rpc_pb2.AuthUserGrantRoleRequest, context: Context
    ) -> rpc_pb2.AuthUserGrantRoleResponse:
        result = await self._change("user_grant_role", request, context)
        return with_header(result.user_grant_role, self._backend)

    async def UserRevokeRole(
        self, request: rpc_pb2.AuthUserRevokeRoleRequest, context: Context
    ) -> rpc_pb2.AuthUserRevokeRoleResponse:
        result = await self._change("user_revoke_role", request, context)
        return with_header(result.user_revoke_role, self._backend)

    async def UserGet(self, request: rpc_pb2.AuthUserGetRequest, context: Context) -> rpc_pb2.AuthUserGetResponse:
        info = await self._read(context)
        state = self._backend.auth_state()
        if request.name != info.username:
            state.check_admin(info.username)
        user = state.users.get(request.name)
        if user is None:
            raise errors.USER_NOT_FOUND.exception()
        return with_header(rpc_pb2.AuthUserGetResponse(roles=list(user.roles)), self._backend)

    async def UserList(self, request: rpc_pb2.AuthUserListRequest, context: Context) -> rpc_pb2.AuthUserListResponse:
        info = await self._read(context)
        state = self._backend.auth_state()
        state.check_admin(info.username)
        return with_header(rpc_pb2.AuthUserListResponse(users=sorted(state.users)), self._backend)

    # --- roles ------------------------------------------------------------------------------------------

    async def RoleAdd(self, request: rpc_pb2.AuthRoleAddRequest, context: Context) -> rpc_pb2.AuthRoleAddResponse:
        result = await self._change("role_add", request, context)
        return with_header(result.role_add, self._backend)

    async def RoleDelete(
        self, request: rpc_pb2.AuthRoleDeleteRequest, context: Context
    ) -> rpc_pb2.AuthRoleDeleteResponse:
        result = await self._change("role_delete", request, context)
        return with_header(result.role_delete, self._backend)

    async def RoleGrantPermission(
        self, request: rpc_pb2.AuthRoleGrantPermissionRequest, context: Context
    ) -> rpc_pb2.AuthRoleGrantPermissionResponse:
        result = await self._change("role_grant_permission", request, context)
        return with_header(result.role_grant_permission, self._backend)

    async def RoleRevokePermission(
        self, request: rpc_pb2.AuthRoleRevokePermissionRequest, context: Context
    ) -> rpc_pb2.AuthRoleRevokePermissionResponse:
        result = await self._change("role_revoke_permission", request, context)
        return with_header(result.role_revoke_permission, self._backend)

    async def RoleGet(self, request: rpc_pb2.AuthRoleGetRequest, context: Context) -> rpc_pb2.AuthRoleGetResponse:
        info = await self._read(context)
        state = self._backend.auth_state()
        if not state.has_role(info.username, request.role):
            state.check_admin(info.username)
        role = state.roles.get(request.role)
        if role is None:
            raise errors.ROLE_NOT_FOUND.exception()
        return with_header(rpc_pb2.AuthRoleGetResponse(perm=list(role.keyPermission)), self._backend)

    async def RoleList(self, request: rpc_pb2.AuthRoleListRequest, context: Context) -> rpc_pb2.AuthRoleListResponse:
        info = await self._read(context)
        state = self._backend.auth_state()
        state.check_admin(info.username)
        return with_header(rpc_pb2.AuthRoleListResponse(roles=sorted(state.roles)), self._backend)
