"""The registry page in a real headless browser (Debian's chromium): it lists an instance registered by the
test and drops it when the instance dies."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import time
import urllib.request

import pytest

from raftkv.testing import ClusterHandle
from tests.discovery.conftest import Instances

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")


def rendered(url: str) -> str:
    """The page's DOM after its scripts ran (the page polls its state once a second)."""
    out = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=2500",
                          "--dump-dom", url], capture_output=True, text=True, timeout=60)  # type: ignore[list-item]
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def instance_rows(dom: str, service: str) -> list[str]:
    table = re.search(rf'<table class="service" data-service="{re.escape(service)}">(.*?)</table>', dom, re.S)
    return re.findall(r'<tr class="instance">(.*?)</tr>', table.group(1), re.S) if table else []


def test_the_page_lists_a_registered_instance_and_drops_it_when_it_dies(cluster: ClusterHandle, service: str,
                                                                        instances: Instances) -> None:
    proc, addr = instances.process("--register", service, "--ttl", "2", "--name", "web-1")
    page = cluster.cluster.metrics_url(cluster.names[0]) + "/ui"
    deadline = time.monotonic() + 30
    while not instance_rows(dom := rendered(page), service):
        assert time.monotonic() < deadline, "the page never listed the instance"
    row = instance_rows(dom, service)[0]
    assert "web-1" in row and addr in row and "passing" in row
    assert re.search(r"<td[^>]*>\d+ s</td>", row), row  # lease TTL left
    assert "leader" in dom and all(n in dom for n in cluster.names)  # members and the leader
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 30
    while instance_rows(dom := rendered(page), service):
        assert time.monotonic() < deadline, "the page kept the dead instance"
    assert re.search(rf"<td>{re.escape(service)}</td><td>removed</td><td>web-1</td>", dom)  # recent changes


def test_state_json_and_unknown_paths(cluster: ClusterHandle) -> None:
    base = cluster.cluster.metrics_url(cluster.names[1])
    state = json.loads(urllib.request.urlopen(base + "/ui/state", timeout=10).read())
    assert {m["name"] for m in state["members"]} == set(cluster.names) and state["namespace"] == "/services"
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(base + "/ui/nope", timeout=10)
    assert info.value.code == 404
    assert urllib.request.urlopen(base + "/metrics", timeout=10).status == 200  # the listener's own paths stay
