"""The node hands freed malloc memory back to the system (node/service.py)."""

from __future__ import annotations

import os
import sys

import pytest

from node.service import trim_malloc, tune_malloc


def _rss_anon_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    raise AssertionError("no RssAnon in /proc/self/status")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc and /proc only")
def test_trim_returns_fragmented_free_memory() -> None:
    tune_malloc()  # idempotent settings; the test process may already have threads
    if not trim_malloc():
        pytest.skip("the C library is not glibc")
    # ~80 MB in malloc-sized buffers (over pymalloc's 512 bytes), then free six in
    # seven: the heap is fragmented, so without a trim none of it goes back.
    chunks = [os.urandom(1000 + (i % 3000)) for i in range(32_000)]
    kept = chunks[::7]
    del chunks
    before = _rss_anon_kb()
    assert trim_malloc()
    after = _rss_anon_kb()
    assert before - after > 20_000, (before, after)
    assert len(kept) == 4572
