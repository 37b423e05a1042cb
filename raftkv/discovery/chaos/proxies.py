"""HAProxy 2.6 and Nginx 1.22 in front of the demo instances, configured as their users would for gRPC.

Both get the failure handling their documentation offers for this job and nothing raftkv-specific. The
demo's Echo is idempotent and every target is told so: the raftkv channel with ``idempotent=True``, the xDS
route with a retry policy on UNAVAILABLE, and the proxies with their replay options:

- HAProxy: ``mode http`` with ``proto h2`` on both sides, round robin, active checks ``inter 1s fall 2 rise
  2`` (TCP connect: HAProxy 2.6 cannot read a ``grpc.health.v1`` answer, whose status is in the body),
  ``option redispatch`` and ``retries 3`` with ``retry-on conn-failure empty-response response-timeout``.
- Nginx: ``grpc_pass`` to an upstream whose servers have ``max_fails=1 fail_timeout=3s`` (passive
  ejection for 3 s after a failure) and ``keepalive 64`` (without it Nginx opens a connection per call and
  500 calls/s exhaust the loopback's ports in TIME_WAIT), ``grpc_next_upstream error timeout
  non_idempotent`` with 3 tries, 1 s connect timeout.

Neither sees a NOT_SERVING health status or a call that failed with a gRPC status (it travels in the HTTP/2
trailers of a 200 response): that is the gap a gRPC-aware balancer closes, and the benchmark shows it.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

#: Upper bound for a call through a proxy; above the load generator's deadline, so the client decides.
SERVER_TIMEOUT = "5s"


def haproxy_config(listen_port: int, backends: Sequence[tuple[str, str]], workdir: Path) -> str:
    servers = "\n".join(f"    server {name} {addr} proto h2 check inter 1s fall 2 rise 2"
                        for name, addr in backends)
    return f"""\
global
    pidfile {workdir}/haproxy.pid
    maxconn 4096

defaults
    mode http
    timeout connect 1s
    timeout client 30s
    timeout server {SERVER_TIMEOUT}
    option redispatch
    retries 3
    retry-on conn-failure empty-response response-timeout

frontend grpc_in
    bind 127.0.0.1:{listen_port} proto h2
    default_backend demo

backend demo
    balance roundrobin
{servers}
"""


def nginx_config(listen_port: int, backends: Sequence[tuple[str, str]], workdir: Path) -> str:
    servers = "\n".join(f"        server {addr} max_fails=1 fail_timeout=3s;" for _, addr in backends)
    return f"""\
daemon off;
master_process on;
worker_processes 1;
pid {workdir}/nginx.pid;
error_log {workdir}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {workdir}/nginx-body;
    proxy_temp_path {workdir}/nginx-proxy;
    fastcgi_temp_path {workdir}/nginx-fastcgi;
    uwsgi_temp_path {workdir}/nginx-uwsgi;
    scgi_temp_path {workdir}/nginx-scgi;
    upstream demo {{
{servers}
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{listen_port} http2;
        location / {{
            grpc_pass grpc://demo;
            grpc_next_upstream error timeout non_idempotent;
            grpc_next_upstream_tries 3;
            grpc_connect_timeout 1s;
            grpc_read_timeout {SERVER_TIMEOUT};
            grpc_send_timeout {SERVER_TIMEOUT};
        }}
    }}
}}
"""


def binary(name: str) -> str:
    for candidate in (shutil.which(name), f"/usr/sbin/{name}"):
        if candidate and Path(candidate).exists():
            return candidate
    raise FileNotFoundError(f"{name} is not installed (apt-get install {name})")


def start_haproxy(listen_port: int, backends: Sequence[tuple[str, str]], workdir: Path) -> subprocess.Popen[bytes]:
    config = workdir / "haproxy.cfg"
    config.write_text(haproxy_config(listen_port, backends, workdir))
    check = subprocess.run([binary("haproxy"), "-c", "-q", "-f", str(config)], capture_output=True, text=True)
    if check.returncode != 0:
        raise RuntimeError(f"haproxy refused {config}: {check.stderr.strip() or check.stdout.strip()}")
    log = open(workdir / "haproxy.log", "wb")
    return subprocess.Popen([binary("haproxy"), "-db", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT)


def start_nginx(listen_port: int, backends: Sequence[tuple[str, str]], workdir: Path) -> subprocess.Popen[bytes]:
    config = workdir / "nginx.conf"
    config.write_text(nginx_config(listen_port, backends, workdir))
    command = [binary("nginx"), "-p", str(workdir), "-c", str(config), "-e", str(workdir / "nginx-error.log")]
    check = subprocess.run([*command, "-t", "-q"], capture_output=True, text=True)
    if check.returncode != 0:
        raise RuntimeError(f"nginx refused {config}: {check.stderr.strip()}")
    log = open(workdir / "nginx.log", "wb")
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
