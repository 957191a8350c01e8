"""Faults, one at a time, chosen and timed by a seed; each is injected, held, healed, measured.

After every heal the runner measures the stall: the time until the chain
commits again (some honest node passes the highest height seen at the heal)
— must be within `RECOVERY_S` — and then waits until every honest node that
runs is ready and has passed that height too (`CATCH_UP_S`). Missing either
is a violation, not a retry.

A damaged node (log tail truncated, disk filled) must either come back by
itself or exit with a message naming `redwood repair`; the runner then runs
the repair and starts it again, and the final checker proves it serves the
same chain as everyone else.
"""

from __future__ import annotations

import errno
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.faults.harness import REPO, FaultCluster
from tests.faults.workload import Workload

RECOVERY_S = 30.0
SLOW_RECOVERY_S = 5.0
CATCH_UP_S = 60.0
PAUSE_S = 10.0
START_OUTCOME_S = 30.0
POLL_S = 0.1
TRUNCATE_MAX_BYTES = 4096
CORRUPT_BYTES = 64
FILL_CHUNK = 1 << 20
DISK_MB = 64

KINDS = (
    "kill", "pause", "restart", "isolate", "isolate_primary", "split", "one_way",
    "latency", "loss", "truncate", "corrupt", "disk_full",
)  # fmt: skip


@dataclass
class Stats:
    injected: Counter[str] = field(default_factory=Counter)
    skipped: dict[str, str] = field(default_factory=dict)
    stalls: list[tuple[str, float]] = field(default_factory=list)
    outcomes: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)

    @property
    def longest_stall(self) -> tuple[str, float]:
        return max(self.stalls, key=lambda s: s[1], default=("none", 0.0))


def wait_for(what: str, check: Callable[[], Any], timeout_s: float) -> tuple[Any, float]:
    """Poll `check` until truthy; (result, seconds) or (None, seconds) after `timeout_s`."""
    start = time.monotonic()
    while True:
        result = check()
        if result:
            return result, time.monotonic() - start
        if time.monotonic() - start > timeout_s:
            return None, time.monotonic() - start
        time.sleep(POLL_S)  # polling interval of a bounded wait


class Runner:
    def __init__(
        self, cluster: FaultCluster, workload: Workload, rng: random.Random, hold_s: float
    ) -> None:
        self.c = cluster
        self.w = workload
        self.rng = rng
        self.hold_s = hold_s
        self.stats = Stats()
        self.disk_node: int | None = None
        self.disk_reason = "no tmpfs node configured"

    # -- helpers ---------------------------------------------------------------------------

    def honest(self) -> list[int]:
        return [n.index for n in self.c.nodes if not n.byzantine]

    def honest_validators(self) -> list[int]:
        return [n.index for n in self.c.nodes if not n.byzantine and n.validator]

    def violation(self, text: str) -> None:
        self.stats.violations.append(text)
        self.c.note("VIOLATION " + text)

    def heights(self, nodes: list[int]) -> dict[int, int]:
        out = {}
        for i in nodes:
            st = self.c.status(i)
            if st is not None:
                out[i] = int(st["height"])
        return out

    def hold(self, seconds: float) -> None:
        """The fault's duration (a scheduled hold, not a wait for a condition)."""
        self.w.stopping.wait(seconds)

    def views(self) -> str:
        """name:height/view/peers of every node that answers (for the timeline)."""
        out = []
        for n in self.c.nodes:
            st = self.c.status(n.index) if n.running and not n.paused else None
            out.append(
                f"{n.name}:" + (f"{st['height']}/v{st['view']}/p{st['peers']}" if st else "-")
            )
        return " ".join(out)

    def not_ready(self, nodes: list[int]) -> dict[str, str]:
        """name -> why, for every node in `nodes` that does not answer /ready with 200."""
        out = {}
        for i in nodes:
            try:
                r = self.c.get(i, "/ready", 3.0)
            except httpx.HTTPError as exc:
                out[f"{self.c.nodes[i].name} /ready"] = type(exc).__name__
                continue
            if r.status_code != 200:
                out[f"{self.c.nodes[i].name} /ready"] = r.text[:120]
        return out

    def measure_recovery(self, kind: str) -> None:
        honest = self.honest()
        h0 = max(self.heights(honest).values(), default=0)
        at_heal = self.views()
        self.w.probe()  # something to commit, even if every writer waits on a node that was cut off
        _, stall = wait_for(
            "a new commit", lambda: max(self.heights(honest).values(), default=0) > h0, RECOVERY_S
        )
        self.stats.stalls.append((kind, stall))
        if stall > SLOW_RECOVERY_S:
            self.c.note(f"slow recovery after {kind}: at heal {at_heal}; now {self.views()}")
        if stall > RECOVERY_S:
            self.violation(
                f"after healing {kind}: no commit above height {h0} within {RECOVERY_S:.0f} s"
            )
            return

        def caught_up() -> bool:
            hs = self.heights(honest)
            return (
                len(hs) == len(honest)
                and min(hs.values()) > h0
                and all(self.c.is_ready(i) for i in honest)
            )

        ok, took = wait_for("every honest node caught up", caught_up, CATCH_UP_S)
        if not ok:
            lag = {self.c.nodes[i].name: h for i, h in self.heights(honest).items()}
            lag.update(self.not_ready(honest))
            self.violation(f"after healing {kind}: honest nodes not all ready above {h0} "
                           f"within {CATCH_UP_S:.0f} s: {lag}")  # fmt: skip
        self.c.note(f"healed {kind}: commit after {stall:.1f} s, all caught up after {took:.1f} s")

    def start_and_judge(self, i: int, kind: str) -> None:
        """Start node i after damage: it runs, or exits naming `redwood repair` (then repaired)."""
        n = self.c.nodes[i]
        self.c.start(i)
        wait_for(
            "the node answers or exits",
            lambda: (not n.running) or self.c.status(i) is not None,
            START_OUTCOME_S,
        )
        if n.running:
            self.stats.outcomes.append(f"{kind} {n.name}: restarted by itself")
            return
        tail = n.log_tail(8)
        self.c.reap(i)
        if "redwood repair" not in tail:
            self.violation(f"{kind} {n.name}: exited without naming the recovery command:\n{tail}")
        done = subprocess.run(
            [sys.executable, "-m", "node.cli", "repair", "--home", str(n.home)],
            capture_output=True, text=True, timeout=60, cwd=REPO,
        )  # fmt: skip
        if done.returncode != 0:
            self.violation(f"{kind} {n.name}: redwood repair failed: {done.stderr.strip()}")
        self.stats.outcomes.append(
            f"{kind} {n.name}: refused to start ({_last_line(tail)}); repaired"
        )
        self.c.start(i)

    # -- the faults ----------------------------------------------------------------------------

    def run(self, kind: str) -> None:
        getattr(self, f"fault_{kind}")()

    def _inject(self, kind: str, detail: str) -> None:
        self.stats.injected[kind] += 1
        self.c.note(f"FAULT {kind}: {detail}")

    def _target(self) -> int:
        return self.rng.choice(self.honest_validators())

    def fault_kill(self) -> None:
        i = self._target()
        self._inject("kill", self.c.nodes[i].name)
        self.c.stop(i, signal.SIGKILL)
        self.hold(self.hold_s)
        self.c.start(i)
        self.measure_recovery("kill")

    def fault_restart(self) -> None:
        i = self._target()
        self._inject("restart", self.c.nodes[i].name)
        code = self.c.stop(i, signal.SIGTERM)
        if code != 0:
            self.violation(f"graceful stop of {self.c.nodes[i].name} exited {code}")
        self.c.start(i)
        self.measure_recovery("restart")

    def fault_pause(self) -> None:
        i = self._target()
        self._inject("pause", f"{self.c.nodes[i].name} for {PAUSE_S:.0f} s")
        self.c.pause(i)
        self.hold(PAUSE_S)
        self.c.resume(i)
        self.measure_recovery("pause")

    def _partition(self, kind: str, blocked: set[tuple[int, int]], detail: str) -> None:
        self._inject(kind, detail)
        self.c.set_blocked(blocked)
        self.hold(self.hold_s)
        self.c.set_blocked(set())
        self.measure_recovery(kind)

    def _isolate(self, i: int) -> set[tuple[int, int]]:
        others = [n.index for n in self.c.nodes if n.index != i]
        return {(i, j) for j in others} | {(j, i) for j in others}

    def fault_isolate(self) -> None:
        i = self._target()
        self._partition("isolate", self._isolate(i), self.c.nodes[i].name)

    def fault_isolate_primary(self) -> None:
        p = self.c.primary_index()
        if p is None or self.c.nodes[p].byzantine:
            p = self._target()
        self._partition("isolate_primary", self._isolate(p), f"primary {self.c.nodes[p].name}")

    def fault_split(self) -> None:
        vals = self.honest_validators() + [n.index for n in self.c.nodes if n.byzantine]
        self.rng.shuffle(vals)
        half = len(vals) // 2
        a, b = set(vals[:half]), set(vals[half:])
        for n in self.c.nodes:
            if not n.validator:
                (a if self.rng.random() < 0.5 else b).add(n.index)
        blocked = {(x, y) for x in a for y in b} | {(y, x) for x in a for y in b}
        self._partition("split", blocked, f"{sorted(a)} | {sorted(b)}")

    def fault_one_way(self) -> None:
        i = self._target()
        others = [n.index for n in self.c.nodes if n.index != i]
        if self.rng.random() < 0.5:
            blocked, detail = {(i, j) for j in others}, f"{self.c.nodes[i].name} cannot send"
        else:
            blocked, detail = {(j, i) for j in others}, f"{self.c.nodes[i].name} cannot receive"
        self._partition("one_way", blocked, detail)

    def _shaping(self, kind: str, delay_ms: int, loss_pct: float) -> None:
        ok, reason = self.c.shaping_available()
        if not ok:
            self.stats.skipped[kind] = reason
            self.c.note(f"SKIP {kind}: {reason}")
            return
        vals = self.honest_validators()
        nodes = self.rng.sample(vals, max(1, len(vals) // 2))
        self._inject(kind, f"{[self.c.nodes[i].name for i in nodes]} {delay_ms} ms {loss_pct}%")
        self.c.shape(nodes, delay_ms, loss_pct)
        self.hold(self.hold_s)
        self.c.unshape()
        self.measure_recovery(kind)

    def fault_latency(self) -> None:
        self._shaping("latency", self.rng.choice((50, 100, 200)), 0.0)

    def fault_loss(self) -> None:
        self._shaping("loss", 5, self.rng.choice((5.0, 10.0, 20.0)))

    def fault_truncate(self) -> None:
        i = self._target()
        n = self.c.nodes[i]
        self.c.stop(i, signal.SIGKILL)
        logs = sorted((n.home / "data" / "chain").glob("*.log"), key=lambda p: int(p.stem))
        logs = [p for p in logs if p.stat().st_size > 0]
        if not logs:
            self.stats.skipped["truncate"] = "no non-empty LevelDB log file at that moment"
            self.c.start(i)
            self.measure_recovery("truncate")
            return
        newest = logs[-1]
        size = newest.stat().st_size
        cut = self.rng.randint(1, min(size, TRUNCATE_MAX_BYTES))
        with newest.open("r+b") as f:
            f.truncate(size - cut)
        self._inject("truncate", f"{n.name}: {newest.name} {size} -> {size - cut} bytes")
        self.start_and_judge(i, "truncate")
        self.measure_recovery("truncate")

    def fault_corrupt(self) -> None:
        """Garbage in the middle of the newest LevelDB log (a bad sector): no silent recovery."""
        i = self._target()
        n = self.c.nodes[i]
        self.c.stop(i, signal.SIGKILL)
        logs = sorted((n.home / "data" / "chain").glob("*.log"), key=lambda p: int(p.stem))
        logs = [p for p in logs if p.stat().st_size > 2 * CORRUPT_BYTES]
        if not logs:
            self.stats.skipped["corrupt"] = "no LevelDB log file big enough at that moment"
            self.c.start(i)
            self.measure_recovery("corrupt")
            return
        newest = logs[-1]
        size = newest.stat().st_size
        at = self.rng.randrange(0, size - CORRUPT_BYTES)
        with newest.open("r+b") as f:
            f.seek(at)
            f.write(self.rng.randbytes(CORRUPT_BYTES))
        self._inject("corrupt", f"{n.name}: {CORRUPT_BYTES} random bytes at {at} of {newest.name}")
        self.start_and_judge(i, "corrupt")
        self.measure_recovery("corrupt")

    def fault_disk_full(self) -> None:
        if self.disk_node is None:
            self.stats.skipped["disk_full"] = self.disk_reason
            self.c.note(f"SKIP disk_full: {self.disk_reason}")
            return
        i = self.disk_node
        n = self.c.nodes[i]
        filler = n.home / "data" / "fill.bin"
        written = _fill(filler)
        self._inject("disk_full", f"{n.name}: filled its {DISK_MB} MB tmpfs ({written} bytes)")
        self.hold(self.hold_s)
        filler.unlink()
        if n.running:
            self.stats.outcomes.append(f"disk_full {n.name}: kept running")
        else:
            how = "with a traceback" if "Traceback" in n.log_tail(200) else "cleanly"
            self.stats.outcomes.append(
                f"disk_full {n.name}: stopped {how} ({_last_line(n.log_tail(8))})"
            )
            self.c.reap(i)
            self.start_and_judge(i, "disk_full")
        self.measure_recovery("disk_full")

    # -- the Byzantine validator ---------------------------------------------------------------

    def byzantine_phase(self, b: int, seconds: float) -> int:
        """Restart validator b as the Byzantine node; make it primary; returns its equivocations."""
        n = self.c.nodes[b]
        self._inject("byzantine", n.name)
        self.c.stop(b, signal.SIGTERM)
        self.c.start(b, byzantine=True)
        wait_for("byzantine node up", lambda: self.c.status(b) is not None, START_OUTCOME_S)
        self.rotate_to(b)
        self.hold(seconds)
        return _count(n, "equivocation")

    def rotate_to(self, b: int) -> None:
        """Pause primaries (one at a time) until the Byzantine node b has equivocated."""
        n = self.c.nodes[b]
        before = _count(n, "equivocation")
        for _ in range(len(self.c.nodes)):
            if _count(n, "equivocation") > before:
                return
            p = self.c.primary_index()
            if p is None or p == b:
                self.hold(2.0)
                continue
            self.c.pause(p)
            self.stats.injected["pause_for_view_change"] += 1
            wait_for("view change", lambda p=p: self.c.primary_index() not in (p, None), RECOVERY_S)
            self.c.resume(p)
        self.measure_recovery("byzantine rotation")


def _count(n: Any, kind: str) -> int:
    if not n.log_path.exists():
        return 0
    return n.log_path.read_text(errors="replace").count(f'"byzantine":"{kind}"')


def _fill(path: Any) -> int:
    """Write zeros to `path` until the file system is full; bytes written."""
    written = 0
    chunk = b"\0" * FILL_CHUNK
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        while True:
            written += os.write(fd, chunk)
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
    finally:
        os.close(fd)
    return written


def _last_line(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return lines[-1][:200] if lines else "(no output)"
