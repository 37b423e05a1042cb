"""Every shared client method has its real return type on both clients.

``Surface`` writes each method once, returning ``Result[T]`` (``T`` or ``Awaitable[T]``); ``Client`` and
``AsyncClient`` restate the signatures for the type checker with their own return type, and mypy checks
each restatement against the shared one. This test checks that none is missing, so that no public method
falls back to the union.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from raftkv.client import surface

CLIENT_DIR = Path(surface.__file__).parent


def _shared_methods() -> set[str]:
    return {
        name
        for name, fn in vars(surface.Surface).items()
        if inspect.isfunction(fn) and not name.startswith("_") and "Result[" in str(fn.__annotations__.get("return"))
    }


def _restated(module: str, cls: str) -> set[str]:
    tree = ast.parse((CLIENT_DIR / module).read_text())
    klass = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls)
    names: set[str] = set()
    for node in klass.body:
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            names |= {f.name for f in node.body if isinstance(f, ast.FunctionDef)}
    return names


@pytest.mark.parametrize(("module", "cls"), [("sync.py", "Client"), ("aio.py", "AsyncClient")])
def test_each_client_states_every_shared_return_type(module: str, cls: str) -> None:
    shared = _shared_methods()
    assert len(shared) > 20, shared
    assert shared <= _restated(module, cls), sorted(shared - _restated(module, cls))
