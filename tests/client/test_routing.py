"""The retry policy as a pure plan: which steps it takes for which failures (no network)."""

from __future__ import annotations

import grpc
import pytest

from raftkv import errors as etcd
from raftkv.client import InvalidArgument
from raftkv.client import routing as r
from raftkv.client.ops import prefix_end
from raftkv.proto import rpc_pb2


class Status(grpc.RpcError):
    """A failed call as gRPC reports it: a code and a message."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


AMBIGUOUS = Status(grpc.StatusCode.UNAVAILABLE, "Socket closed")
REFUSED = Status(grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses; Connection refused")
NO_LEADER = Status(etcd.NO_LEADER.code, etcd.NO_LEADER.message)
ENDPOINTS = ["https://a:1", "https://b:2", "https://c:3"]


def write(seq: int = 7) -> r.Request:
    return r.Request(r.PUT, rpc_pb2.PutRequest(key=b"k"), r.Route.LEADER, False, (99, seq))


def leader_known(dedupes: bool) -> r.Executor:
    return r.Executor(r.Router(list(ENDPOINTS), leader=ENDPOINTS[1]), server_dedupes=dedupes)


def test_retried_write_reuses_its_sequence_number_and_moves_off_the_failed_leader() -> None:
    plan = leader_known(dedupes=True).run(write(), timeout=5)
    first = plan.send(None)
    assert isinstance(first, r.Attempt) and first.endpoint == ENDPOINTS[1]
    # The leader is required (a member that knows none refuses at once), and the write carries its session.
    assert dict(first.metadata) == {"hasleader": "true", "raftkv-client-id": "99", "raftkv-seq": "7"}
    # The leader's connection broke: it is forgotten, and the plan asks the members for the new one at once.
    discovery = plan.send(AMBIGUOUS)
    assert isinstance(discovery, r.Attempt) and discovery.method is r.STATUS
    status = rpc_pb2.StatusResponse(leader=5)
    status.header.member_id = 5
    retry = plan.send(status)
    assert isinstance(retry, r.Attempt) and retry.method is r.PUT
    assert retry.metadata == first.metadata and retry.endpoint == discovery.endpoint
    with pytest.raises(StopIteration) as done:
        plan.send(rpc_pb2.PutResponse())
    assert isinstance(done.value.value, rpc_pb2.PutResponse)


def test_ambiguous_write_failure_is_raised_when_the_server_does_not_deduplicate() -> None:
    plan = leader_known(dedupes=False).run(write(), timeout=5)
    plan.send(None)
    with pytest.raises(r.ClientError):
        plan.send(AMBIGUOUS)


@pytest.mark.parametrize("error", [REFUSED, NO_LEADER])
def test_not_applied_failures_are_retried_even_without_deduplication(error: Status) -> None:
    plan = leader_known(dedupes=False).run(write(), timeout=5)
    plan.send(None)
    # No leader: wait a moment. Refused: the leader is gone, ask the others at once.
    assert isinstance(plan.send(error), r.Sleep if error is NO_LEADER else r.Attempt)


@pytest.mark.parametrize("code", [grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED])
def test_a_call_the_server_cut_short_is_ambiguous_and_retried_when_safe(code: grpc.StatusCode) -> None:
    """A stream reset by the server (CANCELLED; this client never cancels a unary call itself) may or may not
    have been applied, like an expired deadline: a deduplicated write is retried, else it is raised."""
    cut = Status(code, code.name)
    plan = leader_known(dedupes=True).run(write(), timeout=5)
    plan.send(None)
    assert isinstance(plan.send(cut), r.Sleep)
    plan = leader_known(dedupes=False).run(write(), timeout=5)
    plan.send(None)
    with pytest.raises(r.ClientError):
        plan.send(cut)


def test_definite_errors_are_raised_typed_at_once() -> None:
    plan = leader_known(dedupes=True).run(write(), timeout=5)
    plan.send(None)
    with pytest.raises(InvalidArgument):
        plan.send(Status(etcd.KEY_NOT_PROVIDED.code, etcd.KEY_NOT_PROVIDED.message))


def test_prefix_end_follows_etcd() -> None:
    assert prefix_end(b"a/") == b"a0"
    assert prefix_end(b"a\xff") == b"b"
    assert prefix_end(b"\xff\xff") == b"\0"
    assert prefix_end(b"") == b"\0"


def with_login() -> r.Executor:
    return r.Executor(r.Router(list(ENDPOINTS), leader=ENDPOINTS[1]), login=("alice", "pw"))


@pytest.mark.parametrize("error", [NO_LEADER, AMBIGUOUS])
def test_a_request_is_never_sent_without_the_token_it_could_not_get(error: Status) -> None:
    """A member that cannot authenticate (no leader yet, a timeout) must not lead to the request going out
    with no token: the member would take the certificate's CN (often root) as the caller instead."""
    plan = with_login().run(write(), timeout=5)
    login = plan.send(None)
    assert isinstance(login, r.Attempt) and login.method is r.AUTHENTICATE
    assert isinstance(plan.send(error), r.Sleep)  # not the request: back off, then authenticate again
    step = plan.send(None)
    while step.method is not r.AUTHENTICATE:  # the leader is looked up again first
        step = plan.send(None)
    request = plan.send(rpc_pb2.AuthenticateResponse(token="tok.5"))
    assert isinstance(request, r.Attempt) and request.method is r.PUT
    assert ("token", "tok.5") in request.metadata


def test_authentication_has_the_whole_deadline_of_the_call() -> None:
    """The member checks a password with a slow KDF that a loaded machine stretches past the per-attempt
    bound; cut short, each retry would start another check beside the abandoned one and none finish."""
    executor = with_login()
    executor.clock = lambda: 100.0
    plan = executor.run(write(), timeout=10)
    login = plan.send(None)
    assert isinstance(login, r.Attempt) and login.method is r.AUTHENTICATE
    assert login.timeout == 10 > executor.attempt_timeout
    request = plan.send(rpc_pb2.AuthenticateResponse(token="tok.5"))
    assert isinstance(request, r.Attempt) and request.timeout == executor.attempt_timeout


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def status_of(member_id: int, leader: int) -> rpc_pb2.StatusResponse:
    status = rpc_pb2.StatusResponse(leader=leader)
    status.header.member_id = member_id
    return status


def members_list() -> rpc_pb2.MemberListResponse:
    """Members 1, 2, 3 serve ENDPOINTS a, b, c."""
    return rpc_pb2.MemberListResponse(members=[
        rpc_pb2.Member(ID=i + 1, clientURLs=[url]) for i, url in enumerate(ENDPOINTS)])


def test_a_refused_leader_is_replaced_at_once_and_not_believed_while_a_member_still_names_it() -> None:
    clock = FakeClock()
    router = r.Router(list(ENDPOINTS), leader=ENDPOINTS[1], clock=clock)
    plan = r.Executor(router, clock=clock).run(write(), timeout=5)
    first = plan.send(None)
    assert first.endpoint == ENDPOINTS[1]
    steps: list[r.Step] = []
    step = plan.send(REFUSED)  # b's process is gone
    answers = {ENDPOINTS[0]: status_of(1, leader=2), ENDPOINTS[2]: status_of(3, leader=3)}  # a has not noticed
    while not (isinstance(step, r.Attempt) and step.method is r.PUT):
        steps.append(step)
        assert isinstance(step, r.Attempt), "no sleep between losing the leader and finding the new one"
        assert step.endpoint != ENDPOINTS[1], "the refused member is not asked again"
        step = plan.send(members_list() if step.method is r.MEMBER_LIST else answers[step.endpoint])
    assert step.endpoint == ENDPOINTS[2] and step.metadata == first.metadata
    assert router.refused(ENDPOINTS[1])
    clock.now += r.REFUSED_HOLD
    assert not router.refused(ENDPOINTS[1]), "a restarted member is asked again after a while"


def test_an_election_is_polled_not_backed_off_and_never_past_the_deadline() -> None:
    clock = FakeClock()
    router = r.Router(list(ENDPOINTS), clock=clock)
    plan = r.Executor(router, clock=clock).run(write(), timeout=1.0)
    step = plan.send(None)
    sleeps: list[float] = []
    with pytest.raises(r.TimeoutError):
        while True:
            if isinstance(step, r.Sleep):
                assert clock.now + step.seconds <= 101.0 + 1e-9, "a sleep past the caller's deadline"
                sleeps.append(step.seconds)
                clock.now += step.seconds
                step = plan.send(None)
            else:
                assert 0 < step.timeout and clock.now + step.timeout <= 101.0 + 1e-9, "an attempt past it"
                clock.now += min(0.001, step.timeout)  # an attempt ends by its own timeout
                # Nobody knows a leader yet, and a follower says so.
                step = plan.send(status_of(1, leader=0) if step.method is r.STATUS else NO_LEADER)
    assert len(sleeps) > 20 and max(sleeps[:-1]) <= r.FIRST_DELAY * 1.2


def test_a_watch_moves_off_a_refused_member_at_once() -> None:
    from raftkv.client.watch import WatchState

    router = r.Router(list(ENDPOINTS))
    watch = WatchState(router, b"k")
    gone = watch.endpoint
    assert watch.stream_failed(REFUSED) == 0.0
    assert watch.endpoint != gone
    assert watch.stream_failed(AMBIGUOUS) > 0, "a broken stream on a live member still backs off"
