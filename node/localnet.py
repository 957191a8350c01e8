"""`redwood localnet`: a whole chain on this machine, one OS process per node, with a live view.

`Localnet` owns the node processes (`python -m node.cli start --home DIR/nodeI`,
output to `DIR/nodeI/node.log`, each in its own session so a terminal Ctrl-C
reaches only us and we stop the nodes in order). `stop()` sends SIGTERM to
every node, waits up to `stop_timeout_s`, then SIGKILLs what is left.

The live view samples every node's `/status` once a second and renders either
a table redrawn in place (terminal, plain ANSI escapes) or one timestamped line
per node per sample (not a terminal). Rendering is a pure function of a list
of `NodeSample`s, so tests check it without processes. Committed tx/s is the
change of `txs_committed` in /status between two samples.

`LoadGenerator` (``--load TXS_PER_S``) submits demo `put` transactions from the
agencies' client keys at a steady rate, in batches, spread over the nodes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from node.testnet import Testnet, TestnetNode

log = logging.getLogger("redwood.localnet")

READY_TIMEOUT_S = 60.0
READY_POLL_S = 0.25
STOP_TIMEOUT_S = 10.0
REFRESH_S = 1.0
STATUS_TIMEOUT_S = 2.0
LOG_TAIL_LINES = 5
LOAD_BATCHES_PER_S = 10
LOAD_BATCH_TXS_MAX = 1000
LOAD_VALID_FOR_BLOCKS = 1000
REPO_ROOT = Path(__file__).resolve().parent.parent


class LocalnetError(Exception):
    """The localnet cannot start or a node did not become ready; the message says why."""


# -- samples and rendering (pure) -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NodeSample:
    """One node at one instant, as the live view shows it. None = unknown."""

    name: str
    alive: bool
    height: int | None = None
    view: int | None = None
    peers: int | None = None
    txs_per_s: float | None = None
    mempool: int | None = None
    note: str = ""  # e.g. "unreachable", "exited (code 1), log: DIR/node2/node.log"


def _cell(value: int | float | None, decimals: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:.{decimals}f}" if decimals else str(value)


def _state(sample: NodeSample) -> str:
    if not sample.alive:
        return "DEAD"
    return "up" if sample.height is not None else "?"


def render_plain(samples: Sequence[NodeSample], now_s: float) -> list[str]:
    """One line per node: `2026-11-26T05:20:01Z node0 up height=12 view=0 ...`."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now_s))
    lines = []
    for s in samples:
        line = (
            f"{stamp} {s.name} {_state(s)} height={_cell(s.height)} view={_cell(s.view)} "
            f"peers={_cell(s.peers)} tx/s={_cell(s.txs_per_s, 1)} mempool={_cell(s.mempool)}"
        )
        if s.note:
            line += f" ({s.note})"
        lines.append(line)
    return lines


TABLE_COLUMNS = ("node", "state", "height", "view", "peers", "tx/s", "mempool")


def render_table(samples: Sequence[NodeSample], now_s: float, title: str = "") -> list[str]:
    """A fixed-width table (header, one row per node, notes under it)."""
    rows = [
        (
            s.name,
            _state(s),
            _cell(s.height),
            _cell(s.view),
            _cell(s.peers),
            _cell(s.txs_per_s, 1),
            _cell(s.mempool),
        )
        for s in samples
    ]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(TABLE_COLUMNS)]
    fmt = "  ".join(f"{{:<{w}}}" if i < 2 else f"{{:>{w}}}" for i, w in enumerate(widths))
    stamp = time.strftime("%H:%M:%S", time.localtime(now_s))
    lines = [f"{title} {stamp}".strip(), fmt.format(*TABLE_COLUMNS)]
    lines.extend(fmt.format(*row) for row in rows)
    lines.extend(f"  {s.name}: {s.note}" for s in samples if s.note)
    lines.append("Ctrl-C stops every node.")
    return lines


class LiveView:
    """Writes samples to `out`: redrawn table on a terminal, plain lines otherwise."""

    def __init__(
        self, out: TextIO, title: str = "", tty: bool | None = None, width: int | None = None
    ) -> None:
        self.out = out
        self.title = title
        self.tty = out.isatty() if tty is None else tty
        self.width = width  # None: the terminal's width at each redraw
        self._drawn = 0

    def show(self, samples: Sequence[NodeSample], now_s: float) -> None:
        if not self.tty:
            for line in render_plain(samples, now_s):
                self.out.write(line + "\n")
            self.out.flush()
            return
        # a wrapped line would break the cursor arithmetic: cut lines to the width
        width = self.width or shutil.get_terminal_size((120, 24)).columns
        lines = [line[: max(20, width - 1)] for line in render_table(samples, now_s, self.title)]
        parts = []
        if self._drawn:
            parts.append(f"\x1b[{self._drawn}F")  # cursor to the start of the old table
        parts.extend(f"\x1b[2K{line}\n" for line in lines)
        if self._drawn > len(lines):
            parts.append("\x1b[J")  # erase what the longer old table left below
        self.out.write("".join(parts))
        self.out.flush()
        self._drawn = len(lines)


# -- committed tx/s ----------------------------------------------------------------------


@dataclass(slots=True)
class RateMeter:
    """Rate of a monotonically increasing counter between successive samples."""

    last: tuple[float, int] | None = None

    def update(self, now_s: float, total: int | None) -> float | None:
        if total is None:
            return None
        previous, self.last = self.last, (now_s, total)
        if previous is None or now_s <= previous[0] or total < previous[1]:
            return None
        return (total - previous[1]) / (now_s - previous[0])


def sample_from_status(name: str, status: dict[str, Any], rate: float | None) -> NodeSample:
    """Build a NodeSample from a /status document, tolerating missing fields."""

    def number(key: str) -> int | None:
        value = status.get(key)
        if isinstance(value, bool):
            return None
        if isinstance(value, int):
            return value
        if isinstance(value, list):  # e.g. "peers": [ ... ]
            return len(value)
        return None

    return NodeSample(
        name=name,
        alive=True,
        height=number("height"),
        view=number("view"),
        peers=number("peers"),
        txs_per_s=rate,
        mempool=number("mempool_size"),
        note="catching up" if status.get("catching_up") else "",
    )


# -- processes ---------------------------------------------------------------------------


@dataclass(slots=True)
class NodeProcess:
    """One node's OS process and where its output goes."""

    node: TestnetNode
    popen: subprocess.Popen[bytes] | None = None
    meter: RateMeter = field(default_factory=RateMeter)

    @property
    def log_path(self) -> Path:
        return self.node.home / "node.log"

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def exit_note(self) -> str:
        code = None if self.popen is None else self.popen.poll()
        if self.popen is None:
            what = "not started"
        elif code is not None and code < 0:
            what = f"killed by {_signal_name(-code)}"
        else:
            what = f"exited (code {code})"
        return f"{what}; see its log: tail -n 50 {self.log_path}"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def ephemeral_port_range() -> tuple[int, int]:
    """The kernel's range for the source ports of outgoing connections (Linux; else its default)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def choose_base_port(nodes: int, ports_per_node: int = 10, rng: random.Random | None = None) -> int:
    """A base port whose whole range is free now and outside the ephemeral range.

    Outside it, because a node restarted on its ports (bench catchup, fault
    tests) must not find one taken as the source port of some outgoing connection.
    """
    rng = rng or random.Random()
    span = nodes * ports_per_node
    low, high = ephemeral_port_range()
    for _ in range(200):
        base = rng.randrange(10_000, 60_000 - span, 10)
        if base + span > low and base < high:
            continue
        if not any(port_in_use(p) for p in range(base, base + span)):
            return base
    raise RuntimeError("no free port range on 127.0.0.1 outside the ephemeral ports")


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 8192))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _default_client(url: str) -> Any:
    from node.client import Client

    return Client(url, timeout=STATUS_TIMEOUT_S)


class Localnet:
    """Start, watch and stop the node processes of a generated testnet.

    `command(node)` gives the argv of a node (default: this Python, `-m node.cli
    start --home <home>`), `client_factory(url)` the API client; tests inject both.
    """

    def __init__(
        self,
        testnet: Testnet,
        *,
        command: Callable[[TestnetNode], list[str]] | None = None,
        client_factory: Callable[[str], Any] = _default_client,
        env: dict[str, str] | None = None,
        stop_timeout_s: float = STOP_TIMEOUT_S,
    ) -> None:
        self.testnet = testnet
        self.command = command or (
            lambda node: [sys.executable, "-m", "node.cli", "start", "--home", str(node.home)]
        )
        self.client_factory = client_factory
        self.env = env
        self.stop_timeout_s = stop_timeout_s
        self.processes = [NodeProcess(node) for node in testnet.nodes]
        self._clients = {node.name: client_factory(node.api_url) for node in testnet.nodes}

    def check_ports(self) -> None:
        for node in self.testnet.nodes:
            for port in (node.ports.p2p, node.ports.api, node.ports.metrics):
                if port_in_use(port):
                    raise LocalnetError(
                        f"port {port} ({node.name}) is in use: is another localnet running? "
                        "Stop it or pass --base-port"
                    )

    def _env(self) -> dict[str, str]:
        env = dict(os.environ if self.env is None else self.env)
        path = env.get("PYTHONPATH")
        env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + path if path else "")
        return env

    def start(self) -> None:
        """Start every node process (each in its own session, output to its node.log)."""
        env = self._env()
        for proc in self.processes:
            if proc.alive():
                continue
            with open(proc.log_path, "ab") as out:
                proc.popen = subprocess.Popen(
                    self.command(proc.node),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,
                )
            log.info("started %s (pid %d)", proc.node.name, proc.popen.pid)

    def _ready(self, name: str) -> bool:
        client = self._clients[name]
        probe = getattr(client, "ready", None)
        try:
            if probe is not None:
                result = probe()
                return bool(result[0] if isinstance(result, tuple) else result)
            client.status()
        except Exception:  # any failure to answer = not ready yet
            return False
        return True

    def wait_ready(
        self, timeout_s: float = READY_TIMEOUT_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        """Return once every node answers /ready; LocalnetError on a dead node or timeout."""
        deadline = clock() + timeout_s
        pending = [p for p in self.processes]
        while pending:
            for proc in list(pending):
                if not proc.alive():
                    raise LocalnetError(
                        f"{proc.node.name} {proc.exit_note()}\n{tail(proc.log_path)}".rstrip()
                    )
                if self._ready(proc.node.name):
                    pending.remove(proc)
            if not pending:
                return
            if clock() >= deadline:
                names = ", ".join(p.node.name for p in pending)
                raise LocalnetError(
                    f"not ready after {timeout_s:.0f} s: {names} "
                    f"(logs: {pending[0].log_path.parent.parent}/nodeI/node.log)"
                )
            time.sleep(READY_POLL_S)

    def sample(self, now_s: float | None = None) -> list[NodeSample]:
        """Query every node's /status once; dead and unreachable nodes are shown as such."""
        now_s = time.monotonic() if now_s is None else now_s
        samples = []
        for proc in self.processes:
            name = proc.node.name
            if not proc.alive():
                samples.append(NodeSample(name, alive=False, note=proc.exit_note()))
                continue
            try:
                status = self._clients[name].status()
            except Exception as exc:
                samples.append(NodeSample(name, alive=True, note=f"unreachable ({exc})"[:120]))
                continue
            if not isinstance(status, dict):
                samples.append(NodeSample(name, alive=True, note="bad /status answer"))
                continue
            total = status.get("txs_committed")
            rate = proc.meter.update(now_s, total if isinstance(total, int) else None)
            samples.append(sample_from_status(name, status, rate))
        return samples

    def any_alive(self) -> bool:
        return any(p.alive() for p in self.processes)

    def stop(self) -> None:
        """SIGTERM every node, wait up to stop_timeout_s for all, then SIGKILL the rest."""
        running = [p for p in self.processes if p.alive()]
        for proc in running:
            with contextlib.suppress(ProcessLookupError):
                assert proc.popen is not None
                proc.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout_s
        for proc in running:
            assert proc.popen is not None
            try:
                proc.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning(
                    "%s did not stop in %.0f s: killing it", proc.node.name, self.stop_timeout_s
                )
                with contextlib.suppress(ProcessLookupError):
                    proc.popen.kill()
                proc.popen.wait()
        for client in self._clients.values():
            close = getattr(client, "close", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    close()


# -- demo workload -----------------------------------------------------------------------


class LoadGenerator:
    """Submit `rate_per_s` demo puts from the agencies' client keys, in batches.

    Runs in a background thread (`start()`/`stop()`); every 1/LOAD_BATCHES_PER_S
    seconds it builds the transactions that are due (round-robin over the
    agencies, valid for LOAD_VALID_FOR_BLOCKS from the node's height) and sends
    them as one /txs/batch to the next node. Failures are counted, never raised.
    """

    def __init__(
        self,
        keys: dict[str, Any],  # agency id -> SigningKey
        urls: Sequence[str],
        rate_per_s: float,
        *,
        client_factory: Callable[[str], Any] = _default_client,
    ) -> None:
        if rate_per_s <= 0 or not keys or not urls:
            raise ValueError("a load needs a positive rate, keys and nodes")
        self.keys = list(keys.items())
        self.clients = [client_factory(url) for url in urls]
        self.rate_per_s = rate_per_s
        self.submitted = 0
        self.rejected = 0
        self.failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="load", daemon=True)
        self._counter = 0
        self._batches = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        interval_s = 1.0 / LOAD_BATCHES_PER_S
        owed = 0.0
        last = time.monotonic()
        while not self._stop.wait(interval_s):
            now = time.monotonic()
            owed = min(owed + (now - last) * self.rate_per_s, LOAD_BATCH_TXS_MAX)
            last = now
            count = int(owed)
            if count:
                owed -= count
                self.submit_batch(count)

    def build_batch(self, count: int, chain_id: str, height: int) -> list[bytes]:
        from node import txs

        batch = []
        for _ in range(count):
            agency, key = self.keys[self._counter % len(self.keys)]
            self._counter += 1
            record_key = f"demo/{self._counter % 1000}"
            value = f"value {self._counter} at {time.time():.3f}"
            batch.append(
                txs.build(
                    key, chain_id, "put", agency, record_key, value, height + LOAD_VALID_FOR_BLOCKS
                )
            )
        return batch

    def submit_batch(self, count: int) -> None:
        """Build and submit `count` puts to the next node in turn."""
        client = self.clients[self._batches % len(self.clients)]
        self._batches += 1
        try:
            status = client.status()
            batch = self.build_batch(count, str(status["chain_id"]), int(status["height"]))
            results = client.submit_batch(batch)
        except Exception:  # node down or busy: counted, the view shows the rest
            self.failed += count
            return
        accepted = sum(1 for r in results if isinstance(r, dict) and r.get("accepted"))
        self.submitted += accepted
        self.rejected += len(batch) - accepted


def prepare_testnet(
    out: Path, validators: int, observers: int, base_port: int, chain_id: str
) -> tuple[Testnet, bool]:
    """Reuse the testnet in `out` if it matches, else generate one; (testnet, reused)."""
    from node.testnet import generate_testnet, load_testnet

    if (out / "testnet.json").exists():
        testnet = load_testnet(out)
        if not testnet.matches(validators, observers, base_port, chain_id):
            raise LocalnetError(
                f"{out} holds a different testnet ({testnet.validators} validators, "
                f"{testnet.observers} observers, base port {testnet.base_port}, chain "
                f"{testnet.chain_id!r}); pass the same options, another --dir, or delete it"
            )
        return testnet, True
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise LocalnetError(f"{out}: exists and is not a testnet directory; use another --dir")
    return generate_testnet(
        out, validators, observers, base_port=base_port, chain_id=chain_id
    ), False
