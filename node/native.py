"""Which build of the hot modules this process runs: compiled with mypyc, or the Python source.

setup.py compiles `MODULES` with mypyc when the install can (see there) and
puts them under ``node/_native/`` with a manifest: the file of each compiled
module and the SHA-256 of each source it was compiled from. `enable()`, run
by ``node/__init__.py`` before anything else of Redwood loads in a node,
installs an import finder that loads those files instead of the sources only
while all of the following hold; otherwise every one of them runs from its
``.py`` and `MODE` says why:

- ``REDWOOD_PURE_PYTHON`` is not ``1`` (the switch for debugging and for the
  tests that run the pure build);
- the manifest exists and every source on disk still has the digest it was
  compiled from (an edited source must never run as stale compiled code);
- every compiled file is there;
- none of the modules was imported already (as Python) in this process.

All or none: compiled modules call each other directly, not through
``sys.modules``, so one module from its source beside compiled ones would run
two copies of the code with two sets of globals.

Without the build (no C compiler at install time) nothing here is needed:
the sources import as usual. This module itself is never compiled and
imports only the standard library, so setup.py can read it.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

# compiled together as one group: the per-transaction paths of admission,
# execution, the state tree, the store and the network framing
MODULES: tuple[str, ...] = (
    "consensus.codec",
    "network.frames",
    "network.gossip",
    "node.app",
    "node.mempool",
    "storage.state_tree",
    "storage.store",
)
GROUP = "redwood_native"  # mypyc's shared library: `redwood_native__mypyc`
NATIVE_DIR = "node/_native"  # relative to the directory holding the packages
MANIFEST = "manifest.json"
ENV_PURE = "REDWOOD_PURE_PYTHON"

ROOT = Path(__file__).resolve().parent.parent

MODE: str | None = None  # "compiled (N modules)" or "python (why)" once `enable` ran


def source_digests(root: Path) -> dict[str, str]:
    """SHA-256 (hex) of each module's source under `root`; a missing source maps to ""."""
    out = {}
    for name in MODULES:
        try:
            data = (root / (name.replace(".", "/") + ".py")).read_bytes()
            out[name] = hashlib.sha256(data).hexdigest()
        except OSError:
            out[name] = ""
    return out


class _NativeFinder(importlib.abc.MetaPathFinder):
    """Finds the compiled file of each name in `files`, and nothing else."""

    def __init__(self, files: dict[str, Path]) -> None:
        self.files = files

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        file = self.files.get(fullname)
        if file is None:
            return None
        loader = importlib.machinery.ExtensionFileLoader(fullname, str(file))
        return importlib.util.spec_from_file_location(fullname, file, loader=loader)


def _compiled_files(root: Path) -> tuple[dict[str, Path] | None, str]:
    """The compiled file of every module and of the group library, or None and why not."""
    if os.environ.get(ENV_PURE) == "1":
        return None, f"{ENV_PURE}=1"
    native = root / NATIVE_DIR
    try:
        manifest = json.loads((native / MANIFEST).read_text())
        modules, group, sources = manifest["modules"], manifest["group"], manifest["sources"]
        files = {name: native / rel for name, rel in {**modules, **group}.items()}
    except FileNotFoundError:
        return None, "not compiled at install"
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        return None, f"unreadable build manifest {native / MANIFEST}: {exc}"
    if set(modules) != set(MODULES) or len(group) != 1:
        return None, "the build manifest names other modules than this version compiles"
    edited = sorted(n for n, digest in source_digests(root).items() if sources.get(n) != digest)
    if edited:
        return None, f"source changed since the build: {', '.join(edited)} (reinstall to compile)"
    missing = sorted(str(f) for f in files.values() if not f.is_file())
    if missing:
        return None, f"compiled files missing: {', '.join(missing)}"
    early = sorted(n for n in MODULES if n in sys.modules)
    if early:
        return None, f"imported as Python before node: {', '.join(early)}"
    return files, ""


def enable(root: Path = ROOT) -> str:
    """Load the compiled modules from now on, when they are fresh; returns `MODE`. Idempotent."""
    global MODE
    if MODE is None:
        files, why = _compiled_files(root)
        if files is None:
            MODE = f"python ({why})"
        else:
            sys.meta_path.insert(0, _NativeFinder(files))
            MODE = f"compiled ({len(MODULES)} modules)"
    return MODE


def compiled_modules() -> list[str]:
    """The modules of `MODULES` this process has loaded from compiled files."""
    out = []
    for name in MODULES:
        spec = getattr(sys.modules.get(name), "__spec__", None)
        if isinstance(getattr(spec, "loader", None), importlib.machinery.ExtensionFileLoader):
            out.append(name)
    return out
