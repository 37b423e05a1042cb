"""The node: the Raft core driven against its store and transport, split by job (see ``node.py``)."""

from raftkv.server.node.node import Node

__all__ = ["Node"]
