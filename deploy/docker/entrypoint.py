#!/usr/bin/env python3
"""Container entrypoint: initialise the node home on first start, then run `redwood`.

`start` (the default command):

1. If `$REDWOOD_HOME/config/node.toml` does not exist, create the home with
   `redwood init` (a fresh node key and a one-node genesis). Then, if given:
   `REDWOOD_INIT_GENESIS` (path of the chain's genesis.json) replaces the
   one-node genesis, and `REDWOOD_INIT_NODE_KEY` (path of a node key, e.g. a
   mounted Kubernetes Secret) replaces the generated key, copied with mode
   0600. A home directory that is not empty but has no node.toml is refused:
   it may be a damaged home, and nothing is overwritten.
2. If `REDWOOD_PEER_HOSTS` is set (`PORT=HOST,...`, e.g. `7710=node1`), the
   peers of node.toml are re-addressed: a peer `id@127.0.0.1:7710` becomes
   `id@node1:7710` (through the REDWOOD_P2P_PEERS override, node.toml is not
   changed). This lets homes made by `redwood testnet` run in containers.
3. exec `redwood start --home $REDWOOD_HOME` (PID 1 gets SIGTERM directly).

Any other command is passed to `redwood` unchanged (`status`, `init`, ...).
Configuration otherwise comes from node.toml and REDWOOD_<SECTION>_<KEY>
variables (see node/config.py). Exit code 2 with one line on stderr on bad input.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path

DEFAULT_HOME = "/var/lib/redwood/node"
IGNORED_IN_EMPTY_HOME = {"lost+found"}  # the root of a fresh ext4 volume
EXIT_USAGE = 2


class EntrypointError(Exception):
    """Bad input: printed as one line, exit code 2."""


def home_dir(env: Mapping[str, str]) -> Path:
    return Path(env.get("REDWOOD_HOME") or DEFAULT_HOME)


def needs_init(home: Path) -> bool:
    """True for a missing or empty home; EntrypointError for a non-empty one without node.toml."""
    if (home / "config" / "node.toml").is_file():
        return False
    if home.is_dir():
        extra = sorted(p.name for p in home.iterdir() if p.name not in IGNORED_IN_EMPTY_HOME)
        if extra:
            raise EntrypointError(
                f"{home} is not empty ({', '.join(extra[:5])}) but has no config/node.toml; "
                "refusing to initialise over it (restore the home, or empty the volume)"
            )
    return True


def copy_private(source: Path, target: Path, mode: int) -> None:
    try:
        data = source.read_bytes()
    except OSError as exc:
        raise EntrypointError(f"cannot read {source}: {exc.strerror}") from None
    tmp = target.with_name(target.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, target)


def initialise(home: Path, env: Mapping[str, str]) -> None:
    home.mkdir(parents=True, exist_ok=True)
    cmd = ["redwood", "init", "--home", str(home), "--force"]
    if env.get("REDWOOD_INIT_MONIKER"):
        cmd += ["--moniker", env["REDWOOD_INIT_MONIKER"]]
    if env.get("REDWOOD_INIT_CHAIN_ID"):
        cmd += ["--chain-id", env["REDWOOD_INIT_CHAIN_ID"]]
    print(f"redwood-entrypoint: no node home in {home}: running {' '.join(cmd)}", file=sys.stderr)
    done = subprocess.run(cmd, check=False, env=dict(env))
    if done.returncode != 0:
        raise EntrypointError(f"redwood init failed with exit code {done.returncode}")
    config = home / "config"
    if env.get("REDWOOD_INIT_GENESIS"):
        copy_private(Path(env["REDWOOD_INIT_GENESIS"]), config / "genesis.json", 0o644)
        (config / "client_key").unlink(missing_ok=True)  # the one-node chain's agency key
    if env.get("REDWOOD_INIT_NODE_KEY"):
        copy_private(Path(env["REDWOOD_INIT_NODE_KEY"]), config / "node_key", 0o600)


def parse_peer_hosts(text: str) -> dict[int, str]:
    """`7700=node0,7710=node1` -> {7700: "node0", 7710: "node1"}."""
    out: dict[int, str] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        port, sep, host = item.partition("=")
        if not sep or not port.strip().isdigit() or not host.strip():
            raise EntrypointError(f"REDWOOD_PEER_HOSTS: expected PORT=HOST items, got {item!r}")
        out[int(port)] = host.strip()
    return out


def readdress_peers(peers: list[str], hosts: Mapping[int, str]) -> list[str]:
    """Replace the host of each `id@host:port` peer whose port is in `hosts`."""
    out = []
    for peer in peers:
        node_id, _, address = peer.partition("@")
        host, _, port = address.rpartition(":")
        if not port.isdigit() or not host:
            raise EntrypointError(f"[p2p] peers: malformed entry {peer!r}")
        out.append(f"{node_id}@{hosts.get(int(port), host)}:{port}")
    return out


def peers_override(home: Path, env: Mapping[str, str]) -> str | None:
    """The REDWOOD_P2P_PEERS value implied by REDWOOD_PEER_HOSTS, or None."""
    if not env.get("REDWOOD_PEER_HOSTS") or "REDWOOD_P2P_PEERS" in env:
        return None
    try:
        doc = tomllib.loads((home / "config" / "node.toml").read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise EntrypointError(f"{home}/config/node.toml: unreadable ({exc})") from None
    peers = doc.get("p2p", {}).get("peers", [])
    return ",".join(readdress_peers(list(peers), parse_peer_hosts(env["REDWOOD_PEER_HOSTS"])))


def main(argv: list[str], env: dict[str, str]) -> int:
    args = argv or ["start"]
    if args[0] != "start":
        os.execvp("redwood", ["redwood", *args])
    home = home_dir(env)
    try:
        if needs_init(home):
            initialise(home, env)
        peers = peers_override(home, env)
    except EntrypointError as exc:
        print(f"redwood-entrypoint: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if peers is not None:
        env["REDWOOD_P2P_PEERS"] = peers
    redwood = shutil.which("redwood") or "redwood"
    os.execvpe(redwood, ["redwood", "start", "--home", str(home), *args[1:]], env)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], dict(os.environ)))
