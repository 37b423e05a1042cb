"""``v3lockpb.Lock``: distributed locks as etcd serves them, built on ``concurrency.Mutex``'s recipe.

A lock called ``name`` is the set of keys under ``name/``, one per contending lease (``name/<lease hex>``,
value empty, attached to the lease). The key created first holds the lock; the others wait, each for the
deletion of the youngest key older than its own, until none is left. The key lives as long as its lease,
so a holder that dies releases the lock when its lease expires; Unlock deletes the key.

One deviation, in the caller's favour: after waiting, the lock is only granted if the caller's key still
exists (etcd 3.5 checks this; 3.4 could grant a lock to a session whose lease had expired meanwhile, the
bug Jepsen found in etcd 3.4.3). Fence what the lock protects with the key's revision anyway.
"""

from __future__ import annotations

from raftkv import errors
from raftkv.api.metadata import Context
from raftkv.api.recipes import Recipes, contender_key, created_at, first_created
from raftkv.proto import rpc_pb2, v3lock_pb2, v3lock_pb2_grpc


class LockService(v3lock_pb2_grpc.LockServicer):
    def __init__(self, recipes: Recipes) -> None:
        self._recipes = recipes

    async def Lock(self, request: v3lock_pb2.LockRequest, context: Context) -> v3lock_pb2.LockResponse:
        recipes = self._recipes
        lease = await recipes.session_lease(request.lease, context)
        prefix = request.name + b"/"
        key = contender_key(prefix, lease)
        owner = rpc_pb2.RequestOp(request_range=first_created(prefix))
        attempt = await recipes.txn(
            rpc_pb2.TxnRequest(
                compare=[created_at(key, 0)],
                success=[rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=key, lease=lease)), owner],
                # The session already contends (or holds the lock): keep its place.
                failure=[rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=key)), owner],
            ),
            context,
        )
        my_revision = attempt.header.revision
        if not attempt.succeeded:
            my_revision = attempt.responses[0].response_range.kvs[0].create_revision
        holder = attempt.responses[1].response_range.kvs
        if not holder or holder[0].create_revision == my_revision:
            return v3lock_pb2.LockResponse(header=attempt.header, key=key)
        try:
            await recipes.wait_deletes(prefix, my_revision - 1, context)
            mine = await recipes.get(rpc_pb2.RangeRequest(key=key), context)
        except BaseException:
            # Canceled, timed out or failed while waiting: leave the queue, as Mutex.Lock does.
            recipes.clean_up(recipes.delete(key, None), f"unlock-{key!r}")
            raise
        if not mine.kvs:
            raise errors.SESSION_EXPIRED.exception()
        return v3lock_pb2.LockResponse(header=mine.header, key=key)

    async def Unlock(self, request: v3lock_pb2.UnlockRequest, context: Context) -> v3lock_pb2.UnlockResponse:
        deleted = await self._recipes.delete(request.key, context)
        return v3lock_pb2.UnlockResponse(header=deleted.header)
