"""bench/gil_contention.py: runs on a fresh checkout and refuses bad arguments."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

_PATH = Path(__file__).resolve().parents[2] / "bench" / "gil_contention.py"


def test_reports_both_calls() -> None:
    cmd = [sys.executable, str(_PATH), "--calls", "200", "--runs", "1", "--loops", "20000"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("200 calls, median of 1 runs")
    assert [line.split()[0] for line in lines[1:]] == ["WriteBatch.put", "get"]
    assert all("us alone" in line and "the caller waits" in line for line in lines[1:])


def test_refuses_a_zero_count() -> None:
    proc = subprocess.run(
        [sys.executable, str(_PATH), "--loops", "0"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert "must be at least 1" in proc.stderr
