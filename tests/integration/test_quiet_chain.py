"""A quiet chain still certifies its newest state: one write, then nothing.

The header of block h + pipeline_depth carries the state root of height h, so
without later blocks the newest records could never be proven. After a block
with transactions the primary proposes empty blocks (one per
`block_interval_ms`) until that state is claimed by a committed header
(node/driver.py). Here a single write on an otherwise idle 4-validator chain
must become provable, and the proof must verify offline from genesis.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from node.client import Client, ClientError
from node.genesis import Genesis
from node.proofs import verify_bundle
from storage.keyfile import read_key
from tests.integration.harness import Cluster, wait_until


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    c.create()
    with c.running():
        yield c


def test_one_write_on_an_idle_chain_becomes_provable(cluster: Cluster) -> None:
    genesis = Genesis.load(cluster.nodes[0].home / "config" / "genesis.json")
    depth = genesis.params.pipeline_depth
    key = read_key(cluster.client_key(2))
    with Client(cluster.nodes[1].api, timeout=30) as client:
        put = client.put(key, "agency2", "lonely", "the only write", wait=True, timeout=30)
        written = int(put["height"])

        def proven() -> bool:
            try:
                bundle = client.get_record_proof("agency2", "lonely")
            except ClientError as exc:
                if exc.status == 503:
                    return False  # no header claims any state yet
                raise
            return bool(bundle["value"] == b"the only write".hex())

        wait_until("the write is provable", proven, timeout_s=30)
        bundle = client.get_record_proof("agency2", "lonely")
    assert verify_bundle(bundle, genesis).startswith("record ('agency2', key 'lonely')")
    assert bundle["height"] == written and bundle["state_height"] >= written
    heights = [cluster.nodes[i].height() for i in range(4)]
    # empty blocks stop once the write's state is claimed: no endless chain of them
    assert max(heights) <= written + depth + 1, heights
