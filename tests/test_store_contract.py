"""The storage seam's contract: one class of tests, run against every store that ships.

Each test gets a fresh store from the parametrized ``kit`` fixture: the SQLite
``Journal`` in a temp folder, the in-memory ``MemoryJournal``, and ``PgJournal`` in a
schema of its own on a PostgreSQL server (the ``pg_url`` fixture: skipped, saying why,
where none can be started). A new backend passes by adding one more parameter here.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from hitl_vault.chain import (
    CHAIN_VERSION,
    GENESIS,
    RECORDER_ACTOR,
    RECORDER_UID,
    Entry,
    entry_hash,
)
from hitl_vault.errors import (
    DaemonRunningError,
    DuplicateError,
    IllegalTransitionError,
    NotRetryableError,
    RequestNotFoundError,
)
from hitl_vault.identity import Credential, Person, Role, same_name
from hitl_vault.journal.sqlite import Journal
from hitl_vault.model import Kind, Request, Risk, Status, Transition
from hitl_vault.policy.pitch import Pitch
from hitl_vault.store import JournalStore, request_flag
from hitl_vault.testing import MemoryJournal
from hitl_vault.times import format_ts

T0 = datetime(2026, 11, 22, 10, 15, tzinfo=UTC)
HOUR = timedelta(hours=1)


@dataclass
class Kit:
    """A fresh store, a second handle on it (for SQLite another connection, as another
    process has; for memory the same object), and a way to edit an entry behind its back."""

    store: JournalStore
    other: Callable[[], JournalStore]
    tamper: Callable[[int, str], None]  # set the ``by`` of entry ``seq``, outside hitl-vault
    # set the ``by`` of service-log entry ``seq`` (None: remove it), outside hitl-vault
    tamper_service: Callable[[int, str | None], None]
    # write a person, a credential or a (setting, value) straight into the store, no log
    forge: Callable[[Person | Credential | tuple[str, str]], None]
    # remove a person (by name) or a credential (by id) straight from the store, no log
    drop: Callable[[str], None]
    # set one column of entry ``seq`` (and the head's hash with its newest's), outside
    rewrite: Callable[[int, str, object], None]
    close: Callable[[], None] = lambda: None  # close the handles ``other`` made


def _sqlite(tmp_path: Path) -> Kit:
    path = tmp_path / ".hitl" / "journal.db"

    def tamper(seq: int, by: str) -> None:
        db = sqlite3.connect(path, isolation_level=None)
        db.execute("UPDATE entries SET by = ? WHERE seq = ?", (by, seq))
        db.close()

    def rewrite(seq: int, column: str, value: object) -> None:
        db = sqlite3.connect(path, isolation_level=None)
        db.execute(f"UPDATE entries SET {column} = ? WHERE seq = ?", (value, seq))
        db.close()

    def tamper_service(seq: int, by: str | None) -> None:
        db = sqlite3.connect(path, isolation_level=None)
        if by is None:
            db.execute("DELETE FROM service_log WHERE seq = ?", (seq,))
        else:
            db.execute("UPDATE service_log SET by = ? WHERE seq = ?", (by, seq))
        db.close()

    def forge(row: Person | Credential | tuple[str, str]) -> None:
        db = sqlite3.connect(path, isolation_level=None)
        if isinstance(row, Person):
            db.execute(
                "INSERT OR REPLACE INTO people VALUES (?,?,?,?,?,?,?)",
                (same_name(row.name), row.name, json.dumps(list(row.uids)),
                 json.dumps(list(row.notify)), int(row.disabled), format_ts(T0), format_ts(T0)),
            )  # fmt: skip
        elif isinstance(row, Credential):
            db.execute(
                "INSERT OR REPLACE INTO credentials VALUES (?,?,?,?,?,?,?,?,?,?)",
                (row.id, row.name, same_name(row.name), str(row.role), row.secret_sha,
                 format_ts(row.created), row.expires and format_ts(row.expires),
                 None if row.actions is None else json.dumps(list(row.actions)),
                 row.revoked and format_ts(row.revoked), None),
            )  # fmt: skip
        else:
            db.execute("INSERT OR REPLACE INTO settings VALUES (?,?,?)", (*row, format_ts(T0)))
        db.close()

    def drop(name_or_id: str) -> None:
        db = sqlite3.connect(path, isolation_level=None)
        db.execute("DELETE FROM people WHERE key = ?", (same_name(name_or_id),))
        db.execute("DELETE FROM credentials WHERE id = ?", (name_or_id,))
        db.close()

    return Kit(Journal(path), lambda: Journal(path), tamper, tamper_service, forge, drop, rewrite)


def _memory(tmp_path: Path) -> Kit:
    store = MemoryJournal()

    def tamper(seq: int, by: str) -> None:
        entries = store._m.state.entries
        entries[seq - 1] = replace(entries[seq - 1], by=by)

    def rewrite(seq: int, column: str, value: object) -> None:
        entries = store._m.state.entries
        entries[seq - 1] = replace(entries[seq - 1], **{column: value})  # type: ignore[arg-type]

    def tamper_service(seq: int, by: str | None) -> None:
        rows = store._m.state.service
        (at,) = [n for n, row in enumerate(rows) if row.seq == seq]
        if by is None:
            del rows[at]
        else:
            rows[at] = replace(rows[at], by=by)

    def forge(row: Person | Credential | tuple[str, str]) -> None:
        state = store._m.state
        if isinstance(row, Person):
            state.people[same_name(row.name)] = replace(row, created=T0, changed=T0)
        elif isinstance(row, Credential):
            state.credentials[row.id] = row
        else:
            state.settings[row[0]] = row[1]

    def drop(name_or_id: str) -> None:
        store._m.state.people.pop(same_name(name_or_id), None)
        store._m.state.credentials.pop(name_or_id, None)

    return Kit(store, lambda: store, tamper, tamper_service, forge, drop, rewrite)


def _postgres(url: str) -> Kit:
    import psycopg

    from hitl_vault.journal.pg import PgJournal

    from .pgserver import fresh_journal

    url = fresh_journal(url)

    def sql(statement: str, *args: object) -> None:
        with psycopg.connect(url, autocommit=True) as db:
            db.execute(statement.encode(), args)

    def tamper(seq: int, by: str) -> None:
        sql("UPDATE entries SET by = %s WHERE seq = %s", by, seq)

    def rewrite(seq: int, column: str, value: object) -> None:
        sql(f"UPDATE entries SET {column} = %s WHERE seq = %s", value, seq)
        if column == "hash":  # the head row keeps the newest entry's hash
            sql("UPDATE head SET hash = %s WHERE seq = %s", value, seq)

    def tamper_service(seq: int, by: str | None) -> None:
        if by is None:
            sql("DELETE FROM service_log WHERE seq = %s", seq)
        else:
            sql("UPDATE service_log SET by = %s WHERE seq = %s", by, seq)

    def forge(row: Person | Credential | tuple[str, str]) -> None:
        if isinstance(row, Person):
            sql("DELETE FROM people WHERE key = %s", same_name(row.name))
            sql(
                "INSERT INTO people VALUES (%s,%s,%s,%s,%s,%s,%s)",
                same_name(row.name), row.name, json.dumps(list(row.uids)),
                json.dumps(list(row.notify)), int(row.disabled), format_ts(T0), format_ts(T0),
            )  # fmt: skip
        elif isinstance(row, Credential):
            sql("DELETE FROM credentials WHERE id = %s", row.id)
            sql(
                "INSERT INTO credentials (id, name, key, role, secret_sha, created, expires, "
                "actions, revoked) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s)",
                row.id, row.name, same_name(row.name), str(row.role), row.secret_sha,
                format_ts(row.created), row.expires and format_ts(row.expires),
                None if row.actions is None else json.dumps(list(row.actions)),
                row.revoked and format_ts(row.revoked),
            )  # fmt: skip
        else:
            sql("DELETE FROM settings WHERE name = %s", row[0])
            sql("INSERT INTO settings VALUES (%s,%s,%s)", *row, format_ts(T0))

    def drop(name_or_id: str) -> None:
        sql("DELETE FROM people WHERE key = %s", same_name(name_or_id))
        sql("DELETE FROM credentials WHERE id = %s", name_or_id)

    others: list[PgJournal] = []

    def other() -> PgJournal:
        others.append(PgJournal(url))
        return others[-1]

    def close() -> None:
        for store in others:
            store.close()

    return Kit(PgJournal(url), other, tamper, tamper_service, forge, drop, rewrite, close)


@pytest.fixture(params=[_sqlite, _memory, _postgres], ids=["sqlite", "memory", "postgresql"])
def kit(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Kit]:
    if request.param is _postgres:
        made = _postgres(request.getfixturevalue("pg_url"))
    else:
        made = request.param(tmp_path)
    yield made
    made.close()
    made.store.close()


def _request(rid: str = "20261122T101500Z-payment-aaaaaa", **kw: object) -> Request:
    fields: dict[str, object] = dict(
        id=rid,
        status=Status.PENDING,
        action="payment",
        summary="s",
        risk=Risk.HIGH,
        rule="large-payments",
        requested_by="bot",
        created=T0,
        expires=T0 + HOUR,
        params={"amount": 1500},
        context="why",
        history=(Transition(T0, None, Status.PENDING, "bot", details=("rule large-payments",)),),
    )
    fields.update(kw)
    return Request(**fields)  # type: ignore[arg-type]


A = "20261122T101500Z-payment-aaaaaa"
B = "20261122T101600Z-payment-bbbbbb"
C = "20261122T101700Z-payment-cccccc"


class TestJournalStore:
    """What every JournalStore does, whatever keeps it."""

    def test_a_created_request_reads_back_whole(self, kit: Kit) -> None:
        """get returns the fields, the note path, the context and the first history entry."""
        s = kit.store
        s.create(_request(), "Pending_Approval/a.md", pinned={"approvers": ["alice"]})
        got = s.get(A)
        assert got is not None
        assert (got.status, got.action, got.params, got.context) == (
            Status.PENDING,
            "payment",
            {"amount": 1500},
            "why",
        )
        assert got.path == Path("Pending_Approval/a.md")
        assert got.created == T0 and got.expires == T0 + HOUR
        assert [t.to_status for t in got.history] == [Status.PENDING]
        assert s.get(A, history=False).history == ()  # type: ignore[union-attr]
        assert s.pinned(A) == {"approvers": ["alice"]} and s.pinned(B) == {}
        assert s.get(B) is None and s.status_of(B) is None

    def test_a_requests_pitch_reads_back_whole_and_its_absence_as_none(self, kit: Kit) -> None:
        """The requester's reasoning, confidence, lists and diff come back as stored; a
        request that said nothing has no pitch, in every listing too."""
        s = kit.store
        pitch = Pitch("why", 0.25, ("wait",), ("prod",), "--- a/x\n+++ b/x\n+y", "agent")
        s.create(_request(pitch=pitch), "Pending_Approval/a.md")
        s.create(_request(B), "Pending_Approval/b.md")
        assert s.get(A).pitch == pitch  # type: ignore[union-attr]
        assert s.get(B).pitch is None  # type: ignore[union-attr]
        assert {r.id: r.pitch for r in s.requests()} == {A: pitch, B: None}

    def test_an_id_or_a_proposal_is_recorded_once(self, kit: Kit) -> None:
        """A second create with the same id or the same Inbox proposal is a DuplicateError."""
        s = kit.store
        s.create(_request(), None, source="Inbox/x.md#1")
        with pytest.raises(DuplicateError, match=f"request {A}"):
            s.create(_request(), None)
        with pytest.raises(DuplicateError, match=r"proposal Inbox/x\.md#1"):
            s.create(_request(B), None, source="Inbox/x.md#1")
        assert s.proposal("Inbox/x.md#1") == A and s.proposal("other") is None
        assert s.ids() == [A]

    def test_a_transition_moves_only_from_where_it_is_expected(self, kit: Kit) -> None:
        """expect decides whether it moves (else None); illegal moves and unknown ids raise."""
        s = kit.store
        s.create(_request(), None)
        assert s.transition(A, Status.REJECTED, at=T0, by="x", expect={Status.APPROVED}) is None
        t = s.transition(
            A,
            Status.APPROVED,
            at=T0,
            by="alice",
            expect={Status.PENDING},
            fields={"decided_by": "alice", "decided_at": T0},
        )
        assert t is not None and (t.from_status, t.to_status, t.by) == (
            Status.PENDING,
            Status.APPROVED,
            "alice",
        )
        got = s.get(A)
        assert got is not None and got.decided_by == "alice" and got.decided_at == T0
        with pytest.raises(IllegalTransitionError):
            s.transition(A, Status.PENDING, at=T0, by="x")
        with pytest.raises(RequestNotFoundError):
            s.transition(B, Status.APPROVED, at=T0, by="x")
        with pytest.raises(ValueError, match="cannot set"):
            s.transition(A, Status.EXECUTING, at=T0, by="x", fields={"status": "x"})
        s.transition(A, Status.CANCELLED, at=T0, by="x")
        assert s.transition(A, Status.EXECUTING, at=T0, by="x") is None  # final: nothing to do

    def test_an_approval_proves_exactly_its_params(self, kit: Kit) -> None:
        """unproven is None for the approved params, and says why for any other."""
        s = kit.store
        s.create(_request(), None)
        assert s.unproven(A, {"amount": 1500}) is not None  # no approval yet
        s.transition(A, Status.APPROVED, at=T0, by="alice", fields={"params": {"amount": 9}})
        assert s.unproven(A, {"amount": 9}) is None
        assert "not the params that were approved" in (s.unproven(A, {"amount": 1500}) or "")
        assert s.get(A).params == {"amount": 9}  # type: ignore[union-attr]
        assert s.created_params(A) == {"amount": 1500}

    def test_a_step_clears_what_was_flagged_about_the_request(self, kit: Kit) -> None:
        """A transition takes the request's own flag off Needs attention; a note's stays."""
        s = kit.store
        s.create(_request(), None)
        assert s.flag(request_flag(A), "refused", T0, A) is True
        assert s.flag("Pending_Approval/a.md", "bad yaml", T0, A) is True
        s.transition(A, Status.APPROVED, at=T0, by="alice")
        assert [a.path for a in s.attention()] == ["Pending_Approval/a.md"]

    def test_votes_are_entries_while_pending(self, kit: Kit) -> None:
        """A vote keeps the status, shows in the history, and is refused once decided."""
        s = kit.store
        s.create(_request(), None)
        vote = s.record_vote(A, at=T0, by="bob", approve=True, reason="ok", count="1 of 2")
        assert vote is not None and vote.kind is Kind.VOTED
        got = s.get(A)
        assert got is not None and got.status is Status.PENDING
        assert [t.by for t in got.votes()] == ["bob"]
        s.transition(A, Status.REJECTED, at=T0, by="carol")
        assert s.record_vote(A, at=T0, by="d", approve=True, reason="", count="2 of 2") is None

    def test_edits_while_pending_change_the_params_not_what_was_asked(self, kit: Kit) -> None:
        """record_edit sets the params (what an approval runs) and keeps created_params."""
        s = kit.store
        s.create(_request(), None)
        t = s.record_edit(A, {"amount": 10}, at=T0, by="alice", changes="amount: 1500 → 10")
        assert t is not None and t.kind is Kind.EDITED
        assert s.get(A).params == {"amount": 10}  # type: ignore[union-attr]
        assert s.created_params(A) == {"amount": 1500}
        s.transition(A, Status.APPROVED, at=T0, by="alice")
        assert s.unproven(A, {"amount": 10}) is None
        assert s.record_edit(A, {"amount": 1}, at=T0, by="x", changes="") is None
        with pytest.raises(RequestNotFoundError):
            s.created_params(B)

    def test_an_escalation_falls_due_once(self, kit: Kit) -> None:
        """escalating lists what is due; record_escalation happens once, then None."""
        s = kit.store
        s.create(_request(escalate_at=T0 + HOUR), None)
        s.create(_request(B, escalate_at=T0 + 2 * HOUR), None)
        assert s.next_escalation() == T0 + HOUR
        assert s.escalating(T0) == [] and s.escalating(T0 + 3 * HOUR) == [A, B]
        t = s.record_escalation(A, T0 + HOUR, "to carol")
        assert t is not None and t.kind is Kind.ESCALATED
        assert s.record_escalation(A, T0 + HOUR, "to carol") is None
        assert s.get(A).escalated  # type: ignore[union-attr]
        assert s.escalating(T0 + 3 * HOUR) == [B] and s.next_escalation() == T0 + 2 * HOUR

    def test_expiry_queries_see_pending_requests_only(self, kit: Kit) -> None:
        """expiring, next_expiry and pending_by_expiry: soonest first, never-expiring last."""
        s = kit.store
        s.create(_request(A, expires=T0 + 2 * HOUR), None)
        s.create(_request(B, expires=T0 + HOUR), None)
        s.create(_request(C, expires=None), None)
        assert s.next_expiry() == T0 + HOUR
        assert s.expiring() == [(B, T0 + HOUR), (A, T0 + 2 * HOUR)]
        assert s.expiring(before=T0 + HOUR) == [(B, T0 + HOUR)]
        assert [r.id for r in s.pending_by_expiry(10)] == [B, A, C]
        s.transition(B, Status.TIMED_OUT, at=T0 + HOUR, by="hitl-vault")
        assert s.expiring() == [(A, T0 + 2 * HOUR)] and s.next_expiry() == T0 + 2 * HOUR

    def test_listing_is_newest_first_and_counts_every_status(self, kit: Kit) -> None:
        """requests() newest first (with limit and status), ids, counts, status_of."""
        s = kit.store
        for n, rid in enumerate((A, B, C)):
            s.create(_request(rid, created=T0 + timedelta(minutes=n)), None)
        s.transition(B, Status.APPROVED, at=T0, by="alice")
        assert [r.id for r in s.requests()] == [C, B, A]
        assert [r.id for r in s.requests(limit=2)] == [C, B]
        assert [r.id for r in s.requests(Status.PENDING)] == [C, A]
        assert sorted(s.ids(Status.PENDING)) == [A, C]
        counts = s.counts()
        assert counts[Status.PENDING] == 2 and counts[Status.APPROVED] == 1
        assert counts[Status.FAILED] == 0 and s.status_of(B) is Status.APPROVED

    def test_an_agents_requests_are_those_its_tokens_asked_with_where_they_came_from(
        self, kit: Kit
    ) -> None:
        """requests(agent=NAME): those a token of that name (compared as names are, revoked
        ones too) asked for, newest first, limited after the pick; a request that only
        names the agent is not among them. The token, session and client read back."""
        s = kit.store
        s.add_credential(_credential("c1", "Bot"), T0, "owner")
        s.add_credential(_credential("c2", "bot", created=T0 + HOUR), T0, "owner")
        s.add_credential(_credential("c3", "other"), T0, "owner")
        s.revoke_credentials(["c1"], T0, "owner", "rotated")
        made = [
            (A, dict(credential="c1", session="s-1", client="cli 2")),
            (B, dict(credential="c2")),
            (C, dict(credential="c3", requested_by="other")),
            ("20261122T101800Z-payment-dddddd", {}),  # names bot, asked by no token
        ]
        for n, (rid, origin) in enumerate(made):
            s.create(_request(rid, created=T0 + timedelta(minutes=n), **origin), None)
        assert [r.id for r in s.requests(agent="BOT")] == [B, A]
        assert [r.id for r in s.requests(agent="bot", limit=1)] == [B]
        assert [r.id for r in s.requests(Status.PENDING, agent="other")] == [C]
        assert s.requests(agent="nobody") == []
        got = s.get(A)
        assert got is not None and (got.credential, got.session, got.client) == (
            "c1",
            "s-1",
            "cli 2",
        )
        plain = s.get(made[3][0])
        assert plain is not None and (plain.credential, plain.session, plain.client) == (
            None,
            None,
            None,
        )

    def test_an_ignored_status_is_recorded_and_changes_nothing(self, kit: Kit) -> None:
        """record_ignored adds an entry that keeps the status; unknown ids raise."""
        s = kit.store
        s.create(_request(), None)
        t = s.record_ignored(A, T0, ("status: aproved is not a status",))
        assert t.kind is Kind.IGNORED and s.status_of(A) is Status.PENDING
        with pytest.raises(RequestNotFoundError):
            s.record_ignored(B, T0, ())

    def test_a_retry_is_linked_both_ways_once(self, kit: Kit) -> None:
        """A request made with retry_of links to its failed one; a second retry is refused."""
        s = kit.store
        s.create(_request(), None)
        for to in (Status.APPROVED, Status.EXECUTING, Status.FAILED):
            s.transition(A, to, at=T0, by="x")
        s.create(_request(B, retry_of=A), None)
        assert s.get(A).retried_as == B  # type: ignore[union-attr]
        assert s.get(B).retry_of == A  # type: ignore[union-attr]
        assert "retried as " + B in s.get(A).history[-1].details  # type: ignore[union-attr]
        with pytest.raises(NotRetryableError):
            s.create(_request(C, retry_of=A), None)
        assert s.get(C) is None  # nothing of the refused one was kept

    def test_the_outbox_records_each_notification_once_and_moves_the_cursor(self, kit: Kit) -> None:
        """enqueue dedupes and moves the cursor; outgoing, sent, not_sent, sent_count."""
        s = kit.store
        s.create(_request(), None)
        assert s.cursor("notifier") is None
        items = [(A, "pending", "ntfy://a"), (A, "pending", "ntfy://b")]
        assert s.enqueue(items, T0, ("notifier", 3)) == 2
        assert s.enqueue(items, T0, ("notifier", 4)) == 0 and s.cursor("notifier") == 4
        first, second = s.outgoing()
        s.sent(first.id, T0)
        s.not_sent(second.id, T0, "timeout", retry_at=T0 + HOUR)
        assert s.outgoing(now=T0) == []
        (again,) = s.outgoing(now=T0 + HOUR)
        assert (again.target, again.attempts, again.last_error) == ("ntfy://b", 1, "timeout")
        s.not_sent(again.id, T0 + HOUR, "still down", retry_at=None)  # given up
        assert s.outgoing() == [] and s.sent_count() == 1 and s.sent_count(B) == 0

    def test_a_cursor_moves_alone_and_with_its_batch(self, kit: Kit) -> None:
        """move_cursor keeps a durable listener's place; inside a batch that fails it is undone."""
        s = kit.store
        s.move_cursor("listener", 5)
        assert s.cursor("listener") == 5 and s.cursor("other") is None
        with pytest.raises(RuntimeError), s.batch():
            s.move_cursor("listener", 9)
            raise RuntimeError("the listener failed")
        assert s.cursor("listener") == 5
        s.move_cursor("listener", 7)
        assert s.cursor("listener") == 7

    def test_flags_are_news_once_and_listed_oldest_first(self, kit: Kit) -> None:
        """flag is True for a new or changed message only; unflag takes it off."""
        s = kit.store
        assert s.flag("b.md", "one", T0 + HOUR) is True
        assert s.flag("b.md", "one", T0 + 2 * HOUR) is False
        assert s.flag("a.md", "two", T0, A) is True
        assert [(a.path, a.request_id) for a in s.attention()] == [("a.md", A), ("b.md", None)]
        s.unflag("a.md")
        assert [a.path for a in s.attention()] == ["b.md"]

    def test_a_note_digest_is_kept_only_while_the_entries_match(self, kit: Kit) -> None:
        """set_path keeps note_sha only if the note showed every entry; a step clears it."""
        s = kit.store
        s.create(_request(), None)
        s.set_path(A, "Pending_Approval/a.md", "sha1", entries=1)
        assert s.note_sha(A) == ("Pending_Approval/a.md", "sha1")
        s.set_path(A, "Pending_Approval/a.md", "sha2", entries=0)  # stale bytes
        assert s.note_sha(A) == ("Pending_Approval/a.md", None)
        s.set_path(A, "Pending_Approval/a.md", "sha3", entries=1)
        s.transition(A, Status.APPROVED, at=T0 + HOUR, by="alice")
        assert s.note_sha(A) == ("Pending_Approval/a.md", None)
        assert s.paths() == {A: "Pending_Approval/a.md"} and s.note_sha(B) == (None, None)
        assert s.last_change(A) == ("Pending_Approval/a.md", T0 + HOUR)

    def test_the_feed_and_the_chain(self, kit: Kit) -> None:
        """feed/last_seq in order, recent_entries newest first, verify_chain finds an edit."""
        s = kit.store
        assert s.last_seq() == 0 and s.verify_chain() == []
        s.create(_request(), None)
        s.create(_request(B), None)
        s.transition(A, Status.APPROVED, at=T0, by="alice")
        assert s.last_seq() == 3
        assert [(seq, rid) for seq, rid, _ in s.feed(1)] == [(2, B), (3, A)]
        assert [rid for rid, *_ in s.recent_entries(2)] == [A, B]
        assert [e.seq for e in s.entries(A)] == [1, 3] and s.verify_chain() == []
        assert s.decision_uid(A) == s.entries(A)[-1].uid and s.decision_uid(B) is None
        kit.tamper(3, "mallory")
        assert any("entry 3" in p and "edited" in p for p in s.verify_chain())
        assert s.unproven(A, {"amount": 1500}) is not None

    def test_each_entry_records_its_actor_under_chain_version_2(self, kit: Kit) -> None:
        """A new entry keeps this process's uid and actor (``host/user``), read back by
        entries and recent_entries, and its hash covers both; an actor changed or taken off,
        or a uid changed, shows as an edit."""
        s = kit.store
        s.create(_request(), None)
        s.transition(A, Status.APPROVED, at=T0, by="alice")
        found = [(e.uid, e.actor, e.version) for e in s.entries(A)]
        assert found == [(RECORDER_UID, RECORDER_ACTOR, 2)] * 2  # no credential: version 2
        assert s.recent_entries(1)[0][2:] == (RECORDER_UID, RECORDER_ACTOR)  # the dashboard's
        assert s.verify_chain() == [] and s.unproven(A, {"amount": 1500}) is None
        for column, value in (("actor", "elsewhere/hitl"), ("actor", None), ("uid", 4242)):
            kit.rewrite(2, column, value)
            assert any("entry 2" in p and "edited" in p for p in s.verify_chain()), column
            kit.rewrite(2, column, RECORDER_ACTOR if column == "actor" else RECORDER_UID)
        assert s.verify_chain() == []

    def test_a_chain_of_version_1_entries_then_version_2_verifies(self, kit: Kit) -> None:
        """A journal written before the actor (version 1: no actor, its hash without one)
        goes on under version 2, and the whole chain verifies."""
        s = kit.store
        s.create(_request(), None)
        old = s.entries(A)[0]
        kit.rewrite(1, "actor", None)
        kit.rewrite(1, "hash", entry_hash(GENESIS, _fields(old), old.uid))
        assert s.entries(A)[0].version == 1 and s.verify_chain() == []
        s.transition(A, Status.APPROVED, at=T0, by="alice")
        assert [e.version for e in s.entries(A)] == [1, 2]
        assert s.verify_chain() == [] and s.unproven(A, {"amount": 1500}) is None

    def test_each_credential_is_recorded_under_chain_version_3(self, kit: Kit) -> None:
        """A request asked, voted on and decided with a credential keeps it in those entries
        (version 3, the hash covering it), after entries of versions 1 and 2 in one chain that
        verifies; a credential changed, taken off or added shows as an edit."""
        s = kit.store
        s.create(_request(B), None)  # version 2, made version 1 below
        old = s.entries(B)[0]
        kit.rewrite(1, "actor", None)
        kit.rewrite(1, "hash", entry_hash(GENESIS, _fields(old), old.uid))
        s.transition(B, Status.CANCELLED, at=T0, by="bob")  # version 2
        token, link = "token ci-bot (id c1)", "link alice"
        s.create(_request(), None, credential=token)
        s.record_vote(A, at=T0, by="alice", approve=True, reason="", count="1 of 2",
                      credential=link)  # fmt: skip
        s.transition(A, Status.APPROVED, at=T0, by="alice", credential=link)
        found = [(e.seq, e.version, e.credential) for e in s.entries()]
        assert found == [(1, 1, None), (2, 2, None), (3, 3, token), (4, 3, link), (5, 3, link)]
        assert CHAIN_VERSION == 3 and s.verify_chain() == []
        assert s.unproven(A, {"amount": 1500}) is None
        for seq, value in ((3, "token other (id c2)"), (4, None), (2, "session bob")):
            kit.rewrite(seq, "credential", value)
            assert any(f"entry {seq}" in p and "edited" in p for p in s.verify_chain()), value
            kit.rewrite(seq, "credential", {3: token, 4: link, 2: None}[seq])
        assert s.verify_chain() == []

    def test_the_rules_in_force_are_recorded_when_they_change(self, kit: Kit) -> None:
        """record_policy: a summary on the first load and each change, None when unchanged."""
        s = kit.store
        first = s.record_policy("rules: []\n", T0)
        assert first is not None and first.startswith("first load")
        assert s.record_policy("rules: []\n", T0 + HOUR) is None
        assert s.record_policy("rules: [x]\n", T0 + HOUR) is not None
        assert [at for at, _, _ in s.policy_changes()] == [T0 + HOUR, T0]

    def test_a_batch_commits_all_or_nothing(self, kit: Kit) -> None:
        """A batch that raises leaves nothing of its writes; one that ends keeps them all."""
        s = kit.store
        with pytest.raises(RuntimeError), s.batch():
            assert s.batching
            s.create(_request(), None)
            s.flag("a.md", "x", T0)
            raise RuntimeError("part way")
        assert not s.batching and s.get(A) is None and s.attention() == []
        with s.batch():
            s.create(_request(), None)
            with pytest.raises(DuplicateError):  # one write fails alone, the batch goes on
                s.create(_request(), None)
            s.create(_request(B), None)
        assert sorted(s.ids()) == [A, B] and s.last_seq() == 2

    def test_a_write_by_another_handle_wakes_a_watcher(self, kit: Kit) -> None:
        """watch calls wake soon after a write made through another handle on the store."""
        woke = threading.Event()
        other = kit.other()
        with kit.store.watch(woke.set):
            other.create(_request(), None)
            assert woke.wait(10), "no wake after another handle wrote"
        assert kit.store.status_of(A) is Status.PENDING
        if other is not kit.store:
            other.close()

    def test_one_daemon_lock_at_a_time(self, kit: Kit) -> None:
        """daemon_lock: a second acquire raises DaemonRunningError; release frees it."""
        s = kit.store
        assert not s.daemon_running()
        lock = s.daemon_lock().acquire()
        try:
            assert s.daemon_running()
            with pytest.raises(DaemonRunningError):
                kit.other().daemon_lock().acquire()
        finally:
            lock.release()
        assert not s.daemon_running()
        s.daemon_lock().acquire().release()


def _fields(e: Entry) -> tuple[object, ...]:
    """What an entry's hash covers besides its recorder, as the stores write it."""
    return (
        e.request_id, e.at, e.kind, e.from_status, e.to_status, e.by, e.reason, e.details,
        e.params_sha,
    )  # fmt: skip


def _credential(cid: str, name: str = "deploy-bot", **kw: object) -> Credential:
    fields: dict[str, object] = dict(
        id=cid,
        name=name,
        role=Role.AGENT,
        secret_sha="ab" * 32,
        created=T0,
        expires=T0 + 90 * 24 * HOUR,
    )
    fields.update(kw)
    return Credential(**fields)  # type: ignore[arg-type]


class TestPeopleAndCredentials:
    """What every JournalStore keeps of people, credentials, settings and the service log."""

    def test_a_person_is_found_by_the_name_as_compared_and_replaced_whole(self, kit: Kit) -> None:
        """save_person adds or replaces (by same_name), keeps created, logs the event."""
        s = kit.store
        s.save_person(
            Person("Alice", (1001,), ("json://127.0.0.1:9/a",)), T0, "owner", "person added"
        )
        s.save_person(Person("bob"), T0, "owner", "person added")
        alice = s.person(" ALICE ")
        assert alice is not None and alice.name == "Alice" and alice.uids == (1001,)
        assert (alice.created, alice.changed, alice.disabled) == (T0, T0, False)
        s.save_person(
            Person("alice", (1002, 1003), disabled=True), T0 + HOUR, "owner", "person set"
        )
        alice = s.person("Alice")
        assert alice is not None and alice.name == "alice" and alice.uids == (1002, 1003)
        assert (alice.notify, alice.disabled) == ((), True)
        assert (alice.created, alice.changed) == (T0, T0 + HOUR)
        assert [p.name for p in s.people()] == ["alice", "bob"] and s.person("carol") is None
        newest = s.service_log()[0]
        assert (newest.event, newest.subject, newest.by, newest.at) == (
            "person set",
            "alice",
            "owner",
            T0 + HOUR,
        )
        logged = " ".join(d for e in s.service_log() for d in e.details)
        assert "json" in logged and "127.0.0.1" not in logged  # a channel's kind, not its URL

    def test_credentials_are_kept_by_id_and_name_and_revoked_once(self, kit: Kit) -> None:
        """add_credential, credential, credentials(name) oldest first, revoke counts the live."""
        s = kit.store
        s.add_credential(_credential("c2", created=T0 + HOUR, actions=("deploy",)), T0, "owner")
        s.add_credential(_credential("c1"), T0, "owner")
        s.add_credential(_credential("c3", "Alice", role=Role.APPROVER, expires=None), T0, "o")
        with pytest.raises(DuplicateError, match="credential c1"):
            s.add_credential(_credential("c1"), T0, "owner")
        assert [c.id for c in s.credentials()] == ["c1", "c3", "c2"]
        assert [c.id for c in s.credentials("DEPLOY-BOT ")] == ["c1", "c2"]
        got = s.credential("c2")
        assert got is not None and got.actions == ("deploy",) and got.role is Role.AGENT
        assert got.expires == T0 + 90 * 24 * HOUR and got.revoked is None
        c3 = s.credential("c3")
        assert c3 is not None and c3.expires is None and c3.actions is None
        assert s.credential("nope") is None
        assert s.revoke_credentials(["c1", "c2", "nope"], T0 + HOUR, "owner", "by name") == 2
        assert s.revoke_credentials(["c1"], T0 + HOUR, "owner", "again") == 0
        assert s.credential("c1").revoked == T0 + HOUR  # type: ignore[union-attr]
        assert not s.credential("c1").live(T0 + 2 * HOUR)  # type: ignore[union-attr]
        log = s.service_log()
        assert [e.event for e in log] == ["token revoked"] * 2 + ["token added"] * 3
        assert "id c2" in log[0].details and "ab" * 32 not in repr(log)  # never the hash

    def test_marking_a_credential_used_touches_no_chain(self, kit: Kit) -> None:
        """credential_used sets last_used only: no service-log entry, no journal entry."""
        s = kit.store
        s.add_credential(_credential("c1"), T0, "owner")
        seq, logged = s.last_seq(), len(s.service_log())
        s.credential_used("c1", T0 + HOUR)
        s.credential_used("unknown", T0 + HOUR)  # nothing to mark, nothing raised
        assert s.credential("c1").last_used == T0 + HOUR  # type: ignore[union-attr]
        assert s.last_seq() == seq and len(s.service_log()) == logged
        assert kit.other().credential("c1").last_used == T0 + HOUR  # type: ignore[union-attr]
        assert s.verify_chain() == []

    def test_a_setting_is_logged_only_when_it_changes(self, kit: Kit) -> None:
        """set_setting: True and logged when new or changed, False and silent when the same."""
        s = kit.store
        assert s.setting("public_url") is None
        assert s.set_setting("public_url", "https://a.example", T0, "owner") is True
        assert s.set_setting("public_url", "https://a.example", T0, "owner") is False
        assert s.set_setting("public_url", "https://b.example", T0, "owner") is True
        assert s.setting("public_url") == "https://b.example"
        assert [e.details for e in s.service_log()] == [
            ("was https://a.example", "now https://b.example"),
            ("was not set", "now https://a.example"),
        ]

    def test_the_service_log_is_a_chain_of_its_own(self, kit: Kit) -> None:
        """log_service numbers entries; verify_chain reports an edited or removed one."""
        s = kit.store
        for n in range(4):
            entry = s.log_service(T0, "server", "auth failed", "127.0.0.1", (f"{n + 1} tries",))
            assert entry.seq == n + 1 and entry.details == (f"{n + 1} tries",)
        assert [e.seq for e in s.service_log(limit=2)] == [4, 3]
        assert s.last_seq() == 0 and s.verify_chain() == []  # the requests' chain is apart
        kit.tamper_service(2, "mallory")
        assert any("service log entry 2" in p and "edited" in p for p in s.verify_chain())
        kit.tamper_service(2, "server")
        assert s.verify_chain() == []
        kit.tamper_service(3, None)
        assert any("service log entry 4" in p and "removed" in p for p in s.verify_chain())

    def test_a_removed_newest_service_entry_shows(self, kit: Kit) -> None:
        """Removing the last service-log entry is reported, and the next entry does not hide it."""
        s = kit.store
        s.log_service(T0, "owner", "person added", "alice")
        s.log_service(T0, "owner", "person added", "bob")
        kit.tamper_service(2, None)
        assert any("service log entry 2" in p and "missing" in p for p in s.verify_chain())
        assert s.log_service(T0, "owner", "person added", "carol").seq == 3
        assert s.verify_chain() != []

    def test_a_change_and_its_log_line_commit_together(self, kit: Kit) -> None:
        """A batch that fails undoes a person, a credential and their log entries alike."""
        s = kit.store
        with pytest.raises(RuntimeError), s.batch():
            s.save_person(Person("alice"), T0, "owner", "person added")
            s.add_credential(_credential("c1", "alice", role=Role.APPROVER), T0, "owner")
            raise RuntimeError("part way")
        assert s.people() == [] and s.credentials() == [] and s.service_log() == []
        s.log_service(T0, "owner", "person added", "bob")
        assert s.verify_chain() == []

    def test_verify_holds_people_credentials_and_settings_against_the_service_log(
        self, kit: Kit
    ) -> None:
        """A row changed, added or removed behind the log's back is reported; last_used is not."""
        s = kit.store
        alice = Person("alice", (1001,), ("json://127.0.0.1:9/alice",))
        s.save_person(alice, T0, "owner", "person added")
        s.save_person(Person("bob"), T0, "owner", "person added")
        s.add_credential(_credential("c1", "bot"), T0, "owner")
        s.add_credential(_credential("c2", "alice", role=Role.APPROVER), T0, "owner")
        s.revoke_credentials(["c1"], T0 + HOUR, "owner", "by name")
        s.set_setting("service_uid", "1234", T0, "owner")
        s.credential_used("c2", T0 + HOUR)
        assert s.verify_chain() == []
        logged = repr(s.service_log())
        assert "127.0.0.1" not in logged and "ab" * 32 not in logged  # hashes of rows only
        revoked = s.credential("c1")
        assert revoked is not None
        # The revoked agent token made alice's approver token: name, role, not revoked.
        kit.forge(replace(revoked, revoked=None, role=Role.APPROVER, name="alice"))
        assert [p for p in s.verify_chain() if "token c1" in p and "differs" in p]
        kit.forge(revoked)
        assert s.verify_chain() == []
        kit.forge(replace(revoked, secret_sha="cd" * 32))  # another secret, same fields
        assert any("token c1" in p for p in s.verify_chain())
        kit.forge(revoked)
        kit.forge(replace(alice, notify=("json://127.0.0.1:9/mallory",)))  # same channel kind
        kit.forge(Person("mallory", (1002,)))
        kit.forge(_credential("c9", "mallory", role=Role.APPROVER))
        kit.forge(("service_uid", "0"))
        kit.drop("bob")
        problems = s.verify_chain()
        for found in (
            "person alice: differs",
            "person mallory: not in the service log",
            "token c9 (mallory): not in the service log",
            "setting service_uid",
            "person bob: in the service log but gone",
        ):
            assert [p for p in problems if found in p], (found, problems)
        assert len(problems) == 5

    def test_an_allow_is_kept_listed_and_logged(self, kit: Kit) -> None:
        """add_allow: kept for every handle, listed oldest first, expired ones left out given
        now, its name taken once, and logged as "allow added" in the service log."""
        from hitl_vault.policy.always import Allow

        s = kit.store
        first = Allow("always-a", "Bash", {"command": "git status"}, "alice", T0, T0 + HOUR, "a")
        later = Allow("always-b", "pay", {"n": 1}, "bob", T0 + HOUR, T0 + 3 * HOUR, "b",
                      session="claude:s1")  # fmt: skip
        s.add_allow(first, "alice")
        s.add_allow(later, "bob")
        assert s.allows() == [first, later] and kit.other().allows() == [first, later]
        assert s.allows(T0 + 2 * HOUR) == [later]  # the first one ended
        with pytest.raises(DuplicateError):
            s.add_allow(first, "alice")
        log = s.service_log()
        assert [(e.event, e.subject, e.by) for e in log] == [
            ("allow added", "always-b", "bob"),
            ("allow added", "always-a", "alice"),
        ]
        assert 'command "git status"' in " ".join(log[1].details)
        assert s.verify_chain() == []

    def test_an_allow_is_revoked_once_and_logged(self, kit: Kit) -> None:
        """revoke_allow: True and logged the first time, False and silent after; gone from
        allows() for every handle."""
        from hitl_vault.policy.always import Allow

        s = kit.store
        s.add_allow(Allow("always-a", "pay", {"n": 1}, "alice", T0, T0 + HOUR, "a"), "alice")
        assert s.revoke_allow("always-a", T0, "bob") is True
        assert s.revoke_allow("always-a", T0, "bob") is False
        assert s.revoke_allow("never-made", T0, "bob") is False
        assert s.allows() == [] and kit.other().allows() == []
        log = s.service_log()
        events = [(e.event, e.by) for e in log]
        assert events == [("allow revoked", "bob"), ("allow added", "alice")]

    def test_the_link_key_is_made_with_the_store_and_kept(self, kit: Kit) -> None:
        """link_key: 32 bytes or more, the same for every handle and every call, logged nowhere."""
        key = kit.store.link_key()
        assert len(key) >= 32
        assert kit.store.link_key() == key and kit.other().link_key() == key
        assert kit.store.service_log() == []  # making it is no change to log

    def test_a_link_is_spent_once(self, kit: Kit) -> None:
        """spend_link: True the first time, False after (for every handle); link_spent says so."""
        s = kit.store
        assert s.link_spent("h1") is False
        assert s.spend_link("h1", "req-1", T0) is True
        assert s.spend_link("h1", "req-1", T0) is False
        assert kit.other().link_spent("h1") is True and s.link_spent("h2") is False
        assert kit.other().spend_link("h1", "req-1", T0) is False

    def test_a_link_spent_in_a_batch_that_fails_is_not_spent(self, kit: Kit) -> None:
        """A decision that fails takes its link's spending with it: the batch is all or none."""
        s = kit.store
        with pytest.raises(RuntimeError), s.batch():
            assert s.spend_link("h1", "req-1", T0) is True
            raise RuntimeError("the decision failed")
        assert s.link_spent("h1") is False
        with s.batch():
            assert s.spend_link("h1", "req-1", T0) is True
            assert s.spend_link("h1", "req-1", T0) is False  # inside the same batch too
        assert kit.other().link_spent("h1") is True


def _people(s: JournalStore, *names: str) -> None:
    """Add these people, before T0 (a session is opened for someone in people only)."""
    for name in names:
        s.save_person(Person(name), T0 - HOUR, "owner", "person added")


class TestSessions:
    """What every JournalStore keeps of the web inbox's sign-in links and sessions."""

    def test_a_sign_in_link_is_kept_by_hash_logged_and_spent_once(self, kit: Kit) -> None:
        """add_sign_in_link logs it; spend_sign_in_link is True once, for every handle, and
        logged."""
        from hitl_vault.identity import SignInLink

        s = kit.store
        link = SignInLink("ab" * 32, "alice", T0, T0 + HOUR)
        s.add_sign_in_link(link, T0, "owner")
        with pytest.raises(DuplicateError):
            s.add_sign_in_link(link, T0, "owner")
        assert s.sign_in_link("ab" * 32) == link and s.sign_in_link("cd" * 32) is None
        assert s.spend_sign_in_link("ab" * 32, T0 + HOUR / 2) is True
        assert kit.other().spend_sign_in_link("ab" * 32, T0 + HOUR / 2) is False
        assert s.spend_sign_in_link("cd" * 32, T0) is False
        assert kit.other().sign_in_link("ab" * 32).used == T0 + HOUR / 2  # type: ignore[union-attr]
        used, made = s.service_log()
        assert (made.event, made.subject, made.by) == ("sign-in link made", "alice", "owner")
        assert (used.event, used.subject, used.by) == ("sign-in link used", "alice", "alice")
        assert used.details[0] == f"link {'ab' * 6}"
        assert "ab" * 32 not in repr([made, used]) and s.verify_chain() == []

    def test_a_session_is_logged_and_ends_once_per_person_or_alone(self, kit: Kit) -> None:
        """add_session logs the sign-in; end_sessions ends the open ones (of a name, or one)."""
        from hitl_vault.identity import Session

        s = kit.store
        _people(s, "alice", "bob")
        one = Session("01" * 32, "Alice", T0, T0 + 12 * HOUR, "sign-in link", "10.0.0.5")
        two = Session(
            "02" * 32, "alice", T0, T0 + 12 * HOUR, "token 0123456789ab", credential="0123456789ab"
        )
        old = Session("03" * 32, "alice", T0, T0 + HOUR, "token 0123456789ab")
        bob = Session("04" * 32, "bob", T0, T0 + 12 * HOUR, "sign-in link")
        for made in (one, two, old, bob):
            assert s.add_session(made, T0, "alice") is True
        with pytest.raises(DuplicateError):
            s.add_session(one, T0, "alice")
        assert s.session("01" * 32) == one and s.session("ff" * 32) is None
        assert kit.other().session("02" * 32) == two and one.credential == ""
        assert one.open(T0) and not old.open(T0 + HOUR)
        assert s.end_sessions("ALICE", T0 + 2 * HOUR, "alice", "signed out", "02" * 32) == 1
        assert s.end_sessions("alice", T0 + 2 * HOUR, "owner", "alice disabled") == 1  # one
        assert s.end_sessions("alice", T0 + 2 * HOUR, "owner", "again") == 0
        assert kit.other().session("01" * 32).ended == T0 + 2 * HOUR  # type: ignore[union-attr]
        assert s.session("03" * 32).ended is None  # type: ignore[union-attr]  # expired, not ended
        assert s.session("04" * 32).open(T0 + 2 * HOUR)  # type: ignore[union-attr]
        log = s.service_log()
        assert [(e.event, e.details[0]) for e in log[:2]] == [
            ("session ended", f"session {'01' * 6}"),
            ("session ended", f"session {'02' * 6}"),
        ]
        assert log[0].details[1] == "alice disabled"
        signed_in = log[-3]  # after the two people added
        assert signed_in.event == "signed in" and signed_in.subject == "Alice"
        assert signed_in.details[:3] == (
            f"session {'01' * 6}",
            "with sign-in link",
            "from 10.0.0.5",
        )
        assert "01" * 32 not in repr(log) and s.verify_chain() == []

    def test_a_session_is_opened_only_for_someone_enabled_and_unchanged_since(
        self, kit: Kit
    ) -> None:
        """add_session writes nothing, False, for a person unknown, disabled or changed since."""
        from hitl_vault.identity import Session

        s = kit.store
        _people(s, "alice", "bob")
        s.save_person(Person("bob", disabled=True), T0, "owner", "person disabled")
        s.save_person(Person("carol"), T0 + HOUR, "owner", "person added")  # after the session
        before = len(s.service_log())
        for n, name in enumerate(("dave", "BOB", "carol")):
            made = Session(f"0{n}" * 32, name, T0, T0 + HOUR, "sign-in link")
            assert s.add_session(made, T0, name) is False
            assert kit.other().session(made.key) is None
        assert len(s.service_log()) == before
        assert s.add_session(Session("09" * 32, "ALICE", T0, T0 + HOUR, "sign-in link"), T0, "a")

    def test_a_sign_in_and_its_log_line_commit_together(self, kit: Kit) -> None:
        """A batch that fails undoes a spent link, a session and their log entries alike."""
        from hitl_vault.identity import Session, SignInLink

        s = kit.store
        _people(s, "alice")
        s.add_sign_in_link(SignInLink("ab" * 32, "alice", T0, T0 + HOUR), T0, "owner")
        with pytest.raises(RuntimeError), s.batch():
            assert s.spend_sign_in_link("ab" * 32, T0)
            s.add_session(Session("01" * 32, "alice", T0, T0 + HOUR, "sign-in link"), T0, "a")
            raise RuntimeError("part way")
        assert s.session("01" * 32) is None and len(s.service_log()) == 2
        assert s.sign_in_link("ab" * 32).used is None  # type: ignore[union-attr]

    def test_verify_holds_sessions_and_sign_in_links_against_the_service_log(
        self, kit: Kit
    ) -> None:
        """A session or a link written, changed or removed behind the log's back is reported."""
        from hitl_vault.identity import Session, SignInLink

        s = kit.store
        _people(s, "alice")
        s.add_sign_in_link(SignInLink("ab" * 32, "alice", T0, T0 + HOUR), T0, "owner")
        s.add_session(Session("01" * 32, "alice", T0, T0 + HOUR, "sign-in link"), T0, "alice")
        assert s.spend_sign_in_link("ab" * 32, T0) and s.end_sessions("alice", T0, "a", "out")
        assert s.verify_chain() == []
        forged = Session("02" * 32, "mallory", T0, T0 + 12 * HOUR, "token 0123456789ab")
        if isinstance(s, Journal):
            db = sqlite3.connect(s.path, isolation_level=None)
            db.execute(
                "INSERT INTO sessions VALUES (?,?,?,?,?,?,?,NULL,'')",
                (forged.key, "mallory", "mallory", format_ts(T0), format_ts(T0 + 12 * HOUR),
                 forged.how, ""),
            )  # fmt: skip
            db.execute("UPDATE sessions SET ended = NULL WHERE key = ?", ("01" * 32,))
            db.execute("DELETE FROM sign_in_links")
            db.close()
        elif isinstance(s, MemoryJournal):
            state = s._m.state
            state.sessions[forged.key] = forged
            state.sessions["01" * 32] = replace(state.sessions["01" * 32], ended=None)
            state.sign_in_links.clear()
        else:
            import psycopg

            with psycopg.connect(s._db.url, autocommit=True) as pg:  # type: ignore[attr-defined]
                pg.execute(
                    "INSERT INTO sessions (key, name, person, created, expires, how, client) "
                    "VALUES (%s,%s,%s,%s,%s,%s,'')",
                    (forged.key, "mallory", "mallory", format_ts(T0),
                     format_ts(T0 + 12 * HOUR), forged.how),
                )  # fmt: skip
                pg.execute("UPDATE sessions SET ended = NULL WHERE key = %s", ("01" * 32,))
                pg.execute("DELETE FROM sign_in_links")
        problems = "\n".join(s.verify_chain())
        assert f"session {'02' * 6} (mallory): not in the service log" in problems
        assert f"session {'01' * 6} (alice): differs from the service log" in problems
        assert f"sign-in link {'ab' * 6}: in the service log but gone" in problems

    def test_verify_names_a_used_link_set_unused_and_a_session_let_off_its_token(
        self, kit: Kit
    ) -> None:
        """A spent link re-armed, or a session's token cleared, behind the log's back is named."""
        from hitl_vault.identity import Session, SignInLink

        s = kit.store
        _people(s, "alice")
        s.add_sign_in_link(SignInLink("ab" * 32, "alice", T0, T0 + HOUR), T0, "owner")
        assert s.spend_sign_in_link("ab" * 32, T0)
        by_token = Session("01" * 32, "alice", T0, T0 + HOUR, "token 0123456789ab", "", None,
                           "0123456789ab")  # fmt: skip
        s.add_session(by_token, T0, "alice")
        assert s.verify_chain() == []
        rearm = "UPDATE sign_in_links SET used = NULL"
        loose = "UPDATE sessions SET credential = ''"
        if isinstance(s, Journal):
            db = sqlite3.connect(s.path, isolation_level=None)
            db.execute(rearm)
            db.execute(loose)
            db.close()
        elif isinstance(s, MemoryJournal):
            state = s._m.state
            state.sign_in_links["ab" * 32] = replace(state.sign_in_links["ab" * 32], used=None)
            state.sessions["01" * 32] = replace(state.sessions["01" * 32], credential="")
        else:
            import psycopg

            with psycopg.connect(s._db.url, autocommit=True) as pg:  # type: ignore[attr-defined]
                pg.execute(rearm)
                pg.execute(loose)
        problems = "\n".join(s.verify_chain())
        assert f"sign-in link {'ab' * 6} (alice): differs from the service log" in problems
        assert f"session {'01' * 6} (alice): differs from the service log" in problems
