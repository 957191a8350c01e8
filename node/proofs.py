"""Proof bundles anyone holding the genesis file can check offline.

Two kinds of bundle (JSON objects), built by a node and checked by
`verify_bundle` (what `redwood verify FILE --genesis GENESIS` and
`node.client` run):

- ``redwood/record-proof/v1``: a record's value (or absence) in the state
  after height `state_height`, a Merkle proof to that state root, the block
  header that carries the root (header h claims the state after
  h - pipeline_depth) and that block's commit certificate;
- ``redwood/tx-proof/v1``: a transaction's bytes, a Merkle inclusion proof in
  its block's `tx_root`, that block's header and commit certificate.

Both carry `epochs`: every validator-set change from genesis up to the
certified header, each proven the same way (the ``gov/epoch/<E>`` state entry
under a root certified by a header of an epoch already established). Starting
from the genesis validators, the verifier so derives the set in force at every
height it checks; it trusts nothing but the genesis file.

Checks: chain id and genesis hash; each certificate names the epoch in force
at its height, has `quorum` valid COMMIT signatures (Domain.COMMIT, chain id)
from distinct members of that epoch and certifies exactly this header (digest
= header hash); the header is not a null block and claims `state_height`;
the Merkle proof leads from the (key, value, height) to that root. The first
failed check is raised as `ProofError` with the exact reason.

See docs/proofs.md for the format, what is (and is not) proven, and where the
state root of height h is certified.
"""

from __future__ import annotations

import hashlib
import json
import struct
import time
from typing import Any

from consensus import codec, merkle
from consensus.crypto import ZERO_HASH, Domain, verify
from consensus.types import BlockHeader, Commit, CommitCertificate, CommitSignature, signed_payload
from consensus.validators import EpochSchedule, ValidatorSet
from node import governance
from node.genesis import Genesis, GenesisError
from storage import state_tree

RECORD_BUNDLE = "redwood/record-proof/v1"
TX_BUNDLE = "redwood/tx-proof/v1"
EPOCH_CHANGES_MAX = 10_000
BUNDLE_BYTES_MAX = 64 * 1024 * 1024
RECORD_PREFIX = b"rec/"

_U64 = struct.Struct(">Q")


class ProofError(ValueError):
    """A bundle does not prove what it claims. The message is the exact reason."""


class ProofUnavailable(Exception):
    """The node cannot build this proof now (not certified yet, pruned...). Message says why."""


# -- hashing shared with the application ------------------------------------------


def record_state_key(agency: str, key: bytes) -> bytes:
    return RECORD_PREFIX + agency.encode("utf-8") + b"\x00" + key


VALUE_HASH_TAG = b"redwood/value/v1"


def value_hash(height: int, version: int, value: bytes) -> bytes:
    """What a state-tree leaf holds for `value`, version `version` of its key, written at `height`.

    node/app.py computes the same for a block's writes in `_update_tree`."""
    return hashlib.sha256(VALUE_HASH_TAG + _U64.pack(height) + _U64.pack(version) + value).digest()


# -- JSON forms ------------------------------------------------------------------------


def header_json(h: BlockHeader) -> dict[str, Any]:
    return {
        "chain_id": h.chain_id,
        "height": h.height,
        "view": h.view,
        "epoch": h.epoch,
        "parent_hash": h.parent_hash.hex(),
        "tx_root": h.tx_root.hex(),
        "tx_count": h.tx_count,
        "state_height": h.state_height,
        "state_root": h.state_root.hex(),
        "proposer": h.proposer.hex(),
        "timestamp_ms": h.timestamp_ms,
        "validator_set_hash": h.validator_set_hash.hex(),
    }


def header_from_json(d: Any) -> BlockHeader:
    f = _Obj(d, "header")
    h = BlockHeader(
        chain_id=f.text("chain_id"),
        height=f.u64("height"),
        view=f.u64("view"),
        epoch=f.u64("epoch"),
        parent_hash=f.hex("parent_hash", 32),
        tx_root=f.hex("tx_root", 32),
        tx_count=f.u64("tx_count"),
        state_height=f.u64("state_height"),
        state_root=f.hex("state_root", 32),
        proposer=f.hex("proposer", 32),
        timestamp_ms=f.u64("timestamp_ms"),
        validator_set_hash=f.hex("validator_set_hash", 32),
    )
    f.done()
    try:
        codec.encode_body(h)
    except (codec.EncodeError, ValueError) as exc:
        raise ProofError(f"header: not encodable: {exc}") from None
    return h


def certificate_json(c: CommitCertificate) -> dict[str, Any]:
    return {
        "view": c.view,
        "height": c.height,
        "digest": c.digest.hex(),
        "epoch": c.epoch,
        "signatures": [
            {"replica": s.replica.hex(), "signature": s.signature.hex()} for s in c.signatures
        ],
    }


def certificate_from_json(d: Any) -> CommitCertificate:
    f = _Obj(d, "certificate")
    view, height, digest, epoch = (
        f.u64("view"),
        f.u64("height"),
        f.hex("digest", 32),
        f.u64("epoch"),
    )
    raw_sigs = f.get("signatures")
    f.done()
    if not isinstance(raw_sigs, list) or len(raw_sigs) > 256:
        raise ProofError("certificate.signatures: expected a list of at most 256 signatures")
    sigs = []
    for i, s in enumerate(raw_sigs):
        g = _Obj(s, f"certificate.signatures[{i}]")
        sigs.append(CommitSignature(g.hex("replica", 32), g.hex("signature", 64)))
        g.done()
    return CommitCertificate(view, height, digest, epoch, tuple(sigs))


class _Obj:
    """Strict reader of one JSON object of a bundle: every field checked, no extras."""

    def __init__(self, d: Any, where: str) -> None:
        if not isinstance(d, dict):
            raise ProofError(f"{where}: expected an object")
        self.d, self.where = d, where
        self.seen: set[str] = set()

    def get(self, name: str) -> Any:
        if name not in self.d:
            raise ProofError(f"{self.where}.{name}: missing")
        self.seen.add(name)
        return self.d[name]

    def opt(self, name: str) -> Any:
        self.seen.add(name)
        return self.d.get(name)

    def u64(self, name: str) -> int:
        v = self.get(name)
        if type(v) is not int or not 0 <= v <= codec.U64_MAX:
            raise ProofError(f"{self.where}.{name}: expected an unsigned integer")
        return v

    def text(self, name: str) -> str:
        v = self.get(name)
        if not isinstance(v, str):
            raise ProofError(f"{self.where}.{name}: expected text")
        return v

    def hex(self, name: str, size: int | None = None, *, nullable: bool = False) -> Any:
        v = self.get(name)
        if v is None and nullable:
            return None
        if not isinstance(v, str) or (size is not None and len(v) != 2 * size):
            raise ProofError(f"{self.where}.{name}: expected {size or 'some'} bytes of hex")
        try:
            return bytes.fromhex(v)
        except ValueError:
            raise ProofError(f"{self.where}.{name}: not hex") from None

    def done(self) -> None:
        extra = set(self.d) - self.seen
        if extra:
            raise ProofError(f"{self.where}: unexpected field(s) {', '.join(sorted(extra))}")


# -- building (node side) -------------------------------------------------------------------


def _certified_claim(store: Any, from_height: int) -> Any:
    """The newest committed block at or below `from_height` whose header claims a state."""
    h = from_height
    while h >= 1:
        cb = store.get_block(h)
        if cb is None:
            raise ProofUnavailable(f"block {h} is missing from this node's store")
        if not cb.block.header.is_null:
            return cb
        h -= 1
    return None


def epochs_json(store: Any, app: Any, up_to_height: int) -> list[dict[str, Any]]:
    """Epoch changes (from genesis) in force at or before `up_to_height`, each with its proof."""
    out = []
    for epoch, first, _ids in app.gov.epochs:
        if first > up_to_height:
            break
        raw = store.get_meta(epoch_proof_key(epoch))
        if raw is None:
            raise ProofUnavailable(f"the proof of epoch {epoch} is not available yet")
        out.append(json.loads(raw))
    return out


def epoch_proof_key(epoch: int) -> bytes:
    return b"proof/epoch/" + _U64.pack(epoch)


def build_record_bundle(store: Any, app: Any, agency: str, key: bytes) -> dict[str, Any]:
    """The proof bundle of record (agency, key) at the newest certified state (or its absence)."""
    head = store.head_height()
    cb = _certified_claim(store, head)
    if cb is None:
        raise ProofUnavailable("no block claims a state yet; wait for the chain to move on")
    header = cb.block.header
    s = header.state_height
    skey = record_state_key(agency, key)
    khash = state_tree.key_hash(skey)
    try:
        proof = app.prove_state(s, khash)
    except state_tree.TreeError as exc:  # pruned under us (a proof older than the kept heights)
        raise ProofUnavailable(
            f"the state tree at height {s} is no longer stored ({exc}); ask again"
        ) from None
    current = store.get_record(skey)
    at_s = _version_at(store, skey, current, s)
    value = None if at_s is None else at_s.value
    bundle: dict[str, Any] = {
        "type": RECORD_BUNDLE,
        "chain_id": app.chain_id,
        "genesis_hash": app.genesis.hash().hex(),
        "agency": agency,
        "key": key.hex(),
        "value": None if value is None else value.hex(),
        "height": None if value is None or at_s is None else at_s.height,
        "version": None if value is None or at_s is None else at_s.version,
        "state_height": s,
        "proof": proof.to_json(),
        "header": header_json(header),
        "certificate": certificate_json(cb.certificate),
        "epochs": epochs_json(store, app, header.height),
        "current": _current_json(current, at_s, head),
    }
    return bundle


def _version_at(store: Any, skey: bytes, current: Any, s: int) -> Any:
    """The record's version in force after height `s` (None: absent or deleted then)."""
    if current is None:
        return None
    rv = current
    if rv.height > s:
        rv = None
        before = current.version
        while before > 1:
            older = store.record_history(skey, 100, before)
            if not older:
                break
            for v in older:
                if v.height <= s:
                    rv = v
                    break
            if rv is not None:
                break
            before = older[-1].version
    if rv is None or rv.value is None:
        return None
    return rv


def _current_json(current: Any, at_s: Any, head: int) -> dict[str, Any]:
    cur_value = None if current is None else current.value
    proven_value = None if at_s is None else at_s.value
    return {
        "head_height": head,
        "value": None if cur_value is None else cur_value.hex(),
        "version": None if current is None else current.version,
        "height": None if current is None else current.height,
        "changed_after_proof": cur_value != proven_value,
    }


def build_tx_bundle(store: Any, app: Any, tx_hash_: bytes) -> dict[str, Any]:
    loc = store.get_tx(tx_hash_)
    if loc is None:
        raise ProofUnavailable("no committed transaction with this hash")
    cb = store.get_block(loc.height)
    if cb is None:
        raise ProofUnavailable(f"block {loc.height} is missing from this node's store")
    mp = merkle.prove(cb.block.txs, loc.index)
    return {
        "type": TX_BUNDLE,
        "chain_id": app.chain_id,
        "genesis_hash": app.genesis.hash().hex(),
        "tx": loc.tx.hex(),
        "tx_hash": tx_hash_.hex(),
        "index": loc.index,
        "receipt": {"status_code": loc.status},  # the node's word: receipts are not under a root
        "proof": {"index": mp.index, "size": mp.size, "path": [p.hex() for p in mp.path]},
        "header": header_json(cb.block.header),
        "certificate": certificate_json(cb.certificate),
        "epochs": epochs_json(store, app, loc.height),
    }


def epoch_change_json(
    epoch: int, first: int, ids: tuple[bytes, ...], written_height: int, version: int,
    proof: state_tree.Proof, header: BlockHeader, cert: CommitCertificate,
) -> dict[str, Any]:  # fmt: skip
    return {
        "epoch": epoch,
        "first_height": first,
        "validators": [v.hex() for v in ids],
        "written_height": written_height,
        "version": version,
        "state_height": header.state_height,
        "proof": proof.to_json(),
        "header": header_json(header),
        "certificate": certificate_json(cert),
    }


# -- verifying (anyone, offline) ---------------------------------------------------------------


def verify_bundle(bundle: Any, genesis: Genesis) -> str:
    """Check a bundle against `genesis`; return what was proven. ProofError says why not."""
    f = _Obj(bundle, "bundle")
    kind = f.get("type")
    if kind == RECORD_BUNDLE:
        return _verify_record(f, genesis)
    if kind == TX_BUNDLE:
        return _verify_tx(f, genesis)
    raise ProofError(f"bundle.type: unknown bundle type {kind!r}")


def _check_chain(f: _Obj, genesis: Genesis) -> None:
    if f.text("chain_id") != genesis.chain_id:
        raise ProofError(
            f"chain_id {f.d['chain_id']!r} is not the genesis chain {genesis.chain_id!r}"
        )
    if f.hex("genesis_hash", 32) != genesis.hash():
        raise ProofError("genesis_hash does not match the genesis file")


def _schedule(f: _Obj, genesis: Genesis, pipeline_depth: int) -> EpochSchedule:
    """Genesis validators, then each epoch change proven under the epochs before it."""
    schedule = EpochSchedule(((1, ValidatorSet(0, genesis.node_ids())),))
    changes = f.get("epochs")
    if not isinstance(changes, list) or len(changes) > EPOCH_CHANGES_MAX:
        raise ProofError("epochs: expected a list of epoch changes")
    for i, change in enumerate(changes):
        where = f"epochs[{i}]"
        g = _Obj(change, where)
        epoch, first = g.u64("epoch"), g.u64("first_height")
        last_first, last_set = schedule.last
        if epoch != last_set.epoch + 1:
            raise ProofError(f"{where}.epoch: expected epoch {last_set.epoch + 1}, got {epoch}")
        if first <= last_first:
            raise ProofError(f"{where}.first_height: {first} does not follow {last_first}")
        raw_ids = g.get("validators")
        if not isinstance(raw_ids, list):
            raise ProofError(f"{where}.validators: expected a list of node ids")
        try:
            ids = tuple(bytes.fromhex(v) for v in raw_ids)
            vset = ValidatorSet(epoch, ids)
        except (ValueError, TypeError) as exc:
            raise ProofError(f"{where}.validators: {exc}") from None
        written = g.u64("written_height")
        version = g.u64("version")
        header = header_from_json(g.get("header"))
        cert = certificate_from_json(g.get("certificate"))
        if header.height >= first:
            raise ProofError(
                f"{where}.header: height {header.height} is not before the epoch's first "
                f"height {first}, so it cannot be certified by an established epoch"
            )
        _check_certified(header, cert, schedule, genesis.chain_id, where)
        s = g.u64("state_height")
        _check_claim(header, s, where)
        if written > s:
            raise ProofError(f"{where}.written_height: {written} is after state height {s}")
        proof = _proof(g.get("proof"), where)
        value = governance.encode_epoch(epoch, first, ids)
        khash = state_tree.key_hash(governance.epoch_key(epoch))
        if not state_tree.verify(
            header.state_root, khash, value_hash(written, version, value), proof
        ):
            raise ProofError(
                f"{where}.proof: the epoch record does not verify against the state root of "
                f"height {s}"
            )
        g.done()
        schedule = schedule.with_epoch(first, vset)
    return schedule


def _proof(raw: Any, where: str) -> state_tree.Proof:
    try:
        return state_tree.Proof.from_json(raw)
    except ValueError as exc:
        raise ProofError(f"{where}.proof: {exc}") from None


def _check_claim(header: BlockHeader, s: int, where: str) -> None:
    if header.state_root == ZERO_HASH:
        raise ProofError(f"{where}.header: a null block claims no state")
    if header.state_height != s:
        raise ProofError(
            f"{where}.state_height: {s} but the header claims the state after {header.state_height}"
        )


def _check_certified(
    header: BlockHeader, cert: CommitCertificate, schedule: EpochSchedule, chain_id: str,
    where: str,
) -> ValidatorSet:  # fmt: skip
    """The certificate commits exactly `header`, with a quorum of the epoch in force."""
    if header.chain_id != chain_id:
        raise ProofError(f"{where}.header: chain_id {header.chain_id!r} is not {chain_id!r}")
    if header.height < 1:
        raise ProofError(f"{where}.header: height 0 is genesis, not a block")
    vset = schedule.at(header.height)
    if header.epoch != vset.epoch or header.validator_set_hash != vset.hash():
        raise ProofError(
            f"{where}.header: claims epoch {header.epoch}, but epoch {vset.epoch} (from genesis "
            f"and the epoch changes) is in force at height {header.height}"
        )
    if cert.height != header.height:
        raise ProofError(
            f"{where}.certificate: for height {cert.height}, header is {header.height}"
        )
    if cert.digest != header.hash():
        raise ProofError(f"{where}.certificate: digest is not the header's hash")
    if cert.epoch != vset.epoch:
        raise ProofError(f"{where}.certificate: names epoch {cert.epoch}, in force is {vset.epoch}")
    seen: set[bytes] = set()
    for i, sig in enumerate(cert.signatures):
        if sig.replica not in vset:
            raise ProofError(
                f"{where}.certificate.signatures[{i}]: {sig.replica.hex()[:16]} is not a "
                f"validator of epoch {vset.epoch}"
            )
        if sig.replica in seen:
            raise ProofError(f"{where}.certificate.signatures[{i}]: duplicate signer")
        vote = Commit(cert.view, cert.height, cert.digest, sig.replica, sig.signature)
        if not verify(sig.replica, sig.signature, Domain.COMMIT, chain_id, signed_payload(vote)):
            raise ProofError(
                f"{where}.certificate.signatures[{i}]: bad COMMIT signature by "
                f"{sig.replica.hex()[:16]}"
            )
        seen.add(sig.replica)
    if len(seen) < vset.quorum:
        raise ProofError(
            f"{where}.certificate: {len(seen)} valid signatures, short of the quorum of "
            f"{vset.quorum} (epoch {vset.epoch}, {vset.n} validators)"
        )
    return vset


def _verify_record(f: _Obj, genesis: Genesis) -> str:
    _check_chain(f, genesis)
    schedule = _schedule(f, genesis, genesis.params.pipeline_depth)
    agency = f.text("agency")
    key = f.hex("key")
    value = f.hex("value", nullable=True)
    height = f.get("height")
    version = f.get("version")
    s = f.u64("state_height")
    header = header_from_json(f.get("header"))
    cert = certificate_from_json(f.get("certificate"))
    proof = _proof(f.get("proof"), "bundle")
    current = f.opt("current")
    f.done()
    vset = _check_certified(header, cert, schedule, genesis.chain_id, "bundle")
    _check_claim(header, s, "bundle")
    khash = state_tree.key_hash(record_state_key(agency, key))
    if value is None:
        if height is not None or version is not None:
            raise ProofError("bundle.height/version: an absent record has neither")
        vh = None
    else:
        if type(height) is not int or not 1 <= height <= s:
            raise ProofError(f"bundle.height: must be an integer in 1..{s}")
        if type(version) is not int or not 1 <= version <= codec.U64_MAX:
            raise ProofError("bundle.version: must be a positive integer")
        vh = value_hash(height, version, value)
    if not state_tree.verify(header.state_root, khash, vh, proof):
        raise ProofError(
            f"bundle.proof: the Merkle proof does not lead from ({agency}, {key.hex()[:32]}) to "
            f"the state root of height {s}"
        )
    what = (
        f"record ({agency!r}, key {_show(key)}) = {_show(value)} (version {version}, written "
        f"at height {height})"
        if value is not None
        else f"record ({agency!r}, key {_show(key)}) is absent"
    )
    note = ""
    if isinstance(current, dict) and current.get("changed_after_proof"):
        note = f"; the node says it changed after height {s} (not proven)"
    return (
        f"{what} in the state after height {s}, certified by block {header.height} "
        f"(epoch {vset.epoch}, {len(cert.signatures)} of {vset.n} validators signed, "
        f"{len(schedule.epochs) - 1} epoch change(s) from genesis){note}"
    )


def _verify_tx(f: _Obj, genesis: Genesis) -> str:
    _check_chain(f, genesis)
    schedule = _schedule(f, genesis, genesis.params.pipeline_depth)
    tx = f.hex("tx")
    tx_hash_ = f.hex("tx_hash", 32)
    index = f.u64("index")
    f.opt("receipt")  # the node's word: receipts are not under a root
    header = header_from_json(f.get("header"))
    cert = certificate_from_json(f.get("certificate"))
    g = _Obj(f.get("proof"), "bundle.proof")
    size = g.u64("size")
    p_index = g.u64("index")
    path_raw = g.get("path")
    g.done()
    f.done()
    if hashlib.sha256(tx).digest() != tx_hash_:
        raise ProofError("bundle.tx_hash: is not the SHA-256 of the transaction bytes")
    if not isinstance(path_raw, list) or len(path_raw) > merkle.MAX_PROOF_DEPTH:
        raise ProofError("bundle.proof.path: expected a list of hashes")
    try:
        path = tuple(bytes.fromhex(p) for p in path_raw)
    except (ValueError, TypeError):
        raise ProofError("bundle.proof.path: not hex") from None
    if p_index != index:
        raise ProofError("bundle.proof.index: differs from bundle.index")
    vset = _check_certified(header, cert, schedule, genesis.chain_id, "bundle")
    mp = merkle.InclusionProof(index=p_index, size=size, path=path)
    if not merkle.verify_inclusion(tx, mp, header.tx_root, expected_size=header.tx_count):
        raise ProofError(
            f"bundle.proof: the transaction is not leaf {index} of block {header.height}'s tx_root"
        )
    return (
        f"transaction {tx_hash_.hex()} is #{index} of block {header.height}, certified by "
        f"{len(cert.signatures)} of {vset.n} validators of epoch {vset.epoch} "
        f"({len(schedule.epochs) - 1} epoch change(s) from genesis)"
    )


def _show(b: bytes | None) -> str:
    if b is None:
        return "none"
    try:
        text = b.decode("utf-8")
        if text.isprintable() and len(text) <= 80:
            return repr(text)
    except UnicodeDecodeError:
        pass
    return "0x" + b[:40].hex() + ("..." if len(b) > 40 else "")


def verify_file(bundle_path: str, genesis_path: str) -> tuple[bool, str, float]:
    """(valid, message, seconds) for `redwood verify`; never raises on bad input."""
    try:
        genesis = Genesis.load(genesis_path)
    except GenesisError as exc:
        return False, f"genesis: {exc}", 0.0
    try:
        with open(bundle_path, "rb") as fh:
            raw = fh.read(BUNDLE_BYTES_MAX + 1)
    except OSError as exc:
        return False, f"{bundle_path}: cannot read: {exc.strerror}", 0.0
    if len(raw) > BUNDLE_BYTES_MAX:
        return False, f"{bundle_path}: larger than {BUNDLE_BYTES_MAX} bytes", 0.0
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        return False, f"{bundle_path}: not JSON: {exc}", 0.0
    started = time.perf_counter()
    try:
        what = verify_bundle(doc, genesis)
    except ProofError as exc:
        return False, str(exc), time.perf_counter() - started
    except (ValueError, TypeError, KeyError, IndexError, RecursionError) as exc:
        return False, f"malformed bundle: {exc}", time.perf_counter() - started
    return True, what, time.perf_counter() - started
