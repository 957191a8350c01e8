"""The `redwood` command line (in-process through node.cli.main) and the localnet runner.

CLI errors must be one line on stderr and a non-zero exit, never a traceback.
Localnet process management is driven with stand-in node processes (tiny
Python scripts) and a fake API client, so it runs in well under a second.
"""

from __future__ import annotations

import calendar
import json
import logging
import signal
import socket
import stat
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest

from consensus.crypto import SigningKey
from node import __version__
from node.cli import _run_localnet, main
from node.localnet import (
    LOAD_VALID_FOR_BLOCKS,
    LiveView,
    LoadGenerator,
    Localnet,
    LocalnetError,
    NodeSample,
    RateMeter,
    prepare_testnet,
    render_plain,
    render_table,
    sample_from_status,
)
from node.testnet import generate_testnet
from storage.keyfile import read_key

# -- helpers ------------------------------------------------------------------------------


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(err: str, *fragments: str) -> None:
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if not line.startswith("redwood: warning")]
    assert len(lines) == 1, err
    assert lines[0].startswith("redwood: error: ")
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- general -----------------------------------------------------------------------------


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "--version")
    assert code == 0
    assert out.strip() == f"redwood {__version__}"


def test_no_command_prints_help_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys)
    assert code == 2
    assert "COMMAND" in err


@pytest.mark.parametrize(
    ("argv", "fragments"),
    [
        (["frobnicate"], ["invalid choice: 'frobnicate'"]),
        (["init"], ["--home"]),
        (["testnet", "--out", "x"], ["--validators"]),
        (["testnet", "--validators", "four", "--out", "x"], ["not a whole number: 'four'"]),
        (
            ["testnet", "--validators", "4", "--out", "x", "--base-port", "0"],
            ["port must be in 1..65535"],
        ),
        (
            ["testnet", "--validators", "4", "--out", "x", "--base-port", "http"],
            ["not a port number"],
        ),
        (["testnet", "--validators", "-3", "--out", "x"], ["must not be negative"]),
        (["start"], ["--home"]),
        (["localnet", "--load", "0"], ["--load", "must be in (0, 100000]"]),
        (["localnet", "--base-port", "65536"], ["port must be in 1..65535"]),
        (["status", "--node", "127.0.0.1:7701"], ["expected an http:// or https:// URL"]),
        (["record"], ["ACTION"]),
        (["record", "put", "k", "v"], ["--key"]),
        (["record", "get", "agency0"], ["KEY"]),
    ],
)
def test_usage_errors_are_one_line(
    capsys: pytest.CaptureFixture[str], argv: list[str], fragments: list[str]
) -> None:
    code, _, err = run_cli(capsys, *argv)
    assert code == 2
    assert_one_line_error(err, *fragments)


# -- init and testnet -----------------------------------------------------------------------


def test_init_prints_node_id_never_the_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "h"
    code, out, _ = run_cli(
        capsys, "init", "--home", str(home), "--chain-id", "c1", "--moniker", "m"
    )
    assert code == 0
    key = read_key(home / "config" / "node_key")
    assert key.public.hex() in out
    assert key.seed.hex() not in out
    assert stat.S_IMODE((home / "config" / "node_key").stat().st_mode) == 0o600
    assert (home / "data").is_dir()
    genesis = json.loads((home / "config" / "genesis.json").read_text())
    assert genesis["chain_id"] == "c1"
    assert genesis["validators"][0]["node_id"] == key.public.hex()
    client = read_key(home / "config" / "client_key")
    assert genesis["agencies"][0]["members"] == [client.public.hex()]


def test_init_refuses_existing_home_unless_forced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "h"
    assert run_cli(capsys, "init", "--home", str(home))[0] == 0
    before = (home / "config" / "node_key").read_text()
    code, _, err = run_cli(capsys, "init", "--home", str(home))
    assert code == 2
    assert_one_line_error(err, "already exists", "--force")
    assert (home / "config" / "node_key").read_text() == before
    assert run_cli(capsys, "init", "--home", str(home), "--force")[0] == 0
    assert (home / "config" / "node_key").read_text() != before


def test_testnet_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_dir = tmp_path / "net"
    code, out, err = run_cli(
        capsys, "testnet", "--validators", "2", "--observers", "1", "--out", str(out_dir),
        "--base-port", "21000",
    )  # fmt: skip
    assert code == 0
    assert "4 or more are recommended" in err  # warning, not an error
    assert "node2" in out and "observer" in out
    assert (out_dir / "node2" / "config" / "genesis.json").is_file()
    code, _, err = run_cli(capsys, "testnet", "--validators", "2", "--out", str(out_dir))
    assert code == 2
    assert_one_line_error(err, "not empty")


def test_testnet_port_range_overflow(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(
        capsys, "testnet", "--validators", "4", "--out", str(tmp_path / "n"), "--base-port", "65530"
    )
    assert code == 2
    assert_one_line_error(err, "outside 1..65535")


# -- start ---------------------------------------------------------------------------------


@pytest.fixture
def fake_service(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    calls: list[Any] = []
    module = types.ModuleType("node.service")

    def run(config: Any) -> int:
        calls.append(config)
        return 7

    module.run = run  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "node.service", module)
    return calls


def test_start_runs_the_service_with_the_loaded_config(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    fake_service: list[Any],
    monkeypatch: pytest.MonkeyPatch,
    restore_logging: None,
) -> None:
    home = tmp_path / "h"
    assert run_cli(capsys, "init", "--home", str(home))[0] == 0
    monkeypatch.setenv("REDWOOD_LOG_FORMAT", "json")
    monkeypatch.setenv("REDWOOD_API_LISTEN", "127.0.0.1:9999")
    code, _, _ = run_cli(capsys, "start", "--home", str(home))
    assert code == 7
    (cfg,) = fake_service
    assert cfg.home == home
    assert cfg.api.listen == "127.0.0.1:9999"
    assert cfg.log.format == "json"


def test_start_errors(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    fake_service: list[Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    code, _, err = run_cli(capsys, "start", "--home", str(tmp_path / "absent"))
    assert code == 2
    assert_one_line_error(err, "node home not found")

    home = tmp_path / "h"
    assert run_cli(capsys, "init", "--home", str(home))[0] == 0
    toml = home / "config" / "node.toml"
    original = toml.read_text()
    toml.write_text(original.replace('listen = "127.0.0.1:7701"', 'listen = "x"'))
    code, _, err = run_cli(capsys, "start", "--home", str(home))
    assert code == 2
    assert_one_line_error(err, "[api] listen: expected host:port, got 'x'")
    toml.write_text(original + "\n[extra]\n")
    code, _, err = run_cli(capsys, "start", "--home", str(home))
    assert_one_line_error(err, "[extra]: unknown section")
    toml.write_text(original)

    monkeypatch.setenv("REDWOOD_CONSENSUS_TICK_MS", "fast")
    code, _, err = run_cli(capsys, "start", "--home", str(home))
    assert code == 2
    assert_one_line_error(err, "REDWOOD_CONSENSUS_TICK_MS", "expected an integer")
    monkeypatch.delenv("REDWOOD_CONSENSUS_TICK_MS")

    (home / "config" / "node_key").chmod(0o644)
    code, _, err = run_cli(capsys, "start", "--home", str(home))
    assert code == 2
    assert_one_line_error(err, "[node] key_file", "too open", "chmod 600")
    (home / "config" / "node_key").chmod(0o600)

    (home / "config" / "genesis.json").unlink()
    code, _, err = run_cli(capsys, "start", "--home", str(home))
    assert code == 2
    assert_one_line_error(err, "[node] genesis_file", "not found")
    assert fake_service == []  # never started on bad input


def test_start_reports_service_startup_errors_in_one_line(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    restore_logging: None,
) -> None:
    from node.genesis import GenesisError

    module = types.ModuleType("node.service")

    def run(config: Any) -> int:
        raise GenesisError("genesis.validators[0].node_id: expected 64 hex characters")

    module.run = run  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "node.service", module)
    home = tmp_path / "h"
    assert run_cli(capsys, "init", "--home", str(home))[0] == 0
    code, _, err = run_cli(capsys, "start", "--home", str(home))
    assert code == 1
    assert_one_line_error(err, "genesis.validators[0].node_id")


# -- client commands -----------------------------------------------------------------------


class FakeClientError(Exception):
    pass


class FakeClient:
    """Stand-in for node.client.Client: records calls, answers from `answers`."""

    calls: ClassVar[list[tuple[str, tuple[Any, ...]]]] = []
    unreachable = False

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    def _call(self, name: str, *args: Any) -> Any:
        if FakeClient.unreachable:
            raise httpx.ConnectError("connection refused")
        FakeClient.calls.append((name, args))
        return {"called": name}

    def status(self) -> Any:
        return self._call("status")

    def put(self, key: Any, agency: str, record_key: bytes, value: bytes, wait: bool) -> Any:
        self._call("put", agency, record_key, value, wait)
        return {"tx_hash": "00" * 32, **({"height": 3} if wait else {})}

    def get_record(self, agency: str, key: str) -> Any:
        return self._call("get_record", agency, key)

    def history(self, agency: str, key: str) -> Any:
        return self._call("history", agency, key)

    def validators(self) -> Any:
        self._call("validators")
        return FakeClient.validator_list

    validator_list: ClassVar[list[dict[str, Any]]] = []


@pytest.fixture
def fake_client(monkeypatch: pytest.MonkeyPatch) -> type[FakeClient]:
    module = types.ModuleType("node.client")
    module.Client = FakeClient  # type: ignore[attr-defined]
    module.ClientError = FakeClientError  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "node.client", module)
    FakeClient.calls = []
    FakeClient.unreachable = False
    return FakeClient


def test_record_put_with_agency_from_genesis(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fake_client: type[FakeClient]
) -> None:
    testnet = generate_testnet(tmp_path / "n", 2, base_port=22000)
    code, out, err = run_cli(
        capsys, "record", "put", "licence/42", "granted",
        "--key", str(testnet.client_keys["agency1"]),
        "--genesis", str(testnet.nodes[0].home / "config" / "genesis.json"),
        "--node", "http://127.0.0.1:22011", "--wait",
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out) == {"tx_hash": "00" * 32, "height": 3}
    assert fake_client.calls == [("put", ("agency1", b"licence/42", b"granted", True))]


def test_record_put_finds_the_agency_from_the_nodes_validators(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fake_client: type[FakeClient]
) -> None:
    testnet = generate_testnet(tmp_path / "n", 2, base_port=22000)
    member = read_key(testnet.client_keys["agency1"]).public.hex()
    fake_client.validator_list = [
        {"node_id": "00", "agency": "agency0", "members": ["11" * 32]},
        {"node_id": "01", "agency": "agency1", "members": [member]},
    ]
    key_file = str(testnet.client_keys["agency1"])
    code, _, err = run_cli(capsys, "record", "put", "k", "v", "--key", key_file)
    assert code == 0, err
    assert fake_client.calls[-1] == ("put", ("agency1", b"k", b"v", False))
    fake_client.validator_list = [{"node_id": "00", "agency": "agency0"}]  # no members listed
    code, _, err = run_cli(capsys, "record", "put", "k", "v", "--key", key_file)
    assert code == 2
    assert_one_line_error(err, "pass --agency")


def test_record_put_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fake_client: type[FakeClient]
) -> None:
    testnet = generate_testnet(tmp_path / "n", 1, base_port=22000)
    key_file = testnet.client_keys["agency0"]
    code, _, err = run_cli(
        capsys, "record", "put", "k", "v", "--key", str(tmp_path / "nokey"), "--agency", "a"
    )
    assert code == 2
    assert_one_line_error(err, "--key", "key file not found")
    key_file.chmod(0o640)
    code, _, err = run_cli(
        capsys, "record", "put", "k", "v", "--key", str(key_file), "--agency", "a"
    )
    assert code == 2
    assert_one_line_error(err, "too open")
    key_file.chmod(0o600)
    code, _, err = run_cli(
        capsys,
        "record",
        "put",
        "k",
        "v",
        "--key",
        str(key_file),
        "--genesis",
        str(tmp_path / "no.json"),
    )
    assert code == 2
    assert_one_line_error(err, "--genesis", "unreadable")
    other = generate_testnet(tmp_path / "other", 1, base_port=23000)
    code, _, err = run_cli(
        capsys, "record", "put", "k", "v", "--key", str(key_file),
        "--genesis", str(other.nodes[0].home / "config" / "genesis.json"),
    )  # fmt: skip
    assert code == 2
    assert_one_line_error(err, "member of 0 agencies", "--agency")
    assert fake_client.calls == []


def test_get_history_status_through_the_client(
    capsys: pytest.CaptureFixture[str], fake_client: type[FakeClient]
) -> None:
    assert run_cli(capsys, "record", "get", "agency0", "k1")[0] == 0
    assert run_cli(capsys, "record", "history", "agency0", "k1", "--node", "http://h:1/")[0] == 0
    code, out, _ = run_cli(capsys, "status")
    assert code == 0
    assert json.loads(out) == {"called": "status"}
    assert fake_client.calls == [
        ("get_record", ("agency0", "k1")),
        ("history", ("agency0", "k1")),
        ("status", ()),
    ]


def test_unreachable_node_with_fake_client(
    capsys: pytest.CaptureFixture[str], fake_client: type[FakeClient]
) -> None:
    fake_client.unreachable = True
    code, _, err = run_cli(capsys, "status", "--node", "http://127.0.0.1:1")
    assert code == 1
    assert_one_line_error(err, "cannot reach node at http://127.0.0.1:1")


def test_unreachable_node_with_real_client(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("node.client")
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there any more
    for argv in (["status"], ["record", "get", "agency0", "k"], ["record", "history", "a", "k"]):
        code, _, err = run_cli(capsys, *argv, "--node", url)
        assert code == 1
        assert_one_line_error(err, f"cannot reach node at {url}")


# -- live view (pure) ------------------------------------------------------------------------

SAMPLES = [
    NodeSample("node0", True, height=12, view=0, peers=3, txs_per_s=250.0, mempool=40),
    NodeSample("node1", True, note="unreachable (timed out)"),
    NodeSample("node2", False, note="exited (code 1); see its log: tail -n 50 d/node2/node.log"),
]


def test_plain_lines() -> None:
    lines = render_plain(SAMPLES, calendar.timegm((2026, 11, 26, 0, 0, 0)))
    assert lines == [
        "2026-11-26T00:00:00Z node0 up height=12 view=0 peers=3 tx/s=250.0 mempool=40",
        "2026-11-26T00:00:00Z node1 ? height=- view=- peers=- tx/s=- mempool=- "
        "(unreachable (timed out))",
        "2026-11-26T00:00:00Z node2 DEAD height=- view=- peers=- tx/s=- mempool=- "
        "(exited (code 1); see its log: tail -n 50 d/node2/node.log)",
    ]


def test_table_aligns_columns_and_lists_notes() -> None:
    lines = render_table(SAMPLES, 0.0, "redwood localnet")
    header, rows = lines[1], lines[2:5]
    assert header.split() == ["node", "state", "height", "view", "peers", "tx/s", "mempool"]
    assert len({len(row) for row in [header, *rows]}) == 1
    assert rows[0].split() == ["node0", "up", "12", "0", "3", "250.0", "40"]
    assert "node2: exited (code 1)" in "\n".join(lines)


def test_live_view_redraws_in_place_on_a_terminal(tmp_path: Path) -> None:
    with open(tmp_path / "out", "w+") as out:
        view = LiveView(out, tty=True, width=200)
        view.show(SAMPLES, 0.0)
        first = len(render_table(SAMPLES, 0.0))
        view.show(SAMPLES[:1], 1.0)
        out.seek(0)
        text = out.read()
    assert text.count(f"\x1b[{first}F") == 1  # back to the top of the first table
    assert text.endswith("\x1b[J")  # the shorter table erases the old tail


def test_live_view_cuts_lines_to_the_terminal_width(tmp_path: Path) -> None:
    with open(tmp_path / "out", "w+") as out:
        LiveView(out, tty=True, width=40).show(SAMPLES, 0.0)
        out.seek(0)
        lines = out.read().replace("\x1b[2K", "").splitlines()
    assert lines and max(len(line) for line in lines) <= 39


def test_live_view_plain_when_not_a_terminal(tmp_path: Path) -> None:
    with open(tmp_path / "out", "w+") as out:
        LiveView(out).show(SAMPLES, 0.0)
        out.seek(0)
        text = out.read()
    assert "\x1b" not in text
    assert len(text.splitlines()) == 3


def test_rate_meter_and_status_parsing() -> None:
    meter = RateMeter()
    assert meter.update(10.0, 100) is None
    assert meter.update(12.0, 600) == 250.0
    assert meter.update(13.0, None) is None
    assert meter.update(14.0, 10) is None  # counter went back (node restarted)
    sample = sample_from_status(
        "n",
        {"height": 5, "view": 1, "peers": [{}, {}], "mempool_size": 9, "catching_up": True},
        1.5,
    )
    assert sample == NodeSample("n", True, 5, 1, 2, 1.5, 9, "catching up")
    garbage = sample_from_status("n", {"height": "high", "view": True, "peers": None}, None)
    assert (garbage.height, garbage.view, garbage.peers) == (None, None, None)


# -- localnet process management ------------------------------------------------------------

SLEEPER = "import time\nprint('ready', flush=True)\nwhile True: time.sleep(1)"
STUBBORN = (
    "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "print('ready', flush=True)\nwhile True: time.sleep(1)"
)
CRASHER = "import sys\nsys.stderr.write('boom: cannot open store\\n')\nsys.exit(3)"


class LogClient:
    """Fake API client: ready once the stand-in node printed 'ready' in its log."""

    def __init__(self, log_path: Path, status: dict[str, Any]) -> None:
        self.log_path = log_path
        self.answer = status

    def ready(self) -> bool:
        return self.log_path.exists() and "ready" in self.log_path.read_text()

    def status(self) -> dict[str, Any]:
        return dict(self.answer)


def make_localnet(tmp_path: Path, scripts: list[str], **kwargs: Any) -> Localnet:
    testnet = generate_testnet(tmp_path / "net", len(scripts), base_port=24000)
    by_url = {node.api_url: node for node in testnet.nodes}
    script_of = {node.name: script for node, script in zip(testnet.nodes, scripts, strict=True)}
    return Localnet(
        testnet,
        command=lambda node: [sys.executable, "-c", script_of[node.name]],
        client_factory=lambda url: LogClient(
            by_url[url].home / "node.log", {"height": 4, "view": 0, "txs_committed": 10}
        ),
        **kwargs,
    )


def test_localnet_starts_samples_and_stops(tmp_path: Path) -> None:
    net = make_localnet(tmp_path, [SLEEPER, SLEEPER])
    try:
        net.start()
        net.wait_ready(timeout_s=20)
        assert all(p.alive() for p in net.processes)
        samples = net.sample(now_s=1.0)
        assert [(s.name, s.alive, s.height) for s in samples] == [
            ("node0", True, 4),
            ("node1", True, 4),
        ]
    finally:
        net.stop()
    assert [p.popen.returncode for p in net.processes] == [-signal.SIGTERM] * 2  # type: ignore[union-attr]
    assert not net.any_alive()


def test_localnet_kills_a_node_that_ignores_sigterm(tmp_path: Path) -> None:
    net = make_localnet(tmp_path, [STUBBORN], stop_timeout_s=0.2)
    try:
        net.start()
        net.wait_ready(timeout_s=20)  # the SIGTERM handler is installed once 'ready' is logged
    finally:
        net.stop()
    assert net.processes[0].popen.returncode == -signal.SIGKILL  # type: ignore[union-attr]


def test_localnet_reports_a_node_that_dies(tmp_path: Path) -> None:
    net = make_localnet(tmp_path, [SLEEPER, CRASHER])
    try:
        net.start()
        with pytest.raises(LocalnetError) as info:
            net.wait_ready(timeout_s=20)
        message = str(info.value)
        assert "node1 exited (code 3)" in message
        assert str(net.processes[1].log_path) in message
        assert "boom: cannot open store" in message  # the log's tail
        samples = net.sample(now_s=1.0)
        assert samples[0].alive and not samples[1].alive
        assert "tail -n 50" in samples[1].note
        assert net.any_alive()  # the others keep running
    finally:
        net.stop()


def test_localnet_ready_timeout(tmp_path: Path) -> None:
    net = make_localnet(tmp_path, [SLEEPER])
    net._clients["node0"] = types.SimpleNamespace(ready=lambda: False)  # never ready
    ticks = iter(range(100))
    try:
        net.start()
        with pytest.raises(LocalnetError, match=r"not ready after 5 s: node0"):
            net.wait_ready(timeout_s=5, clock=lambda: float(next(ticks)))
    finally:
        net.stop()


def test_run_localnet_stops_nodes_on_ctrl_c(capsys: pytest.CaptureFixture[str]) -> None:
    class FakeNet:
        processes = (object(), object())
        testnet = types.SimpleNamespace(chain_id="c")
        stopped = False

        def start(self) -> None: ...
        def wait_ready(self, timeout_s: float) -> None: ...
        def any_alive(self) -> bool:
            return True

        def sample(self) -> list[NodeSample]:
            raise KeyboardInterrupt  # Ctrl-C during the live view

        def stop(self) -> None:
            self.stopped = True

    net = FakeNet()
    args = types.SimpleNamespace(ready_timeout=1.0, load=None)
    assert _run_localnet(net, args) == 0
    assert net.stopped
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_run_localnet_fails_when_a_node_does_not_come_up(
    capsys: pytest.CaptureFixture[str],
) -> None:
    class FakeNet:
        processes = (object(),)
        stopped = False

        def start(self) -> None: ...
        def wait_ready(self, timeout_s: float) -> None:
            raise LocalnetError("node0 exited (code 1)")

        def stop(self) -> None:
            self.stopped = True

    net = FakeNet()
    assert _run_localnet(net, types.SimpleNamespace(ready_timeout=1.0, load=None)) == 1
    assert net.stopped
    assert "node0 exited (code 1)" in capsys.readouterr().err


def test_prepare_testnet_reuses_only_a_matching_testnet(tmp_path: Path) -> None:
    out = tmp_path / "ln"
    made, reused = prepare_testnet(out, 1, 0, 25000, "c")
    assert not reused
    again, reused = prepare_testnet(out, 1, 0, 25000, "c")
    assert reused and again == made
    with pytest.raises(LocalnetError, match="holds a different testnet"):
        prepare_testnet(out, 2, 0, 25000, "c")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x").write_text("x")
    with pytest.raises(LocalnetError, match="not a testnet directory"):
        prepare_testnet(tmp_path / "other", 1, 0, 25000, "c")


def test_localnet_command_refuses_busy_ports(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, _, err = run_cli(
            capsys,
            "localnet",
            "--validators",
            "1",
            "--dir",
            str(tmp_path / "ln"),
            "--base-port",
            str(port),
        )
    assert code == 2
    assert_one_line_error(err, f"port {port}", "in use")


def test_load_generator_builds_signed_batches_round_robin(tmp_path: Path) -> None:
    from consensus import codec
    from consensus.types import Transaction

    batches: list[tuple[str, list[bytes]]] = []

    class Node:
        def __init__(self, url: str) -> None:
            self.url = url

        def status(self) -> dict[str, Any]:
            if self.url == "down":
                raise httpx.ConnectError("refused")
            return {"chain_id": "c", "height": 10}

        def submit_batch(self, txs: list[bytes]) -> list[dict[str, Any]]:
            batches.append((self.url, txs))
            return [{"accepted": i != 0} for i in range(len(txs))]

    keys = {"a": SigningKey.generate(), "b": SigningKey.generate()}
    load = LoadGenerator(keys, ["u0", "down", "u1"], 10, client_factory=Node)
    load.submit_batch(3)
    load.submit_batch(2)  # the node is down: counted as failed
    load.submit_batch(2)
    assert [url for url, _ in batches] == ["u0", "u1"]
    decoded = [codec.decode(tx) for _, txs in batches for tx in txs]
    assert all(isinstance(tx, Transaction) and tx.op == "put" for tx in decoded)
    assert [tx.agency for tx in decoded] == ["a", "b", "a", "b", "a"]
    assert [tx.sender for tx in decoded[:2]] == [keys["a"].public, keys["b"].public]
    assert all(tx.valid_until == 10 + LOAD_VALID_FOR_BLOCKS for tx in decoded)
    assert (load.submitted, load.rejected, load.failed) == (3, 2, 2)
    with pytest.raises(ValueError):
        LoadGenerator(keys, ["u"], 0)


HTTP_NODE = """
import http.server, json, sys
state = {"height": 0}
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/ready":
            body = {"ready": True}
        elif self.path == "/status":
            state["height"] += 1
            body = {"chain_id": "c", "height": state["height"], "view": 0, "peers": [{}],
                    "txs_committed": 100 * state["height"], "mempool_size": 2}
        else:
            self.send_response(404)
            self.end_headers()
            return
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""


def test_localnet_with_the_real_client_against_stand_in_http_nodes(tmp_path: Path) -> None:
    from node.localnet import port_in_use

    base = next(
        p
        for p in range(free_port() // 10 * 10, 65000, 10)
        if not any(port_in_use(p + i) for i in range(12))
    )
    testnet = generate_testnet(tmp_path / "net", 2, 0, base_port=base)
    net = Localnet(
        testnet, command=lambda node: [sys.executable, "-c", HTTP_NODE, str(node.ports.api)]
    )
    try:
        net.start()
        net.wait_ready(timeout_s=20)
        first = net.sample(now_s=10.0)
        second = net.sample(now_s=11.0)
    finally:
        net.stop()
    assert [(s.height, s.peers, s.mempool, s.txs_per_s) for s in first] == [(1, 1, 2, None)] * 2
    assert [(s.height, s.txs_per_s) for s in second] == [(2, 100.0)] * 2


def test_logs_json_lines_off_a_terminal_and_text_on_one(
    tmp_path: Path, restore_logging: None
) -> None:
    from node.logs import setup_logging

    with open(tmp_path / "log", "w+") as stream:
        assert setup_logging("auto", "info", stream) == "json"  # a file is not a terminal
        logging.getLogger("redwood.test").info("committed %d", 5, extra={"block_hash": b"\x01"})
        logging.getLogger("redwood.test").debug("hidden at info")
        stream.seek(0)
        (line,) = stream.read().splitlines()
    doc = json.loads(line)
    assert (doc["level"], doc["logger"], doc["msg"], doc["block_hash"]) == (
        "info",
        "redwood.test",
        "committed 5",
        "01",
    )

    class Terminal:
        def __init__(self) -> None:
            self.text = ""

        def isatty(self) -> bool:
            return True

        def write(self, text: str) -> None:
            self.text += text

        def flush(self) -> None: ...

    terminal = Terminal()
    assert setup_logging("auto", "debug", terminal) == "text"  # type: ignore[arg-type]
    logging.getLogger("redwood.test").debug("view change", extra={"view": 3})
    assert "DEBUG   redwood.test: view change view=3" in terminal.text
