"""A member's process runs on gRPC's polling engine (``raftkv/grpc_engine.py``) unless its operator chose
otherwise; a process that loaded grpc first is left as it is."""

from __future__ import annotations

import os
import subprocess
import sys

from raftkv import grpc_engine

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRINT_CHOICE = "import os, raftkv.main; print(os.environ.get('GRPC_EXPERIMENTS', '<unset>'))"


def _choice_in_a_fresh_process(code: str, **env: str) -> str:
    environment = {k: v for k, v in os.environ.items() if k != "GRPC_EXPERIMENTS"} | env
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=environment,
                          timeout=60, check=True)
    return done.stdout.strip()


def test_the_member_process_turns_event_engine_off_before_grpc_starts() -> None:
    assert _choice_in_a_fresh_process(PRINT_CHOICE) == grpc_engine.MEMBER_EXPERIMENTS


def test_an_operators_own_choice_wins() -> None:
    assert _choice_in_a_fresh_process(PRINT_CHOICE, GRPC_EXPERIMENTS="event_engine_client") == "event_engine_client"


def test_a_process_that_loaded_grpc_first_is_left_alone() -> None:
    code = "import grpc, os, raftkv.main; print(os.environ.get('GRPC_EXPERIMENTS', '<unset>'))"
    assert _choice_in_a_fresh_process(code) == "<unset>"
