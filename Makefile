# raftkv developer entry points. Every target creates .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test lint install fuzz-soak sim-soak bench-core bench-node bench-etcd bench-failover proto clean up down bench jepsen chaos

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,fast]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

# Types (mypy, strict for core, client and the node) and style (ruff), as configured in pyproject.toml.
lint: $(STAMP)
	$(PY) -m mypy
	$(PY) -m ruff check .

# The client-API fuzz with many more examples per method (EXAMPLES=N) than `make test` runs.
fuzz-soak: $(STAMP)
	RAFTKV_FUZZ_EXAMPLES=$${EXAMPLES:-1000} $(PY) -m pytest -q -p no:cacheprovider tests/hostile/test_fuzz_api.py

# Run many simulated schedules (SCHEDULES=N, SEED=S, PROFILE=failover|...): the soak version of the simulation tests.
sim-soak: $(STAMP)
	$(PY) -m raftkv.sim soak --schedules $${SCHEDULES:-1000} $${SEED:+--seed $$SEED} $${PROFILE:+--profile $$PROFILE}

# Cost of the Raft core alone: committed entries/s through a simulated three-node cluster.
bench-core: $(STAMP)
	$(PY) -m raftkv.sim bench

# Throughput and latency of a fresh three-member raftkv cluster (mutual TLS): puts, gets, fsyncs/s.
bench-node: $(STAMP)
	$(PY) -m raftkv.bench --target raftkv

# The same workloads against a three-member etcd and then raftkv, on this machine, side by side.
bench-etcd: $(STAMP)
	@if [ -x /usr/bin/etcd ]; then $(PY) -m raftkv.bench --target both --ceiling; \
	else echo "bench-etcd: /usr/bin/etcd not found (apt-get install etcd-server)"; exit 1; fi

# Leader faults (SIGKILL, SIGSTOP, partition) against etcd and raftkv, side by side: time to the first
# acknowledged write and the write gap (ROUNDS per fault).
bench-failover: $(STAMP)
	$(PY) -m jepsen_like failover --rounds $${ROUNDS:-3}

# Regenerate the Python code for raftkv's .proto files.
proto: $(STAMP)
	$(PY) -m tools.genproto

# A local three-member cluster in .cluster/ (certificates on first use); `make down` stops it.
up: $(STAMP)
	$(VENV)/bin/kvctl cluster up

down: $(STAMP)
	$(VENV)/bin/kvctl cluster down

# Load against the local cluster (WORKLOAD=put|get|get-serializable|txn|watch-latency|mixed).
bench: $(STAMP)
	eval "$$($(VENV)/bin/kvctl cluster env)" && $(VENV)/bin/kvctl bench $${WORKLOAD:-put} --clients $${CLIENTS:-16} --duration $${DURATION:-10s}

# raftkv.discovery, grpcio's xDS client, HAProxy and Nginx under the same load and faults (CHAOS_TIME s each).
chaos: $(STAMP)
	$(PY) -m raftkv.discovery.chaos --time $${CHAOS_TIME:-120} --out chaos-out

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis

# Long fault-injection suite against a real raftkv cluster (and etcd as the reference), reports in
# jepsen-out/<target>-<net>[-quorum|-five]/: every workload under every nemesis, on the proxies and (as root)
# in network namespaces; then a run whose every fault window loses the quorum (a majority killed or paused at
# once, partitions with no majority side), and a five-member run (2+3 splits, two members down, 2+2+1).
# etcd churns membership only in namespaces (its proxied peers are told apart by member id).
JEPSEN_FAULTS := kill,kill-leader,pause,partition,isolate-leader,bridge,ring,one-way,lossy,client-isolate,kill-majority,pause-majority,no-majority
JEPSEN_QUORUM := kill-majority,pause-majority,no-majority
JEPSEN_FIVE := partition,kill-minority,no-majority,kill-majority,pause-majority,ring,bridge,kill
jepsen: $(STAMP)
	nets=proxy; [ "$$(id -u)" = 0 ] && nets="proxy netns"; \
	run() { $(PY) -m jepsen_like run --workload all --time $${JEPSEN_TIME:-60} --clients 12 --seed $${SEED:-1} "$$@"; }; \
	for t in raftkv etcd; do for n in $$nets; do \
	  f=$(JEPSEN_FAULTS); [ $$n = proxy ] && f=$$f,slow; [ $$n-$$t != proxy-etcd ] && f=$$f,membership; \
	  run --target $$t --net $$n --nemesis $$f --out jepsen-out/$$t-$$n || exit 1; \
	  run --target $$t --net $$n --nemesis $(JEPSEN_QUORUM) --out jepsen-out/$$t-$$n-quorum || exit 1; \
	  run --target $$t --net $$n --nodes 5 --nemesis $(JEPSEN_FIVE) --out jepsen-out/$$t-$$n-five || exit 1; \
	done; done
