"""LevelDB's compaction thread runs at a lower CPU priority than the node (node/service.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

# Run in a fresh process: its only native thread is the one LevelDB starts.
_CHILD = textwrap.dedent(
    """
    import json, os, sys, tempfile, threading, types
    import plyvel
    from node.service import lower_native_threads, native_thread_ids

    def nice(tid):
        stat = open(f"/proc/self/task/{tid}/stat").read()
        return int(stat.rsplit(")", 1)[1].split()[16])

    before = sorted(native_thread_ids())
    stop = threading.Event()
    worker = threading.Thread(target=stop.wait)
    worker.start()
    with tempfile.TemporaryDirectory() as d:
        db = plyvel.DB(d, create_if_missing=True, write_buffer_size=64 * 1024)
        for i in range(4000):  # several memtable flushes: the background thread starts
            db.put(i.to_bytes(4, "big") + os.urandom(12), os.urandom(200))
        native = sorted(native_thread_ids())
        # a thread being started by another thread: listed, no native id yet
        real = threading.enumerate
        threading.enumerate = lambda: [*real(), types.SimpleNamespace(native_id=None)]
        starting = sorted(native_thread_ids())
        threading.enumerate = real
        done = set()
        changed = lower_native_threads(10, done)
        again = lower_native_threads(10, done)
        higher = lower_native_threads(5, set())  # never raises a thread's priority
        print(json.dumps({
            "before": before, "native": native, "starting": starting,
            "changed": changed, "again": again,
            "nice_changed": [nice(t) for t in changed], "higher": higher,
            "nice_after": [nice(t) for t in changed],
            "nice_main": nice(threading.main_thread().native_id),
            "nice_worker": nice(worker.native_id),
            "worker_native": worker.native_id in native,
        }))
        db.close()
    stop.set()
    worker.join()
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and per-thread priorities")
def test_leveldb_background_thread_is_lowered_and_python_threads_are_not() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _CHILD], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    r = json.loads(out)
    assert r["before"] == []  # nothing native before LevelDB is opened
    assert len(r["native"]) >= 1 and r["changed"] == r["native"]
    assert r["starting"] == []  # nothing answered while a Python thread has no id yet
    assert r["nice_changed"] == [10] * len(r["changed"])
    assert r["again"] == []  # each thread once
    assert r["higher"] == [] and r["nice_after"] == [10] * len(r["changed"])
    assert r["nice_main"] == 0 and r["nice_worker"] == 0
    assert not r["worker_native"]
