"""bench/tree_rebuild.py: rebuilds a position/2 store on a fresh checkout, refuses bad arguments."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

_PATH = Path(__file__).resolve().parents[2] / "bench" / "tree_rebuild.py"


def test_rebuilds_a_small_store() -> None:
    cmd = [sys.executable, str(_PATH), "--records", "2500", "--runs", "1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("build: ")
    assert re.fullmatch(r"head 1, store of 2500 records in \d+ s", lines[1])
    assert re.fullmatch(
        r"run 1/1: rebuilt 2500 records in [\d.]+ s wall, [\d.]+ s CPU, peak RSS \d+ MB "
        r"\(\+\d+ MB while opening\)",
        lines[2],
    )


def test_refuses_a_zero_count() -> None:
    proc = subprocess.run(
        [sys.executable, str(_PATH), "--records", "0"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert "must be at least 1" in proc.stderr
