"""A Python client of the node's HTTP API (used by the CLI, the benchmark and tests).

`Client` is synchronous, `AsyncClient` the same calls for async code (Trio or
asyncio); both keep connections alive across calls. Every method returns the
decoded JSON of a successful answer and raises `ClientError(status, code,
message)` for an error answer, and for a node that cannot be reached
(status 0, code `unreachable`), so callers handle one exception type.

Transactions are sent as canonical msgpack bytes (`node.txs.build`). `put`
and `delete` sign for the caller: they read the chain id and height from
`/status` and set `valid_until` to the height plus `valid_for_blocks`.

Applications need not trust the node they ask: `get_record(...,
verify_with=genesis)` and `get_tx(..., verify_with=genesis)` fetch a proof
bundle (`?proof=1`), check it offline against the genesis (node/proofs.py) and
raise `ClientError(code="bad_proof")` with the reason if it does not verify.
`gov_propose` / `gov_approve` sign governance transactions (node/governance.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

from consensus import codec
from consensus.crypto import SigningKey
from node import txs

TIMEOUT_S_DEFAULT = 10.0
VALID_FOR_BLOCKS_DEFAULT = 1000
CONNECTIONS_MAX = 16
ERROR_TEXT_CHARS_MAX = 200
MSGPACK = {"Content-Type": "application/msgpack"}


class ClientError(Exception):
    """An error answer from the node (or status 0 when the node cannot be reached)."""

    def __init__(self, status: int, code: str, message: str, body: Any = None) -> None:
        super().__init__(f"{code}: {message}" + (f" (HTTP {status})" if status else ""))
        self.status = status
        self.code = code
        self.message = message
        self.body = body


@dataclass(frozen=True, slots=True)
class _Call:
    """One API request, independent of sync/async transport."""

    method: str
    path: str
    params: dict[str, Any] = field(default_factory=dict)
    content: bytes | None = None
    headers: dict[str, str] | None = None
    timeout_s: float | None = None


def _answer(response: httpx.Response) -> Any:
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.is_success:
        if body is None:
            raise ClientError(response.status_code, "bad_response", "the answer is not JSON")
        return body
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        raise ClientError(response.status_code, body["error"], str(body.get("message", "")), body)
    text = response.text[:ERROR_TEXT_CHARS_MAX]
    raise ClientError(response.status_code, "http_error", text or response.reason_phrase, body)


def _unreachable(base_url: str, exc: httpx.TransportError) -> ClientError:
    return ClientError(0, "unreachable", f"cannot reach {base_url}: {exc or type(exc).__name__}")


def key_segment(key: bytes | str) -> str:
    """A record key as one URL path segment: percent-encoded UTF-8, or `hex:<hex>`."""
    raw = key.encode("utf-8") if isinstance(key, str) else bytes(key)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return "hex:" + raw.hex()
    if text.startswith("hex:"):
        return "hex:" + raw.hex()
    return quote(text, safe="")


def _record_path(agency: str, key: bytes | str) -> str:
    return f"/records/{quote(agency, safe='')}/{key_segment(key)}"


def _hash_hex(tx_hash: bytes | str) -> str:
    return tx_hash.hex() if isinstance(tx_hash, bytes) else tx_hash


class _Calls:
    """The API's requests as data; `Client` and `AsyncClient` run them."""

    @staticmethod
    def submit(tx_bytes: bytes, wait: bool, timeout_s: float | None, base: float) -> _Call:
        params: dict[str, Any] = {}
        total = None
        if wait:
            params["wait"] = "commit"
            if timeout_s is not None:
                params["timeout"] = timeout_s
            total = (timeout_s if timeout_s is not None else 30.0) + base
        return _Call("POST", "/txs", params, bytes(tx_bytes), MSGPACK, total)

    @staticmethod
    def submit_batch(tx_list: list[bytes]) -> _Call:
        return _Call("POST", "/txs/batch", {}, codec.pack([bytes(t) for t in tx_list]), MSGPACK)

    @staticmethod
    def history(agency: str, key: bytes | str, limit: int | None, before: int | None) -> _Call:
        params = {k: v for k, v in (("limit", limit), ("before", before)) if v is not None}
        return _Call("GET", _record_path(agency, key) + "/history", params)

    @staticmethod
    def block(height: int | str) -> _Call:
        if height != "latest" and (type(height) is not int or height < 0):
            raise ValueError("height is a non-negative int or 'latest'")
        return _Call("GET", f"/blocks/{height}")

    @staticmethod
    def build(
        key: SigningKey,
        status: dict[str, Any],
        op: str,
        agency: str,
        record_key: bytes | str,
        value: bytes | str,
        valid_for_blocks: int,
    ) -> bytes:
        valid_until = int(status["height"]) + valid_for_blocks
        return txs.build(key, status["chain_id"], op, agency, record_key, value, valid_until)


def _verified(bundle: Any, genesis: Any) -> dict[str, Any]:
    """`bundle` with "verified": what it proves; ClientError("bad_proof") if it proves nothing."""
    from node.proofs import ProofError, verify_bundle

    try:
        what = verify_bundle(bundle, genesis)
    except ProofError as exc:
        raise ClientError(200, "bad_proof", f"the node's proof does not verify: {exc}") from None
    return {**bundle, "verified": what}


class Client:
    """Synchronous client with keep-alive: `Client("http://127.0.0.1:8700").status()`."""

    def __init__(
        self,
        base_url: str,
        timeout: float = TIMEOUT_S_DEFAULT,
        *,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout
        self._http = httpx.Client(
            base_url=self.base_url,
            timeout=timeout,
            transport=transport,
            limits=httpx.Limits(max_connections=CONNECTIONS_MAX),
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, call: _Call) -> Any:
        try:
            response = self._http.request(
                call.method,
                call.path,
                params=call.params or None,
                content=call.content,
                headers=call.headers,
                timeout=call.timeout_s if call.timeout_s is not None else self.timeout_s,
            )
        except httpx.TransportError as exc:
            raise _unreachable(self.base_url, exc) from None
        return _answer(response)

    def _get(self, path: str) -> Any:
        return self._run(_Call("GET", path))

    def health(self) -> dict[str, Any]:
        return self._get("/health")  # type: ignore[no-any-return]

    def ready(self) -> tuple[bool, str]:
        """(True, "") when the node is ready, else (False, reason)."""
        try:
            self._get("/ready")
        except ClientError as exc:
            if exc.code == "not_ready":
                return False, exc.message
            raise
        return True, ""

    def status(self) -> dict[str, Any]:
        return self._get("/status")  # type: ignore[no-any-return]

    def submit(self, tx_bytes: bytes, wait: bool = False, timeout: float | None = None) -> Any:
        """202-style {"tx_hash", "status"}, or with wait {"tx_hash", "height", "index", "status_code"}."""
        return self._run(_Calls.submit(tx_bytes, wait, timeout, self.timeout_s))

    def submit_batch(self, tx_list: list[bytes]) -> list[dict[str, Any]]:
        """One {"tx_hash", "accepted", "error"?, "message"?} per transaction, in order."""
        return self._run(_Calls.submit_batch(tx_list))["results"]  # type: ignore[no-any-return]

    def put(
        self,
        key: SigningKey,
        agency: str,
        record_key: bytes | str,
        value: bytes | str,
        wait: bool = False,
        timeout: float | None = None,
        *,
        valid_for_blocks: int = VALID_FOR_BLOCKS_DEFAULT,
    ) -> Any:
        tx = _Calls.build(key, self.status(), "put", agency, record_key, value, valid_for_blocks)
        return self.submit(tx, wait, timeout)

    def delete(
        self,
        key: SigningKey,
        agency: str,
        record_key: bytes | str,
        wait: bool = False,
        timeout: float | None = None,
        *,
        valid_for_blocks: int = VALID_FOR_BLOCKS_DEFAULT,
    ) -> Any:
        tx = _Calls.build(key, self.status(), "delete", agency, record_key, b"", valid_for_blocks)
        return self.submit(tx, wait, timeout)

    def get_record(
        self, agency: str, key: bytes | str, *, verify_with: Any = None
    ) -> dict[str, Any]:
        """The record; with `verify_with` (a Genesis) its verified proof bundle instead."""
        if verify_with is None:
            return self._get(_record_path(agency, key))  # type: ignore[no-any-return]
        return _verified(self.get_record_proof(agency, key), verify_with)

    def get_record_proof(self, agency: str, key: bytes | str) -> dict[str, Any]:
        """The record's proof bundle (unverified; see node/proofs.py)."""
        return self._run(_Call("GET", _record_path(agency, key), params={"proof": "1"}))  # type: ignore[no-any-return]

    def get_tx_proof(self, tx_hash: bytes | str) -> dict[str, Any]:
        return self._run(_Call("GET", f"/txs/{_hash_hex(tx_hash)}", params={"proof": "1"}))  # type: ignore[no-any-return]

    def gov_proposals(self) -> dict[str, Any]:
        return self._get("/gov/proposals")  # type: ignore[no-any-return]

    def gov_propose(
        self, key: SigningKey, agency: str, action: bytes, wait: bool = False,
        timeout: float | None = None, *, valid_for_blocks: int = VALID_FOR_BLOCKS_DEFAULT,
    ) -> Any:  # fmt: skip
        """Propose `action` (node.governance.encode_action bytes) on behalf of `agency`."""
        tx = _Calls.build(
            key, self.status(), "gov.propose", agency, b"gov", action, valid_for_blocks
        )
        return self.submit(tx, wait, timeout)

    def gov_approve(
        self, key: SigningKey, agency: str, proposal_id: int, wait: bool = False,
        timeout: float | None = None, *, valid_for_blocks: int = VALID_FOR_BLOCKS_DEFAULT,
    ) -> Any:  # fmt: skip
        from node.governance import approval_value

        value = approval_value(proposal_id)
        tx = _Calls.build(
            key, self.status(), "gov.approve", agency, b"gov", value, valid_for_blocks
        )
        return self.submit(tx, wait, timeout)

    def history(
        self, agency: str, key: bytes | str, limit: int | None = None, before: int | None = None
    ) -> dict[str, Any]:
        return self._run(_Calls.history(agency, key, limit, before))  # type: ignore[no-any-return]

    def get_block(self, height: int | str = "latest") -> dict[str, Any]:
        return self._run(_Calls.block(height))  # type: ignore[no-any-return]

    def get_tx(self, tx_hash: bytes | str, *, verify_with: Any = None) -> dict[str, Any]:
        """The transaction; with `verify_with` (a Genesis) its verified proof bundle instead."""
        if verify_with is None:
            return self._get(f"/txs/{_hash_hex(tx_hash)}")  # type: ignore[no-any-return]
        bundle = _verified(self.get_tx_proof(tx_hash), verify_with)
        if bundle["tx_hash"] != _hash_hex(tx_hash):
            raise ClientError(200, "bad_proof", "the node proved another transaction")
        return bundle

    def validators(self) -> list[dict[str, Any]]:
        return self._get("/validators")["validators"]  # type: ignore[no-any-return]

    def peers(self) -> list[dict[str, Any]]:
        return self._get("/peers")["peers"]  # type: ignore[no-any-return]

    def evidence(self) -> list[dict[str, Any]]:
        return self._get("/evidence")["evidence"]  # type: ignore[no-any-return]

    def genesis(self) -> dict[str, Any]:
        """The chain's genesis document (its "agencies" list names each agency's members)."""
        return self._get("/genesis")  # type: ignore[no-any-return]


class AsyncClient:
    """The same calls as `Client` for async code: `await AsyncClient(url).status()`."""

    def __init__(
        self,
        base_url: str,
        timeout: float = TIMEOUT_S_DEFAULT,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=timeout,
            transport=transport,
            limits=httpx.Limits(max_connections=CONNECTIONS_MAX),
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _run(self, call: _Call) -> Any:
        try:
            response = await self._http.request(
                call.method,
                call.path,
                params=call.params or None,
                content=call.content,
                headers=call.headers,
                timeout=call.timeout_s if call.timeout_s is not None else self.timeout_s,
            )
        except httpx.TransportError as exc:
            raise _unreachable(self.base_url, exc) from None
        return _answer(response)

    async def _get(self, path: str) -> Any:
        return await self._run(_Call("GET", path))

    async def health(self) -> dict[str, Any]:
        return await self._get("/health")  # type: ignore[no-any-return]

    async def ready(self) -> tuple[bool, str]:
        try:
            await self._get("/ready")
        except ClientError as exc:
            if exc.code == "not_ready":
                return False, exc.message
            raise
        return True, ""

    async def status(self) -> dict[str, Any]:
        return await self._get("/status")  # type: ignore[no-any-return]

    async def submit(
        self, tx_bytes: bytes, wait: bool = False, timeout: float | None = None
    ) -> Any:
        return await self._run(_Calls.submit(tx_bytes, wait, timeout, self.timeout_s))

    async def submit_batch(self, tx_list: list[bytes]) -> list[dict[str, Any]]:
        return (await self._run(_Calls.submit_batch(tx_list)))["results"]  # type: ignore[no-any-return]

    async def put(
        self,
        key: SigningKey,
        agency: str,
        record_key: bytes | str,
        value: bytes | str,
        wait: bool = False,
        timeout: float | None = None,
        *,
        valid_for_blocks: int = VALID_FOR_BLOCKS_DEFAULT,
    ) -> Any:
        status = await self.status()
        tx = _Calls.build(key, status, "put", agency, record_key, value, valid_for_blocks)
        return await self.submit(tx, wait, timeout)

    async def delete(
        self,
        key: SigningKey,
        agency: str,
        record_key: bytes | str,
        wait: bool = False,
        timeout: float | None = None,
        *,
        valid_for_blocks: int = VALID_FOR_BLOCKS_DEFAULT,
    ) -> Any:
        status = await self.status()
        tx = _Calls.build(key, status, "delete", agency, record_key, b"", valid_for_blocks)
        return await self.submit(tx, wait, timeout)

    async def get_record_proof(self, agency: str, key: bytes | str) -> dict[str, Any]:
        return await self._run(_Call("GET", _record_path(agency, key), params={"proof": "1"}))  # type: ignore[no-any-return]

    async def get_verified_record(
        self, agency: str, key: bytes | str, genesis: Any
    ) -> dict[str, Any]:
        """The record's proof bundle, checked against `genesis` (ClientError bad_proof if not)."""
        return _verified(await self.get_record_proof(agency, key), genesis)

    async def get_record(self, agency: str, key: bytes | str) -> dict[str, Any]:
        return await self._get(_record_path(agency, key))  # type: ignore[no-any-return]

    async def history(
        self, agency: str, key: bytes | str, limit: int | None = None, before: int | None = None
    ) -> dict[str, Any]:
        return await self._run(_Calls.history(agency, key, limit, before))  # type: ignore[no-any-return]

    async def get_block(self, height: int | str = "latest") -> dict[str, Any]:
        return await self._run(_Calls.block(height))  # type: ignore[no-any-return]

    async def get_tx(self, tx_hash: bytes | str) -> dict[str, Any]:
        return await self._get(f"/txs/{_hash_hex(tx_hash)}")  # type: ignore[no-any-return]

    async def validators(self) -> list[dict[str, Any]]:
        return (await self._get("/validators"))["validators"]  # type: ignore[no-any-return]

    async def peers(self) -> list[dict[str, Any]]:
        return (await self._get("/peers"))["peers"]  # type: ignore[no-any-return]

    async def evidence(self) -> list[dict[str, Any]]:
        return (await self._get("/evidence"))["evidence"]  # type: ignore[no-any-return]

    async def genesis(self) -> dict[str, Any]:
        return await self._get("/genesis")  # type: ignore[no-any-return]
