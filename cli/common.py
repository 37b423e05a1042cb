"""Global flags and what every command needs from them: a client, a timeout, an output format."""

from __future__ import annotations

import argparse
import getpass
import re
from dataclasses import dataclass

from raftkv.client import Client, ClientConfig
from raftkv.client.config import split_user


class CommandError(Exception):
    """A user-facing failure: printed as ``Error: <message>`` with exit code 1."""


def duration(text: str) -> float:
    """Seconds from etcdctl-style durations (``2s``, ``500ms``, ``1m``) or a bare number of seconds."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(ms|s|m|h)?\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r} (examples: 5s, 500ms, 2m)")
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}[match.group(2)]
    return float(match.group(1)) * scale


def add_global_flags(parser: argparse.ArgumentParser, *, suppress: bool = False) -> None:
    """The connection and output flags. With ``suppress`` (for subcommands, so that flags may come after
    the verb as with etcdctl) an absent flag leaves the top-level value alone."""
    def default(value: object) -> object:
        return argparse.SUPPRESS if suppress else value

    group = parser.add_argument_group("connection (defaults from KVCTL_* environment variables)")
    group.add_argument("--endpoints", default=default(None),
                       help="comma-separated client URLs (KVCTL_ENDPOINTS; default 127.0.0.1:2379)")
    group.add_argument("--cacert", default=default(None),
                       help="CA bundle that signed the members' certificates (KVCTL_CACERT)")
    group.add_argument("--cert", default=default(None), help="client certificate for mutual TLS (KVCTL_CERT)")
    group.add_argument("--key", dest="key_file", default=default(None), help="client private key (KVCTL_KEY)")
    group.add_argument("--user", default=default(None),
                       help="user name[:password] to authenticate as (KVCTL_USER; asks for a missing password)")
    group.add_argument("--password", default=default(None), help="password, instead of in --user (KVCTL_PASSWORD)")
    group.add_argument("--insecure", action="store_true", default=default(None),
                       help="plaintext to servers started with --insecure-plaintext (KVCTL_INSECURE)")
    group.add_argument("--dial-timeout", type=duration, default=default(2.0),
                       help="connection timeout (default 2s)")
    group.add_argument("--command-timeout", type=duration, default=default(5.0),
                       help="deadline of each request, retries included (default 5s)")
    parser.add_argument("-w", "--write-out", choices=("simple", "json", "table"), default=default("simple"),
                        help="output format (default simple)")


def add_global_flags_everywhere(parser: argparse.ArgumentParser) -> None:
    """Accept the global flags after any (sub)command too: ``kvctl get k -w json`` as well as
    ``kvctl -w json get k``."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in set(action.choices.values()):
                add_global_flags(child, suppress=True)
                add_global_flags_everywhere(child)


@dataclass
class Context:
    """Parsed global flags plus a lazily created client shared by the command."""

    args: argparse.Namespace
    _client: Client | None = None

    @property
    def output(self) -> str:
        return str(self.args.write_out)

    @property
    def timeout(self) -> float:
        return float(self.args.command_timeout)

    def config(self) -> ClientConfig:
        endpoints = self.args.endpoints.split(",") if self.args.endpoints else None
        login = split_user(self.args.user, self.args.password)
        if login["user"] and login["password"] is None:
            login["password"] = getpass.getpass("Password: ")  # etcdctl asks too
        return ClientConfig.from_env(endpoints=endpoints, cacert=self.args.cacert, cert=self.args.cert,
                                     key=self.args.key_file, insecure=self.args.insecure,
                                     dial_timeout=self.args.dial_timeout, user=login["user"],
                                     password=login["password"])

    def lacks_client_certificate(self) -> bool:
        """Whether this is a TLS connection without a client certificate (what a mutual-TLS member refuses)."""
        try:
            config = self.config()
        except ValueError:
            return False
        return config.cert is None and any(config.uses_tls(e) for e in config.endpoints)

    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = Client(config=self.config(), timeout=self.timeout)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
