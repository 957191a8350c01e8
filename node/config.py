"""The node's configuration: `config/node.toml` in the node home, strictly validated.

A node home holds `config/node.toml` (this module), `config/node_key`,
`config/genesis.json` and `data/`. The file has one table per section; each
section is a frozen dataclass below, and every option has a default, a
documentation line (written into the generated file as a comment) and a
validator. Loading is strict: an unknown section or key, a value of the wrong
type or out of range is a `ConfigError` whose message names the option, e.g.
``[p2p] listen: expected host:port, got 'x'``.

Environment overrides (for containers)
--------------------------------------
Every option can be overridden by an environment variable named
``REDWOOD_<SECTION>_<KEY>`` in upper case, e.g. ``REDWOOD_API_LISTEN=0.0.0.0:7701``
or ``REDWOOD_LOG_FORMAT=json``. Values are parsed from text: integers in
decimal, booleans as ``true``/``false`` (also ``1``/``0``, ``yes``/``no``), lists
as comma-separated items (an empty value is an empty list). They go through
the same validation as the file. A variable that starts with the prefix of a
known section but names no option of it (``REDWOOD_API_LISTN``) is an error,
so that typos do not pass silently.

Relative paths in `[node]` are relative to the node home.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

CONFIG_FILE = Path("config") / "node.toml"
ENV_PREFIX = "REDWOOD_"
NODE_ID_HEX_CHARS = 64
CONFIG_FILE_BYTES_MAX = 1024 * 1024
PEERS_MAX = 256
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("auto", "text", "json")


class ConfigError(Exception):
    """The configuration is missing or invalid; the message names the option."""


# -- value kinds: each parses one option's value or raises ValueError ----------------


@dataclass(frozen=True, slots=True)
class Kind:
    """How to check a value from TOML and how to parse it from an environment variable."""

    check: Callable[[Any], Any]
    from_text: Callable[[str], Any]


def _text(value: str) -> str:
    return value


def _check_str(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected a non-empty string, got {value!r}")
    if len(value) > 4096:
        raise ValueError("expected a string of at most 4096 characters")
    return value


def _int_kind(minimum: int, maximum: int) -> Kind:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected an integer, got {value!r}")
        if not minimum <= value <= maximum:
            raise ValueError(f"expected an integer in {minimum}..{maximum}, got {value}")
        return value

    def from_text(text: str) -> int:
        try:
            return int(text.strip(), 10)
        except ValueError:
            raise ValueError(f"expected an integer, got {text!r}") from None

    return Kind(check, from_text)


def _check_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value


def _bool_from_text(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def _choice_kind(choices: tuple[str, ...]) -> Kind:
    def check(value: Any) -> str:
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {value!r}")
        return str(value)

    return Kind(check, lambda text: text.strip().lower())


def parse_host_port(text: Any, *, port_min: int = 1) -> tuple[str, int]:
    """Split "host:port" (or "[v6]:port"); ValueError with a clear message if malformed."""
    if not isinstance(text, str):
        raise ValueError(f"expected host:port, got {text!r}")
    match = re.fullmatch(r"\[([0-9a-fA-F:.]+)\]:(\d{1,5})|([A-Za-z0-9.\-_]+):(\d{1,5})", text)
    if match is None:
        raise ValueError(f"expected host:port, got {text!r}")
    host = match.group(1) or match.group(3)
    port = int(match.group(2) or match.group(4))
    if not port_min <= port <= 65535:
        raise ValueError(f"port must be in {port_min}..65535, got {text!r}")
    return host, port


def _check_listen(value: Any) -> str:
    parse_host_port(value, port_min=0)  # port 0: any free port (tests)
    return str(value)


def _check_node_id(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(
        rf"[0-9a-fA-F]{{{NODE_ID_HEX_CHARS}}}", value
    ):
        raise ValueError(f"expected a node id of {NODE_ID_HEX_CHARS} hex characters, got {value!r}")
    return value.lower()


def parse_peer(value: Any) -> tuple[str, str, int]:
    """Split "hexid@host:port" into (hex id, host, port); ValueError if malformed."""
    if not isinstance(value, str) or value.count("@") != 1:
        raise ValueError(f"expected <hex node id>@host:port, got {value!r}")
    node_id, address = value.split("@")
    host, port = parse_host_port(address)
    return _check_node_id(node_id), host, port


def _list_kind(item: Callable[[Any], str], describe: str) -> Kind:
    def check(value: Any) -> tuple[str, ...]:
        if not isinstance(value, list | tuple):
            raise ValueError(f"expected a list of {describe}, got {value!r}")
        if len(value) > PEERS_MAX:
            raise ValueError(f"expected at most {PEERS_MAX} items, got {len(value)}")
        out = []
        for position, entry in enumerate(value):
            try:
                out.append(item(entry))
            except ValueError as exc:
                raise ValueError(f"item {position}: {exc}") from None
        if len(set(out)) != len(out):
            raise ValueError("duplicate entries")
        return tuple(out)

    def from_text(text: str) -> list[str]:
        return [part.strip() for part in text.split(",") if part.strip()]

    return Kind(check, from_text)


STR = Kind(_check_str, _text)
BOOL = Kind(_check_bool, _bool_from_text)
LISTEN = Kind(_check_listen, lambda text: text.strip())
PEER_LIST = _list_kind(lambda v: (parse_peer(v), v)[1], "<hex node id>@host:port")
NODE_ID_LIST = _list_kind(_check_node_id, "node ids")
DURATION_MS = _int_kind(1, 3_600_000)


def option(default: Any, kind: Kind, doc: str) -> Any:
    return field(default=default, metadata={"kind": kind, "doc": doc})


# -- sections --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NodeSection:
    moniker: str = option("node", STR, "Human-readable name of this node (logs, status).")
    key_file: str = option(
        "config/node_key", STR, "Node key file (Ed25519 seed, mode 0600); relative to the home."
    )
    genesis_file: str = option(
        "config/genesis.json", STR, "Genesis file shared by every node of the chain."
    )
    data_dir: str = option("data", STR, "Directory of the LevelDB chain store.")
    compaction_nice: int = option(
        10, _int_kind(0, 19),
        "Least CPU niceness of LevelDB's background compaction thread (0: the node's own). "
        "Compaction then runs in the CPU time consensus leaves, not ahead of it.",
    )  # fmt: skip
    write_buffer_mb: int = option(
        32, _int_kind(4, 1024),
        "LevelDB write buffer (MB): writes collect in memory up to this size, then are "
        "flushed to a table file and compacted. Nodes sharing one machine should differ "
        "(`redwood testnet` staggers them) so their flushes and compactions do not coincide.",
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class P2PSection:
    listen: str = option("0.0.0.0:7700", LISTEN, "host:port to accept peer connections on.")
    peers: tuple[str, ...] = option((), PEER_LIST, "Peers to dial, each '<hex node id>@host:port'.")
    observers: tuple[str, ...] = option(
        (),
        NODE_ID_LIST,
        "Hex node ids of observer nodes allowed to connect (validators always are).",
    )
    max_inbound: int = option(64, _int_kind(0, 4096), "Maximum inbound peer connections.")
    handshake_timeout_ms: int = option(
        5000, DURATION_MS, "A peer must finish the authenticated handshake within this time."
    )
    send_queue_max: int = option(
        4096, _int_kind(16, 1_000_000), "Messages queued per peer before new ones are dropped."
    )
    reconnect_backoff_max_ms: int = option(
        10_000, DURATION_MS, "Cap of the exponential back-off between dial attempts."
    )


@dataclass(frozen=True, slots=True)
class ApiSection:
    listen: str = option("127.0.0.1:7701", LISTEN, "host:port of the HTTP JSON API.")
    max_body_bytes: int = option(
        8 * 1024 * 1024, _int_kind(1024, 1 << 30), "Largest request body accepted."
    )
    wait_timeout_ms_max: int = option(
        30_000, DURATION_MS, "Longest a request may wait for its transaction to commit."
    )


@dataclass(frozen=True, slots=True)
class MetricsSection:
    enabled: bool = option(True, BOOL, "Serve Prometheus metrics.")
    listen: str = option("127.0.0.1:7702", LISTEN, "host:port of the Prometheus /metrics endpoint.")


@dataclass(frozen=True, slots=True)
class MempoolSection:
    max_txs: int = option(100_000, _int_kind(1, 10_000_000), "Most transactions held.")
    max_bytes: int = option(
        256 * 1024 * 1024, _int_kind(1024, 1 << 34), "Most bytes of transactions held."
    )
    max_per_sender: int = option(
        10_000, _int_kind(1, 10_000_000), "Most pending transactions from one client key."
    )


@dataclass(frozen=True, slots=True)
class ConsensusSection:
    tick_ms: int = option(100, _int_kind(1, 60_000), "Logical clock tick of the replica.")
    view_change_timeout_ms: int = option(
        2000, DURATION_MS, "Time without progress before a view change (doubles each time)."
    )
    propose_empty_blocks: bool = option(
        False, BOOL, "Propose empty blocks every block_interval_ms when there is nothing to do."
    )
    block_interval_ms: int = option(
        1000,
        DURATION_MS,
        "Least interval between empty blocks: the primary proposes up to pipeline_depth of "
        "them after the last block with transactions (so its state root gets certified and "
        "its records become provable) and, with propose_empty_blocks, all the time.",
    )


@dataclass(frozen=True, slots=True)
class LogSection:
    format: str = option(
        "auto", _choice_kind(LOG_FORMATS), "auto: text on a terminal, JSON lines otherwise."
    )
    level: str = option("info", _choice_kind(LOG_LEVELS), "debug, info, warning or error.")


SECTIONS: dict[str, type] = {
    "node": NodeSection,
    "p2p": P2PSection,
    "api": ApiSection,
    "metrics": MetricsSection,
    "mempool": MempoolSection,
    "consensus": ConsensusSection,
    "log": LogSection,
}


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """The whole configuration of one node, with its home directory."""

    home: Path
    node: NodeSection = NodeSection()
    p2p: P2PSection = P2PSection()
    api: ApiSection = ApiSection()
    metrics: MetricsSection = MetricsSection()
    mempool: MempoolSection = MempoolSection()
    consensus: ConsensusSection = ConsensusSection()
    log: LogSection = LogSection()

    def _path(self, value: str) -> Path:
        path = Path(value)
        return path if path.is_absolute() else self.home / path

    @property
    def key_path(self) -> Path:
        return self._path(self.node.key_file)

    @property
    def genesis_path(self) -> Path:
        return self._path(self.node.genesis_file)

    @property
    def data_path(self) -> Path:
        return self._path(self.node.data_dir)

    def peer_addresses(self) -> list[tuple[bytes, str, int]]:
        """[p2p] peers as (node id, host, port)."""
        out = []
        for peer in self.p2p.peers:
            hex_id, host, port = parse_peer(peer)
            out.append((bytes.fromhex(hex_id), host, port))
        return out

    def observer_ids(self) -> list[bytes]:
        return [bytes.fromhex(hex_id) for hex_id in self.p2p.observers]


def listen_address(text: str) -> tuple[str, int]:
    """A validated listen option as (host, port) for binding."""
    return parse_host_port(text, port_min=0)


# -- building and checking -----------------------------------------------------------


def env_name(section: str, key: str) -> str:
    return f"{ENV_PREFIX}{section.upper()}_{key.upper()}"


def _build_section(name: str, raw: Mapping[str, Any], origin: Mapping[str, str]) -> Any:
    cls = SECTIONS[name]
    known = {f.name: f for f in dataclasses.fields(cls)}
    values = {}
    for key, value in raw.items():
        where = origin.get(key, f"[{name}] {key}")
        if key not in known:
            raise ConfigError(f"{where}: unknown option (known: {', '.join(known)})")
        try:
            values[key] = known[key].metadata["kind"].check(value)
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    return cls(**values)


def _check_consistency(cfg: NodeConfig) -> None:
    if cfg.consensus.view_change_timeout_ms < 2 * cfg.consensus.tick_ms:
        raise ConfigError(
            "[consensus] view_change_timeout_ms: must be at least twice tick_ms "
            f"({cfg.consensus.tick_ms}), got {cfg.consensus.view_change_timeout_ms}"
        )
    peer_ids = [parse_peer(p)[0] for p in cfg.p2p.peers]
    if len(set(peer_ids)) != len(peer_ids):
        raise ConfigError("[p2p] peers: the same node id is listed twice")
    listens = {
        "[p2p] listen": cfg.p2p.listen,
        "[api] listen": cfg.api.listen,
        "[metrics] listen": cfg.metrics.listen if cfg.metrics.enabled else None,
    }
    seen: dict[int, str] = {}
    for name, value in listens.items():
        if value is None:
            continue
        port = listen_address(value)[1]
        if port and port in seen:
            raise ConfigError(f"{name}: port {port} is also used by {seen[port]}")
        seen[port] = name


def config_from_dict(
    home: str | os.PathLike[str], doc: Mapping[str, Any], env: Mapping[str, str] | None = None
) -> NodeConfig:
    """Validate a parsed TOML document (plus environment overrides) into a NodeConfig."""
    if not isinstance(doc, Mapping):
        raise ConfigError("configuration must be a table")
    merged: dict[str, dict[str, Any]] = {}
    origins: dict[str, dict[str, str]] = {name: {} for name in SECTIONS}
    for name, table in doc.items():
        if name not in SECTIONS:
            raise ConfigError(f"[{name}]: unknown section (known: {', '.join(SECTIONS)})")
        if not isinstance(table, Mapping):
            raise ConfigError(f"[{name}]: expected a table, got {table!r}")
        merged[name] = dict(table)
    for name, key, value, variable in _env_overrides(env if env is not None else {}):
        merged.setdefault(name, {})[key] = value
        origins[name][key] = f"{variable} (overriding [{name}] {key})"
    sections = {
        name: _build_section(name, merged.get(name, {}), origins[name]) for name in SECTIONS
    }
    cfg = NodeConfig(home=Path(home), **sections)
    _check_consistency(cfg)
    return cfg


def _env_overrides(env: Mapping[str, str]) -> list[tuple[str, str, Any, str]]:
    """(section, key, parsed value, variable) for every REDWOOD_<SECTION>_<KEY> variable."""
    out = []
    for variable in sorted(env):
        if not variable.startswith(ENV_PREFIX):
            continue
        rest = variable[len(ENV_PREFIX) :]
        for name, cls in SECTIONS.items():
            if not rest.startswith(name.upper() + "_"):
                continue
            key = rest[len(name) + 1 :].lower()
            fields = {f.name: f for f in dataclasses.fields(cls)}
            if key not in fields:
                raise ConfigError(
                    f"{variable}: [{name}] has no option {key!r} (known: {', '.join(fields)})"
                )
            try:
                value = fields[key].metadata["kind"].from_text(env[variable])
            except ValueError as exc:
                raise ConfigError(f"{variable} (overriding [{name}] {key}): {exc}") from None
            out.append((name, key, value, variable))
    return out


def config_path(home: str | os.PathLike[str]) -> Path:
    return Path(home) / CONFIG_FILE


def load_config(home: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> NodeConfig:
    """Read and validate `<home>/config/node.toml`; `env` defaults to os.environ."""
    path = config_path(home)
    if not Path(home).is_dir():
        raise ConfigError(
            f"{home}: node home not found; create one with `redwood init --home {home}`"
        )
    try:
        if path.stat().st_size > CONFIG_FILE_BYTES_MAX:
            raise ConfigError(f"{path}: larger than {CONFIG_FILE_BYTES_MAX} bytes")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: not found; create it with `redwood init --home {home}`"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read ({exc})") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    try:
        return config_from_dict(home, doc, os.environ if env is None else env)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def default_config(home: str | os.PathLike[str], **sections: Any) -> NodeConfig:
    """Defaults, with whole sections replaced (default_config(h, p2p=P2PSection(...))), validated."""
    cfg = NodeConfig(home=Path(home), **sections)
    return config_from_dict(home, config_to_dict(cfg), env={})


def config_to_dict(cfg: NodeConfig) -> dict[str, dict[str, Any]]:
    """The TOML document of `cfg` (lists as lists)."""
    doc: dict[str, dict[str, Any]] = {}
    for name in SECTIONS:
        section = getattr(cfg, name)
        doc[name] = {
            f.name: list(v) if isinstance(v := getattr(section, f.name), tuple) else v
            for f in dataclasses.fields(section)
        }
    return doc


# -- writing ---------------------------------------------------------------------------


def _toml_value(value: Any) -> str:
    if isinstance(value, tuple):
        value = list(value)
    line = tomli_w.dumps({"v": value})
    return line.split("=", 1)[1].strip()


def render_config(cfg: NodeConfig) -> str:
    """node.toml text: every option written out, each with its documentation as a comment."""
    lines = [
        "# Redwood node configuration.",
        "# Every option is listed with its documentation. Relative paths are relative to",
        "# the node home. Each option can be overridden by the environment variable",
        "# REDWOOD_<SECTION>_<KEY> (lists: comma-separated), e.g. REDWOOD_API_LISTEN.",
        "",
    ]
    for name in SECTIONS:
        section = getattr(cfg, name)
        lines.append(f"[{name}]")
        for f in dataclasses.fields(section):
            lines.append(f"# {f.metadata['doc']} (env {env_name(name, f.name)})")
            value = getattr(section, f.name)
            if isinstance(value, tuple) and value:
                items = ",\n".join(f"    {_toml_value(item)}" for item in value)
                lines.append(f"{f.name} = [\n{items},\n]")
            else:
                lines.append(f"{f.name} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


def write_config(home: str | os.PathLike[str], cfg: NodeConfig) -> Path:
    """Write `<home>/config/node.toml` (atomically) and return its path."""
    path = config_path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".toml.tmp")
    tmp.write_text(render_config(cfg), encoding="utf-8")
    os.replace(tmp, path)
    return path
