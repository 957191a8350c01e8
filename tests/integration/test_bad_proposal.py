"""A primary that proposes a transaction with a bad signature gets no votes.

Validators check the transaction signatures of every proposal before the
replica may vote for it (node/service.py `_proposal_signatures_ok`), which is
what lets every node execute committed blocks without checking signatures
again. Here the primary of view 0 is the test-only Byzantine node
(tests/faults/byzantine_node.py `--bad-tx-signature`): each block it proposes
has its first transaction's signature damaged (a well-formed PRE-PREPARE
otherwise). The three correct validators must refuse it, change view and
commit the clients' writes under another primary, and the damaged
transaction must never be committed anywhere.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from node import txs as txlib
from node.client import Client, ClientError
from node.config import load_config
from node.genesis import Genesis
from storage.keyfile import read_key
from tests.integration.harness import Cluster, NodeProc, wait_until

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[Cluster, int]]:
    c = Cluster(tmp_path)
    c.create()
    first = Genesis.load(c.nodes[0].home / "config" / "genesis.json").validator_set()
    primary0 = first.validators[0]
    byz = next(
        n.index for n in c.nodes if read_key(load_config(n.home).key_path).public == primary0
    )
    for n in c.nodes:
        if n.index != byz:
            c.start(n.index)
    node = c.nodes[byz]
    node.log_file = open(node.home / "node.log", "ab")  # noqa: SIM115 (closed by stop)
    env = {**os.environ, "REDWOOD_LOG_FORMAT": "json"}
    node.proc = subprocess.Popen(
        [sys.executable, "-m", "tests.faults.byzantine_node", "--home", str(node.home),
         "--bad-tx-signature"],
        stdout=node.log_file, stderr=subprocess.STDOUT, env=env, cwd=REPO,
    )  # fmt: skip
    try:
        c.wait_ready(timeout_s=60)
        yield c, byz
    finally:
        for n in c.nodes:
            if n.proc is not None and n.proc.poll() is None:
                n.proc.send_signal(signal.SIGTERM)
        c.stop_all()


def _damaged_hashes(node: NodeProc) -> list[str]:
    return [doc["tx_hash"] for doc in node.log_records("damaged") if "tx_hash" in doc]


def test_correct_validators_refuse_a_proposal_with_a_bad_tx_signature(
    cluster: tuple[Cluster, int],
) -> None:
    c, byz = cluster
    honest = [i for i in range(4) if i != byz]
    key = read_key(c.client_key(1))
    height = max(c.nodes[i].height() for i in honest)
    with Client(c.nodes[honest[0]].api, timeout=30) as client:
        for i in range(6):
            tx = txlib.build(key, c.chain_id, "put", "agency1", f"k{i}", f"v{i}", height + 500)
            client.submit(tx)
        # every write commits, under a correct primary after a view change
        deadline = time.monotonic() + 90
        for i in range(6):
            wait_until(
                f"k{i} committed",
                lambda i=i: _committed(client, f"k{i}"),
                max(1.0, deadline - time.monotonic()),
            )
    damaged = _damaged_hashes(c.nodes[byz])
    assert damaged, "the Byzantine primary never proposed (it should be the primary of view 0)"
    for i in honest:
        status = c.nodes[i].status()
        assert status["view"] >= 1, f"node{i} never left the Byzantine primary's view"
        for h in damaged:
            r = c.nodes[i].get(f"/txs/{h}")
            assert r.status_code == 404, f"node{i} committed the damaged tx {h}: {r.text}"
    assert_same_blocks(c, honest)


def _committed(client: Client, key: str) -> bool:
    try:
        return client.get_record("agency1", key) is not None
    except ClientError as exc:
        if exc.status == 404:
            return False  # not committed yet
        raise


def assert_same_blocks(c: Cluster, nodes: list[int]) -> None:
    top = min(c.nodes[i].height() for i in nodes)
    reference = c.block_hashes(nodes[0], top)
    for i in nodes[1:]:
        assert c.block_hashes(i, top) == reference, f"node{i} diverges"
