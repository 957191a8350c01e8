"""The `redwood` command line.

Commands: `init`, `testnet`, `start`, `localnet`, `repair` (operators), `status`,
`record put|get|history` and `gov propose|approve|list` (clients of a node's
HTTP API), and `verify FILE --genesis GENESIS` (offline: checks a proof bundle
written by `record get --proof FILE` or fetched with `?proof=1`). Every failure the user
can cause (bad arguments, a missing home, a bad config value, an unsafe key
file, an unreachable node) ends in one line `redwood: error: ...` on stderr and
a non-zero exit code, never a traceback:

- 0 success, 1 runtime failure (node unreachable or refused), 2 bad input
  (usage, configuration, files).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from node import __version__, native

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
DEFAULT_NODE_URL = "http://127.0.0.1:7701"

log = logging.getLogger("redwood.cli")


class CliError(Exception):
    """A user-facing failure: printed as one line, exit with `code`."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


class Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so `main` owns the exit code."""

    def error(self, message: str) -> NoReturn:
        raise CliError(f"{message} (see `{self.prog} --help`)", EXIT_USAGE)


# -- argument types ----------------------------------------------------------------------


def port_arg(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be in 1..65535, got {port}")
    return port


def count_arg(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return value


def rate_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value <= 100_000:
        raise argparse.ArgumentTypeError(f"must be in (0, 100000], got {text}")
    return value


def url_arg(text: str) -> str:
    if not text.startswith(("http://", "https://")) or len(text) > 2048:
        raise argparse.ArgumentTypeError(f"expected an http:// or https:// URL, got {text!r}")
    return text.rstrip("/")


# -- parser --------------------------------------------------------------------------------


def build_parser() -> Parser:
    parser = Parser(prog="redwood", description="Redwood: a PBFT consortium blockchain node.")
    parser.add_argument("--version", action="version", version=f"redwood {__version__}")
    parser.add_argument(
        "--build",
        action="version",
        version=native.MODE,
        help="show whether the hot modules run compiled or as Python (and why), and exit",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    _add_init(sub)
    _add_testnet(sub)
    _add_start(sub)
    _add_localnet(sub)
    _add_repair(sub)
    _add_status(sub)
    _add_record(sub)
    _add_gov(sub)
    _add_verify(sub)
    _add_bench(sub)
    return parser


def _add_init(sub: Any) -> None:
    p = sub.add_parser(
        "init",
        help="create a node home",
        description="Create a node home: config/node_key (0600), config/node.toml with every "
        "option documented, config/genesis.json for a one-node chain with this node as its "
        "validator (replace it with your chain's genesis to join one), config/client_key "
        "(the key of that chain's one agency) and data/.",
    )
    p.add_argument("--home", required=True, type=Path, help="node home directory")
    p.add_argument("--chain-id", default="redwood-local", help="chain id of the one-node genesis")
    p.add_argument("--moniker", help="node name (default: the home directory's name)")
    p.add_argument("--force", action="store_true", help="overwrite an existing home")
    p.set_defaults(run=cmd_init)


def _add_testnet(sub: Any) -> None:
    p = sub.add_parser(
        "testnet",
        help="create the node homes of a local testnet",
        description="Create DIR/node0..node{N+M-1} (validators, then observers) sharing one "
        "genesis, one agency per validator with its client key in DIR/clients/agencyI.key. "
        "Node i listens on BASE+10i (p2p), BASE+10i+1 (API), BASE+10i+2 (metrics).",
    )
    p.add_argument("--validators", required=True, type=count_arg, metavar="N", help=">= 4 advised")
    p.add_argument("--observers", default=0, type=count_arg, metavar="M", help="(default: 0)")
    p.add_argument("--out", required=True, type=Path, metavar="DIR")
    p.add_argument("--base-port", default=7700, type=port_arg, metavar="P", help="(default: 7700)")
    p.add_argument(
        "--chain-id", default="redwood-local", metavar="ID", help="(default: %(default)s)"
    )
    p.add_argument("--force", action="store_true", help="write into a non-empty DIR")
    p.set_defaults(run=cmd_testnet)


def _add_start(sub: Any) -> None:
    p = sub.add_parser(
        "start",
        help="run a node in the foreground",
        description="Run the node of HOME in the foreground until SIGINT/SIGTERM. Options come "
        "from HOME/config/node.toml; each can be overridden by the environment variable "
        "REDWOOD_<SECTION>_<KEY>, e.g. REDWOOD_API_LISTEN=0.0.0.0:7701 or REDWOOD_LOG_FORMAT=json.",
    )
    p.add_argument("--home", required=True, type=Path)
    p.set_defaults(run=cmd_start)


def _add_localnet(sub: Any) -> None:
    p = sub.add_parser(
        "localnet",
        help="run a local chain, one process per node, with a live view",
        description="Create (or reuse) a testnet in DIR, run each node as its own process "
        "(logs in DIR/nodeI/node.log), wait until all are ready and show a live view. "
        "Ctrl-C stops every node.",
    )
    p.add_argument("--validators", default=4, type=count_arg, metavar="N", help="(default: 4)")
    p.add_argument("--observers", default=0, type=count_arg, metavar="M", help="(default: 0)")
    p.add_argument("--dir", default=Path("localnet"), type=Path, help="(default: ./localnet)")
    p.add_argument("--base-port", default=7700, type=port_arg, metavar="P", help="(default: 7700)")
    p.add_argument(
        "--chain-id", default="redwood-local", metavar="ID", help="(default: %(default)s)"
    )
    p.add_argument(
        "--load", type=rate_arg, metavar="TXS_PER_S", help="submit demo puts at this rate"
    )
    p.add_argument(
        "--ready-timeout", default=60.0, type=rate_arg, metavar="SECONDS", help="(default: 60)"
    )
    p.set_defaults(run=cmd_localnet)


def _add_repair(sub: Any) -> None:
    p = sub.add_parser(
        "repair",
        help="set a damaged chain store aside so the node re-syncs from its peers",
        description="Move the node's data directory (HOME/data by default) aside to "
        "DATA.corrupt-<UTC timestamp> (nothing is deleted) and create an empty one. On its "
        "next start the node fetches the chain from its peers. Refused while the node runs.",
    )
    p.add_argument("--home", required=True, type=Path)
    p.set_defaults(run=cmd_repair)


def _node_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--node",
        default=DEFAULT_NODE_URL,
        type=url_arg,
        metavar="URL",
        help="(default: %(default)s)",
    )


def _add_status(sub: Any) -> None:
    p = sub.add_parser("status", help="print a node's status (JSON)")
    _node_option(p)
    p.set_defaults(run=cmd_status)


def _add_record(sub: Any) -> None:
    p = sub.add_parser("record", help="put, get or list records")
    rec = p.add_subparsers(dest="record_command", metavar="ACTION", parser_class=Parser)
    rec.required = True
    put = rec.add_parser("put", help="publish a record (signed with a client key)")
    put.add_argument("key", metavar="KEY")
    put.add_argument("value", metavar="VALUE")
    put.add_argument("--key", dest="key_file", required=True, type=Path, metavar="CLIENT_KEY_FILE")
    put.add_argument("--agency", help="agency namespace (default: the key's agency)")
    put.add_argument("--genesis", type=Path, help="genesis file to find the key's agency in")
    put.add_argument("--wait", action="store_true", help="wait until committed")
    _node_option(put)
    put.set_defaults(run=cmd_record_put)
    for action, run, what in (
        ("get", cmd_record_get, "a record's current value"),
        ("history", cmd_record_history, "a record's versions, newest first"),
    ):
        q = rec.add_parser(action, help=what)
        q.add_argument("agency", metavar="AGENCY")
        q.add_argument("key", metavar="KEY")
        if action == "get":
            q.add_argument(
                "--proof", type=Path, metavar="FILE",
                help="write the record's proof bundle (JSON) to FILE; check it with "
                "`redwood verify FILE --genesis GENESIS`",
            )  # fmt: skip
        _node_option(q)
        q.set_defaults(run=run)


GOV_KINDS = {
    "add-agency": ("ID", "NAME"),
    "remove-agency": ("ID",),
    "add-member": ("AGENCY", "PUBLIC_KEY_HEX"),
    "remove-member": ("AGENCY", "PUBLIC_KEY_HEX"),
    "add-validator": ("NODE_ID_HEX", "AGENCY", "NAME", "HOST:PORT"),
    "remove-validator": ("NODE_ID_HEX",),
    "set-param": ("NAME", "VALUE"),
}


def _add_gov(sub: Any) -> None:
    p = sub.add_parser("gov", help="governance: propose, approve, list proposals")
    gov = p.add_subparsers(dest="gov_command", metavar="ACTION", parser_class=Parser)
    gov.required = True
    kinds = "; ".join(f"{k} {' '.join(a)}" for k, a in GOV_KINDS.items())
    pr = gov.add_parser("propose", help="propose a change (your agency approves it at once)")
    pr.add_argument("kind", choices=sorted(GOV_KINDS), metavar="KIND", help=kinds)
    pr.add_argument("args", nargs="*", metavar="ARG")
    ap = gov.add_parser("approve", help="approve proposal ID on behalf of your agency")
    ap.add_argument("proposal_id", type=count_arg, metavar="ID")
    for q, run in ((pr, cmd_gov_propose), (ap, cmd_gov_approve)):
        q.add_argument(
            "--key", dest="key_file", required=True, type=Path, metavar="CLIENT_KEY_FILE"
        )
        q.add_argument("--agency", help="agency (default: the key's agency)")
        q.add_argument("--genesis", type=Path, help="genesis file to find the key's agency in")
        q.add_argument("--wait", action="store_true", help="wait until committed")
        _node_option(q)
        q.set_defaults(run=run)
    ls = gov.add_parser("list", help="proposals, agencies, validators, epochs (JSON)")
    _node_option(ls)
    ls.set_defaults(run=cmd_gov_list)


def _add_verify(sub: Any) -> None:
    p = sub.add_parser(
        "verify",
        help="check a proof bundle offline against a genesis file",
        description="Exit 0 and print 'valid: ...' with what was proven, or exit 1 with "
        "'invalid: <reason>'. Needs no node.",
    )
    p.add_argument("file", type=Path, metavar="FILE")
    p.add_argument("--genesis", required=True, type=Path, metavar="GENESIS")
    p.set_defaults(run=cmd_verify)


def _add_bench(sub: Any) -> None:
    from node.bench import add_arguments

    p = sub.add_parser(
        "bench",
        help="measure committed tx/s, latency, catch-up and restart (docs/performance.md)",
        description="Start a localnet (or target --nodes), drive pre-signed 200-byte puts "
        "and measure from the chain; prints a summary, writes JSON with --out.",
    )
    add_arguments(p)
    p.set_defaults(run=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    from node.bench import BenchError, run

    try:
        run(args)
    except BenchError as exc:
        raise CliError(str(exc)) from None
    return EXIT_OK


# -- operator commands ---------------------------------------------------------------------


def _print_json(doc: Any) -> None:
    print(json.dumps(doc, indent=2, sort_keys=True, default=_json_default))


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if hasattr(value, "__dataclass_fields__"):
        return {k: getattr(value, k) for k in value.__dataclass_fields__}
    return str(value)


def cmd_init(args: argparse.Namespace) -> int:
    from consensus.crypto import SigningKey
    from node.testnet import (
        HomeError,
        _write_json,
        check_genesis,
        init_home,
        make_genesis,
        validate_chain_id,
    )
    from storage.keyfile import KeyFileError, write_key

    home: Path = args.home
    try:
        validate_chain_id(args.chain_id)
        client = SigningKey.generate()
        # the genesis is checked before anything is written, so bad input leaves no half home
        name = args.moniker or home.resolve().name or "node0"
        genesis = make_genesis(
            args.chain_id, [(name, client.public, client.public, 7700)], int(time.time() * 1000)
        )
        check_genesis(genesis)
        key = init_home(home, moniker=args.moniker, force=args.force)
        genesis["validators"][0]["node_id"] = key.public.hex()
        write_key(home / "config" / "client_key", client, overwrite=args.force)
        _write_json(home / "config" / "genesis.json", genesis)
    except (HomeError, KeyFileError, OSError) as exc:
        raise CliError(str(exc)) from None
    print(f"initialised node home {home}")
    print(f"node id: {key.public.hex()}")
    print(f"client key of agency0: {home / 'config' / 'client_key'}")
    print(f"start it with: redwood start --home {home}")
    return EXIT_OK


def cmd_testnet(args: argparse.Namespace) -> int:
    from node.testnet import HomeError, check_testnet_args, generate_testnet
    from storage.keyfile import KeyFileError

    try:
        for warning in check_testnet_args(args.validators, args.observers, args.base_port):
            print(f"redwood: warning: {warning}", file=sys.stderr)
        testnet = generate_testnet(
            args.out,
            args.validators,
            args.observers,
            base_port=args.base_port,
            chain_id=args.chain_id,
            force=args.force,
        )
    except (HomeError, KeyFileError, OSError) as exc:
        raise CliError(str(exc)) from None
    print(f"testnet {testnet.chain_id!r} in {testnet.out}:")
    for node in testnet.nodes:
        role = "validator" if node.validator else "observer"
        print(
            f"  {node.name:<7} {role:<9} id {node.node_id[:16]}...  p2p {node.ports.p2p}  "
            f"api {node.ports.api}  metrics {node.ports.metrics}"
        )
    for agency, path in testnet.client_keys.items():
        print(f"  client key of {agency}: {path}")
    print(f"start a node with: redwood start --home {testnet.nodes[0].home}")
    return EXIT_OK


def _load_config(home: Path) -> Any:
    from node.config import ConfigError, load_config

    try:
        return load_config(home)
    except ConfigError as exc:
        raise CliError(str(exc)) from None


def cmd_start(args: argparse.Namespace) -> int:
    from node.logs import setup_logging
    from storage.keyfile import KeyFileError, read_key

    cfg = _load_config(args.home)
    try:
        read_key(cfg.key_path)
    except KeyFileError as exc:
        raise CliError(f"[node] key_file: {exc}") from None
    if not cfg.genesis_path.is_file():
        raise CliError(f"[node] genesis_file: {cfg.genesis_path}: not found")
    setup_logging(cfg.log.format, cfg.log.level, sys.stderr)
    from node.service import run

    try:
        return int(run(cfg))
    except _startup_errors() as exc:  # a bad genesis, a corrupt store, a port in use
        raise CliError(str(exc), EXIT_FAILURE) from None


def _startup_errors() -> tuple[type[BaseException], ...]:
    """Errors of the node's own input files and environment: reported in one line."""
    from node.config import ConfigError
    from node.genesis import GenesisError
    from storage.keyfile import KeyFileError
    from storage.store import StoreError

    return (ConfigError, KeyFileError, GenesisError, StoreError, OSError)


def cmd_localnet(args: argparse.Namespace) -> int:
    from node.localnet import Localnet, LocalnetError, prepare_testnet
    from node.testnet import HomeError, check_testnet_args
    from storage.keyfile import KeyFileError

    try:
        for warning in check_testnet_args(args.validators, args.observers, args.base_port):
            print(f"redwood: warning: {warning}", file=sys.stderr)
        testnet, reused = prepare_testnet(
            args.dir, args.validators, args.observers, args.base_port, args.chain_id
        )
        net = Localnet(testnet)
        net.check_ports()
    except (HomeError, LocalnetError, KeyFileError, OSError) as exc:
        raise CliError(str(exc)) from None
    print(f"{'reusing' if reused else 'created'} testnet in {testnet.out}", flush=True)
    return _run_localnet(net, args)


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _run_localnet(net: Any, args: argparse.Namespace) -> int:
    from node.localnet import REFRESH_S, LiveView, LocalnetError

    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    load = None
    code = EXIT_OK
    try:
        net.start()
        print(f"waiting for {len(net.processes)} nodes to be ready...", flush=True)
        net.wait_ready(args.ready_timeout)
        if args.load:
            load = _start_load(net, args.load)
        view = LiveView(sys.stdout, title=f"redwood localnet {net.testnet.chain_id}")
        while True:
            view.show(net.sample(), time.time())
            if not net.any_alive():
                print(
                    "redwood: error: every node has exited; see DIR/nodeI/node.log", file=sys.stderr
                )
                code = EXIT_FAILURE
                break
            time.sleep(REFRESH_S)
    except KeyboardInterrupt:
        pass
    except LocalnetError as exc:
        print(f"redwood: error: {exc}", file=sys.stderr)
        code = EXIT_FAILURE
    finally:
        # a second Ctrl-C or SIGTERM must not interrupt the stop and orphan nodes
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            if load is not None:
                load.stop()
            print("\nstopping nodes...", flush=True)
            net.stop()
        finally:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGTERM, previous)
    if load is not None:
        print(f"load: {load.submitted} accepted, {load.rejected} rejected, {load.failed} failed")
    return code


def _start_load(net: Any, rate: float) -> Any:
    from node.localnet import LoadGenerator
    from storage.keyfile import read_key

    keys = {agency: read_key(path) for agency, path in net.testnet.client_keys.items()}
    urls = [node.api_url for node in net.testnet.nodes]
    load = LoadGenerator(keys, urls, rate)
    load.start()
    return load


def _store_locked(data: Path) -> bool:
    """True while another process holds LevelDB's lock on the chain store in `data`."""
    import fcntl

    lock = data / "chain" / "LOCK"
    try:
        fd = os.open(lock, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # LevelDB locks with fcntl too
    except OSError:
        return True
    else:
        fcntl.lockf(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def _aside_path(data: Path) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = data.with_name(f"{data.name}.corrupt-{stamp}")
    n = 1
    while target.exists():
        target = data.with_name(f"{data.name}.corrupt-{stamp}-{n}")
        n += 1
    return target


def _move_aside(data: Path, target: Path) -> None:
    """Rename `data` to `target`; a mount point (rename fails) has its contents moved instead."""
    import shutil

    try:
        data.rename(target)
    except OSError:
        target.mkdir(mode=0o700)
        for child in sorted(data.iterdir()):
            shutil.move(str(child), str(target / child.name))  # copy, then remove the source
        return
    data.mkdir(mode=0o700)


def cmd_repair(args: argparse.Namespace) -> int:
    cfg = _load_config(args.home)
    data: Path = cfg.data_path
    try:
        if not data.exists():
            data.mkdir(parents=True, mode=0o700)
            print(f"{data} did not exist; created it empty")
        elif not data.is_dir():
            raise CliError(f"{data}: not a directory")
        elif _store_locked(data):
            raise CliError(
                f"{data}: the chain store is open in a running node; stop it first", EXIT_FAILURE
            )
        elif not any(data.iterdir()):
            print(f"{data} is already empty; nothing to set aside")
        else:
            target = _aside_path(data)
            _move_aside(data, target)
            print(f"moved {data} to {target} (kept; delete it once you no longer need it)")
            print(f"created an empty {data}")
    except OSError as exc:
        raise CliError(f"repair failed: {exc}", EXIT_FAILURE) from None
    print(
        "the node will re-sync the chain from its peers on its next start: "
        f"redwood start --home {args.home}"
    )
    return EXIT_OK


# -- client commands ---------------------------------------------------------------------


def _client_call(url: str, call: Callable[[Any], Any]) -> Any:
    """Run `call(client)`; turn transport and API errors into one-line CliErrors."""
    import httpx

    from node.client import Client, ClientError

    client = Client(url)
    try:
        return call(client)
    except httpx.TransportError:
        raise CliError(f"cannot reach node at {url}", EXIT_FAILURE) from None
    except ClientError as exc:
        if getattr(exc, "code", None) == "unreachable":
            raise CliError(f"cannot reach node at {url}", EXIT_FAILURE) from None
        raise CliError(f"the node answered: {exc}", EXIT_FAILURE) from None
    finally:
        close = getattr(client, "close", None)
        if close is not None:
            close()


def cmd_status(args: argparse.Namespace) -> int:
    _print_json(_client_call(args.node, lambda c: c.status()))
    return EXIT_OK


def _agency_of_key(public: bytes, genesis_path: Path | None, url: str) -> str:
    """The agency whose members include `public`, from a genesis file or the node."""
    if genesis_path is not None:
        try:
            doc = json.loads(genesis_path.read_text(encoding="utf-8"))
            agencies = doc["agencies"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CliError(f"--genesis {genesis_path}: unreadable ({exc})") from None
    else:
        agencies = _client_call(url, _fetch_agencies)
    found = {
        str(a.get("id"))
        for a in agencies
        if isinstance(a, dict) and public.hex() in (a.get("members") or ())
    }
    if len(found) != 1:
        raise CliError(
            f"the key {public.hex()[:16]}... is a member of {len(found)} agencies known "
            "here; pass --agency (or --genesis FILE)"
        )
    return found.pop()


def _fetch_agencies(client: Any) -> list[dict[str, Any]]:
    """Agencies with their members as the node's /validators lists them (where it does)."""
    agencies = []
    for entry in client.validators():
        if isinstance(entry, dict) and "members" in entry:
            agencies.append({"id": entry.get("agency"), "members": entry["members"]})
    return agencies


def cmd_record_put(args: argparse.Namespace) -> int:
    from storage.keyfile import KeyFileError, read_key

    try:
        key = read_key(args.key_file)
    except KeyFileError as exc:
        raise CliError(f"--key: {exc}") from None
    agency = args.agency or _agency_of_key(key.public, args.genesis, args.node)
    result = _client_call(
        args.node,
        lambda c: c.put(key, agency, args.key.encode(), args.value.encode(), wait=args.wait),
    )
    _print_json(result)
    return EXIT_OK


def cmd_record_get(args: argparse.Namespace) -> int:
    if args.proof is None:
        _print_json(_client_call(args.node, lambda c: c.get_record(args.agency, args.key)))
        return EXIT_OK
    bundle = _client_call(args.node, lambda c: c.get_record_proof(args.agency, args.key))
    try:
        args.proof.write_text(json.dumps(bundle, indent=1, sort_keys=True) + "\n")
    except OSError as exc:
        raise CliError(f"--proof {args.proof}: cannot write: {exc.strerror}") from None
    shown = {k: bundle.get(k) for k in ("agency", "key", "value", "version", "height")}
    shown["state_height"] = bundle.get("state_height")
    shown["proof_file"] = str(args.proof)
    _print_json(shown)
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    from node.proofs import verify_file

    ok, message, seconds = verify_file(str(args.file), str(args.genesis))
    if not ok:
        print(f"invalid: {message}")
        return EXIT_FAILURE
    print(f"valid: {message} [verified in {seconds * 1000:.1f} ms]")
    return EXIT_OK


def _gov_signer(args: argparse.Namespace) -> tuple[Any, str]:
    from storage.keyfile import KeyFileError, read_key

    try:
        key = read_key(args.key_file)
    except KeyFileError as exc:
        raise CliError(f"--key: {exc}") from None
    return key, args.agency or _agency_of_key(key.public, args.genesis, args.node)


def gov_action(kind: str, args: Sequence[str]) -> bytes:
    """The canonical action bytes for `redwood gov propose KIND ARGS...` (CliError if bad)."""
    from node.governance import GovError, encode_action

    names = GOV_KINDS[kind]
    if kind == "add-validator" and len(args) in (2, 3):
        args = [*args, *[""] * (4 - len(args))]
    if len(args) != len(names):
        raise CliError(f"gov propose {kind} takes {' '.join(names)}")
    values: list[Any] = list(args)
    try:
        if kind in ("add-member", "remove-member"):
            values[1] = bytes.fromhex(args[1])
        elif kind in ("add-validator", "remove-validator"):
            values[0] = bytes.fromhex(args[0])
        elif kind == "set-param":
            values[1] = int(args[1])
        return encode_action(kind.replace("-", "_"), *values)
    except ValueError as exc:
        raise CliError(f"gov propose {kind}: {exc}") from None
    except GovError as exc:
        raise CliError(f"gov propose {kind}: {exc}") from None


def cmd_gov_propose(args: argparse.Namespace) -> int:
    action = gov_action(args.kind, args.args)
    key, agency = _gov_signer(args)
    result = _client_call(args.node, lambda c: c.gov_propose(key, agency, action, wait=args.wait))
    out: dict[str, Any] = {"tx": result}
    if args.wait:
        from node.governance import decode_action, describe

        wanted = describe(decode_action(action))
        listing = _client_call(args.node, lambda c: c.gov_proposals())
        mine = [
            p for p in listing.get("proposals", [])
            if p.get("proposer") == agency and p.get("action") == wanted
        ]  # fmt: skip
        if mine:
            out["proposal"] = max(mine, key=lambda p: p["id"])
    _print_json(out)
    return EXIT_OK


def cmd_gov_approve(args: argparse.Namespace) -> int:
    key, agency = _gov_signer(args)
    result = _client_call(
        args.node, lambda c: c.gov_approve(key, agency, args.proposal_id, wait=args.wait)
    )
    _print_json(result)
    return EXIT_OK


def cmd_gov_list(args: argparse.Namespace) -> int:
    _print_json(_client_call(args.node, lambda c: c.gov_proposals()))
    return EXIT_OK


def cmd_record_history(args: argparse.Namespace) -> int:
    _print_json(_client_call(args.node, lambda c: c.history(args.agency, args.key)))
    return EXIT_OK


# -- entry point ---------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help(sys.stderr)
            return EXIT_USAGE
        return int(args.run(args))
    except CliError as exc:
        print(f"redwood: error: {exc}", file=sys.stderr)
        return exc.code
    except SystemExit as exc:  # --help, --version
        return exc.code if isinstance(exc.code, int) else EXIT_OK
    except KeyboardInterrupt:
        return EXIT_OK
    except BrokenPipeError:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
