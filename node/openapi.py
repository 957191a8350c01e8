"""The OpenAPI 3.1 description of the node's HTTP API (served at GET /openapi.json).

Hand-written so that it says what the API promises rather than what a
framework can infer. tests/unit/test_api.py checks that every route of the
application is described here and that nothing else is.
"""

from __future__ import annotations

from typing import Any

from node import api

HEX = {"type": "string", "pattern": "^[0-9a-f]*$"}
HASH = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
U64 = {"type": "integer", "minimum": 0, "maximum": api.U64_MAX}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


def _obj(props: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object", "properties": props}
    out["required"] = list(props) if required is None else required
    return out


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"oneOf": [schema, {"type": "null"}]}


SCHEMAS: dict[str, Any] = {
    "Error": _obj(
        {
            "error": {"type": "string", "description": "machine-readable code"},
            "message": {"type": "string"},
            "tx_hash": HASH,
        },
        ["error", "message"],
    ),
    "Transaction": {
        "description": (
            'One signed transaction: the node.txs JSON form, {"tx": hex of its canonical '
            "msgpack bytes}, or that hex string alone."
        ),
        "oneOf": [
            HEX,
            _obj({"tx": HEX}),
            _obj(
                {
                    "sender": HEX,
                    "nonce": U64,
                    "valid_until": U64,
                    "op": {"type": "string"},
                    "agency": {"type": "string"},
                    "key": {"type": "string"},
                    "value": {"type": "string"},
                    "signature": HEX,
                },
                ["sender", "nonce", "valid_until", "op", "agency", "signature"],
            ),
        ],
    },
    "Location": _obj(
        {
            "tx_hash": HASH,
            "height": U64,
            "index": U64,
            "status_code": U64,
            "receipt": {"type": "string", "description": "status_code's name: applied, ..."},
        },
    ),
    "SubmitResult": _obj(
        {
            "tx_hash": _nullable(HASH),
            "accepted": {"type": "boolean"},
            "error": {"type": "string"},
            "message": {"type": "string"},
        },
        ["tx_hash", "accepted"],
    ),
    "Block": _obj(
        {
            "height": U64,
            "hash": HASH,
            "chain_id": {"type": "string"},
            "view": U64,
            "epoch": U64,
            "parent_hash": HASH,
            "tx_root": HASH,
            "tx_count": U64,
            "state_height": U64,
            "state_root": HASH,
            "proposer": HEX,
            "timestamp_ms": U64,
            "validator_set_hash": HASH,
            "tx_hashes": {"type": "array", "items": HASH},
            "certificate": _obj(
                {
                    "view": U64,
                    "height": U64,
                    "digest": HASH,
                    "epoch": U64,
                    "signatures": {
                        "type": "array",
                        "items": _obj({"replica": HEX, "signature": HEX}),
                    },
                }
            ),
            "txs": {"type": "array", "items": HEX, "description": "only with ?txs=true"},
        },
        ["height", "hash", "parent_hash", "state_root", "tx_hashes", "certificate"],
    ),
    "Record": _obj(
        {
            "agency": {"type": "string"},
            "key": _nullable({"type": "string"}),
            "key_hex": HEX,
            "value": _nullable({"type": "string", "description": "when the value is UTF-8"}),
            "value_hex": _nullable(HEX),
            "deleted": {"type": "boolean"},
            "version": U64,
            "height": U64,
            "tx_index": U64,
        }
    ),
}

_E400 = _error("malformed input (bad hex, bad height, wrong JSON types, empty body...)")
_E404 = _error("not found")
_E408 = _error("body_timeout: the body was sent too slowly")
_E413 = _error("body (or batch) too large")
_E415 = _error("unsupported Content-Type")
_HEIGHT = {
    "name": "height",
    "in": "path",
    "required": True,
    "description": "a height in 1..2**64-1, or `latest`",
    "schema": {"type": "string"},
}
_AGENCY = {"name": "agency", "in": "path", "required": True, "schema": {"type": "string"}}
_KEY = {
    "name": "key",
    "in": "path",
    "required": True,
    "description": "URL-encoded UTF-8 (a `/` inside is %2F), or `hex:<hex>`",
    "schema": {"type": "string"},
}
_TX_BODY = {
    "required": True,
    "content": {
        "application/json": {"schema": _ref("Transaction")},
        "application/msgpack": {"schema": {"type": "string", "format": "binary"}},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    },
}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


_PROOF = _query(
    "proof",
    {"type": "string", "enum": ["0", "1", "false", "true"]},
    "1: answer with a proof bundle that `redwood verify` checks offline (docs/proofs.md)",
)

PATHS: dict[str, dict[str, Any]] = {
    "/health": {
        "get": {
            "summary": "The process is alive",
            "responses": {"200": _json(_obj({"status": {"const": "ok"}}), "alive")},
        }
    },
    "/ready": {
        "get": {
            "summary": "The node is caught up and serving (for load balancers)",
            "responses": {
                "200": _json(_obj({"status": {"const": "ready"}}), "ready"),
                "503": _error("not ready; `message` says why"),
            },
        }
    },
    "/status": {
        "get": {
            "summary": "Chain id, node id, height, view, peers, validators and more",
            "responses": {
                "200": _json(
                    _obj(
                        {
                            "chain_id": {"type": "string"},
                            "node_id": HEX,
                            "height": U64,
                            "view": U64,
                            "last_block_hash": HEX,
                            "catching_up": {"type": "boolean"},
                            "peers": {},
                            "validators": {},
                        }
                    ),
                    "status",
                )
            },
        }
    },
    "/txs": {
        "post": {
            "summary": "Submit one signed transaction",
            "parameters": [
                _query("wait", {"enum": ["none", "commit"]}, "`commit`: answer once committed"),
                _query(
                    "timeout",
                    {"type": "number", "exclusiveMinimum": 0, "maximum": api.WAIT_TIMEOUT_S_MAX},
                    f"seconds to wait for the commit (default {api.WAIT_TIMEOUT_S_DEFAULT:g})",
                ),
            ],
            "requestBody": _TX_BODY,
            "responses": {
                "202": _json(
                    _obj({"tx_hash": HASH, "status": {"const": "accepted"}}), "in the mempool"
                ),
                "200": _json(_ref("Location"), "committed (with ?wait=commit)"),
                "400": _error("rejected: `error` is the rejection code, or the input is malformed"),
                "408": _E408,
                "409": _error("duplicate: already committed or already in the mempool"),
                "413": _E413,
                "415": _E415,
                "429": _error("mempool_full: retry later"),
                "504": _error("timeout: not committed within the wait"),
            },
        }
    },
    "/txs/batch": {
        "post": {
            "summary": f"Submit up to {api.BATCH_TXS_MAX} transactions (the fast path)",
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "oneOf": [
                                {"type": "array", "items": _ref("Transaction")},
                                _obj({"txs": {"type": "array", "items": _ref("Transaction")}}),
                            ]
                        }
                    },
                    "application/msgpack": {
                        "schema": {
                            "type": "string",
                            "format": "binary",
                            "description": "a msgpack array of canonical tx byte strings",
                        }
                    },
                },
            },
            "responses": {
                "200": _json(
                    _obj(
                        {
                            "accepted": U64,
                            "rejected": U64,
                            "results": {"type": "array", "items": _ref("SubmitResult")},
                        }
                    ),
                    "one result per transaction, in order",
                ),
                "400": _E400,
                "408": _E408,
                "413": _E413,
                "415": _E415,
            },
        }
    },
    "/txs/{tx_hash}": {
        "get": {
            "summary": "A committed transaction and where it is (with ?proof=1: a proof bundle)",
            "parameters": [
                {"name": "tx_hash", "in": "path", "required": True, "schema": HASH},
                _PROOF,
            ],
            "responses": {
                "503": _error("?proof=1 and the proof cannot be built now (proof_unavailable)"),
                "200": _json(
                    {
                        "allOf": [
                            _ref("Location"),
                            _obj({"tx": {"type": "object"}, "tx_hex": HEX}),
                        ]
                    },
                    "committed",
                ),
                "400": _E400,
                "404": _E404,
            },
        }
    },
    "/blocks/stream": {
        "get": {
            "summary": "Server-sent events: one `block` event (Block JSON) per committed block",
            "responses": {
                "200": {
                    "description": "an endless event stream",
                    "content": {"text/event-stream": {"schema": {"type": "string"}}},
                }
            },
        }
    },
    "/blocks/{height}": {
        "get": {
            "summary": "A committed block's header, tx hashes and commit certificate",
            "parameters": [
                _HEIGHT,
                _query("txs", {"type": "boolean"}, "also return the txs as hex"),
            ],
            "responses": {"200": _json(_ref("Block"), "the block"), "400": _E400, "404": _E404},
        }
    },
    "/records/{agency}/{key}": {
        "get": {
            "summary": "The current version of a record (with ?proof=1: a proof bundle)",
            "parameters": [_AGENCY, _KEY, _PROOF],
            "responses": {
                "200": _json(
                    {"oneOf": [_ref("Record"), {"type": "object"}]},
                    "the record; with ?proof=1 a redwood/record-proof/v1 bundle (docs/proofs.md),"
                    " also for an absent record (value null)",
                ),
                "400": _E400,
                "404": _E404,
                "503": _error("?proof=1 and the proof cannot be built now (proof_unavailable)"),
            },
        }
    },
    "/records/{agency}/{key}/history": {
        "get": {
            "summary": "A record's versions, newest first",
            "parameters": [
                _AGENCY,
                _KEY,
                _query(
                    "limit",
                    {"type": "integer", "minimum": 1, "maximum": api.HISTORY_LIMIT_MAX},
                    f"default {api.HISTORY_LIMIT_DEFAULT}",
                ),
                _query("before", U64, "only versions older than this one (paging)"),
            ],
            "responses": {
                "200": _json(
                    _obj(
                        {
                            "agency": {"type": "string"},
                            "key": _nullable({"type": "string"}),
                            "key_hex": HEX,
                            "versions": {"type": "array", "items": _ref("Record")},
                            "next_before": _nullable(U64),
                        }
                    ),
                    "versions",
                ),
                "400": _E400,
                "404": _E404,
            },
        }
    },
    "/validators": {
        "get": {
            "summary": "The validator set in primary order",
            "responses": {
                "200": _json(
                    _obj({"validators": {"type": "array", "items": _obj({"node_id": HEX})}}),
                    "validators",
                )
            },
        }
    },
    "/peers": {
        "get": {
            "summary": "Connected peers",
            "responses": {
                "200": _json(
                    _obj({"peers": {"type": "array", "items": {"type": "object"}}}), "peers"
                )
            },
        }
    },
    "/evidence": {
        "get": {
            "summary": "Evidence of validators' conflicting votes",
            "responses": {
                "200": _json(
                    _obj({"evidence": {"type": "array", "items": {"type": "object"}}}), "evidence"
                )
            },
        }
    },
    "/genesis": {
        "get": {
            "summary": "The chain's genesis document (agencies, validators, parameters)",
            "responses": {"200": _json({"type": "object"}, "genesis.json"), "404": _E404},
        }
    },
    "/gov/proposals": {
        "get": {
            "summary": "Governance: proposals (newest first), agencies, validators, epochs, params",
            "parameters": [
                _query(
                    "limit",
                    {"type": "integer", "minimum": 1, "maximum": api.HISTORY_LIMIT_MAX},
                    f"default {api.HISTORY_LIMIT_DEFAULT}",
                )
            ],
            "responses": {"200": _json({"type": "object"}, "governance state"), "400": _E400},
        }
    },
    "/gov/proposals/{proposal_id}": {
        "get": {
            "summary": "One governance proposal",
            "parameters": [
                {
                    "name": "proposal_id",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "integer", "minimum": 1},
                }
            ],
            "responses": {
                "200": _json({"type": "object"}, "the proposal"),
                "400": _E400,
                "404": _E404,
            },
        }
    },
    "/openapi.json": {
        "get": {
            "summary": "This document",
            "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1")},
        }
    },
}


def spec() -> dict[str, Any]:
    """The OpenAPI 3.1 document."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Redwood node API",
            "version": "1",
            "description": (
                'Every error is {"error": code, "message": text}. Bytes are lowercase hex.'
            ),
        },
        "paths": PATHS,
        "components": {"schemas": SCHEMAS},
    }
