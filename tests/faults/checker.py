"""The end-of-run checker: trusts nothing a node says about itself beyond the data it serves.

`check(cluster, acked, honest, byzantine_ids)` reads every honest node over
HTTP and returns a `Verdict` listing violations (empty means the run passed):

- identical block hash and state root at every height 1..top on every honest node;
- every commit-certificate signature verifies (Ed25519, COMMIT domain) and the
  certificate's digest is the block's hash;
- no honest validator signed two different digests for one (view, height) in
  any certificate served by any honest node, nor appears in anyone's evidence;
- every piece of evidence carries two validly signed, conflicting votes;
- every acknowledged write is in a block (its tx hash) and is served with its
  value by every honest node.
"""

from __future__ import annotations

from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx

from consensus import codec
from consensus.certificates import NO_SIGNATURE
from consensus.crypto import verify
from consensus.types import Commit, signed_payload
from tests.faults.harness import FaultCluster
from tests.faults.scenarios import CATCH_UP_S, wait_for
from tests.faults.workload import Ack

FETCH_THREADS = 8
VIOLATIONS_SHOWN_MAX = 30


@dataclass
class Verdict:
    violations: list[str] = field(default_factory=list)
    top: int = 0
    heights_checked: int = 0
    divergent_heights: int = 0
    lost_writes: int = 0
    evidence_against: dict[str, int] = field(default_factory=dict)  # replica hex -> count

    def add(self, text: str) -> None:
        self.violations.append(text)


def _fetch_all(cluster: FaultCluster, node: int, paths: list[str]) -> list[httpx.Response]:
    """GET many paths from one node, a few at a time (inside the cluster's namespace)."""
    api = cluster.nodes[node].api
    chunks = [paths[i : i + 200] for i in range(0, len(paths), 200)]
    futures = [cluster.spawn(lambda c=c: _get_many(api, c)) for c in chunks]
    out: list[httpx.Response] = []
    for f in futures:
        out.extend(f.result())
    return out


def _get_many(api: str, paths: list[str]) -> list[httpx.Response]:
    with httpx.Client(base_url=api, timeout=10) as client:
        return [client.get(p) for p in paths]


def _commit_sig_ok(chain_id: str, cert: dict[str, Any], sig: dict[str, Any]) -> bool:
    try:
        replica = bytes.fromhex(sig["replica"])
        vote = Commit(cert["view"], cert["height"], bytes.fromhex(cert["digest"]), replica,
                      NO_SIGNATURE)  # fmt: skip
        return verify(replica, bytes.fromhex(sig["signature"]), Commit.DOMAIN, chain_id,
                      signed_payload(vote))  # fmt: skip
    except (ValueError, KeyError, TypeError):
        return False


def _vote_ok(chain_id: str, raw: bytes) -> Any:
    """The decoded vote if its signature verifies, else None."""
    try:
        vote = codec.decode(raw)
        ok = verify(vote.replica, vote.signature, vote.DOMAIN, chain_id, signed_payload(vote))
    except Exception:  # any undecodable evidence is reported
        return None
    return vote if ok else None


def check(
    cluster: FaultCluster,
    acked: list[Ack],
    honest: list[int],
    byzantine_ids: set[str],
    settle_s: float = CATCH_UP_S,
) -> Verdict:
    verdict = Verdict()
    chain_id = cluster.chain_id

    def read() -> dict[int, int]:
        return {i: int(cluster.get_json(i, "/status")["height"]) for i in honest}

    # The chain is still live here (after the last transactions the primary proposes
    # empty blocks until their state is certified), and nodes apply a new block a few
    # ms apart: reads of different nodes at different instants can straddle one. So
    # read until they agree, bounded; a node that is really behind never does.
    agreed, _ = wait_for(
        "honest nodes agree on the height",
        lambda: h if len(set((h := read()).values())) == 1 else None,
        settle_s,
    )
    heights = agreed if agreed is not None else read()
    top = min(heights.values())
    verdict.top = top
    if len(set(heights.values())) != 1:
        verdict.add(f"honest nodes end at different heights: {heights}")
    paths = [f"/blocks/{h}" for h in range(1, top + 1)]
    with ThreadPoolExecutor(FETCH_THREADS) as pool:
        per_node = dict(zip(honest, pool.map(lambda i: _fetch_all(cluster, i, paths), honest),
                            strict=True))  # fmt: skip
    honest_ids = {cluster.nodes[i].node_id for i in honest if cluster.nodes[i].validator}
    signed: dict[tuple[str, int, int], set[str]] = defaultdict(set)
    tx_hashes: set[str] = set()
    for h in range(1, top + 1):
        seen: dict[tuple[str, str], list[int]] = defaultdict(list)
        for i in honest:
            resp = per_node[i][h - 1]
            if resp.status_code != 200:
                verdict.add(f"node{i}: GET /blocks/{h} answered {resp.status_code}")
                continue
            block = resp.json()
            seen[(block["hash"], block["state_root"])].append(i)
            cert = block["certificate"]
            if cert["digest"] != block["hash"] or cert["height"] != h:
                verdict.add(f"node{i}: height {h}: certificate is for another block")
            for sig in cert["signatures"]:
                if not _commit_sig_ok(chain_id, cert, sig):
                    verdict.add(
                        f"node{i}: height {h}: bad commit signature by {sig['replica'][:16]}"
                    )
                    continue
                signed[(sig["replica"], cert["view"], h)].add(cert["digest"])
            tx_hashes.update(block.get("tx_hashes", ()))
        verdict.heights_checked += 1
        if len(seen) > 1:
            verdict.divergent_heights += 1
            verdict.add(f"height {h}: honest nodes disagree: {dict(seen)}")
    for (replica, view, h), digests in signed.items():
        if len(digests) > 1 and replica in honest_ids:
            verdict.add(
                f"honest {replica[:16]} signed {len(digests)} digests at view {view} height {h}"
            )
    _check_evidence(cluster, honest, honest_ids, byzantine_ids, verdict)
    _check_writes(cluster, acked, honest, tx_hashes, verdict)
    return verdict


def _check_evidence(
    cluster: FaultCluster, honest: list[int], honest_ids: set[str], byzantine_ids: set[str],
    verdict: Verdict,
) -> None:  # fmt: skip
    for i in honest:
        for ev in cluster.get_json(i, "/evidence")["evidence"]:
            first = _vote_ok(cluster.chain_id, bytes.fromhex(ev["first"]))
            second = _vote_ok(cluster.chain_id, bytes.fromhex(ev["second"]))
            if first is None or second is None:
                verdict.add(f"node{i}: evidence against {ev['replica'][:16]} does not verify")
                continue
            same = (first.replica, first.view, first.height) == (second.replica, second.view,
                                                                 second.height)  # fmt: skip
            if (
                not same
                or first.replica.hex() != ev["replica"]
                or codec.encode(first) == codec.encode(second)
            ):
                verdict.add(f"node{i}: evidence against {ev['replica'][:16]} is not a conflict")
            if ev["replica"] in honest_ids:
                verdict.add(f"node{i}: evidence against honest validator {ev['replica'][:16]}")
            verdict.evidence_against[ev["replica"]] = (
                verdict.evidence_against.get(ev["replica"], 0) + 1
            )
    del byzantine_ids


def _check_writes(
    cluster: FaultCluster, acked: list[Ack], honest: list[int], tx_hashes: set[str],
    verdict: Verdict,
) -> None:  # fmt: skip
    lost: set[str] = set()
    for ack in acked:
        if ack.tx_hash not in tx_hashes:  # an acknowledgement without a hash counts as lost
            lost.add(ack.key)
            verdict.add(
                f"acknowledged {ack.agency}/{ack.key} (tx {ack.tx_hash[:16]}) is in no block"
            )
    paths = [f"/records/{a.agency}/{a.key}" for a in acked]
    for i in honest:
        answers = _fetch_all(cluster, i, paths)
        for ack, resp in zip(acked, answers, strict=True):
            value = resp.json().get("value") if resp.status_code == 200 else None
            if value != ack.value:
                lost.add(ack.key)
                verdict.add(f"node{i}: acknowledged {ack.agency}/{ack.key}={ack.value!r} "
                            f"is served as {value!r} ({resp.status_code})")  # fmt: skip
    verdict.lost_writes = len(lost)


def summary(verdict: Verdict) -> str:
    shown = verdict.violations[:VIOLATIONS_SHOWN_MAX]
    more = len(verdict.violations) - len(shown)
    return "\n".join(shown + ([f"... and {more} more"] if more > 0 else []))
