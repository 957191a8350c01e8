"""A cluster of real `redwood start` processes whose network the test controls.

Two network modes, same scenarios:

- "netns": each node in its own Linux network namespace (tests/faults/netns.py),
  joined by veth pairs to a bridge namespace; partitions are blackhole routes
  inside the node namespaces, latency/loss is tc netem where the kernel has it.
- "proxy": nodes on 127.0.0.1, every peer address pointing at a fault-injecting
  TCP proxy (tests/faults/proxy.py) that can cut, hold one direction, delay and
  "lose" (retransmission delay) traffic per directed pair.

`FaultCluster.create()` picks the mode ("auto": netns when possible) and
returns a sentence saying which mode it used and why. Node homes come from
`redwood testnet`; addresses are set with REDWOOD_* environment overrides.
HTTP calls to nodes go through `call()` / `spawn()`, which run in threads that
entered the bridge namespace in netns mode.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.faults import netns
from tests.faults.proxy import FaultProxy
from tests.integration.harness import PORTS_PER_NODE, choose_base_port

REPO = Path(__file__).resolve().parents[2]
NETNS_P2P_PORT = 7700
NETNS_API_PORT = 7701
HTTP_THREADS = 32
STOP_TIMEOUT_S = 15.0
TMPFS_PREFIX = "rwfault-tmpfs-"  # device name of our tmpfs mounts: + the test's pid
TMPFS_SOURCE = f"{TMPFS_PREFIX}{os.getpid()}"


def remove_leftover_mounts() -> list[str]:
    """Lazily unmount tmpfs mounts left behind by runs whose test process is gone."""
    try:
        lines = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return []
    gone = []
    for line in lines:
        source, path = line.split()[:2]
        if not source.startswith(TMPFS_PREFIX) or source == TMPFS_SOURCE:
            continue
        pid = source[len(TMPFS_PREFIX) :]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            subprocess.run(["umount", "-l", path], capture_output=True, timeout=15, check=False)
            gone.append(path)
    return gone


@dataclass
class FNode:
    index: int
    name: str
    home: Path
    node_id: str
    validator: bool
    api: str = ""
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    log_file: Any = None
    byzantine: bool = False  # ever ran as the Byzantine node: excluded from honest checks
    paused: bool = False
    tmpfs: Path | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def log_path(self) -> Path:
        return self.home / "node.log"

    def log_tail(self, lines: int = 30) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


class FaultCluster:
    """Real node processes plus the network and disk knobs the scenarios turn."""

    def __init__(
        self, root: Path, validators: int, observers: int, mode: str, seed: int,
        chain_id: str = "rw-faults",
    ) -> None:  # fmt: skip
        self.root = root
        self.validators = validators
        self.observers = observers
        self.requested_mode = mode
        self.seed = seed
        self.chain_id = chain_id
        self.mode = ""
        self.mode_reason = ""
        self.nodes: list[FNode] = []
        self.net: netns.NetnsNet | None = None
        self.proxy: FaultProxy | None = None
        self.pool: ThreadPoolExecutor | None = None
        self.blocked: set[tuple[int, int]] = set()
        self.log = (root / "faults.log").open("a")
        self.stop_events: list[threading.Event] = []  # set first thing in close()
        self._lock = threading.Lock()

    # -- setup ---------------------------------------------------------------------------------

    def create(self) -> str:
        total = self.validators + self.observers
        base = choose_base_port(total)
        out = self.root / "net"
        cmd = [
            sys.executable, "-m", "node.cli", "testnet", "--validators", str(self.validators),
            "--observers", str(self.observers), "--out", str(out), "--base-port", str(base),
            "--chain-id", self.chain_id,
        ]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=REPO)
        assert done.returncode == 0, f"redwood testnet failed: {done.stderr}"
        meta = json.loads((out / "testnet.json").read_text())
        for i, entry in enumerate(meta["nodes"]):
            self.nodes.append(
                FNode(i, entry["name"], out / entry["name"], entry["node_id"], entry["validator"])
            )
        peers = {i: self._peer_indexes(i, base) for i in range(total)}
        self._choose_mode()
        if self.mode == "netns":
            self._wire_netns(peers)
        else:
            self._wire_proxy(peers, base)
        init = netns.enter_bridge_ns if self.mode == "netns" else None
        self.pool = ThreadPoolExecutor(HTTP_THREADS, initializer=init)
        self.note(f"mode {self.mode}: {self.mode_reason}")
        return f"{self.mode} ({self.mode_reason})"

    def _peer_indexes(self, i: int, base: int) -> list[int]:
        """The nodes node i dials in the generated config (ports say which node)."""
        from node.config import load_config

        cfg = load_config(self.nodes[i].home, env={})
        return sorted((port - base) // PORTS_PER_NODE for _nid, _h, port in cfg.peer_addresses())

    def _choose_mode(self) -> None:
        if self.requested_mode in ("auto", "netns"):
            net = netns.NetnsNet(len(self.nodes))
            try:
                net.create()
            except (netns.NetnsUnavailable, OSError, subprocess.TimeoutExpired) as exc:
                if self.requested_mode == "netns":
                    raise
                self.mode, self.mode_reason = "proxy", f"network namespaces unavailable: {exc}"
                return
            self.net = net
            self.mode = "netns"
            self.mode_reason = "one network namespace per node, veth pairs to a bridge" + (
                "; tc netem available" if net.netem_available else f"; {net.netem_reason}"
            )
            return
        self.mode, self.mode_reason = "proxy", "requested"

    def _base_env(self) -> dict[str, str]:
        return {"REDWOOD_LOG_FORMAT": "json", "REDWOOD_METRICS_ENABLED": "false"}

    def _wire_netns(self, peers: dict[int, list[int]]) -> None:
        for n in self.nodes:
            addr = netns.node_addr(n.index)
            n.api = f"http://{addr}:{NETNS_API_PORT}"
            plist = [
                f"{self.nodes[j].node_id}@{netns.node_addr(j)}:{NETNS_P2P_PORT}"
                for j in peers[n.index]
            ]
            n.env = {
                **self._base_env(),
                "REDWOOD_P2P_LISTEN": f"{addr}:{NETNS_P2P_PORT}",
                "REDWOOD_API_LISTEN": f"{addr}:{NETNS_API_PORT}",
                "REDWOOD_P2P_PEERS": ",".join(plist),
            }

    def _wire_proxy(self, peers: dict[int, list[int]], base: int) -> None:
        self.proxy = FaultProxy(self.seed)
        for n in self.nodes:
            p2p = base + PORTS_PER_NODE * n.index
            n.api = f"http://127.0.0.1:{p2p + 1}"
            plist = []
            for j in peers[n.index]:
                port = self.proxy.add_route(n.index, j, base + PORTS_PER_NODE * j)
                plist.append(f"{self.nodes[j].node_id}@127.0.0.1:{port}")
            n.env = {
                **self._base_env(),
                "REDWOOD_P2P_LISTEN": f"127.0.0.1:{p2p}",
                "REDWOOD_API_LISTEN": f"127.0.0.1:{p2p + 1}",
                "REDWOOD_P2P_PEERS": ",".join(plist),
            }

    def note(self, text: str) -> None:
        line = f"{time.strftime('%H:%M:%S', time.gmtime())} {text}"
        with self._lock:
            self.log.write(line + "\n")
            self.log.flush()

    # -- processes -----------------------------------------------------------------------------

    def start(self, i: int, byzantine: bool = False) -> None:
        n = self.nodes[i]
        assert not n.running, f"{n.name} already running"
        if byzantine:
            n.byzantine = True
            args = ["-m", "tests.faults.byzantine_node", "--home", str(n.home)]
            args += ["--seed", str(self.seed)]
        else:
            args = ["-m", "node.cli", "start", "--home", str(n.home)]
        prefix = self.net.exec_prefix(i) if self.net is not None else []
        n.log_file = n.log_path.open("ab")
        n.proc = subprocess.Popen(
            [*prefix, sys.executable, *args], stdout=n.log_file, stderr=subprocess.STDOUT,
            env={**os.environ, **n.env}, cwd=REPO,
        )  # fmt: skip
        n.paused = False
        self.note(f"start {n.name}{' (byzantine)' if byzantine else ''} pid {n.proc.pid}")

    def stop(self, i: int, sig: int = signal.SIGTERM, signalled: bool = False) -> int | None:
        """Send `sig` (unless `signalled` already), wait; a node that hangs is killed."""
        n = self.nodes[i]
        if n.proc is None:
            return None
        if n.paused:
            n.proc.send_signal(signal.SIGCONT)
            n.paused = False
        if n.proc.poll() is None:
            if not signalled:
                n.proc.send_signal(sig)
            try:
                n.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                n.proc.kill()
                n.proc.wait(timeout=STOP_TIMEOUT_S)
        code = n.proc.returncode
        n.proc = None
        if n.log_file is not None:
            n.log_file.close()
            n.log_file = None
        self.note(f"stop {n.name} with {signal.Signals(sig).name}: exit {code}")
        return code

    def reap(self, i: int) -> int | None:
        """Forget a process that exited by itself; its exit code."""
        n = self.nodes[i]
        if n.proc is None or n.proc.poll() is None:
            return None
        return self.stop(i)

    def pause(self, i: int) -> None:
        n = self.nodes[i]
        assert n.proc is not None
        n.proc.send_signal(signal.SIGSTOP)
        n.paused = True
        self.note(f"SIGSTOP {n.name}")

    def resume(self, i: int) -> None:
        n = self.nodes[i]
        if n.proc is not None and n.paused:
            n.proc.send_signal(signal.SIGCONT)
        n.paused = False
        self.note(f"SIGCONT {n.name}")

    # -- network -------------------------------------------------------------------------------

    def set_blocked(self, blocked: set[tuple[int, int]]) -> None:
        """Exactly these directed pairs (src, dst) lose their traffic."""
        if self.net is not None:
            self.net.set_blocked(blocked)
        else:
            assert self.proxy is not None
            self.proxy.set_rules(blocked=blocked)
        self.blocked = set(blocked)
        self.note(f"blocked {sorted(blocked)}")

    def shaping_available(self) -> tuple[bool, str]:
        if self.net is not None:
            return self.net.netem_available, self.net.netem_reason
        return True, ""

    def shape(self, nodes: list[int], delay_ms: int, loss_pct: float) -> None:
        """Latency (and loss) on every path touching `nodes`."""
        if self.net is not None:
            for i in nodes:
                self.net.shape(i, delay_ms, loss_pct)
        else:
            assert self.proxy is not None
            pairs = [
                (a, b) for a in range(len(self.nodes)) for b in range(len(self.nodes)) if a != b
            ]
            touched = [p for p in pairs if p[0] in nodes or p[1] in nodes]
            self.proxy.set_rules(
                blocked=self.blocked,
                delay_s={p: delay_ms / 1000 for p in touched},
                loss={p: loss_pct / 100 for p in touched},
            )
        self.note(f"shape {nodes}: {delay_ms} ms, {loss_pct}% loss")

    def unshape(self) -> None:
        if self.net is not None:
            self.net.unshape_all()
        elif self.proxy is not None:
            self.proxy.set_rules(blocked=self.blocked)
        self.note("unshape")

    # -- disks ---------------------------------------------------------------------------------

    def mount_tmpfs(self, i: int, size_mb: int) -> str:
        """Put node i's (still empty) data dir on a tmpfs; '' or why it could not."""
        n = self.nodes[i]
        data = n.home / "data"
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0700", TMPFS_SOURCE, str(data)],
            capture_output=True, text=True, timeout=15, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            return f"mount -t tmpfs failed: {done.stderr.strip() or done.returncode}"
        n.tmpfs = data
        # LevelDB's log grows to the write buffer and a flush writes a table as big beside
        # it: on a small disk only the disk-full fault should fill it (testnet gives up to
        # 40 MB, most of a 64 MB tmpfs)
        buffer_mb = max(4, size_mb // 4)
        n.env["REDWOOD_NODE_WRITE_BUFFER_MB"] = str(buffer_mb)
        self.note(f"tmpfs of {size_mb} MB on {data}, write buffer {buffer_mb} MB")
        return ""

    # -- HTTP (in the bridge namespace in netns mode) ------------------------------------------

    def call(self, fn: Callable[[], Any]) -> Any:
        assert self.pool is not None
        return self.pool.submit(fn).result()

    def spawn(self, fn: Callable[[], Any]) -> Any:
        assert self.pool is not None
        return self.pool.submit(fn)

    def get(self, i: int, path: str, timeout_s: float = 5.0) -> httpx.Response:
        url = self.nodes[i].api + path
        return self.call(lambda: httpx.get(url, timeout=timeout_s))  # type: ignore[no-any-return]

    def get_json(self, i: int, path: str, timeout_s: float = 5.0) -> Any:
        r = self.get(i, path, timeout_s)
        r.raise_for_status()
        return r.json()

    def status(self, i: int) -> dict[str, Any] | None:
        try:
            return dict(self.get_json(i, "/status", 3.0))
        except (httpx.HTTPError, ValueError):
            return None

    def is_ready(self, i: int) -> bool:
        try:
            return self.get(i, "/ready", 3.0).status_code == 200
        except httpx.HTTPError:
            return False

    def primary_index(self) -> int | None:
        ids = {n.node_id: n.index for n in self.nodes}
        for n in self.nodes:
            if n.running and not n.paused and not n.byzantine:
                st = self.status(n.index)
                if st is not None:
                    return ids.get(st.get("primary", ""))
        return None

    # -- teardown ------------------------------------------------------------------------------

    def close(self) -> None:
        for event in self.stop_events:
            event.set()  # load threads end, so the interpreter can exit even after an error
        signalled = set()
        for n in self.nodes:
            if n.running and not n.paused:
                n.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
                signalled.add(n.index)
        for n in self.nodes:
            try:
                self.stop(n.index, signalled=n.index in signalled)
            except Exception as exc:  # teardown goes on
                self.note(f"stop {n.name} failed: {exc!r}")
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)
        if self.proxy is not None:
            self.proxy.close()
        if self.net is not None:
            self.net.close()
        for n in self.nodes:
            if n.tmpfs is not None:
                subprocess.run(["umount", "-l", str(n.tmpfs)], capture_output=True, timeout=15)
                n.tmpfs = None
        self.log.close()
