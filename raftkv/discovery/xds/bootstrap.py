"""The bootstrap file a proxyless gRPC client reads to find raftkv's xDS server (``GRPC_XDS_BOOTSTRAP``).

    GRPC_XDS_BOOTSTRAP=orders-bootstrap.json  +  grpc.insecure_channel("xds:///orders")

With mutual TLS (the default, as everywhere in raftkv) the channel to the management server uses the
``tls`` channel credentials of gRFC A65: the CA that signed the xDS server's certificate and the client's
own certificate and key, as file paths (absolute: the client may run from another directory). The
channel to the *service* is the caller's own choice (``xds:///`` with insecure or xDS credentials).
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any


def bootstrap(service: str, server: str, *, cacert: str | None = None, cert: str | None = None,
              key: str | None = None, insecure: bool = False, node_id: str | None = None) -> dict[str, Any]:
    """The bootstrap document for clients of ``service`` talking to the xDS server at ``server``."""
    if insecure:
        creds: dict[str, Any] = {"type": "insecure"}
    else:
        if not cacert:
            raise ValueError("mutual TLS to the xDS server needs --cacert (or KVCTL_CACERT), or pass --insecure")
        if (cert is None) != (key is None):
            raise ValueError("--cert and --key must be given together")
        config = {"ca_certificate_file": _absolute(cacert, "CA certificate")}
        if cert and key:
            config["certificate_file"] = _absolute(cert, "client certificate")
            config["private_key_file"] = _absolute(key, "client key")
        creds = {"type": "tls", "config": config}
    return {
        "xds_servers": [{"server_uri": server, "channel_creds": [creds], "server_features": ["xds_v3"]}],
        "node": {"id": node_id or f"{service}~{socket.gethostname()}", "cluster": service,
                 "locality": {}, "metadata": {"raftkv.service": service}},
    }


def _absolute(path: str, what: str) -> str:
    resolved = Path(path).expanduser().resolve()
    if not resolved.is_file():
        raise ValueError(f"{what} {path} does not exist")
    return os.fspath(resolved)


def dumps(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2) + "\n"
