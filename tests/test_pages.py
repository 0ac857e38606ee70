"""The decision page a signed link opens, over a real uvicorn on 127.0.0.1: what it shows
(escaped), its headers, that a GET changes nothing, the form's CSRF check, a decision
recorded ``by NAME via link`` through the API's path (quorum, ``authenticated:``), each
refusal (a 4xx page, nothing changed), the one-tap endpoints, and the attempt limit."""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from hitl_vault.access import links
from hitl_vault.identity import Person
from hitl_vault.model import Kind, Status
from hitl_vault.times import utcnow

from .helpers import eventually
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
  - name: proven-only
    action: guarded
    approvers: [alice]
    authenticated: true
    decision: ask
  - name: links-count
    action: linked
    approvers: [alice]
    authenticated: [link]
    decision: ask
  - name: say-why
    action: explain
    require_reason: reject
    decision: ask
"""
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
ELSEWHERE = {"X-Forwarded-For": "10.9.9.9"}  # the attempt limit's test, on its own address


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("pages") / "vault"
    from hitl_vault.cli.template import init_vault

    init_vault(root)
    (root / "hitl-vault.yaml").write_text(RULES, encoding="utf-8")
    with serving(root, trusted_proxy="127.0.0.1") as s:
        for name in ("alice", "bob", "dora"):
            s.vault.engine.journal.save_person(Person(name), utcnow(), "test", "person added")
        yield s


@pytest.fixture(scope="module")
def agent(server: Server) -> str:
    return server.token("bot")


def submit(server: Server, agent: str, action: str = "deploy", **body: Any) -> str:
    answer = server.call("POST", "/api/v1/requests", {"action": action, **body}, token=agent)
    assert answer.status == 201, answer.body
    return str(answer.body["id"])


def link(server: Server, request_id: str, person: str = "alice") -> str:
    store = server.vault.engine.journal
    request = store.get(request_id)
    assert request is not None
    return links.mint(store, request, person, now=utcnow())


def text(answer: Answer) -> str:
    body = answer.body
    return body.decode() if isinstance(body, bytes) else str(body)


def csrf_of(page: Answer) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', text(page))
    assert found, text(page)
    return found.group(1)


def post_form(server: Server, secret: str, **fields: str) -> Answer:
    from urllib.parse import urlencode

    return server.call("POST", f"/d/{secret}", urlencode(fields).encode(), headers=FORM)


def decide(server: Server, secret: str, decision: str = "approve", reason: str = "") -> Answer:
    page = server.call("GET", f"/d/{secret}")
    assert page.status == 200, text(page)
    return post_form(server, secret, csrf=csrf_of(page), decision=decision, reason=reason)


def note_text(server: Server, request_id: str) -> str:
    """The request's note as the daemon has written it by now."""
    path = server.vault.engine.get(request_id).path
    return path.read_text(encoding="utf-8") if path is not None and path.exists() else ""


def history(server: Server, request_id: str) -> list[Any]:
    request = server.vault.engine.journal.get(request_id)
    assert request is not None
    return list(request.history)


def test_the_page_shows_the_request_escaped_with_safe_headers_and_changes_nothing(
    server: Server, agent: str
) -> None:
    """GET shows the summary, action, params exactly, context, votes and expiry, every
    submitter's text escaped (no script, no image handler), with the safe headers and no
    inline script or style; it records nothing and spends nothing."""
    made = submit(
        server, agent, "deploy", summary="<script>alert(1)</script> ship",
        params={"target": "<img src=x onerror=alert(2)>", "n": 3},
        context="why: <b>because</b>",
    )  # fmt: skip
    secret = link(server, made)
    before = history(server, made)
    page = server.call("GET", f"/d/{secret}?choice=reject")
    body = text(page)
    assert page.status == 200
    assert page.headers["content-security-policy"] == (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    )
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["referrer-policy"] == "no-referrer"
    assert page.headers["cache-control"] == "no-store"
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in body
    assert "&lt;script&gt;alert(1)&lt;/script&gt; ship" in body
    assert "&lt;img src=x onerror=alert(2)&gt;" in body and "<img" not in body
    assert "<script" not in body and "style=" not in body
    assert not re.search(r"<[^>]*\son\w+=", body)  # no element carries an event handler
    assert "why: &lt;b&gt;because&lt;/b&gt;" in body
    assert "<dt>n</dt>" in body and "<pre>3</pre>" in body
    assert "0 of 1 approvals" in body and "Expires: " in body and "as alice" in body
    assert 'class="reject chosen"' in body and 'class="approve"' in body  # ?choice=reject
    for field in ('name="decision" value="approve"', 'name="decision" value="reject"',
                  'name="reason"', 'name="csrf"'):  # fmt: skip
        assert field in body
    assert server.call("GET", f"/d/{secret}").status == 200  # a scanner's second fetch too
    assert history(server, made) == before
    assert server.vault.engine.journal.link_spent(links.check(
        server.vault.engine.journal, secret, now=utcnow()).spent_as) is False  # fmt: skip
    css = server.call("GET", "/static/app.css")
    assert css.status == 200 and css.headers["content-type"].startswith("text/css")
    assert css.headers["x-frame-options"] == "DENY"
    assert server.call("GET", "/static/nothing.css").status == 404


def test_a_summary_claiming_a_channel_is_marked_as_someones_text(
    server: Server, agent: str
) -> None:
    """A summary or context that says "approved by alice via api" is marked on the page, as
    notes mark it: only the votes the page lists from the journal are records."""
    made = submit(
        server, agent, "deploy", summary="ship it (approved by alice via api)",
        context="already approved by bob via socket", params={"n": 1},
    )  # fmt: skip
    body = text(server.call("GET", f"/d/{link(server, made)}"))
    assert "approved by alice via api (not a record: someone&#39;s text)" in body
    assert "approved by bob via socket (not a record: someone&#39;s text)" in body


def test_a_link_decides_once_as_its_person_via_link(
    server: Server, agent: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The form approves as alice: the journal and the note say ``by alice via link``; the
    same link again (form or one tap) is refused 410 and changes nothing; the access log
    never shows the link's secret."""
    made = submit(server, agent, "deploy", params={"v": 1})
    secret = link(server, made)
    with caplog.at_level(logging.INFO, logger="hitl_vault.serve.access"):
        token = csrf_of(server.call("GET", f"/d/{secret}"))
        done = post_form(server, secret, csrf=token, decision="approve", reason="looks right")
        steps = len(history(server, made))
        again = post_form(server, secret, csrf=token, decision="approve")
        tapped = server.call("POST", f"/d/{secret}/approve")
    assert done.status == 200 and "Approved by alice via link" in text(done)
    last = history(server, made)[-1]
    assert (last.to_status, last.by, last.details[-1]) == (Status.APPROVED, "alice", "via link")
    eventually(lambda: "by alice via link" in note_text(server, made))
    assert again.status == 410 and "used already" in text(again)
    assert tapped.status == 410 and "used already" in text(tapped)
    assert len(history(server, made)) == steps
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "/d/…" in logged and secret not in logged and secret[:40] not in logged


def test_an_approval_right_after_an_edit_in_the_note_is_refused(server: Server, agent: str) -> None:
    """Params edited in the note just before the form's approval (whether or not the daemon
    has read the note yet): refused 409 as changed, and nothing is decided."""
    made = submit(server, agent, params={"env": "prod"})
    secret = link(server, made)
    eventually(lambda: "env: prod" in note_text(server, made))
    token = csrf_of(server.call("GET", f"/d/{secret}"))
    note = server.vault.engine.get(made).path
    assert note is not None
    note.write_text(note_text(server, made).replace("env: prod", "env: dev"), encoding="utf-8")
    refused = post_form(server, secret, csrf=token, decision="approve")
    assert refused.status == 409 and links.PARAMS_CHANGED in text(refused)  # the page's words
    assert server.vault.engine.journal.status_of(made) is Status.PENDING
    assert not [t for t in history(server, made) if t.to_status is not Status.PENDING]


def test_the_form_needs_its_csrf_token(server: Server, agent: str) -> None:
    """A POST without the page's CSRF token, or with another link's, is refused 403 and
    changes nothing."""
    made = submit(server, agent)
    secret = link(server, made)
    other = csrf_of(server.call("GET", f"/d/{link(server, submit(server, agent))}"))
    for token in ("", "0" * 64, other):
        refused = post_form(server, secret, csrf=token, decision="approve")
        assert refused.status == 403 and "did not come from the decision page" in text(refused)
    assert server.vault.engine.journal.status_of(made) is Status.PENDING
    assert len(history(server, made)) == 1


def test_a_required_reason_is_asked_for_and_then_the_rejection_stands(
    server: Server, agent: str
) -> None:
    """Under require_reason: reject, a rejection without one shows the form again (403,
    saying why, nothing spent); with a reason it is rejected by alice via link."""
    made = submit(server, agent, "explain")
    secret = link(server, made)
    page = server.call("GET", f"/d/{secret}")
    assert "Reason (required to reject)" in text(page)
    bare = post_form(server, secret, csrf=csrf_of(page), decision="reject", reason="  ")
    assert bare.status == 403 and "needs a reason" in text(bare)
    assert 'name="decision" value="reject"' in text(bare)
    assert server.vault.engine.journal.status_of(made) is Status.PENDING
    done = post_form(server, secret, csrf=csrf_of(page), decision="reject", reason="not now")
    assert done.status == 200 and "Rejected by alice via link" in text(done)
    last = history(server, made)[-1]
    assert (last.to_status, last.reason, last.details[-1]) == (
        Status.REJECTED, "not now", "via link",
    )  # fmt: skip


def test_each_refused_link_gets_a_clear_page_and_changes_nothing(
    server: Server, agent: str
) -> None:
    """Decided since (409), params edited since (409), a disabled person (403), ended (410),
    expired (410), not ours (404): the page says why, and the request stays as it was."""
    store = server.vault.engine.journal
    decided = submit(server, agent)
    decided_link = link(server, decided)
    server.vault.reject(decided, by="bob", reason="no")
    edited = submit(server, agent, params={"env": "prod"})
    edited_link = link(server, edited)
    eventually(lambda: "env: prod" in note_text(server, edited))
    note = server.vault.engine.get(edited).path
    assert note is not None  # edited in the note, as a person does
    note.write_text(note_text(server, edited).replace("env: prod", "env: dev"), encoding="utf-8")
    eventually(lambda: store.get(edited).params == {"env": "dev"})  # type: ignore[union-attr]
    dora = submit(server, agent)
    dora_link = link(server, dora, "dora")
    store.save_person(Person("dora", disabled=True), utcnow(), "test", "person disabled")
    ended = submit(server, agent)
    ended_link = link(server, ended, "bob")
    links.end(store, "bob", now=utcnow(), by="owner")  # his links sent so far, at once
    expired = submit(server, agent)
    request = store.get(expired)
    assert request is not None
    past = utcnow() - timedelta(seconds=1)
    expired_link = links.mint(
        store, replace(request, expires=past), "alice", now=past - timedelta(minutes=1)
    )
    cases = [
        (decided_link, 409, "decided since"),
        (edited_link, 409, "params changed"),
        (dora_link, 403, "may not decide any more"),
        (ended_link, 410, "this link was ended"),
        (expired_link, 410, "expired"),
        (decided_link[:-3] + "AAA", 404, "not a decision link"),
    ]
    for secret, status, said in cases:
        for method, path in (("GET", f"/d/{secret}"), ("POST", f"/d/{secret}/approve")):
            answer = server.call(method, path)
            assert (answer.status, said in text(answer)) == (status, True), (
                said,
                text(answer)[-600:],
            )
        assert "Nothing was changed." in text(server.call("GET", f"/d/{secret}"))
    for pending in (edited, dora, ended):
        assert store.status_of(pending) is Status.PENDING
    fresh = text(server.call("GET", f"/d/{link(server, edited)}"))  # a link made since
    assert '<dt>env <span class="badge">edited</span></dt>' in fresh and "Edited since" in fresh
    assert len(history(server, edited)) == 2  # created, edited: no decision


def test_a_link_vote_counts_where_authenticated_lists_link_only(server: Server, agent: str) -> None:
    """Under authenticated: true a link's approval does not count (403, pending, the link
    unspent, the page warns); under authenticated: [link] it approves."""
    guarded = submit(server, agent, "guarded")
    secret = link(server, guarded)
    page = server.call("GET", f"/d/{secret}")
    assert "An approval from this page does not count here" in text(page)
    refused = post_form(server, secret, csrf=csrf_of(page), decision="approve")
    assert refused.status == 403 and "proven through" in text(refused)
    assert server.vault.engine.journal.status_of(guarded) is Status.PENDING
    assert server.call("GET", f"/d/{secret}").status == 200  # not spent
    linked = submit(server, agent, "linked")
    assert decide(server, link(server, linked)).status == 200
    assert server.vault.engine.journal.status_of(linked) is Status.APPROVED


def test_two_people_approve_by_their_links_and_a_racing_tap_decides_once(
    server: Server, agent: str
) -> None:
    """Quorum 2: alice's link is a vote (pending), bob's approves. Two taps of one link at
    the same moment: one decides, the other is refused, one vote recorded."""
    release = submit(server, agent, "release")
    first = server.call("POST", f"/d/{link(server, release)}/approve")
    assert first.status == 200 and "a vote; more are needed" in text(first)
    votes = [t for t in history(server, release) if t.kind is Kind.VOTED]
    assert [(t.by, t.details[-1]) for t in votes] == [("alice", "via link")]
    bob_link = link(server, release, "bob")
    answers: list[int] = []
    start = threading.Barrier(2)

    def tap() -> None:
        start.wait(10)
        answers.append(server.call("POST", f"/d/{bob_link}/approve").status)

    threads = [threading.Thread(target=tap) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(answers)[0] == 200 and sorted(answers)[1] in (409, 410), answers
    assert server.vault.engine.journal.status_of(release) is Status.APPROVED
    voted = [t.by for t in history(server, release) if t.kind is Kind.VOTED]
    assert voted.count("bob") == 1


def test_a_foreign_origin_is_refused_and_a_browsers_null_origin_is_not(
    server: Server, agent: str
) -> None:
    """A POST from a foreign page's Origin is refused (403) before it decides; the page's own
    form, which a browser posts with ``Origin: null`` (the page sends no Referer), decides;
    the API still refuses ``Origin: null``."""
    made = submit(server, agent)
    secret = link(server, made)
    for path in (f"/d/{secret}/approve", f"/d/{secret}"):
        answer = server.call("POST", path, headers={"Origin": "https://evil.example"})
        assert answer.status == 403
    assert server.vault.engine.journal.status_of(made) is Status.PENDING
    token = csrf_of(server.call("GET", f"/d/{secret}"))
    body = f"csrf={token}&decision=reject&reason=no".encode()
    answer = server.call("POST", f"/d/{secret}", body, headers={**FORM, "Origin": "null"})
    assert answer.status == 200 and "Rejected by alice via link" in text(answer)
    api = server.call("GET", "/api/v1/requests", token=agent, headers={"Origin": "null"})
    assert api.status == 403


def test_forged_links_from_one_address_get_it_refused_for_a_while(
    server: Server, agent: str
) -> None:
    """Ten forged links from one address: its next link attempts, a good one too, are 429
    with Retry-After; other addresses are not held up."""
    good = link(server, submit(server, agent))
    forged = good[:-4] + "AAAA"
    statuses = [server.call("GET", f"/d/{forged}", headers=ELSEWHERE).status for _ in range(10)]
    assert statuses == [404] * 10
    held = server.call("GET", f"/d/{good}", headers=ELSEWHERE)
    assert held.status == 429 and int(held.headers["retry-after"]) > 0
    assert "too many failed attempts" in text(held)
    assert server.call("GET", f"/d/{good}").status == 200
