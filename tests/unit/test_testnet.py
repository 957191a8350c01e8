"""node/testnet.py: node home and testnet layout, keys and permissions, shared genesis, peers."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from node.config import load_config
from node.testnet import (
    HomeError,
    check_testnet_args,
    generate_testnet,
    init_home,
    load_testnet,
    node_ports,
    staggered_write_buffer_mb,
)
from storage.keyfile import read_key


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def testnet_dir(tmp_path: Path) -> Path:
    out = tmp_path / "net"
    generate_testnet(out, 4, 1, base_port=20000, chain_id="test-chain")
    return out


def test_layout_keys_and_permissions(testnet_dir: Path) -> None:
    names = sorted(p.name for p in testnet_dir.iterdir())
    assert names == ["clients", "node0", "node1", "node2", "node3", "node4", "testnet.json"]
    for i in range(5):
        home = testnet_dir / f"node{i}"
        assert (home / "data").is_dir()
        assert mode(home / "config" / "node_key") == 0o600
        assert (home / "config" / "node.toml").is_file()
    assert sorted(p.name for p in (testnet_dir / "clients").iterdir()) == [
        f"agency{i}.key" for i in range(4)
    ]
    for key_file in (testnet_dir / "clients").iterdir():
        assert mode(key_file) == 0o600
        read_key(key_file)  # loads: right format, safe mode


def test_genesis_is_shared_and_matches_keys(testnet_dir: Path) -> None:
    texts = {(testnet_dir / f"node{i}/config/genesis.json").read_text() for i in range(5)}
    assert len(texts) == 1
    genesis = json.loads(texts.pop())
    assert genesis["chain_id"] == "test-chain"
    assert set(genesis) == {"chain_id", "genesis_time_ms", "agencies", "validators", "params"}
    assert [v["name"] for v in genesis["validators"]] == ["node0", "node1", "node2", "node3"]
    for i, (validator, agency) in enumerate(
        zip(genesis["validators"], genesis["agencies"], strict=True)
    ):
        node_key = read_key(testnet_dir / f"node{i}/config/node_key")
        client_key = read_key(testnet_dir / f"clients/agency{i}.key")
        assert validator["node_id"] == node_key.public.hex()
        assert validator["agency"] == agency["id"] == f"agency{i}"
        assert validator["address"] == f"127.0.0.1:{20000 + 10 * i}"
        assert agency["members"] == [client_key.public.hex()]
    observer = read_key(testnet_dir / "node4/config/node_key").public.hex()
    assert observer not in {v["node_id"] for v in genesis["validators"]}


def test_genesis_passes_the_genesis_parser(testnet_dir: Path) -> None:
    genesis_module = pytest.importorskip("node.genesis")
    genesis = genesis_module.Genesis.load(testnet_dir / "node0/config/genesis.json")
    assert genesis.chain_id == "test-chain"
    assert len(genesis.validators) == 4


def test_configs_list_ports_peers_and_observers(testnet_dir: Path) -> None:
    ids = [read_key(testnet_dir / f"node{i}/config/node_key").public.hex() for i in range(5)]
    for i in range(5):
        cfg = load_config(testnet_dir / f"node{i}", env={})
        ports = node_ports(20000, i)
        assert cfg.node.moniker == f"node{i}"
        assert cfg.p2p.listen == f"127.0.0.1:{ports.p2p}"
        assert cfg.api.listen == f"127.0.0.1:{ports.api}"
        assert cfg.metrics.listen == f"127.0.0.1:{ports.metrics}"
        expected_peers = {
            f"{ids[j]}@127.0.0.1:{node_ports(20000, j).p2p}" for j in range(5) if j != i
        }
        assert set(cfg.p2p.peers) == expected_peers
        assert cfg.p2p.observers == (ids[4],)


def test_nodes_get_staggered_write_buffers(testnet_dir: Path) -> None:
    """Nodes on one machine write the same blocks: with one buffer size they would flush
    and compact at the same moment, so each gets its own size, 32 MB on average."""
    sizes = [load_config(testnet_dir / f"node{i}", env={}).node.write_buffer_mb for i in range(5)]
    assert sizes == [24, 28, 32, 36, 40]
    for total in range(2, 33):
        spread = [staggered_write_buffer_mb(i, total) for i in range(total)]
        assert spread[0] == 24 and spread[-1] == 40 and spread == sorted(spread)
        assert len(set(spread)) == min(total, 17)  # whole MB: distinct up to 17 nodes
        assert abs(sum(spread) / total - 32) < 0.5
    assert staggered_write_buffer_mb(0, 1) == 32


def test_manifest_round_trips(tmp_path: Path) -> None:
    made = generate_testnet(tmp_path / "n", 2, 1, base_port=30000)
    loaded = load_testnet(tmp_path / "n")
    assert loaded == made
    assert loaded.matches(2, 1, 30000, "redwood-local")
    assert not loaded.matches(3, 1, 30000, "redwood-local")
    assert [n.validator for n in loaded.nodes] == [True, True, False]
    assert loaded.nodes[2].api_url == "http://127.0.0.1:30021"


def test_load_testnet_refuses_other_directories(tmp_path: Path) -> None:
    with pytest.raises(HomeError, match="not a testnet"):
        load_testnet(tmp_path)
    (tmp_path / "testnet.json").write_text("{not json")
    with pytest.raises(HomeError, match="unreadable"):
        load_testnet(tmp_path)


def test_refuses_non_empty_out_unless_forced(tmp_path: Path) -> None:
    out = tmp_path / "n"
    first = generate_testnet(out, 1, base_port=30000)
    (out / "node0" / "data" / "CURRENT").write_text("old chain")
    with pytest.raises(HomeError, match=r"not empty.*--force"):
        generate_testnet(out, 1, base_port=30000)
    second = generate_testnet(out, 1, base_port=30000, force=True)
    assert second.nodes[0].node_id != first.nodes[0].node_id
    assert not (out / "node0" / "data" / "CURRENT").exists()  # old chain data removed
    (tmp_path / "file").write_text("x")
    with pytest.raises(HomeError, match="not a directory"):
        generate_testnet(tmp_path / "file", 1)


@pytest.mark.parametrize(
    ("validators", "observers", "base_port", "expected"),
    [
        (0, 0, 7700, "--validators must be in 1.."),
        (65, 0, 7700, "--validators must be in 1.."),
        (4, -1, 7700, "--observers must be in 0.."),
        (4, 0, 65530, "outside 1..65535"),
        (4, 0, 0, "outside 1..65535"),
    ],
)
def test_bad_testnet_arguments(
    validators: int, observers: int, base_port: int, expected: str
) -> None:
    with pytest.raises(HomeError, match=expected):
        check_testnet_args(validators, observers, base_port)


def test_fewer_than_four_validators_warns() -> None:
    assert check_testnet_args(4, 0, 7700) == []
    (warning,) = check_testnet_args(3, 0, 7700)
    assert "4 or more are recommended" in warning


def test_bad_chain_id(tmp_path: Path) -> None:
    with pytest.raises(HomeError, match="chain id"):
        generate_testnet(tmp_path / "n", 1, chain_id="x" * 65)


def test_init_home_layout_and_refusal(tmp_path: Path) -> None:
    home = tmp_path / "h"
    key = init_home(home, moniker="alpha")
    assert mode(home / "config" / "node_key") == 0o600
    assert read_key(home / "config" / "node_key").public == key.public
    assert load_config(home, env={}).node.moniker == "alpha"
    assert (home / "data").is_dir()
    with pytest.raises(HomeError, match="already exists"):
        init_home(home)
    assert init_home(home, force=True).public != key.public


def test_base_ports_are_free_and_outside_the_ephemeral_range(monkeypatch) -> None:
    import random

    from node import localnet

    monkeypatch.setattr(localnet, "ephemeral_port_range", lambda: (15_000, 55_000))
    rng = random.Random(7)
    for _ in range(50):
        base = localnet.choose_base_port(16, 10, rng)
        assert base + 160 <= 15_000 or base >= 55_000
        assert not any(localnet.port_in_use(p) for p in (base, base + 159))
    monkeypatch.setattr(localnet, "ephemeral_port_range", lambda: (0, 65_535))
    with pytest.raises(RuntimeError, match="ephemeral"):
        localnet.choose_base_port(4, 10, rng)
