"""``v3electionpb.Election``: leader election as etcd serves it, built on ``concurrency.Election``'s recipe.

An election called ``name`` is the set of keys under ``name/``, one per campaigning lease
(``name/<lease hex>``, holding the candidate's value, attached to the lease). The key created first is the
leader; a campaign returns once every older key is gone. The leader is identified by its ``LeaderKey``
(key, creation revision, lease): Proclaim and Resign act only if that key is still the one created at that
revision, so a leader that lost its lease (and campaigned again) cannot act as its old self.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from raftkv import errors
from raftkv.api.metadata import Context, with_header
from raftkv.api.recipes import Recipes, contender_key, created_at, first_created
from raftkv.keys import prefix_end
from raftkv.proto import kv_pb2, rpc_pb2, v3election_pb2, v3election_pb2_grpc
from raftkv.server.watch_hub import WatchSpec

_DELETE = kv_pb2.Event.EventType.DELETE


class ElectionService(v3election_pb2_grpc.ElectionServicer):
    def __init__(self, recipes: Recipes) -> None:
        self._recipes = recipes

    async def Campaign(
        self, request: v3election_pb2.CampaignRequest, context: Context
    ) -> v3election_pb2.CampaignResponse:
        recipes = self._recipes
        lease = await recipes.session_lease(request.lease, context)
        prefix = request.name + b"/"
        key = contender_key(prefix, lease)
        attempt = await recipes.txn(
            rpc_pb2.TxnRequest(
                compare=[created_at(key, 0)],
                success=[rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=key, value=request.value, lease=lease))],
                failure=[rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=key))],
            ),
            context,
        )
        leader = v3election_pb2.LeaderKey(name=request.name, key=key, rev=attempt.header.revision, lease=lease)
        if not attempt.succeeded:
            # This lease campaigns already: keep its place, with the value asked for now.
            existing = attempt.responses[0].response_range.kvs[0]
            leader.rev = existing.create_revision
            if existing.value != request.value:
                try:
                    await self._proclaim(leader, request.value, context)
                except BaseException:
                    recipes.clean_up(self._resign(leader, None), f"resign-{key!r}")
                    raise
        try:
            await recipes.wait_deletes(prefix, leader.rev - 1, context)
        except BaseException:
            recipes.clean_up(self._resign(leader, None), f"resign-{key!r}")
            raise
        return v3election_pb2.CampaignResponse(header=attempt.header, leader=leader)

    async def Proclaim(
        self, request: v3election_pb2.ProclaimRequest, context: Context
    ) -> v3election_pb2.ProclaimResponse:
        if not request.HasField("leader"):
            raise errors.MISSING_LEADER_KEY.exception()
        header = await self._proclaim(request.leader, request.value, context)
        return v3election_pb2.ProclaimResponse(header=header)

    async def Resign(self, request: v3election_pb2.ResignRequest, context: Context) -> v3election_pb2.ResignResponse:
        if not request.HasField("leader"):
            raise errors.MISSING_LEADER_KEY.exception()
        return v3election_pb2.ResignResponse(header=await self._resign(request.leader, context))

    async def Leader(self, request: v3election_pb2.LeaderRequest, context: Context) -> v3election_pb2.LeaderResponse:
        current = await self._recipes.get(first_created(request.name + b"/"), context)
        if not current.kvs:
            raise errors.ELECTION_NO_LEADER.exception()
        return v3election_pb2.LeaderResponse(header=current.header, kv=current.kvs[0])

    async def Observe(
        self, request: v3election_pb2.LeaderRequest, context: Context
    ) -> AsyncIterator[v3election_pb2.LeaderResponse]:
        """The leader now (or, with none, the first to come), each new value it proclaims, and when it goes,
        the next leader: ``concurrency.Election.Observe``."""
        recipes = self._recipes
        prefix = request.name + b"/"
        while True:
            current = await recipes.get(first_created(prefix), context)
            if current.kvs:
                kv, header = current.kvs[0], current.header
            else:
                spec = WatchSpec(key=prefix, range_end=prefix_end(prefix), start_revision=current.header.revision,
                                 no_delete=True)
                async for _, event in recipes.watch(spec):
                    kv = event.kv
                    break
                header = self._header(kv.mod_revision)
            yield v3election_pb2.LeaderResponse(header=header, kv=kv)
            async for revision, event in recipes.watch(WatchSpec(key=kv.key, start_revision=header.revision + 1)):
                if event.type == _DELETE:
                    break
                yield v3election_pb2.LeaderResponse(header=self._header(revision), kv=event.kv)

    def _header(self, revision: int) -> rpc_pb2.ResponseHeader:
        header = with_header(rpc_pb2.RangeResponse(), self._recipes.backend).header
        header.revision = revision
        return header

    async def _proclaim(
        self, leader: v3election_pb2.LeaderKey, value: bytes, context: Context
    ) -> rpc_pb2.ResponseHeader:
        put = rpc_pb2.PutRequest(key=leader.key, value=value, lease=leader.lease)
        done = await self._recipes.txn(
            rpc_pb2.TxnRequest(
                compare=[created_at(leader.key, leader.rev)], success=[rpc_pb2.RequestOp(request_put=put)]
            ),
            context,
        )
        if not done.succeeded:
            raise errors.ELECTION_NOT_LEADER.exception()
        return done.header

    async def _resign(self, leader: v3election_pb2.LeaderKey, context: Context | None) -> rpc_pb2.ResponseHeader:
        """Delete the leader's key if it is still the one created at ``leader.rev`` (``context`` None: clean-up
        after a canceled campaign)."""
        delete = rpc_pb2.RequestOp(request_delete_range=rpc_pb2.DeleteRangeRequest(key=leader.key))
        request = rpc_pb2.TxnRequest(compare=[created_at(leader.key, leader.rev)], success=[delete])
        done = await self._recipes.txn(request, context)
        return done.header
