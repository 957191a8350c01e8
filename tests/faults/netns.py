"""Linux network namespaces for fault tests: one per node, joined by veth pairs to a bridge.

Everything lives in namespaces this module creates (names
`rwfault-<pid>-br` and `rwfault-<pid>-n<i>`, <pid> the test process, so that
concurrent runs never meet; namespaces of a dead pid are leftovers): a bridge namespace holding `br0` (10.77.0.1/24) and one namespace
per node holding `eth0` (10.77.0.(10+i)/24), the other end of its veth pair
enslaved to `br0`. The host's own interfaces and routes are never touched.

Faults:
- a blocked direction (a -> b) is a `blackhole` route to b's address inside
  a's namespace: a's packets to b vanish (one-way loss at the IP layer; a TCP
  connection then stalls both ways, as it would on a real network);
- a partition blocks both directions of every pair across the cut;
- latency and loss use `tc netem` on a node's eth0 when the kernel has
  sch_netem (`netem_available`); otherwise those faults are skipped, with the
  reason, by the caller.

The test process reaches node APIs from threads that entered the bridge
namespace (`enter_bridge_ns`, setns(2) through ctypes: it affects only the
calling thread).
"""

from __future__ import annotations

import ctypes
import os
import re
import subprocess
from dataclasses import dataclass, field

PREFIX = "rwfault-"
RUN = f"{PREFIX}{os.getpid()}-"
BRIDGE_NS = RUN + "br"
SUBNET = "10.77.0"
BRIDGE_ADDR = f"{SUBNET}.1"
CLONE_NEWNET = 0x40000000
CMD_TIMEOUT_S = 15


class NetnsUnavailable(Exception):
    """Namespaces cannot be used here (not root, no `ip`, or the kernel refused)."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        ["ip", *args], capture_output=True, text=True, timeout=CMD_TIMEOUT_S, check=False
    )
    if check and done.returncode != 0:
        raise NetnsUnavailable(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done


def list_ours() -> list[str]:
    """This process's namespaces."""
    return [n for n in _list_all() if n.startswith(RUN)]


def _list_all() -> list[str]:
    done = _ip("netns", "list", check=False)
    return [line.split()[0] for line in done.stdout.splitlines() if line.strip()]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_leftovers() -> list[str]:
    """Delete `rwfault-<pid>-*` namespaces whose test process is gone (a killed run)."""
    gone = []
    for name in _list_all():
        m = re.fullmatch(rf"{PREFIX}(\d+)-.*", name)
        if m and int(m.group(1)) != os.getpid() and not _pid_alive(int(m.group(1))):
            _ip("netns", "del", name, check=False)
            gone.append(name)
    return gone


def node_ns(i: int) -> str:
    return f"{RUN}n{i}"


def node_addr(i: int) -> str:
    return f"{SUBNET}.{10 + i}"


def enter_bridge_ns() -> None:
    """Move the calling thread into the bridge namespace (thread pool initializer)."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/var/run/netns/{BRIDGE_NS}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({BRIDGE_NS}): {os.strerror(err)}")
    finally:
        os.close(fd)


@dataclass
class NetnsNet:
    """The namespaces of one test run; `close()` removes them all."""

    nodes: int
    blocked: set[tuple[int, int]] = field(default_factory=set)
    shaped: set[int] = field(default_factory=set)
    netem_available: bool = False
    netem_reason: str = ""

    def create(self) -> None:
        if os.geteuid() != 0:
            raise NetnsUnavailable("not running as root")
        remove_leftovers()
        try:
            _ip("netns", "add", BRIDGE_NS)
            _ip("-n", BRIDGE_NS, "link", "set", "lo", "up")
            _ip("-n", BRIDGE_NS, "link", "add", "br0", "type", "bridge")
            _ip("-n", BRIDGE_NS, "addr", "add", f"{BRIDGE_ADDR}/24", "dev", "br0")
            _ip("-n", BRIDGE_NS, "link", "set", "br0", "up")
            for i in range(self.nodes):
                self._add_node(i)
        except (NetnsUnavailable, OSError, subprocess.TimeoutExpired):
            self.close()
            raise
        self._probe_netem()

    def _add_node(self, i: int) -> None:
        ns, veth = node_ns(i), f"v{i}"
        _ip("netns", "add", ns)
        _ip("-n", ns, "link", "set", "lo", "up")
        _ip(
            "-n",
            BRIDGE_NS,
            "link",
            "add",
            veth,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            ns,
        )
        _ip("-n", BRIDGE_NS, "link", "set", veth, "master", "br0")
        _ip("-n", BRIDGE_NS, "link", "set", veth, "up")
        _ip("-n", ns, "addr", "add", f"{node_addr(i)}/24", "dev", "eth0")
        _ip("-n", ns, "link", "set", "eth0", "up")

    def _probe_netem(self) -> None:
        done = _tc(node_ns(0), "qdisc", "add", "dev", "eth0", "root", "netem", "delay", "1ms")
        if done.returncode == 0:
            _tc(node_ns(0), "qdisc", "del", "dev", "eth0", "root")
            self.netem_available = True
        else:
            self.netem_reason = f"tc netem unavailable here ({done.stderr.strip()})"

    def exec_prefix(self, i: int) -> list[str]:
        return ["ip", "netns", "exec", node_ns(i)]

    # -- faults --------------------------------------------------------------------------

    def set_blocked(self, blocked: set[tuple[int, int]]) -> None:
        """Make exactly the directed pairs in `blocked` drop their packets."""
        for a, b in self.blocked - blocked:
            _ip("-n", node_ns(a), "route", "del", "blackhole", f"{node_addr(b)}/32", check=False)
        for a, b in blocked - self.blocked:
            _ip("-n", node_ns(a), "route", "add", "blackhole", f"{node_addr(b)}/32")
        self.blocked = set(blocked)

    def shape(self, i: int, delay_ms: int, loss_pct: float) -> None:
        """netem on node i's eth0 (both directions of its traffic leave through it or br0)."""
        if not self.netem_available:
            raise NetnsUnavailable(self.netem_reason)
        args = ["delay", f"{delay_ms}ms"] + (["loss", f"{loss_pct}%"] if loss_pct else [])
        done = _tc(node_ns(i), "qdisc", "replace", "dev", "eth0", "root", "netem", *args)
        if done.returncode != 0:
            raise NetnsUnavailable(done.stderr.strip())
        self.shaped.add(i)

    def unshape_all(self) -> None:
        for i in sorted(self.shaped):
            _tc(node_ns(i), "qdisc", "del", "dev", "eth0", "root")
        self.shaped.clear()

    def close(self) -> None:
        for name in list_ours():
            _ip("netns", "del", name, check=False)


def _tc(ns: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", ns, "tc", *args],
        capture_output=True, text=True, timeout=CMD_TIMEOUT_S, check=False,
    )  # fmt: skip
