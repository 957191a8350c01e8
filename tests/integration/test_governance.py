"""Governance on a live chain: agencies vote a 5th validator in, then one out; proofs follow.

Four validators and one observer run as separate `redwood start` processes.
The agencies vote to promote the observer (its node id is already on every
node's allowlist); from the epoch's first height its COMMIT signatures appear
in certificates (with node2 stopped, 4 of the 5 must sign, so every
certificate needs it). Then they vote node3 out; node3 is stopped too and the
chain keeps committing with three of the new set of four (its quorum). node2
restarts, catches up across the epoch boundary it did not see, and (node1
now stopped) signs every block. A record
written after both changes is proven with `redwood record get --proof` and
checked with `redwood verify` against nothing but the genesis file.

The genesis is rewritten before the first start with a checkpoint interval of
8 blocks so that epoch boundaries come quickly.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from node import governance
from node.client import Client
from node.genesis import Genesis
from storage.keyfile import read_key
from tests.integration.harness import Cluster

VALIDATORS = 4
NEWCOMER = 4  # the observer's index
REMOVED = 3
RESTARTED = 2
CHECKPOINT_INTERVAL = 8


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("gov"), validators=VALIDATORS, observers=1)
    c.create()
    for node in c.nodes:  # same edit on every node: one genesis
        path = node.home / "config" / "genesis.json"
        doc = json.loads(path.read_text())
        doc["params"]["checkpoint_interval"] = CHECKPOINT_INTERVAL
        path.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    with c.running():
        yield c


def node_id(cluster: Cluster, i: int) -> bytes:
    return read_key(cluster.nodes[i].home / "config" / "node_key").public


def vote(cluster: Cluster, action: bytes, api: str) -> dict[str, Any]:
    """agency0 proposes, agency1 and agency2 approve (3 of 4 agencies >= 2/3); returns it."""
    keys = [read_key(cluster.client_key(a)) for a in range(3)]
    with Client(api, timeout=60) as client:
        client.gov_propose(keys[0], "agency0", action, wait=True, timeout=30)
        wanted = governance.describe(governance.decode_action(action))
        pid = max(p["id"] for p in client.gov_proposals()["proposals"] if p["action"] == wanted)
        for a in (1, 2):
            answer = client.gov_approve(keys[a], f"agency{a}", pid, wait=True, timeout=30)
            assert answer["status_code"] == 0, answer
        proposal = next(p for p in client.gov_proposals()["proposals"] if p["id"] == pid)
    assert proposal["status"] == "passed", proposal
    return proposal


def redwood(*args: str) -> str:
    """Run the CLI; return its stdout (fails the test on a non-zero exit)."""
    done = subprocess.run(
        [sys.executable, "-m", "node.cli", *args], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def vote_with_cli(cluster: Cluster, args: list[str], api: str) -> dict[str, Any]:
    """The same vote through `redwood gov propose|approve|list`."""
    key = [str(cluster.client_key(a)) for a in range(3)]
    proposed = json.loads(redwood("gov", "propose", *args, "--key", key[0], "--agency", "agency0",
                                  "--wait", "--node", api))  # fmt: skip
    pid = proposed["proposal"]["id"]
    for a in (1, 2):
        redwood("gov", "approve", str(pid), "--key", key[a], "--agency", f"agency{a}", "--wait",
                "--node", api)  # fmt: skip
    listing = json.loads(redwood("gov", "list", "--node", api))
    proposal = next(p for p in listing["proposals"] if p["id"] == pid)
    assert proposal["status"] == "passed" and proposal["approvals"] == [
        "agency0", "agency1", "agency2"
    ], proposal  # fmt: skip
    return proposal


def write_until(cluster: Cluster, api: str, height: int, prefix: str) -> None:
    """Commit small writes through `api` until its node is at `height` or above."""
    key = read_key(cluster.client_key(0))
    with Client(api, timeout=60) as client:
        i = 0
        while client.status()["height"] < height:
            client.put(key, "agency0", f"{prefix}-{i}", "filler", wait=True, timeout=30)
            i += 1
            assert i < 500, "the chain does not advance"


def signers(cluster: Cluster, api: str, first: int, last: int) -> set[str]:
    out: set[str] = set()
    with Client(api) as client:
        for h in range(first, last + 1):
            cert = client.get_block(h)["certificate"]
            out.update(s["replica"] for s in cert["signatures"])
    return out


def test_agencies_add_then_remove_a_validator_and_proofs_verify_from_genesis(
    cluster: Cluster, tmp_path: Path
) -> None:
    api0 = cluster.nodes[0].api
    newcomer = node_id(cluster, NEWCOMER)
    removed = node_id(cluster, REMOVED)
    vote(cluster, governance.encode_action("add_validator", newcomer, "agency0", "node4", ""), api0)
    with Client(api0) as client:
        (epoch1,) = client.gov_proposals()["epochs"]
    first = epoch1["first_height"]
    assert epoch1["epoch"] == 1 and newcomer.hex() in epoch1["validators"]
    write_until(cluster, api0, first + 2, "grow")
    cluster.wait_height(first + 2, [NEWCOMER], timeout_s=60)  # it caught up
    with Client(api0) as client:
        assert client.get_block(first)["certificate"]["epoch"] == 1
    # With node2 down, 4 of the 5 must sign every block: the newcomer's signature is needed.
    assert cluster.stop(RESTARTED) == 0
    down_at = cluster.nodes[0].height()
    write_until(cluster, api0, down_at + 6, "needs-newcomer")
    with Client(api0) as client:
        for h in range(down_at + 1, down_at + 7):
            cert = client.get_block(h)["certificate"]
            assert cert["epoch"] == 1
            assert newcomer.hex() in {s["replica"] for s in cert["signatures"]}, h

    vote_with_cli(cluster, ["remove-validator", removed.hex()], api0)
    with Client(api0) as client:
        epoch2 = client.gov_proposals()["epochs"][1]
    second = epoch2["first_height"]
    assert removed.hex() not in epoch2["validators"]
    write_until(cluster, api0, second, "shrink")
    cluster.stop(REMOVED)
    write_until(cluster, api0, second + 6, "after")  # 3 of the new 4 are up: a quorum
    assert removed.hex() not in signers(cluster, api0, second, second + 6)

    # node2 missed the second change: it restarts and catches up across that boundary,
    # then (with node1 down) its signature is needed for every block.
    cluster.start(RESTARTED)
    cluster.wait_ready([RESTARTED], timeout_s=60)
    cluster.wait_height(cluster.nodes[0].height(), [RESTARTED], timeout_s=60)
    assert cluster.stop(1) == 0
    back = cluster.nodes[0].height()
    write_until(cluster, api0, back + 6, "back")
    restarted = node_id(cluster, RESTARTED).hex()
    with Client(api0) as client:
        for h in range(back + 1, back + 7):
            cert = client.get_block(h)["certificate"]
            assert cert["epoch"] == 2 and restarted in {s["replica"] for s in cert["signatures"]}

    key = read_key(cluster.client_key(1))
    with Client(api0, timeout=60) as client:
        put = client.put(
            key, "agency1", "permit/42", "granted after both changes", wait=True, timeout=30
        )
    write_until(cluster, api0, cluster.nodes[0].height() + 6, "claim")  # a header claims it
    proof = tmp_path / "proof.json"
    genesis_path = cluster.nodes[0].home / "config" / "genesis.json"
    cmd = [sys.executable, "-m", "node.cli", "record", "get", "agency1", "permit/42"]
    done = subprocess.run(
        [*cmd, "--node", cluster.nodes[NEWCOMER].api, "--proof", str(proof)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    bundle = json.loads(proof.read_text())
    assert [e["epoch"] for e in bundle["epochs"]] == [1, 2]
    assert not bundle["current"]["changed_after_proof"]
    done = subprocess.run(
        [sys.executable, "-m", "node.cli", "verify", str(proof), "--genesis", str(genesis_path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("valid: record ('agency1', key 'permit/42')"), done.stdout
    assert "2 epoch change(s) from genesis" in done.stdout
    with Client(api0) as client:  # the client checks proofs too
        checked = client.get_record("agency1", "permit/42", verify_with=Genesis.load(genesis_path))
    assert bytes.fromhex(checked["value"]) == b"granted after both changes"
    with Client(cluster.nodes[NEWCOMER].api) as client:  # transaction inclusion, verified
        tx = client.get_tx(put["tx_hash"], verify_with=Genesis.load(genesis_path))
    assert tx["verified"].startswith(f"transaction {put['tx_hash']} is #")
