"""raftkv's registry as an xDS control plane: proxyless gRPC clients in any language dial ``xds:///SERVICE``.

- ``resources.py``: the listener, route, cluster and load assignment for one service (pure functions);
- ``stream.py``: one ADS stream's protocol state (versions, nonces, ACK/NACK), sans-I/O;
- ``server.py``: the asyncio gRPC server, one resolver per subscribed service;
- ``bootstrap.py``: the ``GRPC_XDS_BOOTSTRAP`` document (``kvctl xds bootstrap SERVICE``).

Run it with ``kvctl xds serve``; the clients need nothing from raftkv but the bootstrap file.
"""
