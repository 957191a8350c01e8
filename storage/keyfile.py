"""Key files: an Ed25519 seed on disk, written atomically with mode 0600.

Format: one line of JSON, `{"type": "ed25519", "seed": "<64 hex chars>"}`. A key
file that other users can read, or that is not in this format, is refused with
an error naming the file (never the secret).
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
from pathlib import Path

from consensus.crypto import SEED_BYTES, SigningKey

KEY_FILE_MODE = 0o600
MAX_KEY_FILE_BYTES = 4096


class KeyFileError(Exception):
    """A key file is missing, unsafe or malformed."""


def write_key(path: str | os.PathLike[str], key: SigningKey, *, overwrite: bool = False) -> None:
    """Write `key` to `path` atomically (temp file, fsync, rename) with mode 0600.

    Without `overwrite`, an existing key is never replaced, not even one that
    appears while this one is written (the temp file is hard-linked into place).
    """
    path = Path(path)
    exists = KeyFileError(f"{path}: already exists; refusing to overwrite a key")
    if path.exists() and not overwrite:
        raise exists
    path.parent.mkdir(parents=True, exist_ok=True)
    body = json.dumps({"type": "ed25519", "seed": key.seed.hex(), "public": key.public.hex()})
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".key-", suffix=".tmp")
    try:
        os.fchmod(fd, KEY_FILE_MODE)
        with os.fdopen(fd, "w") as f:
            f.write(body + "\n")
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # fails if a key appeared meanwhile: never replaces one
    except FileExistsError:
        raise exists from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        if not overwrite:
            Path(tmp).unlink(missing_ok=True)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_key(path: str | os.PathLike[str]) -> SigningKey:
    """Load a key file, refusing one with group/other permissions or a bad format."""
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise KeyFileError(f"{path}: key file not found") from None
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read key file ({type(exc).__name__})") from None
    if not stat.S_ISREG(st.st_mode):
        raise KeyFileError(f"{path}: not a regular file")
    if st.st_mode & 0o077:
        raise KeyFileError(
            f"{path}: permissions {stat.S_IMODE(st.st_mode):04o} are too open; "
            f"run `chmod 600 {path}`"
        )
    if st.st_size > MAX_KEY_FILE_BYTES:
        raise KeyFileError(f"{path}: too large to be a key file")
    try:
        with path.open("rb") as f:
            data = f.read(MAX_KEY_FILE_BYTES + 1)
        if len(data) > MAX_KEY_FILE_BYTES:
            raise KeyFileError(f"{path}: too large to be a key file")
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyFileError(f"{path}: cannot read key file ({type(exc).__name__})") from None
    try:
        return _parse_key(text)
    except ValueError as exc:
        # every message raised by _parse_key names the problem, never the secret
        raise KeyFileError(f"{path}: not a valid Redwood key file: {exc}") from None


def _parse_key(text: str) -> SigningKey:
    """The key in a key file's text. ValueError messages never contain key material."""
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):
        raise ValueError("not JSON") from None
    if not isinstance(doc, dict):
        raise ValueError("not a JSON object")
    if doc.get("type") != "ed25519":
        raise ValueError('"type" is not "ed25519"')
    seed = _hex_field(doc, "seed")
    if len(seed) != SEED_BYTES:
        raise ValueError(f'"seed" is {len(seed)} bytes, expected {SEED_BYTES}')
    key = SigningKey(seed)
    if "public" in doc and _hex_field(doc, "public") != key.public:
        raise ValueError('"public" does not match the seed')
    return key


def _hex_field(doc: dict[str, object], name: str) -> bytes:
    value = doc.get(name)
    if not isinstance(value, str):
        raise ValueError(f'"{name}" is missing or not a string')
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise ValueError(f'"{name}" is not hex') from None


def read_public(path: str | os.PathLike[str]) -> bytes:
    return read_key(path).public
