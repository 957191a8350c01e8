"""Multi-process test harness: real `redwood start` processes on 127.0.0.1.

A `Cluster` runs `redwood testnet` into a temporary directory with a base port
chosen at run time (every port the nodes will use is checked free first),
starts each node as its own OS process, and offers bounded waits on
conditions read from the nodes' HTTP APIs. Nothing sleeps for a fixed time:
every wait polls a condition under a deadline and fails with what it saw.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from node.localnet import choose_base_port as localnet_base_port

PORTS_PER_NODE = 10
POLL_INTERVAL_S = 0.05


def choose_base_port(nodes: int, rng: random.Random | None = None) -> int:
    """A base port whose whole range (PORTS_PER_NODE per node) is free right now, outside
    the kernel's ephemeral ports (node.localnet.choose_base_port)."""
    return localnet_base_port(nodes, PORTS_PER_NODE, rng)


def wait_until(
    what: str, check: Callable[[], Any], timeout_s: float, interval_s: float = POLL_INTERVAL_S
) -> Any:
    """Poll `check` until it returns a truthy value; fail after `timeout_s` with the last error."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while True:
        try:
            result = check()
            if result:
                return result
            last = result
        except (httpx.HTTPError, OSError, ValueError, KeyError) as exc:
            last = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}; last: {last!r}")
        time.sleep(interval_s)  # polling interval of a bounded wait, not a fixed delay


@dataclass
class NodeProc:
    index: int
    home: Path
    api: str
    proc: subprocess.Popen[bytes] | None = None
    log_file: Any = None
    _http: httpx.Client | None = None

    def get(self, path: str, timeout_s: float = 5.0) -> httpx.Response:
        # one keep-alive client per node: a new httpx client per call costs an SSL context
        if self._http is None:
            self._http = httpx.Client(base_url=self.api)
        return self._http.get(path, timeout=timeout_s)

    def status(self) -> dict[str, Any]:
        r = self.get("/status")
        r.raise_for_status()
        return dict(r.json())

    def height(self) -> int:
        return int(self.status()["height"])

    def is_ready(self) -> bool:
        try:
            return self.get("/ready", timeout_s=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_records(self, msg: str | None = None) -> list[dict[str, Any]]:
        """The node's JSON log records (with `msg` containing `msg`, if given); other lines
        (a traceback, output before logging starts) are skipped."""
        path = self.home / "node.log"
        if not path.exists():
            return []
        out = []
        for line in path.read_text(errors="replace").splitlines():
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if isinstance(doc, dict) and (msg is None or msg in str(doc.get("msg", ""))):
                out.append(doc)
        return out

    def log_tail(self, lines: int = 40) -> str:
        path = self.home / "node.log"
        if not path.exists():
            return "(no log)"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class Cluster:
    root: Path
    validators: int = 4
    observers: int = 0
    chain_id: str = "redwood-test"
    base_port: int = 0
    nodes: list[NodeProc] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)

    def create(self) -> None:
        total = self.validators + self.observers
        self.base_port = self.base_port or choose_base_port(total)
        out = self.root / "net"
        cmd = [
            sys.executable, "-m", "node.cli", "testnet",
            "--validators", str(self.validators), "--observers", str(self.observers),
            "--out", str(out), "--base-port", str(self.base_port), "--chain-id", self.chain_id,
        ]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"testnet failed: {done.stderr}"
        for i in range(total):
            api = f"http://127.0.0.1:{self.base_port + PORTS_PER_NODE * i + 1}"
            self.nodes.append(NodeProc(index=i, home=out / f"node{i}", api=api))

    @property
    def clients_dir(self) -> Path:
        return self.root / "net" / "clients"

    def start(self, i: int) -> None:
        node = self.nodes[i]
        assert not node.running, f"node{i} already running"
        node.log_file = open(node.home / "node.log", "ab")  # noqa: SIM115 (closed in stop)
        env = {**os.environ, "REDWOOD_LOG_FORMAT": "json", **self.env}
        node.proc = subprocess.Popen(
            [sys.executable, "-m", "node.cli", "start", "--home", str(node.home)],
            stdout=node.log_file, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip

    def start_all(self) -> None:
        for i in range(len(self.nodes)):
            self.start(i)

    def send_signal(self, i: int, sig: int) -> None:
        node = self.nodes[i]
        assert node.proc is not None
        node.proc.send_signal(sig)

    def stop(self, i: int, sig: int = signal.SIGTERM, timeout_s: float = 10.0) -> int | None:
        node = self.nodes[i]
        if node.proc is None:
            return None
        if node.proc.poll() is None:
            node.proc.send_signal(sig)
            try:
                node.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                node.proc.kill()
                node.proc.wait(timeout=10)
        code = node.proc.returncode
        node.proc = None
        if node.log_file:
            node.log_file.close()
            node.log_file = None
        return code

    def kill(self, i: int) -> None:
        self.stop(i, signal.SIGKILL)

    def stop_all(self) -> None:
        for i in range(len(self.nodes)):
            if self.nodes[i].proc is not None and self.nodes[i].proc.poll() is None:  # type: ignore[union-attr]
                self.nodes[i].proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        for i in range(len(self.nodes)):
            self.stop(i)

    @contextlib.contextmanager
    def running(self, timeout_s: float = 60.0) -> Iterator[Cluster]:
        """Start every node, wait until all are ready, stop them all on exit."""
        self.start_all()
        try:
            self.wait_ready(timeout_s=timeout_s)
            yield self
        finally:
            self.stop_all()

    def wait_ready(self, indexes: list[int] | None = None, timeout_s: float = 60.0) -> None:
        idx = list(range(len(self.nodes))) if indexes is None else indexes

        def all_ready() -> bool:
            for i in idx:
                if not self.nodes[i].running:
                    raise AssertionError(f"node{i} exited:\n{self.nodes[i].log_tail()}")
            return all(self.nodes[i].is_ready() for i in idx)

        wait_until(f"nodes {idx} ready", all_ready, timeout_s)

    def wait_height(
        self, height: int, indexes: list[int] | None = None, timeout_s: float = 60.0
    ) -> None:
        idx = list(range(len(self.nodes))) if indexes is None else indexes
        wait_until(
            f"nodes {idx} at height >= {height}",
            lambda: all(self.nodes[i].height() >= height for i in idx),
            timeout_s,
        )

    def block_hashes(self, i: int, upto: int) -> list[str]:
        hashes = []
        for h in range(1, upto + 1):
            r = self.nodes[i].get(f"/blocks/{h}")
            r.raise_for_status()
            hashes.append(r.json()["hash"])
        return hashes

    def client_key(self, agency: int) -> Path:
        return self.clients_dir / f"agency{agency}.key"

    def genesis(self) -> dict[str, Any]:
        return dict(json.loads((self.nodes[0].home / "config" / "genesis.json").read_text()))
