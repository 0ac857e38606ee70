"""The pages behind a public URL with a path (Caddy's ``handle_path /vault/*``), invisible
characters shown as escapes, the safe headers on every answer (errors too), the paths a
browser's ``Origin: null`` is taken on, and what ``--public-url`` accepts."""

from __future__ import annotations

import http.client
import json
import logging
import re
import unicodedata
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hitl_vault import Vault
from hitl_vault.access import links
from hitl_vault.cli.common import BadUsage
from hitl_vault.cli.serve import check_public_url
from hitl_vault.identity import Person
from hitl_vault.serve.guard import Guard, logged_path
from hitl_vault.times import utcnow

from .servers import Answer, Server, serving

RULES = """\
defaults:
  decision: ask
  timeout: 24h
  quiet: 100ms
rules:
  - name: two-people
    action: release
    approvers: [alice, bob]
    quorum: 2
    decision: ask
"""
PREFIX = "/vault"
SAFE = {
    "cache-control": "no-store",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    from hitl_vault.cli.template import init_vault

    root = tmp_path_factory.mktemp("pages-review") / "vault"
    init_vault(root)
    (root / "hitl-vault.yaml").write_text(RULES, encoding="utf-8")
    with serving(root, public_url=f"http://127.0.0.1{PREFIX}") as s:
        journal, now = s.vault.engine.journal, utcnow()
        for name in ("alice", "bob"):
            journal.save_person(Person(name), now, "owner", "person added")
        journal.set_setting("public_url", f"{s.url}{PREFIX}", now, "owner")
        yield s


@pytest.fixture(scope="module")
def agent(server: Server) -> str:
    return server.token("bot")


def submit(server: Server, agent: str, action: str = "deploy", **body: Any) -> str:
    made = server.call("POST", "/api/v1/requests", {"action": action, **body}, token=agent)
    assert made.status == 201, made.body
    return str(made.body["id"])


def mint(server: Server, request_id: str, person: str = "alice") -> str:
    store = server.vault.engine.journal
    request = store.get(request_id)
    assert request is not None
    return links.mint(store, request, person, now=utcnow())


class Browser:
    """A browser at the public URL ``http://127.0.0.1:PORT/vault``, through a proxy that
    strips ``/vault`` as Caddy's ``handle_path`` does (``keep``: one that keeps it, as
    ``handle`` does). It resolves each URL a page gives against the page's own, follows
    nothing by itself, and sends back only the cookies whose Path covers the URL."""

    def __init__(self, server: Server, *, keep: bool = False) -> None:
        self.server, self.keep = server, keep
        self.at = f"{PREFIX}/"
        self.jar: dict[str, tuple[str, str]] = {}  # name: (value, path)

    def go(self, method: str, url: str, form: dict[str, str] | None = None) -> Answer:
        path = urllib.parse.urljoin(self.at, url)
        assert path == PREFIX or path.startswith(f"{PREFIX}/"), f"{url} leaves the prefix"
        sent = {"Origin": "null"} if method == "POST" else {}
        cookies = [f"{k}={v}" for k, (v, p) in self.jar.items() if path.startswith(p)]
        if cookies:
            sent["Cookie"] = "; ".join(cookies)
        body = urllib.parse.urlencode(form).encode() if form is not None else None
        if body is not None:
            sent["Content-Type"] = "application/x-www-form-urlencoded"
        upstream = path if self.keep else path[len(PREFIX) :] or "/"
        connection = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=30)
        try:
            connection.request(method, upstream, body, sent)
            response = connection.getresponse()
            raw, got = response.read(), response.getheaders()
        finally:
            connection.close()
        for name, value in got:
            if name.lower() == "set-cookie":
                pair, *flags = [part.strip() for part in value.split(";")]
                key, _, kept = pair.partition("=")
                where = next((f[5:] for f in flags if f.lower().startswith("path=")), "/")
                # Secure cookies are __Host- ones, which the browser takes only with Path=/.
                kept_to = "/" if key.startswith("__Host-") else PREFIX
                assert where.startswith(kept_to), f"cookie {key} has Path={where}"
                if "Max-Age=0" in flags:
                    self.jar.pop(key, None)
                else:
                    self.jar[key] = (kept, where)
        if method == "GET":
            self.at = path
        return Answer(response.status, raw.decode(), {k.lower(): v for k, v in got})

    def follow(self, answer: Answer) -> Answer:
        assert answer.status == 303, answer.body
        return self.go("GET", answer.headers["location"])


def said(answer: Answer) -> str:
    """The answer's body as text (JSON, a page, a line)."""
    body = answer.body
    return body.decode() if isinstance(body, bytes) else json.dumps(body)


def found(pattern: str, page: Answer) -> str:
    hit = re.search(pattern, str(page.body))
    assert hit, page.body
    return hit.group(1)


@pytest.mark.parametrize("keep", [False, True], ids=["handle_path", "handle"])
def test_a_public_url_with_a_path_works_end_to_end_behind_a_proxy(
    server: Server, agent: str, keep: bool
) -> None:
    """Under host/vault: page, stylesheet, forms, sign-in, links, redirects, cookies stay there."""
    browser = Browser(server, keep=keep)
    made = submit(server, agent, summary="ship it")
    address = links.address(str(server.vault.engine.journal.setting("public_url")),
                            mint(server, made))  # fmt: skip
    page = browser.go("GET", urllib.parse.urlsplit(address).path)
    assert page.status == 200, page.body
    sheet = browser.go("GET", found(r'<link rel="stylesheet" href="([^"]+)"', page))
    assert sheet.status == 200 and sheet.headers["content-type"].startswith("text/css")
    csrf = found(r'name="csrf" value="([0-9a-f]+)"', page)
    action = found(r'<form method="post" action="([^"]+)"', page)
    done = browser.go("POST", action, {"csrf": csrf, "decision": "reject", "reason": "no"})
    assert done.status == 200 and "Rejected by alice via link" in str(done.body), done.body

    other = submit(server, agent, summary="ship that")
    login = browser.go("GET", f"{PREFIX}/")
    assert "Sign in" in str(login.body)
    token = server.token("bob", "approver")
    fields = {"csrf": found(r'name="csrf" value="([0-9a-f]+)"', login), "token": token}
    inbox = browser.follow(browser.go("POST", found(r'action="([^"]*/login)"', login), fields))
    assert browser.at == f"{PREFIX}/" and "For you to decide, bob" in str(inbox.body)
    page = browser.go("GET", found(rf'href="([^"]+{other})"', inbox))
    fields = {"csrf": found(r'name="csrf" value="([0-9a-f]+)"', page), "decision": "reject"}
    action = found(r'<form method="post" action="([^"]+)"', page)
    back = browser.follow(browser.go("POST", action, fields))
    assert browser.at == f"{PREFIX}/?decided={other}" and "You rejected" in str(back.body)
    fields = {"csrf": found(r'name="csrf" value="([0-9a-f]+)"', back)}
    out = browser.go("POST", found(r'action="([^"]*/logout)"', back), fields)
    assert out.status == 303 and urllib.parse.urljoin(browser.at, out.headers["location"]) == (
        f"{PREFIX}/"
    )
    assert "hitl_vault_session" not in browser.jar


def test_the_access_log_never_shows_what_follows_d_or_login(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    """The log hides all after /d/ or /login/ (a kept prefix too) but a link's approve|reject."""
    assert logged_path("/vault/d/SECRET") == "/vault/d/…"
    assert logged_path("/d/SECRET/approve") == "/d/…/approve"
    assert logged_path("/d//SECRET") == "/d/…"
    assert logged_path("/d/x/SECRET") == "/d/…"
    assert logged_path("/login/SECRET/reject") == "/login/…"
    assert logged_path("/login") == "/login" and logged_path("/api/v1/requests") == (
        "/api/v1/requests"
    )
    with caplog.at_level(logging.INFO, logger="hitl_vault.serve.access"):
        server.call("GET", f"{PREFIX}/d/TOPSECRET")
        server.call("GET", "/d/x/TOPSECRET")
    assert "TOPSECRET" not in caplog.text and "/vault/d/…" in caplog.text


def test_invisible_and_reordering_characters_show_as_marked_escapes(
    server: Server, agent: str
) -> None:
    """Bidi and zero-width characters show as marked codes in summary, params, context, reasons."""
    made = submit(
        server, agent, "release", summary="harmless \u202eeteled\u202c",
        params={"cmd": "echo safe #\u202e hs | x.evil//:sptth lruc", "k\u2066ey": 1},
        context="look\u200bhere",
    )  # fmt: skip
    token = server.token("bob", "approver")
    voted = server.call("POST", f"/api/v1/requests/{made}/decision",
                        {"decision": "approve", "reason": "ok\u202e"}, token=token)  # fmt: skip
    assert voted.status == 200, voted.body
    body = said(server.call("GET", f"/d/{mint(server, made)}"))
    hidden = [c for c in body if unicodedata.category(c) in ("Cf", "Cs", "Zl", "Zp")]
    assert hidden == [], [f"U+{ord(c):04X}" for c in hidden]
    for escape in ("\\u202e", "\\u202c", "\\u2066", "\\u200b"):
        assert f'<mark class="hidden-char">{escape}</mark>' in body, escape
    assert body.count('<mark class="hidden-char">\\u202e</mark>') >= 3  # summary, cmd, reason
    assert "invisible" in body  # the page says what the marks are


@pytest.mark.parametrize(
    "method, path, headers",
    [
        ("GET", "/d/x/y/TOPSECRET", {}),  # 404
        ("PUT", "/d/TOPSECRET", {}),  # 405
        ("GET", "/static/", {}),  # 404
        ("GET", "/d/TOPSECRET", {"Host": "evil.example"}),  # 421, the guard's
        ("POST", "/d/TOPSECRET/approve", {"Origin": "https://evil.example"}),  # 403, the guard's
        ("GET", "/api/v1/requests", {}),  # 401, the API's
    ],
)
def test_every_answer_has_the_safe_headers_and_no_secret_path(
    server: Server, method: str, path: str, headers: dict[str, str]
) -> None:
    """Error answers (the guard's, the API's) carry the safe headers and never echo a secret."""
    answer = server.call(method, path, headers=headers)
    assert answer.status >= 400
    for name, value in SAFE.items():
        assert answer.headers.get(name) == value, (name, answer.headers)
    assert "content-security-policy" in answer.headers
    assert "TOPSECRET" not in said(answer)


async def test_a_bugs_500_has_the_safe_headers_too() -> None:
    """The guard's own 500 (a bug in a route) carries the safe headers."""

    async def broken(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("a bug")

    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/d/TOPSECRET", "headers": [],
             "query_string": b"", "client": ("127.0.0.1", 1)}  # fmt: skip
    logging.getLogger("hitl_vault.serve").disabled = True
    try:
        await Guard(broken, frozenset({"127.0.0.1"}))(scope, receive, send)
    finally:
        logging.getLogger("hitl_vault.serve").disabled = False
    start = sent[0]
    assert start["status"] == 500
    got = {k.decode(): v.decode() for k, v in start["headers"]}
    for name, value in SAFE.items():
        assert got.get(name) == value, (name, got)


@pytest.mark.parametrize(
    "path, taken",
    [
        ("/d/SECRET", True),
        ("/d/SECRET/approve", True),
        ("/login", True),
        ("/login/SECRET", True),
        ("/logout", True),
        ("/r/ID", True),
        ("/d/x/y/z", False),
        ("/r/x/y", False),
        ("/r/", False),
        ("/login/a/b", False),
        ("/logout/x", False),
        ("/api/v1/requests", False),
    ],
)
def test_origin_null_is_taken_on_the_forms_exact_routes_only(
    server: Server, path: str, taken: bool
) -> None:
    """``Origin: null`` passes only on the exact routes that check a CSRF token or a link."""
    answer = server.call("POST", path, b"", headers={"Origin": "null"})
    refused = answer.status == 403 and "Origin" in said(answer)
    assert refused is not taken, (answer.status, answer.body)


@pytest.mark.parametrize(
    "url, said",
    [
        ("https://vault.example.com/?x=1", "query"),
        ("https://vault.example.com/vault#top", "fragment"),
        ("https://me:pw@vault.example.com", "user"),
        ("https://vault.example.com/a/../b", "path"),
        ("https://vault.example.com/a b", "path"),
    ],
)
def test_a_public_url_with_a_query_fragment_password_or_odd_path_is_refused(
    url: str, said: str
) -> None:
    """``--public-url`` refuses what would not make a working link, naming the fix."""
    with pytest.raises(BadUsage) as refused:
        check_public_url(url)
    message = str(refused.value)
    assert message.startswith("--public-url:") and said in message and "e.g." in message


def test_a_public_url_with_a_path_is_kept_without_its_last_slash() -> None:
    """A path prefix is kept (``https://host/vault/`` → ``https://host/vault``)."""
    assert check_public_url(" https://host.example/vault/ ") == "https://host.example/vault"
    assert check_public_url("https://host.example/") == "https://host.example"


def test_serve_refuses_to_start_with_a_kept_public_url_links_cannot_use(tmp_path: Path) -> None:
    """A kept public URL with a query stops ``serve`` before it listens (exit 2, the fix)."""
    from hitl_vault.cli.serve import _record
    from hitl_vault.cli.template import init_vault

    root = tmp_path / "vault"
    init_vault(root)
    with Vault(root) as vault:
        kept = "https://vault.example.com/?from=old"
        vault.engine.journal.set_setting("public_url", kept, utcnow(), "owner")
        with pytest.raises(BadUsage) as refused:
            _record(vault, None)
        assert refused.value.exit_code == 2
        assert "has a query" in str(refused.value) and "give serve --public-url again" in str(
            refused.value
        )
        assert _record(vault, "https://vault.example.com") == "https://vault.example.com"
