"""A proxyless gRPC client driven over stdin, for the xDS tests: ``python -m tests.xds.xds_client SERVICE``.

It dials ``xds:///SERVICE`` with grpcio's own xDS support (``GRPC_XDS_BOOTSTRAP`` from the environment) and
keeps the channel across commands, so a test sees the same client follow the registry. Each line
``calls N [KEY]`` makes N demo Echo calls (with ``x-affinity-key: KEY``) and prints one JSON line: how
many answers came from each instance, and how many failed with which status."""

from __future__ import annotations

import collections
import json
import sys

import grpc

ECHO = "/raftkv.demo.Echo/Echo"


def main() -> None:
    channel = grpc.insecure_channel(f"xds:///{sys.argv[1]}")
    echo = channel.unary_unary(ECHO)
    for line in sys.stdin:
        _, n, *key = line.split()
        metadata = [("x-affinity-key", key[0])] if key else None
        counts: collections.Counter[str] = collections.Counter()
        for _ in range(int(n)):
            try:
                counts[echo(b"x", timeout=10, metadata=metadata).decode().split(":")[0]] += 1
            except grpc.RpcError as exc:
                counts[f"error:{exc.code().name}"] += 1
        print(json.dumps(counts), flush=True)


if __name__ == "__main__":
    main()
