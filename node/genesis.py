"""The genesis file: who the agencies and validators are, and the chain's parameters.

`genesis.json` is the root of trust of a chain: block 1's `parent_hash` is the
genesis hash, and an auditor who holds the file can check every certificate
and proof offline. So it is read strictly: unknown keys, malformed hex,
duplicate ids or keys, missing validators and out-of-range parameters are all
refused with a `GenesisError` that names the field (`validators[2].node_id:
...`), never silently repaired.

Canonical form and hash
-----------------------
`Genesis.to_dict()` is the *full* document: every optional field present with
its value (defaults filled in), hex in lower case. The genesis hash is
SHA-256 of `json.dumps(to_dict(), sort_keys=True, separators=(",", ":"))`.
Files written by `redwood init` / `redwood testnet` are in that full form, so
hashing the file's JSON the same way gives the same hash; a hand-written file
that omits defaults still hashes as its full form, so two operators who write
the same chain differently still agree on its identity.

Membership
----------
A client key belongs to exactly one agency and may write only under that
agency's namespace. Validators are listed in primary order (the primary of
view v is `validators[v mod n]`).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from consensus.codec import U64_MAX
from consensus.crypto import PUBLIC_KEY_BYTES, sha256
from consensus.types import (
    MAX_AGENCY_CHARS,
    MAX_BLOCK_TXS,
    MAX_CHAIN_ID_CHARS,
    MAX_TX_VALUE_BYTES,
    MAX_VALIDATORS,
)

GENESIS_FILE_BYTES_MAX = 16 * 1024 * 1024
AGENCIES_MAX = 10_000
MEMBERS_PER_AGENCY_MAX = 10_000
NAME_CHARS_MAX = 128
ADDRESS_CHARS_MAX = 255
BLOCK_BYTES_MAX_LIMIT = 32 * 1024 * 1024 - 64 * 1024  # stays under codec.MAX_MESSAGE_BYTES
NEW_VIEW_BYTES_MAX = 32 * 1024 * 1024 - 1024 * 1024  # codec.MAX_MESSAGE_BYTES less headroom
TX_OVERHEAD_BYTES = 4096  # room for a transaction's fixed fields around its value

_CHAIN_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_AGENCY_ID_RE = re.compile(r"[a-z0-9][a-z0-9._-]*")
_HEX_RE = re.compile(r"[0-9a-f]*")


class GenesisError(ValueError):
    """The genesis document is malformed. The message names the offending field."""


@dataclass(frozen=True, slots=True)
class Params:
    """Chain parameters fixed at genesis. Names carry their units last."""

    block_txs_max: int = 4000
    block_bytes_max: int = 1536 * 1024  # see view_change_bytes_bound
    pipeline_depth: int = 4
    checkpoint_interval: int = 64
    record_value_bytes_max: int = 64 * 1024
    tx_ttl_blocks_max: int = 10_000
    gov_threshold_num: int = 2
    gov_threshold_den: int = 3
    proposal_ttl_blocks: int = 10_000


# (min, max) of each parameter, inclusive.
PARAM_RANGES: dict[str, tuple[int, int]] = {
    "block_txs_max": (1, MAX_BLOCK_TXS),
    "block_bytes_max": (1024, BLOCK_BYTES_MAX_LIMIT),
    "pipeline_depth": (1, 64),
    "checkpoint_interval": (1, 1_000_000),
    "record_value_bytes_max": (0, MAX_TX_VALUE_BYTES),
    "tx_ttl_blocks_max": (1, 100_000_000),
    "gov_threshold_num": (1, 1000),
    "gov_threshold_den": (1, 1000),
    "proposal_ttl_blocks": (1, 100_000_000),
}


@dataclass(frozen=True, slots=True)
class Agency:
    id: str
    name: str
    members: tuple[bytes, ...]  # client Ed25519 public keys


@dataclass(frozen=True, slots=True)
class Validator:
    node_id: bytes  # Ed25519 public key
    agency: str
    name: str = ""
    address: str = ""  # "host:port" of its peer listener; "" when not published


@dataclass(frozen=True, slots=True)
class Genesis:
    chain_id: str
    genesis_time_ms: int
    agencies: tuple[Agency, ...]
    validators: tuple[Validator, ...]  # primary order
    params: Params = field(default_factory=Params)
    # lookup tables derived from `agencies`, built once
    _by_id: dict[str, Agency] = field(init=False, repr=False, compare=False)
    _by_member: dict[bytes, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_id", {a.id: a for a in self.agencies})
        by_member = {m: a.id for a in self.agencies for m in a.members}
        object.__setattr__(self, "_by_member", by_member)

    # -- reading and writing ---------------------------------------------------

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Genesis:
        """Read and validate a genesis file; `GenesisError` names the file and field."""
        path = Path(path)
        try:
            size = path.stat().st_size
            if size > GENESIS_FILE_BYTES_MAX:
                raise GenesisError(f"{path}: {size} bytes exceeds {GENESIS_FILE_BYTES_MAX}")
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise GenesisError(f"{path}: cannot read genesis file: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise GenesisError(f"{path}: not UTF-8 text") from None
        try:
            doc = json.loads(text, parse_float=_no_float, parse_constant=_no_float)
        except ValueError as exc:
            raise GenesisError(f"{path}: not valid JSON: {exc}") from None
        try:
            return cls.from_dict(doc)
        except GenesisError as exc:
            raise GenesisError(f"{path}: {exc}") from None

    @classmethod
    def from_dict(cls, doc: Any) -> Genesis:
        d = _Fields(doc, "genesis")
        chain_id = d.text("chain_id", 1, MAX_CHAIN_ID_CHARS, pattern=_CHAIN_ID_RE)
        genesis_time_ms = d.integer("genesis_time_ms", 0, U64_MAX, default=0)
        agencies = _agencies(d.array("agencies", 1, AGENCIES_MAX), "agencies")
        validators = _validators(d.array("validators", 1, MAX_VALIDATORS), "validators")
        params = _params(d.get("params", {}), "params")
        d.done()
        _check_references(agencies, validators)
        _check_view_change_size(len(validators), params)
        return cls(chain_id, genesis_time_ms, agencies, validators, params)

    def to_dict(self) -> dict[str, Any]:
        """The full canonical document (every field present, lower-case hex)."""
        return {
            "chain_id": self.chain_id,
            "genesis_time_ms": self.genesis_time_ms,
            "agencies": [
                {"id": a.id, "name": a.name, "members": [m.hex() for m in a.members]}
                for a in self.agencies
            ],
            "validators": [
                {
                    "node_id": v.node_id.hex(),
                    "agency": v.agency,
                    "name": v.name,
                    "address": v.address,
                }
                for v in self.validators
            ],
            "params": {name: getattr(self.params, name) for name in PARAM_RANGES},
        }

    def to_json(self) -> str:
        """Pretty text for the file on disk (hashes the same as the canonical form)."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def save(self, path: str | os.PathLike[str]) -> None:
        Path(path).write_text(self.to_json(), encoding="utf-8")

    def hash(self) -> bytes:
        """SHA-256 of the canonical JSON: block 1's parent hash, the chain's identity."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return sha256(canonical.encode("utf-8"))

    # -- lookups ---------------------------------------------------------------

    def agency(self, agency_id: str) -> Agency | None:
        return self._by_id.get(agency_id)

    def agency_of_member(self, public: bytes) -> str | None:
        """The agency a client key belongs to, or None."""
        return self._by_member.get(public)

    def node_ids(self) -> tuple[bytes, ...]:
        return tuple(v.node_id for v in self.validators)

    def validator_set(self) -> Any:
        """The genesis validator set (epoch 0, primary order) as a consensus `ValidatorSet`.

        Returns the tuple of node ids instead while consensus has no `ValidatorSet`
        (consensus/validators.py, re-exported by consensus/replica.py).
        """
        try:
            from consensus.validators import ValidatorSet
        except ImportError:
            try:
                from consensus.replica import (  # type: ignore[import-not-found,no-redef,unused-ignore]
                    ValidatorSet,
                )
            except ImportError:
                return self.node_ids()
        return ValidatorSet(epoch=0, validators=self.node_ids())


# -- validation ---------------------------------------------------------------


def _no_float(text: str) -> Any:
    raise GenesisError(f"numbers must be integers, got {text}")


class _Fields:
    """Reads the fields of one JSON object, each checked, and refuses leftovers."""

    def __init__(self, doc: Any, path: str) -> None:
        if not isinstance(doc, dict):
            raise GenesisError(f"{path}: expected an object, got {_kind(doc)}")
        self.doc = doc
        self.path = path
        self.seen: set[str] = set()

    _MISSING = object()

    def get(self, name: str, default: Any = _MISSING) -> Any:
        self.seen.add(name)
        if name in self.doc:
            return self.doc[name]
        if default is _Fields._MISSING:
            raise GenesisError(f"{self.path}.{name}: required field is missing")
        return default

    def text(
        self,
        name: str,
        min_len: int,
        max_len: int,
        *,
        default: str | None = None,
        pattern: re.Pattern[str] | None = None,
    ) -> str:
        value = self.get(name, _Fields._MISSING if default is None else default)
        return _text(value, f"{self.path}.{name}", min_len, max_len, pattern)

    def integer(self, name: str, lo: int, hi: int, *, default: int | None = None) -> int:
        value = self.get(name, _Fields._MISSING if default is None else default)
        return _integer(value, f"{self.path}.{name}", lo, hi)

    def array(self, name: str, min_len: int, max_len: int, *, default: Any = _MISSING) -> list[Any]:
        value = self.get(name, default)
        where = f"{self.path}.{name}"
        if not isinstance(value, list):
            raise GenesisError(f"{where}: expected a list, got {_kind(value)}")
        if not min_len <= len(value) <= max_len:
            raise GenesisError(f"{where}: needs {min_len} to {max_len} entries, got {len(value)}")
        return value

    def done(self) -> None:
        unknown = sorted(set(self.doc) - self.seen)
        if unknown:
            raise GenesisError(f"{self.path}: unknown field(s) {', '.join(map(repr, unknown))}")


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _text(
    value: Any, where: str, min_len: int, max_len: int, pattern: re.Pattern[str] | None
) -> str:
    if not isinstance(value, str):
        raise GenesisError(f"{where}: expected text, got {_kind(value)}")
    if not min_len <= len(value) <= max_len:
        raise GenesisError(f"{where}: length must be {min_len} to {max_len}, got {len(value)}")
    if pattern is not None and not pattern.fullmatch(value):
        raise GenesisError(f"{where}: {value!r} does not match {pattern.pattern}")
    return value


def _integer(value: Any, where: str, lo: int, hi: int) -> int:
    if type(value) is not int:
        raise GenesisError(f"{where}: expected an integer, got {_kind(value)}")
    if not lo <= value <= hi:
        raise GenesisError(f"{where}: {value} is out of range {lo}..{hi}")
    return value


def _public_key(value: Any, where: str) -> bytes:
    if not isinstance(value, str):
        raise GenesisError(f"{where}: expected hex text, got {_kind(value)}")
    if len(value) != 2 * PUBLIC_KEY_BYTES or not _HEX_RE.fullmatch(value):
        raise GenesisError(
            f"{where}: expected {2 * PUBLIC_KEY_BYTES} lower-case hex characters "
            f"(an Ed25519 public key), got {value[:80]!r}"
        )
    return bytes.fromhex(value)


def _address(value: Any, where: str) -> str:
    address = _text(value, where, 0, ADDRESS_CHARS_MAX, None)
    if address == "":
        return address
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise GenesisError(f"{where}: expected host:port with port 1..65535, got {address!r}")
    return address


def _agencies(items: list[Any], path: str) -> tuple[Agency, ...]:
    agencies: list[Agency] = []
    ids: set[str] = set()
    members_seen: dict[bytes, str] = {}
    for i, item in enumerate(items):
        where = f"{path}[{i}]"
        d = _Fields(item, where)
        agency_id = d.text("id", 1, MAX_AGENCY_CHARS, pattern=_AGENCY_ID_RE)
        name = d.text("name", 0, NAME_CHARS_MAX, default=agency_id)
        raw_members = d.array("members", 0, MEMBERS_PER_AGENCY_MAX, default=[])
        d.done()
        if agency_id in ids:
            raise GenesisError(f"{where}.id: duplicate agency id {agency_id!r}")
        ids.add(agency_id)
        members = []
        for j, raw in enumerate(raw_members):
            key = _public_key(raw, f"{where}.members[{j}]")
            if key in members_seen:
                raise GenesisError(
                    f"{where}.members[{j}]: key {raw} is already a member of "
                    f"agency {members_seen[key]!r}"
                )
            members_seen[key] = agency_id
            members.append(key)
        agencies.append(Agency(agency_id, name, tuple(members)))
    return tuple(agencies)


def _validators(items: list[Any], path: str) -> tuple[Validator, ...]:
    validators: list[Validator] = []
    node_ids: set[bytes] = set()
    for i, item in enumerate(items):
        where = f"{path}[{i}]"
        d = _Fields(item, where)
        node_id = _public_key(d.get("node_id"), f"{where}.node_id")
        agency = d.text("agency", 1, MAX_AGENCY_CHARS)
        name = d.text("name", 0, NAME_CHARS_MAX, default="")
        address = _address(d.get("address", ""), f"{where}.address")
        d.done()
        if node_id in node_ids:
            raise GenesisError(f"{where}.node_id: duplicate validator {node_id.hex()}")
        node_ids.add(node_id)
        validators.append(Validator(node_id, agency, name, address))
    return tuple(validators)


def _params(doc: Any, path: str) -> Params:
    d = _Fields(doc, path)
    defaults = Params()
    values = {
        name: d.integer(name, lo, hi, default=getattr(defaults, name))
        for name, (lo, hi) in PARAM_RANGES.items()
    }
    d.done()
    params = Params(**values)
    if params.gov_threshold_num > params.gov_threshold_den:
        raise GenesisError(
            f"{path}.gov_threshold_num: {params.gov_threshold_num} exceeds "
            f"gov_threshold_den {params.gov_threshold_den} (threshold above 1)"
        )
    smallest_block = params.record_value_bytes_max + TX_OVERHEAD_BYTES
    if params.block_bytes_max < smallest_block:
        raise GenesisError(
            f"{path}.block_bytes_max: {params.block_bytes_max} cannot hold one transaction "
            f"with the largest value (needs at least {smallest_block})"
        )
    return params


def view_change_bytes_bound(validators: int, params: Params) -> int:
    """Worst-case bytes of a NEW-VIEW: q VIEW-CHANGEs, each with up to pipeline_depth full blocks.

    A NEW-VIEW must fit in one wire message (codec.MAX_MESSAGE_BYTES), so
    block_bytes_max is bounded by the number of validators and the pipeline depth.
    """
    quorum = (validators + (validators - 1) // 3) // 2 + 1
    return quorum * params.pipeline_depth * params.block_bytes_max


def block_bytes_max_for(validators: int, pipeline_depth: int) -> int:
    """The largest block_bytes_max whose NEW-VIEW still fits in one message."""
    quorum = (validators + (validators - 1) // 3) // 2 + 1
    return NEW_VIEW_BYTES_MAX // (quorum * pipeline_depth)


def _check_view_change_size(validators: int, params: Params) -> None:
    if view_change_bytes_bound(validators, params) > NEW_VIEW_BYTES_MAX:
        limit = block_bytes_max_for(validators, params.pipeline_depth)
        raise GenesisError(
            f"params.block_bytes_max: {params.block_bytes_max} is too large for "
            f"{validators} validators with pipeline_depth {params.pipeline_depth}: a view change "
            f"could exceed the {NEW_VIEW_BYTES_MAX}-byte message limit (at most {limit})"
        )


def _check_references(agencies: tuple[Agency, ...], validators: tuple[Validator, ...]) -> None:
    ids = {a.id for a in agencies}
    for i, v in enumerate(validators):
        if v.agency not in ids:
            raise GenesisError(f"validators[{i}].agency: unknown agency {v.agency!r}")
