"""Build hook: compile the hot modules with mypyc when this machine can, else pure Python.

Everything else about the project is in pyproject.toml. The modules named in
node/native.py (`MODULES`) are compiled to C with mypyc when `pip install`
builds the project (a wheel or an editable install) and a C compiler with
Python's headers is present: the same code, ~15% less CPU per transaction in a
running node (docs/performance.md, stop 18). Anything that stops the build
(no mypyc, no compiler, a compile error) leaves a pure-Python install that
works the same, with one warning; so does ``REDWOOD_PURE_PYTHON=1``.

The compiled files go to ``node/_native/`` (beside the sources in an editable
install, inside the wheel otherwise), never beside the ``.py`` files, with a
manifest of the SHA-256 of every source compiled. node/native.py loads them
only while every source on disk still matches: an edited source falls back to
Python for all of them instead of running stale compiled code.
"""

from __future__ import annotations

import json
import os
import runpy
import shutil
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
_native = runpy.run_path(str(ROOT / "node" / "native.py"))
MODULES: tuple[str, ...] = _native["MODULES"]
GROUP: str = _native["GROUP"]
NATIVE_DIR: str = _native["NATIVE_DIR"]
MANIFEST: str = _native["MANIFEST"]
source_digests = _native["source_digests"]

# the commands that build extensions; metadata-only runs must not pay for mypyc
_BUILDS = {"build", "build_ext", "bdist_wheel", "editable_wheel", "develop", "install"}


def _warn(why: str) -> None:
    print(f"redwood: building pure Python, not compiled ({why})", file=sys.stderr)


def _extensions() -> list:
    if os.environ.get("REDWOOD_PURE_PYTHON") == "1":
        _warn("REDWOOD_PURE_PYTHON=1")
        return []
    if not _BUILDS.intersection(sys.argv[1:]):
        return []
    try:
        from mypyc.build import mypycify
    except ImportError as exc:
        _warn(f"mypyc is not importable: {exc}")
        return []
    paths = [str(Path(*m.split("."))) + ".py" for m in MODULES]
    flags = [
        "--config-file=",  # not pyproject's [tool.mypy]: these flags only
        "--python-version=3.11",
        "--ignore-missing-imports",
        "--no-warn-unused-ignores",
    ]
    try:
        return list(mypycify([*flags, *paths], opt_level="3", group_name=GROUP))
    except (Exception, SystemExit) as exc:  # mypyc exits on type errors
        _warn(f"mypyc could not translate the modules: {exc}")
        return []


class NativeBuildExt(build_ext):
    """Puts the compiled modules under node/_native/ with their manifest; never fails the install."""

    _into_source = False  # an editable or in-place build: straight into the source tree

    def _base(self) -> Path:
        return ROOT if self._into_source else Path(self.build_lib)

    def get_ext_fullpath(self, ext_name: str) -> str:
        return str(self._base() / NATIVE_DIR / self.get_ext_filename(ext_name))

    def copy_extensions_to_source(self) -> None:
        pass  # built there already (setuptools would copy them beside the sources)

    def run(self) -> None:
        self._into_source = bool(self.inplace or getattr(self, "editable_mode", False))
        manifest = self._base() / NATIVE_DIR / MANIFEST
        # only build outputs live there: no manifest, nor files of another module
        # list, until every module of this one is built
        shutil.rmtree(manifest.parent, ignore_errors=True)
        if not self.extensions:
            return
        try:
            super().run()
        except Exception as exc:  # a missing compiler, headers, a compile error
            _warn(f"the C build failed: {exc}")
            return
        files = {ext.name: self.get_ext_filename(ext.name) for ext in self.extensions}
        manifest.parent.mkdir(parents=True, exist_ok=True)
        manifest.write_text(
            json.dumps(
                {
                    "modules": {m: files[m] for m in MODULES},
                    "group": {GROUP + "__mypyc": files[GROUP + "__mypyc"]},
                    "sources": source_digests(ROOT),
                },
                indent=1,
                sort_keys=True,
            )
            + "\n"
        )


setup(ext_modules=_extensions(), cmdclass={"build_ext": NativeBuildExt})
