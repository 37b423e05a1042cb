"""`kvctl xds serve|bootstrap`: raftkv's registry as an xDS management server for proxyless gRPC clients.

    kvctl xds serve --listen 127.0.0.1:18000 --listen-cert xds.crt --listen-key xds.key &
    kvctl xds bootstrap orders > orders.json
    GRPC_XDS_BOOTSTRAP=orders.json  your-client  # dials xds:///orders
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path

from cli.common import CommandError, Context
from cli.output import write_line
from raftkv.client import AsyncClient
from raftkv.discovery.record import DEFAULT_NAMESPACE, RecordError, check_name
from raftkv.discovery.xds import bootstrap, resources
from raftkv.security.tls import TLSFiles, server_credentials

DEFAULT_SERVER = "127.0.0.1:18000"


def register(sub: argparse._SubParsersAction) -> None:
    xds = sub.add_parser("xds", help="xds serve|bootstrap (xDS control plane for gRPC clients)").add_subparsers(
        dest="xds_cmd", required=True, metavar="COMMAND")
    p = xds.add_parser("serve", help="serve the registry over ADS in the foreground (SIGTERM stops)",
                       description="Serve every service registered under the namespace as xDS listener, route, "
                                   "cluster and endpoint resources, following the registry live.")
    p.add_argument("--listen", default=DEFAULT_SERVER, help=f"address to serve on (default {DEFAULT_SERVER})")
    p.add_argument("--listen-cert", help="server certificate for the xDS listener (signed by --cacert's CA)")
    p.add_argument("--listen-key", help="its private key")
    p.add_argument("--listen-insecure", action="store_true",
                   help="serve plaintext (clients' bootstrap then needs --xds-insecure)")
    p.add_argument("--policy", choices=[b.value for b in resources.Balancing], default="round_robin",
                   help="balancing the clients do (default round_robin)")
    p.add_argument("--hash-header", default=resources.Policy.hash_header,
                   help=f"request header ring_hash hashes (default {resources.Policy.hash_header})")
    p.add_argument("--no-outlier-detection", action="store_true", help="leave outlier detection out")
    p.add_argument("--retry-on", default="",
                   help="comma-separated gRPC statuses clients retry on another instance, e.g. unavailable "
                        "(only for idempotent services; default: none)")
    p.add_argument("--namespace", default=DEFAULT_NAMESPACE, help=f"registry prefix (default {DEFAULT_NAMESPACE})")
    p.set_defaults(func=serve)

    p = xds.add_parser("bootstrap", help="print the GRPC_XDS_BOOTSTRAP file for clients of SERVICE")
    p.add_argument("service")
    p.add_argument("--server", default=os.environ.get("KVCTL_XDS_SERVER", DEFAULT_SERVER),
                   help=f"the xDS server's address (KVCTL_XDS_SERVER; default {DEFAULT_SERVER})")
    p.add_argument("--xds-insecure", action="store_true", help="the xDS server serves plaintext")
    p.add_argument("--node-id", help="node id the client presents (default SERVICE~hostname)")
    p.set_defaults(func=print_bootstrap)


def print_bootstrap(ctx: Context, args: argparse.Namespace) -> int:
    try:
        check_name("service name", args.service)
    except RecordError as exc:
        raise CommandError(str(exc)) from None
    config = ctx.config()
    document = bootstrap.bootstrap(args.service, args.server, cacert=config.cacert, cert=config.cert,
                                   key=config.key, insecure=args.xds_insecure, node_id=args.node_id)
    sys.stdout.write(bootstrap.dumps(document))
    if sys.stderr.isatty():
        sys.stderr.write(f"# save it, set GRPC_XDS_BOOTSTRAP=<file> and dial xds:///{args.service}\n")
    return 0


def serve(ctx: Context, args: argparse.Namespace) -> int:
    config = ctx.config()
    credentials = None
    if not args.listen_insecure:
        if not (args.listen_cert and args.listen_key and config.cacert):
            raise CommandError("the xDS listener uses mutual TLS: give --listen-cert, --listen-key and --cacert "
                               "(the CA its clients' certificates are signed by), or --listen-insecure")
        credentials = server_credentials(TLSFiles(Path(config.cacert), Path(args.listen_cert),
                                                  Path(args.listen_key)))
    policy = resources.Policy(
        balancing=resources.Balancing(args.policy), hash_header=args.hash_header,
        outlier_detection=None if args.no_outlier_detection else resources.OutlierDetection(),
        retry_on=tuple(code.strip() for code in args.retry_on.split(",") if code.strip()))

    async def run() -> None:
        from raftkv.discovery.xds.server import XdsServer

        client = AsyncClient(config=config, timeout=ctx.timeout)
        server = XdsServer(client, listen=args.listen, credentials=credentials, policy=policy,
                           namespace=args.namespace)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await server.start()
            write_line(f"xDS server for {args.namespace}/* on {server.address} ({args.policy})")
            sys.stdout.flush()
            await stop.wait()
        finally:
            await server.stop()
            await client.close()

    asyncio.run(run())
    return 0
