"""People and tokens (``hitl_vault.access``): who may ask, who may answer, how a token
proves it, and that every change is logged and told to the person's channels."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from hitl_vault.access import tokens
from hitl_vault.access.people import People, person_for_uid
from hitl_vault.errors import AccessError, UsageError
from hitl_vault.identity import Role
from hitl_vault.journal.sqlite import Journal
from hitl_vault.store import JournalStore
from hitl_vault.testing import MemoryJournal

from .receivers import Post, Receiver, free_port

T0 = datetime(2026, 11, 22, 10, 15, tzinfo=UTC)
OWNER = 4242  # the service owner's uid, as these tests hand it


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with Receiver().start() as r:
        yield r


@pytest.fixture(params=["sqlite", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JournalStore]:
    made: JournalStore = (
        Journal(tmp_path / ".hitl" / "journal.db") if request.param == "sqlite" else MemoryJournal()
    )
    yield made
    made.close()


def _people(store: JournalStore) -> People:
    return People(store, by="owner", owner_uid=OWNER)


class Channels:
    """Channels of the shared receiver that belong to one test (each its own path)."""

    def __init__(self, receiver: Receiver, test: str) -> None:
        self.receiver = receiver
        self.prefix = hashlib.sha256(test.encode()).hexdigest()[:12]

    def url(self, name: str) -> str:
        return f"json://127.0.0.1:{self.receiver.port}/{self.prefix}-{name}"

    def got(self, name: str) -> list[Post]:
        return self.receiver.got(f"/{self.prefix}-{name}")


@pytest.fixture
def channels(receiver: Receiver, request: pytest.FixtureRequest) -> Channels:
    return Channels(receiver, request.node.nodeid)


# --- tokens ---------------------------------------------------------------------------------


def test_a_token_is_long_random_and_kept_as_its_hash_only(tmp_path: Path) -> None:
    """mint: hv_<id>_<43 url-safe chars>; the store holds its SHA-256, never the token."""
    path = tmp_path / ".hitl" / "journal.db"
    store = Journal(path)
    try:
        credential, token = tokens.mint(store, "deploy-bot", "agent", now=T0, by="owner")
        prefix, cid, tail = token.split("_", 2)
        assert (prefix, cid, len(tail)) == ("hv", credential.id, 43)
        assert credential.secret_sha == hashlib.sha256(token.encode()).hexdigest()
        assert credential.expires == T0 + timedelta(days=90)  # the default
        other, second = tokens.mint(store, "deploy-bot", Role.AGENT, now=T0, by="owner")
        assert second != token and other.id != credential.id
        assert token not in repr(store.service_log()) and tail not in repr(store.credentials())
    finally:
        store.close()
    raw = b"".join(p.read_bytes() for p in path.parent.glob("journal.db*"))
    assert tail.encode() not in raw and credential.secret_sha.encode() in raw


def test_only_the_exact_live_token_authenticates(store: JournalStore) -> None:
    """authenticate: the token itself passes; altered, malformed, unknown, revoked, expired fail."""
    credential, token = tokens.mint(
        store, "bot", "agent", expires=timedelta(hours=1), now=T0, by="owner"
    )
    got = tokens.authenticate(store, token, T0)
    assert got is not None and (got.id, got.name, got.role) == (credential.id, "bot", Role.AGENT)
    altered = token[:-1] + ("A" if token[-1] != "A" else "B")
    unknown = f"hv_{'0' * 12}_{token.split('_', 2)[2]}"
    for wrong in (altered, unknown, token + "x", "hv_", "", "Bearer " + token, None, 42):
        assert tokens.authenticate(store, wrong, T0) is None, wrong
    assert tokens.authenticate(store, token, T0 + timedelta(hours=1)) is None  # expired
    _, forever = tokens.mint(store, "bot", "agent", expires=None, now=T0, by="owner")
    assert tokens.authenticate(store, forever, T0 + timedelta(days=3650)) is not None
    tokens.revoke(store, "bot", T0, "owner")
    assert tokens.authenticate(store, forever, T0) is None


def test_use_is_recorded_at_most_once_a_minute_outside_the_chains(store: JournalStore) -> None:
    """authenticate marks last_used, throttled, writing nothing to the journal or the log."""
    credential, token = tokens.mint(store, "bot", "agent", now=T0, by="owner")
    logged, seq = len(store.service_log()), store.last_seq()
    tokens.authenticate(store, token, T0 + timedelta(seconds=5))
    tokens.authenticate(store, token, T0 + timedelta(seconds=50))
    assert store.credential(credential.id).last_used == T0 + timedelta(seconds=5)  # type: ignore[union-attr]
    got = tokens.authenticate(store, token, T0 + timedelta(seconds=70))
    assert got is not None and got.last_used == T0 + timedelta(seconds=70)
    assert store.credential(credential.id).last_used == T0 + timedelta(seconds=70)  # type: ignore[union-attr]
    assert (len(store.service_log()), store.last_seq()) == (logged, seq)


def test_an_approver_token_is_an_enabled_persons(store: JournalStore) -> None:
    """Approver tokens need a person (spelled as people has it) and stop with them disabled."""
    with pytest.raises(AccessError, match="people add"):
        tokens.mint(store, "alice", "approver", now=T0, by="owner")
    _people(store).add("Alice", [1001], now=T0)
    credential, token = tokens.mint(store, " alice", "approver", now=T0, by="owner")
    assert credential.name == "Alice" and credential.role is Role.APPROVER
    assert tokens.authenticate(store, token, T0) is not None
    _people(store).disable("alice", now=T0)
    assert tokens.authenticate(store, token, T0) is None
    with pytest.raises(AccessError, match="disabled"):
        tokens.mint(store, "alice", "approver", now=T0, by="owner")


def test_names_are_unique_across_roles(store: JournalStore) -> None:
    """No agent token takes a person's name, and no person takes a live agent token's name."""
    _people(store).add("alice", now=T0)
    for name in ("alice", "ALICE", " alice ", "ａｌｉｃｅ"):
        with pytest.raises(AccessError, match="may not pass for a person"):
            tokens.mint(store, name, "agent", now=T0, by="owner")
    tokens.mint(store, "deploy-bot", "agent", now=T0, by="owner")
    with pytest.raises(AccessError, match="token revoke"):
        _people(store).add("Deploy-Bot", now=T0)
    tokens.revoke(store, "deploy-bot", T0, "owner")
    assert _people(store).add("Deploy-Bot", now=T0).person.name == "Deploy-Bot"


def test_bad_arguments_name_themselves(store: JournalStore) -> None:
    """A bad role, action list, expiry or name is a UsageError naming the argument."""
    cases: list[tuple[dict[str, object], str]] = [
        ({"role": "admin"}, "--role"),
        ({"actions": ["deploy", "no such/action"]}, "--actions"),
        ({"actions": []}, "--actions"),
        ({"expires": timedelta(0)}, "--expires"),
        ({"name": "two\nlines"}, "NAME"),
        ({"name": "  "}, "NAME"),
    ]
    for change, argument in cases:
        kw: dict[str, object] = {"name": "bot", "role": "agent", **change}
        name, role = kw.pop("name"), kw.pop("role")
        with pytest.raises(UsageError) as e:
            tokens.mint(store, name, role, now=T0, by="owner", **kw)  # type: ignore[arg-type]
        assert e.value.argument == argument
    _people(store).add("alice", now=T0)
    with pytest.raises(UsageError, match="only an agent token"):
        tokens.mint(store, "alice", "approver", actions=["deploy"], now=T0, by="owner")
    limited, _ = tokens.mint(store, "bot", "agent", actions=["deploy", "deploy"], now=T0, by="o")
    assert limited.actions == ("deploy",)


def test_revoke_by_name_ends_every_token_and_by_id_one(store: JournalStore) -> None:
    """revoke NAME: all that name's live tokens; revoke ID: that one; unknown: AccessError."""
    one, _ = tokens.mint(store, "bot", "agent", now=T0, by="owner")
    tokens.mint(store, "bot", "agent", now=T0, by="owner")
    tokens.mint(store, "bot", "agent", now=T0, by="owner")
    tokens.mint(store, "other", "agent", now=T0, by="owner")
    assert tokens.revoke(store, one.id, T0, "owner") == 1
    assert tokens.revoke(store, one.id, T0, "owner") == 0
    assert tokens.revoke(store, "BOT", T0, "owner") == 2
    assert [tokens.state(c, T0, store) for c in store.credentials()] == ["revoked"] * 3 + ["live"]
    with pytest.raises(AccessError, match="token list"):
        tokens.revoke(store, "nobody", T0, "owner")
    events = [(e.event, e.subject, e.by) for e in store.service_log(limit=3)]
    assert events == [("token revoked", "bot", "owner")] * 3


def test_failed_authentication_is_logged_as_a_summary(store: JournalStore) -> None:
    """failed() logs the client address and a count: no token, ever."""
    entry = tokens.failed(store, "203.0.113.9", 7, T0)
    assert (entry.event, entry.subject, entry.details) == (
        "auth failed",
        "203.0.113.9",
        ("7 failed",),
    )
    assert store.service_log()[0] == entry and store.verify_chain() == []


# --- people ---------------------------------------------------------------------------------


def test_adding_a_person_logs_it_and_tells_their_channel(
    store: JournalStore, channels: Channels
) -> None:
    """people add: kept, logged with the actor, told on the person's own channel."""
    change = _people(store).add("alice", [1001, 1001], [channels.url("add-alice")], now=T0)
    assert change.person.uids == (1001,) and change.event == "person added"
    assert [t.error for t in change.told] == [None]
    (post,) = channels.got("add-alice")
    assert "alice" in post.message and "owner" in post.message and "1001" in post.message
    assert "127.0.0.1" not in post.message  # channels named by kind only
    entry = store.service_log()[0]
    assert (entry.event, entry.subject, entry.by) == ("person added", "alice", "owner")
    assert person_for_uid(store, 1001) == change.person and person_for_uid(store, 1002) is None


def test_root_and_the_owner_are_never_a_person(store: JournalStore) -> None:
    """add and set refuse uid 0 and the service owner's uid, saying why."""
    people = _people(store)
    with pytest.raises(UsageError, match="root"):
        people.add("alice", [0], now=T0)
    with pytest.raises(UsageError, match="service's owner"):
        people.add("alice", [OWNER], now=T0)
    people.add("alice", [1001], now=T0)
    with pytest.raises(UsageError, match="service's owner"):
        people.set("alice", [1001, OWNER], now=T0)
    with pytest.raises(UsageError, match="not a user id"):
        people.set("alice", [-1], now=T0)
    assert store.people()[0].uids == (1001,) and len(store.service_log()) == 1


def test_a_uid_or_a_name_belongs_to_one_person(store: JournalStore) -> None:
    """A second person with the same name (as compared) or another's uid is refused."""
    people = _people(store)
    people.add("alice", [1001], now=T0)
    with pytest.raises(AccessError, match="in people already"):
        people.add("Alice ", now=T0)
    with pytest.raises(AccessError, match="alice's already"):
        people.add("bob", [1002, 1001], now=T0)
    with pytest.raises(AccessError, match="people list"):
        people.set("carol", [1003], now=T0)


def test_the_services_uid_and_the_vaults_owner_are_never_a_person(
    store: JournalStore, tmp_path: Path
) -> None:
    """add and set refuse the uid serve recorded and the uid owning the vault folder."""
    store.set_setting("service_uid", "1234", T0, "owner")
    vault = tmp_path / "vault"
    vault.mkdir()
    if os.getuid() == 0:
        os.chown(vault, 1500, -1)  # the service's user owns it, as in production
    people = People(store, by="owner", owner_uid=OWNER, vault=vault)
    with pytest.raises(UsageError, match="the service runs as"):
        people.add("eve", [1234], now=T0)
    with pytest.raises(UsageError, match="owns the vault"):
        people.add("eve", [vault.stat().st_uid], now=T0)
    people.add("eve", [1001], now=T0)
    with pytest.raises(UsageError, match="the service runs as"):
        people.set("eve", [1001, 1234], now=T0)
    assert store.people()[0].uids == (1001,)


def test_enabling_a_person_checks_their_uids_again(
    store: JournalStore, caplog: pytest.LogCaptureFixture
) -> None:
    """A uid given to another while its person was disabled stops their enabling; shared: nobody."""
    people = _people(store)
    people.add("zed", [1001], now=T0)
    people.disable("zed", now=T0)
    amy = people.add("amy", [1001], now=T0).person  # zed is disabled: the uid is free
    with pytest.raises(AccessError, match="uid 1001 is amy's already"):
        people.set("zed", enable=True, now=T0)
    assert store.person("zed").disabled  # type: ignore[union-attr]
    assert person_for_uid(store, 1001) == amy
    people.set("zed", [1002], enable=True, now=T0)  # with a uid of their own, they may
    # Two enabled people with one uid (written around these checks): it proves neither.
    store.save_person(replace(amy, uids=(1001, 1002)), T0, "owner", "person changed")
    assert person_for_uid(store, 1002) is None and person_for_uid(store, 1001) == store.person(
        "amy"
    )


def test_a_change_is_told_to_the_old_and_the_new_channels(
    store: JournalStore, channels: Channels
) -> None:
    """people set replaces what is given; both the old channel and the new one hear of it."""
    people = _people(store)
    people.add("bob", [1002], [channels.url("bob-old")], now=T0)
    change = people.set("bob", notify=[channels.url("bob-new")], now=T0 + timedelta(hours=1))
    assert change.person.notify == (channels.url("bob-new"),) and change.person.uids == (1002,)
    assert [t.error for t in change.told] == [None, None]
    assert len(channels.got("bob-old")) == 2 and len(channels.got("bob-new")) == 1
    assert "channels were json, now json" in channels.got("bob-new")[0].message
    assert store.service_log()[0].event == "person changed"
    with pytest.raises(UsageError, match="nothing to change"):
        people.set("bob", now=T0)


def test_a_channel_that_is_down_never_fails_the_change(store: JournalStore) -> None:
    """The change is made and logged; the failure is reported per channel."""
    down = f"json://127.0.0.1:{free_port()}/gone"
    change = _people(store).add("carol", [1003], [down], now=T0)
    (told,) = change.told
    assert told.channel == down and told.error
    assert store.person("carol") is not None


def test_disabling_ends_every_token_at_once(store: JournalStore, channels: Channels) -> None:
    """people disable: the person, then all their tokens revoked in one write, logged, told."""
    people = _people(store)
    people.add("dave", [1004], [channels.url("dave")], now=T0)
    tokens.mint(store, "dave", "approver", now=T0, by="owner")
    _, laptop = tokens.mint(store, "dave", "approver", now=T0, by="owner")
    change = people.disable("DAVE", now=T0 + timedelta(minutes=1))
    assert change.person.disabled and change.revoked == 2
    assert tokens.authenticate(store, laptop, T0 + timedelta(minutes=2)) is None
    assert person_for_uid(store, 1004) is None  # enabled people only
    events = [e.event for e in store.service_log(limit=3)]
    assert events == ["token revoked", "token revoked", "person disabled"]
    assert "2 token(s) revoked" in channels.got("dave")[-1].message
    with pytest.raises(AccessError, match="--enable"):
        people.disable("dave", now=T0)
    again = people.set("dave", enable=True, now=T0 + timedelta(minutes=3))
    assert not again.person.disabled and again.event == "person enabled"
    assert tokens.authenticate(store, laptop, T0 + timedelta(minutes=4)) is None


def test_a_channel_is_checked_before_it_is_kept(store: JournalStore) -> None:
    """--notify must be an Apprise URL; the message masks its password."""
    people = _people(store)
    with pytest.raises(UsageError, match=r"--notify.*not a URL"):
        people.add("erin", notify=["erin@example.com"], now=T0)
    with pytest.raises(UsageError, match="Apprise does not know") as e:
        people.add("erin", notify=["nosuchscheme://user:hunter2@host"], now=T0)
    assert "hunter2" not in str(e.value)
    assert store.people() == []


def test_the_actor_of_a_change_is_the_os_account_not_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """os_user() names this process's uid from the OS; USER and LOGNAME do not change it."""
    import pwd

    from hitl_vault.access.names import os_user

    monkeypatch.setenv("USER", "alice")
    monkeypatch.setenv("LOGNAME", "alice")
    assert os_user() == pwd.getpwuid(os.getuid()).pw_name != "alice"
