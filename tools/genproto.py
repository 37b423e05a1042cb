"""Regenerate the Python code for raftkv's .proto files (``python -m tools.genproto`` or ``make proto``).

The generated modules are committed so that installing raftkv needs no compiler; this script is the one
way to produce them, and ``tests/proto/test_generated_fresh.py`` runs it into a scratch directory to prove
the committed files match the .proto sources. protoc runs with the repository root as its include path so
that generated imports read ``from raftkv.proto import ..._pb2``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = Path("raftkv") / "proto"

#: File name endings protoc writes for each .proto file.
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def proto_files() -> list[Path]:
    """The .proto sources, relative to the repository root, in a stable order."""
    return sorted(p.relative_to(REPO_ROOT) for p in (REPO_ROOT / PROTO_DIR).glob("*.proto"))


def generated_files(protos: list[Path]) -> list[Path]:
    """The paths (relative to an output root) that generating ``protos`` produces."""
    return [p.with_name(p.stem + suffix) for p in protos for suffix in GENERATED_SUFFIXES]


def generate(out_root: Path) -> list[Path]:
    """Compile every .proto into ``out_root`` (mirroring the repository layout); return the files written."""
    protos = proto_files()
    assert protos, f"no .proto files under {REPO_ROOT / PROTO_DIR}"
    (out_root / PROTO_DIR).mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        "-I",
        ".",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        *(str(p) for p in protos),
    ]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"protoc failed ({result.returncode}):\n{result.stderr}")
    written = generated_files(protos)
    missing = [p for p in written if not (out_root / p).is_file()]
    assert not missing, f"protoc did not write {missing}"
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT, help="output root (default: the repository)")
    args = parser.parse_args(argv)
    for path in generate(args.out.resolve()):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
