"""etcd's own Go client (clientv3 3.4 from Debian's golang-etcd-server-dev, built offline) against the cluster:
``concurrency.Session``, ``Mutex`` and ``Election``, and the ``v3lock`` and ``v3election`` services, from
contending workers whose clients balance over every member. 100 runs: no session lost, no call failed, no
lock held or election led twice at once. Run against etcd as well, as the reference."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from raftkv.localcluster import LocalCluster

SOURCE = Path(__file__).parent / "go_recipes" / "main.go"
GOPATH = Path("/usr/share/gocode")
CLIENTV3 = GOPATH / "src" / "go.etcd.io" / "etcd" / "clientv3"
RUNS = 100


@pytest.fixture(scope="session")
def go_recipes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("go") is None or not CLIENTV3.is_dir():
        pytest.skip("needs Debian's golang-go and golang-etcd-server-dev (see .ci/run)")
    binary = tmp_path_factory.mktemp("go-recipes") / "recipes"
    env = {**os.environ, "GO111MODULE": "off", "GOPATH": str(GOPATH)}
    built = subprocess.run(["go", "build", "-o", str(binary), SOURCE.name], cwd=SOURCE.parent, env=env,
                           capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr
    return binary


def test_go_clientv3_sessions_locks_and_elections(cluster: LocalCluster, go_recipes: Path, prefix: str) -> None:
    certs = cluster.certs_dir
    done = subprocess.run(
        [str(go_recipes), "-endpoints", ",".join(cluster.endpoints), "-cacert", str(certs / "ca.crt"),
         "-cert", str(certs / "client.crt"), "-key", str(certs / "client.key"), "-runs", str(RUNS),
         "-prefix", prefix],
        capture_output=True, text=True, timeout=600,
    )
    tally = json.loads(done.stdout.strip().splitlines()[-1]) if done.stdout.strip() else {}
    assert done.returncode == 0, f"{tally or done.stdout}\n{done.stderr[-2000:]}"
    assert tally["runs"] == RUNS and tally["sessions"] == 3 * RUNS
    assert (tally["lost_sessions"], tally["errors"], tally["violations"]) == (0, 0, 0), tally
