"""The web inbox on a real ``serve`` (uvicorn on 127.0.0.1): signing in by a one-time link
or an approver token, the cookies, CSRF, a session's end, the inbox listing what the
person may decide now, and a decision recorded ``via session``."""

from __future__ import annotations

import http.client
import re
import socket
import time
import urllib.parse
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from hitl_vault.access import links, tokens
from hitl_vault.access.people import People
from hitl_vault.access.sessions import Sessions, login_link
from hitl_vault.identity import SESSION, Person, Principal, Role
from hitl_vault.model import Status
from hitl_vault.times import utcnow
from hitl_vault.web import inbox

from .receivers import Receiver
from .servers import Answer, Server, serving

pytestmark = pytest.mark.process

RULES = """\
defaults:
  decision: ask
  timeout: 1h
rules:
  - name: alices
    action: alice_job
    decision: ask
    approvers: [alice]
  - name: bobs
    action: bob_job
    decision: ask
    approvers: [bob]
  - name: erins
    action: erin_job
    decision: ask
    approvers: [erin]
  - name: pairs
    action: pair_job
    decision: ask
    approvers: [alice, bob]
    quorum: 2
    authenticated: true
"""
SESSION_COOKIE = "hitl_vault_session"
SIGN_IN_COOKIE = "hitl_vault_sign_in"
HOST_ONLY = "__Host-"  # a Secure cookie's name begins so


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with Receiver().start() as running:
        yield running


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, receiver: Receiver) -> Iterator[Server]:
    from hitl_vault.cli.template import init_vault

    root = tmp_path_factory.mktemp("inbox") / "vault"
    init_vault(root)
    (root / "hitl-vault.yaml").write_text(RULES, encoding="utf-8")
    with serving(root, trusted_proxy="127.0.0.1", read_timeout=0.5) as s:
        journal, now = s.vault.engine.journal, utcnow()
        # dave decides nothing here: his channel hears of his sign-ins only.
        dave = Person("dave", notify=(f"json://127.0.0.1:{receiver.port}/dave",))
        for person in (Person("alice"), Person("bob"), Person("carol"), Person("erin"), dave):
            journal.save_person(person, now, "owner", "person added")
        journal.set_setting("public_url", s.url, now, "owner")
        yield s


@pytest.fixture(scope="module")
def agent(server: Server) -> str:
    return server.token("bot")


class Browser:
    """One browser: it keeps the cookies each answer sets (``set``: the last answer's, by
    name, with their attributes) and sends them back, as a browser on the service's site."""

    def __init__(self, server: Server, headers: dict[str, str] | None = None) -> None:
        self.server = server
        self.headers = headers or {}
        self.jar: dict[str, str] = {}
        self.set: dict[str, list[str]] = {}

    def go(
        self,
        method: str,
        path: str,
        form: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        sent = {**self.headers, **(headers or {})}
        if self.jar:
            sent["Cookie"] = "; ".join(f"{name}={value}" for name, value in self.jar.items())
        body = None
        if form is not None:
            body = urllib.parse.urlencode(form).encode()
            sent["Content-Type"] = "application/x-www-form-urlencoded"
        connection = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=30)
        try:
            connection.request(method, path, body, sent)
            response = connection.getresponse()
            raw, got = response.read(), response.getheaders()
        finally:
            connection.close()
        self.set = {}
        for name, value in got:
            if name.lower() != "set-cookie":
                continue
            pair, *flags = [part.strip() for part in value.split(";")]
            key, _, kept = pair.partition("=")
            self.set[key] = flags
            if "Max-Age=0" in flags:
                self.jar.pop(key, None)
            else:
                self.jar[key] = kept
        return Answer(response.status, raw.decode(), {k.lower(): v for k, v in got})

    @property
    def session(self) -> str | None:
        return self.jar.get(SESSION_COOKIE) or self.jar.get(HOST_ONLY + SESSION_COOKIE)


def submit(server: Server, agent: str, action: str, summary: str = "", **params: Any) -> str:
    body = {"action": action, "params": params, "summary": summary}
    made = server.call("POST", "/api/v1/requests", body, token=agent)
    assert made.status == 201, made.body
    return str(made.body["id"])


def csrf(page: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
    assert found, page
    return found.group(1)


def signed_in(server: Server, name: str, **headers: str) -> Browser:
    """A browser signed in as ``name`` through the sign-in form with an approver token."""
    browser = Browser(server, headers)
    form = browser.go("GET", "/")
    token = server.token(name, "approver")
    answer = browser.go("POST", "/login", {"csrf": csrf(form.body), "token": token})
    assert answer.status == 303 and answer.headers["location"] == "/", answer.body
    assert browser.session
    return browser


def test_a_sign_in_link_signs_in_once_then_never_again(server: Server, receiver: Receiver) -> None:
    """GET /login/SECRET asks and changes nothing; its button (a POST with the page's CSRF
    token) sets the session cookie (HttpOnly, SameSite=Strict, Path=/) and goes on to /; the
    link again, or one made over 10 minutes ago, is refused and sets no session cookie."""
    journal = server.vault.engine.journal
    _, address = login_link(journal, "dave", now=utcnow(), by="owner")
    path = urllib.parse.urlsplit(address).path
    scanner, phone = Browser(server), Browser(server)
    for browser in (scanner, phone):  # a mail scanner's fetch, then the person's
        asked = browser.go("GET", path)
        assert asked.status == 200 and browser.session is None
        assert "Sign in as dave" in asked.body and f'action="{path}"' in asked.body
        assert {"HttpOnly", "Path=/", "SameSite=strict"} <= set(browser.set[SIGN_IN_COOKIE])
    signed = phone.go("POST", path, {"csrf": csrf(asked.body)}, {"Origin": "null"})
    assert signed.status == 303 and signed.headers["location"] == "/"
    flags = set(phone.set[SESSION_COOKIE])
    assert {"HttpOnly", "Path=/", "SameSite=strict", "Max-Age=43200"} <= flags
    assert "Secure" not in flags  # plain http, no https public URL
    inbox = phone.go("GET", "/").body
    assert "For you to decide, dave" in inbox and "Nothing waits for you now" in inbox
    for method in ("GET", "POST"):
        again = Browser(server).go(method, path, {} if method == "POST" else None)
        assert again.status == 410 and "used already" in again.body
    _, stale = login_link(journal, "dave", now=utcnow() - timedelta(minutes=10), by="owner")
    late = Browser(server).go("GET", urllib.parse.urlsplit(stale).path)
    assert late.status == 410 and "expired" in late.body
    made = [e for e in journal.service_log(limit=10) if e.event == "signed in"]
    assert made[0].subject == "dave" and "with sign-in link" in made[0].details
    told = receiver.wait_for(1, "/dave")
    assert "signed in" in told[-1].message and str(phone.session) not in told[-1].message
    assert path.rsplit("/", 1)[1] not in repr(journal.service_log())


def test_an_approver_token_signs_in_and_an_agent_token_does_not(server: Server, agent: str) -> None:
    """POST /login: an approver's token → 303 to / with a cookie (Secure over https through
    the trusted proxy, or when the public URL is https); an agent's or a wrong one: none;
    nor a form that did not come from this browser's sign-in page."""
    proxied = signed_in(server, "bob", **{"X-Forwarded-Proto": "https"})
    assert {"Secure", "Path=/"} <= set(proxied.set[HOST_ONLY + SESSION_COOKIE])
    journal = server.vault.engine.journal
    journal.set_setting("public_url", "https://vault.example.com", utcnow(), "owner")
    try:
        assert "Secure" in signed_in(server, "bob").set[HOST_ONLY + SESSION_COOKIE]
    finally:
        journal.set_setting("public_url", server.url, utcnow(), "owner")
    bob = server.token("bob", "approver")
    for token, status, said in ((agent, 403, "agent"), ("hv_0_" + "x" * 43, 401, "nobody")):
        browser = Browser(server)
        form = csrf(browser.go("GET", "/").body)
        refused = browser.go("POST", "/login", {"csrf": form, "token": token})
        assert refused.status == status and said in refused.body and browser.session is None
    forged = Browser(server)  # another site's form: no sign-in cookie, or another's token
    assert forged.go("POST", "/login", {"token": bob}).status == 403
    other = csrf(Browser(server).go("GET", "/").body)
    assert forged.go("POST", "/login", {"csrf": other, "token": bob}).status == 403
    assert forged.session is None


def test_failed_sign_ins_from_one_address_are_refused_for_a_while(server: Server) -> None:
    """After 10 failed sign-ins from an address, its next ones get 429 (links too)."""
    guesser = Browser(server, {"X-Forwarded-For": "10.9.9.9"})
    form = csrf(guesser.go("GET", "/").body)
    statuses = [
        guesser.go("POST", "/login", {"csrf": form, "token": "hv_nope"}).status for _ in range(11)
    ]
    assert statuses[:10] == [401] * 10 and statuses[10] == 429
    link = guesser.go("GET", "/login/" + "A" * 43)
    assert link.status == 429 and link.headers["retry-after"]


def test_a_decision_in_a_session_is_via_session_and_needs_the_pages_csrf(
    server: Server, agent: str
) -> None:
    """POST /r/ID with the page's CSRF token decides as the person via session; without it,
    or with another page's, nothing changes; a foreign Origin is refused."""
    made = submit(server, agent, "alice_job", n=1)
    alice = signed_in(server, "alice")
    shown = alice.go("GET", f"/r/{made}")
    assert shown.status == 200 and "<pre>1</pre>" in shown.body
    assert f'action="/r/{made}"' in shown.body
    for token in ("", "0" * 64, csrf(alice.go("GET", "/").body)):
        forged = alice.go("POST", f"/r/{made}", {"csrf": token, "decision": "approve"})
        assert forged.status == 409, forged.status
    foreign = alice.go(
        "POST", f"/r/{made}", {"csrf": csrf(shown.body), "decision": "approve"},
        {"Origin": "https://evil.example"},
    )  # fmt: skip
    assert foreign.status == 403
    assert server.vault.engine.journal.status_of(made) is Status.PENDING
    form = {"csrf": csrf(shown.body), "decision": "approve", "reason": "fine"}
    done = alice.go("POST", f"/r/{made}", form, {"Origin": "null"})  # as a no-referrer page
    assert done.status == 303 and done.headers["location"] == f"/?decided={made}"
    step = server.vault.engine.journal.get(made).history[-1]  # type: ignore[union-attr]
    assert (step.to_status, step.by, step.details[-1]) == (Status.APPROVED, "alice", "via session")
    after = alice.go("GET", done.headers["location"]).body
    assert "You approved" in after and made in after
    assert alice.go("POST", f"/r/{made}", form).status == 409


def test_the_inbox_lists_what_the_person_may_decide_now_newest_first(
    server: Server, agent: str
) -> None:
    """alice sees her own requests and the pair's, not bob's, each summary as text; once she
    has voted, the pair's leaves her inbox and stays in bob's."""
    mine = submit(server, agent, "alice_job", "<script>alert(1)</script>", n=2)
    pair = submit(server, agent, "pair_job", n=3)
    bobs = submit(server, agent, "bob_job", n=4)
    alice, bob = signed_in(server, "alice"), signed_in(server, "bob")
    listed = alice.go("GET", "/").body
    assert pair in listed and mine in listed and bobs not in listed
    assert listed.index(pair) < listed.index(mine)  # newest first
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in listed and "<script>" not in listed
    page = alice.go("GET", f"/r/{pair}").body
    form = {"csrf": csrf(page), "decision": "approve", "reason": ""}
    assert alice.go("POST", f"/r/{pair}", form).status == 303
    assert server.vault.engine.journal.status_of(pair) is Status.PENDING  # a vote of two
    assert pair not in alice.go("GET", "/").body
    for_bob = bob.go("GET", "/").body
    assert pair in for_bob and bobs in for_bob and mine not in for_bob


def test_the_inbox_looks_at_every_pending_request_and_says_how_many_more_wait(
    server: Server, agent: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Others' newer requests hide none of erin's; past the cap, the page says how many more."""
    monkeypatch.setattr(inbox, "SHOWN_MOST", 2)
    old = submit(server, agent, "erin_job", n=1)
    for n in range(3):  # newer than erin's, more than the page shows: bob's
        submit(server, agent, "bob_job", n=n)
    erin = signed_in(server, "erin")
    listed = erin.go("GET", "/").body
    assert old in listed and 'id="more"' not in listed
    newer = [submit(server, agent, "erin_job", n=n) for n in (2, 3)]
    listed = erin.go("GET", "/").body
    assert all(made in listed for made in newer) and old not in listed
    assert "1 more, older, wait for you" in listed


def test_a_channel_that_hangs_holds_no_sign_in(server: Server) -> None:
    """Signing in does not wait on the person's channel: a receiver that never answers."""
    hang = socket.socket()
    hang.bind(("127.0.0.1", 0))
    hang.listen(8)
    hang.settimeout(10)
    try:
        gina = Person("gina", notify=(f"json://127.0.0.1:{hang.getsockname()[1]}/x",))
        server.vault.engine.journal.save_person(gina, utcnow(), "owner", "person added")
        started = time.monotonic()
        browser = signed_in(server, "gina")
        assert time.monotonic() - started < 2 and browser.session
        accepted, _ = hang.accept()  # the notice is on its way, off the service's threads
        accepted.close()  # and fails: logged, not retried
    finally:
        hang.close()


def test_a_sign_in_cookie_planted_by_another_host_signs_nobody_in(server: Server) -> None:
    """Secure, the sign-in form's cookie is __Host- (Path=/); one of the plain name, which a
    sibling host or a plain-http page could plant, does not make another's form good."""
    journal = server.vault.engine.journal
    journal.set_setting("public_url", "https://vault.example.com", utcnow(), "owner")
    try:
        attacker = Browser(server)
        page = attacker.go("GET", "/")
        flags = set(attacker.set[HOST_ONLY + SIGN_IN_COOKIE])
        assert {"Secure", "Path=/", "HttpOnly", "SameSite=strict"} <= flags
        nonce, form = attacker.jar[HOST_ONLY + SIGN_IN_COOKIE], csrf(page.body)
        victim = Browser(server)
        victim.jar[SIGN_IN_COOKIE] = nonce  # tossed in by a sibling host (Domain=.example.com)
        token = server.token("bob", "approver")
        tossed = victim.go("POST", "/login", {"csrf": form, "token": token}, {"Origin": "null"})
        assert tossed.status == 403 and victim.session is None
        own = attacker.go("POST", "/login", {"csrf": form, "token": token})
        assert own.status == 303 and attacker.session  # the page's own browser signs in
    finally:
        journal.set_setting("public_url", server.url, utcnow(), "owner")


def test_a_session_ends_after_twelve_hours_at_sign_out_and_when_disabled(
    server: Server, agent: str
) -> None:
    """A session made 12 hours ago, one signed out (with its CSRF token) and one of a person
    disabled since all land on the sign-in page, and their cookie is cleared; the disabled
    person's decision link made before is refused too."""
    journal = server.vault.engine.journal
    then = utcnow() - timedelta(hours=12, seconds=1)
    journal.save_person(Person("frank"), then, "owner", "person added")  # 12 hours ago
    credential, _ = tokens.mint(journal, "frank", Role.APPROVER, now=then, by="owner")
    frank = Principal("frank", Role.APPROVER, SESSION, credential.id, client="127.0.0.1")
    old = Sessions(journal).with_token(frank, then)
    stale = Browser(server)
    stale.jar[SESSION_COOKIE] = old.secret
    assert "Sign in" in stale.go("GET", "/").body and stale.session is None
    browser = signed_in(server, "carol")
    inbox = browser.go("GET", "/").body
    assert browser.go("POST", "/logout", {"csrf": "0" * 64}).status == 403
    assert "For you to decide" in browser.go("GET", "/").body
    kept = str(browser.session)
    out = browser.go("POST", "/logout", {"csrf": csrf(inbox)})
    assert out.status == 303 and browser.session is None
    browser.jar[SESSION_COOKIE] = kept  # the old cookie, kept: it ended with the session
    assert "Sign in" in browser.go("GET", "/").body
    assert "signed out" in journal.service_log()[0].details
    phone = signed_in(server, "carol")
    request = journal.get(submit(server, agent, "alice_job", n=5))
    assert request is not None
    link = links.mint(journal, request, "carol", now=utcnow())
    People(journal, by="owner").disable("carol", now=utcnow())
    with pytest.raises(links.LinkError) as refused_link:
        links.check(journal, link, now=utcnow())
    assert refused_link.value.problem is links.LinkProblem.PERSON_DISABLED
    kept = str(phone.session)
    assert "Sign in" in phone.go("GET", "/").body and phone.session is None
    phone.jar[SESSION_COOKIE] = kept
    assert phone.go("GET", "/r/anything").status == 401
