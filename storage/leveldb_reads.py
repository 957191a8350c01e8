"""How LevelDB reads its table files: `pread` into its block cache, not memory maps.

LevelDB 1.22 (the one plyvel's wheels bundle) memory-maps up to 1,000 table
files for reading on 64-bit machines, and has no option to say otherwise:
the limit is a private global (`g_mmap_limit`) that only its own test helper
(`EnvPosixTestHelper::SetReadOnlyMMapLimit`) sets, before the first database
opens. Every page of a mapped table that a read or a compaction touches then
counts in the node's resident set until the table is closed. In the
throughput bench that was 60-200 MB a node on top of a ~200-270 MB heap
(peak RSS 326-434 MB against the 300 MB the performance issue allows), though
the pages belong to the kernel's page cache either way.

`prefer_pread` sets that limit to 0, which is what the test helper does:
LevelDB then reads tables with `pread` (through its block cache, which the
node sizes), and the kernel keeps the file pages in its page cache, outside
the process. It runs once per process, before the store's first open
(`storage.store._open_db` calls it), and only when every check holds: the
bundled library is mapped, its symbol table names the variable as a 4-byte
object, the library is laid out as an ordinary shared object, the address
lies in a writable mapping of it, and the variable holds LevelDB's 64-bit
default (1000). Otherwise nothing is written and LevelDB maps its files as
before; `prefer_pread` returns which applies and why, and the node logs it
when it opens the store. `REDWOOD_LEVELDB_MMAP=1` keeps the memory maps (an
operator comparing the two). LevelDB reads the limit once, when the process
opens its first database: code that opens one with plyvel directly must call
`prefer_pread` first, or the whole process keeps the maps (what
`prefer_pread` returns cannot show that).

No effect on what is stored or on crash safety: only how table bytes reach memory.
"""

from __future__ import annotations

import ctypes
import os
import struct
import threading

import plyvel  # noqa: F401  (loads the bundled libleveldb, which `_mapped_library` finds)

MMAP_ENV = "REDWOOD_LEVELDB_MMAP"
SYMBOL = b"_ZN7leveldb12_GLOBAL__N_112g_mmap_limitE"  # leveldb::(anonymous)::g_mmap_limit
LEVELDB_DEFAULT_LIMIT = 1000  # kDefaultMmapLimit on 64-bit machines (LevelDB 1.20-1.23)
LIBRARY_BYTES_MAX = 64 * 1024 * 1024

_lock = threading.Lock()
_mode: str | None = None

_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
_SHDR = struct.Struct("<IIQQQQIIQQ")
_SYM = struct.Struct("<IBBHQQ")
_PHDR = struct.Struct("<IIQQQQQQ")
_SHT_SYMTAB = 2
_PT_LOAD = 1
_STT_OBJECT = 1


def prefer_pread() -> str:
    """Make LevelDB read tables with pread, once per process, before the first open.

    Returns the mode that applies ("pread", or "mmap (reason)"). Never raises:
    anything unexpected leaves LevelDB as it is.
    """
    global _mode
    with _lock:
        if _mode is None:
            _mode = _apply()
        return _mode


def _apply() -> str:
    if os.environ.get(MMAP_ENV, "") == "1":
        return f"mmap ({MMAP_ENV}=1)"
    path, start, writable = _mapped_library()
    if path is None:
        return "mmap (no libleveldb mapped in this process)"
    try:
        with open(path, "rb") as f:
            image = f.read(LIBRARY_BYTES_MAX + 1)
    except OSError as exc:
        return f"mmap (cannot read {path}: {exc.strerror})"
    if len(image) > LIBRARY_BYTES_MAX:
        return f"mmap ({path} is larger than expected)"
    found = symbol_offset(image, SYMBOL)
    if isinstance(found, str):
        return f"mmap ({found})"
    address = start + found
    if not any(lo <= address and address + 4 <= hi for lo, hi in writable):
        return "mmap (the limit is not in a writable mapping of the library)"
    cell = ctypes.c_int.from_address(address)
    if cell.value != LEVELDB_DEFAULT_LIMIT:
        return f"mmap (the limit reads {cell.value}, not LevelDB's default)"
    cell.value = 0
    return "pread"


def _mapped_library() -> tuple[str | None, int, list[tuple[int, int]]]:
    """The loaded libleveldb: path, load address (the mapping of file offset 0), and
    its writable mappings (start, end)."""
    path, start = None, 0
    writable: list[tuple[int, int]] = []
    try:
        with open("/proc/self/maps") as f:
            rows = [line.split() for line in f]
        for parts in rows:
            if len(parts) < 6 or "libleveldb" not in os.path.basename(parts[5]):
                continue
            if path is None and int(parts[2], 16) == 0:
                path, start = parts[5], int(parts[0].split("-", 1)[0], 16)
            if path == parts[5] and parts[1].startswith("rw"):
                lo, hi = parts[0].split("-", 1)
                writable.append((int(lo, 16), int(hi, 16)))
    except (OSError, ValueError):
        return None, 0, []
    return path, start, writable


def symbol_offset(image: bytes, name: bytes) -> int | str:
    """Offset from the load address of the 4-byte data object `name` in ELF `image`.

    Only a 64-bit little-endian shared object whose first loadable segment
    starts at address 0 and file offset 0 (so that address = load address +
    symbol value). A string says why not.
    """
    try:
        ehdr = _EHDR.unpack_from(image, 0)
        ident = ehdr[0]
        if ident[:4] != b"\x7fELF" or ident[4] != 2 or ident[5] != 1:
            return "not a 64-bit little-endian ELF file"
        phoff, shoff = ehdr[5], ehdr[6]
        phentsize, phnum, shentsize, shnum = ehdr[9], ehdr[10], ehdr[11], ehdr[12]
        if phentsize != _PHDR.size or shentsize != _SHDR.size:
            return "unexpected ELF header sizes"
        loads = [
            p for p in (_PHDR.unpack_from(image, phoff + i * phentsize) for i in range(phnum))
            if p[0] == _PT_LOAD
        ]  # fmt: skip
        if not loads or loads[0][2] != 0 or loads[0][3] != 0:
            return "unexpected segment layout"
        sections = [_SHDR.unpack_from(image, shoff + i * shentsize) for i in range(shnum)]
        for sec in sections:
            if sec[1] != _SHT_SYMTAB or sec[9] != _SYM.size or sec[6] >= len(sections):
                continue
            strtab = sections[sec[6]]
            for j in range(sec[5] // _SYM.size):
                st_name, st_info, _other, _shndx, value, size = _SYM.unpack_from(
                    image, sec[4] + j * _SYM.size
                )
                at = strtab[4] + st_name
                if image[at : at + len(name) + 1] == name + b"\0":
                    if st_info & 0xF != _STT_OBJECT or size != 4 or value == 0:
                        return "the symbol is not a 4-byte variable"
                    return int(value)
        return "no symbol table naming the mmap limit (a stripped or different LevelDB)"
    except struct.error:
        return "truncated ELF file"
