"""``user``, ``role`` and ``auth`` commands: etcdctl 3.4's verbs, arguments and output.

``auth enable`` behaves as etcdctl's: when the server answers that root lacks the root role, it creates
the role, grants it to root and tries again. ``auth status`` is etcdctl 3.5's.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

from google.protobuf.message import Message

from cli.common import CommandError, Context
from cli.output import print_json, write_line
from raftkv import errors
from raftkv.client import ClientError
from raftkv.client import routing as r
from raftkv.client.ops import key_range, prefix_end
from raftkv.proto import auth_pb2, rpc_pb2


def _auth(name: str, response: type[Message]) -> r.Method:
    return r.Method(f"/etcdserverpb.Auth/{name}", response)


_PERM_TYPES = {"read": auth_pb2.Permission.READ, "write": auth_pb2.Permission.WRITE,
               "readwrite": auth_pb2.Permission.READWRITE}


def register(sub: argparse._SubParsersAction) -> None:
    user = sub.add_parser("user", help="user add|get|list|delete|passwd|grant-role|revoke-role").add_subparsers(
        dest="user_cmd", required=True, metavar="COMMAND")
    p = user.add_parser("add", help="add a user (NAME or NAME:PASSWORD; asks for the password otherwise)")
    p.add_argument("name")
    p.add_argument("--new-user-password", help="the password, instead of asking for it")
    p.add_argument("--no-password", action="store_true", help="a user that authenticates by certificate CN only")
    _interactive(p)
    p.set_defaults(func=user_add)
    p = user.add_parser("get", help="a user's roles")
    p.add_argument("name")
    p.add_argument("--detail", action="store_true", help="show the permissions of each role too")
    p.set_defaults(func=user_get)
    user.add_parser("list", help="every user").set_defaults(func=user_list)
    p = user.add_parser("delete", help="delete a user")
    p.add_argument("name")
    p.set_defaults(func=user_delete)
    p = user.add_parser("passwd", help="change a user's password")
    p.add_argument("name")
    _interactive(p)
    p.set_defaults(func=user_passwd)
    for verb, func in (("grant-role", user_grant_role), ("revoke-role", user_revoke_role)):
        p = user.add_parser(verb, help=f"{verb.replace('-', ' ')} of a user")
        p.add_argument("name")
        p.add_argument("role")
        p.set_defaults(func=func)

    role = sub.add_parser("role", help="role add|get|list|delete|grant-permission|revoke-permission").add_subparsers(
        dest="role_cmd", required=True, metavar="COMMAND")
    for verb, func in (("add", role_add), ("get", role_get), ("delete", role_delete)):
        p = role.add_parser(verb, help=f"{verb} a role")
        p.add_argument("name")
        p.set_defaults(func=func)
    role.add_parser("list", help="every role").set_defaults(func=role_list)
    p = role.add_parser("grant-permission", help="grant read|write|readwrite on a key, range or prefix")
    p.add_argument("name")
    p.add_argument("perm_type", choices=sorted(_PERM_TYPES))
    _key_range(p)
    p.set_defaults(func=role_grant_permission)
    p = role.add_parser("revoke-permission", help="revoke the permission on a key, range or prefix")
    p.add_argument("name")
    _key_range(p)
    p.set_defaults(func=role_revoke_permission)

    auth = sub.add_parser("auth", help="auth enable|disable|status").add_subparsers(
        dest="auth_cmd", required=True, metavar="COMMAND")
    auth.add_parser("enable", help="turn authentication on (needs the root user)").set_defaults(func=auth_enable)
    auth.add_parser("disable", help="turn authentication off").set_defaults(func=auth_disable)
    auth.add_parser("status", help="whether authentication is on, and the auth revision").set_defaults(
        func=auth_status)


def _interactive(p: argparse.ArgumentParser) -> None:
    p.add_argument("--interactive", type=lambda v: v.lower() != "false", default=True, metavar="BOOL",
                   help="ask for the password on the terminal (false: read one line from stdin)")


def _key_range(p: argparse.ArgumentParser) -> None:
    p.add_argument("key")
    p.add_argument("range_end", nargs="?")
    p.add_argument("--prefix", action="store_true", help="every key starting with KEY")
    p.add_argument("--from-key", action="store_true", help="every key from KEY on")


def _perm_range(args: argparse.Namespace) -> tuple[bytes, bytes]:
    """etcdctl's encoding: an empty key with --prefix or --from-key is the whole keyspace."""
    try:
        return key_range(args.key, args.range_end, prefix=args.prefix, from_key=args.from_key)
    except ValueError as exc:
        raise CommandError(str(exc)) from None


def _call(ctx: Context, name: str, response: type[Message], message: Message, write: bool = True) -> Any:
    return ctx.client.call(_auth(name, response), message, write=write)


def _done(ctx: Context, response: Any, line: str) -> int:
    if ctx.output == "json":
        print_json(response)
    else:
        write_line(line)
    return 0


def _read_password(args: argparse.Namespace, prompt: str) -> str:
    if not args.interactive:
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass(f"Password of {prompt}: ")
    if getpass.getpass("Type password of " + prompt + " again for confirmation: ") != first:
        raise CommandError("given passwords are different")
    return first


# ----------------------------------------------------------------------------- users

def user_add(ctx: Context, args: argparse.Namespace) -> int:
    name, colon, password = args.name.partition(":")
    options = auth_pb2.UserAddOptions(no_password=args.no_password)
    if args.no_password:
        password = ""
    elif args.new_user_password is not None:
        password = args.new_user_password
    elif not colon:
        password = _read_password(args, name)
    request = rpc_pb2.AuthUserAddRequest(name=name, password=password, options=options)
    response = _call(ctx, "UserAdd", rpc_pb2.AuthUserAddResponse, request)
    return _done(ctx, response, f"User {name} created")


def user_get(ctx: Context, args: argparse.Namespace) -> int:
    response = _call(ctx, "UserGet", rpc_pb2.AuthUserGetResponse, rpc_pb2.AuthUserGetRequest(name=args.name), False)
    if ctx.output == "json":
        print_json(response)
        return 0
    write_line(f"User: {args.name}")
    if not args.detail:
        write_line("Roles: " + " ".join(response.roles))
        return 0
    for role in response.roles:
        write_line("")
        _print_role(role, _role(ctx, role))
    return 0


def user_list(ctx: Context, args: argparse.Namespace) -> int:
    response = _call(ctx, "UserList", rpc_pb2.AuthUserListResponse, rpc_pb2.AuthUserListRequest(), False)
    return _listing(ctx, response, response.users)


def user_delete(ctx: Context, args: argparse.Namespace) -> int:
    response = _call(ctx, "UserDelete", rpc_pb2.AuthUserDeleteResponse, rpc_pb2.AuthUserDeleteRequest(name=args.name))
    return _done(ctx, response, f"User {args.name} deleted")


def user_passwd(ctx: Context, args: argparse.Namespace) -> int:
    request = rpc_pb2.AuthUserChangePasswordRequest(name=args.name, password=_read_password(args, args.name))
    response = _call(ctx, "UserChangePassword", rpc_pb2.AuthUserChangePasswordResponse, request)
    return _done(ctx, response, "Password updated")


def user_grant_role(ctx: Context, args: argparse.Namespace) -> int:
    request = rpc_pb2.AuthUserGrantRoleRequest(user=args.name, role=args.role)
    response = _call(ctx, "UserGrantRole", rpc_pb2.AuthUserGrantRoleResponse, request)
    return _done(ctx, response, f"Role {args.role} is granted to user {args.name}")


def user_revoke_role(ctx: Context, args: argparse.Namespace) -> int:
    request = rpc_pb2.AuthUserRevokeRoleRequest(name=args.name, role=args.role)
    response = _call(ctx, "UserRevokeRole", rpc_pb2.AuthUserRevokeRoleResponse, request)
    return _done(ctx, response, f"Role {args.role} is revoked from user {args.name}")


# ----------------------------------------------------------------------------- roles

def _role(ctx: Context, name: str) -> Any:
    return _call(ctx, "RoleGet", rpc_pb2.AuthRoleGetResponse, rpc_pb2.AuthRoleGetRequest(role=name), False)


def _print_role(name: str, response: Any) -> None:
    """etcdctl's listing: single keys bare, ranges as [key, end), open ends and prefixes spelled out."""
    write_line(f"Role {name}")
    for title, types in (("KV Read:", (auth_pb2.Permission.READ, auth_pb2.Permission.READWRITE)),
                         ("KV Write:", (auth_pb2.Permission.WRITE, auth_pb2.Permission.READWRITE))):
        write_line(title)
        for perm in response.perm:
            if perm.permType in types:
                write_line("\t" + _describe(perm.key, perm.range_end))


def _describe(key: bytes, range_end: bytes) -> str:
    k, end = key.decode(errors="replace"), range_end.decode(errors="replace")
    if not range_end:
        return k
    text = f"[{k}, <open ended>" if range_end == b"\0" else f"[{k}, {end})"
    if prefix_end(key) == range_end:
        text += f" (prefix {k})"
    return text


def role_add(ctx: Context, args: argparse.Namespace) -> int:
    response = _call(ctx, "RoleAdd", rpc_pb2.AuthRoleAddResponse, rpc_pb2.AuthRoleAddRequest(name=args.name))
    return _done(ctx, response, f"Role {args.name} created")


def role_get(ctx: Context, args: argparse.Namespace) -> int:
    response = _role(ctx, args.name)
    if ctx.output == "json":
        print_json(response)
    else:
        _print_role(args.name, response)
    return 0


def role_list(ctx: Context, args: argparse.Namespace) -> int:
    response = _call(ctx, "RoleList", rpc_pb2.AuthRoleListResponse, rpc_pb2.AuthRoleListRequest(), False)
    return _listing(ctx, response, response.roles)


def _listing(ctx: Context, response: Any, names: Any) -> int:
    if ctx.output == "json":
        print_json(response)
    else:
        for name in names:
            write_line(name)
    return 0


def role_delete(ctx: Context, args: argparse.Namespace) -> int:
    response = _call(ctx, "RoleDelete", rpc_pb2.AuthRoleDeleteResponse, rpc_pb2.AuthRoleDeleteRequest(role=args.name))
    return _done(ctx, response, f"Role {args.name} deleted")


def role_grant_permission(ctx: Context, args: argparse.Namespace) -> int:
    key, range_end = _perm_range(args)
    perm = auth_pb2.Permission(permType=_PERM_TYPES[args.perm_type], key=key, range_end=range_end)
    request = rpc_pb2.AuthRoleGrantPermissionRequest(name=args.name, perm=perm)
    response = _call(ctx, "RoleGrantPermission", rpc_pb2.AuthRoleGrantPermissionResponse, request)
    return _done(ctx, response, f"Role {args.name} updated")


def role_revoke_permission(ctx: Context, args: argparse.Namespace) -> int:
    key, range_end = _perm_range(args)
    request = rpc_pb2.AuthRoleRevokePermissionRequest(role=args.name, key=key, range_end=range_end)
    response = _call(ctx, "RoleRevokePermission", rpc_pb2.AuthRoleRevokePermissionResponse, request)
    what = f"key {args.key}" if not range_end else f"range [{args.key}, {range_end.decode(errors='replace')})"
    return _done(ctx, response, f"Permission of {what} is revoked from role {args.name}")


# ----------------------------------------------------------------------------- auth

def auth_enable(ctx: Context, args: argparse.Namespace) -> int:
    for _ in range(2):
        try:
            response = _call(ctx, "AuthEnable", rpc_pb2.AuthEnableResponse, rpc_pb2.AuthEnableRequest())
        except ClientError as exc:
            if errors.from_message(exc.details) != errors.ROOT_ROLE_NOT_EXIST:
                raise
            try:
                _call(ctx, "RoleAdd", rpc_pb2.AuthRoleAddResponse, rpc_pb2.AuthRoleAddRequest(name="root"))
            except ClientError as role_exc:
                if errors.from_message(role_exc.details) != errors.ROLE_ALREADY_EXISTS:
                    raise
            _call(ctx, "UserGrantRole", rpc_pb2.AuthUserGrantRoleResponse,
                  rpc_pb2.AuthUserGrantRoleRequest(user="root", role="root"))
            continue
        return _done(ctx, response, "Authentication Enabled")
    raise CommandError("root user does not have root role after granting it")


def auth_disable(ctx: Context, args: argparse.Namespace) -> int:
    response = _call(ctx, "AuthDisable", rpc_pb2.AuthDisableResponse, rpc_pb2.AuthDisableRequest())
    return _done(ctx, response, "Authentication Disabled")


def auth_status(ctx: Context, args: argparse.Namespace) -> int:
    response = _call(ctx, "AuthStatus", rpc_pb2.AuthStatusResponse, rpc_pb2.AuthStatusRequest(), False)
    return _done(ctx, response,
                 f"Authentication Status: {str(response.enabled).lower()}\nAuthRevision: {response.authRevision}")
