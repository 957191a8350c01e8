"""Governance: agencies vote on agencies, member keys, validators and parameters.

Deterministic and pure (no I/O): `node.app` feeds it the committed `GovState`
and the proposals it touches, and writes what it returns as state writes, so
the whole governance state is under the state root.

Transactions
------------
- op ``gov.propose``, value = `encode_action(...)`: a canonical msgpack array,
  one of
  ``["add_agency", id, name]``, ``["remove_agency", id]``,
  ``["add_member", agency, key32]``, ``["remove_member", agency, key32]``,
  ``["add_validator", node_id32, agency, name, address]``,
  ``["remove_validator", node_id32]``, ``["set_param", name, int]``.
  The proposer's agency (the transaction's `agency`) approves it at once.
- op ``gov.approve``, value = the proposal id as 8 bytes big-endian.

Both need the sender to be a member of the transaction's agency (the same rule
as writes); `key` is ignored (any 1..256 bytes, e.g. ``b"gov"``).

A proposal passes when approvals * gov_threshold_den >= gov_threshold_num *
(number of agencies) and is then executed in the same transaction; it expires
`proposal_ttl_blocks` after the height that proposed it; an agency approves at
most once. Changes take effect from the next block (membership is read from the
state at the start of each block). A validator change creates a new epoch
starting at the first checkpoint boundary (height k*checkpoint_interval + 1)
above height + 2 * pipeline_depth (and after any epoch already scheduled), so
the headers that certify the decision (from height + pipeline_depth on, at
least pipeline_depth + 1 of them, in case some are null blocks) are still
signed by the old set: an offline verifier can follow the epochs from genesis
(see docs/proofs.md).

Only application parameters may change (`MUTABLE_PARAMS`): consensus
parameters are fixed for the life of a chain.

State keys: ``gov/agencies``, ``gov/validators``, ``gov/params``,
``gov/next_id`` (u64 BE), ``gov/proposal/`` u64 id, ``gov/epoch/`` u64 epoch.
"""

from __future__ import annotations

import dataclasses
import struct
from dataclasses import dataclass, field
from typing import Any

from consensus import codec
from consensus.codec import DecodeError
from consensus.crypto import PUBLIC_KEY_BYTES
from consensus.types import MAX_AGENCY_CHARS, MAX_VALIDATORS
from node.genesis import (
    _AGENCY_ID_RE,
    ADDRESS_CHARS_MAX,
    AGENCIES_MAX,
    MEMBERS_PER_AGENCY_MAX,
    NAME_CHARS_MAX,
    PARAM_RANGES,
    Agency,
    Genesis,
    Params,
    Validator,
)

OP_PROPOSE = "gov.propose"
OP_APPROVE = "gov.approve"
GOV_OPS = frozenset({OP_PROPOSE, OP_APPROVE})
MUTABLE_PARAMS = frozenset(
    {
        "record_value_bytes_max",
        "tx_ttl_blocks_max",
        "gov_threshold_num",
        "gov_threshold_den",
        "proposal_ttl_blocks",
    }
)
ACTION_BYTES_MAX = 4096
KEY_AGENCIES = b"gov/agencies"
KEY_VALIDATORS = b"gov/validators"
KEY_PARAMS = b"gov/params"
KEY_NEXT_ID = b"gov/next_id"
PROPOSAL_PREFIX = b"gov/proposal/"
EPOCH_PREFIX = b"gov/epoch/"

_U64 = struct.Struct(">Q")


class GovError(ValueError):
    """A governance transaction is malformed or not allowed now. The message says why."""


def proposal_key(pid: int) -> bytes:
    return PROPOSAL_PREFIX + _U64.pack(pid)


def epoch_key(epoch: int) -> bytes:
    return EPOCH_PREFIX + _U64.pack(epoch)


def encode_epoch(epoch: int, first_height: int, validators: tuple[bytes, ...]) -> bytes:
    """The value stored at `epoch_key(epoch)` (what `redwood verify` checks)."""
    return codec.pack(["redwood/epoch/v1", epoch, first_height, list(validators)])


def decode_epoch(raw: bytes) -> tuple[int, int, tuple[bytes, ...]]:
    """(epoch, first_height, validators) from `encode_epoch` bytes; DecodeError otherwise."""
    doc = codec.unpack(raw)
    if (
        type(doc) is not list
        or len(doc) != 4
        or doc[0] != "redwood/epoch/v1"
        or type(doc[1]) is not int
        or type(doc[2]) is not int
        or type(doc[3]) is not list
        or not 1 <= len(doc[3]) <= MAX_VALIDATORS
        or any(type(v) is not bytes or len(v) != PUBLIC_KEY_BYTES for v in doc[3])
    ):
        raise DecodeError("not an epoch record")
    return doc[1], doc[2], tuple(doc[3])


# -- actions -----------------------------------------------------------------------


def encode_action(kind: str, *args: Any) -> bytes:
    """Canonical bytes of a proposal's action (checked: GovError if malformed)."""
    raw = codec.pack([kind, *args])
    decode_action(raw)
    return raw


def decode_action(raw: bytes) -> tuple[Any, ...]:
    """The action as a tuple (kind, args...); GovError names what is wrong."""
    if len(raw) > ACTION_BYTES_MAX:
        raise GovError(f"proposal larger than {ACTION_BYTES_MAX} bytes")
    try:
        doc = codec.unpack(raw)
    except DecodeError as exc:
        raise GovError(f"proposal does not decode: {exc}") from None
    if type(doc) is not list or not doc or type(doc[0]) is not str:
        raise GovError("proposal must be [kind, args...]")
    kind, args = doc[0], doc[1:]
    shapes: dict[str, tuple[Any, ...]] = {
        "add_agency": (_agency_id, _name),
        "remove_agency": (_agency_id,),
        "add_member": (_agency_id, _key),
        "remove_member": (_agency_id, _key),
        "add_validator": (_key, _agency_id, _name, _addr),
        "remove_validator": (_key,),
        "set_param": (_param, _int),
    }
    shape = shapes.get(kind)
    if shape is None:
        raise GovError(f"unknown proposal kind {kind!r} (expected one of {', '.join(shapes)})")
    if len(args) != len(shape):
        raise GovError(f"{kind} takes {len(shape)} arguments, got {len(args)}")
    for check, arg in zip(shape, args, strict=True):
        check(arg, kind)
    if kind == "set_param":
        lo, hi = PARAM_RANGES[args[0]]
        if not lo <= args[1] <= hi:
            raise GovError(f"set_param {args[0]}: {args[1]} is out of range {lo}..{hi}")
    return (kind, *args)


def _agency_id(v: Any, kind: str) -> None:
    if type(v) is not str or not 1 <= len(v) <= MAX_AGENCY_CHARS or not _AGENCY_ID_RE.fullmatch(v):
        raise GovError(f"{kind}: bad agency id {v!r}")


def _name(v: Any, kind: str) -> None:
    if type(v) is not str or len(v) > NAME_CHARS_MAX:
        raise GovError(f"{kind}: name must be text of at most {NAME_CHARS_MAX} characters")


def _addr(v: Any, kind: str) -> None:
    if type(v) is not str or len(v) > ADDRESS_CHARS_MAX:
        raise GovError(f"{kind}: address must be host:port text")


def _key(v: Any, kind: str) -> None:
    if type(v) is not bytes or len(v) != PUBLIC_KEY_BYTES:
        raise GovError(f"{kind}: expected a {PUBLIC_KEY_BYTES}-byte public key")


def _param(v: Any, kind: str) -> None:
    if v not in MUTABLE_PARAMS:
        raise GovError(
            f"{kind}: {v!r} cannot change (mutable: {', '.join(sorted(MUTABLE_PARAMS))})"
        )


def _int(v: Any, kind: str) -> None:
    if type(v) is not int:
        raise GovError(f"{kind}: value must be an integer")


def describe(action: tuple[Any, ...]) -> dict[str, Any]:
    """JSON form of an action (keys in hex)."""
    kind, *args = action
    names = {
        "add_agency": ("agency", "name"),
        "remove_agency": ("agency",),
        "add_member": ("agency", "member"),
        "remove_member": ("agency", "member"),
        "add_validator": ("node_id", "agency", "name", "address"),
        "remove_validator": ("node_id",),
        "set_param": ("name", "value"),
    }[kind]
    out: dict[str, Any] = {"kind": kind}
    for n, a in zip(names, args, strict=True):
        out[n] = a.hex() if isinstance(a, bytes) else a
    return out


# -- proposals ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Proposal:
    id: int
    action: bytes  # encode_action bytes
    proposer: str  # agency
    height: int  # proposed at
    expires: int  # last height at which it may be approved
    approvals: tuple[str, ...]  # agencies, in order of approval
    status: str  # "open", "passed", "failed: <reason>"

    def encode(self) -> bytes:
        return codec.pack(
            [self.id, self.action, self.proposer, self.height, self.expires,
             list(self.approvals), self.status]
        )  # fmt: skip

    @classmethod
    def decode(cls, raw: bytes) -> Proposal:
        doc = codec.unpack(raw)
        if type(doc) is not list or len(doc) != 7:
            raise DecodeError("not a proposal record")
        pid, action, proposer, height, expires, approvals, status = doc
        return cls(pid, action, proposer, height, expires, tuple(approvals), status)

    def to_json(self, now: int) -> dict[str, Any]:
        status = self.status
        if status == "open" and now > self.expires:
            status = "expired"
        return {
            "id": self.id,
            "action": describe(decode_action(self.action)),
            "proposer": self.proposer,
            "height": self.height,
            "expires": self.expires,
            "approvals": list(self.approvals),
            "status": status,
        }


# -- state -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GovState:
    """Agencies, validators, parameters and epochs in force (genesis plus passed proposals)."""

    agencies: tuple[Agency, ...]
    validators: tuple[Validator, ...]
    params: Params
    epochs: tuple[tuple[int, int, tuple[bytes, ...]], ...] = ()  # (epoch, first, ids) after 0
    next_id: int = 1
    _by_id: dict[str, Agency] = field(init=False, repr=False, compare=False)
    _by_member: dict[bytes, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_id", {a.id: a for a in self.agencies})
        object.__setattr__(self, "_by_member", {m: a.id for a in self.agencies for m in a.members})

    @classmethod
    def from_genesis(cls, genesis: Genesis) -> GovState:
        return cls(genesis.agencies, genesis.validators, genesis.params)

    def agency(self, agency_id: str) -> Agency | None:
        return self._by_id.get(agency_id)

    def agency_of_member(self, public: bytes) -> str | None:
        return self._by_member.get(public)

    def node_ids(self) -> tuple[bytes, ...]:
        return tuple(v.node_id for v in self.validators)

    def passes(self, approvals: int) -> bool:
        p = self.params
        return approvals * p.gov_threshold_den >= p.gov_threshold_num * len(self.agencies)

    # -- encoding of the parts kept under gov/ keys ------------------------------

    def encode_agencies(self) -> bytes:
        return codec.pack([[a.id, a.name, list(a.members)] for a in self.agencies])

    def encode_validators(self) -> bytes:
        return codec.pack([[v.node_id, v.agency, v.name, v.address] for v in self.validators])

    def encode_params(self) -> bytes:
        return codec.pack([[n, getattr(self.params, n)] for n in PARAM_RANGES])

    @staticmethod
    def decode_agencies(raw: bytes) -> tuple[Agency, ...]:
        return tuple(Agency(i, n, tuple(m)) for i, n, m in codec.unpack(raw))

    @staticmethod
    def decode_validators(raw: bytes) -> tuple[Validator, ...]:
        return tuple(Validator(*v) for v in codec.unpack(raw))

    @staticmethod
    def decode_params(raw: bytes) -> Params:
        return Params(**dict(codec.unpack(raw)))


@dataclass(slots=True)
class GovBlock:
    """Governance effects of one block being executed (mutable scratch, then read out)."""

    state: GovState
    height: int
    pipeline_depth: int
    checkpoint_interval: int
    proposals: dict[int, Proposal] = field(default_factory=dict)
    writes: dict[bytes, bytes] = field(default_factory=dict)
    new_epochs: list[tuple[int, int, tuple[bytes, ...]]] = field(default_factory=list)

    def propose(self, agency: str, action_raw: bytes) -> int:
        """Record a proposal by `agency` (which approves it). Returns its id. GovError if bad."""
        decode_action(action_raw)
        s = self.state
        pid = s.next_id
        self.state = dataclasses.replace(s, next_id=pid + 1)
        self.writes[KEY_NEXT_ID] = _U64.pack(pid + 1)
        p = Proposal(
            pid, action_raw, agency, self.height,
            self.height + s.params.proposal_ttl_blocks, (), "open",
        )  # fmt: skip
        self._approve(p, agency)
        return pid

    def approve(self, agency: str, proposal: Proposal | None) -> None:
        if proposal is None:
            raise GovError("unknown proposal")
        proposal = self.proposals.get(proposal.id, proposal)
        if proposal.status != "open":
            raise GovError(f"proposal {proposal.id} is closed ({proposal.status})")
        if self.height > proposal.expires:
            raise GovError(f"proposal {proposal.id} expired at height {proposal.expires}")
        if agency in proposal.approvals:
            raise GovError(f"agency {agency!r} already approved proposal {proposal.id}")
        self._approve(proposal, agency)

    def _approve(self, p: Proposal, agency: str) -> None:
        p = dataclasses.replace(p, approvals=(*p.approvals, agency))
        live = [a for a in p.approvals if self.state.agency(a) is not None]
        if self.state.passes(len(live)):
            try:
                self._execute(decode_action(p.action))
                p = dataclasses.replace(p, status="passed")
            except GovError as exc:
                p = dataclasses.replace(p, status=f"failed: {exc}")
        self.proposals[p.id] = p
        self.writes[proposal_key(p.id)] = p.encode()

    def _execute(self, action: tuple[Any, ...]) -> None:
        s = self.state
        kind, *args = action
        agencies = list(s.agencies)
        validators = list(s.validators)
        if kind == "add_agency":
            if s.agency(args[0]) is not None:
                raise GovError(f"agency {args[0]!r} exists")
            if len(agencies) >= AGENCIES_MAX:
                raise GovError("too many agencies")
            agencies.append(Agency(args[0], args[1], ()))
        elif kind == "remove_agency":
            if s.agency(args[0]) is None:
                raise GovError(f"no agency {args[0]!r}")
            if any(v.agency == args[0] for v in validators):
                raise GovError(f"agency {args[0]!r} still runs validators")
            if len(agencies) == 1:
                raise GovError("the last agency cannot be removed")
            agencies = [a for a in agencies if a.id != args[0]]
        elif kind in ("add_member", "remove_member"):
            agencies = _change_member(s, kind, args[0], args[1])
        elif kind == "add_validator":
            node_id, agency, name, address = args
            if node_id in s.node_ids():
                raise GovError("already a validator")
            if s.agency(agency) is None:
                raise GovError(f"no agency {agency!r}")
            if len(validators) >= MAX_VALIDATORS:
                raise GovError("too many validators")
            validators.append(Validator(node_id, agency, name, address))
        elif kind == "remove_validator":
            if args[0] not in s.node_ids():
                raise GovError("not a validator")
            if len(validators) == 1:
                raise GovError("the last validator cannot be removed")
            validators = [v for v in validators if v.node_id != args[0]]
        elif kind == "set_param":
            params = dataclasses.replace(s.params, **{args[0]: args[1]})
            if params.gov_threshold_num > params.gov_threshold_den:
                raise GovError("gov_threshold_num cannot exceed gov_threshold_den")
            self.state = dataclasses.replace(s, params=params)
            self.writes[KEY_PARAMS] = self.state.encode_params()
            return
        new = dataclasses.replace(s, agencies=tuple(agencies), validators=tuple(validators))
        self.state = new
        if new.agencies != s.agencies:
            self.writes[KEY_AGENCIES] = new.encode_agencies()
        if new.validators != s.validators:
            self.writes[KEY_VALIDATORS] = new.encode_validators()
            self._schedule_epoch(new.node_ids())

    def _schedule_epoch(self, ids: tuple[bytes, ...]) -> None:
        s = self.state
        last_epoch, last_first = (s.epochs[-1][0], s.epochs[-1][1]) if s.epochs else (0, 1)
        first = next_boundary(
            max(self.height + 2 * self.pipeline_depth, last_first), self.checkpoint_interval
        )
        if s.epochs and last_first > self.height:
            # an epoch is already scheduled but not started: a later one follows it
            first = max(first, next_boundary(last_first, self.checkpoint_interval))
        entry = (last_epoch + 1, first, ids)
        self.state = dataclasses.replace(s, epochs=(*s.epochs, entry))
        self.writes[epoch_key(entry[0])] = encode_epoch(*entry)
        self.new_epochs.append(entry)


def next_boundary(height: int, interval: int) -> int:
    """The smallest k*interval + 1 strictly above `height`."""
    return -(-height // interval) * interval + 1


def _change_member(s: GovState, kind: str, agency_id: str, key: bytes) -> list[Agency]:
    agency = s.agency(agency_id)
    if agency is None:
        raise GovError(f"no agency {agency_id!r}")
    if kind == "add_member":
        if s.agency_of_member(key) is not None:
            raise GovError(f"key is already a member of {s.agency_of_member(key)!r}")
        if len(agency.members) >= MEMBERS_PER_AGENCY_MAX:
            raise GovError("too many members")
        members = (*agency.members, key)
    else:
        if key not in agency.members:
            raise GovError(f"key is not a member of {agency_id!r}")
        members = tuple(m for m in agency.members if m != key)
    changed = Agency(agency.id, agency.name, members)
    return [changed if a.id == agency_id else a for a in s.agencies]


def approval_value(pid: int) -> bytes:
    """The `value` of a gov.approve transaction."""
    return _U64.pack(pid)


def decode_approval(value: bytes) -> int:
    if len(value) != _U64.size:
        raise GovError("gov.approve value must be the proposal id as 8 bytes big-endian")
    return int(_U64.unpack(value)[0])
