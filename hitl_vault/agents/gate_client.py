"""``hitl-vault gate --server URL``: the agent's hook asks the service, not the vault.

It needs no access to the vault: it sends the hook's input to ``POST /api/v1/gate`` with
the agent's token (``HITL_VAULT_TOKEN``, or ``--token-file``) and tells the agent the
answer in its hook format. It fails closed: a service it cannot reach, that does not
answer in time, or that answers anything but the documented JSON is a deny naming the
problem. A plain ``http://`` URL is refused unless it is this machine (the token would
cross the network in the clear). Imported before every tool call, so it imports only the
standard library's ``http.client`` (and ``ssl`` for ``https``).
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import time
from typing import Any

from .formats import HookFormat
from .hookio import NO_DECISION, Answer, BadInput, Call, Reply, bad_input, read_object

TOKEN_ENV = "HITL_VAULT_TOKEN"
# How long one long-poll asks the service to hold its answer (its limit is 60 s). The
# service holds it until the status changes from what it is when the poll starts, so a
# decision made between the gate's "pending" and its poll is seen at the poll's end:
# the polls start short (FIRST_POLL s) and double up to API_WAIT.
API_WAIT = 16.0
FIRST_POLL = 0.5
MARGIN = 15.0  # seconds the connection may take beyond the service's wait
MAX_ANSWER = 1 << 20  # bytes: an answer longer than this is not the service's
_DECISIONS = ("none", "allow", "deny", "pending")


class ServerError(Exception):
    """The service cannot be asked, or did not answer as documented: the gate denies."""


def check_url(url: str) -> tuple[str, str, int | None, str]:
    """(scheme, host, port, path) of the service's URL; :class:`ServerError` for a URL that
    is not ``https://`` or an ``http://`` one to this machine."""
    from urllib.parse import urlsplit

    from ..client import is_loopback

    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise ServerError(f"--server {url!r} is not a URL ({e})") from None
    host = parts.hostname or ""
    if parts.scheme not in ("http", "https") or not host:
        raise ServerError(f"--server {url!r} is not an http:// or https:// URL")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ServerError(
            f"--server {parts.scheme}://{host}/…: give the service's address only (a token "
            f"goes in ${TOKEN_ENV} or --token-file, never in the URL)"
        )
    if parts.scheme == "http" and not is_loopback(host):
        raise ServerError(
            f"--server {url!r} is plain http:// to another machine, where the token would "
            "cross the network in the clear: use https:// (the service behind a TLS proxy)"
        )
    return parts.scheme, host, port, parts.path.rstrip("/")


def read_token(token_file: str | None) -> str:
    """The agent's token: from ``--token-file`` (a file only its owner may read), else
    ``$HITL_VAULT_TOKEN``; :class:`ServerError` saying how to give one."""
    if token_file is None:
        token = os.environ.get(TOKEN_ENV, "").strip()
        if not token:
            raise ServerError(f"no token: set ${TOKEN_ENV} or give --token-file PATH")
        return _checked_token(token, f"${TOKEN_ENV}")
    try:
        fd = os.open(token_file, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as e:
        raise ServerError(f"--token-file {token_file}: cannot be read ({e.strerror})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ServerError(f"--token-file {token_file}: not a regular file")
        if st.st_mode & 0o077:
            raise ServerError(
                f"--token-file {token_file}: others may read it (mode "
                f"{stat.S_IMODE(st.st_mode):o}); make it private: chmod 600 {token_file}"
            )
        token = os.read(fd, 4096).decode("utf-8", "replace").strip()
    finally:
        os.close(fd)
    if not token:
        raise ServerError(f"--token-file {token_file}: is empty (put the agent's token in it)")
    return _checked_token(token, f"--token-file {token_file}")


def _checked_token(token: str, where: str) -> str:
    """``token`` if it could be one (printable ASCII, no blanks): it goes in a header."""
    if not token.isascii() or not token.isprintable() or " " in token:
        raise ServerError(f"{where}: holds characters a token never has (give it as printed)")
    return token


def run(server: str, token_file: str | None, hook: HookFormat, wait: float, stdin: bytes) -> Reply:
    """(exit code, stdout, stderr) for one hook call asked of the service at ``server``:
    the whole of ``hitl-vault gate --server``."""
    try:
        data = read_object(stdin)
        call = hook.call_of(data)
    except BadInput as e:
        return bad_input(str(e))
    request_ids: list[str] = []
    try:
        service = Service(check_url(server), read_token(token_file))
        asked = {**data, "format": hook.name, **_diff_of(call)}
        answer = decide(service, asked, wait, request_ids)
    except ServerError as e:
        answer = Answer(False, f"hitl-vault could not ask the service, so the call is denied: {e}")
    _mark_handed(call, answer, request_ids)
    return hook.render(answer, call.params)


def continued(
    server: str, hook: HookFormat, wait: float, stdin: bytes, status: int, raw: bytes
) -> Reply:
    """The rest of ``hitl-vault gate --server`` once the service gave its first answer
    (``status``, ``raw``) to the hook call in ``stdin`` (the fast path sent it): the same
    checks and waits as :func:`run`, without asking again."""
    try:
        data = read_object(stdin)
        call = hook.call_of(data)
    except BadInput as e:
        return bad_input(str(e))
    request_ids: list[str] = []
    try:
        service = Service(check_url(server), read_token(None))
        if status == 0:  # not sent, or no HTTP answer: ``raw`` says why
            raise ServerError(raw.decode("utf-8", "replace"))
        first = _checked(service.shown, status, raw, gate=True)
        answer = decide(service, {**data, "format": hook.name}, wait, request_ids, first)
    except ServerError as e:
        answer = Answer(False, f"hitl-vault could not ask the service, so the call is denied: {e}")
    _mark_handed(call, answer, request_ids)
    return hook.render(answer, call.params)


def _mark_handed(call: Call, answer: Answer, request_ids: list[str]) -> None:
    if answer.allow and request_ids:  # handed out: the PostToolUse hook reports its outcome
        from .posttool import client_marks, key_of, mark

        with contextlib.suppress(OSError):  # no mark: the service's deadline closes it
            mark(client_marks(), [call.key, key_of(call, answer.updated)], request_ids[-1])


# The tools a diff is made for (:data:`hitl_vault.agents.diffs.FILE_TOOLS`).
FILE_TOOLS = frozenset({"Edit", "MultiEdit", "Write", "NotebookEdit"})


def _diff_of(call: Call) -> dict[str, str]:
    """``agent_diff``: what a file tool's call will change, read here (the service cannot
    read this machine's files, and shows it as the agent's side computed it)."""
    if call.tool not in FILE_TOOLS:
        return {}  # nothing more imported: an allowed call stays fast
    from .diffs import gate_pitch

    pitch = gate_pitch(call.tool, call.params, call.cwd)
    return {"agent_diff": pitch.diff} if pitch is not None and pitch.diff else {}


def decide(
    service: Service,
    hook_input: dict[str, Any],
    wait: float,
    handed: list[str] | None = None,
    first: dict[str, Any] | None = None,
) -> Answer:
    """The service's answer to the hook call, waiting at most ``wait`` s for a human.

    A "pending" answer names its request: the gate waits on it (``GET
    /api/v1/requests/{id}?wait=``, in polls that start at FIRST_POLL s and double up to
    API_WAIT), then asks again with the identical call, which the service matches to
    that request. ``handed``: where the id of a request handed out to the agent goes;
    ``first``: the service's answer to the first ask, if already made."""
    body = json.dumps(hook_input, ensure_ascii=False).encode("utf-8")
    deadline = time.monotonic() + wait
    poll = FIRST_POLL
    while True:
        data = first if first is not None else service.ask("POST", "/api/v1/gate", body, wait=0.0)
        first = None
        decision, reason = data["decision"], data["reason"]
        given = data.get("request")
        shown = given if isinstance(given, dict) and decision in ("none", "allow") else {}
        if handed is not None and shown.get("status") == "executing":
            handed.append(str(shown.get("id")))  # handed out (record: all, or approved)
        if decision == "none":
            return NO_DECISION
        if decision == "allow":
            return Answer(True, reason, data.get("updated_input"))
        if decision == "deny":
            return Answer(False, reason)
        left = deadline - time.monotonic()
        request = data.get("request")
        request_id = request.get("id") if isinstance(request, dict) else None
        if left < 0.5 or not isinstance(request_id, str) or not request_id.isprintable():
            return Answer(False, reason)
        from urllib.parse import quote

        hold = min(left, poll)
        # Held while pending only: decided before the wait began, it answers at once.
        path = f"/api/v1/requests/{quote(request_id, safe='')}?wait={hold:.1f}&status=pending"
        service.ask("GET", path, None, wait=hold)
        poll = min(poll * 2, API_WAIT)


class Service:
    """The service at a checked URL, asked with one token."""

    def __init__(
        self, target: tuple[str, str, int | None, str], token: str, margin: float = MARGIN
    ) -> None:
        self.scheme, self.host, self.port, self.path = target
        self.token = token
        self.margin = margin  # seconds an answer may take beyond the service's wait
        port = f":{self.port}" if self.port else ""
        self.shown = f"{self.scheme}://{self.host}{port}{self.path}"

    def ask(self, method: str, path: str, body: bytes | None, *, wait: float) -> dict[str, Any]:
        """One request; the answer's JSON object, or :class:`ServerError`. ``wait``: how
        long the service may hold the answer (the timeout is that and a margin)."""
        import http.client

        timeout = wait + self.margin
        if self.scheme == "https":
            connection: http.client.HTTPConnection = http.client.HTTPSConnection(
                self.host, self.port, timeout=timeout
            )
        else:
            connection = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        try:
            connection.request(method, f"{self.path}{path}", body=body, headers=headers)
            response = connection.getresponse()
            raw = response.read(MAX_ANSWER + 1)
        except TimeoutError:
            raise ServerError(f"{self.shown} did not answer within {timeout:g} s") from None
        except (OSError, http.client.HTTPException) as e:
            raise ServerError(f"cannot reach {self.shown} ({type(e).__name__}: {e})") from None
        finally:
            connection.close()
        return _checked(self.shown, response.status, raw, gate=path == "/api/v1/gate")


def _checked(shown: str, status: int, raw: bytes, *, gate: bool) -> dict[str, Any]:
    """The answer's JSON object (``gate``: the gate's, checked field by field) if it is the
    documented one; :class:`ServerError` otherwise."""
    if status != 200:
        meaning = {401: "the token is unknown, revoked or expired",
                   403: "the token may not gate: an agent token is needed"}  # fmt: skip
        why = meaning.get(status) or _error_of(raw)
        raise ServerError(f"{shown} answered HTTP {status}" + (f" ({why})" if why else ""))
    if len(raw) > MAX_ANSWER:
        raise ServerError(f"{shown} answered more than {MAX_ANSWER} bytes")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ServerError(f"{shown} answered something that is not JSON") from None
    if not isinstance(data, dict):
        raise ServerError(f"{shown} answered JSON that is not an object")
    if not gate:
        return data
    if data.get("decision") not in _DECISIONS:
        raise ServerError(f"{shown} answered no decision this gate knows")
    if not isinstance(data.get("reason", ""), str):
        raise ServerError(f"{shown} answered a reason that is not text")
    data.setdefault("reason", "")
    updated = data.get("updated_input")
    if updated is not None and not isinstance(updated, dict):
        raise ServerError(f"{shown} answered an updated_input that is not an object")
    return data


def _error_of(raw: bytes) -> str:
    """The service's own ``error`` text in an error answer, on one short line ("" if none)."""
    try:
        said = json.loads(raw.decode("utf-8")).get("error")
    except (UnicodeDecodeError, ValueError, RecursionError, AttributeError):
        return ""
    if not isinstance(said, str):
        return ""
    line = " ".join("".join(c if c.isprintable() else " " for c in said).split())
    return line if len(line) <= 300 else line[:299] + "…"
