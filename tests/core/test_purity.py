"""The core must stay sans-I/O: no module under raftkv/core may import I/O, clocks, threads or randomness.

This is what makes the simulator deterministic and the golden tests byte-for-byte stable.
"""

from __future__ import annotations

import ast
from pathlib import Path

import raftkv.core

FORBIDDEN = {
    "random", "time", "os", "socket", "asyncio", "threading", "grpc", "lmdb", "subprocess", "selectors",
    "multiprocessing", "concurrent", "datetime", "signal", "io", "pathlib", "shutil", "tempfile", "secrets",
}


def _imported_roots(tree: ast.AST) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "__import__":
            roots.add("__import__")
    return roots


def test_core_imports_no_io_clock_thread_or_randomness() -> None:
    core_dir = Path(raftkv.core.__file__).parent
    files = sorted(core_dir.rglob("*.py"))
    assert len(files) >= 8, files
    offenders = {}
    for path in files:
        bad = _imported_roots(ast.parse(path.read_text(), str(path))) & (FORBIDDEN | {"__import__"})
        if bad:
            offenders[path.name] = sorted(bad)
    assert offenders == {}
