"""The replicated auth store applied through the real applier: etcd's errors, root rules, revisions,
apply-time permission checks and the token changes the node acts on."""

from __future__ import annotations

from raftkv import errors
from raftkv.proto import auth_pb2, internal_pb2, rpc_pb2
from raftkv.statemachine.applier import AppliedEntry

from .conftest import Harness


def auth(h: Harness, kind: str, body: object, user: str = "", revision: int = 0) -> AppliedEntry:
    req = internal_pb2.InternalRequest()
    getattr(req, kind).CopyFrom(body)
    req.header.id, req.header.username, req.header.auth_revision = h.index + 1, user, revision
    return h.apply_many(req)[0]


def error(applied: AppliedEntry) -> errors.EtcdError | None:
    assert applied.result is not None
    return errors.from_message(applied.result.error) if applied.result.error else None


def setup_root_and_alice(h: Harness) -> None:
    for name in ("root", "alice"):
        assert error(auth(h, "user_add", rpc_pb2.AuthUserAddRequest(name=name, hashedPassword="h"))) is None
    auth(h, "role_add", rpc_pb2.AuthRoleAddRequest(name="svc"))
    perm = auth_pb2.Permission(permType=auth_pb2.Permission.READWRITE, key=b"/svc/", range_end=b"/svc0")
    auth(h, "role_grant_permission", rpc_pb2.AuthRoleGrantPermissionRequest(name="svc", perm=perm))
    auth(h, "user_grant_role", rpc_pb2.AuthUserGrantRoleRequest(user="alice", role="svc"))


def test_enable_needs_root_with_root_role(h: Harness) -> None:
    assert error(auth(h, "auth_enable", rpc_pb2.AuthEnableRequest())) == errors.ROOT_USER_NOT_EXIST
    setup_root_and_alice(h)
    assert error(auth(h, "auth_enable", rpc_pb2.AuthEnableRequest())) == errors.ROOT_ROLE_NOT_EXIST
    auth(h, "user_grant_role", rpc_pb2.AuthUserGrantRoleRequest(user="root", role="root"))
    enabled = auth(h, "auth_enable", rpc_pb2.AuthEnableRequest())
    assert error(enabled) is None and enabled.result is not None and enabled.result.tokens.revoke_all
    assert h.store.auth_state().enabled


def test_revision_counts_changes_and_survives_reopen(h: Harness) -> None:
    assert h.store.auth_state().revision == 1
    setup_root_and_alice(h)
    assert h.store.auth_state().revision == 6
    auth(h, "role_add", rpc_pb2.AuthRoleAddRequest(name="svc"))  # refused: no change
    assert h.store.auth_state().revision == 6


def enable(h: Harness) -> int:
    setup_root_and_alice(h)
    auth(h, "user_grant_role", rpc_pb2.AuthUserGrantRoleRequest(user="root", role="root"))
    auth(h, "auth_enable", rpc_pb2.AuthEnableRequest())
    return h.store.auth_state().revision


def put(h: Harness, key: bytes, user: str, revision: int) -> AppliedEntry:
    req = internal_pb2.InternalRequest(put=rpc_pb2.PutRequest(key=key, value=b"v"))
    req.header.id, req.header.username, req.header.auth_revision = h.index + 1, user, revision
    return h.apply_many(req)[0]


def test_writes_are_checked_at_apply(h: Harness) -> None:
    revision = enable(h)
    assert error(put(h, b"/svc/a", "alice", revision)) is None
    assert error(put(h, b"/other", "alice", revision)) == errors.PERMISSION_DENIED
    assert error(put(h, b"/other", "root", revision)) is None
    assert error(put(h, b"/svc/a", "", 0)) == errors.USER_EMPTY
    assert error(put(h, b"/svc/a", "ghost", revision)) == errors.PERMISSION_DENIED
    assert error(put(h, b"/svc/a", "alice", revision - 1)) == errors.AUTH_OLD_REVISION
    assert h.range(b"/other").count == 1 and h.range(b"/svc/a").count == 1


def test_txn_checks_compares_and_both_branches(h: Harness) -> None:
    revision = enable(h)
    txn = rpc_pb2.TxnRequest(
        compare=[rpc_pb2.Compare(key=b"/svc/a", target=rpc_pb2.Compare.VERSION, version=0)],
        success=[rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"/svc/a"))],
        failure=[rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"/other"))],
    )
    req = internal_pb2.InternalRequest(txn=txn)
    req.header.username, req.header.auth_revision = "alice", revision
    assert error(h.apply_many(req)[0]) == errors.PERMISSION_DENIED
    assert h.range(b"/svc/a").count == 0


def test_root_cannot_be_removed_while_enabled_and_tokens_are_revoked(h: Harness) -> None:
    revision = enable(h)
    root = ("root", revision)
    assert error(auth(h, "user_delete", rpc_pb2.AuthUserDeleteRequest(name="root"), *root)) == errors.INVALID_AUTH_MGMT
    assert error(auth(h, "role_delete", rpc_pb2.AuthRoleDeleteRequest(role="root"), *root)) == errors.INVALID_AUTH_MGMT
    revoke = rpc_pb2.AuthUserRevokeRoleRequest(name="root", role="root")
    assert error(auth(h, "user_revoke_role", revoke, *root)) == errors.INVALID_AUTH_MGMT
    assert error(auth(h, "role_add", rpc_pb2.AuthRoleAddRequest(name="x"), "alice", revision)) == errors.PERMISSION_DENIED
    deleted = auth(h, "user_delete", rpc_pb2.AuthUserDeleteRequest(name="alice"), *root)
    assert deleted.result is not None and deleted.result.tokens.revoke_user and deleted.result.tokens.user == "alice"


def test_authenticate_issues_a_token_named_by_its_index(h: Harness) -> None:
    revision = enable(h)
    request = internal_pb2.InternalAuthenticateRequest(name="alice", simple_token="abc")
    issued = auth(h, "authenticate", request, revision=revision)
    assert issued.result is not None and issued.result.tokens.issue_token == f"abc.{issued.index}"
    stale = auth(h, "authenticate", request, revision=revision - 1)
    assert error(stale) == errors.AUTH_OLD_REVISION


def test_no_plaintext_password_is_stored(h: Harness) -> None:
    auth(h, "user_add", rpc_pb2.AuthUserAddRequest(name="u", password="secret", hashedPassword="scrypt$x"))
    user = h.store.auth_state().users["u"]
    assert user.password == b"scrypt$x"
    with h.store.env.read() as txn:
        assert all(b"secret" not in value for _, value in txn.cursor(db=h.store.env.db("auth")))


def test_a_change_earlier_in_a_batch_rules_the_writes_after_it(h: Harness) -> None:
    """The applier reads the auth state once per batch: an auth request in the batch makes it read again."""
    revision = enable(h)

    def request(kind: str, body: object, user: str, auth_revision: int) -> internal_pb2.InternalRequest:
        req = internal_pb2.InternalRequest()
        getattr(req, kind).CopyFrom(body)
        req.header.username, req.header.auth_revision = user, auth_revision
        return req

    write = rpc_pb2.PutRequest(key=b"/svc/a", value=b"v")
    revoke = rpc_pb2.AuthUserRevokeRoleRequest(name="alice", role="svc")
    applied = h.apply_many(
        request("put", write, "alice", revision),
        request("user_revoke_role", revoke, "root", revision),
        request("put", write, "alice", revision + 1),
    )
    assert [error(a) for a in applied] == [None, None, errors.PERMISSION_DENIED]
