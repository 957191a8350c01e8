"""Validator sets and the schedule of epochs (which set is in force at which height).

A `ValidatorSet` is one epoch's members in primary order. PBFT's numbers
follow from its size: n members tolerate f = (n-1)//3 faulty ones, and a
quorum is q = (n+f)//2 + 1 (= 2f+1 when n = 3f+1), so any two quora share
at least f+1 members, one of them correct (Castro & Liskov §4.1).

Membership changes take effect at a checkpoint boundary: an epoch starts at
`first_height` where `first_height - 1` is a multiple of the checkpoint
interval. `EpochSchedule.at(h)` gives the set in force at height h; every
certificate names its epoch and is checked against that set.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from consensus import codec
from consensus.crypto import PUBLIC_KEY_BYTES, sha256
from consensus.types import MAX_VALIDATORS


@dataclass(frozen=True, slots=True)
class ValidatorSet:
    """One epoch's validators (node ids = Ed25519 public keys), in primary order."""

    epoch: int
    validators: tuple[bytes, ...]
    _index: dict[bytes, int] = field(init=False, repr=False, compare=False, hash=False)
    _hash: bytes = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        if type(self.epoch) is not int or self.epoch < 0:
            raise ValueError("epoch must be an int >= 0")
        vals = tuple(self.validators)
        if not 1 <= len(vals) <= MAX_VALIDATORS:
            raise ValueError(f"a validator set has 1..{MAX_VALIDATORS} members")
        if any(not isinstance(v, bytes) or len(v) != PUBLIC_KEY_BYTES for v in vals):
            raise ValueError(f"validator ids are {PUBLIC_KEY_BYTES}-byte public keys")
        if len(set(vals)) != len(vals):
            raise ValueError("validator ids must be distinct")
        object.__setattr__(self, "validators", vals)
        object.__setattr__(self, "_index", {v: i for i, v in enumerate(vals)})
        packed = codec.pack(["redwood/validator-set/v1", self.epoch, list(vals)])
        object.__setattr__(self, "_hash", sha256(packed))

    @property
    def n(self) -> int:
        return len(self.validators)

    @property
    def f(self) -> int:
        return (self.n - 1) // 3

    @property
    def quorum(self) -> int:
        return (self.n + self.f) // 2 + 1

    def primary(self, view: int) -> bytes:
        return self.validators[view % self.n]

    def index(self, node_id: bytes) -> int | None:
        return self._index.get(node_id)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._index

    def hash(self) -> bytes:
        """What block headers carry as `validator_set_hash`."""
        return self._hash


@dataclass(frozen=True, slots=True)
class EpochSchedule:
    """(first height, set) pairs, ascending; the first starts at height 1."""

    epochs: tuple[tuple[int, ValidatorSet], ...]

    def __post_init__(self) -> None:
        if not self.epochs or self.epochs[0][0] != 1:
            raise ValueError("the first epoch must start at height 1")
        for (h0, s0), (h1, s1) in zip(self.epochs, self.epochs[1:], strict=False):
            if h1 <= h0 or s1.epoch <= s0.epoch:
                raise ValueError("epochs must ascend in first height and epoch number")

    def at(self, height: int) -> ValidatorSet:
        """The set in force at `height` (height 0, genesis, belongs to the first epoch)."""
        if len(self.epochs) == 1:
            return self.epochs[0][1]
        firsts = [h for h, _ in self.epochs]
        i = bisect.bisect_right(firsts, max(1, height)) - 1
        return self.epochs[i][1]

    def by_number(self, epoch: int) -> ValidatorSet | None:
        for _, vset in self.epochs:
            if vset.epoch == epoch:
                return vset
        return None

    def first_height(self, epoch: int) -> int | None:
        for h, vset in self.epochs:
            if vset.epoch == epoch:
                return h
        return None

    def with_epoch(self, first_height: int, vset: ValidatorSet) -> EpochSchedule:
        return EpochSchedule((*self.epochs, (first_height, vset)))

    @property
    def last(self) -> tuple[int, ValidatorSet]:
        return self.epochs[-1]
