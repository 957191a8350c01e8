"""node.genesis: strict reading, canonical form and hash, lookups."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from consensus.crypto import SigningKey
from node.genesis import Genesis, GenesisError, Params

KEYS = [SigningKey(bytes([i + 1]) * 32) for i in range(6)]


def doc() -> dict[str, Any]:
    return {
        "chain_id": "redwood-test",
        "genesis_time_ms": 1_700_000_000_000,
        "agencies": [
            {"id": "agency0", "name": "Agency 0", "members": [KEYS[0].public.hex()]},
            {"id": "agency1", "name": "Agency 1", "members": [KEYS[1].public.hex()]},
        ],
        "validators": [
            {
                "node_id": KEYS[2 + i].public.hex(),
                "agency": f"agency{i % 2}",
                "name": f"node{i}",
                "address": f"127.0.0.1:{7700 + i}",
            }
            for i in range(4)
        ],
        "params": {"block_txs_max": 1000, "tx_ttl_blocks_max": 50},
    }


def test_from_dict_fills_defaults_and_keeps_given_params() -> None:
    g = Genesis.from_dict(doc())
    assert g.chain_id == "redwood-test"
    assert g.params.block_txs_max == 1000
    assert g.params.tx_ttl_blocks_max == 50
    assert g.params.record_value_bytes_max == Params().record_value_bytes_max == 65536
    assert g.params.gov_threshold_num == 2 and g.params.gov_threshold_den == 3
    assert len(g.validators) == 4 and g.validators[1].node_id == KEYS[3].public


def test_to_dict_round_trips_and_hash_is_sha256_of_canonical_json() -> None:
    g = Genesis.from_dict(doc())
    full = g.to_dict()
    assert Genesis.from_dict(full) == g
    canonical = json.dumps(full, sort_keys=True, separators=(",", ":")).encode()
    assert g.hash() == hashlib.sha256(canonical).digest()


def test_hash_ignores_whether_defaults_were_written_out() -> None:
    sparse = doc()
    sparse["agencies"][0].pop("name")
    sparse.pop("genesis_time_ms")
    g = Genesis.from_dict(sparse)
    assert g.genesis_time_ms == 0 and g.agencies[0].name == "agency0"
    assert Genesis.from_dict(g.to_dict()).hash() == g.hash()


def test_hash_changes_with_any_field() -> None:
    base = Genesis.from_dict(doc()).hash()
    changed = doc()
    changed["params"]["block_txs_max"] = 999
    assert Genesis.from_dict(changed).hash() != base
    reordered = doc()
    reordered["validators"].reverse()  # primary order matters
    assert Genesis.from_dict(reordered).hash() != base


def test_save_then_load_gives_the_same_genesis_and_file_hash(tmp_path: Path) -> None:
    g = Genesis.from_dict(doc())
    path = tmp_path / "genesis.json"
    g.save(path)
    loaded = Genesis.load(path)
    assert loaded == g and loaded.hash() == g.hash()
    on_disk = json.loads(path.read_text())
    text = json.dumps(on_disk, sort_keys=True, separators=(",", ":")).encode()
    assert hashlib.sha256(text).digest() == g.hash()


def test_lookups() -> None:
    g = Genesis.from_dict(doc())
    assert g.agency("agency1") is not None and g.agency("nope") is None
    assert g.agency_of_member(KEYS[1].public) == "agency1"
    assert g.agency_of_member(KEYS[5].public) is None
    assert g.node_ids() == tuple(k.public for k in KEYS[2:6])


def test_validator_set_is_in_primary_order() -> None:
    vs = Genesis.from_dict(doc()).validator_set()
    ids = getattr(vs, "validators", vs)
    assert tuple(ids) == tuple(k.public for k in KEYS[2:6])
    if hasattr(vs, "quorum"):
        assert vs.n == 4 and vs.quorum == 3 and vs.epoch == 0


def _mutated(path: list[Any], value: Any) -> dict[str, Any]:
    d = copy.deepcopy(doc())
    target: Any = d
    for step in path[:-1]:
        target = target[step]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return d


_DELETE = object()
K0 = KEYS[0].public.hex()


@pytest.mark.parametrize(
    ("path", "value", "names"),
    [
        (["extra"], 1, "unknown field"),
        (["chain_id"], _DELETE, "genesis.chain_id: required"),
        (["chain_id"], "", "genesis.chain_id"),
        (["chain_id"], "has space", "genesis.chain_id"),
        (["chain_id"], 7, "genesis.chain_id: expected text"),
        (["genesis_time_ms"], -1, "genesis.genesis_time_ms"),
        (["genesis_time_ms"], True, "genesis.genesis_time_ms: expected an integer"),
        (["agencies"], [], "genesis.agencies: needs 1"),
        (["agencies", 0, "colour"], "red", "agencies[0]: unknown field"),
        (["agencies", 0, "id"], "Agency0", "agencies[0].id"),
        (["agencies", 1, "id"], "agency0", "agencies[1].id: duplicate agency id"),
        (["agencies", 0, "members"], [K0.upper()], "agencies[0].members[0]"),
        (["agencies", 0, "members"], [K0[:-2]], "agencies[0].members[0]"),
        (["agencies", 0, "members"], ["zz" * 32], "agencies[0].members[0]"),
        (["agencies", 0, "members"], [K0, K0], "agencies[0].members[1]: key"),
        (["agencies", 1, "members"], [K0], "already a member of agency 'agency0'"),
        (["validators"], [], "genesis.validators: needs 1"),
        (["validators", 0, "node_id"], "00", "validators[0].node_id"),
        (["validators", 1, "node_id"], KEYS[2].public.hex(), "validators[1].node_id: duplicate"),
        (["validators", 2, "agency"], "agency9", "validators[2].agency: unknown agency"),
        (["validators", 0, "address"], "localhost", "validators[0].address"),
        (["validators", 0, "address"], "h:70000", "validators[0].address"),
        (["validators", 0, "port"], 1, "validators[0]: unknown field"),
        (["params", "block_txs_max"], 0, "params.block_txs_max: 0 is out of range"),
        (["params", "pipeline_depth"], 1000, "params.pipeline_depth"),
        (["params", "record_value_bytes_max"], 2**30, "params.record_value_bytes_max"),
        (["params", "gov_threshold_num"], 4, "params.gov_threshold_num: 4 exceeds"),
        (["params", "block_bytes_max"], 2048, "params.block_bytes_max: 2048 cannot hold"),
        (["params", "unknown_knob"], 1, "params: unknown field"),
        (["params"], [], "params: expected an object"),
    ],
)
def test_bad_documents_are_refused_naming_the_field(
    path: list[Any], value: Any, names: str
) -> None:
    with pytest.raises(GenesisError, match=None) as info:
        Genesis.from_dict(_mutated(path, value))
    assert names in str(info.value)


def test_top_level_must_be_an_object() -> None:
    with pytest.raises(GenesisError, match="expected an object"):
        Genesis.from_dict([1, 2])


def test_load_refuses_floats_bad_json_and_missing_files(tmp_path: Path) -> None:
    path = tmp_path / "genesis.json"
    with pytest.raises(GenesisError, match="cannot read"):
        Genesis.load(path)
    path.write_text("{not json")
    with pytest.raises(GenesisError, match="not valid JSON"):
        Genesis.load(path)
    d = doc()
    text = json.dumps(d).replace('"genesis_time_ms": 1700000000000', '"genesis_time_ms": 1.5')
    path.write_text(text)
    with pytest.raises(GenesisError, match="integers"):
        Genesis.load(path)
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(GenesisError, match=str(path)):
        Genesis.load(path)


def test_load_error_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "genesis.json"
    path.write_text(json.dumps(_mutated(["validators"], [])))
    with pytest.raises(GenesisError) as info:
        Genesis.load(path)
    assert str(path) in str(info.value) and "validators" in str(info.value)


def test_block_size_is_bounded_so_a_new_view_fits_in_one_message() -> None:
    """q VIEW-CHANGEs of pipeline_depth full blocks must fit codec.MAX_MESSAGE_BYTES."""
    from consensus import codec
    from node.genesis import block_bytes_max_for, view_change_bytes_bound

    big = copy.deepcopy(doc())
    big["params"] = {"block_bytes_max": 8 * 1024 * 1024, "pipeline_depth": 4}
    with pytest.raises(GenesisError, match=r"params\.block_bytes_max"):
        Genesis.from_dict(big)
    for n in (1, 4, 7, 16, 64):
        limit = block_bytes_max_for(n, 4)
        assert view_change_bytes_bound(n, Params(block_bytes_max=limit)) < codec.MAX_MESSAGE_BYTES
    assert view_change_bytes_bound(4, Params()) < codec.MAX_MESSAGE_BYTES  # defaults fit n = 4


def test_testnet_params_fit_large_validator_counts() -> None:
    from node.testnet import make_genesis

    validators = [
        (f"node{i}", SigningKey.generate().public, SigningKey.generate().public, 7700 + 10 * i)
        for i in range(16)
    ]
    Genesis.from_dict(make_genesis("redwood-test", validators, 0))  # must not raise
