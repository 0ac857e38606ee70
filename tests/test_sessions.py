"""Signing in to the web inbox (:mod:`hitl_vault.access.sessions`): one-time sign-in links,
sign-in with an approver token, sessions and their ends, what the service log keeps and
what the person is told; and ``hitl-vault token login``."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from hitl_vault.access import tokens
from hitl_vault.access.people import People
from hitl_vault.access.sessions import Sessions, SignInError, login_link
from hitl_vault.cli.main import cli
from hitl_vault.errors import AccessError, NotAuthenticatedError, UsageError
from hitl_vault.identity import Person, Principal, Role
from hitl_vault.journal.sqlite import Journal
from hitl_vault.model import JOURNAL_FILE, STATE_DIR
from hitl_vault.notify.send import Message
from hitl_vault.testing import MemoryJournal

T0 = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
PUBLIC = "https://vault.example.com"


class Told:
    """What each channel was sent (the sender :class:`Sessions` and ``People`` take); a
    sign-in's notice is sent on a thread of its own: :meth:`wait` for it."""

    def __init__(self, error: str | None = None) -> None:
        self.sent: list[tuple[str, Message]] = []
        self.error = error
        self._more = threading.Condition()

    def __call__(self, url: str, message: Message) -> str | None:
        with self._more:
            self.sent.append((url, message))
            self._more.notify_all()
        return self.error

    def wait(self, count: int) -> list[tuple[str, Message]]:
        with self._more:
            assert self._more.wait_for(lambda: len(self.sent) >= count, timeout=10), self.sent
            return list(self.sent)


def _store(public_url: str | None = PUBLIC) -> MemoryJournal:
    store = MemoryJournal()
    store.save_person(Person("alice", notify=("json://127.0.0.1:9/alice",)), T0, "o", "added")
    store.save_person(Person("bob"), T0, "owner", "person added")
    if public_url:
        store.set_setting("public_url", public_url, T0, "owner")
    return store


def _who(store: MemoryJournal, name: str, role: Role) -> Principal:
    """Who a new token of ``name`` proves to be, as the service's authenticate gives it."""
    credential, _ = tokens.mint(store, name, role, now=T0, by="owner")
    return Principal(name, role, "api", credential.id, client="10.0.0.5")


def _secret(address: str) -> str:
    assert address.startswith(PUBLIC + "/login/")
    return address.rsplit("/", 1)[1]


def test_a_sign_in_link_signs_in_once_within_ten_minutes() -> None:
    """The link opens a session for its person once; again, or after 10 minutes, it is refused."""
    store, told = _store(), Told()
    sessions = Sessions(store, send=told)
    link, address = login_link(store, "ALICE", now=T0, by="owner")
    assert (link.name, link.expires) == ("alice", T0 + 10 * MINUTE)
    signed = sessions.with_link(_secret(address), "10.0.0.5", T0 + 9 * MINUTE)
    assert signed.session.name == "alice" and signed.session.how == "sign-in link"
    assert signed.session.expires == T0 + 9 * MINUTE + timedelta(hours=12)
    assert sessions.find(signed.secret, T0 + 10 * MINUTE) == signed.session
    with pytest.raises(NotAuthenticatedError, match="used already"):
        sessions.with_link(_secret(address), "10.0.0.5", T0 + 9 * MINUTE)
    _, late = login_link(store, "alice", now=T0, by="owner")
    with pytest.raises(NotAuthenticatedError, match="expired at 2026-12-06T09:10:00Z"):
        sessions.with_link(_secret(late), "10.0.0.5", T0 + 10 * MINUTE)
    with pytest.raises(NotAuthenticatedError, match="not one this service made"):
        sessions.with_link("A" * 43, "10.0.0.5", T0)
    with pytest.raises(NotAuthenticatedError, match="not one this service made"):
        sessions.with_link("../../etc", "10.0.0.5", T0)
    events = [(e.event, e.subject, e.by) for e in store.service_log(limit=4)]
    assert events == [
        ("sign-in link made", "alice", "owner"),
        ("signed in", "alice", "alice"),
        ("sign-in link used", "alice", "alice"),
        ("sign-in link made", "alice", "owner"),
    ]
    logged = repr(store.service_log())
    assert _secret(address) not in logged and signed.secret not in logged
    ((url, message),) = told.wait(1)
    assert url == "json://127.0.0.1:9/alice" and "from 10.0.0.5" in message.body
    assert "signed in" in message.body and signed.secret not in message.body


def test_a_link_needs_the_recorded_public_url_and_an_enabled_person() -> None:
    """No public URL: the error names serve --public-url; nobody, or a disabled person: refused,
    and a link made before a disable stays dead once they are enabled again."""
    with pytest.raises(UsageError, match="--public-url"):
        login_link(_store(public_url=None), "alice", now=T0, by="owner")
    store = _store()
    with pytest.raises(AccessError, match="not in people"):
        login_link(store, "carol", now=T0, by="owner")
    _, address = login_link(store, "bob", now=T0, by="owner")
    People(store, by="owner", send=Told()).disable("bob", now=T0 + MINUTE)
    with pytest.raises(AccessError, match="--enable"):
        login_link(store, "bob", now=T0, by="owner")
    with pytest.raises(NotAuthenticatedError, match="bob is disabled"):
        Sessions(store, send=Told()).with_link(_secret(address), "x", T0 + 2 * MINUTE)
    People(store, by="owner", send=Told()).set("bob", enable=True, now=T0 + 3 * MINUTE)
    with pytest.raises(NotAuthenticatedError, match="before bob's entry in people last changed"):
        Sessions(store, send=Told()).with_link(_secret(address), "x", T0 + 4 * MINUTE)
    _, fresh = login_link(store, "bob", now=T0 + 4 * MINUTE, by="owner")
    assert Sessions(store, send=Told()).with_link(_secret(fresh), "x", T0 + 5 * MINUTE)


def test_an_approver_token_signs_in_and_an_agent_token_does_not() -> None:
    """with_token: a person's approver token opens a session; an agent's is refused."""
    store = _store()
    sessions = Sessions(store, send=Told())
    approver = _who(store, "alice", Role.APPROVER)
    signed = sessions.with_token(approver, T0)
    assert signed.session.how == f"token {approver.credential}"
    assert signed.session.client == "10.0.0.5"
    with pytest.raises(NotAuthenticatedError, match="agent"):
        sessions.with_token(_who(store, "deploy-bot", Role.AGENT), T0)
    assert [e.event for e in store.service_log(limit=2)] == ["token added", "signed in"]


def test_a_session_ends_after_twelve_hours_at_sign_out_and_when_disabled() -> None:
    """find: open for 12 hours; sign_out ends it (logged); people disable ends every one."""
    store = _store()
    sessions = Sessions(store, send=Told())
    approver = _who(store, "alice", Role.APPROVER)
    first = sessions.with_token(approver, T0)
    assert sessions.find(first.secret, T0 + timedelta(hours=11, minutes=59)) is not None
    assert sessions.find(first.secret, T0 + timedelta(hours=12)) is None
    second = sessions.with_token(approver, T0)
    assert sessions.sign_out(second.session, T0 + MINUTE) is True
    assert sessions.find(second.secret, T0 + 2 * MINUTE) is None
    assert sessions.sign_out(second.session, T0 + 2 * MINUTE) is False
    assert store.service_log()[0].details[:2] == (f"session {second.session.id}", "signed out")
    phone, laptop = (sessions.with_token(approver, T0) for _ in range(2))
    change = People(store, by="owner", send=Told()).disable("alice", now=T0 + MINUTE)
    assert (change.revoked, change.ended) == (1, 3)  # the first one, the phone, the laptop
    for signed in (first, phone, laptop):
        assert sessions.find(signed.secret, T0 + 2 * MINUTE) is None
    assert [e.event for e in store.service_log(limit=5)] == [
        "session ended",
        "session ended",
        "session ended",
        "token revoked",
        "person disabled",
    ]


def test_a_session_opened_as_its_person_is_disabled_is_refused_and_never_comes_back() -> None:
    """A disable between reading the person and the session's write: refused, nothing kept."""
    store = _store()
    sessions = Sessions(store, send=Told())
    person = store.person("alice")  # with_token and with_link read the person: enabled
    assert person is not None and not person.disabled
    People(store, by="owner", send=Told()).disable("alice", now=T0)  # meanwhile, that second
    with pytest.raises(SignInError, match="alice was disabled"):
        sessions._open(person, "token 000000000000", "10.0.0.5", T0)
    People(store, by="owner", send=Told()).set("alice", enable=True, now=T0)
    assert "signed in" not in [e.event for e in store.service_log()]
    fresh = sessions.with_token(_who(store, "alice", Role.APPROVER), T0 + MINUTE)
    assert sessions.find(fresh.secret, T0 + 2 * MINUTE) == fresh.session


def test_a_change_to_the_persons_entry_ends_the_sessions_opened_before_it() -> None:
    """find refuses a session made before its person's entry last changed (a re-enable too)."""
    store = _store()
    sessions = Sessions(store, send=Told())
    signed = sessions.with_token(_who(store, "bob", Role.APPROVER), T0)
    People(store, by="owner", send=Told()).set("bob", uids=[1001], now=T0 + MINUTE)
    assert sessions.find(signed.secret, T0 + 2 * MINUTE) is None
    assert store.session(signed.session.key).ended is None  # type: ignore[union-attr]


def test_a_session_ends_with_the_token_it_was_opened_with() -> None:
    """Revoking the token signs its sessions out; one never outlives the token's expiry."""
    store = _store()
    sessions = Sessions(store, send=Told())
    approver = _who(store, "alice", Role.APPROVER)
    signed = sessions.with_token(approver, T0)
    other = sessions.with_token(_who(store, "alice", Role.APPROVER), T0)
    assert signed.session.credential == approver.credential
    assert store.session(signed.session.key).credential == approver.credential  # type: ignore[union-attr]
    assert tokens.revoke(store, str(approver.credential), T0 + MINUTE, "owner") == 1
    assert sessions.find(signed.secret, T0 + 2 * MINUTE) is None
    assert sessions.find(other.secret, T0 + 2 * MINUTE) == other.session  # another token's
    with pytest.raises(NotAuthenticatedError, match="revoked or has expired"):
        sessions.with_token(approver, T0 + 2 * MINUTE)
    credential, _ = tokens.mint(
        store, "alice", Role.APPROVER, now=T0, by="owner", expires=timedelta(hours=1)
    )
    short = sessions.with_token(Principal("alice", Role.APPROVER, "api", credential.id), T0)
    assert short.session.expires == T0 + timedelta(hours=1)
    assert sessions.find(short.secret, T0 + 59 * MINUTE) is not None
    assert sessions.find(short.secret, T0 + 60 * MINUTE) is None
    link = sessions.with_link(_secret(login_link(store, "alice", now=T0, by="o")[1]), "x", T0)
    assert link.session.credential == "" and sessions.find(link.secret, T0 + MINUTE)


def test_a_sign_in_is_told_off_the_callers_thread_and_a_failure_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A channel that hangs holds no sign-in; one that fails is logged, its secret masked."""
    store = _store()
    store.save_person(
        Person("carol", notify=("json://user:hunter2@127.0.0.1:9/carol",)), T0, "o", "added"
    )
    release, failed = threading.Event(), Told(error="no answer within 15 s (send timeout)")

    def hanging(url: str, message: Message) -> str | None:
        release.wait(10)
        return failed(url, message)

    sessions = Sessions(store, send=hanging)
    try:
        with caplog.at_level("WARNING", logger="hitl_vault.access.sessions"):
            signed = sessions.with_token(_who(store, "carol", Role.APPROVER), T0)
            assert sessions.find(signed.secret, T0) == signed.session  # not held by the send
            assert failed.sent == []
            release.set()
            failed.wait(1)
            for _ in range(100):  # the warning follows the send, on the same thread
                if caplog.records:
                    break
                threading.Event().wait(0.01)
    finally:
        release.set()
    (record,) = caplog.records
    text = record.getMessage()
    assert "could not tell carol of their sign-in" in text and "send timeout" in text
    assert "hunter2" not in text and "****" in text and signed.secret not in text


def test_a_used_sign_in_link_set_unused_again_shows_in_verify(tmp_path: Path) -> None:
    """The spend is logged: a used link re-armed in the store is named by verify."""
    import sqlite3

    store = Journal(tmp_path / "journal.db")
    try:
        store.save_person(Person("alice"), T0, "owner", "person added")
        store.set_setting("public_url", PUBLIC, T0, "owner")
        link, address = login_link(store, "alice", now=T0, by="owner")
        Sessions(store, send=Told()).with_link(_secret(address), "10.0.0.5", T0)
        assert store.verify_chain() == []
        db = sqlite3.connect(tmp_path / "journal.db", isolation_level=None)
        db.execute("UPDATE sign_in_links SET used = NULL")
        db.close()
        problems = "\n".join(store.verify_chain())
        assert f"sign-in link {link.key[:12]} (alice): differs from the service log" in problems
    finally:
        store.close()


def _invoke(vault: Path, *args: str) -> Result:
    result = CliRunner().invoke(
        cli, ["--vault", str(vault), *args], prog_name="hitl-vault", catch_exceptions=False
    )
    assert "Traceback" not in result.output + result.stderr
    return result


def test_token_login_prints_a_link_or_says_what_is_missing(vault_path: Path) -> None:
    """token login: the link alone on stdout; without a public URL, exit 2 naming the fix."""
    assert _invoke(vault_path, "people", "add", "alice").exit_code == 0
    missing = _invoke(vault_path, "token", "login", "alice")
    assert missing.exit_code == 2 and not missing.stdout
    assert "hitl-vault serve --public-url" in missing.stderr
    store = Journal(vault_path / STATE_DIR / JOURNAL_FILE)
    try:
        store.set_setting("public_url", PUBLIC, T0, "owner")
    finally:
        store.close()
    made = _invoke(vault_path, "token", "login", "Alice")
    assert made.exit_code == 0 and "sign-in link for alice" in made.stderr
    assert made.stdout.startswith(PUBLIC + "/login/") and len(made.stdout.strip()) > 60
    nobody = _invoke(vault_path, "token", "login", "carol")
    assert nobody.exit_code != 0 and "hitl-vault people add carol" in nobody.stderr
