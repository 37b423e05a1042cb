"""The netns back end's plumbing on its own (no cluster): rules cut exactly the links asked for, and nothing
outlives the network object or the process that made it."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from jepsen_like.nemesis import netns

pytestmark = pytest.mark.skipif(netns.available() is not None, reason=str(netns.available()))

PORT = 5000
LISTENER = ("import socket,sys; s=socket.socket(); s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(64); "
            "print('ready', flush=True)\nwhile True: s.accept()")
CONNECT = "import socket,sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1)"


def our_namespaces(tag: str) -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(f"{tag}-")]


@pytest.fixture
def net() -> Iterator[netns.NetnsNetwork]:
    n = netns.NetnsNetwork(["n1", "n2", "n3"])
    listeners = [subprocess.Popen([*n.exec_prefix(m), sys.executable, "-c", LISTENER, n.hosts[m], str(PORT)],
                                  stdout=subprocess.PIPE, text=True) for m in n.names]
    try:
        for p in listeners:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        yield n
    finally:
        for p in listeners:
            p.kill()
            p.wait()
        n.close()


def reaches(n: netns.NetnsNetwork, src: str | None, dst: str) -> bool:
    """Can ``src`` (None: the harness in the root namespace) open a TCP connection to ``dst``?"""
    prefix = [] if src is None else n.exec_prefix(src)
    return subprocess.run([*prefix, sys.executable, "-c", CONNECT, n.hosts[dst], str(PORT)],
                          capture_output=True).returncode == 0


def test_one_way_and_client_cuts_affect_only_the_links_named(net: netns.NetnsNetwork) -> None:
    assert reaches(net, "n1", "n2") and reaches(net, None, "n1")
    net.set_links({("n1", "n2")}, clients_cut=["n3"])
    assert not reaches(net, "n1", "n2")
    assert reaches(net, "n2", "n1")   # the other direction still opens connections
    assert reaches(net, "n1", "n3") and reaches(net, None, "n1")
    assert not reaches(net, None, "n3")
    assert reaches(net, "n2", "n3")   # a client cut is not a peer cut
    net.heal()
    assert reaches(net, "n1", "n2") and reaches(net, None, "n3")


def test_close_removes_everything() -> None:
    n = netns.NetnsNetwork(["n1"])
    assert our_namespaces(n.tag)
    n.close()
    assert our_namespaces(n.tag) == []
    links = subprocess.run(["ip", "link", "show", n.root_link], capture_output=True)
    assert links.returncode != 0


def test_sweeper_removes_what_dead_runs_left_behind() -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    name = f"{netns.PREFIX}-{dead.pid}-n1"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        assert name in netns.sweep_stale()
        assert our_namespaces(f"{netns.PREFIX}-{dead.pid}") == []
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def test_sigterm_tears_a_running_test_down(tmp_path: Path) -> None:
    """A run killed with SIGTERM mid-way leaves no namespace and no member process behind."""
    run = subprocess.Popen([sys.executable, "-m", "jepsen_like", "run", "--net", "netns", "--nemesis", "none",
                            "--time", "60", "--clients", "1", "--out", str(tmp_path)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    tag = f"{netns.PREFIX}-{run.pid}"
    history = tmp_path / "history.jsonl"
    deadline = time.monotonic() + 60
    while not (history.exists() and history.stat().st_size > 0):  # clients are running
        assert time.monotonic() < deadline and run.poll() is None, "the run never got going"
        time.sleep(0.1)
    assert our_namespaces(tag)
    run.terminate()
    assert run.wait(timeout=60) != 0
    assert our_namespaces(tag) == []
    pids = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True).stdout.split()
    assert pids == []


PUSHER = ("import socket,sys,time; s=socket.socket(); s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(1); "
          "print('ready', flush=True); c,_=s.accept(); c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)\n"
          "while True: c.sendall(b'x'); time.sleep(0.05)")
COUNTER = ("import socket,sys,time; c=socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5); "
           "c.settimeout(0.1); print('connected', flush=True)\nwhile True:\n try: print(len(c.recv(100)), "
           "time.monotonic(), flush=True)\n except socket.timeout: pass")


def test_a_symmetric_cut_also_silences_replies_on_established_connections(net: netns.NetnsNetwork) -> None:
    """n1 pushes a byte every 50 ms down a connection n2 opened (the reply direction, as etcd's streams
    carry messages). A cut both ways must stop it at once; dropping only n1's original-direction packets
    would let it run on until TCP's congestion window is spent (ten segments, half a second, here)."""
    pusher = subprocess.Popen([*net.exec_prefix("n1"), sys.executable, "-c", PUSHER, net.hosts["n1"], "5001"],
                              stdout=subprocess.PIPE, text=True)
    counter = None
    try:
        assert pusher.stdout is not None and pusher.stdout.readline().strip() == "ready"
        counter = subprocess.Popen([*net.exec_prefix("n2"), sys.executable, "-c", COUNTER, net.hosts["n1"],
                                    "5001"], stdout=subprocess.PIPE, text=True)
        assert counter.stdout is not None and counter.stdout.readline().strip() == "connected"
        assert counter.stdout.readline().split()[0] == "1"  # bytes flow before the cut
        net.set_links({("n1", "n2"), ("n2", "n1")})
        cut_at = time.monotonic()
        time.sleep(1.0)  # twice what the congestion window alone would let through
        counter.kill()  # what it printed until now is all we need
        late = [float(line.split()[1]) for line in counter.stdout.read().splitlines() if line.split()[0] == "1"]
        assert [t for t in late if t > cut_at + 0.2] == [], "bytes still arrived across a symmetric cut"
    finally:
        for p in (pusher, counter):
            if p is not None:
                p.kill()
                p.wait()
