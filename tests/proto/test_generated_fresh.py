"""The committed generated code must be exactly what tools/genproto.py makes from the committed .proto files."""

from __future__ import annotations

import re
from importlib.metadata import version
from pathlib import Path

from tools.genproto import REPO_ROOT, generate


def test_grpcio_tools_matches_the_pin() -> None:
    """Generated code embeds the compiler version; a different grpcio-tools would report spurious diffs."""
    pyproject = (REPO_ROOT / "pyproject.toml").read_text()
    pinned = re.search(r'"grpcio-tools==([^"]+)"', pyproject)
    assert pinned, "pyproject.toml must pin grpcio-tools exactly in the dev extra"
    assert version("grpcio-tools") == pinned.group(1)


def test_committed_code_is_fresh(tmp_path: Path) -> None:
    written = generate(tmp_path)
    stale = [str(p) for p in written if (tmp_path / p).read_bytes() != (REPO_ROOT / p).read_bytes()]
    assert not stale, f"regenerate with `make proto`: {stale}"
    committed = sorted(p.relative_to(REPO_ROOT) for p in (REPO_ROOT / "raftkv" / "proto").glob("*_pb2*.py*"))
    assert committed == sorted(written), "generated files without a .proto source are left over"
