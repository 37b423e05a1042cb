"""Leader-aware routing and safe retries, written once for both clients.

The policy is a generator (``Executor.run``) that yields *steps* — "call this method on that endpoint" or
"sleep this long" — and receives each call's outcome. The blocking and asyncio clients only drive it
(``drive_sync`` here, ``drive_async`` in ``aio.py``), so they cannot disagree about where a request goes
or whether retrying it is safe.

Failover. A leader whose process died refuses connections (its port is closed), and a call in flight to
it fails at once: that is "leader gone", not "leader slow". The plan then asks the other members who leads
now without sleeping first, skips members that refused it (for ``REFUSED_HOLD``) and names they still give
as leader until they notice, and while an election runs ("no leader") asks again every 25 ms
(``FIRST_DELAY``) instead of backing off further, so the request reaches the new leader as soon as one answers. A member
that is merely slow or cut off is no different from before: its attempt times out.

Retry rules. An error that proves the request was never applied (connection refused, "no leader", ...)
is always retried. An ambiguous one (timeout, connection lost mid-call, "leader changed") is retried only
if the request is idempotent or the server deduplicates writes: every write carries
``raftkv-client-id``/``raftkv-seq`` metadata, the seq is fixed when the request is built, and raftkv
answers a repeated (client-id, seq) with the original result instead of applying it twice.
"""

from __future__ import annotations

import enum
import random
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeAlias, TypeVar

import grpc
import grpc.aio
from google.protobuf.message import Message

from raftkv import errors as etcd
from raftkv.client.config import split_endpoint
from raftkv.client.errors import ClientError, TimeoutError, from_rpc_error
from raftkv.proto import rpc_pb2

T = TypeVar("T")
M = TypeVar("M", bound=Message)


@dataclass(frozen=True)
class Method(Generic[M]):
    """A gRPC method: its wire path and how to decode its response (of type ``M``)."""

    path: str
    response: type[M]
    streaming: bool = False  # bidi stream (the driver sends one request and takes one answer)

    def on(self, channel: grpc.Channel | grpc.aio.Channel, request_type: type[Message]) -> Any:
        """This method's callable on a blocking or asyncio channel: unary, or bidi if ``streaming``."""
        make = channel.stream_stream if self.streaming else channel.unary_unary
        return make(self.path, request_serializer=request_type.SerializeToString,
                    response_deserializer=self.response.FromString)


def _m(service: str, name: str, response: type[M], streaming: bool = False) -> Method[M]:
    return Method(f"/etcdserverpb.{service}/{name}", response, streaming)


RANGE = _m("KV", "Range", rpc_pb2.RangeResponse)
PUT = _m("KV", "Put", rpc_pb2.PutResponse)
DELETE_RANGE = _m("KV", "DeleteRange", rpc_pb2.DeleteRangeResponse)
TXN = _m("KV", "Txn", rpc_pb2.TxnResponse)
COMPACT = _m("KV", "Compact", rpc_pb2.CompactionResponse)
LEASE_GRANT = _m("Lease", "LeaseGrant", rpc_pb2.LeaseGrantResponse)
LEASE_REVOKE = _m("Lease", "LeaseRevoke", rpc_pb2.LeaseRevokeResponse)
LEASE_KEEPALIVE = _m("Lease", "LeaseKeepAlive", rpc_pb2.LeaseKeepAliveResponse, streaming=True)
LEASE_TTL = _m("Lease", "LeaseTimeToLive", rpc_pb2.LeaseTimeToLiveResponse)
LEASE_LEASES = _m("Lease", "LeaseLeases", rpc_pb2.LeaseLeasesResponse)
MEMBER_LIST = _m("Cluster", "MemberList", rpc_pb2.MemberListResponse)
MEMBER_ADD = _m("Cluster", "MemberAdd", rpc_pb2.MemberAddResponse)
MEMBER_REMOVE = _m("Cluster", "MemberRemove", rpc_pb2.MemberRemoveResponse)
MEMBER_PROMOTE = _m("Cluster", "MemberPromote", rpc_pb2.MemberPromoteResponse)
STATUS = _m("Maintenance", "Status", rpc_pb2.StatusResponse)
ALARM = _m("Maintenance", "Alarm", rpc_pb2.AlarmResponse)
DEFRAGMENT = _m("Maintenance", "Defragment", rpc_pb2.DefragmentResponse)
HASH_KV = _m("Maintenance", "HashKV", rpc_pb2.HashKVResponse)
MOVE_LEADER = _m("Maintenance", "MoveLeader", rpc_pb2.MoveLeaderResponse)
SNAPSHOT = _m("Maintenance", "Snapshot", rpc_pb2.SnapshotResponse)
AUTHENTICATE = _m("Auth", "Authenticate", rpc_pb2.AuthenticateResponse)
WATCH = _m("Watch", "Watch", rpc_pb2.WatchResponse, streaming=True)


class Route(enum.Enum):
    LEADER = "leader"      # writes, linearizable reads, leader-only admin: the leader first
    ANY = "any"            # serializable reads, cluster-wide admin: whichever member we are talking to
    ENDPOINT = "endpoint"  # per-member calls (status, defragment, hash): exactly that endpoint


#: etcd's require-leader metadata (``rpctypes.MetadataRequireLeaderKey``: "hasleader").
REQUIRE_LEADER = (("hasleader", "true"),)


@dataclass(frozen=True)
class Request:
    """A unary request plus everything the policy needs to route and retry it."""

    method: Method[Any]
    message: Message
    route: Route
    #: Safe to repeat after an ambiguous failure even without server-side deduplication.
    idempotent: bool
    #: (client-id, seq) for writes; fixed here, so every retry of this request carries the same pair.
    write_id: tuple[int, int] | None = None
    endpoint: str | None = None  # for Route.ENDPOINT

    def metadata(self) -> tuple[tuple[str, str], ...]:
        # A request for the leader says it requires one (etcd's ``WithRequireLeader``): a member that knows
        # none refuses it at once with "no leader" instead of holding it until an election ends, so this
        # client polls the election itself and can reach a member on the majority's side meanwhile.
        leader = REQUIRE_LEADER if self.route is Route.LEADER else ()
        if self.write_id is None:
            return leader
        return leader + (("raftkv-client-id", str(self.write_id[0])), ("raftkv-seq", str(self.write_id[1])))


@dataclass(frozen=True)
class Attempt:
    endpoint: str
    method: Method[Any]
    message: Message
    metadata: tuple[tuple[str, str], ...]
    timeout: float


@dataclass(frozen=True)
class Sleep:
    seconds: float


Step: TypeAlias = Attempt | Sleep
#: What a driver sends back into a plan: the response, the gRPC error, or None after a ``Sleep``.
Outcome: TypeAlias = "Message | grpc.RpcError | None"
Plan: TypeAlias = Generator[Step, Outcome, T]


#: Answers after which etcd's client authenticates again and retries (``retry_interceptor.go``).
_STALE_TOKEN = {etcd.INVALID_AUTH_TOKEN, etcd.AUTH_OLD_REVISION}


class Failure(enum.Enum):
    NOT_APPLIED = "not applied"  # provably never reached the state machine: always retry
    AMBIGUOUS = "ambiguous"      # may or may not have been applied
    FATAL = "fatal"              # a definite answer (bad request, compacted, ...): raise it


_NOT_APPLIED = {etcd.NO_LEADER, etcd.NOT_LEADER, etcd.NOT_CAPABLE, etcd.STOPPED, etcd.TOO_MANY_REQUESTS,
                etcd.NOT_SUPPORTED_FOR_LEARNER, etcd.UNHEALTHY}
_AMBIGUOUS = {etcd.LEADER_CHANGED, etcd.TIMEOUT, etcd.TIMEOUT_DUE_TO_LEADER_FAIL,
              etcd.TIMEOUT_DUE_TO_CONNECTION_LOST, etcd.TIMEOUT_WAIT_APPLIED_INDEX}
#: gRPC's own texts for "the connection was never established", so nothing was sent.
_NOT_CONNECTED = ("failed to connect", "connection refused", "connections to all backends failing",
                  "DNS resolution failed")


def _connection_failed(error: grpc.RpcError) -> bool:
    """gRPC's own failure (refused, or the connection lost mid-call), not an answer from the server."""
    code = error.code()
    return code == grpc.StatusCode.UNAVAILABLE and etcd.from_rpc_error(error) is None


def never_connected(error: grpc.RpcError) -> bool:
    """True if gRPC says no connection was established for the call, so nothing of it was sent."""
    return never_connected_status(error.code(), error.details())


def never_connected_status(code: grpc.StatusCode, details: str | None) -> bool:
    """``never_connected`` for a call whose status is at hand as its code and details (a finished
    asyncio stream's, which grpc.aio answers only as coroutines)."""
    if code != grpc.StatusCode.UNAVAILABLE:
        return False
    details = (details or "").lower()
    return any(text.lower() in details for text in _NOT_CONNECTED)


def classify(error: grpc.RpcError) -> Failure:
    known = etcd.from_rpc_error(error)
    if known in _NOT_APPLIED:
        return Failure.NOT_APPLIED
    if known in _AMBIGUOUS:
        return Failure.AMBIGUOUS
    code = error.code()
    if code == grpc.StatusCode.UNAVAILABLE and known is None:
        return Failure.NOT_APPLIED if never_connected(error) else Failure.AMBIGUOUS
    if code in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED):
        # This client never cancels a unary call (a cancelled caller gets CancelledError, not an RpcError),
        # so CANCELLED means the server reset the stream, seen under bursts of calls (most likely its own
        # deadline timer firing before ours). The request may or may not have been applied.
        return Failure.AMBIGUOUS
    return Failure.FATAL


#: Default upper bound of one attempt: a member that is silent (paused, cut off) costs this much before
#: the plan tries another; the caller's deadline bounds the whole request.
ATTEMPT_TIMEOUT = 2.0

#: How long an endpoint that refused a connection is passed over (and not believed as leader): about an
#: election, long enough for the others to notice the death, short enough for a restarted member.
REFUSED_HOLD = 1.0


@dataclass
class Router:
    """Which endpoint to try next. ``leader`` is a best guess, cleared whenever it fails."""

    endpoints: list[str]
    leader: str | None = None
    clock: Callable[[], float] = time.monotonic
    _cursor: int = 0
    _rng: random.Random = field(default_factory=random.Random)
    #: Endpoint -> when it last refused a connection (its process is gone, or was a moment ago).
    _refused: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        assert self.endpoints, "a router needs endpoints"
        self._cursor = self._rng.randrange(len(self.endpoints))  # spread clients over members

    def current(self) -> str:
        return self.endpoints[self._cursor % len(self.endpoints)]

    def refused(self, endpoint: str) -> bool:
        """Whether ``endpoint`` refused a connection within the last ``REFUSED_HOLD`` seconds."""
        at = self._refused.get(endpoint)
        if at is not None and self.clock() - at >= REFUSED_HOLD:
            del self._refused[endpoint]
            return False
        return at is not None

    def candidates(self) -> list[str]:
        """Endpoints to ask, from the current one on; those that refused us last (or all, if all did)."""
        n = len(self.endpoints)
        order = [self.endpoints[(self._cursor + i) % n] for i in range(n)]
        return [e for e in order if not self.refused(e)] + [e for e in order if self.refused(e)]

    def pick(self, request: Request) -> str:
        if request.route is Route.ENDPOINT:
            assert request.endpoint is not None
            return request.endpoint
        if request.route is Route.LEADER and self.leader is not None:
            return self.leader
        return self.current()

    def failed(self, endpoint: str, refused: bool = False) -> None:
        """A call to ``endpoint`` failed; ``refused``: it refused the connection (nothing listens)."""
        if refused:
            self._refused[endpoint] = self.clock()
        if endpoint == self.leader:
            self.leader = None
        if endpoint == self.current():
            self._cursor += 1
            for _ in range(len(self.endpoints) - 1):  # on to one that did not refuse us, if any
                if not self.refused(self.current()):
                    break
                self._cursor += 1

    def succeeded(self, endpoint: str) -> None:
        self._refused.pop(endpoint, None)

    def learn_leader(self, client_urls: list[str]) -> None:
        """Adopt the leader's advertised client URL, matched against ours by host:port."""
        by_target = {split_endpoint(e)[0]: e for e in self.endpoints}
        for url in client_urls:
            target = split_endpoint(url)[0]
            if target in by_target:
                # A member that has not yet noticed the leader's death still names it: not believed.
                self.leader = None if self.refused(by_target[target]) else by_target[target]
                return
        if client_urls:  # a member we were not told about: the cluster knows better than our list
            self.endpoints.append(client_urls[0])
            self.leader = client_urls[0]


#: The first (and, while polling an election, every) wait between attempts: etcd's client waits 25 ms too.
FIRST_DELAY = 0.025


@dataclass
class Backoff:
    """Exponential backoff with jitter, 25 ms up to 500 ms."""

    delay: float = FIRST_DELAY
    limit: float = 0.5

    def next(self) -> float:
        current = self.delay
        self.delay = min(self.limit, self.delay * 2)
        return current * random.uniform(0.8, 1.2)

    def first(self) -> float:
        """The shortest wait, without growing: for polling an election (it ends in milliseconds once
        the members know the leader is gone, or after an election timeout if they must wait it out)."""
        return FIRST_DELAY * random.uniform(0.8, 1.2)


@dataclass
class Executor:
    """The routing and retry policy of one client; see the module docstring."""

    router: Router
    server_dedupes: bool = True
    #: Upper bound of one attempt, so a stalled member costs a fraction of the caller's deadline.
    attempt_timeout: float = ATTEMPT_TIMEOUT
    clock: Callable[[], float] = time.monotonic
    #: (user, password) to authenticate with; the token is fetched before the first call and again when
    #: the server says it is no longer valid (etcd's client does the same).
    login: tuple[str, str] | None = None
    #: None: not authenticated yet; "": the server has authentication off, so no token is sent.
    token: str | None = None

    def auth_metadata(self) -> tuple[tuple[str, str], ...]:
        return (("token", self.token),) if self.token else ()

    def authenticate(self, endpoint: str, timeout: float) -> Plan[grpc.RpcError | None]:
        """Fetch a token if one is needed. Raises for wrong credentials. Returns the error of a member
        that could not answer (no leader, timed out, ...): the token stays unset and the caller must not
        send its request, which would otherwise go out under its certificate's identity (its CN) instead
        of the user's; the next attempt authenticates again."""
        if self.login is None or self.token is not None:
            return None
        name, password = self.login
        outcome = yield Attempt(endpoint, AUTHENTICATE, rpc_pb2.AuthenticateRequest(name=name, password=password),
                                (), timeout)
        if isinstance(outcome, rpc_pb2.AuthenticateResponse):
            self.token = outcome.token
            return None
        assert isinstance(outcome, grpc.RpcError)
        if etcd.from_rpc_error(outcome) == etcd.AUTH_NOT_ENABLED:
            self.token = ""
            return None
        if classify(outcome) is Failure.FATAL:
            raise from_rpc_error(outcome)
        return outcome

    def run(self, request: Request, timeout: float) -> Plan[Message]:
        deadline = self.clock() + timeout
        backoff = Backoff()
        last: ClientError | None = None
        asked_at_once = False  # a lost leader skipped the sleep; the next failure sleeps whatever it is
        while True:
            remaining = deadline - self.clock()
            if remaining <= 0:
                raise TimeoutError(f"deadline of {timeout:g}s exceeded" + (f"; last error: {last}" if last else ""),
                                   grpc.StatusCode.DEADLINE_EXCEEDED)
            if request.route is Route.LEADER and self.router.leader is None:
                yield from self._discover_leader(deadline)
                remaining = deadline - self.clock()
                if remaining <= 0:
                    continue
            endpoint = self.router.pick(request)
            # Not cut to ``attempt_timeout``: the member checks the password with a deliberately slow KDF,
            # which a loaded machine stretches past that bound, and a check the client gives up on still
            # runs to its end on the member, so each retry would add another and none would finish
            # (etcd's client, too, authenticates within the call's own deadline).
            unauthenticated = yield from self.authenticate(endpoint, remaining)
            electing = False
            if unauthenticated is not None:
                last = from_rpc_error(unauthenticated)  # the request itself was not sent: always retry
                self.router.failed(endpoint)
            else:
                outcome = yield Attempt(endpoint, request.method, request.message,
                                        request.metadata() + self.auth_metadata(),
                                        min(remaining, self.attempt_timeout))
                if not isinstance(outcome, grpc.RpcError):
                    assert outcome is not None
                    self.router.succeeded(endpoint)
                    return outcome
                if self.login is not None and etcd.from_rpc_error(outcome) in _STALE_TOKEN:
                    self.token = None  # refused before it was applied: authenticate again and retry
                    last = from_rpc_error(outcome)
                    continue
                failure = classify(outcome)
                retry = failure is Failure.NOT_APPLIED or (
                    failure is Failure.AMBIGUOUS and (request.idempotent or self.server_dedupes)
                )
                last = from_rpc_error(outcome)
                leader_lost = endpoint == self.router.leader and _connection_failed(outcome)
                if failure is not Failure.FATAL:  # (a definite answer came from a member that works)
                    self.router.failed(endpoint, refused=never_connected(outcome))
                if not retry or (request.route is Route.ENDPOINT and failure is not Failure.NOT_APPLIED):
                    raise last
                if leader_lost and not asked_at_once:
                    asked_at_once = True  # the leader's process is gone or its link broke: ask the others now
                    continue
                electing = etcd.from_rpc_error(outcome) == etcd.NO_LEADER
            asked_at_once = False
            yield Sleep(min(backoff.first() if electing else backoff.next(), max(0.0, deadline - self.clock())))

    def _discover_leader(self, deadline: float) -> Plan[None]:
        """Ask members for the leader: Status says its id; MemberList maps the id to client URLs. Members
        that refused us are asked last, and the first answer naming a leader that did not is taken. Each
        question waits at most a second, and none outlasts the caller's deadline.

        Best effort: on failure the request simply goes to the current endpoint, which forwards it."""
        def timeout() -> float:
            return min(1.0, deadline - self.clock())

        for endpoint in self.router.candidates():
            if timeout() <= 0:
                return
            status = yield Attempt(endpoint, STATUS, rpc_pb2.StatusRequest(), (), timeout())
            if isinstance(status, grpc.RpcError):
                self.router.failed(endpoint, refused=never_connected(status))
            if not isinstance(status, rpc_pb2.StatusResponse) or not status.leader:
                continue
            if status.leader == status.header.member_id:
                self.router.leader = endpoint
                return
            if timeout() <= 0:
                return
            members = yield Attempt(endpoint, MEMBER_LIST, rpc_pb2.MemberListRequest(), (), timeout())
            if isinstance(members, rpc_pb2.MemberListResponse):
                for member in members.members:
                    if member.ID == status.leader:
                        self.router.learn_leader(list(member.clientURLs))
                if self.router.leader is not None:
                    return


def drive_sync(plan: Plan[T], call: Callable[[Attempt], Message]) -> T:
    """Run a plan with blocking calls and ``time.sleep``."""
    outcome: Outcome = None
    while True:
        try:
            step = plan.send(outcome)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        if isinstance(step, Sleep):
            time.sleep(step.seconds)
            outcome = None
            continue
        try:
            outcome = call(step)
        except grpc.RpcError as error:
            outcome = error

