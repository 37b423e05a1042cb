"""Throughput and latency benchmarks of a three-member cluster, raftkv or etcd, over raw gRPC stubs.

``python -m raftkv.bench`` starts (or attaches to) a cluster, drives it with an asyncio load generator and
prints one line per workload: throughput, latency percentiles and the cluster's fsyncs per second. Raw
stubs (no client library) keep the generator cheap, so that on a small machine it measures the servers.
"""
