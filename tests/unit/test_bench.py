"""The benchmark harness: its pure parts, and one short end-to-end smoke run."""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any, ClassVar

import pytest
import trio
import trio.testing

from node import bench
from node.bench import BenchError

REPO = Path(__file__).resolve().parents[2]


def args(**overrides: Any) -> argparse.Namespace:
    base: dict[str, Any] = {
        "scenario": "throughput",
        "validators": 4,
        "nodes": [],
        "keys": None,
        "duration": 10.0,
        "rate": None,
        "clients": 16,
        "out": None,
        "runs": 1,
        "txs": None,
        "keep": False,
        "unclean": False,
    }
    base.update(overrides)
    return argparse.Namespace(**base)


# -- statistics -------------------------------------------------------------------


def test_percentile_interpolates_between_ranks() -> None:
    values = [10.0, 20.0, 30.0, 40.0]
    assert bench.percentile(values, 0) == 10.0
    assert bench.percentile(values, 100) == 40.0
    assert bench.percentile(values, 50) == 25.0
    assert bench.percentile(values, 99) == pytest.approx(39.7)
    assert bench.percentile([5.0], 99) == 5.0
    assert bench.percentile([], 50) is None


def test_percentile_agrees_with_statistics_inclusive_quantiles() -> None:
    values = [float((i * 37) % 101) for i in range(1, 300)]
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    for q in (1, 50, 95, 99):
        assert bench.percentile(values, q) == pytest.approx(cuts[q - 1])


def test_percentile_refuses_out_of_range() -> None:
    with pytest.raises(ValueError):
        bench.percentile([1.0], 101)


def test_latency_summary_in_milliseconds() -> None:
    summary = bench.latency_summary([0.1, 0.2, 0.3])
    assert summary == {"count": 3, "p50": 200.0, "p95": 290.0, "p99": 298.0, "mean": 200.0,
                       "max": 300.0}  # fmt: skip
    assert bench.latency_summary([])["p50"] is None


def test_ceiling_ratio() -> None:
    # 4 validators sharing 2 cores of a 16,000 tx/s single-core pipeline: 8,000 tx/s ideal
    assert bench.ceiling_ratio(4000, 16000, 2, 4) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        bench.ceiling_ratio(1, 0, 2, 4)


def test_spread_of_total_work() -> None:
    assert bench.spread([100.0, 100.0]) == 0
    assert bench.spread([100.0, 70.0, 90.0]) == pytest.approx(0.3)
    assert bench.spread([]) is None


# -- pacing ------------------------------------------------------------------------


def test_txs_due_follows_the_rate() -> None:
    assert bench.txs_due(1000, 0.0, 0) == 0
    assert bench.txs_due(1000, 0.5, 0) == 500
    assert bench.txs_due(1000, 0.5, 400) == 100
    assert bench.txs_due(1000, 0.5, 600) == 0  # ahead of schedule: nothing owed
    assert bench.txs_due(3, 1.0, 0) == 3  # no float shortfall at exact multiples
    with pytest.raises(ValueError):
        bench.txs_due(0, 1.0, 0)


def test_open_loop_batch_is_one_tick_of_transactions() -> None:
    assert bench.open_loop_batch(1000) == 50
    assert bench.open_loop_batch(1) == 1
    assert bench.open_loop_batch(10_000_000) == bench.BATCH_TXS


def test_window_room_bounds_uncommitted_transactions() -> None:
    assert bench.window_room(0, 0, 100) == 100
    assert bench.window_room(80, 30, 100) == 50
    assert bench.window_room(300, 30, 100) == 0
    assert bench.window_room(10, 50, 100) == 100  # committed more than we sent (other clients)


class _HeldClient:
    """Stands in for httpx.AsyncClient: every POST waits until the test answers it."""

    posted: ClassVar[list[tuple[int, trio.Event]]] = []

    def __init__(self, **kwargs: Any) -> None:
        pass

    async def __aenter__(self) -> _HeldClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def post(self, path: str, content: bytes, headers: dict[str, str]) -> Any:
        answer = trio.Event()
        n = int(content)
        self.posted.append((n, answer))
        await answer.wait()

        class Response:
            status_code = 200

            def json(self) -> dict[str, Any]:
                return {"results": [{"accepted": True}] * n}

        return Response()


async def test_closed_loop_never_queues_more_than_its_window(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One submitter per node: all 16 must not find room at once while batches are in
    flight (they did, and queued 38,000 transactions against a window of 8,000)."""
    monkeypatch.setattr(bench.httpx, "AsyncClient", _HeldClient)
    monkeypatch.setattr(_HeldClient, "posted", [])
    size = bench.BATCH_TXS
    batches = [bench.Batch(b"%d" % size, tuple(f"{b}-{i}" for i in range(size))) for b in range(40)]
    net = bench.Net([f"http://node{i}" for i in range(16)], [], [], "chain")
    driver = bench.Driver(net, batches, mode="closed", rate=None, window_txs=4 * size)
    driver._progress = trio.Event()
    async with trio.open_nursery() as nursery:
        for url in net.urls:
            nursery.start_soon(driver._submit_loop, url)
        await trio.testing.wait_all_tasks_blocked()
        assert len(_HeldClient.posted) == 4  # the window, not one batch per submitter
        for _, answer in _HeldClient.posted:
            answer.set()  # accepted, not committed: still in the window
        await trio.testing.wait_all_tasks_blocked()
        assert len(_HeldClient.posted) == 4 and driver.accepted == 4 * size
        # the first batch commits: room for exactly one more
        driver._on_block(json.dumps({"height": 1, "tx_hashes": list(batches[0].hashes)}))
        await trio.testing.wait_all_tasks_blocked()
        assert len(_HeldClient.posted) == 5
        nursery.cancel_scope.cancel()


def test_closed_window_keeps_the_load_per_validator() -> None:
    assert bench.closed_window_txs(4) == bench.WINDOW_TXS
    assert bench.closed_window_txs(7) == bench.WINDOW_TXS * 4 // 7
    assert bench.closed_window_txs(16) == bench.WINDOW_TXS_MIN  # 6,000 would be below it
    assert bench.closed_window_txs(0) == bench.WINDOW_TXS * 4


def test_pregen_count_covers_the_run() -> None:
    assert bench.pregen_count("open", 100, 10) >= 1000
    closed = bench.pregen_count("closed", None, 10)
    assert closed >= bench.PEAK_RATE_GUESS * 10 + bench.WINDOW_TXS
    assert bench.pregen_count("closed", None, 10**6) == bench.PREGEN_TXS_MAX
    with pytest.raises(ValueError):
        bench.pregen_count("open", None, 10)


# -- arguments ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"scenario": "nope"}, "scenario"),
        ({"validators": 0}, "--validators"),
        ({"duration": 0.5}, "--duration"),
        ({"rate": 0.0}, "--rate"),
        ({"rate": 1e9}, "--rate"),
        ({"clients": 0}, "--clients"),
        ({"runs": 0}, "--runs"),
        ({"txs": 0}, "--txs"),
        ({"nodes": ["http://127.0.0.1:1"]}, "--keys"),
        ({"nodes": ["ftp://x"], "keys": Path("k")}, "http"),
        ({"scenario": "catchup", "nodes": ["http://a"], "keys": Path("k")}, "--nodes"),
        ({"scenario": "catchup", "validators": 3}, "catchup"),
        ({"unclean": True}, "--unclean"),
    ],
)
def test_check_args_refuses(overrides: dict[str, Any], words: str) -> None:
    with pytest.raises(BenchError, match=words):
        bench.check_args(args(**overrides))


def test_check_args_accepts_defaults() -> None:
    bench.check_args(args())
    bench.check_args(args(scenario="latency", rate=500.0, nodes=["http://a"], keys=Path("k")))
    bench.check_args(args(scenario="restart", unclean=True))


def test_parse_nodes() -> None:
    assert bench.parse_nodes("http://a:1/, http://b:2") == ["http://a:1", "http://b:2"]
    assert bench.parse_nodes("") == []


def test_cli_refuses_bad_bench_arguments() -> None:
    from node.cli import main

    assert main(["bench", "nope"]) == 2
    assert main(["bench", "throughput", "--runs", "0"]) == 2


# -- /proc parsing -----------------------------------------------------------------------


def test_cpu_seconds_handles_spaces_and_parens_in_the_name() -> None:
    fields = ["S", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "250", "50", "0", "0"]
    line = "1234 (py thon (x)) " + " ".join(fields)
    assert bench.cpu_seconds(line, 100) == pytest.approx(3.0)


def test_vm_hwm() -> None:
    assert bench.vm_hwm_kib("Name:\tx\nVmHWM:\t  204800 kB\nVmRSS:\t1 kB\n") == 204800
    assert bench.vm_hwm_kib("Name:\tx\n") is None
    text = "VmHWM:\t  204800 kB\nRssAnon:\t  99000 kB\nRssFile:\t  105800 kB\n"
    assert bench.rss_anon_kib(text) == 99000
    assert bench.rss_anon_kib("Name:\tx\n") is None


def test_own_process_is_measurable() -> None:
    import os

    assert bench.process_cpu_s(os.getpid()) is not None
    assert (bench.process_peak_rss_mb(os.getpid()) or 0) > 1
    assert (bench.process_rss_anon_kib(os.getpid()) or 0) > 1024


# -- output shape -----------------------------------------------------------------------


def _run(tps: float, p50: float, n: int = 4) -> dict[str, Any]:
    return {
        "validators": n,
        "committed_tps": tps,
        "ratio": tps / 8000,
        "latency_ms": {"p50": p50, "p99": 2 * p50},
        "nodes": [
            {"rss_peak_mb": 100.0, "rss_anon_peak_mb": 90.0},
            {"rss_peak_mb": 120.0, "rss_anon_peak_mb": 80.0},
        ],
    }


def test_summary_takes_medians() -> None:
    s = bench.summarise("throughput", [_run(1000, 10), _run(3000, 30), _run(2000, 20)])
    assert s["committed_tps_median"] == 2000
    assert s["latency_p50_ms_median"] == 20
    assert s["latency_p99_ms_median"] == 40
    assert s["rss_peak_mb_max"] == 120.0
    assert s["rss_anon_peak_mb_max"] == 90.0


def test_scale_summary_compares_total_work() -> None:
    s = bench.summarise("scale", [_run(4000, 1, 4), _run(1000, 1, 16)])
    assert s["work_tps_x_n"] == {"4": 16000, "16": 16000}
    assert s["work_spread"] == 0


def test_result_document_has_every_field() -> None:
    doc = bench.result("throughput", {"validators": 4}, {"txs_per_s": 9000.0, "txs": 8},
                       [_run(1000, 10)], [1.0])  # fmt: skip
    assert set(bench.RESULT_FIELDS) <= set(doc)
    json.dumps(doc)  # plain JSON
    assert "9000 tx/s" in bench.human(doc)


def test_ceiling_is_measured_on_a_real_store() -> None:
    c = bench.measure_ceiling(count=200, block_txs=100)
    assert c["txs"] == 200 and c["txs_per_s"] > 0


# -- end to end -------------------------------------------------------------------------


def test_smoke_throughput_run_writes_the_json(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    cmd = [sys.executable, "-m", "node.cli", "bench", "throughput", "--duration", "3",
           "--validators", "4", "--rate", "300", "--out", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads(out.read_text())
    assert set(bench.RESULT_FIELDS) <= set(doc)
    (run,) = doc["runs"]
    assert set(bench.RUN_FIELDS) <= set(run)
    assert run["committed_txs"] > 0 and run["committed_tps"] > 0
    assert run["chain_txs"] >= run["committed_txs"]
    assert run["latency_ms"]["count"] > 0
    assert len(run["nodes"]) == 4 and all(n["rss_peak_mb"] for n in run["nodes"])
    assert all(0 < n["rss_anon_peak_mb"] <= n["rss_peak_mb"] for n in run["nodes"])
    assert "committed_tps_median" in proc.stdout
    # the state tree's CPU, read from every node's metrics port, is part of the node's
    assert 0 < run["state_tree_cpu_us_per_tx"] < run["node_cpu_us_per_tx"]
    assert 0 < run["state_tree_cpu_share"] < 1


def test_state_tree_cpu_per_tx_from_metrics() -> None:
    text = (
        "# HELP redwood_state_tree_cpu_seconds_total CPU\n"
        "# TYPE redwood_state_tree_cpu_seconds_total counter\n"
        'redwood_state_tree_cpu_seconds_total{chain_id="c"} 1.5\n'
        'redwood_state_tree_cpu_created{chain_id="c"} 1.7e9\n'
    )
    assert bench.metric_value(text, bench.STATE_TREE_CPU_METRIC) == 1.5
    assert bench.metric_value("", bench.STATE_TREE_CPU_METRIC) is None
    assert bench.metric_value("not { prometheus", bench.STATE_TREE_CPU_METRIC) is None
    # nodes that spent 0.2 and 0.4 s on 10,000 txs: 30 us/tx on average; unread nodes left out
    assert bench.tree_cpu_us_per_tx([1.0, 2.0, None], [1.2, 2.4, 5.0], 10_000) == 30.0
    assert bench.tree_cpu_us_per_tx([None], [1.0], 10) is None
    assert bench.tree_cpu_us_per_tx([1.0], [2.0], 0) is None


def test_cpu_per_tx_and_efficiency() -> None:
    # four nodes that each spent 2 CPU-seconds on 10,000 committed txs: 200 us/tx/node
    assert bench.cpu_per_tx_us([2.0, 2.0, 2.0, 2.0], 10_000) == 200.0
    assert bench.cpu_per_tx_us([], 10) is None
    # a 10,000 tx/s pipeline costs 100 us/tx: a node at 200 us/tx is 50% efficient
    assert bench.efficiency(200.0, 10_000) == 0.5
    assert bench.efficiency(None, 10_000) is None


# -- optimisations the profile led to ---------------------------------------------------


def test_signed_payload_cut_from_bytes_equals_the_re_encoded_one() -> None:
    from consensus.crypto import SigningKey
    from consensus.types import signed_payload
    from node import txs
    from node.app import signed_payload_of

    key = SigningKey(b"\x07" * 32)
    for value_len, key_len, nonce in ((0, 1, 0), (200, 10, 5), (300, 256, 2**64 - 1),
                                      (70_000 // 2, 40, 2**31)):  # fmt: skip
        raw = txs.build(key, "c", "put", "agency0", b"k" * key_len, b"v" * value_len, 9, nonce)
        tx = txs.decode_tx(raw)
        assert signed_payload_of(tx, raw) == signed_payload(tx)
        assert signed_payload_of(tx) == signed_payload(tx)
        # bytes that are not this tx's encoding fall back to re-encoding
        assert signed_payload_of(tx, raw[:-1] + b"\x00") == signed_payload(tx)
        assert signed_payload_of(tx, b"\x00" + raw[1:]) == signed_payload(tx)


def test_scale_summary_skips_sizes_that_failed() -> None:
    runs = [_run(4000, 1, 4), {"validators": 16, "error": "did not start"}]
    s = bench.summarise("scale", runs)
    assert s["committed_tps_median"] == {"4": 4000}
    assert s["work_spread"] == 0


class _Dist:
    version = "1.6.2"

    def __init__(self, wheel: str | None) -> None:
        self.wheel = wheel

    def read_text(self, name: str) -> str | None:
        return self.wheel if name == "WHEEL" else None


@pytest.mark.parametrize(
    ("wheel", "expected"),
    [
        ("Wheel-Version: 1.0\nTag: cp38-abi3-manylinux_2_34_x86_64\n",
         "PyNaCl 1.6.2 (PyPI wheel, cp38-abi3-manylinux_2_34_x86_64)"),
        ("Wheel-Version: 1.0\nTag: cp311-cp311-linux_x86_64\n",
         "PyNaCl 1.6.2 (built here, cp311-cp311-linux_x86_64)"),
        (None, "PyNaCl 1.6.2 (origin unknown: no wheel tag)"),
    ],
)  # fmt: skip
def test_results_name_the_pynacl_build(
    monkeypatch: pytest.MonkeyPatch, wheel: str | None, expected: str
) -> None:
    import importlib.metadata

    monkeypatch.setattr(importlib.metadata, "distribution", lambda name: _Dist(wheel))
    assert bench.crypto_build() == expected


def test_results_name_the_installed_pynacl() -> None:
    assert bench.crypto_build().startswith("PyNaCl ")
    doc = bench.result("throughput", {}, {"txs_per_s": 1.0, "txs": 1}, [], [0.0, 0.0, 0.0])
    assert doc["crypto"] == bench.crypto_build()
    assert doc["crypto"] in bench.human(doc)
