"""`redwood repair --home DIR`: the data directory is set aside (never deleted) and recreated empty."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from node.cli import main
from storage.store import ChainStore


def _home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    assert main(["init", "--home", str(home), "--chain-id", "repair-test"]) == 0
    with ChainStore.open(home / "data" / "chain", genesis_hash=bytes(32)):
        pass
    return home


def test_repair_moves_data_aside_and_recreates_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = _home(tmp_path)
    before = sorted(p.name for p in (home / "data" / "chain").iterdir())
    assert before
    capsys.readouterr()
    assert main(["repair", "--home", str(home)]) == 0
    out = capsys.readouterr().out
    aside = [p for p in home.iterdir() if p.name.startswith("data.corrupt-")]
    assert len(aside) == 1
    assert sorted(p.name for p in (aside[0] / "chain").iterdir()) == before
    assert (home / "data").is_dir() and not any((home / "data").iterdir())
    assert "re-sync" in out and str(aside[0]) in out
    # a second repair of the now empty directory keeps the first copy and adds none
    assert main(["repair", "--home", str(home)]) == 0
    assert [p for p in home.iterdir() if p.name.startswith("data.corrupt-")] == aside


def test_repair_twice_with_data_keeps_both_copies(tmp_path: Path) -> None:
    home = _home(tmp_path)
    assert main(["repair", "--home", str(home)]) == 0
    with ChainStore.open(home / "data" / "chain", genesis_hash=bytes(32)):
        pass
    assert main(["repair", "--home", str(home)]) == 0
    assert len([p for p in home.iterdir() if p.name.startswith("data.corrupt-")]) == 2


def test_repair_refuses_while_the_store_is_open(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = _home(tmp_path)
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, plyvel; db = plyvel.DB(sys.argv[1]); print('open', flush=True); "
         "sys.stdin.read()", str(home / "data" / "chain")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        capsys.readouterr()
        assert main(["repair", "--home", str(home)]) == 1
        err = capsys.readouterr().err
        assert "stop it first" in err and err.count("\n") == 1
        assert not [p for p in home.iterdir() if p.name.startswith("data.corrupt-")]
    finally:
        holder.communicate("", timeout=10)


def test_repair_of_a_missing_home_is_a_usage_error(tmp_path: Path) -> None:
    assert main(["repair", "--home", str(tmp_path / "nope")]) == 2
