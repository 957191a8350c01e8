"""The node's HTTP JSON API: Starlette routes served by Hypercorn on the node's Trio loop.

The API is a thin, strict translation layer between HTTP and a `NodeView`
(docs/interfaces.md): it parses and bounds every input, asks the view, and
renders the answer as JSON with bytes as lowercase hex. It holds no state of
its own besides the view.

Theory of operation
-------------------
- Every error is JSON `{"error": code, "message": text}` with a fitting
  status (400 malformed input, 404 unknown thing or route, 405 wrong method,
  408 body sent too slowly, 409 duplicate transaction, 413 body too large,
  415 wrong content type, 429 mempool full, 503 not ready, 504 commit wait
  timed out). Bad input of
  any kind gets one of these; it never reaches the view half-parsed.
- Request bodies are read as a stream and reading stops as soon as the
  body's size passes the route's limit (a declared Content-Length above it is
  refused before any byte is read).
- Transactions are accepted as JSON (the `node.txs.tx_to_json` form, or
  `{"tx": "<hex of canonical bytes>"}`, or a bare hex string) or as raw
  msgpack (`application/msgpack` / `application/octet-stream`). The batch
  route takes a JSON list of those or one msgpack array of byte strings;
  that is the fast path the benchmark uses: the only per-transaction work
  here is moving bytes.
- Rejection codes from the application map to statuses by `REJECTION_STATUS`
  (`duplicate` -> 409, `mempool_full` -> 429, `not_ready` -> 503, any other
  code -> 400); the body also carries `tx_hash` when it is known.
  `POST /txs?wait=commit` on a duplicate still waits for the commit, so a
  client that retries after a lost answer gets the transaction's location
  instead of an error.
- `GET /blocks/stream` is server-sent events: one `event: block` with the
  block header's JSON per committed block, a comment line every
  `SSE_KEEPALIVE_S` so dead clients are noticed, and the view's subscription
  closed as soon as the client goes away (or the view drops a slow reader,
  which ends the stream; clients reconnect).
"""

from __future__ import annotations

import json
import logging
import math
from functools import partial
from typing import Any, Protocol
from urllib.parse import unquote_to_bytes

import hypercorn.config
import trio
from hypercorn.trio.run import worker_serve
from hypercorn.utils import wrap_app
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from consensus import codec
from consensus.codec import DecodeError, EncodeError
from consensus.types import (
    MAX_AGENCY_CHARS,
    MAX_RECORD_KEY_BYTES,
    MAX_TX_BYTES,
    CertifiedBlock,
    tx_hash,
)
from node import proofs, txs
from node.app import code_name, record_state_key
from node.genesis import PARAM_RANGES

log = logging.getLogger("redwood.api")

BODY_BYTES_MAX = 32 * 1024 * 1024  # a batch body; the single-tx limit is below
TX_BODY_BYTES_MAX = 2 * MAX_TX_BYTES + 64 * 1024  # one tx as JSON hex is twice its size
BATCH_TXS_MAX = 20_000
WAIT_TIMEOUT_S_DEFAULT = 30.0
WAIT_TIMEOUT_S_MAX = 120.0
HISTORY_LIMIT_DEFAULT = 100
HISTORY_LIMIT_MAX = 1000
HEIGHT_MAX = 2**64 - 1
U64_MAX = 2**64 - 1
HASH_HEX_CHARS = 64
SSE_KEEPALIVE_S = 15.0
BODY_READ_S_MAX = 30.0  # a client trickling its body holds a connection no longer
SERVER_GRACEFUL_S = 2.0
KEEP_ALIVE_S = 75.0

JSON_TYPES = ("application/json", "text/json")
MSGPACK_TYPES = ("application/msgpack", "application/x-msgpack", "application/octet-stream")

REJECTION_STATUS = {"duplicate": 409, "mempool_full": 429, "not_ready": 503}
"""HTTP status of a rejected transaction by rejection code; any other code is 400."""


class NodeView(Protocol):
    """What the API needs from the node (docs/interfaces.md; node/service.py implements it)."""

    chain_id: str
    node_id: bytes
    store: Any

    def status(self) -> dict[str, Any]: ...
    def readiness(self) -> tuple[bool, str]: ...
    async def submit(self, tx_bytes: bytes) -> Any: ...
    async def submit_many(self, txs: list[bytes]) -> list[Any]: ...
    async def wait_committed(self, tx_hash: bytes, timeout_s: float) -> Any: ...
    def validators(self) -> list[dict[str, Any]]: ...
    def peers(self) -> list[dict[str, Any]]: ...
    def evidence(self) -> list[dict[str, Any]]: ...
    def subscribe_blocks(self) -> trio.MemoryReceiveChannel[CertifiedBlock]: ...

    # Optional (extension): `genesis`, a node.genesis.Genesis served at GET /genesis.


class ApiError(Exception):
    """A request the API refuses: becomes `{"error": code, "message": message, **extra}`."""

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra


# -- rendering -------------------------------------------------------------------


def jsonable(value: Any) -> Any:
    """Plain JSON data from view answers: bytes become hex, tuples lists, keys strings."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "__dataclass_fields__"):
        return {name: jsonable(getattr(value, name)) for name in value.__dataclass_fields__}
    return value


def error_response(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    headers = {"Retry-After": "1"} if status in (429, 503) else None
    return JSONResponse({"error": code, "message": message, **extra}, status, headers=headers)


def text_or_none(data: bytes | None) -> str | None:
    if data is None:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def header_to_json(cb: CertifiedBlock) -> dict[str, Any]:
    """A committed block as JSON: header fields, `hash`, `tx_hashes` and the commit certificate."""
    header = cb.block.header
    return {
        **proofs.header_json(header),
        "hash": header.hash().hex(),
        "tx_hashes": [tx_hash(tx).hex() for tx in cb.block.txs],
        "certificate": proofs.certificate_json(cb.certificate),
    }


def tx_json(tx_bytes: bytes) -> dict[str, Any] | None:
    """The node.txs JSON form of canonical tx bytes, or None if they do not decode."""
    try:
        return txs.tx_to_json(txs.decode_tx(tx_bytes), tx_bytes)
    except DecodeError:
        return None


def record_to_json(agency: str, key: bytes, rv: Any) -> dict[str, Any]:
    return {
        "agency": agency,
        "key": text_or_none(key),
        "key_hex": key.hex(),
        "value": text_or_none(rv.value),
        "value_hex": None if rv.value is None else rv.value.hex(),
        "deleted": rv.value is None,
        "version": rv.version,
        "height": rv.height,
        "tx_index": rv.tx_index,
    }


def location_to_json(tx_hash_: bytes, loc: Any) -> dict[str, Any]:
    return {
        "tx_hash": tx_hash_.hex(),
        "height": loc.height,
        "index": loc.index,
        "status_code": loc.status,
        "receipt": code_name(loc.status),  # "applied" when status_code is 0
    }


# -- parsing -------------------------------------------------------------------


def parse_height(text: str) -> int:
    if not text.isascii() or not text.isdigit():
        raise ApiError(400, "bad_height", f"height must be a non-negative integer, got {text!r}")
    if len(text) > 20 or int(text) > HEIGHT_MAX:
        raise ApiError(400, "bad_height", f"height must be at most {HEIGHT_MAX}")
    return int(text)


def parse_hash(text: str) -> bytes:
    if len(text) != HASH_HEX_CHARS:
        raise ApiError(400, "bad_hash", f"a hash is {HASH_HEX_CHARS} hex characters")
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise ApiError(400, "bad_hash", "a hash is hex (0-9, a-f)") from None


def parse_hex(text: Any, what: str, code: str = "bad_encoding") -> bytes:
    if not isinstance(text, str):
        raise ApiError(400, code, f"{what} must be a hex string")
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise ApiError(400, code, f"{what} is not valid hex") from None


def parse_int_param(
    request: Request, name: str, default: int | None, low: int, high: int
) -> int | None:
    text = request.query_params.get(name)
    if text is None or text == "":
        return default
    if not text.isascii() or not text.isdigit() or len(text) > 20 or not low <= int(text) <= high:
        raise ApiError(400, "bad_request", f"{name} must be an integer in {low}..{high}")
    return int(text)


def parse_timeout(request: Request, wait_s_max: float) -> float:
    text = request.query_params.get("timeout")
    if text is None or text == "":
        return min(WAIT_TIMEOUT_S_DEFAULT, wait_s_max)
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value <= wait_s_max:  # also refuses nan and inf
        raise ApiError(400, "bad_request", f"timeout must be seconds in (0, {wait_s_max:g}]")
    return value


def parse_proof(request: Request) -> bool:
    """`?proof=1` (or true): answer with a proof bundle (node/proofs.py)."""
    value = request.query_params.get("proof")
    if value in (None, "0", "false"):
        return False
    if value in ("1", "true"):
        return True
    raise ApiError(400, "bad_proof", "proof must be 1 or 0")


def parse_wait(request: Request) -> bool:
    wait = request.query_params.get("wait", "")
    if wait not in ("", "none", "commit"):
        raise ApiError(400, "bad_request", "wait must be 'commit' or 'none'")
    return wait == "commit"


def record_path(request: Request) -> tuple[str, bytes, bool]:
    """(agency, record key, is_history) from the *raw* path, so keys may hold %2F.

    The key segment is percent-decoded to bytes (UTF-8 text as sent), or is
    `hex:<hex>` for binary keys.
    """
    raw = request.scope.get("raw_path") or request.scope["path"].encode("utf-8")
    parts = bytes(raw).split(b"?", 1)[0].split(b"/")
    # ["", "records", agency, key] or [..., "history"]
    history = len(parts) == 5 and parts[4] == b"history"
    if len(parts) != 4 and not history:
        raise ApiError(
            404, "not_found", "use /records/{agency}/{key} or /records/{agency}/{key}/history"
        )
    try:
        agency = unquote_to_bytes(parts[2]).decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "bad_agency", "agency is not UTF-8") from None
    if not agency or len(agency) > MAX_AGENCY_CHARS:
        raise ApiError(400, "bad_agency", f"agency must be 1..{MAX_AGENCY_CHARS} characters")
    key = unquote_to_bytes(parts[3])
    if key.startswith(b"hex:"):
        key = parse_hex(key[4:].decode("ascii", "replace"), "record key", "bad_key")
    if not key or len(key) > MAX_RECORD_KEY_BYTES:
        raise ApiError(400, "bad_key", f"record key must be 1..{MAX_RECORD_KEY_BYTES} bytes")
    return agency, key, history


def state_key(agency: str, key: bytes) -> bytes:
    """The state key of a record (the application's layout)."""
    return record_state_key(agency, key)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) as soon as it passes `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isascii() or not declared.isdigit():
            raise ApiError(400, "bad_request", "Content-Length is not a number")
        if int(declared) > limit:
            raise ApiError(413, "body_too_large", f"body exceeds {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    with trio.move_on_after(BODY_READ_S_MAX) as scope:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ApiError(413, "body_too_large", f"body exceeds {limit} bytes")
            chunks.append(chunk)
    if scope.cancelled_caught:
        raise ApiError(408, "body_timeout", f"the body took more than {BODY_READ_S_MAX:g} s")
    if size == 0:
        raise ApiError(400, "empty_body", "the request body is empty")
    return b"".join(chunks)


def body_kind(request: Request) -> str:
    """'json' or 'msgpack' from Content-Type (none means JSON); 415 for anything else."""
    ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if ctype == "" or ctype in JSON_TYPES:
        return "json"
    if ctype in MSGPACK_TYPES:
        return "msgpack"
    raise ApiError(
        415, "unsupported_media_type", "send application/json or application/msgpack bodies"
    )


def parse_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise ApiError(400, "invalid_json", "the body is not valid UTF-8 JSON") from None


def tx_from_json(item: Any) -> bytes:
    """Canonical tx bytes from one JSON item: hex string, {"tx": hex}, or the tx_to_json form."""
    if isinstance(item, str):
        return parse_hex(item, "tx")
    if not isinstance(item, dict):
        raise ApiError(400, "bad_request", "a transaction is an object or a hex string")
    if "tx" in item:
        return parse_hex(item["tx"], "tx")
    try:
        return txs.tx_from_json(item)
    except (ValueError, EncodeError, DecodeError) as exc:  # TxError is a ValueError
        raise ApiError(400, "bad_encoding", f"not a transaction: {exc}") from None


def batch_from_body(kind: str, body: bytes) -> list[bytes | ApiError]:
    """Tx bytes of a batch body; an item that does not parse is its ApiError (reported per item)."""
    if kind == "msgpack":
        try:
            raw = codec.unpack(body, max_bytes=len(body))
        except DecodeError as exc:
            raise ApiError(
                400, "bad_encoding", f"not a msgpack array of byte strings: {exc}"
            ) from None
        if type(raw) is not list or any(type(x) is not bytes for x in raw):
            raise ApiError(400, "bad_encoding", "expected a msgpack array of byte strings")
        _check_batch_size(len(raw))
        return list(raw)
    doc = parse_json(body)
    if isinstance(doc, dict) and "txs" in doc:
        doc = doc["txs"]
    if not isinstance(doc, list):
        raise ApiError(400, "bad_request", 'expected a JSON list of transactions or {"txs": [...]}')
    _check_batch_size(len(doc))
    out: list[bytes | ApiError] = []
    for item in doc:
        try:
            out.append(tx_from_json(item))
        except ApiError as exc:
            out.append(exc)
    return out


def _check_batch_size(count: int) -> None:
    if count > BATCH_TXS_MAX:
        raise ApiError(413, "batch_too_large", f"at most {BATCH_TXS_MAX} transactions per batch")
    if count == 0:
        raise ApiError(400, "empty_batch", "the batch holds no transactions")


def result_to_json(result: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"tx_hash": result.tx_hash.hex(), "accepted": bool(result.accepted)}
    if not result.accepted:
        out["error"] = result.code or "rejected"
        out["message"] = result.message
    return out


# -- the application ----------------------------------------------------------------


class _Api:
    """Route handlers over one view."""

    def __init__(self, view: NodeView, max_body_bytes: int, wait_s_max: float) -> None:
        self.view = view
        self.wait_s_max = wait_s_max
        self.body_bytes_max = max_body_bytes
        self.tx_body_bytes_max = min(max_body_bytes, TX_BODY_BYTES_MAX)

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def ready(self, request: Request) -> Response:
        ready, reason = self.view.readiness()
        if not ready:
            return error_response(503, "not_ready", reason)
        return JSONResponse({"status": "ready"})

    async def status(self, request: Request) -> Response:
        return JSONResponse(jsonable(self.view.status()))

    async def submit(self, request: Request) -> Response:
        wait = parse_wait(request)
        timeout_s = parse_timeout(request, self.wait_s_max)
        kind = body_kind(request)
        body = await read_body(request, self.tx_body_bytes_max)
        tx_bytes = body if kind == "msgpack" else tx_from_json(parse_json(body))
        if not tx_bytes:
            raise ApiError(400, "bad_encoding", "the transaction is empty")
        result = await self.view.submit(tx_bytes)
        if not result.accepted and not (wait and result.code == "duplicate"):
            raise self._rejection(result)
        if not wait:
            return JSONResponse({"tx_hash": result.tx_hash.hex(), "status": "accepted"}, 202)
        loc = await self.view.wait_committed(result.tx_hash, timeout_s)
        if loc is None:
            raise ApiError(
                504,
                "timeout",
                f"not committed within {timeout_s:g} s (it may still be)",
                tx_hash=result.tx_hash.hex(),
            )
        return JSONResponse(location_to_json(result.tx_hash, loc))

    @staticmethod
    def _rejection(result: Any) -> ApiError:
        code = result.code or "rejected"
        status = REJECTION_STATUS.get(code, 400)
        return ApiError(status, code, result.message or code, tx_hash=result.tx_hash.hex())

    async def submit_batch(self, request: Request) -> Response:
        kind = body_kind(request)
        body = await read_body(request, self.body_bytes_max)
        items = batch_from_body(kind, body)
        good = [x for x in items if isinstance(x, bytes)]
        results = iter(await self._submit_many(good)) if good else iter(())
        out: list[dict[str, Any]] = []
        accepted = 0
        for item in items:
            if isinstance(item, ApiError):
                out.append(
                    {
                        "tx_hash": None,
                        "accepted": False,
                        "error": item.code,
                        "message": item.message,
                    }
                )
                continue
            entry = result_to_json(next(results))
            accepted += entry["accepted"]
            out.append(entry)
        return JSONResponse({"accepted": accepted, "rejected": len(out) - accepted, "results": out})

    async def _submit_many(self, txs: list[bytes]) -> list[Any]:
        submit_many = getattr(self.view, "submit_many", None)
        if submit_many is not None:
            results = list(await submit_many(txs))
        else:
            results = [await self.view.submit(tx) for tx in txs]
        assert len(results) == len(txs), "submit_many must answer every transaction"
        return results

    async def get_tx(self, request: Request) -> Response:
        tx_hash_ = parse_hash(request.path_params["tx_hash"])
        if parse_proof(request):
            return JSONResponse(self._bundle(proofs.build_tx_bundle, tx_hash_))
        loc = self.view.store.get_tx(tx_hash_)
        if loc is None:
            raise ApiError(404, "not_found", "no committed transaction with this hash")
        out = location_to_json(tx_hash_, loc)
        out["tx"] = tx_json(loc.tx)
        out["tx_hex"] = loc.tx.hex()
        return JSONResponse(out)

    async def get_block(self, request: Request) -> Response:
        text = request.path_params["height"]
        if text == "latest":
            cb = self.view.store.head()
            if cb is None:
                raise ApiError(404, "not_found", "no block has been committed yet")
        else:
            height = parse_height(text)
            cb = self.view.store.get_block(height) if height > 0 else None
            if cb is None:
                raise ApiError(404, "not_found", f"no block at height {height}")
        out = header_to_json(cb)
        if request.query_params.get("txs") in ("1", "true"):
            out["txs"] = [tx.hex() for tx in cb.block.txs]
        return JSONResponse(out)

    async def get_record(self, request: Request) -> Response:
        agency, key, history = record_path(request)
        if not history and parse_proof(request):
            return JSONResponse(self._bundle(proofs.build_record_bundle, agency, key))
        skey = state_key(agency, key)
        current = self.view.store.get_record(skey)
        if current is None:
            raise ApiError(404, "not_found", "no such record")
        if not history:
            return JSONResponse(record_to_json(agency, key, current))
        limit = parse_int_param(request, "limit", HISTORY_LIMIT_DEFAULT, 1, HISTORY_LIMIT_MAX)
        before = parse_int_param(request, "before", None, 0, U64_MAX)
        versions = self.view.store.record_history(skey, limit or HISTORY_LIMIT_DEFAULT, before)
        more = len(versions) == limit and versions[-1].version > 1
        return JSONResponse(
            {
                "agency": agency,
                "key": text_or_none(key),
                "key_hex": key.hex(),
                "versions": [record_to_json(agency, key, v) for v in versions],
                "next_before": versions[-1].version if more else None,
            }
        )

    def _bundle(self, build: Any, *args: Any) -> dict[str, Any]:
        """A proof bundle (node/proofs.py); 503 `proof_unavailable` when it cannot be built now."""
        app = getattr(self.view, "app", None)
        if app is None:
            raise ApiError(501, "not_implemented", "this node does not serve proofs")
        try:
            bundle: dict[str, Any] = build(self.view.store, app, *args)
        except proofs.ProofUnavailable as exc:
            status = 404 if "no committed transaction" in str(exc) else 503
            code = "not_found" if status == 404 else "proof_unavailable"
            raise ApiError(status, code, str(exc)) from None
        return bundle

    async def gov_proposals(self, request: Request) -> Response:
        app = getattr(self.view, "app", None)
        if app is None:
            raise ApiError(501, "not_implemented", "this node has no governance state")
        limit = parse_int_param(request, "limit", HISTORY_LIMIT_DEFAULT, 1, HISTORY_LIMIT_MAX)
        now = self.view.store.head_height()
        return JSONResponse(
            {
                "height": now,
                "proposals": [p.to_json(now) for p in app.proposals(limit or 100)],
                "agencies": [
                    {"id": a.id, "name": a.name, "members": [m.hex() for m in a.members]}
                    for a in app.gov.agencies
                ],
                "validators": [
                    {
                        "node_id": v.node_id.hex(),
                        "agency": v.agency,
                        "name": v.name,
                        "address": v.address,
                    }
                    for v in app.gov.validators
                ],
                "epochs": [
                    {"epoch": e, "first_height": first, "validators": [i.hex() for i in ids]}
                    for e, first, ids in app.gov.epochs
                ],
                "params": {n: getattr(app.gov.params, n) for n in PARAM_RANGES},
            }
        )

    async def gov_proposal(self, request: Request) -> Response:
        app = getattr(self.view, "app", None)
        if app is None:
            raise ApiError(501, "not_implemented", "this node has no governance state")
        text = request.path_params["proposal_id"]
        if not text.isascii() or not text.isdigit() or len(text) > 19:
            raise ApiError(400, "bad_proposal_id", "proposal id must be a positive integer")
        proposal = app.proposal(int(text))
        if proposal is None:
            raise ApiError(404, "not_found", f"no proposal {text}")
        return JSONResponse(proposal.to_json(self.view.store.head_height()))

    async def validators(self, request: Request) -> Response:
        return JSONResponse({"validators": jsonable(self.view.validators())})

    async def peers(self, request: Request) -> Response:
        return JSONResponse({"peers": jsonable(self.view.peers())})

    async def evidence(self, request: Request) -> Response:
        return JSONResponse({"evidence": jsonable(self.view.evidence())})

    async def blocks_stream(self, request: Request) -> Response:
        channel = self.view.subscribe_blocks()
        return _EventStream(_block_events(channel), channel)

    async def genesis(self, request: Request) -> Response:
        genesis = getattr(self.view, "genesis", None)
        if genesis is None:
            raise ApiError(404, "not_found", "this node does not serve its genesis document")
        return JSONResponse(jsonable(genesis.to_dict()))

    async def openapi(self, request: Request) -> Response:
        from node.openapi import spec

        return JSONResponse(spec())


async def _block_events(channel: trio.MemoryReceiveChannel[CertifiedBlock]) -> Any:
    yield ": redwood block stream\n\n"
    while True:
        cb = None
        with trio.move_on_after(SSE_KEEPALIVE_S):
            try:
                cb = await channel.receive()
            except (trio.EndOfChannel, trio.ClosedResourceError):
                return
        if cb is None:
            yield ": keep-alive\n\n"
            continue
        data = json.dumps(header_to_json(cb), separators=(",", ":"))
        yield f"event: block\nid: {cb.block.height}\ndata: {data}\n\n"


class _EventStream(StreamingResponse):
    """Server-sent events that close the view's subscription however the stream ends."""

    def __init__(self, events: Any, channel: trio.MemoryReceiveChannel[Any]) -> None:
        super().__init__(
            events,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        self._channel = channel

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._channel.close()
            aclose = getattr(self.body_iterator, "aclose", None)
            if aclose is not None:
                with trio.CancelScope(shield=True):
                    await aclose()


ROUTES: tuple[tuple[str, str, str], ...] = (
    # (method, path, handler name); node/openapi.py documents exactly these
    ("GET", "/health", "health"),
    ("GET", "/ready", "ready"),
    ("GET", "/status", "status"),
    ("POST", "/txs", "submit"),
    ("POST", "/txs/batch", "submit_batch"),
    ("GET", "/txs/{tx_hash}", "get_tx"),
    ("GET", "/blocks/stream", "blocks_stream"),
    ("GET", "/blocks/{height}", "get_block"),
    ("GET", "/records/{agency}/{key}", "get_record"),
    ("GET", "/records/{agency}/{key}/history", "get_record"),
    ("GET", "/validators", "validators"),
    ("GET", "/peers", "peers"),
    ("GET", "/evidence", "evidence"),
    ("GET", "/genesis", "genesis"),
    ("GET", "/gov/proposals", "gov_proposals"),
    ("GET", "/gov/proposals/{proposal_id}", "gov_proposal"),
    ("GET", "/openapi.json", "openapi"),
)


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.message, **exc.extra)


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 400: "bad_request"}


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    if exc.status_code == 404:
        message = f"no route {request.url.path}"
    elif exc.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}"
    else:
        message = str(exc.detail)
    response = error_response(exc.status_code, code, message)
    if exc.headers:
        response.headers.update(exc.headers)
    return response


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.error("API error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal", "internal error (logged by the node)")


def build_app(
    view: NodeView,
    *,
    max_body_bytes: int = BODY_BYTES_MAX,
    wait_timeout_s_max: float = WAIT_TIMEOUT_S_MAX,
) -> Starlette:
    """The Starlette application over `view` (served by `serve_api`, or used in tests via ASGI).

    `max_body_bytes` bounds a batch body (one transaction's body is bounded
    by the smaller of it and TX_BODY_BYTES_MAX); `wait_timeout_s_max` bounds
    `?timeout=` of `POST /txs?wait=commit`.
    """
    if max_body_bytes < 1 or not 0 < wait_timeout_s_max <= WAIT_TIMEOUT_S_MAX:
        raise ValueError(
            f"max_body_bytes must be positive and wait_timeout_s_max in (0, {WAIT_TIMEOUT_S_MAX:g}]"
        )
    api = _Api(view, max_body_bytes, wait_timeout_s_max)
    routes = []
    for method, path, name in ROUTES:
        # A record key may hold "/" (sent as %2F, which the decoded path loses):
        # let the last route take any tail; the handler parses the raw path.
        route_path = path.replace("{key}", "{key:path}") if path.endswith("{key}") else path
        routes.append(Route(route_path, getattr(api, name), methods=[method]))
    app = Starlette(
        routes=routes,
        exception_handlers={
            ApiError: _api_error,
            HTTPException: _http_error,
            Exception: _internal_error,
        },
    )
    app.router.redirect_slashes = False  # "/status/" is an unknown route, not a redirect
    return app


async def serve_api(
    view: NodeView,
    host: str,
    port: int,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    max_body_bytes: int = BODY_BYTES_MAX,
    wait_timeout_s_max: float = WAIT_TIMEOUT_S_MAX,
) -> None:
    """Serve the API on host:port until cancelled; `task_status.started(bound_port)` once listening.

    A port that cannot be bound raises a plain OSError before anything starts.
    """
    config = hypercorn.config.Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = log
    config.include_server_header = False
    config.graceful_timeout = SERVER_GRACEFUL_S
    config.keep_alive_timeout = KEEP_ALIVE_S
    # Bind here rather than inside Hypercorn so that "address in use" is a plain
    # OSError for the caller, not one buried in nested exception groups.
    starlette_app = build_app(
        view, max_body_bytes=max_body_bytes, wait_timeout_s_max=wait_timeout_s_max
    )
    app = wrap_app(starlette_app, 0, "asgi")  # type: ignore[arg-type]
    sockets = config.create_sockets()
    try:
        for sock in sockets.insecure_sockets:
            sock.listen(config.backlog)
        bound = sockets.insecure_sockets[0].getsockname()[1]
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(worker_serve, app, config, sockets=sockets))
            log.info("API listening on %s:%d", host, bound)
            task_status.started(bound)
    finally:
        for sock in sockets.insecure_sockets:
            sock.close()
