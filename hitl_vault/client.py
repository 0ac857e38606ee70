"""A client of ``hitl-vault serve`` for scripts: submit, look, wait and decide over HTTP.

``Client(url, token)`` speaks the REST API with the standard library's ``http.client``
only, so an agent's machine needs nothing but this package (and no vault). Each error the
service answers is raised as the hitl-vault error it stands for, with the service's
message: 401 :class:`NotAuthenticatedError`, 403 :class:`ForbiddenError`, 404
:class:`RequestNotFoundError`, 409 :class:`IllegalTransitionError`, 413
:class:`BodyTooLargeError`, 422 :class:`UsageError`, 429 :class:`TooManyAttemptsError`;
anything else, or no answer, :class:`ServiceError`.
"""

from __future__ import annotations

import builtins
import http.client
import ipaddress
import json
import time
import urllib.parse
from typing import Any

from .errors import (
    BodyTooLargeError,
    ForbiddenError,
    IllegalTransitionError,
    NotAuthenticatedError,
    ParamsChangedError,
    RequestNotFoundError,
    ServiceError,
    TooManyAttemptsError,
    UsageError,
    VaultError,
    WaitTimeoutError,
)

API = "/api/v1"
# The longest one long-poll may hold, as the service allows it.
LONGEST_POLL = 60.0


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine: ``localhost`` itself, a 127.0.0.0/8 literal or
    ``::1``. Not ``*.localhost``: glibc asks DNS for those, and DNS may answer anything."""
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def service_url(url: str, argument: str = "url") -> urllib.parse.SplitResult:
    """``url`` checked: http(s) with a host, and plain ``http://`` only to this machine
    (a token sent in clear over a network is a token given away)."""
    parts = urllib.parse.urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(
            argument, f"{url!r} is not an http(s) URL", "give the service's address, e.g. "
            "https://vault.example.com or http://127.0.0.1:8787",
        )  # fmt: skip
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise UsageError(
            argument,
            f"{url!r} would send the token unencrypted to another machine",
            "use https:// (the service behind a TLS proxy), or http:// to this machine only",
        )
    if parts.query or parts.fragment or parts.username or parts.password:
        raise UsageError(
            argument, f"{url!r} has a query, a fragment or a user name",
            "give the service's address alone; the token goes in the token argument",
        )  # fmt: skip
    return parts


def _said(error: VaultError, message: str) -> VaultError:
    """``error`` carrying the service's own message."""
    error.args = (message,)
    return error


class Client:
    """The REST API of ``hitl-vault serve`` at ``url``, with a bearer ``token``.

    Requests are returned as dicts, exactly as ``hitl-vault show --json`` prints them
    (``list`` as ``list --json``). ``timeout``: seconds to wait for any one answer.
    """

    def __init__(self, url: str, token: str, *, timeout: float = 30.0) -> None:
        self._url = service_url(url)
        token = token.strip()
        if not token or not token.isascii() or not token.isprintable() or " " in token:
            raise UsageError(
                "token", "is empty or has spaces or characters a token never has",
                "give the token `hitl-vault token add` printed, as printed",
            )  # fmt: skip
        self._token = token
        self.timeout = timeout

    def __repr__(self) -> str:  # never the token
        return f"Client({self.url!r})"

    @property
    def url(self) -> str:
        """The service's address."""
        return urllib.parse.urlunsplit(self._url)

    # --- the API -----------------------------------------------------------------------

    def submit(
        self,
        action: str,
        params: dict[str, Any] | None = None,
        *,
        summary: str = "",
        context: str | None = None,
        timeout: str | float | None = None,
        reasoning: str | None = None,
        confidence: float | None = None,
        alternatives: list[str] | None = None,
        risk_factors: list[str] | None = None,
    ) -> dict[str, Any]:
        """Ask for ``action``; the new request (``pending``, or what a rule decided).
        ``reasoning``, ``confidence`` (0 to 1), ``alternatives``, ``risk_factors``: the
        requester's case, as :meth:`hitl_vault.Vault.submit` takes it."""
        body: dict[str, Any] = {"action": action, "params": params or {}, "summary": summary}
        given = {"context": context, "timeout": timeout, "reasoning": reasoning,
                 "confidence": confidence, "alternatives": alternatives,
                 "risk_factors": risk_factors}  # fmt: skip
        body |= {key: value for key, value in given.items() if value is not None}
        return self._json("POST", "/requests", body)  # type: ignore[no-any-return]

    def get(self, request_id: str) -> dict[str, Any]:
        """One request, with its history."""
        return self._json("GET", f"/requests/{_quoted(request_id)}")  # type: ignore[no-any-return]

    def wait(self, request_id: str, timeout: float | None = None) -> dict[str, Any]:
        """The request once it is no longer pending; :class:`WaitTimeoutError` if
        ``timeout`` seconds pass first (None: wait as long as it takes)."""
        start = time.monotonic()
        while True:
            left = LONGEST_POLL if timeout is None else timeout - (time.monotonic() - start)
            hold = max(0.0, min(LONGEST_POLL, left))
            # status=pending: back at once once it is not, whenever that happened
            path = f"/requests/{_quoted(request_id)}?wait={hold:.3f}&status=pending"
            request: dict[str, Any] = self._json("GET", path, hold=hold)
            if request.get("status") != "pending":
                return request
            if timeout is not None and time.monotonic() - start >= timeout:
                raise WaitTimeoutError(request_id, timeout)

    def approve(
        self, request_id: str, reason: str = "", expect: str | None = None
    ) -> dict[str, Any]:
        """Approve (or vote for) a pending request with an approver token; ``expect``: the
        params hash ``show`` printed (any other params are refused)."""
        body: dict[str, Any] = {"decision": "approve", "reason": reason}
        if expect is not None:
            body["expect"] = expect
        return self._decide(request_id, body)

    def reject(self, request_id: str, reason: str = "") -> dict[str, Any]:
        """Reject a pending request with an approver token."""
        return self._decide(request_id, {"decision": "reject", "reason": reason})

    def cancel(self, request_id: str) -> dict[str, Any]:
        """Withdraw a request (an agent token: its own pending ones)."""
        path = f"/requests/{_quoted(request_id)}/cancel"
        return self._json("POST", path, {})  # type: ignore[no-any-return]

    def list(self, status: str | None = None, limit: int | None = None) -> builtins.list[Any]:
        """Requests newest first, without their history (an agent token: its own)."""
        query = {k: str(v) for k, v in (("status", status), ("limit", limit)) if v is not None}
        path = "/requests" + (f"?{urllib.parse.urlencode(query)}" if query else "")
        return self._json("GET", path)  # type: ignore[no-any-return]

    def _decide(self, request_id: str, body: dict[str, Any]) -> dict[str, Any]:
        path = f"/requests/{_quoted(request_id)}/decision"
        return self._json("POST", path, body)  # type: ignore[no-any-return]

    # --- the wire ----------------------------------------------------------------------

    def _json(self, method: str, path: str, body: Any = None, *, hold: float = 0.0) -> Any:
        """Send one request; the JSON answer, or the error it stands for."""
        u = self._url
        connection: http.client.HTTPConnection
        kind = http.client.HTTPSConnection if u.scheme == "https" else http.client.HTTPConnection
        connection = kind(u.hostname or "", u.port, timeout=self.timeout + hold)
        headers = {"Authorization": f"Bearer {self._token}", "Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        try:
            connection.request(method, u.path.rstrip("/") + API + path, data, headers)
            response = connection.getresponse()
            status, raw = response.status, response.read()
        except (OSError, http.client.HTTPException) as e:
            raise ServiceError(f"{self.url}: the service could not be reached ({e})") from None
        finally:
            connection.close()
        try:
            answer = json.loads(raw) if raw else None
        except ValueError:
            answer = None
        if 200 <= status < 300 and answer is not None:
            return answer
        raise _error(status, answer, path, self.url)


def _quoted(request_id: str) -> str:
    return urllib.parse.quote(request_id, safe="")


def _error(status: int, answer: Any, path: str, url: str) -> VaultError:
    """The hitl-vault error an error answer stands for, with the service's message."""
    said = answer.get("error") if isinstance(answer, dict) else None
    message = said if isinstance(said, str) else f"{url}: the service answered {status}"
    if status == 401:
        return NotAuthenticatedError()
    if status == 403:
        return ForbiddenError(message)
    if status == 404 and isinstance(answer, dict) and isinstance(answer.get("id"), str):
        return _said(RequestNotFoundError(answer["id"]), message)
    if status == 409 and isinstance(answer, dict) and answer.get("type") == "params_changed":
        return _said(ParamsChangedError(str(answer.get("id", "")), message, ""), message)
    if status == 409 and isinstance(answer, dict):
        current, wanted = str(answer.get("current", "")), str(answer.get("wanted", ""))
        return _said(IllegalTransitionError(str(answer.get("id", "")), current, wanted), message)
    if status == 413:
        return BodyTooLargeError(message)
    if status == 422:
        return _said(UsageError("request", message, ""), message)
    if status == 429:
        return TooManyAttemptsError(message)
    return ServiceError(message, status)
