"""kvctl: the raftkv command line. Mirrors etcdctl for the shared verbs (same arguments and output), and
adds local-cluster management (`kvctl cluster up`) and a load generator (`kvctl bench`).

Errors are one line, ``Error: <what happened and what to do>``, with a non-zero exit status."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence

import grpc

from cli import admin, auth, bench, kv, local, service, snapshot, xds
from cli.common import CommandError, Context, add_global_flags, add_global_flags_everywhere
from raftkv.client import ClientError, ConfigError, Unavailable
from raftkv.client import TimeoutError as ClientTimeout
from raftkv.security.tls import ConfigError as TLSConfigError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kvctl", description="Command line for raftkv (and any etcd v3 cluster).",
        epilog="Start here: kvctl cluster up, then eval \"$(kvctl cluster env)\".")
    add_global_flags(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    kv.register(sub)
    admin.register(sub)
    auth.register(sub)
    snapshot.register(sub)
    local.register(sub)
    bench.register(sub)
    service.register(sub)
    xds.register(sub)
    add_global_flags_everywhere(parser)
    return parser


def explain(exc: BaseException, ctx: Context | None = None) -> str:
    """One line: what happened, and what to do about it."""
    if isinstance(exc, (ClientTimeout, Unavailable)) and ctx is not None and ctx.lacks_client_certificate():
        return (f"{exc} (no client certificate was given, and members serving mutual TLS refuse a client "
                "without one: pass --cert and --key, or set KVCTL_CERT and KVCTL_KEY; `kvctl cluster env` prints "
                "them for a local cluster)")
    if isinstance(exc, ClientTimeout):
        return f"{exc} (is the cluster up and reachable? try `kvctl endpoint health`, or raise --command-timeout)"
    if isinstance(exc, Unavailable):
        return (f"{exc} (check --endpoints / KVCTL_ENDPOINTS and the certificates; `kvctl cluster status` "
                "shows a local cluster)")
    return str(exc).replace("\n", " ")


def main(argv: Sequence[str] | None = None) -> int:
    # gRPC's core logs each failed TLS handshake to stderr; kvctl's one-line error says it (and why) instead.
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `kvctl watch k | head` ends quietly
    parser = build_parser()
    args = parser.parse_args(argv)
    ctx = Context(args)
    try:
        return int(args.func(ctx, args))
    except KeyboardInterrupt:
        return 130
    except (CommandError, ClientError, ConfigError, TLSConfigError, ValueError, OSError) as exc:
        sys.stdout.flush()
        print(f"Error: {explain(exc, ctx)}", file=sys.stderr)
        return 1
    except grpc.RpcError as exc:  # a call outside the typed client (e.g. a stream) failed
        print(f"Error: {exc.details()}", file=sys.stderr)
        return 1
    except Exception as exc:  # a bug: still one line, never a traceback in the user's terminal
        print(f"Error: unexpected {type(exc).__name__}: {exc} (please report this)", file=sys.stderr)
        return 1
    finally:
        ctx.close()


if __name__ == "__main__":
    sys.exit(main())
