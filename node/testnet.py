"""Node homes: `redwood init` (one node) and `redwood testnet` (a whole local chain).

A testnet directory looks like::

    OUT/testnet.json               what was generated (counts, ports, node ids), for reuse
    OUT/clients/agency0.key        client key of agency0's member (mode 0600)
    OUT/node0/config/node_key      node key (mode 0600)
    OUT/node0/config/node.toml     configuration: ports, peers, observer allowlist
    OUT/node0/config/genesis.json  identical in every node
    OUT/node0/data/
    ...

Validators come first (node0..node{N-1}, one agency each), then observers.
Node i listens on base_port + 10*i (p2p), +1 (API) and +2 (metrics).
Each node gets its own LevelDB write buffer (`[node] write_buffer_mb`, spread
over 24-40 MB): nodes on one machine then do not flush and compact together.
The genesis document follows docs/interfaces.md exactly.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from consensus.crypto import SigningKey
from node.config import (
    ApiSection,
    MetricsSection,
    NodeConfig,
    NodeSection,
    P2PSection,
    default_config,
    write_config,
)
from storage.keyfile import write_key

DEFAULT_CHAIN_ID = "redwood-local"
DEFAULT_BASE_PORT = 7700
PORT_STRIDE = 10
VALIDATORS_MAX = 64  # a local testnet, not the protocol limit
OBSERVERS_MAX = 64
RECOMMENDED_VALIDATORS_MIN = 4
MANIFEST = "testnet.json"
CHAIN_ID_CHARS_MAX = 64

DEFAULT_PARAMS: dict[str, int] = {
    "block_txs_max": 4000,
    "block_bytes_max": 1536 * 1024,  # lowered for large N by make_genesis (view-change size)
    "pipeline_depth": 4,
    "checkpoint_interval": 64,
    "record_value_bytes_max": 65536,
    "tx_ttl_blocks_max": 10000,
    "gov_threshold_num": 2,
    "gov_threshold_den": 3,
    "proposal_ttl_blocks": 10000,
}


class HomeError(Exception):
    """A node home or testnet directory cannot be created as asked."""


@dataclass(frozen=True, slots=True)
class NodePorts:
    p2p: int
    api: int
    metrics: int


def node_ports(base_port: int, index: int) -> NodePorts:
    first = base_port + PORT_STRIDE * index
    return NodePorts(first, first + 1, first + 2)


@dataclass(frozen=True, slots=True)
class TestnetNode:
    name: str
    home: Path
    node_id: str  # hex
    ports: NodePorts
    validator: bool

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.api}"


@dataclass(frozen=True, slots=True)
class Testnet:
    """What `generate_testnet` made (or `load_testnet` found)."""

    __test__ = False  # not a pytest class

    out: Path
    chain_id: str
    base_port: int
    validators: int
    observers: int
    nodes: tuple[TestnetNode, ...]
    client_keys: dict[str, Path]  # agency id -> key file

    def matches(self, validators: int, observers: int, base_port: int, chain_id: str) -> bool:
        return (self.validators, self.observers, self.base_port, self.chain_id) == (
            validators,
            observers,
            base_port,
            chain_id,
        )


def validate_chain_id(chain_id: str) -> None:
    if not chain_id or len(chain_id) > CHAIN_ID_CHARS_MAX or not chain_id.isprintable():
        raise HomeError(f"chain id must be 1..{CHAIN_ID_CHARS_MAX} printable characters")


def check_testnet_args(validators: int, observers: int, base_port: int) -> list[str]:
    """Raise HomeError for impossible arguments; return warnings for unwise ones."""
    if not 1 <= validators <= VALIDATORS_MAX:
        raise HomeError(f"--validators must be in 1..{VALIDATORS_MAX}, got {validators}")
    if not 0 <= observers <= OBSERVERS_MAX:
        raise HomeError(f"--observers must be in 0..{OBSERVERS_MAX}, got {observers}")
    last = node_ports(base_port, validators + observers - 1).metrics
    if base_port < 1 or last > 65535:
        raise HomeError(
            f"--base-port {base_port}: node ports would span {base_port}..{last}, outside 1..65535"
        )
    warnings = []
    if validators < RECOMMENDED_VALIDATORS_MIN:
        warnings.append(
            f"{validators} validator(s) tolerate no faulty node; "
            f"{RECOMMENDED_VALIDATORS_MIN} or more are recommended (n = 3f + 1)"
        )
    return warnings


def _prepare_dir(path: Path, force: bool, what: str) -> None:
    if path.exists() and not path.is_dir():
        raise HomeError(f"{path}: exists and is not a directory")
    if path.is_dir() and any(path.iterdir()) and not force:
        raise HomeError(
            f"{path}: {what} already exists and is not empty (use --force to overwrite)"
        )


def _write_json(path: Path, doc: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def init_home(
    home: Path,
    *,
    moniker: str | None = None,
    force: bool = False,
    config: NodeConfig | None = None,
    key: SigningKey | None = None,
) -> SigningKey:
    """Create a node home (key, node.toml, data/); return the node key."""
    _prepare_dir(home, force, "node home")
    key = key if key is not None else SigningKey.generate()
    cfg = config or default_config(home, node=NodeSection(moniker=moniker or home.name or "node"))
    write_key(cfg.key_path, key, overwrite=force)
    write_config(home, cfg)
    cfg.data_path.mkdir(parents=True, exist_ok=True)
    return key


def staggered_write_buffer_mb(index: int, total: int) -> int:
    """Node `index`'s LevelDB write buffer (MB) in a testnet of `total` nodes on one machine.

    Spread evenly over 24..40 MB (32 on average, the default): nodes that write
    the same blocks then fill their buffers at different moments, so their
    flushes and the compactions after them do not all start together.
    """
    middle = NodeSection().write_buffer_mb  # the option's default
    if total <= 1:
        return middle
    return middle - 8 + round(16 * index / (total - 1))


def _params_for(validators: int) -> dict[str, int]:
    from node.genesis import block_bytes_max_for

    params = dict(DEFAULT_PARAMS)
    limit = block_bytes_max_for(validators, params["pipeline_depth"])
    params["block_bytes_max"] = min(params["block_bytes_max"], limit)
    return params


def make_genesis(
    chain_id: str,
    validators: list[tuple[str, bytes, bytes, int]],
    genesis_time_ms: int,
) -> dict[str, Any]:
    """The genesis document; `validators` = (name, node id, agency member key, p2p port)."""
    agencies, entries = [], []
    for index, (name, node_id, member, port) in enumerate(validators):
        agency = f"agency{index}"
        agencies.append({"id": agency, "name": f"Agency {index}", "members": [member.hex()]})
        entries.append(
            {
                "node_id": node_id.hex(),
                "agency": agency,
                "name": name,
                "address": f"127.0.0.1:{port}",
            }
        )
    return {
        "chain_id": chain_id,
        "genesis_time_ms": genesis_time_ms,
        "agencies": agencies,
        "validators": entries,
        "params": _params_for(len(validators)),
    }


def generate_testnet(
    out: Path,
    validators: int,
    observers: int = 0,
    *,
    base_port: int = DEFAULT_BASE_PORT,
    chain_id: str = DEFAULT_CHAIN_ID,
    force: bool = False,
    genesis_time_ms: int | None = None,
) -> Testnet:
    """Create every node home of a local testnet under `out` (see the module docstring)."""
    check_testnet_args(validators, observers, base_port)
    validate_chain_id(chain_id)
    _prepare_dir(out, force, "testnet directory")
    total = validators + observers
    node_keys = [SigningKey.generate() for _ in range(total)]
    client_keys = [SigningKey.generate() for _ in range(validators)]
    ports = [node_ports(base_port, i) for i in range(total)]
    genesis = make_genesis(
        chain_id,
        [
            (f"node{i}", node_keys[i].public, client_keys[i].public, ports[i].p2p)
            for i in range(validators)
        ],
        int(time.time() * 1000) if genesis_time_ms is None else genesis_time_ms,
    )
    check_genesis(genesis)
    observer_ids = tuple(k.public.hex() for k in node_keys[validators:])
    nodes = []
    for i in range(total):
        home = out / f"node{i}"
        _remove_old_chain(home)
        peers = tuple(
            f"{node_keys[j].public.hex()}@127.0.0.1:{ports[j].p2p}" for j in range(total) if j != i
        )
        cfg = default_config(
            home,
            node=NodeSection(
                moniker=f"node{i}", write_buffer_mb=staggered_write_buffer_mb(i, total)
            ),
            p2p=P2PSection(listen=f"127.0.0.1:{ports[i].p2p}", peers=peers, observers=observer_ids),
            api=ApiSection(listen=f"127.0.0.1:{ports[i].api}"),
            metrics=MetricsSection(listen=f"127.0.0.1:{ports[i].metrics}"),
        )
        init_home(home, force=True, config=cfg, key=node_keys[i])
        _write_json(cfg.genesis_path, genesis)
        nodes.append(
            TestnetNode(f"node{i}", home, node_keys[i].public.hex(), ports[i], i < validators)
        )
    key_files = {}
    for i, key in enumerate(client_keys):
        key_files[f"agency{i}"] = out / "clients" / f"agency{i}.key"
        write_key(key_files[f"agency{i}"], key, overwrite=True)
    testnet = Testnet(out, chain_id, base_port, validators, observers, tuple(nodes), key_files)
    _write_json(out / MANIFEST, _manifest(testnet))
    return testnet


def _remove_old_chain(home: Path) -> None:
    """With --force the genesis changes, so a chain store left in `home/data` is useless."""
    data = home / "data"
    if data.is_dir() and (home / "config" / "node.toml").is_file():
        shutil.rmtree(data)


def check_genesis(doc: dict[str, Any]) -> None:
    """Validate with node.genesis (the reference parser); HomeError names the bad field."""
    try:
        from node.genesis import Genesis, GenesisError
    except ImportError:  # genesis.py not there yet: the document follows interfaces.md
        return
    try:
        Genesis.from_dict(doc)
    except GenesisError as exc:
        raise HomeError(f"genesis: {exc}") from None


def _manifest(testnet: Testnet) -> dict[str, Any]:
    return {
        "chain_id": testnet.chain_id,
        "base_port": testnet.base_port,
        "validators": testnet.validators,
        "observers": testnet.observers,
        "nodes": [
            {"name": n.name, "node_id": n.node_id, "validator": n.validator} for n in testnet.nodes
        ],
        "clients": {
            agency: str(path.relative_to(testnet.out))
            for agency, path in testnet.client_keys.items()
        },
    }


def load_testnet(out: Path) -> Testnet:
    """Read back a generated testnet from its manifest; HomeError if it is not one."""
    try:
        doc = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
        base_port = int(doc["base_port"])
        nodes = tuple(
            TestnetNode(
                str(n["name"]),
                out / str(n["name"]),
                str(n["node_id"]),
                node_ports(base_port, i),
                bool(n["validator"]),
            )
            for i, n in enumerate(doc["nodes"])
        )
        clients = {str(a): out / str(p) for a, p in doc["clients"].items()}
        testnet = Testnet(
            out,
            str(doc["chain_id"]),
            base_port,
            int(doc["validators"]),
            int(doc["observers"]),
            nodes,
            clients,
        )
    except FileNotFoundError:
        raise HomeError(f"{out}: no {MANIFEST}; not a testnet made by `redwood testnet`") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise HomeError(f"{out / MANIFEST}: unreadable ({type(exc).__name__}: {exc})") from None
    for node in nodes:
        if not (node.home / "config" / "node.toml").is_file():
            raise HomeError(f"{node.home}: missing config/node.toml; regenerate with --force")
    return testnet
