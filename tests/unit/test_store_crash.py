"""kill -9 at random moments never leaves a half-written block in the chain store.

A writer process (`tests/unit/crash_writer.py`) commits deterministic certified
blocks with sync=True in a loop. After it reports a first commit, the test
waits a random short delay (the fault injection, drawn from a seeded RNG) and
sends SIGKILL. Then it reopens the store and checks that the head is a block
that was written whole — block, certificate, tx index, state writes with
history and meta — that nothing of the next block is visible, that every
commit the writer acknowledged survived, and that the next writer resumes at
head+1. A failure prints the seed and the round.
"""

from __future__ import annotations

import os
import pathlib
import queue
import random
import signal
import subprocess
import sys
import threading
import time

from consensus.types import CertifiedBlock, tx_hash
from storage.store import ChainStore
from tests.unit import crash_writer as cw

ROOT = pathlib.Path(__file__).resolve().parents[2]
SEED = 20261126
KILLS = 60
KILL_DELAY_S_MAX = 0.03
LINE_TIMEOUT_S = 20.0


class Writer:
    """The writer subprocess and a thread that forwards its stdout lines to a queue."""

    def __init__(self, path: pathlib.Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.unit.crash_writer", str(path)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.acknowledged = 0

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.lines.put(raw.decode().strip())
        self.lines.put(None)

    def next_line(self) -> str:
        try:
            line = self.lines.get(timeout=LINE_TIMEOUT_S)
        except queue.Empty:
            raise AssertionError("writer printed nothing in time") from None
        if line is None:
            self.proc.wait(timeout=LINE_TIMEOUT_S)
            stderr = self.proc.stderr.read().decode() if self.proc.stderr else ""
            raise AssertionError(f"writer exited ({self.proc.returncode}): {stderr[-2000:]}")
        if line.startswith("committed "):
            self.acknowledged = int(line.split()[1])
        return line

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=LINE_TIMEOUT_S)
        self.reader.join(timeout=LINE_TIMEOUT_S)
        while (line := self.lines.get_nowait()) is not None:
            if line.startswith("committed "):
                self.acknowledged = int(line.split()[1])
        assert self.proc.stderr is not None
        self.proc.stderr.close()
        self.proc.stdout.close()  # type: ignore[union-attr]


class ExpectedChain:
    """The blocks and state the writer produces, recomputed independently."""

    def __init__(self) -> None:
        self.blocks: list[CertifiedBlock] = []

    def block(self, height: int) -> CertifiedBlock:
        while len(self.blocks) < height:
            h = len(self.blocks) + 1
            parent = self.blocks[-1].block.hash() if self.blocks else cw.GENESIS_HASH
            self.blocks.append(cw.make_block(h, parent, cw.crash_txs(h)))
        return self.blocks[height - 1]


def check_whole_head(store: ChainStore, chain: ExpectedChain) -> None:
    head = store.head_height()
    assert head >= 1
    expected = chain.block(head)
    assert store.head() == expected  # block and certificate
    assert store.get_block_by_hash(expected.block.hash()) == expected
    assert store.get_meta(b"height") == b"%d" % head
    for index, tx in enumerate(expected.block.txs):
        loc = store.get_tx(tx_hash(tx))
        first = (head - 1, 0) if index == cw.CRASH_TXS_PER_BLOCK else (head, index)
        assert loc is not None and (loc.height, loc.index) == first, (head, index, loc)
    for key, (value, versions, height) in cw.expected_state(head).items():
        record = store.get_record(key)
        assert record is not None and (record.value, record.version, record.height) == (
            value,
            versions,
            height,
        ), (head, key, record)
        assert [v.version for v in store.record_history(key, limit=3)] == [
            v for v in range(versions, max(0, versions - 3), -1)
        ]
    # nothing of the next block is visible
    following = chain.block(head + 1)
    assert store.get_block(head + 1) is None
    assert not store.has_tx(tx_hash(following.block.txs[0]))
    for w in cw.crash_writes(head + 1):
        record = store.get_record(w.key)
        assert record is None or record.height <= head


def test_kill_9_at_random_moments_leaves_a_whole_head(tmp_path: pathlib.Path) -> None:
    rng = random.Random(SEED)
    path = tmp_path / "data"
    chain = ExpectedChain()
    head = 0
    started = time.monotonic()
    for round_ in range(KILLS):
        where = f"seed {SEED} round {round_} head {head}"
        writer = Writer(path)
        try:
            assert writer.next_line() == f"start {head}", where
            assert writer.next_line() == f"committed {head + 1}", where  # resumes at head+1
            time.sleep(rng.uniform(0, KILL_DELAY_S_MAX))  # fault injection: a random moment
        finally:
            writer.kill()
        assert writer.proc.returncode == -signal.SIGKILL, where
        with ChainStore.open(path, genesis_hash=cw.GENESIS_HASH) as store:
            new_head = store.head_height()
            assert new_head >= writer.acknowledged, f"{where}: acknowledged commit lost"
            check_whole_head(store, chain)
        head = new_head
    elapsed_s = time.monotonic() - started
    print(f"{KILLS} kills, final head {head}, {elapsed_s:.1f} s")
    assert head >= KILLS  # every round committed at least one block
