"""The web inbox on a real ``serve`` (uvicorn on 127.0.0.1): signing in by a one-time link
or an approver token, the session cookie, CSRF, a session's end, the inbox listing what
the person may decide now, and a decision recorded ``via session``."""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from hitl_vault.access import links
from hitl_vault.access.people import People
from hitl_vault.access.sessions import Sessions, login_link
from hitl_vault.identity import SESSION, Person, Principal, Role
from hitl_vault.model import Status
from hitl_vault.times import utcnow

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
  - name: pairs
    action: pair_job
    decision: ask
    approvers: [alice, bob]
    quorum: 2
    authenticated: true
"""
COOKIE = "hitl_vault_session"


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with Receiver().start() as running:
        yield running


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, receiver: Receiver) -> Iterator[Server]:
    from hitl_vault.template import init_vault

    root = tmp_path_factory.mktemp("inbox") / "vault"
    init_vault(root)
    (root / "hitl-vault.yaml").write_text(RULES, encoding="utf-8")
    with serving(root, trusted_proxy="127.0.0.1", read_timeout=0.5) as s:
        journal, now = s.vault.engine.journal, utcnow()
        # dave decides nothing here: his channel hears of his sign-ins only.
        dave = Person("dave", notify=(f"json://127.0.0.1:{receiver.port}/dave",))
        for person in (Person("alice"), Person("bob"), Person("carol"), dave):
            journal.save_person(person, now, "owner", "person added")
        journal.set_setting("public_url", s.url, now, "owner")
        yield s


@pytest.fixture(scope="module")
def agent(server: Server) -> str:
    return server.token("bot")


def submit(server: Server, agent: str, action: str, summary: str = "", **params: Any) -> str:
    body = {"action": action, "params": params, "summary": summary}
    made = server.call("POST", "/api/v1/requests", body, token=agent)
    assert made.status == 201, made.body
    return str(made.body["id"])


def html(answer: Answer) -> str:
    assert isinstance(answer.body, bytes), answer.body
    return answer.body.decode()


def cookie_of(answer: Answer) -> tuple[str, list[str]]:
    """The session cookie an answer sets: its value, and its attributes as sent."""
    name_value, *flags = [part.strip() for part in answer.headers["set-cookie"].split(";")]
    name, _, value = name_value.partition("=")
    assert name == COOKIE
    return value, flags


def as_browser(
    server: Server, method: str, path: str, cookie: str | None, form: dict[str, str] | None = None
) -> Answer:
    headers = {"Cookie": f"{COOKIE}={cookie}"} if cookie else {}
    body = None
    if form is not None:
        body = urllib.parse.urlencode(form).encode()
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    return server.call(method, path, body, headers=headers)


def sign_in(server: Server, name: str) -> str:
    """A new session of ``name``'s, through the sign-in form and their approver token."""
    token = server.token(name, "approver")
    answer = as_browser(server, "POST", "/login", None, {"token": token})
    assert answer.status == 303 and answer.headers["location"] == "/"
    return cookie_of(answer)[0]


def csrf(page: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
    assert found, page
    return found.group(1)


def test_a_sign_in_link_signs_in_once_then_never_again(server: Server, receiver: Receiver) -> None:
    """GET /login/SECRET asks and changes nothing; its button (POST) sets the session cookie
    (HttpOnly, SameSite=Strict, Path=/) and goes on to /; the link again, or one made over
    10 minutes ago, is refused and sets no cookie."""
    journal = server.vault.engine.journal
    _, address = login_link(journal, "dave", now=utcnow(), by="owner")
    path = urllib.parse.urlsplit(address).path
    for _ in range(2):  # a mail scanner's fetch, then the person's
        asked = as_browser(server, "GET", path, None)
        assert asked.status == 200 and "set-cookie" not in asked.headers
        assert "Sign in as dave" in html(asked) and f'action="{path}"' in html(asked)
    signed = as_browser(server, "POST", path, None, {})
    assert signed.status == 303 and signed.headers["location"] == "/"
    cookie, flags = cookie_of(signed)
    assert {"HttpOnly", "Path=/", "SameSite=strict", "Max-Age=43200"} <= set(flags)
    assert "Secure" not in flags  # plain http, no https public URL
    inbox = html(as_browser(server, "GET", "/", cookie))
    assert "For you to decide, dave" in inbox and "Nothing waits for you now" in inbox
    for method in ("GET", "POST"):
        again = as_browser(server, method, path, None, {} if method == "POST" else None)
        assert again.status == 410 and "used already" in html(again)
        assert "set-cookie" not in again.headers
    _, stale = login_link(journal, "dave", now=utcnow() - timedelta(minutes=10), by="owner")
    late = as_browser(server, "POST", urllib.parse.urlsplit(stale).path, None, {})
    assert late.status == 410 and "expired" in html(late) and "set-cookie" not in late.headers
    signed_in = [e for e in journal.service_log(limit=10) if e.event == "signed in"]
    assert signed_in[0].subject == "dave" and "with sign-in link" in signed_in[0].details
    told = receiver.wait_for(1, "/dave")
    assert "signed in" in told[-1].message and cookie not in told[-1].message
    assert path.rsplit("/", 1)[1] not in repr(journal.service_log())


def test_an_approver_token_signs_in_and_an_agent_token_does_not(server: Server, agent: str) -> None:
    """POST /login: an approver's token → 303 to / with a cookie (Secure over https through
    the trusted proxy, or when the public URL is https); an agent's or a wrong one: none."""
    bob = server.token("bob", "approver")
    proxied = {"X-Forwarded-Proto": "https", "Content-Type": "application/x-www-form-urlencoded"}
    over_https = server.call("POST", "/login", f"token={bob}".encode(), headers=proxied)
    assert over_https.status == 303 and "Secure" in cookie_of(over_https)[1]
    journal = server.vault.engine.journal
    journal.set_setting("public_url", "https://vault.example.com", utcnow(), "owner")
    try:
        public = as_browser(server, "POST", "/login", None, {"token": bob})
        assert "Secure" in cookie_of(public)[1]
    finally:
        journal.set_setting("public_url", server.url, utcnow(), "owner")
    refused = as_browser(server, "POST", "/login", None, {"token": agent})
    assert refused.status == 403 and "agent" in html(refused)
    wrong = as_browser(server, "POST", "/login", None, {"token": "hv_000000000000_" + "x" * 43})
    assert wrong.status == 401 and "set-cookie" not in refused.headers | wrong.headers
    assert "Sign in" in html(as_browser(server, "GET", "/", None))


def test_failed_sign_ins_from_one_address_are_refused_for_a_while(server: Server) -> None:
    """After 10 failed sign-ins from an address, its next ones get 429 (links too)."""
    guesser = {"X-Forwarded-For": "10.9.9.9", "Content-Type": "application/x-www-form-urlencoded"}
    statuses = [
        server.call("POST", "/login", b"token=hv_nope", headers=guesser).status for _ in range(11)
    ]
    assert statuses[:10] == [401] * 10 and statuses[10] == 429
    link = server.call("GET", "/login/" + "A" * 43, headers={"X-Forwarded-For": "10.9.9.9"})
    assert link.status == 429 and link.headers["retry-after"]


def test_a_decision_in_a_session_is_via_session_and_needs_the_pages_csrf(
    server: Server, agent: str
) -> None:
    """POST /r/ID with the page's CSRF token decides as the person via session; without it,
    or with another page's, nothing changes; a foreign Origin is refused."""
    made = submit(server, agent, "alice_job", n=1)
    cookie = sign_in(server, "alice")
    shown = as_browser(server, "GET", f"/r/{made}", cookie)
    assert shown.status == 200 and "<pre>1</pre>" in html(shown)
    assert 'action="/r/' in html(shown)
    for token in ("", "0" * 64, csrf(html(as_browser(server, "GET", "/", cookie)))):
        forged = as_browser(
            server, "POST", f"/r/{made}", cookie, {"csrf": token, "decision": "approve"}
        )
        assert forged.status == 409, forged.status
    foreign = server.call(
        "POST", f"/r/{made}", b"decision=approve", headers={"Origin": "https://evil.example"}
    )
    assert foreign.status == 403
    assert server.vault.engine.journal.status_of(made) is Status.PENDING
    form = {"csrf": csrf(html(shown)), "decision": "approve", "reason": "fine"}
    done = as_browser(server, "POST", f"/r/{made}", cookie, form)
    assert done.status == 303 and done.headers["location"] == f"/?decided={made}"
    step = server.vault.engine.journal.get(made).history[-1]  # type: ignore[union-attr]
    assert (step.to_status, step.by, step.details[-1]) == (Status.APPROVED, "alice", "via session")
    after = html(as_browser(server, "GET", done.headers["location"], cookie))
    assert "You approved" in after and made in after
    twice = as_browser(server, "POST", f"/r/{made}", cookie, form)
    assert twice.status == 409


def test_the_inbox_lists_what_the_person_may_decide_now_newest_first(
    server: Server, agent: str
) -> None:
    """alice sees her own requests and the pair's, not bob's, each summary as text; once she
    has voted, the pair's leaves her inbox and stays in bob's."""
    mine = submit(server, agent, "alice_job", "<script>alert(1)</script>", n=2)
    pair = submit(server, agent, "pair_job", n=3)
    bobs = submit(server, agent, "bob_job", n=4)
    alice, bob = sign_in(server, "alice"), sign_in(server, "bob")
    listed = html(as_browser(server, "GET", "/", alice))
    assert pair in listed and mine in listed and bobs not in listed
    assert listed.index(pair) < listed.index(mine)  # newest first
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in listed and "<script>" not in listed
    page = html(as_browser(server, "GET", f"/r/{pair}", alice))
    form = {"csrf": csrf(page), "decision": "approve", "reason": ""}
    assert as_browser(server, "POST", f"/r/{pair}", alice, form).status == 303
    assert server.vault.engine.journal.status_of(pair) is Status.PENDING  # a vote of two
    assert pair not in html(as_browser(server, "GET", "/", alice))
    for_bob = html(as_browser(server, "GET", "/", bob))
    assert pair in for_bob and bobs in for_bob and mine not in for_bob


def test_a_session_ends_after_twelve_hours_at_sign_out_and_when_disabled(
    server: Server, agent: str
) -> None:
    """A session made 12 hours ago, one signed out (with its CSRF token) and one of a person
    disabled since all land on the sign-in page, and their cookie is cleared; the disabled
    person's decision link made before is refused too."""
    journal = server.vault.engine.journal
    carol = Principal("carol", Role.APPROVER, SESSION, "000000000000", client="127.0.0.1")
    old = Sessions(journal).with_token(carol, utcnow() - timedelta(hours=12, seconds=1))
    gone = as_browser(server, "GET", "/", old.secret)
    assert "Sign in" in html(gone) and "Max-Age=0" in gone.headers["set-cookie"]
    cookie = sign_in(server, "carol")
    inbox = html(as_browser(server, "GET", "/", cookie))
    refused = as_browser(server, "POST", "/logout", cookie, {"csrf": "0" * 64})
    assert refused.status == 403 and "For you to decide" in html(
        as_browser(server, "GET", "/", cookie)
    )
    out = as_browser(server, "POST", "/logout", cookie, {"csrf": csrf(inbox)})
    assert out.status == 303 and "Max-Age=0" in out.headers["set-cookie"]
    assert "Sign in" in html(as_browser(server, "GET", "/", cookie))
    assert "signed out" in journal.service_log()[0].details
    phone = sign_in(server, "carol")
    request = journal.get(submit(server, agent, "alice_job", n=5))
    assert request is not None
    link = links.mint(journal, request, "carol", now=utcnow())
    People(journal, by="owner").disable("carol", now=utcnow())
    with pytest.raises(links.LinkError) as refused_link:
        links.check(journal, link, now=utcnow())
    assert refused_link.value.problem is links.LinkProblem.PERSON_DISABLED
    assert "Sign in" in html(as_browser(server, "GET", "/", phone))
    assert as_browser(server, "GET", "/r/anything", phone).status == 401
