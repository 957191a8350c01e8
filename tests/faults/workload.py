"""Load for fault tests: writers that record every acknowledgement, readers that compare nodes.

Writers put records with unique keys (`w<writer>-<seq>`) and random values,
each with `wait=commit`; only an answer with status_code 0 counts as an
acknowledgement (a timeout or a refused request is "unknown": the write may or
may not commit, and the checker does not hold it against anyone).

Readers run while faults happen: they read acknowledged records from random
nodes (a node may lag, so "not found" is allowed, a different value is not)
and compare block hashes at random heights between two nodes.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any

import httpx

from node import txs as txlib
from node.client import Client, ClientError
from storage.keyfile import read_key
from tests.faults.harness import FaultCluster

SUBMIT_WAIT_S = 25
CLIENT_TIMEOUT_S = 35
STATUS_TIMEOUT_S = 3
VALID_FOR_BLOCKS = 2000
READ_PACE_S = 0.2
WRITE_RETRY_PACE_S = 0.2


@dataclass(frozen=True, slots=True)
class Ack:
    agency: str
    key: str
    value: str
    tx_hash: str
    height: int
    node: int


class Workload:
    def __init__(self, cluster: FaultCluster, writers: int, readers: int, seed: int) -> None:
        self.cluster = cluster
        self.writers = writers
        self.readers = readers
        self.rng = random.Random(seed)
        clients = cluster.root / "net" / "clients"
        self.keys = [read_key(p) for p in sorted(clients.glob("agency*.key"))]
        self.acked: list[Ack] = []
        self.counts: Counter[str] = Counter()
        self.violations: list[str] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        cluster.stop_events.append(self.stopping)
        self.futures: list[Any] = []
        self.last_ack_at = 0.0
        self.probes = 0

    def start(self) -> None:
        for w in range(self.writers):
            self.futures.append(self.cluster.spawn(lambda w=w: self._writer(w)))
        for r in range(self.readers):
            self.futures.append(self.cluster.spawn(lambda r=r: self._reader(r)))

    def stop(self) -> None:
        self.stopping.set()
        for f in self.futures:
            f.result(timeout=CLIENT_TIMEOUT_S + 10)

    def _targets(self) -> list[int]:
        return [
            n.index for n in self.cluster.nodes
            if n.running and not n.paused and not n.byzantine and n.validator
        ]  # fmt: skip

    def _writer(self, w: int) -> None:
        rng = random.Random(self.rng.random())
        agency = w % len(self.keys)
        seq = 0
        while not self.stopping.is_set():
            targets = self._targets()
            if not targets:
                self.stopping.wait(WRITE_RETRY_PACE_S)
                continue
            node = rng.choice(targets)
            key, value = f"w{w}-{seq}", f"v{seq}-{rng.getrandbits(32):08x}"
            seq += 1
            self._write(node, agency, key, value)

    def _write(self, node: int, agency: int, key: str, value: str) -> None:
        api = self.cluster.nodes[node].api
        try:
            # a node that does not answer quickly is skipped, not waited on for the submit timeout
            height = int(httpx.get(f"{api}/status", timeout=STATUS_TIMEOUT_S).json()["height"])
            with Client(api, timeout=CLIENT_TIMEOUT_S) as client:
                tx = txlib.build(
                    self.keys[agency], self.cluster.chain_id, "put", f"agency{agency}", key, value,
                    height + VALID_FOR_BLOCKS,
                )  # fmt: skip
                answer = client.submit(tx, wait=True, timeout=SUBMIT_WAIT_S)
        except (ClientError, httpx.HTTPError, OSError, ValueError, KeyError) as exc:
            self._count(f"unknown:{type(exc).__name__}")
            self.stopping.wait(WRITE_RETRY_PACE_S)  # the node is down or cut off: pace retries
            return
        if answer.get("status_code") != 0:
            self._count("rejected")
            return
        ack = Ack(f"agency{agency}", key, value, str(answer.get("tx_hash", "")),
                  int(answer.get("height", 0)), node)  # fmt: skip
        with self.lock:
            self.acked.append(ack)
            self.counts["acked"] += 1

    def probe(self) -> int:
        """Submit one write (no wait) to every running honest validator; how many were accepted.

        Used when a fault heals: writers may all be blocked on a node that was cut
        off, and the chain cannot commit what nobody submits. Probe writes are
        not acknowledged writes (nobody waits for them).
        """
        accepted = 0
        for node in self._targets():
            api = self.cluster.nodes[node].api
            key = self.keys[self.probes % len(self.keys)]
            agency = f"agency{self.probes % len(self.keys)}"
            self.probes += 1

            def submit(api: str = api, key: Any = key, agency: str = agency) -> bool:
                height = int(httpx.get(f"{api}/status", timeout=STATUS_TIMEOUT_S).json()["height"])
                tx = txlib.build(key, self.cluster.chain_id, "put", agency, f"probe-{self.probes}",
                                 "p", height + VALID_FOR_BLOCKS)  # fmt: skip
                with Client(api, timeout=STATUS_TIMEOUT_S) as client:
                    client.submit(tx, wait=False)
                return True

            try:
                accepted += bool(self.cluster.call(submit))
            except (ClientError, httpx.HTTPError, OSError, ValueError, KeyError):
                self._count("probe_failed")
        return accepted

    def _count(self, what: str) -> None:
        with self.lock:
            self.counts[what] += 1

    def _reader(self, r: int) -> None:
        rng = random.Random(self.rng.random())
        while not self.stopping.wait(READ_PACE_S):
            try:
                if rng.random() < 0.5:
                    self._read_one(rng)
                else:
                    self._compare_one(rng)
            except (httpx.HTTPError, OSError, ValueError, KeyError):
                self._count("read_unavailable")

    def _readable(self) -> list[int]:
        return [
            n.index for n in self.cluster.nodes if n.running and not n.paused and not n.byzantine
        ]

    def _read_one(self, rng: random.Random) -> None:
        with self.lock:
            if not self.acked:
                return
            ack = rng.choice(self.acked)
        nodes = self._readable()
        if not nodes:
            return
        node = rng.choice(nodes)
        resp = httpx.get(
            f"{self.cluster.nodes[node].api}/records/{ack.agency}/{ack.key}", timeout=3
        )
        self._count("reads")
        if resp.status_code == 404:
            return  # lagging node: allowed
        resp.raise_for_status()
        got = resp.json().get("value")
        if got != ack.value:
            self._violation(f"reader: node{node} serves {ack.agency}/{ack.key} = {got!r}, "
                            f"acknowledged {ack.value!r}")  # fmt: skip

    def _compare_one(self, rng: random.Random) -> None:
        nodes = self._readable()
        if len(nodes) < 2:
            return
        a, b = rng.sample(nodes, 2)
        ha = int(httpx.get(f"{self.cluster.nodes[a].api}/status", timeout=3).json()["height"])
        hb = int(httpx.get(f"{self.cluster.nodes[b].api}/status", timeout=3).json()["height"])
        top = min(ha, hb)
        if top < 1:
            return
        h = rng.randint(1, top)
        blocks = [httpx.get(f"{self.cluster.nodes[n].api}/blocks/{h}", timeout=3) for n in (a, b)]
        if any(x.status_code != 200 for x in blocks):
            return
        self._count("compares")
        ja, jb = (x.json() for x in blocks)
        if (ja["hash"], ja["state_root"]) != (jb["hash"], jb["state_root"]):
            self._violation(f"reader: height {h}: node{a} has {ja['hash'][:16]}, "
                            f"node{b} has {jb['hash'][:16]}")  # fmt: skip

    def _violation(self, text: str) -> None:
        with self.lock:
            self.violations.append(text)
        self.cluster.note("VIOLATION " + text)
