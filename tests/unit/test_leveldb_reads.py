"""storage.leveldb_reads: the store's LevelDB reads tables with pread, not memory maps."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from storage import leveldb_reads

ROOT = Path(__file__).resolve().parents[2]

# Opens a chain store in a fresh process, writes enough to flush and compact table
# files, reads every key back, and reports the mode and the table files mapped.
_PROBE = r"""
import json, os, sys
from pathlib import Path
import pytest

from storage import leveldb_reads
from storage.store import _open_db
db = _open_db(Path(sys.argv[1]), 4 * 1024 * 1024)
for i in range(60_000):
    db.put(b"k%08d" % i, os.urandom(200))
db.compact_range()
count = sum(1 for _ in db.iterator())
got = [db.get(b"k%08d" % i) is not None for i in range(0, 60_000, 97)]
with open("/proc/self/maps") as f:
    mapped = sum(1 for line in f if line.rstrip().endswith(".ldb"))
tables = len(list(Path(sys.argv[1]).glob("*.ldb")))
print(json.dumps({"mode": leveldb_reads.prefer_pread(), "mapped": mapped, "tables": tables,
                  "count": count, "all_found": all(got)}))
"""


def _probe(tmp_path: Path, **env: str) -> dict[str, object]:
    base = {k: v for k, v in os.environ.items() if k != leveldb_reads.MMAP_ENV}
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, str(tmp_path / "db")],
        cwd=ROOT,
        env={**base, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(out.stdout)


def test_tables_are_read_without_memory_maps(tmp_path: Path) -> None:
    got = _probe(tmp_path)
    assert got["mode"] == "pread", got  # the bundled LevelDB: the limit was found and set
    assert got["tables"] >= 2 and got["count"] == 60_000 and got["all_found"], got
    assert got["mapped"] == 0, got


def test_the_environment_keeps_memory_maps(tmp_path: Path) -> None:
    got = _probe(tmp_path, **{leveldb_reads.MMAP_ENV: "1"})
    assert got["mode"] == f"mmap ({leveldb_reads.MMAP_ENV}=1)", got
    assert got["count"] == 60_000 and got["all_found"], got
    assert got["mapped"] >= 1, got  # LevelDB's own default: tables it read are mapped


def test_symbol_lookup_refuses_what_it_cannot_read(tmp_path: Path) -> None:
    assert leveldb_reads.symbol_offset(b"", leveldb_reads.SYMBOL) == "truncated ELF file"
    assert leveldb_reads.symbol_offset(b"\x7fELF" + bytes(60), leveldb_reads.SYMBOL) == (
        "not a 64-bit little-endian ELF file"
    )
    assert isinstance(leveldb_reads.symbol_offset(os.urandom(4096), leveldb_reads.SYMBOL), str)
    # a real shared object without the symbol (Python's own extension modules)
    import _struct

    with open(_struct.__file__, "rb") as f:
        image = f.read()
    assert isinstance(leveldb_reads.symbol_offset(image, leveldb_reads.SYMBOL), str)


def test_truncating_a_real_library_anywhere_gives_a_reason() -> None:
    import plyvel

    libs = sorted((Path(plyvel.__file__).parent.parent / "plyvel.libs").glob("libleveldb*"))
    if not libs:
        pytest.skip("plyvel is built against a system LevelDB: no bundled library to read")
    image = libs[0].read_bytes()
    assert isinstance(leveldb_reads.symbol_offset(image, leveldb_reads.SYMBOL), int)
    for cut in range(0, len(image), max(1, len(image) // 97)):
        got = leveldb_reads.symbol_offset(image[:cut], leveldb_reads.SYMBOL)
        assert isinstance(got, (int, str))
