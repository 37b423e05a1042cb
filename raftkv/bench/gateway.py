"""``python -m raftkv.bench.gateway``: puts through etcd's JSON gateway (``POST /v3/kv/put``) on etcd and on
raftkv side by side, each a fresh three-member cluster with mutual TLS, sent to the leader.

Each of ``--connections`` threads keeps one HTTP/1.1 connection and sends puts of a 100-byte value as fast
as answers come. The figures to compare are the members' CPU microseconds per put (from their
``process_cpu_seconds_total``, raftkv's client-port relay included) and the ratio of throughputs; the
load generator itself is Python and shares the machine, so absolute throughput says little.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import shutil
import ssl
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from raftkv.bench.scrape import cluster_counters, usage
from raftkv.localcluster import Kind, LocalCluster


def _leader_url(cluster: LocalCluster) -> str:
    deadline = time.monotonic() + 30
    while (name := cluster.leader_name()) is None:
        if time.monotonic() > deadline:
            raise RuntimeError("no leader within 30 s")
        time.sleep(0.05)
    return cluster.client_url(name)


def _worker(url: str, context: ssl.SSLContext, stop: threading.Event, index: int, done: list[int],
            errors: list[str]) -> None:
    host, _, port = url.removeprefix("https://").rpartition(":")
    conn = http.client.HTTPSConnection(host, int(port), context=context, timeout=30)
    value = base64.b64encode(b"v" * 100).decode()
    count = 0
    try:
        while not stop.is_set():
            key = base64.b64encode(f"/bench/{index}/{count % 1000}".encode()).decode()
            conn.request("POST", "/v3/kv/put", body=json.dumps({"key": key, "value": value}),
                         headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            response.read()
            if response.status == 200:
                count += 1
            else:
                errors.append(f"{response.status} {response.reason}")
    finally:
        conn.close()
        done[index] = count


def measure(kind: Kind, base: Path, connections: int, duration: float) -> tuple[float, float, float]:
    """(puts per second, busiest member's CPU us per put, all members' CPU us per put)."""
    cluster = LocalCluster(base / kind, size=3, kind=kind, tls=True)
    try:
        cluster.start()
        cluster.wait_ready(timeout=60, all_members=True)
        url = _leader_url(cluster)
        certs = cluster.certs_dir
        context = ssl.create_default_context(cafile=str(certs / "ca.crt"))
        context.load_cert_chain(str(certs / "client.crt"), str(certs / "client.key"))
        metrics = [cluster.metrics_url(n) for n in cluster.names]
        stop = threading.Event()
        done = [0] * connections
        errors: list[str] = []
        threads = [threading.Thread(target=_worker, args=(url, context, stop, i, done, errors))
                   for i in range(connections)]
        before = cluster_counters(metrics)
        start = time.monotonic()
        for thread in threads:
            thread.start()
        time.sleep(duration)  # the measurement window, not a wait for a condition
        stop.set()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - start
        puts = sum(done)
        if errors:
            print(f"{kind}: {len(errors)} puts failed, first: {errors[0]}")
        spent = usage(before, cluster_counters(metrics), elapsed, puts)
        return puts / elapsed, spent.busiest_cpu_us_per_op, spent.total_cpu_us_per_op
    finally:
        cluster.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m raftkv.bench.gateway", description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per target (default 10)")
    parser.add_argument("--connections", type=int, default=16, help="concurrent HTTP connections (default 16)")
    args = parser.parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix="raftkv-bench-gateway-"))
    try:
        rows = {kind: measure(kind, base, args.connections, args.duration) for kind in ("etcd", "raftkv")}
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(f"JSON gateway puts, {args.connections} connections, {args.duration:g}s, mutual TLS, to the leader")
    print(f"{'target':<8} {'puts/s':>8} {'cpu-us/put (leader/all)':>24}")
    for kind, (rate, busiest, total) in rows.items():
        print(f"{kind:<8} {rate:>8,.0f} {busiest:>14,.0f}/{total:,.0f}")
    print(f"raftkv/etcd throughput ratio {rows['raftkv'][0] / rows['etcd'][0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
