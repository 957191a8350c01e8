"""Key files: mode 0600, atomic writes, refusal of unsafe or malformed files, no secret in errors."""

from __future__ import annotations

import json
import os
import pathlib
import stat
import tempfile

import pytest

from consensus.crypto import SigningKey
from storage.keyfile import KeyFileError, read_key, read_public, write_key

SEED = bytes(range(32))


@pytest.fixture
def key() -> SigningKey:
    return SigningKey(SEED)


def _secret_forms(key: SigningKey) -> list[str]:
    return [key.seed.hex(), key.seed.hex().upper(), repr(key.seed), key.seed.hex()[:16]]


def _assert_no_secret(text: str, key: SigningKey) -> None:
    for form in _secret_forms(key):
        assert form not in text


def _write_raw(path: pathlib.Path, text: str, mode: int = 0o600) -> pathlib.Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def test_round_trip_with_mode_0600_even_under_a_permissive_umask(
    tmp_path: pathlib.Path, key: SigningKey
) -> None:
    path = tmp_path / "config" / "node_key"
    old = os.umask(0)
    try:
        write_key(path, key)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_key(path).public == key.public
    assert read_key(path).seed == key.seed
    assert read_public(path) == key.public
    assert json.loads(path.read_text())["public"] == key.public.hex()


def test_refuses_to_overwrite_unless_asked(tmp_path: pathlib.Path, key: SigningKey) -> None:
    path = tmp_path / "node_key"
    write_key(path, key)
    other = SigningKey(bytes(32))
    with pytest.raises(KeyFileError, match="already exists"):
        write_key(path, other)
    assert read_key(path).public == key.public
    write_key(path, other, overwrite=True)
    assert read_key(path).public == other.public
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_key_that_appears_during_the_write_is_not_replaced(
    tmp_path: pathlib.Path, key: SigningKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "node_key"
    real_mkstemp = tempfile.mkstemp

    def racing_mkstemp(*args: object, **kwargs: object) -> tuple[int, str]:
        path.write_text("another process's key")  # created after the exists() check
        return real_mkstemp(*args, **kwargs)  # type: ignore[no-any-return]

    monkeypatch.setattr(tempfile, "mkstemp", racing_mkstemp)
    with pytest.raises(KeyFileError, match="already exists"):
        write_key(path, key)
    assert path.read_text() == "another process's key"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["node_key"]


@pytest.mark.parametrize(
    ("failing", "overwrite"),
    [("fsync", True), ("replace", True), ("fsync", False), ("link", False)],
)
def test_a_failed_write_leaves_the_old_state_and_no_temp_file(
    tmp_path: pathlib.Path,
    key: SigningKey,
    monkeypatch: pytest.MonkeyPatch,
    failing: str,
    overwrite: bool,
) -> None:
    old = tmp_path / "old_key"
    write_key(old, key)
    before = old.read_bytes()
    target = old if overwrite else tmp_path / "new_key"

    def fail(*args: object) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(os, failing, fail)
    with pytest.raises(OSError, match="disk on fire"):
        write_key(target, SigningKey(bytes(32)), overwrite=overwrite)
    monkeypatch.undo()
    assert old.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old_key"]


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o700 | 0o007])
def test_refuses_group_or_world_accessible_files(
    tmp_path: pathlib.Path, key: SigningKey, mode: int
) -> None:
    path = tmp_path / "node_key"
    write_key(path, key)
    path.chmod(mode)
    with pytest.raises(KeyFileError, match="too open; run `chmod 600") as exc:
        read_key(path)
    _assert_no_secret(str(exc.value), key)


def test_owner_only_modes_are_accepted(tmp_path: pathlib.Path, key: SigningKey) -> None:
    path = tmp_path / "node_key"
    write_key(path, key)
    path.chmod(0o400)
    assert read_key(path).public == key.public


def test_missing_file_and_directory_are_refused(tmp_path: pathlib.Path) -> None:
    with pytest.raises(KeyFileError, match="not found"):
        read_key(tmp_path / "absent")
    (tmp_path / "dir").mkdir(mode=0o700)
    with pytest.raises(KeyFileError, match="not a regular file"):
        read_key(tmp_path / "dir")


VALID = {"type": "ed25519", "seed": SEED.hex()}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{not json" + SEED.hex(), "not JSON"),
        ("", "not JSON"),
        ("[" * 2000 + "]" * 2000, "not JSON"),  # nesting deeper than the parser recurses
        (json.dumps([VALID]), "not a JSON object"),
        (json.dumps({**VALID, "type": "rsa"}), '"type" is not "ed25519"'),
        (json.dumps({"type": "ed25519"}), '"seed" is missing'),
        (json.dumps({**VALID, "seed": 12}), '"seed" is missing or not a string'),
        (json.dumps({**VALID, "seed": SEED.hex()[:-2] + "zz"}), '"seed" is not hex'),
        (json.dumps({**VALID, "seed": SEED.hex()[:-2]}), '"seed" is 31 bytes, expected 32'),
        (json.dumps({**VALID, "seed": SEED.hex() + "00"}), '"seed" is 33 bytes, expected 32'),
        (json.dumps({**VALID, "public": "00" * 32}), '"public" does not match the seed'),
        (json.dumps({**VALID, "public": 5}), '"public" is missing or not a string'),
    ],
)
def test_malformed_files_are_refused_without_showing_the_secret(
    tmp_path: pathlib.Path, key: SigningKey, text: str, problem: str
) -> None:
    path = _write_raw(tmp_path / "node_key", text)
    with pytest.raises(KeyFileError) as exc:
        read_key(path)
    message = str(exc.value)
    assert problem in message
    assert str(path) in message
    _assert_no_secret(message, key)
    _assert_no_secret(repr(exc.value), key)
    # the parser's exception (which may quote the file) is not chained into the traceback
    assert exc.value.__cause__ is None and exc.value.__suppress_context__


def test_binary_and_oversized_files_are_refused(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "node_key"
    path.write_bytes(b"\xff\xfe" * 10)
    path.chmod(0o600)
    with pytest.raises(KeyFileError, match="cannot read"):
        read_key(path)
    path.write_bytes(b" " * 5000)
    with pytest.raises(KeyFileError, match="too large"):
        read_key(path)


def test_repr_and_str_of_a_key_never_show_the_secret(key: SigningKey) -> None:
    for text in (repr(key), str(key), f"{key}", f"{key!r}"):
        _assert_no_secret(text, key)
        assert key.public.hex()[:16] in text
