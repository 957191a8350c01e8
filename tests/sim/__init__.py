"""Deterministic simulation of Redwood's PBFT replica (TigerBeetle's VOPR, in miniature).

- `packet_simulator`: seeded network (delay, reordering, loss, duplication,
  symmetric/asymmetric partitions, clogging, bounded paths);
- `sim_node`: the node's driver around one replica (persist -> send -> apply
  -> advance, with crashes between any two steps, unsynced journal writes
  lost), mempool, toy state, catch-up answers, membership changes;
- `byzantine`: equivocation, conflicting votes, bad signatures, replays,
  malformed and oversized messages, silence, forged catch-up blocks, lies about
  the state root, forged VIEW-CHANGE certificates, collusion; Twins;
- `state_checker`: agreement, certificates (per epoch), chain links, state
  claims, checkpoints, no equivocation by correct replicas, votes durable
  before they leave, evidence that proves what it claims;
- `cluster`: one seed -> one fault profile -> one exactly replayable run,
  ending with a liveness check after every fault heals;
- `fake_crypto`: a fast MAC stand-in for Ed25519 (real Ed25519 on some seeds);
- `toy_replica`: a tiny replica that tests the simulator itself;
- `adapter`: builds the real replica from a simulated node's durable state.

Run a sweep: `pytest tests/sim --sim-seeds N [--sim-seed-start S]` or
`python -m tests.sim.sweep --seeds N --start S [--jobs 2]`. Replay one seed:
`pytest tests/sim/test_sweep.py::test_replay --sim-seed-start SEED --sim-seeds 1`.
"""
