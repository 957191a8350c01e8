"""node/config.py: defaults round-trip, every validation error names its option, env overrides."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from node.config import (
    SECTIONS,
    ConfigError,
    NodeConfig,
    P2PSection,
    config_path,
    default_config,
    env_name,
    load_config,
    render_config,
    write_config,
)

PEER_ID = "ab" * 32
OTHER_ID = "cd" * 32


def write_toml(home: Path, text: str) -> None:
    path = config_path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def load_text(home: Path, text: str, env: dict[str, str] | None = None) -> NodeConfig:
    write_toml(home, text)
    return load_config(home, env=env or {})


def test_defaults_round_trip_through_the_written_file(tmp_path: Path) -> None:
    cfg = default_config(
        tmp_path,
        p2p=P2PSection(peers=(f"{PEER_ID}@127.0.0.1:7710",), observers=(OTHER_ID,)),
    )
    write_config(tmp_path, cfg)
    assert load_config(tmp_path, env={}) == cfg


def test_empty_file_gives_documented_defaults(tmp_path: Path) -> None:
    cfg = load_text(tmp_path, "")
    assert cfg.consensus.tick_ms == 100
    assert cfg.consensus.propose_empty_blocks is False
    assert cfg.log.format == "auto"
    assert cfg.key_path == tmp_path / "config" / "node_key"
    assert cfg.genesis_path == tmp_path / "config" / "genesis.json"
    assert cfg.data_path == tmp_path / "data"


def test_written_file_documents_every_option_and_its_env_variable(tmp_path: Path) -> None:
    text = render_config(default_config(tmp_path))
    for section, cls in SECTIONS.items():
        assert f"[{section}]" in text
        for f in dataclasses.fields(cls):
            assert f"\n{f.name} = " in text, f.name
            assert env_name(section, f.name) in text
            assert f.metadata["doc"] in text


def test_absolute_paths_are_kept(tmp_path: Path) -> None:
    cfg = load_text(tmp_path, '[node]\ndata_dir = "/var/lib/redwood"\n')
    assert cfg.data_path == Path("/var/lib/redwood")


def test_peers_and_observers_parse(tmp_path: Path) -> None:
    cfg = load_text(
        tmp_path,
        f'[p2p]\npeers = ["{PEER_ID}@10.0.0.1:7700", "{OTHER_ID}@[::1]:7710"]\n'
        f'observers = ["{PEER_ID.upper()}"]\n',
    )
    assert cfg.peer_addresses() == [
        (bytes.fromhex(PEER_ID), "10.0.0.1", 7700),
        (bytes.fromhex(OTHER_ID), "::1", 7710),
    ]
    assert cfg.observer_ids() == [bytes.fromhex(PEER_ID)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[bogus]\nx = 1\n", "[bogus]: unknown section"),
        ("[api]\nlisn = '1.2.3.4:5'\n", "[api] lisn: unknown option"),
        ("[p2p]\nlisten = 'x'\n", "[p2p] listen: expected host:port, got 'x'"),
        ("[p2p]\nlisten = 7700\n", "[p2p] listen: expected host:port"),
        ("[api]\nlisten = '127.0.0.1:70000'\n", "[api] listen: port must be in 0..65535"),
        ("[mempool]\nmax_txs = 'many'\n", "[mempool] max_txs: expected an integer"),
        ("[mempool]\nmax_txs = 0\n", "[mempool] max_txs: expected an integer in 1.."),
        ("[mempool]\nmax_txs = true\n", "[mempool] max_txs: expected an integer"),
        (
            "[consensus]\npropose_empty_blocks = 1\n",
            "[consensus] propose_empty_blocks: expected true or false",
        ),
        ("[log]\nformat = 'xml'\n", "[log] format: expected one of auto, text, json"),
        ("[log]\nlevel = 'loud'\n", "[log] level: expected one of"),
        ("[node]\nmoniker = ''\n", "[node] moniker: expected a non-empty string"),
        (
            "[node]\nwrite_buffer_mb = 2\n",
            "[node] write_buffer_mb: expected an integer in 4..1024, got 2",
        ),
        ("[p2p]\npeers = 'a@b:1'\n", "[p2p] peers: expected a list"),
        (
            "[p2p]\npeers = ['127.0.0.1:7700']\n",
            "[p2p] peers: item 0: expected <hex node id>@host:port",
        ),
        (
            f"[p2p]\npeers = ['{PEER_ID[:10]}@h:1']\n",
            "[p2p] peers: item 0: expected a node id of 64 hex",
        ),
        (f"[p2p]\npeers = ['{PEER_ID}@h:0']\n", "[p2p] peers: item 0: port must be in 1..65535"),
        (
            f"[p2p]\npeers = ['{PEER_ID}@a:1', '{PEER_ID}@b:2']\n",
            "[p2p] peers: the same node id is listed twice",
        ),
        (f"[p2p]\nobservers = ['{PEER_ID}', '{PEER_ID}']\n", "[p2p] observers: duplicate entries"),
        ("[p2p]\nobservers = ['zz']\n", "[p2p] observers: item 0: expected a node id"),
        ("api = 1\n", "[api]: expected a table"),
        (
            "[consensus]\ntick_ms = 100\nview_change_timeout_ms = 150\n",
            "[consensus] view_change_timeout_ms: must be at least twice tick_ms",
        ),
        (
            "[api]\nlisten = '127.0.0.1:7700'\n",
            "[api] listen: port 7700 is also used by [p2p] listen",
        ),
        ("[api\n", "not valid TOML"),
    ],
)
def test_bad_values_name_the_option(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_text(tmp_path, text)
    assert expected in str(info.value)
    assert str(config_path(tmp_path)) in str(info.value)


def test_metrics_port_conflict_ignored_when_metrics_disabled(tmp_path: Path) -> None:
    cfg = load_text(tmp_path, "[metrics]\nenabled = false\nlisten = '127.0.0.1:7701'\n")
    assert cfg.metrics.enabled is False


def test_missing_home_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="node home not found; create one with `redwood init"):
        load_config(tmp_path / "absent", env={})
    with pytest.raises(ConfigError, match=r"node\.toml: not found"):
        load_config(tmp_path, env={})


def test_env_overrides_each_kind(tmp_path: Path) -> None:
    env = {
        "REDWOOD_API_LISTEN": "0.0.0.0:9701",
        "REDWOOD_MEMPOOL_MAX_TXS": "5000",
        "REDWOOD_CONSENSUS_PROPOSE_EMPTY_BLOCKS": "true",
        "REDWOOD_P2P_PEERS": f"{PEER_ID}@h1:1, {OTHER_ID}@h2:2",
        "REDWOOD_P2P_OBSERVERS": "",
        "REDWOOD_LOG_FORMAT": "JSON",
        "REDWOOD_HOME": "/ignored",  # not a section: not ours
        "PATH": "/bin",
    }
    cfg = load_text(tmp_path, f"[p2p]\nobservers = ['{PEER_ID}']\n[mempool]\nmax_txs = 7\n", env)
    assert cfg.api.listen == "0.0.0.0:9701"
    assert cfg.mempool.max_txs == 5000
    assert cfg.consensus.propose_empty_blocks is True
    assert cfg.p2p.peers == (f"{PEER_ID}@h1:1", f"{OTHER_ID}@h2:2")
    assert cfg.p2p.observers == ()
    assert cfg.log.format == "json"


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"REDWOOD_API_LISTEN": "nowhere"},
            "REDWOOD_API_LISTEN (overriding [api] listen): expected host:port",
        ),
        (
            {"REDWOOD_MEMPOOL_MAX_TXS": "lots"},
            "REDWOOD_MEMPOOL_MAX_TXS (overriding [mempool] max_txs): expected an integer",
        ),
        ({"REDWOOD_MEMPOOL_MAX_TXS": "-1"}, "expected an integer in 1.."),
        (
            {"REDWOOD_METRICS_ENABLED": "maybe"},
            "REDWOOD_METRICS_ENABLED (overriding [metrics] enabled): expected true or false",
        ),
        ({"REDWOOD_API_LISTN": "1.2.3.4:5"}, "REDWOOD_API_LISTN: [api] has no option 'listn'"),
        ({"REDWOOD_P2P_PEERS": "garbage"}, "REDWOOD_P2P_PEERS (overriding [p2p] peers): item 0"),
    ],
)
def test_bad_env_overrides_name_the_variable(
    tmp_path: Path, env: dict[str, str], expected: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_text(tmp_path, "", env)
    assert expected in str(info.value)


def test_load_config_reads_os_environ_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_toml(tmp_path, "")
    monkeypatch.setenv("REDWOOD_LOG_LEVEL", "debug")
    assert load_config(tmp_path).log.level == "debug"


def test_default_config_validates_its_sections(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[p2p\] listen"):
        default_config(tmp_path, p2p=P2PSection(listen="nope"))
