"""The OpenAPI 3 document of the REST API (``GET /openapi.json``), written by hand from the
routes in :mod:`~hitl_vault.serve.app`: every route, every body (no field beyond those
listed), every status each may answer. The suite checks the service against it."""

from __future__ import annotations

from typing import Any

from .. import __version__
from ..model import Status

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string"}},
}
_WHY = {
    400: "A token in the URL (it goes in the Authorization header only).",
    401: "No token, or an unknown, revoked or expired one (no detail is given).",
    403: "The token's role or actions do not allow this, or the decision does not count; "
    "or the request's Origin is not this service's.",
    404: "No such request, or another agent's.",
    408: "The body stopped arriving.",
    409: "The request is no longer in a status that allows this.",
    413: "The body is over the limit (1 MiB).",
    421: "The Host is not this service's (see serve --public-url).",
    422: "Invalid input; the message is the one the CLI gives for it.",
    429: "Too many failed sign-ins from this address; try again later.",
    503: "The journal cannot be used just now, or a rule failed; nothing was recorded.",
}
_STATUSES = [
    "pending", "approved", "rejected", "timed_out", "cancelled", "executing", "executed", "failed",
]  # fmt: skip
# A request exactly as ``hitl-vault show --json`` prints it (the README documents each
# field), to an approver token; an agent token is shown less (see ``path``,
# ``decided_uid``, ``decided_actor``, ``decided_credential``).
_REQUEST = {
    "type": "object",
    "required": ["id", "status", "action", "params", "requested_by", "history"],
    "properties": {
        "id": {"type": "string"},
        "status": {"type": "string", "enum": _STATUSES},
        "action": {"type": "string"},
        "summary": {"type": "string"},
        "params": {"type": "object"},
        "params_sha": {"type": "string"},
        "requested_by": {
            "type": "string",
            "description": "for a request an agent token asked for, the token's name",
        },
        "credential": {
            "type": ["string", "null"],
            "description": "the id of the agent token that asked for it (null: asked "
            "another way, such as the CLI or the Inbox; no agent sees those)",
        },
        "session": {
            "type": ["string", "null"],
            "description": "the session the agent said it asked from (its word)",
        },
        "client": {
            "type": ["string", "null"],
            "description": "the client the agent said it asked with (its word): the "
            "submit body's client, the MCP client's name, or the hook's agent at the gate",
        },
        "proposal": {
            "type": ["object", "null"],
            "description": "what the requester put forward: reasoning, confidence, "
            "alternatives, risk_factors, and the diff of a file tool's call with diff_by "
            "(gate: made from the file as the gate read it; agent: as the agent's side "
            "computed it, the service cannot read the agent's files)",
        },
        "path": {
            "type": ["string", "null"],
            "description": "the request's note: its full path for an approver token, "
            "relative to the vault for an agent token",
        },
        "decided_uid": {
            "type": ["integer", "null"],
            "description": "the OS user that decided, where one did: for approver tokens "
            "only (an agent token's view leaves it out)",
        },
        "decided_actor": {
            "type": ["string", "null"],
            "description": "the host and OS user ('host/user') of the process that recorded "
            "the decision (null before one, or in a journal entry older than the actor): for "
            "approver tokens only",
        },
        "decided_credential": {
            "type": ["string", "null"],
            "description": "the credential the decision came through the service with: 'token "
            "NAME (id ID)' for a token, 'session NAME', 'link NAME' or 'socket NAME' for a "
            "person (null before a decision, for one made in a note or the CLI, or in a journal "
            "entry older than it): for approver tokens only",
        },
        "history": {
            "type": "array",
            "items": {"type": "string"},
            "description": "one line per step; a proven decision says 'via api', and to an "
            "approver token also where it came from ('from 10.0.0.5')",
        },
    },
}
_LISTED = {**_REQUEST, "required": ["id", "status", "action", "params", "requested_by"]}
_TEXTS = {
    "type": ["array", "null"],
    "maxItems": 20,
    "items": {"type": "string", "maxLength": 1000},
}
_SUBMIT = {
    "type": "object",
    "additionalProperties": False,
    "required": ["action"],
    "properties": {
        "action": {
            "type": "string",
            "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
            "description": "letters, digits, '-', '_' or '.', starting with a letter or digit",
        },
        "params": {"type": ["object", "null"]},
        "summary": {"type": ["string", "null"]},
        "context": {"type": ["string", "null"], "maxLength": 20000},
        "reasoning": {"type": ["string", "null"], "maxLength": 20000},
        "confidence": {
            "description": "how sure the agent is, from 0 to 1; rules may ask or block on it",
            "type": ["number", "null"],
            "minimum": 0,
            "maximum": 1,
        },
        "alternatives": _TEXTS,
        "risk_factors": _TEXTS,
        "session": {
            "type": ["string", "null"],
            "description": "the agent's own session id, kept in the request's session field "
            "(shown, never matched by rules; at most 200 characters are kept)",
        },
        "client": {
            "type": ["string", "null"],
            "description": "the agent's client (its program's name), kept in the request's "
            "client field (shown, never matched by rules; at most 200 characters are kept)",
        },
        "timeout": {
            "description": "how long it may stay pending: 90s, 15m, 1h, 2d, or seconds",
            "type": ["string", "number", "null"],
            "exclusiveMinimum": 0,
            "maximum": 3153600000,
        },
    },
}
_DECISION = {
    "type": "object",
    "additionalProperties": False,
    "required": ["decision"],
    "properties": {
        "decision": {"type": "string", "enum": ["approve", "reject"]},
        "reason": {"type": ["string", "null"]},
        "expect": {
            "type": ["string", "null"],
            "description": "the params hash show printed (approve only)",
        },
    },
}
_RESULT = {
    "type": "object",
    "additionalProperties": False,
    "description": "result (it ran: executed) or error (it failed: failed), one of them",
    "properties": {"result": {"type": ["string", "null"]}, "error": {"type": ["string", "null"]}},
    "oneOf": [
        {"required": ["result"], "properties": {"result": {"type": "string"}}},
        {"required": ["error"], "properties": {"error": {"type": "string"}}},
    ],
}
_EMPTY = {"type": "object", "additionalProperties": False, "properties": {}}
_GATE = {
    "type": "object",
    "description": "The agent's hook input, as the local gate reads it on stdin; "
    "`hitl-vault gate --server` adds `agent_diff`, the diff of a file tool's call made "
    "on the agent's machine (shown as the agent's side computed it).",
}
_GATE_ANSWER = {
    "type": "object",
    "required": ["decision"],
    "properties": {
        "decision": {"type": "string", "enum": ["none", "allow", "deny", "pending"]},
        "reason": {"type": "string"},
    },
}
_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
_AUTH: list[dict[str, list[str]]] = [{"bearer": []}]


def _errors(*codes: int) -> dict[str, Any]:
    json = {"application/json": {"schema": _ERROR}}
    return {str(c): {"description": _WHY[c], "content": json} for c in codes}


# /healthz: this host's role (it does the owner's work, or another host does) and the term;
# ``lease`` says what decides the leader (``lock``: the one-daemon lock, no term).
_HEALTH = {
    "type": "object",
    "required": ["ok", "version", "role", "term", "lease"],
    "properties": {
        "ok": {"type": "boolean"},
        "version": {"type": "string"},
        "role": {"type": "string", "enum": ["leader", "follower"]},
        "term": {"type": ["integer", "null"], "minimum": 0},
        "lease": {"type": "string", "enum": ["database", "lock"]},
    },
}


def _ok(code: int, schema: dict[str, Any], what: str) -> dict[str, Any]:
    return {str(code): {"description": what, "content": {"application/json": {"schema": schema}}}}


def _body(schema: dict[str, Any], required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": schema}}}


# What every route may answer before it is reached (the guard), and with a token.
_ALWAYS = (400, 403, 408, 413, 421, 503)
_TOKEN = (401, 429)


def document(*, gate: bool = False, mcp: bool = False) -> dict[str, Any]:
    """The OpenAPI document; ``gate``, ``mcp``: whether those routes are served."""
    one = {
        "get": {
            "summary": "One request; ?wait=SECONDS (at most 60) holds the answer until its "
            "status changes or the time is up",
            "security": _AUTH,
            "parameters": [
                _ID,
                {
                    "name": "wait",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "number", "minimum": 0, "maximum": 60},
                },
                {
                    "name": "status",
                    "in": "query",
                    "required": False,
                    "description": "With wait: hold only while the request is in this status "
                    "(answered at once if it is in another already); without it, while the "
                    "status is what it was when the wait began.",
                    "schema": {"type": "string", "enum": [s.value for s in Status]},
                },
            ],
            "responses": {
                **_ok(200, _REQUEST, "The request, as show --json prints it."),
                **_errors(*_ALWAYS, *_TOKEN, 404, 422),
            },
        }
    }
    paths: dict[str, Any] = {
        "/healthz": {
            "get": {
                "summary": "Up and answering, and whether this host leads (no credentials)",
                "security": [],
                "responses": {
                    **_ok(200, _HEALTH, "Up."),
                    **_errors(*_ALWAYS),
                },
            }
        },
        "/api/v1/requests": {
            "post": {
                "summary": "Ask for an action (agent tokens); its requester is the token's name",
                "security": _AUTH,
                "requestBody": _body(_SUBMIT),
                "responses": {
                    **_ok(201, _REQUEST, "The new request, as show --json prints it."),
                    **_errors(*_ALWAYS, *_TOKEN, 422),
                },
            },
            "get": {
                "summary": "Requests, newest first (an agent token: its own)",
                "security": _AUTH,
                "parameters": [
                    {
                        "name": "status",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string", "enum": _STATUSES},
                    },
                    {
                        "name": "limit",
                        "in": "query",
                        "required": False,
                        "schema": {
                            "type": "integer",
                            "minimum": 1,
                            "maximum": 1000,
                            "default": 100,
                        },
                    },
                ],
                "responses": {
                    **_ok(200, {"type": "array", "items": _LISTED}, "As list --json prints them."),
                    **_errors(*_ALWAYS, *_TOKEN, 422),
                },
            },
        },
        "/api/v1/requests/{id}": one,
        "/api/v1/requests/{id}/cancel": {
            "post": {
                "summary": "Withdraw a request (an agent token: its own pending ones)",
                "security": _AUTH,
                "parameters": [_ID],
                "requestBody": _body(_EMPTY, required=False),
                "responses": {
                    **_ok(200, _REQUEST, "The request, cancelled."),
                    **_errors(*_ALWAYS, *_TOKEN, 404, 409, 422),
                },
            }
        },
        "/api/v1/requests/{id}/decision": {
            "post": {
                "summary": "Approve or reject (approver tokens): counts as that person's "
                "decision or vote, proven (the history says via api)",
                "security": _AUTH,
                "parameters": [_ID],
                "requestBody": _body(_DECISION),
                "responses": {
                    **_ok(200, _REQUEST, "The request as the decision left it."),
                    **_errors(*_ALWAYS, *_TOKEN, 404, 409, 422),
                },
            }
        },
        "/api/v1/requests/{id}/result": {
            "post": {
                "summary": "How an approved request without an executor ended, once (an "
                "agent token: its own): executed with result, or failed with error",
                "security": _AUTH,
                "parameters": [_ID],
                "requestBody": _body(_RESULT),
                "responses": {
                    **_ok(200, _REQUEST, "The request, executed or failed."),
                    **_errors(*_ALWAYS, *_TOKEN, 404, 409, 422),
                },
            }
        },
    }
    if gate:
        paths["/api/v1/gate"] = {
            "post": {
                "summary": "The agent gate over HTTP (agent tokens): the local gate's rules",
                "security": _AUTH,
                "requestBody": _body(_GATE),
                "responses": {
                    **_ok(200, _GATE_ANSWER, "What the gate says."),
                    **_errors(*_ALWAYS, *_TOKEN, 422),
                },
            }
        }
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "hitl-vault", "version": __version__},
        "paths": paths,
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }
    if mcp:
        doc["info"]["description"] = "MCP over Streamable HTTP is served at /mcp (agent tokens)."
    return doc
