"""`redwood localnet` — the README's main command — end to end, with real node processes."""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.integration.harness import choose_base_port

LINE = re.compile(r"(node\d) up height=(\d+) view=(\d+) peers=(\d+) tx/s=([\d.\-]+) mempool=(\d+)")
START_TIMEOUT_S = 90
STOP_TIMEOUT_S = 30


def _localnet(tmp_path: Path, base: int, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "node.cli", "localnet",
        "--dir", str(tmp_path / "ln"), "--base-port", str(base), *extra,
    ]  # fmt: skip


def _node_processes(home_root: Path) -> list[str]:
    out = subprocess.run(["pgrep", "-af", str(home_root)], capture_output=True, text=True)
    return [line for line in out.stdout.splitlines() if "node.cli start" in line]


def test_localnet_plain_view_commits_load_and_stops_cleanly(tmp_path: Path) -> None:
    base = choose_base_port(4)
    proc = subprocess.Popen(
        _localnet(tmp_path, base, "--load", "40"),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    seen: dict[str, tuple[int, float]] = {}
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        assert proc.stdout is not None
        while time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stdout], [], [], 1.0)
            if not ready:
                assert proc.poll() is None, "localnet exited early"
                continue
            line = proc.stdout.readline()
            m = LINE.search(line)
            if m:
                rate = float(m.group(5)) if m.group(5) != "-" else 0.0
                seen[m.group(1)] = (int(m.group(2)), rate)
            if len(seen) == 4 and all(h >= 3 and r > 0 for h, r in seen.values()):
                break
        else:
            raise AssertionError(f"no committing 4-node view within {START_TIMEOUT_S}s: {seen}")
        assert len(_node_processes(tmp_path / "ln")) == 4
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=STOP_TIMEOUT_S)
    assert code == 0
    assert _node_processes(tmp_path / "ln") == [], "localnet left node processes behind"


def _sigint_as_on_a_terminal() -> None:
    """In the child: Ctrl-C's default action, even if this test runs with SIGINT ignored
    (a background job of a non-interactive shell inherits SIG_IGN, and Python then never
    raises KeyboardInterrupt)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _drain_until_exit(proc: subprocess.Popen[bytes], leader: int, timeout_s: float) -> int:
    """Keep reading the terminal while `proc` stops: a full pty would block its writes."""
    deadline = time.monotonic() + timeout_s
    while proc.poll() is None and time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.2)
        if ready:
            try:
                os.read(leader, 65536)
            except OSError:
                break  # the child closed its end: only its exit is left to wait for
    return proc.wait(timeout=max(0.0, deadline - time.monotonic()))


def test_localnet_on_a_terminal_redraws_a_live_table(tmp_path: Path) -> None:
    base = choose_base_port(4)
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        _localnet(tmp_path, base), stdin=follower, stdout=follower, stderr=follower,
        env={**os.environ, "COLUMNS": "120", "TERM": "xterm"},
        preexec_fn=_sigint_as_on_a_terminal,
    )  # fmt: skip
    os.close(follower)
    screen = b""
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 1.0)
            if ready:
                try:
                    screen += os.read(leader, 65536)
                except OSError:
                    break
            text = screen.decode(errors="replace")
            # the table is redrawn in place (cursor movement) and names every node
            if (
                "\x1b[" in text
                and all(f"node{i}" in text for i in range(4))
                and text.count("node0") >= 3
            ):
                break
        else:
            raise AssertionError(f"no live table within {START_TIMEOUT_S}s: {screen[-2000:]!r}")
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        try:
            code = _drain_until_exit(proc, leader, STOP_TIMEOUT_S)
        finally:
            os.close(leader)
            if proc.poll() is None:  # do not leave the localnet and its nodes running
                proc.kill()
                for line in _node_processes(tmp_path / "ln"):
                    os.kill(int(line.split()[0]), signal.SIGKILL)
    assert code == 0
    assert _node_processes(tmp_path / "ln") == []
