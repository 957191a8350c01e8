"""`redwood bench`: how fast a Redwood chain commits, measured from the chain itself.

Scenarios (docs/performance.md has the figures and how to read them):

- ``throughput``: closed loop at maximum for `--duration` seconds (open loop
  at `--rate` if given);
- ``latency``: open loop at `--rate` (default: 50% of a throughput probe);
- ``scale``: throughput with N = 4, 7, 10 and 16 validators;
- ``catchup``: a validator that missed `--txs` (100,000) transactions rejoins;
- ``restart``: time from start to /ready with `--txs` (1,000,000) stored
  (`--unclean`: from the store as a kill after its last block left it, so
  the start recomputes the state tree's top first).

How a run works
---------------
1. The machine's single-core pipeline ceiling is measured first, in this
   process: admission (decode + rules + Ed25519 verify) then execution and
   the LevelDB commit of blocks of `block_txs_max`, on a temporary store.
2. A localnet of N validators is generated in a temporary directory, with
   `--clients` extra members spread over the agencies (the genesis of every
   node is rewritten before any node starts), and each node runs as its own
   process (`node.localnet.Localnet`). With `--nodes` the harness targets
   running nodes instead and signs with the keys in `--keys DIR`.
3. Signed 200-byte record writes are generated and packed into msgpack batch
   bodies BEFORE timing starts. Submission then only moves bytes: one
   persistent HTTP connection per node, batches spread round-robin over the
   nodes. Closed loop keeps at most `closed_window_txs(N)` (24,000 for N = 4)
   submitted-but-uncommitted transactions, and its warm-up lasts until the
   first window has committed; open loop releases `rate x OPEN_LOOP_TICK_S` transactions
   every tick whatever happens.
4. Commits are timestamped from node0's `/blocks/stream` (server-sent events
   carry every block's tx hashes): submit-to-commit latency of every
   transaction submitted inside the window. Committed tx/s is the growth of
   `/status.txs_committed` over the window, checked against the sum of
   `tx_count` of the blocks `/blocks/{h}` returns for the same heights.
5. Per-node CPU (utime + stime from /proc/PID/stat over the window) and peak
   RSS (VmHWM) of each node process; the load generator's own CPU too, since
   it shares the machine. Of a localnet's nodes also the CPU their state trees
   took (`redwood_state_tree_cpu_seconds_total` from each node's metrics port),
   per committed transaction and as a share of the node's CPU.

The output is a human summary on stdout and, with `--out`, one JSON document
(`RESULT_FIELDS`, `RUN_FIELDS`) for comparison between commits.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import trio

from node import native

SCENARIOS = ("throughput", "latency", "scale", "catchup", "restart")
SCALE_VALIDATORS = (4, 7, 10, 16)
VALUE_BYTES = 200
BENCH_KEYS = 50_000  # record keys the signed puts cycle over (`sign_txs`)
BATCH_TXS = 2000  # closed-loop batch size
OPEN_LOOP_TICK_S = 0.05
WINDOW_TXS = 24_000  # closed loop, 4 validators: most submitted-but-uncommitted transactions
# Closed loop with more validators: the same load per validator (4 x WINDOW_TXS / N,
# at least WINDOW_TXS_MIN). A fixed 24,000 was ~35 s of queue at N = 16, so the
# run measured the flood of the first window, not a steady state.
WINDOW_TXS_MIN = 8_000
RSS_SAMPLE_S = 0.5  # how often each node's anonymous RSS is sampled
# Closed loop: warm-up also waits (at most this long) for the first window to
# commit, so the measured window starts in a steady state.
WARMUP_COMMIT_WAIT_MAX_S = 60.0
VALID_FOR_BLOCKS = 9000  # below the default tx_ttl_blocks_max (10,000)
CLIENTS_DEFAULT = 16
CLIENTS_MAX = 4096
VALIDATORS_MAX = 32
DURATION_S_MAX = 3600.0
RATE_MAX = 100_000.0
RUNS_MAX = 20
CEILING_TXS = 8000
CEILING_BLOCK_TXS = 4000
CATCHUP_TXS_DEFAULT = 100_000
RESTART_TXS_DEFAULT = 1_000_000
PEAK_RATE_GUESS = 8000.0  # tx/s: how many to pre-generate for a closed loop
PREGEN_TXS_MAX = 1_500_000
READY_TIMEOUT_S = 120.0
HTTP_TIMEOUT_S = 60.0
DRAIN_S = 15.0  # after the window: wait this long at most for its txs to commit
STATUS_FIELDS = ("height", "txs_committed")
RESULT_FIELDS = (
    "bench",
    "scenario",
    "commit",
    "build",
    "machine",
    "params",
    "ceiling",
    "runs",
    "summary",
)
RUN_FIELDS = (
    "validators",
    "mode",
    "rate_target",
    "window_s",
    "committed_tps",
    "committed_txs",
    "chain_txs",
    "blocks",
    "block_txs_mean",
    "block_txs_max",
    "block_interval_ms",
    "latency_ms",
    "submitted",
    "accepted",
    "rejected",
    "failed",
    "exhausted",
    "nodes",
    "loadgen_cpu_percent",
    "ratio",
    "ratio_cpu_ceiling",
    "node_cpu_us_per_tx",
    "efficiency",
    "state_tree_cpu_us_per_tx",
    "state_tree_cpu_share",
)


class BenchError(Exception):
    """The benchmark cannot run as asked (bad arguments, nodes that never get ready)."""


# -- pure parts: statistics, pacing, arguments, /proc parsing --------------------------------


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100) with linear interpolation between ranks; None if empty."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be in 0..100, got {q}")
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def latency_summary(seconds: Sequence[float]) -> dict[str, Any]:
    """p50/p95/p99/mean/max in milliseconds of latency samples given in seconds."""

    def ms(value: float | None) -> float | None:
        return None if value is None else round(value * 1000, 2)

    return {
        "count": len(seconds),
        "p50": ms(percentile(seconds, 50)),
        "p95": ms(percentile(seconds, 95)),
        "p99": ms(percentile(seconds, 99)),
        "mean": ms(statistics.fmean(seconds)) if seconds else None,
        "max": ms(max(seconds)) if seconds else None,
    }


def ceiling_ratio(committed_tps: float, ceiling_tps: float, cores: int, validators: int) -> float:
    """committed / (ceiling x cores / N): how much of what the hardware allows the chain gets."""
    if ceiling_tps <= 0 or cores <= 0 or validators <= 0:
        raise ValueError("ceiling, cores and validators must be positive")
    return committed_tps / (ceiling_tps * cores / validators)


def cpu_per_tx_us(node_cpu_s: Sequence[float], committed: int) -> float | None:
    """Mean CPU microseconds one node spent per committed transaction."""
    if not node_cpu_s or committed <= 0:
        return None
    return round(statistics.fmean(node_cpu_s) / committed * 1e6, 1)


def efficiency(node_us_per_tx: float | None, ceiling_tps: float) -> float | None:
    """Pipeline cost per tx / node cost per tx: 1.0 = the node adds nothing to the pipeline."""
    if node_us_per_tx is None or node_us_per_tx <= 0 or ceiling_tps <= 0:
        return None
    return round(1e6 / ceiling_tps / node_us_per_tx, 3)


def txs_due(rate_per_s: float, elapsed_s: float, sent: int) -> int:
    """Open loop: how many more transactions are owed `elapsed_s` after the start."""
    if rate_per_s <= 0:
        raise ValueError("rate must be positive")
    return max(0, math.floor(rate_per_s * max(0.0, elapsed_s) + 1e-9) - sent)


def open_loop_batch(rate_per_s: float, tick_s: float = OPEN_LOOP_TICK_S) -> int:
    """Transactions per open-loop batch: one batch per tick, at least one transaction."""
    return max(1, min(BATCH_TXS, math.ceil(rate_per_s * tick_s)))


def window_room(accepted: int, committed: int, window: int) -> int:
    """Closed loop: how many more may be submitted with `accepted - committed` in flight."""
    return max(0, window - max(0, accepted - committed))


def pregen_count(
    mode: str, rate_per_s: float | None, seconds: float, expected_tps: float | None = None
) -> int:
    """Transactions to generate before timing: enough for the run at the expected rate."""
    if mode == "open":
        if not rate_per_s or rate_per_s <= 0:
            raise ValueError("an open loop needs a positive rate")
        wanted = math.ceil(rate_per_s * seconds * 1.1) + open_loop_batch(rate_per_s)
    else:
        guess = min(PEAK_RATE_GUESS, 1.5 * expected_tps) if expected_tps else PEAK_RATE_GUESS
        wanted = math.ceil(guess * seconds * 1.1) + WINDOW_TXS
    return min(PREGEN_TXS_MAX, wanted)


def spread(values: Sequence[float]) -> float | None:
    """(max - min) / max of positive values: 0 = equal, 0.3 = the smallest is 30% below."""
    if not values or max(values) <= 0:
        return None
    return (max(values) - min(values)) / max(values)


def check_args(args: Any) -> None:
    """Refuse impossible or unwise arguments with a BenchError naming the option."""
    if args.scenario not in SCENARIOS:
        raise BenchError(f"unknown scenario {args.scenario!r} (one of {', '.join(SCENARIOS)})")
    if not 1 <= args.validators <= VALIDATORS_MAX:
        raise BenchError(f"--validators must be in 1..{VALIDATORS_MAX}, got {args.validators}")
    if args.duration is not None and not 1 <= args.duration <= DURATION_S_MAX:
        raise BenchError(f"--duration must be in 1..{DURATION_S_MAX:g} seconds")
    if args.unclean and args.scenario != "restart":
        raise BenchError("--unclean works with the restart scenario only")
    if args.rate is not None and not 0 < args.rate <= RATE_MAX:
        raise BenchError(f"--rate must be in (0, {RATE_MAX:g}] tx/s")
    if not 1 <= args.clients <= CLIENTS_MAX:
        raise BenchError(f"--clients must be in 1..{CLIENTS_MAX}, got {args.clients}")
    if not 1 <= args.runs <= RUNS_MAX:
        raise BenchError(f"--runs must be in 1..{RUNS_MAX}, got {args.runs}")
    if args.txs is not None and not 1 <= args.txs <= 10_000_000:
        raise BenchError("--txs must be in 1..10000000")
    if args.nodes:
        if args.scenario not in ("throughput", "latency"):
            raise BenchError("--nodes works with the throughput and latency scenarios only")
        if args.keys is None:
            raise BenchError("--nodes needs --keys DIR (the client keys, e.g. TESTNET/clients)")
        for url in args.nodes:
            if not url.startswith(("http://", "https://")):
                raise BenchError(f"--nodes: expected http:// URLs, got {url!r}")
    if args.scenario == "catchup" and args.validators < 4:
        raise BenchError("catchup needs --validators >= 4 (one node is stopped)")


def parse_nodes(text: str | None) -> list[str]:
    return [u.strip().rstrip("/") for u in text.split(",") if u.strip()] if text else []


def cpu_seconds(stat_text: str, ticks_per_s: float) -> float:
    """utime + stime of a /proc/PID/stat line (the command name may hold spaces)."""
    fields = stat_text.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / ticks_per_s


def status_kib(status_text: str, name: str) -> int | None:
    """A KiB field (`VmHWM`, `RssAnon`, ...) of /proc/PID/status text."""
    prefix = name + ":"
    for line in status_text.splitlines():
        if line.startswith(prefix):
            return int(line.split()[1])
    return None


def vm_hwm_kib(status_text: str) -> int | None:
    """Peak resident set (VmHWM, KiB)."""
    return status_kib(status_text, "VmHWM")


def rss_anon_kib(status_text: str) -> int | None:
    """Anonymous resident memory (RssAnon, KiB): the heap, not mapped files."""
    return status_kib(status_text, "RssAnon")


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def process_cpu_s(pid: int) -> float | None:
    text = _read(f"/proc/{pid}/stat")
    return None if text is None else cpu_seconds(text, os.sysconf("SC_CLK_TCK"))


def process_peak_rss_mb(pid: int) -> float | None:
    text = _read(f"/proc/{pid}/status")
    kib = None if text is None else vm_hwm_kib(text)
    return None if kib is None else round(kib / 1024, 1)


def process_rss_anon_kib(pid: int) -> int | None:
    text = _read(f"/proc/{pid}/status")
    return None if text is None else rss_anon_kib(text)


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def machine() -> dict[str, Any]:
    model = ""
    for line in (_read("/proc/cpuinfo") or "").splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem = (_read("/proc/meminfo") or "").split("\n", 1)[0]
    return {
        "cores": usable_cores(),
        "cpu": model,
        "memory": " ".join(mem.split()[1:]),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def crypto_build() -> str:
    """PyNaCl's version and where its libsodium was compiled: in the PyPI wheel, or here.

    A PyNaCl built on this machine from its source (same libsodium release) checks
    Ed25519 signatures ~7% faster than the wheel here (docs/operator-guide.md, §2), so
    results name the one they ran on."""
    import importlib.metadata

    try:
        dist = importlib.metadata.distribution("pynacl")
    except importlib.metadata.PackageNotFoundError:
        return "PyNaCl (no package metadata)"
    tags = [
        line.split(":", 1)[1].strip()
        for line in (dist.read_text("WHEEL") or "").splitlines()
        if line.startswith("Tag:")
    ]
    if not tags:
        return f"PyNaCl {dist.version} (origin unknown: no wheel tag)"
    wheel = any("manylinux" in t or "musllinux" in t for t in tags)
    return f"PyNaCl {dist.version} ({'PyPI wheel' if wheel else 'built here'}, {tags[0]})"


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def git_commit() -> str:
    root = Path(__file__).resolve().parents[1]
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "describe", "--always", "--dirty", "--abbrev=12"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


# -- transactions ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Batch:
    """One pre-packed /txs/batch body and the hex hashes of its transactions."""

    body: bytes
    hashes: tuple[str, ...]


def sign_txs(
    senders: Sequence[tuple[str, Any]],
    chain_id: str,
    count: int,
    valid_until: int,
    *,
    value_bytes: int = VALUE_BYTES,
    tag: str = "",
    keys: int = BENCH_KEYS,
) -> list[bytes]:
    """`count` signed puts of `value_bytes`-byte values, round-robin over (agency, key) senders,
    to record keys ``bench/0`` .. ``bench/{keys - 1}`` in turn."""
    from node import txs

    tag = tag or f"{random.getrandbits(32):08x}"
    filler = b"v" * value_bytes
    out = []
    for i in range(count):
        agency, key = senders[i % len(senders)]
        value = f"{tag}:{i}:".encode()
        value = (value + filler)[:value_bytes]
        out.append(
            txs.build(key, chain_id, "put", agency, f"bench/{i % keys}", value, valid_until, i)
        )
    return out


def pack_batches(tx_list: Sequence[bytes], batch_txs: int) -> list[Batch]:
    from consensus import codec
    from consensus.crypto import sha256

    return [
        Batch(
            codec.pack(list(tx_list[i : i + batch_txs])),
            tuple(sha256(t).hex() for t in tx_list[i : i + batch_txs]),
        )
        for i in range(0, len(tx_list), batch_txs)
    ]


# -- the single-core pipeline ceiling ----------------------------------------------------------


class ChainBuilder:
    """Builds and commits valid certified blocks on a store (ceiling, restart fixture)."""

    def __init__(self, store: Any, app: Any, genesis: Any, signers: Sequence[Any]) -> None:
        self.store, self.app, self.genesis = store, app, genesis
        self.vset = genesis.validator_set()
        self.signers = list(signers)[: self.vset.quorum] if signers else []
        self.depth = genesis.params.pipeline_depth

    def certify(self, block: Any) -> Any:
        from consensus.certificates import sign
        from consensus.crypto import SIGNATURE_BYTES
        from consensus.types import CertifiedBlock, Commit, CommitCertificate, CommitSignature

        digest = block.hash()
        sigs = []
        for key in self.signers:
            vote = sign(
                key,
                self.genesis.chain_id,
                Commit(0, block.height, digest, key.public, bytes(SIGNATURE_BYTES)),
            )
            sigs.append(CommitSignature(key.public, vote.signature))
        cert = CommitCertificate(0, block.height, digest, self.vset.epoch, tuple(sigs))
        return CertifiedBlock(block, cert)

    def next_block(self, tx_list: Sequence[bytes], timestamp_ms: int) -> Any:
        from consensus import merkle
        from consensus.certificates import state_height
        from consensus.types import Block, BlockHeader

        head = self.store.head()
        height = self.store.head_height() + 1
        parent = head.block.hash() if head is not None else self.genesis.hash()
        sh = state_height(height, self.depth)
        root = self.app.state_root_at(sh)
        header = BlockHeader(
            chain_id=self.genesis.chain_id,
            height=height,
            view=0,
            epoch=self.vset.epoch,
            parent_hash=parent,
            tx_root=merkle.root(list(tx_list)),
            tx_count=len(tx_list),
            state_height=sh,
            state_root=root,
            proposer=self.vset.primary(0),
            timestamp_ms=timestamp_ms,
            validator_set_hash=self.vset.hash(),
        )
        return self.certify(Block(header, tuple(tx_list)))


def _bench_genesis(chain_id: str, members: Sequence[Any], validator: Any) -> Any:
    from node.genesis import Genesis
    from node.testnet import DEFAULT_PARAMS

    return Genesis.from_dict(
        {
            "chain_id": chain_id,
            "agencies": [
                {"id": f"agency{i}", "members": [k.public.hex()]} for i, k in enumerate(members)
            ],
            "validators": [{"node_id": validator.public.hex(), "agency": "agency0"}],
            "params": dict(DEFAULT_PARAMS),
        }
    )


def offline_chain(members: int = 4) -> tuple[Any, list[tuple[str, Any]], Any]:
    """A one-validator genesis with `members` agencies of one member key each, for work
    done without a network: (genesis, (agency, key) senders for `sign_txs`, validator key)."""
    from consensus.crypto import SigningKey

    keys = [SigningKey.generate() for _ in range(members)]
    validator = SigningKey.generate()
    genesis = _bench_genesis("redwood-bench", keys, validator)
    return genesis, [(f"agency{i}", k) for i, k in enumerate(keys)], validator


def measure_ceiling(count: int = CEILING_TXS, block_txs: int = CEILING_BLOCK_TXS) -> dict[str, Any]:
    """Single-core tx/s of decode + rules + verify (admission), execute, LevelDB commit.

    The same per-transaction work every validator does for every transaction,
    in one thread, on a temporary store; certificate checks are left out
    (a few signatures per block, not per transaction).
    """
    from node.app import Application
    from storage.store import ChainStore

    genesis, senders, validator = offline_chain()
    tx_list = sign_txs(senders, genesis.chain_id, count, 10_000)
    tmp = Path(tempfile.mkdtemp(prefix="redwood-ceiling-"))
    try:
        store = ChainStore.open(tmp / "chain", genesis_hash=genesis.hash())
        try:
            app = Application(store, genesis)
            builder = ChainBuilder(store, app, genesis, [validator])
            started, cpu_started = time.perf_counter(), time.process_time()
            admit_cpu_s = 0.0
            for i in range(0, len(tx_list), block_txs):
                chunk = tx_list[i : i + block_txs]
                height = store.head_height()
                t = time.process_time()
                for raw in chunk:
                    if not hasattr(app.check(raw, height), "tx"):
                        raise RuntimeError("the ceiling's own transaction was refused")
                admit_cpu_s += time.process_time() - t
                app.apply(builder.next_block(chunk, i + 1))
            elapsed = time.perf_counter() - started
            cpu_s = time.process_time() - cpu_started
        finally:
            store.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    # wall-clock rate (what the ratio uses) and CPU-time rate (what one core could do
    # if nothing else ran: the load-independent figure on a shared machine)
    return {
        "txs": count,
        "seconds": round(elapsed, 3),
        "txs_per_s": round(count / elapsed, 1),
        "cpu_seconds": round(cpu_s, 3),
        "cpu_txs_per_s": round(count / max(cpu_s, 1e-9), 1),
        "admission_cpu_us_per_tx": round(admit_cpu_s / count * 1e6, 1),
        "apply_cpu_us_per_tx": round((cpu_s - admit_cpu_s) / count * 1e6, 1),
    }


_CEILING_CPU_TPS: float | None = None  # set by `run`: the pipeline's CPU-time rate


# -- localnet -----------------------------------------------------------------------------------


def choose_base_port(nodes: int) -> int:
    from node.localnet import choose_base_port as choose

    try:
        return choose(nodes)
    except RuntimeError as exc:
        raise BenchError(str(exc)) from None


def add_members(testnet: Any, count: int) -> list[tuple[str, Any]]:
    """Give the testnet's agencies `count` new members (round-robin) in every node's genesis."""
    from consensus.crypto import SigningKey

    path0 = testnet.nodes[0].home / "config" / "genesis.json"
    doc = json.loads(path0.read_text())
    agencies = doc["agencies"]
    senders = []
    for i in range(count):
        key = SigningKey.generate()
        agency = agencies[i % len(agencies)]
        agency["members"].append(key.public.hex())
        senders.append((agency["id"], key))
    text = json.dumps(doc, indent=2)
    for node in testnet.nodes:
        (node.home / "config" / "genesis.json").write_text(text)
    return senders


def read_client_keys(keys_dir: Path) -> list[tuple[str, Any]]:
    """(agency, key) for each DIR/<agency>.key."""
    from storage.keyfile import read_key

    found = [(p.stem, read_key(p)) for p in sorted(Path(keys_dir).glob("*.key"))]
    if not found:
        raise BenchError(f"no client keys (*.key) in {keys_dir}")
    return found


@dataclass
class Net:
    """A running localnet made by the harness, or remote nodes (`procs` empty)."""

    urls: list[str]
    names: list[str]
    senders: list[tuple[str, Any]]
    chain_id: str
    localnet: Any = None
    out: Path | None = None
    metrics_urls: list[str] = field(default_factory=list)  # a localnet's, one per node

    def pids(self) -> list[int | None]:
        if self.localnet is None:
            return [None] * len(self.urls)
        return [p.popen.pid if p.alive() else None for p in self.localnet.processes]

    def stop(self, keep: bool = False) -> None:
        if self.localnet is not None:
            self.localnet.stop()
        if self.out is not None and not keep:
            shutil.rmtree(self.out, ignore_errors=True)


def start_localnet(validators: int, clients: int, attempts: int = 3) -> Net:
    """`_start_localnet`, retried on other ports (another process may take a port we chose)."""
    for attempt in range(attempts):
        try:
            return _start_localnet(validators, clients)
        except BenchError as exc:
            if attempt == attempts - 1:
                raise
            say(f"  {exc}; retrying on other ports")
    raise AssertionError("unreachable")


def _start_localnet(validators: int, clients: int, out: Path | None = None) -> Net:
    from node.localnet import Localnet, LocalnetError
    from node.testnet import generate_testnet

    out = out or Path(tempfile.mkdtemp(prefix="redwood-bench-"))
    testnet = generate_testnet(
        out / "net", validators, 0, base_port=choose_base_port(validators), chain_id="redwood-bench"
    )
    senders = add_members(testnet, clients)
    net = Net(
        [n.api_url for n in testnet.nodes],
        [n.name for n in testnet.nodes],
        senders,
        testnet.chain_id,
        Localnet(testnet),
        out,
        [f"http://127.0.0.1:{n.ports.metrics}/metrics" for n in testnet.nodes],
    )
    try:
        net.localnet.start()
        net.localnet.wait_ready(READY_TIMEOUT_S)
    except LocalnetError as exc:
        net.stop()
        raise BenchError(f"the localnet did not start: {exc}") from None
    return net


def remote_net(urls: list[str], keys_dir: Path) -> Net:
    from node.client import Client, ClientError

    try:
        with Client(urls[0]) as client:
            status = client.status()
    except ClientError as exc:
        raise BenchError(str(exc)) from None
    return Net(
        urls, [f"node{i}" for i in range(len(urls))], read_client_keys(keys_dir), status["chain_id"]
    )


def status_of(url: str) -> dict[str, Any]:
    r = httpx.get(url + "/status", timeout=10)
    r.raise_for_status()
    return dict(r.json())


STATE_TREE_CPU_METRIC = "redwood_state_tree_cpu_seconds_total"


def metric_value(text: str, name: str) -> float | None:
    """The value of the first sample called `name` in a Prometheus text exposition."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name:
                    return float(sample.value)
    except (ValueError, IndexError, KeyError, TypeError):  # not a Prometheus exposition
        return None
    return None


def state_tree_cpu_s(metrics_url: str) -> float | None:
    """A node's `redwood_state_tree_cpu_seconds_total`, or None if it cannot be read."""
    try:
        r = httpx.get(metrics_url, timeout=10)
        r.raise_for_status()
    except httpx.HTTPError:
        return None
    return metric_value(r.text, STATE_TREE_CPU_METRIC)


def tree_cpu_us_per_tx(
    before: Sequence[float | None], after: Sequence[float | None], committed: int
) -> float | None:
    """Mean over the nodes read at both ends: state-tree CPU per committed transaction."""
    spent = [b - a for a, b in zip(before, after, strict=False) if a is not None and b is not None]
    if not spent or committed <= 0:
        return None
    return round(statistics.fmean(spent) / committed * 1e6, 1)


# -- driving the load -----------------------------------------------------------------------------


@dataclass
class Window:
    t0: float = 0.0
    t1: float = 0.0
    status0: dict[str, Any] = field(default_factory=dict)
    status1: dict[str, Any] = field(default_factory=dict)
    cpu0: list[float | None] = field(default_factory=list)
    cpu1: list[float | None] = field(default_factory=list)
    self_cpu0: float = 0.0
    self_cpu1: float = 0.0
    tree0: list[float | None] = field(default_factory=list)  # state-tree CPU s, per node
    tree1: list[float | None] = field(default_factory=list)
    # peak RssAnon (KiB) of each node over warm-up and window, sampled every RSS_SAMPLE_S:
    # VmHWM also counts the pages of LevelDB's memory-mapped table files (page cache)
    anon_peak_kib: dict[int, int] = field(default_factory=dict)


class Driver:
    """Submits pre-packed batches to `urls` and timestamps commits from node0's block stream."""

    def __init__(
        self,
        net: Net,
        batches: Sequence[Batch],
        *,
        mode: str,
        rate: float | None,
        window_txs: int = WINDOW_TXS,
    ) -> None:
        if mode not in ("open", "closed") or (mode == "open" and not rate):
            raise ValueError("mode is 'closed', or 'open' with a rate")
        self.net = net
        self.batches = batches
        self.mode = mode
        self.rate = rate
        self.window_txs = window_txs
        self.next_batch = 0
        self.sent_txs = 0
        self.accepted = 0
        self.failed = 0
        self.rejected: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()  # failed requests by error
        self.committed_seen = 0
        self.sent_at: dict[str, float] = {}
        self.latencies: list[float] = []
        self.block_times: list[tuple[float, int, int]] = []  # (arrival, height, tx_count)
        self.measuring = (math.inf, math.inf)
        self.stop_at = math.inf
        self.exhausted = False
        self.answered = 0  # batches sent and answered (or failed)
        self.started = 0.0

    async def run(self, warmup_s: float, window_s: float, pids: list[int | None]) -> Window:
        win = Window()
        self._progress = trio.Event()
        self._connected = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._stream, self.net.urls[0])
            with trio.fail_after(30):
                await self._connected.wait()
            self.started = trio.current_time()
            nursery.start_soon(self._sample_rss, win, pids)
            self.measuring = (self.started + warmup_s, self.started + warmup_s + window_s)
            self.stop_at = self.measuring[1]
            async with trio.open_nursery() as submitters:
                for url in self.net.urls:
                    submitters.start_soon(self._submit_loop, url)
                await trio.sleep_until(self.measuring[0])
                if self.mode == "closed":
                    with trio.move_on_after(WARMUP_COMMIT_WAIT_MAX_S):
                        while self.committed_seen < self.window_txs:
                            await self._progress.wait()
                await self._snapshot(win, pids, first=True)
                # the window is timed from the snapshot, however long the node took to answer
                self.measuring = (win.t0, win.t0 + window_s)
                self.stop_at = self.measuring[1]
                await trio.sleep_until(self.measuring[1])
                await self._snapshot(win, pids, first=False)
                submitters.cancel_scope.cancel()
            # let in-flight transactions of the window commit, for their latencies
            with trio.move_on_after(DRAIN_S):
                while any(
                    self.measuring[0] <= t <= self.measuring[1] for t in self.sent_at.values()
                ):
                    await self._progress.wait()
            nursery.cancel_scope.cancel()
        return win

    async def _sample_rss(self, win: Window, pids: list[int | None]) -> None:
        while True:
            for pid in filter(None, pids):
                kib = process_rss_anon_kib(pid)
                if kib is not None:
                    win.anon_peak_kib[pid] = max(kib, win.anon_peak_kib.get(pid, 0))
            await trio.sleep(RSS_SAMPLE_S)

    async def _snapshot(self, win: Window, pids: list[int | None], *, first: bool) -> None:
        status = await trio.to_thread.run_sync(status_of, self.net.urls[0])
        now = trio.current_time()
        cpu = [None if p is None else process_cpu_s(p) for p in pids]
        mine = time.process_time()
        tree = [
            await trio.to_thread.run_sync(state_tree_cpu_s, url) for url in self.net.metrics_urls
        ]
        if first:
            win.t0, win.status0, win.cpu0, win.self_cpu0, win.tree0 = now, status, cpu, mine, tree
        else:
            win.t1, win.status1, win.cpu1, win.self_cpu1, win.tree1 = now, status, cpu, mine, tree

    def unrefused(self) -> int:
        """Transactions posted and not refused: accepted, or in a request not answered yet.

        The closed loop's window counts these, not only the accepted ones: with one
        submitter per node, every submitter would otherwise find room while the others'
        batches are still in flight, and N submitters overshoot the window by up to N
        batches (at N = 16, 38,000 transactions queued against a window of 8,000). A
        batch counts from the moment `_post` starts, with no checkpoint after the check.
        """
        return self.sent_txs - self.failed - sum(self.rejected.values())

    def idle(self) -> bool:
        """Every batch was sent and answered."""
        return self.answered >= len(self.batches)

    def _take(self) -> Batch | None:
        if self.next_batch >= len(self.batches):
            self.exhausted = True
            return None
        batch = self.batches[self.next_batch]
        self.next_batch += 1
        return batch

    async def _submit_loop(self, url: str) -> None:
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with httpx.AsyncClient(base_url=url, timeout=HTTP_TIMEOUT_S, limits=limits) as http:
            while trio.current_time() < self.stop_at:
                if self.mode == "closed":
                    while window_room(self.unrefused(), self.committed_seen, self.window_txs) < (
                        BATCH_TXS
                    ):
                        await self._progress.wait()
                        if trio.current_time() >= self.stop_at:
                            return
                else:
                    assert self.rate is not None
                    start_at = self.started + self.sent_txs / self.rate
                    await trio.sleep_until(start_at)
                    if trio.current_time() >= self.stop_at:
                        return
                batch = self._take()
                if batch is None:
                    return
                await self._send(http, batch)

    async def _send(self, http: Any, batch: Batch) -> None:
        try:
            await self._post(http, batch)
        finally:
            self.answered += 1

    async def _post(self, http: Any, batch: Batch) -> None:
        sent = trio.current_time()
        self.sent_txs += len(batch.hashes)
        for h in batch.hashes:
            self.sent_at[h] = sent
        try:
            r = await http.post(
                "/txs/batch", content=batch.body, headers={"Content-Type": "application/msgpack"}
            )
            doc = r.json()
            results = doc.get("results") if isinstance(doc, dict) else None
            if r.status_code != 200 or not isinstance(results, list):
                raise ValueError(f"HTTP {r.status_code}")
        except (httpx.HTTPError, ValueError) as exc:
            self.failed += len(batch.hashes)
            self.errors[f"{type(exc).__name__}: {exc}"[:80]] += 1
            for h in batch.hashes:
                self.sent_at.pop(h, None)
            return
        for h, res in zip(batch.hashes, results, strict=False):
            if isinstance(res, dict) and res.get("accepted"):
                self.accepted += 1
            else:
                code = res.get("error") or res.get("code") if isinstance(res, dict) else None
                self.rejected[str(code or "unknown")] += 1
                self.sent_at.pop(h, None)

    async def _stream(self, url: str) -> None:
        while True:
            try:
                async with (
                    httpx.AsyncClient(base_url=url, timeout=None) as http,
                    http.stream("GET", "/blocks/stream") as r,
                ):
                    self._connected.set()
                    data: list[str] = []
                    async for line in r.aiter_lines():
                        if line.startswith("data:"):
                            data.append(line[5:].strip())
                        elif line == "" and data:
                            self._on_block("".join(data))
                            data = []
            except (httpx.HTTPError, ValueError):
                await trio.sleep(0.2)  # reconnect after the node dropped a slow reader

    def _on_block(self, text: str) -> None:
        now = trio.current_time()
        doc = json.loads(text)
        hashes = doc.get("tx_hashes") or []
        self.block_times.append((now, int(doc.get("height", 0)), len(hashes)))
        self.committed_seen += len(hashes)
        lo, hi = self.measuring
        pop = self.sent_at.pop
        for h in hashes:
            t0 = pop(h, None)
            if t0 is not None and lo <= t0 <= hi:
                self.latencies.append(now - t0)
        self._progress.set()
        self._progress = trio.Event()


def chain_blocks(url: str, first: int, last: int) -> list[dict[str, Any]]:
    """Headers (height, tx_count, timestamp_ms) of blocks first..last from /blocks/{h}."""
    out = []
    with httpx.Client(base_url=url, timeout=30) as http:
        for h in range(first, last + 1):
            r = http.get(f"/blocks/{h}")
            r.raise_for_status()
            doc = r.json()
            out.append({k: doc.get(k) for k in ("height", "tx_count", "timestamp_ms")})
    return out


def run_once(
    net: Net,
    batches: Sequence[Batch],
    *,
    mode: str,
    rate: float | None,
    warmup_s: float,
    window_s: float,
    ceiling_tps: float,
) -> dict[str, Any]:
    """One timed window on a running net: the run's JSON document (`RUN_FIELDS`)."""
    pids = net.pids()
    driver = Driver(net, batches, mode=mode, rate=rate, window_txs=closed_window_txs(len(net.urls)))
    win = trio.run(driver.run, warmup_s, window_s, pids)
    return run_doc(net, driver, win, pids, ceiling_tps)


def run_doc(
    net: Net, driver: Driver, win: Window, pids: list[int | None], ceiling_tps: float
) -> dict[str, Any]:
    elapsed = max(1e-9, win.t1 - win.t0)
    h0, h1 = int(win.status0["height"]), int(win.status1["height"])
    committed = int(win.status1["txs_committed"]) - int(win.status0["txs_committed"])
    headers = chain_blocks(net.urls[0], h0 + 1, h1) if h1 > h0 else []
    sizes = [int(b["tx_count"]) for b in headers]
    stamps = [int(b["timestamp_ms"]) for b in headers]
    intervals = [b - a for a, b in itertools.pairwise(stamps)]
    nodes = []
    for name, pid, c0, c1 in zip(net.names, pids, win.cpu0, win.cpu1, strict=False):
        cpu = None if c0 is None or c1 is None else round(100 * (c1 - c0) / elapsed, 1)
        nodes.append(
            {
                "name": name,
                "pid": pid,
                "cpu_percent": cpu,
                "rss_peak_mb": pid and process_peak_rss_mb(pid),
                "rss_anon_peak_mb": (
                    round(win.anon_peak_kib[pid] / 1024, 1) if pid in win.anon_peak_kib else None
                ),
            }
        )
    tps = committed / elapsed
    n = len(net.urls)
    node_cpu_s = [
        n_["cpu_percent"] / 100 * elapsed for n_ in nodes if n_["cpu_percent"] is not None
    ]
    node_us = cpu_per_tx_us(node_cpu_s, committed)
    tree_us = tree_cpu_us_per_tx(win.tree0, win.tree1, committed)
    return {
        "validators": n,
        "mode": driver.mode,
        "rate_target": driver.rate,
        "window_s": round(elapsed, 3),
        "committed_tps": round(tps, 1),
        "committed_txs": committed,
        "chain_txs": sum(sizes),
        "blocks": len(headers),
        "block_txs_mean": round(statistics.fmean(sizes), 1) if sizes else 0,
        "block_txs_max": max(sizes, default=0),
        "block_interval_ms": {
            "mean": round(statistics.fmean(intervals), 1) if intervals else None,
            "p50": percentile(intervals, 50),
            "max": max(intervals, default=None),
        },
        "latency_ms": latency_summary(driver.latencies),
        "submitted": driver.sent_txs,
        "accepted": driver.accepted,
        "rejected": dict(driver.rejected),
        "failed": driver.failed,
        "errors": dict(driver.errors),
        "exhausted": driver.exhausted,
        "nodes": nodes,
        "loadgen_cpu_percent": round(100 * (win.self_cpu1 - win.self_cpu0) / elapsed, 1),
        "ratio": round(ceiling_ratio(tps, ceiling_tps, usable_cores(), n), 3),
        # the same against the ceiling's CPU-time rate: unlike the wall-clock one it does
        # not depend on the load of the moment the ceiling was measured
        "ratio_cpu_ceiling": round(
            ceiling_ratio(tps, _CEILING_CPU_TPS or ceiling_tps, usable_cores(), n), 3
        ),
        # CPU a node spends per committed transaction, against the bare pipeline's cost:
        # efficiency 1.0 = no overhead beyond decode + verify + execute + write
        "node_cpu_us_per_tx": node_us,
        "efficiency": efficiency(node_us, _CEILING_CPU_TPS or ceiling_tps),
        # of a localnet's nodes (their metrics ports): the state tree's part of that CPU
        "state_tree_cpu_us_per_tx": tree_us,
        "state_tree_cpu_share": (
            None if tree_us is None or not node_us else round(tree_us / node_us, 3)
        ),
        "load_average": load_average(),
    }


# -- scenarios ------------------------------------------------------------------------------------


def closed_window_txs(validators: int) -> int:
    """Most submitted-but-uncommitted transactions of a closed loop on `validators` nodes."""
    return max(WINDOW_TXS_MIN, WINDOW_TXS * 4 // max(1, validators))


def _warmup(duration: float) -> float:
    return min(5.0, max(1.0, duration / 6))


def _prepare(
    net: Net, mode: str, rate: float | None, seconds: float, ceiling: float | None = None
) -> list[Batch]:
    """Sign and pack the run's transactions (before timing)."""
    status = status_of(net.urls[0])
    expected = ceiling * usable_cores() / len(net.urls) if ceiling else None
    count = pregen_count(mode, rate, seconds, expected)
    say(f"  signing {count} transactions...")
    tx_list = sign_txs(net.senders, net.chain_id, count, int(status["height"]) + VALID_FOR_BLOCKS)
    size = open_loop_batch(rate) if mode == "open" and rate else BATCH_TXS
    return pack_batches(tx_list, size)


def _open(args: Any, validators: int) -> Net:
    if args.nodes:
        return remote_net(args.nodes, args.keys)
    say(f"starting a localnet of {validators} validators...")
    return start_localnet(validators, args.clients)


def scenario_throughput(
    args: Any, ceiling: float, validators: int | None = None
) -> list[dict[str, Any]]:
    duration = args.duration or 60.0
    net = _open(args, validators or args.validators)
    runs = []
    try:
        mode = "open" if args.rate else "closed"
        for r in range(args.runs):
            batches = _prepare(net, mode, args.rate, duration + _warmup(duration), ceiling)
            say(f"run {r + 1}/{args.runs}: {mode} loop for {duration:g} s...")
            doc = run_once(
                net, batches, mode=mode, rate=args.rate, warmup_s=_warmup(duration),
                window_s=duration, ceiling_tps=ceiling,
            )  # fmt: skip
            say(run_line(doc))
            runs.append(doc)
    finally:
        net.stop(keep=args.keep)
    return runs


def scenario_latency(args: Any, ceiling: float) -> list[dict[str, Any]]:
    duration = args.duration or 60.0
    net = _open(args, args.validators)
    runs = []
    try:
        rate = args.rate
        if rate is None:
            probe_s = min(duration, 20.0)
            say(f"probing the maximum for {probe_s:g} s...")
            batches = _prepare(net, "closed", None, probe_s + 2, ceiling)
            probe = run_once(
                net, batches, mode="closed", rate=None, warmup_s=2, window_s=probe_s,
                ceiling_tps=ceiling,
            )  # fmt: skip
            rate = max(1.0, round(probe["committed_tps"] / 2))
            say(f"probe: {probe['committed_tps']:.0f} tx/s -> open loop at {rate:g} tx/s")
        for r in range(args.runs):
            batches = _prepare(net, "open", rate, duration + _warmup(duration))
            say(f"run {r + 1}/{args.runs}: open loop at {rate:g} tx/s for {duration:g} s...")
            doc = run_once(
                net, batches, mode="open", rate=rate, warmup_s=_warmup(duration),
                window_s=duration, ceiling_tps=ceiling,
            )  # fmt: skip
            say(run_line(doc))
            runs.append(doc)
    finally:
        net.stop(keep=args.keep)
    return runs


def scenario_scale(args: Any, ceiling: float) -> list[dict[str, Any]]:
    args.duration = args.duration or 30.0
    runs: list[dict[str, Any]] = []
    for n in SCALE_VALIDATORS:
        try:
            runs.extend(scenario_throughput(args, ceiling, validators=n))
        except BenchError as exc:  # keep the other sizes' figures
            say(f"  N={n}: {exc}")
            runs.append({"validators": n, "error": str(exc)[:500]})
    return runs


def _stop_one(net: Net, index: int) -> None:
    proc = net.localnet.processes[index]
    proc.popen.send_signal(signal.SIGTERM)
    try:
        proc.popen.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.popen.kill()
        proc.popen.wait()


def wait_for(what: str, check: Callable[[], Any], timeout_s: float, poll_s: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.suppress(Exception):
            result = check()
            if result:
                return result
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(poll_s)  # polling interval of a bounded wait


def scenario_catchup(args: Any, ceiling: float) -> list[dict[str, Any]]:
    missed = args.txs or CATCHUP_TXS_DEFAULT
    runs = []
    for r in range(args.runs):
        net = _open(args, args.validators)
        try:
            late = len(net.urls) - 1  # never the view-0 primary
            _stop_one(net, late)
            h_stop = int(status_of(net.urls[0])["height"])
            say(
                f"run {r + 1}/{args.runs}: {net.names[late]} stopped at height {h_stop}; loading {missed} txs..."
            )
            tx_list = sign_txs(net.senders, net.chain_id, missed, h_stop + VALID_FOR_BLOCKS)
            batches = pack_batches(tx_list, BATCH_TXS)
            others = Net(net.urls[:late] + net.urls[late + 1 :], [], net.senders, net.chain_id)
            live = _load_until_committed(others, batches, missed, ceiling)
            target = int(status_of(net.urls[0])["height"])
            late_url = net.urls[late]
            t0 = time.monotonic()
            net.localnet.start()  # restarts only the stopped node
            wait_for("the late node's API", lambda u=late_url: status_of(u), 60)
            t_api = time.monotonic()
            h_first = int(status_of(late_url)["height"])
            wait_for(
                f"{net.names[late]} to reach height {target}",
                lambda u=late_url, t=target: int(status_of(u)["height"]) >= t,
                600,
            )
            t1 = time.monotonic()
            blocks = target - h_first
            txs_done = sum(b["tx_count"] for b in chain_blocks(net.urls[0], h_first + 1, target))
            catch_s = max(1e-9, t1 - t_api)
            doc = {
                "validators": len(net.urls),
                "missed_txs": missed,
                "missed_blocks": blocks,
                "live_tps": live,
                "restart_to_api_s": round(t_api - t0, 2),
                "catchup_s": round(catch_s, 2),
                "catchup_blocks_per_s": round(blocks / catch_s, 1),
                "catchup_tps": round(txs_done / catch_s, 1),
                "speedup": round(txs_done / catch_s / live, 2) if live else None,
                "load_average": load_average(),
            }
            say(
                f"  caught up {blocks} blocks / {txs_done} txs in {catch_s:.1f} s: "
                f"{doc['catchup_blocks_per_s']} blocks/s, {doc['catchup_tps']} tx/s "
                f"({doc['speedup']}x the live {live:.0f} tx/s)"
            )
            runs.append(doc)
        finally:
            net.stop(keep=args.keep)
    return runs


def _load_until_committed(net: Net, batches: Sequence[Batch], count: int, ceiling: float) -> float:
    """Closed-loop load until `count` more are committed; the live committed tx/s."""
    start = int(status_of(net.urls[0])["txs_committed"])
    driver = Driver(net, batches, mode="closed", rate=None)
    t0 = time.monotonic()

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(driver.run, 0.0, 3600.0, [None] * len(net.urls))
            while (
                int((await trio.to_thread.run_sync(status_of, net.urls[0]))["txs_committed"])
                - start
                < count
            ):
                if driver.idle() and driver.accepted <= driver.committed_seen:
                    break
                await trio.sleep(0.5)
            nursery.cancel_scope.cancel()

    trio.run(main)
    done = int(status_of(net.urls[0])["txs_committed"]) - start
    return done / max(1e-9, time.monotonic() - t0)


def build_store(
    net_dir: Path,
    testnet: Any,
    senders: Sequence[tuple[str, Any]],
    count: int,
    *,
    clean: bool = True,
) -> int:
    """Commit `count` signed puts to node0's store in full blocks; copy it into every home.

    `clean` False leaves it as a node killed after its last block leaves it: the state
    tree's top, held in memory, not written (node/app.py)."""
    from node.app import Application
    from node.genesis import Genesis
    from storage.keyfile import read_key
    from storage.store import ChainStore

    node0 = testnet.nodes[0].home
    genesis = Genesis.load(node0 / "config" / "genesis.json")
    block_txs = genesis.params.block_txs_max
    signers = [read_key(n.home / "config" / "node_key") for n in testnet.nodes]
    store = ChainStore.open(node0 / "data" / "chain", genesis_hash=genesis.hash())
    try:
        # we signed every transaction ourselves a line above: skip re-verifying them
        app = Application(store, genesis, verify_many=lambda items: [True] * len(items))
        builder = ChainBuilder(store, app, genesis, signers)
        done = 0
        stamp = genesis.genesis_time_ms
        while done < count:
            n = min(block_txs, count - done)
            valid_until = store.head_height() + 1 + VALID_FOR_BLOCKS  # within tx_ttl_blocks_max
            chunk = sign_txs(senders, genesis.chain_id, n, valid_until, tag=f"s{done}")
            stamp += 500
            cb = builder.next_block(chunk, stamp)
            executed = app.apply(cb)
            if executed.applied != n:
                raise BenchError(f"the restart fixture's block {cb.block.height} was refused")
            done += n
        height = store.head_height()
        if clean:
            app.write_tree_top()  # as a node stopping cleanly does
    finally:
        store.close()
    src = node0 / "data" / "chain"
    for node in testnet.nodes[1:]:
        dst = node.home / "data" / "chain"
        shutil.rmtree(dst, ignore_errors=True)
        dst.mkdir(parents=True)
        for f in src.iterdir():
            # copies, not hard links: a node died of SIGBUS once on shared table files
            shutil.copy2(f, dst / f.name)
    return height


def scenario_restart(args: Any, ceiling: float) -> list[dict[str, Any]]:
    from node.localnet import Localnet
    from node.testnet import generate_testnet

    count = args.txs or RESTART_TXS_DEFAULT
    out = Path(tempfile.mkdtemp(prefix="redwood-bench-"))
    testnet = generate_testnet(
        out / "net", args.validators, 0, base_port=choose_base_port(args.validators),
        chain_id="redwood-bench",
    )  # fmt: skip
    senders = add_members(testnet, args.clients)
    say(f"building a store of {count} transactions (signing them takes a while)...")
    t = time.monotonic()
    height = build_store(out, testnet, senders, count, clean=not args.unclean)
    say(f"  {height} blocks in {time.monotonic() - t:.0f} s")
    chain0 = testnet.nodes[0].home / "data" / "chain"
    killed = out / "node0-chain-killed"
    if args.unclean:  # each run starts from the store as a kill left it
        shutil.copytree(chain0, killed)
    net = Net([n.api_url for n in testnet.nodes], [n.name for n in testnet.nodes], senders,
              testnet.chain_id, Localnet(testnet), out)  # fmt: skip
    runs = []
    try:
        net.localnet.start()
        net.localnet.wait_ready(READY_TIMEOUT_S)
        for r in range(args.runs):
            _stop_one(net, 0)
            if args.unclean:
                shutil.rmtree(chain0)
                shutil.copytree(killed, chain0)
            t0 = time.monotonic()
            net.localnet.start()
            pid = net.localnet.processes[0].popen.pid
            wait_for("node0 /ready", lambda: _ready(net.urls[0]), READY_TIMEOUT_S, 0.02)
            t1 = time.monotonic()
            status = status_of(net.urls[0])
            if int(status["height"]) < height or int(status["txs_committed"]) < count:
                raise BenchError(f"node0 is ready but holds less than was stored: {status}")
            doc = {
                "validators": len(net.urls),
                "stored_txs": count,
                "stored_blocks": height,
                "height_at_ready": int(status["height"]),
                "txs_committed_at_ready": int(status["txs_committed"]),
                "ready_s": round(t1 - t0, 3),
                "unclean": bool(args.unclean),
                "rss_peak_mb": process_peak_rss_mb(pid),
                "load_average": load_average(),
            }
            say(
                f"run {r + 1}/{args.runs}: ready {doc['ready_s']} s after start ({count} txs stored)"
            )
            runs.append(doc)
    finally:
        net.stop(keep=args.keep)
    return runs


def _ready(url: str) -> bool:
    return httpx.get(url + "/ready", timeout=2).status_code == 200


# -- summary and output ------------------------------------------------------------------------------


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def run_line(doc: dict[str, Any]) -> str:
    lat = doc["latency_ms"]
    cpu = ", ".join(f"{n['cpu_percent']}%" for n in doc["nodes"] if n["cpu_percent"] is not None)
    rss = max((n["rss_peak_mb"] or 0 for n in doc["nodes"]), default=0)
    anon = max((n.get("rss_anon_peak_mb") or 0 for n in doc["nodes"]), default=0)
    return (
        f"  N={doc['validators']} {doc['committed_tps']:.0f} tx/s committed (ratio {doc['ratio']}; "
        f"{doc.get('ratio_cpu_ceiling')} against the CPU-time ceiling), "
        f"p50/p95/p99 {lat['p50']}/{lat['p95']}/{lat['p99']} ms, blocks {doc['blocks']} "
        f"of {doc['block_txs_mean']} txs every {doc['block_interval_ms']['mean']} ms, "
        f"cpu [{cpu}] = {doc['node_cpu_us_per_tx']} us/tx/node (efficiency {doc['efficiency']}; "
        f"state tree {doc.get('state_tree_cpu_us_per_tx')} us = {doc.get('state_tree_cpu_share')}), "
        f"loadgen {doc['loadgen_cpu_percent']}%, peak rss {rss} MB (heap {anon} MB), "
        f"load {doc['load_average']}"
    )


def _median(runs: Sequence[dict[str, Any]], key: Callable[[dict[str, Any]], Any]) -> Any:
    values = [v for v in (key(r) for r in runs) if v is not None]
    return statistics.median(values) if values else None


def summarise(scenario: str, runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Medians over runs (per N for scale)."""
    if scenario in ("throughput", "latency"):
        return {
            "committed_tps_median": _median(runs, lambda r: r["committed_tps"]),
            "ratio_median": _median(runs, lambda r: r["ratio"]),
            "ratio_cpu_ceiling_median": _median(runs, lambda r: r.get("ratio_cpu_ceiling")),
            "efficiency_median": _median(runs, lambda r: r.get("efficiency")),
            "state_tree_cpu_us_per_tx_median": _median(
                runs, lambda r: r.get("state_tree_cpu_us_per_tx")
            ),
            "state_tree_cpu_share_median": _median(runs, lambda r: r.get("state_tree_cpu_share")),
            "latency_p50_ms_median": _median(runs, lambda r: r["latency_ms"]["p50"]),
            "latency_p99_ms_median": _median(runs, lambda r: r["latency_ms"]["p99"]),
            "rss_peak_mb_max": max(
                (n["rss_peak_mb"] or 0 for r in runs for n in r["nodes"]), default=None
            ),
            "rss_anon_peak_mb_max": max(
                (n.get("rss_anon_peak_mb") or 0 for r in runs for n in r["nodes"]), default=None
            ),
        }
    if scenario == "scale":
        per_n: dict[int, list[float]] = {}
        for r in runs:
            if "committed_tps" not in r:
                continue
            per_n.setdefault(r["validators"], []).append(r["committed_tps"])
        medians = {n: statistics.median(v) for n, v in sorted(per_n.items())}
        work = [tps * n for n, tps in medians.items()]
        return {
            "committed_tps_median": {str(n): v for n, v in medians.items()},
            "work_tps_x_n": {str(n): round(t * n) for n, t in medians.items()},
            "work_spread": None if (s := spread(work)) is None else round(s, 3),
        }
    if scenario == "catchup":
        return {
            "catchup_tps_median": _median(runs, lambda r: r["catchup_tps"]),
            "catchup_blocks_per_s_median": _median(runs, lambda r: r["catchup_blocks_per_s"]),
            "speedup_median": _median(runs, lambda r: r["speedup"]),
        }
    return {"ready_s_median": _median(runs, lambda r: r["ready_s"])}


def result(scenario: str, params: dict[str, Any], ceiling: dict[str, Any], runs: list[dict[str, Any]],
           load_before: list[float]) -> dict[str, Any]:  # fmt: skip
    doc = {
        "bench": 1,
        "scenario": scenario,
        "commit": git_commit(),
        "build": native.MODE,  # compiled or pure Python (node/native.py); the nodes' too
        "crypto": crypto_build(),  # the nodes run the same venv's PyNaCl
        "machine": {
            **machine(),
            "load_average_before": load_before,
            "load_average_after": load_average(),
        },
        "params": params,
        "ceiling": ceiling,
        "runs": runs,
        "summary": summarise(scenario, runs),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    return doc


def human(doc: dict[str, Any]) -> str:
    c, m = doc["ceiling"], doc["machine"]
    lines = [
        f"redwood bench {doc['scenario']} at {doc['commit']} on {m['cores']} cores ({m['cpu']}), "
        f"load {m['load_average_before']} -> {m['load_average_after']}, {doc.get('build')}, "
        f"{doc.get('crypto', 'PyNaCl')}",
        f"single-core pipeline ceiling: {c['txs_per_s']:.0f} tx/s "
        f"wall, {c.get('cpu_txs_per_s', 0):.0f} tx/s of CPU time "
        f"(decode + verify + execute + LevelDB, {c['txs']} txs)",
    ]
    for key, value in doc["summary"].items():
        lines.append(f"  {key}: {value}")
    return "\n".join(lines)


SCENARIO_RUNNERS: dict[str, Callable[[Any, float], list[dict[str, Any]]]] = {
    "throughput": scenario_throughput,
    "latency": scenario_latency,
    "scale": scenario_scale,
    "catchup": scenario_catchup,
    "restart": scenario_restart,
}


def add_arguments(p: Any) -> None:
    """The `redwood bench` options (node/cli.py adds the subcommand)."""
    p.add_argument("scenario", choices=SCENARIOS, metavar="SCENARIO", help=", ".join(SCENARIOS))
    p.add_argument("--validators", type=int, default=4, metavar="N", help="(default: 4)")
    p.add_argument("--nodes", type=parse_nodes, metavar="URL,...", help="target running nodes")
    p.add_argument("--keys", type=Path, metavar="DIR", help="client keys for --nodes (*.key)")
    p.add_argument("--duration", type=float, metavar="S", help="measured seconds per run")
    p.add_argument("--rate", type=float, metavar="TX_PER_S", help="open-loop rate (latency)")
    p.add_argument("--clients", type=int, default=CLIENTS_DEFAULT, metavar="K",
                   help="client keys signing the load (default: %(default)s)")  # fmt: skip
    p.add_argument("--out", type=Path, metavar="FILE.json", help="write the JSON result here")
    p.add_argument("--runs", type=int, default=1, metavar="R", help="repetitions (default: 1)")
    p.add_argument("--txs", type=int, metavar="COUNT",
                   help="catchup: transactions missed (100000); restart: stored (1000000)")  # fmt: skip
    p.add_argument("--keep", action="store_true", help="keep the localnet directory")
    p.add_argument("--unclean", action="store_true",
                   help="restart: start from the store as a kill after its last block left it")  # fmt: skip


def run(args: Any) -> dict[str, Any]:
    """Run the scenario of parsed `args`; print the summary; write JSON; return the document."""
    check_args(args)
    commit = git_commit()  # the code the nodes run: the tree may move during a long run
    load_before = load_average()
    say("measuring the single-core pipeline ceiling...")
    ceiling = measure_ceiling()
    ceiling["cores"] = usable_cores()
    say(f"  {ceiling['txs_per_s']:.0f} tx/s on one core")
    global _CEILING_CPU_TPS
    _CEILING_CPU_TPS = ceiling["cpu_txs_per_s"]
    runs = SCENARIO_RUNNERS[args.scenario](args, ceiling["txs_per_s"])
    params = {
        k: (str(v) if isinstance(v, Path) else v)
        for k, v in vars(args).items()
        if k in ("validators", "nodes", "duration", "rate", "clients", "runs", "txs", "unclean")
    }
    doc = result(args.scenario, params, ceiling, runs, load_before)
    doc["commit"] = commit
    print(human(doc), flush=True)
    if args.out is not None:
        args.out.write_text(json.dumps(doc, indent=2) + "\n")
    return doc
