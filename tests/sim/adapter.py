"""Builds the real `consensus.replica.Replica` for a simulated node, as the node does at start.

The `Restored` comes only from what the simulated node made durable (its
journal and committed chain), never from the previous replica object.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

from consensus.replica import Replica, ReplicaConfig, Restored, ValidatorSet

if TYPE_CHECKING:
    from tests.sim.sim_node import SimNode

GENESIS_TIME_MS = 0


def epochs(node: SimNode) -> tuple[tuple[int, ValidatorSet], ...]:
    """The epochs the node's durable chain knows of (governance changes it executed)."""
    known = node.cluster.epochs_known_at(node.height)
    return tuple((first, ValidatorSet(epoch=e, validators=members)) for first, e, members in known)


def replica_config(cluster: Any) -> ReplicaConfig:
    o = cluster.options
    return ReplicaConfig(
        chain_id=cluster.chain_id,
        pipeline_depth=o.pipeline_depth,
        checkpoint_interval=o.checkpoint_interval,
        view_change_timeout_ticks=o.view_change_timeout_ticks,
    )


def restored(node: SimNode) -> Restored:
    cluster = node.cluster
    depth = cluster.options.pipeline_depth
    height = node.height
    timestamp = node.chain[-1].block.header.timestamp_ms if node.chain else GENESIS_TIME_MS
    roots = {h: node.roots[h] for h in range(max(0, height - depth), height + 1)}
    return Restored(
        committed_height=height,
        committed_hash=node.head_hash(),
        committed_timestamp_ms=timestamp,
        state_roots=roots,
        journal=dict(node.journal),
        epochs=epochs(node),
    )


def make_replica(node: SimNode) -> Replica:
    cluster = node.cluster
    rng = random.Random(f"replica/{cluster.seed}/{node.slot}/{node.restarts}")
    signer = None if node.observer else node.key
    return Replica(replica_config(cluster), restored(node), signer, cluster.verifier, rng)
