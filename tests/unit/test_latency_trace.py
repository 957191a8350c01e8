"""bench/latency_trace.py: the split of each transaction's latency and the tail's clusters."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[2] / "bench" / "latency_trace.py"


def _module():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("latency_trace", _PATH)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_report_splits_latency_and_clusters_the_tail(capsys: pytest.CaptureFixture[str]) -> None:
    lt = _module()
    txs = []
    t = 1_000_000.0
    for i in range(1000):  # one tx every 10 ms: 100 ms waiting for a block, 50 ms to commit
        s = t + i * 0.01
        txs.append((s, "http://a", i, s + 0.1, s + 0.15))
    for i in (100, 101, 700):  # two slow ones together, one 6 s later
        s, _url, h, _p, _c = txs[i]
        txs[i] = (s, "http://b", h, s + 0.4, s + 0.9)
    lt.report(txs, run_s=100.0)
    out = capsys.readouterr().out
    assert "last run: 1000 transactions" in out
    assert "submit -> proposal       p50   100.0" in out
    assert "proposal -> commit seen  p50    50.0" in out
    assert "max   900.0 ms" in out
    clusters = [line for line in out.splitlines() if "tail cluster" in line]
    assert len(clusters) == 2, out
    assert "2 txs" in clusters[0] and "median submit->proposal 400 ms" in clusters[0]
    assert "http://b" in out


def test_report_without_transactions(capsys: pytest.CaptureFixture[str]) -> None:
    _module().report([], run_s=10.0)
    assert "no transactions traced" in capsys.readouterr().out
