"""Imports point one way: every import in the project (module level, inside functions, under
TYPE_CHECKING) is checked against the architecture.

    core  <  proto, errors (shared vocabulary)  <  security  <  storage, transport  <  statemachine
          <  server  <  api  <  raftkv.main (the process: the one place that wires them all)

A layer may import the layers below it and itself, never a layer above nor a sibling (storage does not
import transport). Beside the stack: the simulator (``raftkv.sim``) sits on the server layer and drives the
production node, never the API; the client, the local-cluster manager, the pytest plugin, benchmarks, the
discovery layer, ``cli`` and ``jepsen_like`` use no server internals: they reach a member through its
process (``raftkv.main``, ``raftkv.localcluster``) or the client.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("raftkv", "cli", "jepsen_like", "tools")

#: (rank, prefixes): a module belongs to the longest prefix that matches it.
STACK: list[tuple[int, tuple[str, ...]]] = [
    (0, ("raftkv.core",)),
    (1, ("raftkv.proto", "raftkv.errors", "raftkv.keys", "raftkv.grpc_registration", "raftkv.cancellation",
         "raftkv.grpc_guard", "raftkv.process_stat", "raftkv.grpc_engine", "raftkv.stop_signals")),
    (2, ("raftkv.security",)),
    (3, ("raftkv.storage", "raftkv.transport")),
    (4, ("raftkv.statemachine",)),
    (5, ("raftkv.server",)),
    (6, ("raftkv.api", "raftkv.sim")),
    (7, ("raftkv.main",)),
]
#: Code outside the stack: what it may import besides its own package.
OUTSIDE = ("raftkv.client", "raftkv.localcluster", "raftkv.local_processes", "raftkv.testing", "raftkv.bench", "raftkv.discovery", "cli",
           "jepsen_like", "tools")
OUTSIDE_MAY_IMPORT = ("raftkv.client", "raftkv.localcluster", "raftkv.local_processes", "raftkv.proto", "raftkv.errors", "raftkv.keys",
                      "raftkv.security", "raftkv.grpc_registration", "raftkv.grpc_guard", "raftkv.cancellation", "raftkv.testing",
                      "raftkv.bench",
                      "raftkv.discovery", "raftkv.process_stat", "raftkv.stop_signals", "raftkv.__init__")
#: Some outside code needs the process itself: kvctl's offline snapshot restore.
EXTRA = {"cli": ("raftkv.main",)}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1] if len(parts) > 1 else [parts[0] + ".__init__"]
    return ".".join(parts)


def _imports(path: Path, module: str) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            out.append((node.lineno, base))
            out.extend((node.lineno, f"{base}.{alias.name}") for alias in node.names)
    return [(line, name) for line, name in out if name.split(".")[0] in PACKAGES]


def _group(module: str, prefixes: tuple[str, ...]) -> str | None:
    found = [p for p in prefixes if module == p or module.startswith(p + ".")]
    return max(found, key=len) if found else None


def _rank(module: str) -> tuple[int, str] | None:
    best: tuple[int, str] | None = None
    for rank, prefixes in STACK:
        prefix = _group(module, prefixes)
        if prefix is not None and (best is None or len(prefix) > len(best[1])):
            best = (rank, prefix)
    return best


def _is_module(name: str) -> bool:
    """``from a.b import c`` yields a.b.c, which may be a name in a.b rather than a module: keep real ones."""
    parts = name.split(".")
    base = ROOT.joinpath(*parts)
    return base.with_suffix(".py").exists() or (base / "__init__.py").exists()


def _violation(source: str, target: str) -> str | None:
    if target == "raftkv" or target == "raftkv.__init__" or _group(target, (source,)):
        return None
    outside = _group(source, OUTSIDE)
    if outside is not None:
        allowed = OUTSIDE_MAY_IMPORT + EXTRA.get(outside, ()) + (outside,)
        return None if _group(target, allowed) else "uses internals below the client and process boundary"
    src, dst = _rank(source), _rank(target)
    if src is None or dst is None:
        return None if dst is None or src is None and dst is None else f"{source} is in no layer"
    if dst[0] > src[0]:
        return f"imports upwards ({dst[1]} sits above {src[1]})"
    if dst[0] == src[0] and dst[1] != src[1]:
        return f"imports a sibling layer ({dst[1]} beside {src[1]})"
    return None


def test_every_import_points_down_the_layers() -> None:
    problems = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            module = _module_name(path)
            for line, target in _imports(path, module):
                if not _is_module(target):
                    continue
                why = _violation(module, target)
                if why is not None:
                    problems.append(f"{path.relative_to(ROOT)}:{line}: {module} -> {target}: {why}")
    assert not problems, "wrong-way imports:\n" + "\n".join(problems)


def test_the_check_sees_a_wrong_way_import() -> None:
    """The walker itself: each kind of violation is reported, allowed edges are not."""
    assert _violation("raftkv.server.node.node", "raftkv.api.backend")  # upwards
    assert _violation("raftkv.storage.env", "raftkv.transport.peer")  # sibling
    assert _violation("raftkv.client.sync", "raftkv.server.config")  # client into server internals
    assert _violation("cli.kv", "raftkv.statemachine.restore")
    assert _violation("raftkv.sim.cluster", "raftkv.api.kv")  # the simulator drives the node, not the API
    assert _violation("raftkv.api.kv", "raftkv.server.backend") is None
    assert _violation("cli.snapshot", "raftkv.main") is None
    assert _violation("raftkv.main", "raftkv.api.grpc_server") is None
