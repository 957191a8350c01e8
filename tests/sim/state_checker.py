"""The simulator's judge: safety invariants checked on every send and every commit.

Modelled on TigerBeetle's `state_checker.zig`: every correct replica's
committed history is compared with one agreed history as it grows, so a
violation is caught at the event that causes it, not at the end of the run.

Invariants (a `Violation` names which one broke):

- `agreement`: no two correct replicas commit different blocks at one height;
- `certificate`: every block a correct replica commits carries a commit
  certificate of at least q distinct validators of its epoch, each signature
  verified, for exactly that (height, digest);
- `chain`: committed blocks come in height order, each linked to the previous
  one by `parent_hash` (what `ChainStore.commit_block` would refuse), with
  timestamps that never go backwards;
- `state_claim`: a committed non-null block claims the agreed state root after
  `state_height`;
- `checkpoint`: correct replicas sign the same state root for one height, and
  the checkpoints they report stable carry the agreed state root;
- `equivocation`: no correct replica signs two votes with the same (kind, view,
  height) and different digests -- watched on every message it emits,
  across crashes and restarts;
- `vote_durable`: when a correct replica's vote leaves, the journal already
  holds (durably) the record that stops it signing another digest after a
  crash (`consensus.journal_codec`; the cause of `equivocation`, caught before
  a crash at the wrong moment turns it into one);
- `evidence`: evidence a correct replica reports holds two validly signed,
  conflicting votes of the accused, and never accuses a correct replica.

Liveness is the cluster's job (it knows when faults heal); see `cluster.py`.
Byzantine and twin replicas are "faulty": their commits and votes are not
judged, their signatures still count toward certificates.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from consensus import codec, journal_codec
from consensus.crypto import ZERO_HASH, Domain, Verifier
from consensus.types import (
    CertifiedBlock,
    Checkpoint,
    Commit,
    Evidence,
    NewView,
    Prepare,
    PrePrepare,
    VoteKind,
    signed_payload,
)

MAX_CERTIFICATE_CACHE = 100_000


class Violation(AssertionError):
    """A broken invariant. `kind` is the invariant's name; `str()` says what, where and when."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


class StateChecker:
    """Judges one cluster; `now_ms` is updated by the cluster before each event."""

    def __init__(
        self,
        *,
        chain_id: str,
        validators: tuple[bytes, ...],
        quorum: int,
        epoch: int,
        verifier: Verifier,
        genesis_hash: bytes,
        genesis_root: bytes,
    ) -> None:
        self.chain_id = chain_id
        # (first height, epoch, members, quorum), ascending
        self.epochs: list[tuple[int, int, frozenset[bytes], int]] = [
            (1, epoch, frozenset(validators), quorum)
        ]
        self.verifier = verifier
        self.genesis_hash = genesis_hash
        self.now_ms = 0
        self.agreed: dict[int, tuple[bytes, str]] = {}  # height -> (block hash, first committer)
        self.agreed_roots: dict[int, bytes] = {0: genesis_root}
        self._votes: dict[tuple[bytes, int, int, int], bytes] = {}
        self._checkpoints: dict[int, tuple[bytes, str]] = {}
        self._good_certs: set[tuple[Any, ...]] = set()
        self.stats: Counter[str] = Counter()

    def add_epoch(self, first_height: int, epoch: int, validators: tuple[bytes, ...]) -> None:
        """A membership change every correct node will make (known to the test in advance)."""
        assert first_height > self.epochs[-1][0] and epoch > self.epochs[-1][1]
        n = len(validators)
        quorum = (n + (n - 1) // 3) // 2 + 1
        self.epochs.append((first_height, epoch, frozenset(validators), quorum))

    def _epoch_at(self, height: int) -> tuple[int, int, frozenset[bytes], int]:
        return [e for e in self.epochs if e[0] <= max(1, height)][-1]

    def fail(self, kind: str, detail: str) -> None:
        raise Violation(kind, f"at t={self.now_ms} ms: {detail}")

    # -- what correct replicas send ---------------------------------------------

    def on_send(
        self,
        sender: str,
        sender_id: bytes,
        message: object,
        journal: dict[bytes, bytes] | None = None,
        durable_from: tuple[int, int, int] = (0, 0, 0),
    ) -> None:
        """A correct replica emitted `message` (before any network fault touches it).

        `journal` is its durable journal at that moment (None: not checked).
        `durable_from` = (view, stable height, committed height) of the replica:
        records of older views and of heights at or below the stable checkpoint
        are garbage-collected.
        """
        view, stable, _committed = durable_from
        if isinstance(message, PrePrepare | Prepare | Commit):
            self._vote(sender, sender_id, message)
            if journal is not None and message.view >= view and message.height > stable:
                self._durable(sender, sender_id, message, journal)
        elif isinstance(message, NewView):
            for pp in message.pre_prepares:
                self._vote(sender, sender_id, pp)
                if journal is not None and pp.height > stable:
                    self._durable(sender, sender_id, pp, journal)
        elif isinstance(message, Checkpoint) and message.replica == sender_id:
            self._checkpoint(sender, message)

    def _vote(self, sender: str, sender_id: bytes, vote: PrePrepare | Prepare | Commit) -> None:
        if vote.replica != sender_id:
            return  # a vote it forwards, not one it signed
        kind = _KIND[type(vote)]
        key = (sender_id, kind, vote.view, vote.height)
        digest = vote.digest
        seen = self._votes.setdefault(key, digest)
        self.stats["votes"] += 1
        if seen != digest:
            self.fail(
                "equivocation",
                f"correct replica {sender} signed {VoteKind(kind).name} view={vote.view} "
                f"height={vote.height} for {seen.hex()[:12]} and {digest.hex()[:12]}",
            )

    def _durable(
        self,
        sender: str,
        sender_id: bytes,
        vote: PrePrepare | Prepare | Commit,
        journal: dict[bytes, bytes],
    ) -> None:
        if vote.replica != sender_id:
            return
        kind = int(_KIND[type(vote)])
        key = journal_codec.vote_key(kind, vote.view, vote.height)
        if journal.get(key) != journal_codec.encode_vote(kind, vote.view, vote.height, vote.digest):
            self.fail(
                "vote_durable",
                f"{sender} sent {VoteKind(kind).name} view={vote.view} height={vote.height} "
                "before its journal record was persisted",
            )

    def _checkpoint(self, sender: str, cp: Checkpoint) -> None:
        first = self._checkpoints.setdefault(cp.height, (cp.state_root, sender))
        if first[0] != cp.state_root:
            self.fail(
                "checkpoint",
                f"{sender} checkpoints height {cp.height} with root {cp.state_root.hex()[:12]}, "
                f"{first[1]} with {first[0].hex()[:12]}",
            )

    # -- accountability --------------------------------------------------------------

    def on_evidence(self, node: str, ev: Evidence, correct_ids: frozenset[bytes]) -> None:
        """A correct replica reported `ev`: it must prove what it claims."""
        accused = ev.replica.hex()[:12]
        if ev.replica in correct_ids:
            self.fail("evidence", f"{node} accuses correct replica {accused}")
        cls = _CLASS_OF_KIND.get(ev.kind)
        if cls is None:
            self.fail("evidence", f"{node} reports evidence of unknown kind {ev.kind}")
        votes = []
        for raw in (ev.first, ev.second):
            try:
                vote = codec.decode(raw, cls)
            except codec.DecodeError as exc:
                self.fail("evidence", f"{node} reports an undecodable vote: {exc}")
            same = (vote.replica, vote.view, vote.height) == (ev.replica, ev.view, ev.height)
            ok = self.verifier.verify(
                vote.replica, vote.signature, vote.DOMAIN, self.chain_id, signed_payload(vote)
            )
            if not same or not ok:
                self.fail("evidence", f"{node} reports a vote that does not prove it ({accused})")
            votes.append(vote)
        if votes[0].digest == votes[1].digest:
            self.fail("evidence", f"{node} reports two equal votes as evidence against {accused}")
        self.stats["evidence_checked"] += 1

    # -- what replicas commit ------------------------------------------------------

    def check_link(
        self,
        node: str,
        head_height: int,
        head_hash: bytes,
        cb: CertifiedBlock,
        head_timestamp_ms: int = 0,
    ) -> None:
        """The block extends the node's chain (checked for every replica, faulty ones too)."""
        header = cb.block.header
        if header.height != head_height + 1:
            self.fail("chain", f"{node} committed height {header.height} on head {head_height}")
        if header.parent_hash != head_hash:
            self.fail(
                "chain", f"{node} committed height {header.height} whose parent is not its head"
            )
        if header.timestamp_ms < head_timestamp_ms:
            self.fail(
                "chain",
                f"{node} committed height {header.height} with timestamp {header.timestamp_ms} "
                f"below its parent's {head_timestamp_ms}",
            )

    def on_stable(self, node: str, height: int, state_root: bytes) -> None:
        """A correct replica reports checkpoint `height` stable with `state_root`."""
        agreed = self.agreed_roots.get(height)
        if agreed is not None and agreed != state_root:
            self.fail(
                "checkpoint",
                f"{node} reports height {height} stable with root {state_root.hex()[:12]}, "
                f"agreed root is {agreed.hex()[:12]}",
            )
        self.stats["stable_checkpoints"] += 1

    def on_commit(self, node: str, cb: CertifiedBlock, state_root: bytes) -> None:
        """A correct replica committed `cb` and its state root after it is `state_root`."""
        block = cb.block
        height = block.header.height
        digest = block.hash()
        self._check_certificate(node, cb, digest)
        agreed = self.agreed.setdefault(height, (digest, node))
        if agreed[0] != digest:
            self.fail(
                "agreement",
                f"height {height}: {node} committed {digest.hex()[:12]}, "
                f"{agreed[1]} committed {agreed[0].hex()[:12]}",
            )
        root = self.agreed_roots.setdefault(height, state_root)
        assert root == state_root, "equal chains give equal toy states"
        self._check_state_claim(node, cb)
        self.stats["commits"] += 1

    def _check_state_claim(self, node: str, cb: CertifiedBlock) -> None:
        header = cb.block.header
        if header.is_null or header.state_root == ZERO_HASH:
            return
        agreed = self.agreed_roots.get(header.state_height)
        if agreed is not None and agreed != header.state_root:
            self.fail(
                "state_claim",
                f"{node} committed height {header.height} claiming root "
                f"{header.state_root.hex()[:12]} after {header.state_height}, agreed root is "
                f"{agreed.hex()[:12]}",
            )

    def _check_certificate(self, node: str, cb: CertifiedBlock, digest: bytes) -> None:
        cert = cb.certificate
        key = (cert.view, cert.height, cert.digest, cert.epoch, cert.signatures)
        if key in self._good_certs and cert.digest == digest:
            return
        where = f"{node} height {cb.block.header.height}"
        if cert.height != cb.block.header.height or cert.digest != digest:
            self.fail("certificate", f"{where}: certificate is for another block")
        _, epoch, members, quorum = self._epoch_at(cert.height)
        if cert.epoch != epoch:
            self.fail("certificate", f"{where}: certificate names epoch {cert.epoch}, not {epoch}")
        signers = [s.replica for s in cert.signatures]
        if len(set(signers)) != len(signers):
            self.fail("certificate", f"{where}: a validator signs twice")
        if not set(signers) <= members:
            self.fail("certificate", f"{where}: a signer is not a validator of epoch {epoch}")
        if len(signers) < quorum:
            self.fail("certificate", f"{where}: {len(signers)} signatures < quorum {quorum}")
        for sig in cert.signatures:
            vote = Commit(cert.view, cert.height, cert.digest, sig.replica, sig.signature)
            ok = self.verifier.verify(
                sig.replica, sig.signature, Domain.COMMIT, self.chain_id, signed_payload(vote)
            )
            if not ok:
                self.fail("certificate", f"{where}: bad signature by {sig.replica.hex()[:12]}")
        if len(self._good_certs) < MAX_CERTIFICATE_CACHE:
            self._good_certs.add(key)


_KIND = {PrePrepare: VoteKind.PRE_PREPARE, Prepare: VoteKind.PREPARE, Commit: VoteKind.COMMIT}
_CLASS_OF_KIND: dict[int, type[Any]] = {int(k): cls for cls, k in _KIND.items()}
