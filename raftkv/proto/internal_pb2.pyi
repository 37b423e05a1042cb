from raftkv.proto import rpc_pb2 as _rpc_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RequestHeader(_message.Message):
    __slots__ = ("id", "client_id", "seq", "username", "auth_revision", "by_member")
    ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    AUTH_REVISION_FIELD_NUMBER: _ClassVar[int]
    BY_MEMBER_FIELD_NUMBER: _ClassVar[int]
    id: int
    client_id: int
    seq: int
    username: str
    auth_revision: int
    by_member: bool
    def __init__(self, id: _Optional[int] = ..., client_id: _Optional[int] = ..., seq: _Optional[int] = ..., username: _Optional[str] = ..., auth_revision: _Optional[int] = ..., by_member: _Optional[bool] = ...) -> None: ...

class InternalRequest(_message.Message):
    __slots__ = ("header", "put", "delete_range", "txn", "compaction", "lease_grant", "lease_revoke", "alarm", "publish_member", "lease_checkpoint", "member_update", "auth_enable", "auth_disable", "authenticate", "user_add", "user_delete", "user_change_password", "user_grant_role", "user_revoke_role", "role_add", "role_delete", "role_grant_permission", "role_revoke_permission")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    PUT_FIELD_NUMBER: _ClassVar[int]
    DELETE_RANGE_FIELD_NUMBER: _ClassVar[int]
    TXN_FIELD_NUMBER: _ClassVar[int]
    COMPACTION_FIELD_NUMBER: _ClassVar[int]
    LEASE_GRANT_FIELD_NUMBER: _ClassVar[int]
    LEASE_REVOKE_FIELD_NUMBER: _ClassVar[int]
    ALARM_FIELD_NUMBER: _ClassVar[int]
    PUBLISH_MEMBER_FIELD_NUMBER: _ClassVar[int]
    LEASE_CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    MEMBER_UPDATE_FIELD_NUMBER: _ClassVar[int]
    AUTH_ENABLE_FIELD_NUMBER: _ClassVar[int]
    AUTH_DISABLE_FIELD_NUMBER: _ClassVar[int]
    AUTHENTICATE_FIELD_NUMBER: _ClassVar[int]
    USER_ADD_FIELD_NUMBER: _ClassVar[int]
    USER_DELETE_FIELD_NUMBER: _ClassVar[int]
    USER_CHANGE_PASSWORD_FIELD_NUMBER: _ClassVar[int]
    USER_GRANT_ROLE_FIELD_NUMBER: _ClassVar[int]
    USER_REVOKE_ROLE_FIELD_NUMBER: _ClassVar[int]
    ROLE_ADD_FIELD_NUMBER: _ClassVar[int]
    ROLE_DELETE_FIELD_NUMBER: _ClassVar[int]
    ROLE_GRANT_PERMISSION_FIELD_NUMBER: _ClassVar[int]
    ROLE_REVOKE_PERMISSION_FIELD_NUMBER: _ClassVar[int]
    header: RequestHeader
    put: _rpc_pb2.PutRequest
    delete_range: _rpc_pb2.DeleteRangeRequest
    txn: _rpc_pb2.TxnRequest
    compaction: _rpc_pb2.CompactionRequest
    lease_grant: _rpc_pb2.LeaseGrantRequest
    lease_revoke: _rpc_pb2.LeaseRevokeRequest
    alarm: _rpc_pb2.AlarmRequest
    publish_member: _rpc_pb2.Member
    lease_checkpoint: LeaseCheckpoint
    member_update: _rpc_pb2.MemberUpdateRequest
    auth_enable: _rpc_pb2.AuthEnableRequest
    auth_disable: _rpc_pb2.AuthDisableRequest
    authenticate: InternalAuthenticateRequest
    user_add: _rpc_pb2.AuthUserAddRequest
    user_delete: _rpc_pb2.AuthUserDeleteRequest
    user_change_password: _rpc_pb2.AuthUserChangePasswordRequest
    user_grant_role: _rpc_pb2.AuthUserGrantRoleRequest
    user_revoke_role: _rpc_pb2.AuthUserRevokeRoleRequest
    role_add: _rpc_pb2.AuthRoleAddRequest
    role_delete: _rpc_pb2.AuthRoleDeleteRequest
    role_grant_permission: _rpc_pb2.AuthRoleGrantPermissionRequest
    role_revoke_permission: _rpc_pb2.AuthRoleRevokePermissionRequest
    def __init__(self, header: _Optional[_Union[RequestHeader, _Mapping]] = ..., put: _Optional[_Union[_rpc_pb2.PutRequest, _Mapping]] = ..., delete_range: _Optional[_Union[_rpc_pb2.DeleteRangeRequest, _Mapping]] = ..., txn: _Optional[_Union[_rpc_pb2.TxnRequest, _Mapping]] = ..., compaction: _Optional[_Union[_rpc_pb2.CompactionRequest, _Mapping]] = ..., lease_grant: _Optional[_Union[_rpc_pb2.LeaseGrantRequest, _Mapping]] = ..., lease_revoke: _Optional[_Union[_rpc_pb2.LeaseRevokeRequest, _Mapping]] = ..., alarm: _Optional[_Union[_rpc_pb2.AlarmRequest, _Mapping]] = ..., publish_member: _Optional[_Union[_rpc_pb2.Member, _Mapping]] = ..., lease_checkpoint: _Optional[_Union[LeaseCheckpoint, _Mapping]] = ..., member_update: _Optional[_Union[_rpc_pb2.MemberUpdateRequest, _Mapping]] = ..., auth_enable: _Optional[_Union[_rpc_pb2.AuthEnableRequest, _Mapping]] = ..., auth_disable: _Optional[_Union[_rpc_pb2.AuthDisableRequest, _Mapping]] = ..., authenticate: _Optional[_Union[InternalAuthenticateRequest, _Mapping]] = ..., user_add: _Optional[_Union[_rpc_pb2.AuthUserAddRequest, _Mapping]] = ..., user_delete: _Optional[_Union[_rpc_pb2.AuthUserDeleteRequest, _Mapping]] = ..., user_change_password: _Optional[_Union[_rpc_pb2.AuthUserChangePasswordRequest, _Mapping]] = ..., user_grant_role: _Optional[_Union[_rpc_pb2.AuthUserGrantRoleRequest, _Mapping]] = ..., user_revoke_role: _Optional[_Union[_rpc_pb2.AuthUserRevokeRoleRequest, _Mapping]] = ..., role_add: _Optional[_Union[_rpc_pb2.AuthRoleAddRequest, _Mapping]] = ..., role_delete: _Optional[_Union[_rpc_pb2.AuthRoleDeleteRequest, _Mapping]] = ..., role_grant_permission: _Optional[_Union[_rpc_pb2.AuthRoleGrantPermissionRequest, _Mapping]] = ..., role_revoke_permission: _Optional[_Union[_rpc_pb2.AuthRoleRevokePermissionRequest, _Mapping]] = ...) -> None: ...

class InternalAuthenticateRequest(_message.Message):
    __slots__ = ("name", "simple_token")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SIMPLE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    name: str
    simple_token: str
    def __init__(self, name: _Optional[str] = ..., simple_token: _Optional[str] = ...) -> None: ...

class TokenChange(_message.Message):
    __slots__ = ("issue_token", "user", "revoke_user", "revoke_all")
    ISSUE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    REVOKE_USER_FIELD_NUMBER: _ClassVar[int]
    REVOKE_ALL_FIELD_NUMBER: _ClassVar[int]
    issue_token: str
    user: str
    revoke_user: bool
    revoke_all: bool
    def __init__(self, issue_token: _Optional[str] = ..., user: _Optional[str] = ..., revoke_user: _Optional[bool] = ..., revoke_all: _Optional[bool] = ...) -> None: ...

class LeaseCheckpoint(_message.Message):
    __slots__ = ("id", "remaining_ttl")
    ID_FIELD_NUMBER: _ClassVar[int]
    REMAINING_TTL_FIELD_NUMBER: _ClassVar[int]
    id: int
    remaining_ttl: int
    def __init__(self, id: _Optional[int] = ..., remaining_ttl: _Optional[int] = ...) -> None: ...

class MemberContext(_message.Message):
    __slots__ = ("member",)
    MEMBER_FIELD_NUMBER: _ClassVar[int]
    member: _rpc_pb2.Member
    def __init__(self, member: _Optional[_Union[_rpc_pb2.Member, _Mapping]] = ...) -> None: ...

class ApplyResult(_message.Message):
    __slots__ = ("put", "delete_range", "txn", "compaction", "lease_grant", "lease_revoke", "alarm", "publish_member", "lease_checkpoint", "member_update", "auth_enable", "auth_disable", "authenticate", "user_add", "user_delete", "user_change_password", "user_grant_role", "user_revoke_role", "role_add", "role_delete", "role_grant_permission", "role_revoke_permission", "error", "tokens")
    PUT_FIELD_NUMBER: _ClassVar[int]
    DELETE_RANGE_FIELD_NUMBER: _ClassVar[int]
    TXN_FIELD_NUMBER: _ClassVar[int]
    COMPACTION_FIELD_NUMBER: _ClassVar[int]
    LEASE_GRANT_FIELD_NUMBER: _ClassVar[int]
    LEASE_REVOKE_FIELD_NUMBER: _ClassVar[int]
    ALARM_FIELD_NUMBER: _ClassVar[int]
    PUBLISH_MEMBER_FIELD_NUMBER: _ClassVar[int]
    LEASE_CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    MEMBER_UPDATE_FIELD_NUMBER: _ClassVar[int]
    AUTH_ENABLE_FIELD_NUMBER: _ClassVar[int]
    AUTH_DISABLE_FIELD_NUMBER: _ClassVar[int]
    AUTHENTICATE_FIELD_NUMBER: _ClassVar[int]
    USER_ADD_FIELD_NUMBER: _ClassVar[int]
    USER_DELETE_FIELD_NUMBER: _ClassVar[int]
    USER_CHANGE_PASSWORD_FIELD_NUMBER: _ClassVar[int]
    USER_GRANT_ROLE_FIELD_NUMBER: _ClassVar[int]
    USER_REVOKE_ROLE_FIELD_NUMBER: _ClassVar[int]
    ROLE_ADD_FIELD_NUMBER: _ClassVar[int]
    ROLE_DELETE_FIELD_NUMBER: _ClassVar[int]
    ROLE_GRANT_PERMISSION_FIELD_NUMBER: _ClassVar[int]
    ROLE_REVOKE_PERMISSION_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    put: _rpc_pb2.PutResponse
    delete_range: _rpc_pb2.DeleteRangeResponse
    txn: _rpc_pb2.TxnResponse
    compaction: _rpc_pb2.CompactionResponse
    lease_grant: _rpc_pb2.LeaseGrantResponse
    lease_revoke: _rpc_pb2.LeaseRevokeResponse
    alarm: _rpc_pb2.AlarmResponse
    publish_member: _rpc_pb2.MemberUpdateResponse
    lease_checkpoint: _rpc_pb2.LeaseCheckpointResponse
    member_update: _rpc_pb2.MemberUpdateResponse
    auth_enable: _rpc_pb2.AuthEnableResponse
    auth_disable: _rpc_pb2.AuthDisableResponse
    authenticate: _rpc_pb2.AuthenticateResponse
    user_add: _rpc_pb2.AuthUserAddResponse
    user_delete: _rpc_pb2.AuthUserDeleteResponse
    user_change_password: _rpc_pb2.AuthUserChangePasswordResponse
    user_grant_role: _rpc_pb2.AuthUserGrantRoleResponse
    user_revoke_role: _rpc_pb2.AuthUserRevokeRoleResponse
    role_add: _rpc_pb2.AuthRoleAddResponse
    role_delete: _rpc_pb2.AuthRoleDeleteResponse
    role_grant_permission: _rpc_pb2.AuthRoleGrantPermissionResponse
    role_revoke_permission: _rpc_pb2.AuthRoleRevokePermissionResponse
    error: str
    tokens: TokenChange
    def __init__(self, put: _Optional[_Union[_rpc_pb2.PutResponse, _Mapping]] = ..., delete_range: _Optional[_Union[_rpc_pb2.DeleteRangeResponse, _Mapping]] = ..., txn: _Optional[_Union[_rpc_pb2.TxnResponse, _Mapping]] = ..., compaction: _Optional[_Union[_rpc_pb2.CompactionResponse, _Mapping]] = ..., lease_grant: _Optional[_Union[_rpc_pb2.LeaseGrantResponse, _Mapping]] = ..., lease_revoke: _Optional[_Union[_rpc_pb2.LeaseRevokeResponse, _Mapping]] = ..., alarm: _Optional[_Union[_rpc_pb2.AlarmResponse, _Mapping]] = ..., publish_member: _Optional[_Union[_rpc_pb2.MemberUpdateResponse, _Mapping]] = ..., lease_checkpoint: _Optional[_Union[_rpc_pb2.LeaseCheckpointResponse, _Mapping]] = ..., member_update: _Optional[_Union[_rpc_pb2.MemberUpdateResponse, _Mapping]] = ..., auth_enable: _Optional[_Union[_rpc_pb2.AuthEnableResponse, _Mapping]] = ..., auth_disable: _Optional[_Union[_rpc_pb2.AuthDisableResponse, _Mapping]] = ..., authenticate: _Optional[_Union[_rpc_pb2.AuthenticateResponse, _Mapping]] = ..., user_add: _Optional[_Union[_rpc_pb2.AuthUserAddResponse, _Mapping]] = ..., user_delete: _Optional[_Union[_rpc_pb2.AuthUserDeleteResponse, _Mapping]] = ..., user_change_password: _Optional[_Union[_rpc_pb2.AuthUserChangePasswordResponse, _Mapping]] = ..., user_grant_role: _Optional[_Union[_rpc_pb2.AuthUserGrantRoleResponse, _Mapping]] = ..., user_revoke_role: _Optional[_Union[_rpc_pb2.AuthUserRevokeRoleResponse, _Mapping]] = ..., role_add: _Optional[_Union[_rpc_pb2.AuthRoleAddResponse, _Mapping]] = ..., role_delete: _Optional[_Union[_rpc_pb2.AuthRoleDeleteResponse, _Mapping]] = ..., role_grant_permission: _Optional[_Union[_rpc_pb2.AuthRoleGrantPermissionResponse, _Mapping]] = ..., role_revoke_permission: _Optional[_Union[_rpc_pb2.AuthRoleRevokePermissionResponse, _Mapping]] = ..., error: _Optional[str] = ..., tokens: _Optional[_Union[TokenChange, _Mapping]] = ...) -> None: ...
