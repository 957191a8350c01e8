"""A real chain: 4 validators + 1 observer as separate `redwood start` processes on 127.0.0.1.

The tests share one cluster (module fixture) and run in order: writes, then a
graceful stop/restart, then SIGKILL under load, then killing the primary.
Each leaves the cluster whole again. The checks trust nothing a node says
about itself beyond what the API returns for blocks and records, which are
compared across every node.
"""

from __future__ import annotations

import itertools
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from node import txs as txlib
from node.client import Client, ClientError
from node.testnet import staggered_write_buffer_mb
from storage.keyfile import read_key
from tests.integration.harness import PORTS_PER_NODE, Cluster, wait_until

VALIDATORS = 4
OBSERVERS = 1
OBSERVER = VALIDATORS  # index of the observer node
WRITES = 1000
CLIENTS = 4
GRACEFUL_STOP_S = 5.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("cluster"), validators=VALIDATORS, observers=OBSERVERS)
    c.create()
    with c.running():
        yield c


class Writer:
    """Submits record writes with wait=commit and remembers every acknowledgement."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.keys = [read_key(cluster.client_key(a)) for a in range(CLIENTS)]
        self.acked: dict[tuple[str, str], str] = {}  # (agency, key) -> value
        self.lock = threading.Lock()
        self.chain_id = cluster.chain_id
        self.local = threading.local()

    def client(self, node: int) -> Client:
        """A keep-alive client per (thread, node): creating httpx clients is expensive."""
        clients = self.local.__dict__.setdefault("clients", {})
        if node not in clients:
            clients[node] = Client(self.cluster.nodes[node].api, timeout=60)
        return clients[node]

    def write(self, node: int, agency: int, key: str, value: str, height: int) -> bool:
        tx = txlib.build(
            self.keys[agency], self.chain_id, "put", f"agency{agency}", key, value, height + 2000
        )
        try:
            answer = self.client(node).submit(tx, wait=True, timeout=25)
        except (ClientError, httpx.HTTPError):
            return False  # not acknowledged: may or may not be committed
        assert answer["status_code"] == 0, answer
        with self.lock:
            self.acked[(f"agency{agency}", key)] = value
        return True

    def write_many(self, count: int, prefix: str, nodes: list[int], workers: int = 16) -> int:
        height = max(self.cluster.nodes[i].height() for i in nodes)

        def one(i: int) -> bool:
            return self.write(nodes[i % len(nodes)], i % CLIENTS, f"{prefix}-{i}", f"v{i}", height)

        with ThreadPoolExecutor(workers) as pool:
            return sum(pool.map(one, range(count)))


def assert_same_chain(cluster: Cluster, nodes: list[int]) -> int:
    """Every node in `nodes` has the same block hash at every height up to the lowest head."""
    top = min(cluster.nodes[i].height() for i in nodes)
    reference = cluster.block_hashes(nodes[0], top)
    for i in nodes[1:]:
        assert cluster.block_hashes(i, top) == reference, f"node{i} diverges from node{nodes[0]}"
    return top


def assert_acked_present(cluster: Cluster, writer: Writer, nodes: list[int]) -> None:
    for i in nodes:
        with Client(cluster.nodes[i].api) as client:
            for (agency, key), value in writer.acked.items():
                got = client.get_record(agency, key)
                assert got["value"] == value, f"node{i}: {agency}/{key} = {got!r}, acked {value!r}"


def state_roots(cluster: Cluster, node: int, upto: int) -> list[str]:
    roots = []
    for h in range(1, upto + 1):
        header = cluster.nodes[node].get(f"/blocks/{h}").json()
        roots.append(header.get("state_root") or header["header"]["state_root"])
    return roots


def test_thousand_writes_acknowledged_and_every_node_agrees(cluster: Cluster) -> None:
    writer = Writer(cluster)
    acked = writer.write_many(WRITES, "w", nodes=list(range(VALIDATORS)))
    assert acked == WRITES
    everyone = list(range(VALIDATORS + OBSERVERS))
    head = max(n.height() for n in cluster.nodes[:VALIDATORS])
    cluster.wait_height(head, everyone, timeout_s=30)
    top = assert_same_chain(cluster, everyone)
    assert top >= 1
    roots = state_roots(cluster, 0, top)
    for i in everyone[1:]:
        assert state_roots(cluster, i, top) == roots, f"node{i} application state differs"
    assert_acked_present(cluster, writer, everyone)  # the observer serves reads too
    committed = [n.status()["txs_committed"] for n in cluster.nodes]
    assert len(set(committed)) == 1 and committed[0] >= WRITES
    # everything is executed: no node may keep a checked signature (the cache once kept
    # those of blocks executed while their admission or proposal check ran)
    for i in everyone:
        wait_until(
            f"node{i}'s verified cache empty",
            lambda i=i: signatures_cached(cluster, i) == 0,
            30,
        )


def signatures_cached(cluster: Cluster, node: int) -> float:
    port = cluster.base_port + PORTS_PER_NODE * node + 2  # its metrics port
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    found = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("redwood_signatures_cached{")
    ]
    assert len(found) == 1, "redwood_signatures_cached is exported once"
    return found[0]


def test_status_height_and_txs_committed_count_the_same_blocks(cluster: Cluster) -> None:
    """/status reads `height` and `txs_committed` at one point of a block's handling: the
    growth of one between two reads is the transactions of the blocks the other grew by
    (the bench computes tx/s from it). They were read apart, one batch apart at times."""
    samples: list[tuple[int, int]] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            doc = cluster.nodes[0].status()
            samples.append((int(doc["height"]), int(doc["txs_committed"])))

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        assert Writer(cluster).write_many(300, "status", nodes=list(range(VALIDATORS))) == 300
    finally:
        done.set()
        sampler.join(timeout=30)
    lo, hi = samples[0][0], samples[-1][0]
    assert hi > lo
    txs_in = {
        h: int(cluster.nodes[0].get(f"/blocks/{h}").json()["tx_count"])
        for h in range(lo + 1, hi + 1)
    }
    for (h0, t0), (h1, t1) in itertools.pairwise(samples):
        assert t1 - t0 == sum(txs_in[h] for h in range(h0 + 1, h1 + 1)), (h0, t0, h1, t1)


def test_validator_stopped_gracefully_then_catches_up(cluster: Cluster) -> None:
    writer = Writer(cluster)
    started = time.monotonic()
    code = cluster.stop(3, signal.SIGTERM, timeout_s=10)
    assert code == 0, f"graceful stop exit code {code}\n{cluster.nodes[3].log_tail()}"
    assert time.monotonic() - started < GRACEFUL_STOP_S, "SIGTERM must stop a node within 5 s"
    assert writer.write_many(100, "sigterm", nodes=[0, 1, 2]) == 100
    before = cluster.nodes[0].height()
    cluster.start(3)
    cluster.wait_ready([3], timeout_s=60)
    # each start logs its phases: the restart opened a store that holds the chain
    opened = cluster.nodes[3].log_records("chain store open")
    assert len(opened) >= 2, cluster.nodes[3].log_tail()
    assert opened[-1]["height"] >= 1 and opened[-1]["store_s"] >= 0, opened[-1]
    # with the write buffer its testnet gave it
    opening = cluster.nodes[3].log_records("opening the chain store")
    expected = staggered_write_buffer_mb(3, VALIDATORS + OBSERVERS)
    assert opening[-1]["write_buffer_mb"] == expected, opening[-1]
    cluster.wait_height(before, [3], timeout_s=60)
    assert_same_chain(cluster, [0, 1, 2, 3])
    assert_acked_present(cluster, writer, [3])


def test_validator_killed_under_load_loses_nothing(cluster: Cluster) -> None:
    writer = Writer(cluster)
    results: list[int] = []
    load = threading.Thread(
        target=lambda: results.append(writer.write_many(300, "kill", nodes=[0, 1, 2]))
    )
    load.start()
    wait_until("some writes acknowledged", lambda: len(writer.acked) >= 50, 60)
    cluster.kill(3)
    load.join(timeout=120)
    assert not load.is_alive()
    assert results == [300], "writes to the live validators must all be acknowledged"
    cluster.start(3)
    cluster.wait_ready([3], timeout_s=60)
    cluster.wait_height(cluster.nodes[0].height(), [3], timeout_s=60)
    assert_same_chain(cluster, [0, 1, 2, 3])
    assert_acked_present(cluster, writer, [0, 1, 2, 3])


def test_primary_killed_view_change_and_chain_continues(cluster: Cluster) -> None:
    status = cluster.nodes[0].status()
    primary = next(
        i for i, n in enumerate(cluster.nodes) if n.status()["node_id"] == status["primary"]
    )
    view_before = status["view"]
    cluster.kill(primary)
    live = [i for i in range(VALIDATORS) if i != primary]
    writer = Writer(cluster)
    assert writer.write_many(50, "viewchange", nodes=live) == 50
    assert all(cluster.nodes[i].status()["view"] > view_before for i in live)
    cluster.start(primary)
    cluster.wait_ready([primary], timeout_s=60)
    cluster.wait_height(cluster.nodes[live[0]].height(), [primary], timeout_s=60)
    assert_same_chain(cluster, list(range(VALIDATORS)))
    assert_acked_present(cluster, writer, [primary])


def test_bad_api_input_never_crashes_a_node(cluster: Cluster) -> None:
    node = cluster.nodes[0]
    bad = [
        ("POST", "/txs", b"", "application/msgpack", 400),
        ("POST", "/txs", b"\xc1\xff garbage", "application/msgpack", 400),
        ("POST", "/txs", b"{not json", "application/json", 400),
        ("POST", "/txs/batch", b"{}", "application/json", 400),
        ("GET", "/blocks/-1", None, None, 400),
        ("GET", "/blocks/99999999999999999999999", None, None, 400),
        ("GET", "/txs/zz", None, None, 400),
        ("GET", "/nope", None, None, 404),
    ]
    with httpx.Client(base_url=node.api, timeout=10) as http:
        for method, path, body, ctype, expected in bad:
            headers = {"content-type": ctype} if ctype else {}
            r = http.request(method, path, content=body, headers=headers)
            assert r.status_code == expected, (method, path, r.status_code, r.text)
            assert "error" in r.json()
        r = http.post(
            "/txs",
            content=b"x" * (9 * 1024 * 1024),
            headers={"content-type": "application/msgpack"},
        )
        assert r.status_code == 413
    assert node.running and node.is_ready()


def test_cli_against_the_cluster(cluster: Cluster, tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    api = cluster.nodes[1].api
    cli = [sys.executable, "-m", "node.cli"]
    put = subprocess.run(
        [*cli, "record", "put", "cli-key", "cli-value", "--key", str(cluster.client_key(1)),
         "--node", api, "--agency", "agency1", "--wait"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert put.returncode == 0, put.stderr
    assert json.loads(put.stdout)["height"] >= 1
    get = subprocess.run(
        [*cli, "record", "get", "agency1", "cli-key", "--node", cluster.nodes[2].api],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert get.returncode == 0 and json.loads(get.stdout)["value"] == "cli-value"
    bad = subprocess.run(
        [*cli, "record", "put", "k", "v", "--key", str(tmp_path / "missing.key"), "--node", api],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
