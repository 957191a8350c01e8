"""node/native.py: the compiled build runs only while it matches the sources, and the pure build passes too."""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from node import native

ROOT = Path(__file__).resolve().parents[2]

# the unit tests of the compiled modules, run again in the pure build when this one is compiled
PURE_SUITE = (
    "tests/unit/test_app.py",
    "tests/unit/test_codec.py",
    "tests/unit/test_mempool.py",
    "tests/unit/test_net_frames.py",
    "tests/unit/test_state_tree.py",
    "tests/unit/test_state_tree_cache.py",
    "tests/unit/test_store.py",
)


def fake_build(root: Path) -> Path:
    """Sources and a matching build manifest (the compiled files are empty stand-ins)."""
    native_dir = root / native.NATIVE_DIR
    modules, sources = {}, {}
    for name in native.MODULES:
        src = root / (name.replace(".", "/") + ".py")
        src.parent.mkdir(parents=True, exist_ok=True)
        src.write_text(f"# {name}\n")
        sources[name] = hashlib.sha256(src.read_bytes()).hexdigest()
        modules[name] = name.replace(".", "/") + ".so"
        (native_dir / modules[name]).parent.mkdir(parents=True, exist_ok=True)
        (native_dir / modules[name]).write_bytes(b"")
    group = {native.GROUP + "__mypyc": native.GROUP + "__mypyc.so"}
    (native_dir / group[native.GROUP + "__mypyc"]).write_bytes(b"")
    manifest = {"modules": modules, "group": group, "sources": sources}
    (native_dir / native.MANIFEST).write_text(json.dumps(manifest))
    return native_dir


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.delenv(native.ENV_PURE, raising=False)
    for name in native.MODULES:  # as if none of them were imported yet
        monkeypatch.delitem(sys.modules, name, raising=False)
    return monkeypatch


def test_every_compiled_module_has_its_source() -> None:
    assert len(native.MODULES) == len(set(native.MODULES)) >= 5
    for name in native.MODULES:
        assert (ROOT / (name.replace(".", "/") + ".py")).is_file(), name
    assert "node.native" not in native.MODULES  # read by setup.py, never compiled


def test_a_fresh_build_is_used(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    native_dir = fake_build(tmp_path)
    files, why = native._compiled_files(tmp_path)
    assert why == ""
    assert files is not None
    assert set(files) == {*native.MODULES, native.GROUP + "__mypyc"}
    assert files["storage.store"] == native_dir / "storage/store.so"


def test_an_edited_source_runs_everything_as_python(
    tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    fake_build(tmp_path)
    (tmp_path / "storage/state_tree.py").write_text("# edited after the build\n")
    files, why = native._compiled_files(tmp_path)
    assert files is None
    assert why == "source changed since the build: storage.state_tree (reinstall to compile)"


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda d: (d / native.MANIFEST).unlink(), "not compiled at install"),
        (lambda d: (d / native.MANIFEST).write_text("{"), "unreadable build manifest"),
        (lambda d: (d / native.MANIFEST).write_text("[]"), "unreadable build manifest"),
        (lambda d: (d / "node/app.so").unlink(), "compiled files missing"),
        (
            lambda d: (d / native.MANIFEST).write_text(
                json.dumps({**json.loads((d / native.MANIFEST).read_text()), "modules": {}})
            ),
            "the build manifest names other modules",
        ),
    ],
)
def test_a_broken_build_runs_everything_as_python(
    tmp_path: Path, clean_env: pytest.MonkeyPatch, damage, expected: str
) -> None:
    damage(fake_build(tmp_path))
    files, why = native._compiled_files(tmp_path)
    assert files is None
    assert why.startswith(expected), why


def test_the_switch_and_an_early_import_run_everything_as_python(
    tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    fake_build(tmp_path)
    clean_env.setenv(native.ENV_PURE, "1")
    assert native._compiled_files(tmp_path) == (None, f"{native.ENV_PURE}=1")
    clean_env.delenv(native.ENV_PURE)
    clean_env.setitem(sys.modules, "network.frames", sys)  # any module object
    assert native._compiled_files(tmp_path) == (
        None,
        "imported as Python before node: network.frames",
    )


def test_this_process_runs_the_build_it_reports() -> None:
    for name in native.MODULES:  # loaded here, whatever ran before this test
        importlib.import_module(name)
    compiled = native.compiled_modules()
    if native.MODE.startswith("compiled"):
        assert compiled == sorted(native.MODULES)
    else:
        assert native.MODE.startswith("python (")
        assert compiled == []


def test_the_cli_names_the_build() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "node.cli", "--build"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert done.stdout.strip() == native.MODE


@pytest.mark.skipif(
    not native.MODE.startswith("compiled"),
    reason=f"this run is the pure build already: {native.MODE}",
)
def test_the_pure_build_passes_the_compiled_modules_tests() -> None:
    """The same tests against the sources, as a machine without a C compiler runs them;
    with the tests that patch compiled classes, which only the pure build can run."""
    env = {**os.environ, native.ENV_PURE: "1"}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *PURE_SUITE],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    tail = done.stdout[-3000:]
    assert done.returncode == 0, tail
    assert " passed" in tail and "failed" not in tail and "error" not in tail, tail
    # the pure run did run the test the compiled build skips
    skipped = "test_state_tree_cpu_counts_the_tree_and_not_the_block_write"
    listed = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs",
         "tests/unit/test_app.py", "-k", skipped],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert listed.returncode == 0 and "2 passed" in listed.stdout, listed.stdout[-2000:]
