"""``hitl-vault gate --server`` on its fast path: the hook call sent to this machine's
service over plain HTTP with a socket, before the hook formats or :mod:`http.client` are
imported; a "none" answer (the rules let the call through) is no decision at once, any
other goes on in the full client (:func:`hitl_vault.agents.gate_client.continued`)."""

from __future__ import annotations

import json
import os

from .fastgate import NO_DECISION, Doubt, read_call, seconds, texts


def answer_remote(server: str, fmt: str, wait: str, stdin: bytes) -> tuple[int, str, str] | None:
    """``gate --server`` to this machine's service over plain HTTP, with the token in
    ``$HITL_VAULT_TOKEN``: the reply, or None (nothing sent: the full client decides).
    A "none" answer is no decision at once; any other goes to the full client, which
    carries on from it (:func:`hitl_vault.agents.gate_client.continued`)."""
    host, port, path = _loopback(server)
    token = os.environ.get("HITL_VAULT_TOKEN", "").strip()
    if fmt not in NO_DECISION or not host or not token.isascii() or not token.isprintable():
        return None
    try:
        _, params, _ = read_call(stdin, fmt)
        texts(params)
        data = json.loads(stdin.decode("utf-8"))
        body = json.dumps({**data, "format": fmt}, ensure_ascii=False).encode("utf-8")
    except (Doubt, ValueError, TypeError, RecursionError):
        return None
    if " " in token:
        return None
    request = (
        f"POST {path}/api/v1/gate HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Authorization: Bearer {token}\r\nAccept: application/json\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode("ascii") + body
    status, raw = _exchange(host, port, request)
    if status == 200:
        try:
            said = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            said = None
        if isinstance(said, dict) and said.get("decision") == "none":
            return 0, NO_DECISION[fmt], ""
    from .formats import FORMATS
    from .gate_client import continued

    return continued(server, FORMATS[fmt], seconds(wait), stdin, status, raw)


def _loopback(server: str) -> tuple[str, int, str]:
    """(host, port, path) of ``http://127.0.0.1:PORT[/path]`` or ``http://localhost:…``;
    ("", 0, "") for any other URL (the full client checks and explains those)."""
    if not server.startswith("http://"):
        return "", 0, ""
    address, _, path = server[len("http://") :].partition("/")
    host, _, port = address.rpartition(":")
    fine = host in ("127.0.0.1", "localhost") and port.isdigit() and port.isascii()
    if not fine or "?" in path or "#" in path or "%" in path or " " in path:
        return "", 0, ""
    return host, int(port), ("/" + path).rstrip("/") if path else ""


def _exchange(host: str, port: int, request: bytes) -> tuple[int, bytes]:
    """(HTTP status, body) of one request on its own connection; (0, why) when it could
    not be sent or read (the full client then denies, naming the problem)."""
    import socket

    try:
        with socket.create_connection((host, port), timeout=15) as connection:
            connection.sendall(request)
            chunks = []
            while chunk := connection.recv(65536):
                chunks.append(chunk)
                if sum(map(len, chunks)) > (1 << 20) + 65536:
                    break
    except OSError as e:
        return 0, f"cannot reach http://{host}:{port} ({type(e).__name__}: {e})".encode()
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    words = lines[0].split(b" ") if lines else []
    if len(words) < 2 or not words[1].isdigit():
        return 0, b"an answer that is not HTTP"
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(b":") for h in lines[1:])}
    if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        body = _unchunked(body)
    elif headers.get(b"content-length", b"").isdigit():
        body = body[: int(headers[b"content-length"])]
    return int(words[1]), body


def _unchunked(body: bytes) -> bytes:
    out, rest = [], body
    while rest:
        size, _, rest = rest.partition(b"\r\n")
        n = int(size.split(b";")[0] or b"0", 16)
        if n == 0:
            break
        out.append(rest[:n])
        rest = rest[n + 2 :]
    return b"".join(out)
