"""consensus/ must never do I/O, read clocks or draw randomness (DESIGN.md §1)."""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
FORBIDDEN = {
    "trio", "plyvel", "socket", "time", "random", "threading", "os", "asyncio",
    "subprocess", "network", "storage", "node", "datetime", "selectors", "pathlib",
    "io", "multiprocessing", "signal", "shutil", "tempfile", "secrets", "uuid",
}  # fmt: skip


def _imports(path: pathlib.Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "__import__":
            found.append((node.lineno, "__import__"))
    return found


CONSENSUS_FILES = sorted((ROOT / "consensus").rglob("*.py"))


@pytest.mark.parametrize("path", CONSENSUS_FILES, ids=lambda p: p.name)
def test_consensus_module_imports_no_io(path: pathlib.Path) -> None:
    bad = [
        f"{path.name}:{line} imports {mod}"
        for line, mod in _imports(path)
        if mod == "__import__" or mod.split(".")[0] in FORBIDDEN
    ]
    assert not bad, "consensus/ must stay pure: " + "; ".join(bad)


def test_checker_catches_a_forbidden_import(tmp_path: pathlib.Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import os\nfrom trio import sleep\n")
    mods = [m for _, m in _imports(bad)]
    assert mods == ["os", "trio"]


def test_there_are_consensus_modules_to_check() -> None:
    assert len(CONSENSUS_FILES) >= 5
