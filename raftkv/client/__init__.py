"""raftkv's Python client: leader-aware, retries only what is safe, resumable watches.

    from raftkv.client import Client
    from raftkv.client.ops import value, put, get

    with Client() as c:                      # KVCTL_ENDPOINTS, KVCTL_CACERT, ... from the environment
        c.put("k", "v")
        c.txn().if_(value("k") == "v").then(put("k", "w")).else_(get("k")).commit()
        for event in c.watch("k", prefix=True):
            ...

``AsyncClient`` (``raftkv.client.aio``) offers the same methods as coroutines.
"""

from raftkv.client.aio import AsyncClient
from raftkv.client.config import ClientConfig, ConfigError
from raftkv.client.errors import (
    ClientError,
    CompactedError,
    FailedPrecondition,
    FutureRevisionError,
    InvalidArgument,
    LeaseNotFound,
    NoLeaderError,
    NoSpaceError,
    NotFound,
    PermissionDenied,
    RequestTooLarge,
    TimeoutError,
    Unavailable,
    WatchCanceled,
)
from raftkv.client.surface import Lease
from raftkv.client.sync import Client
from raftkv.client.types import (
    Alarm,
    DeleteResult,
    Event,
    EventType,
    KeyValue,
    LeaseInfo,
    Member,
    PutResult,
    RangeResult,
    Status,
    TxnResult,
)

__all__ = [
    "Alarm", "AsyncClient", "Client", "ClientConfig", "ClientError", "CompactedError", "ConfigError",
    "DeleteResult", "Event", "EventType", "FailedPrecondition", "FutureRevisionError", "InvalidArgument",
    "KeyValue", "Lease", "LeaseInfo", "LeaseNotFound", "Member", "NoLeaderError", "NoSpaceError",
    "NotFound", "PermissionDenied", "PutResult", "RangeResult", "RequestTooLarge", "Status",
    "TimeoutError", "TxnResult", "Unavailable", "WatchCanceled",
]
