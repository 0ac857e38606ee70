"""A decision's channel is a record only the service writes: someone's text that claims one
(``approved by alice via api``) is marked in the note however it is written, wherever it
is shown, and the history lines the service writes are not; under ``authenticated:`` the
note, Needs attention and the refusal name the web inbox.

A real vault on disk and real SQLite, shared by the module; no service, no daemon.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from hitl_vault import Status, Vault
from hitl_vault.cli.template import init_vault
from hitl_vault.errors import DecisionRefusedError
from hitl_vault.identity import (
    PUBLIC_URL,
    Proof,
    channel_claims,
    unclaimed_text,
)
from hitl_vault.model import Origin
from hitl_vault.notes.callout import callout, callouts_written
from hitl_vault.notes.claims import unclaimed
from hitl_vault.notes.render import history_line
from hitl_vault.policy.quorum import proof_needed, proven_ways

from .test_identity import RULES, as_service, flagged

MARK = "**(not a record: someone's text)**"
AT = datetime(2026, 1, 1, tzinfo=UTC)

LOOK_ALIKES = {
    "a Cyrillic i in via": "approved by alice v\u0456a api",
    "a Cyrillic a in api": "approved by alice via \u0430pi",
    "a Greek omicron in socket": "approved by alice via s\u03bfcket",
    "Greek capitals": "APPROVED BY ALICE VI\u0391 \u0391P\u0399",
    "a Cyrillic capital in BY": "approved \u0412Y alice via api",
    "a Cyrillic e and o": "r\u0435j\u0435cted by bob via s\u043ecket",
    "Cherokee capitals": "approved by alice \u13d9IA API",
    "an Armenian o in session": "approved by alice via sessi\u0585n",
    "a Greek nu for v": "approved by alice \u03bdia link",
    "a zero for o": "appr0ved by alice via s0cket",
}
BLANKS = {
    "a Hangul filler": "approved by alice via\u3164api",
    "a Hangul choseong filler": "approved by alice via\u115fapi",
    "a Hangul jungseong filler": "approved by alice via\u1160api",
    "a half-width Hangul filler": "approved\uffa0by alice via api",
    "a braille blank": "approved by alice via\u2800socket",
    "a tab": "approved by alice via\tapi",
    "an ideographic space": "approved\u3000by alice via api",
    "a zero-width space inside via": "approved by alice vi\u200ba api",
    "a zero-width space between words": "approved\u200bby alice via\u200bapi",
    "a tag character between words": "approved by alice via\U000e0020api",
    "a combining accent": "approved by alice via\u0301 api",
    "an accented letter": "approved by alice \u1e7dia api",
    "a soft hyphen inside a word": "appro\u00adved by alice via api",
}
OTHER_WORDS = {
    "voted": "alice voted (1 of 2) via api",
    "approval": "alice's approval came via api",
    "a separator between": "approved by alice \u00b7 via api",
}


@pytest.mark.parametrize("text", LOOK_ALIKES.values(), ids=list(LOOK_ALIKES))
def test_a_claim_in_look_alike_letters_is_found(text: str) -> None:
    """Cyrillic, Greek, Armenian, Cherokee look-alikes of the claim's letters are read as Latin."""
    assert channel_claims(text) == [len(text)]


@pytest.mark.parametrize("text", BLANKS.values(), ids=list(BLANKS))
def test_a_claim_with_blank_or_invisible_characters_is_found(text: str) -> None:
    """Blank letters and spaces read as spaces; invisible characters join or split words."""
    assert channel_claims(text) == [len(text)]


@pytest.mark.parametrize("text", OTHER_WORDS.values(), ids=list(OTHER_WORDS))
def test_a_claim_in_other_words_of_a_decision_is_found(text: str) -> None:
    """``voted``, ``approval`` and a separator inside the phrase claim a channel as well."""
    assert channel_claims(text) == [len(text)]


def test_text_that_claims_no_decision_is_left_as_written() -> None:
    """``deploy via api``, ``bypass via socket`` and plain prose are not marked."""
    for text in ("deploy via api", "bypass the cache via socket", "ship by noon", "vía api"):
        assert unclaimed(text) == text


def test_the_mark_follows_the_accent_its_last_letter_carries() -> None:
    """The mark goes after a combining mark that belongs to the claim's last letter."""
    text = "approved by alice via api\u0301 then more"
    assert unclaimed_text(text) == (
        "approved by alice via api\u0301 (not a record: someone's text) then more"
    )


def test_pages_get_the_mark_in_plain_text() -> None:
    """``unclaimed_text`` marks text a page escapes itself, in plain words, not Markdown."""
    assert unclaimed_text("ok, approved by bob v\u0456a api") == (
        "ok, approved by bob v\u0456a api (not a record: someone's text)"
    )
    assert unclaimed_text("<b>deploy</b> via api") == "<b>deploy</b> via api"


@pytest.fixture(scope="module")
def vault(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Vault]:
    """A vault whose rules count proven approvals only, as the service's user (one for the
    module: each test asks its own requests)."""
    path = tmp_path_factory.mktemp("claims") / "vault"
    init_vault(path)
    (path / "hitl-vault.yaml").write_text(RULES)
    with Vault(path) as v:
        as_service(v)
        yield v


def note_text(vault: Vault, request_id: str) -> str:
    path = vault.get(request_id).path
    assert path is not None
    return (vault.root / path).read_text(encoding="utf-8")


def verify_problems(vault: Vault, request_id: str) -> list[str]:
    """What ``verify`` says about one request."""
    return [p for p in vault.verify() if request_id in p]


def test_claims_in_params_origin_reason_and_heading_are_marked(vault: Vault) -> None:
    """A param (key, line, JSON value), the origin line, the rejection's reason in the
    callout and the history, and a heading with a blank letter: each marked; verify clean."""
    claim = "approved by alice via api"
    made = vault.engine.submit(
        "payment",
        {
            "note": claim,
            "lines": "first\n- 2026-12-06T10:00:00Z · pending → approved · by alice v\u0456a api",
            "nested": {"why": "bob voted via socket"},
            "by carol via\u3164link": 1,
        },
        summary="Pay (approved by bob via\u3164api)",
        requested_by="bot",
        origin=Origin("0123456789ab", session="s1) · approved by alice via api", client="x"),
    ).id
    vault.reject(made, by="bob", reason=f"{claim}, really")
    text = note_text(vault, made)
    assert f"# Pay (approved by bob via\u3164api {MARK})\n" in text
    assert f"| note | {claim} {MARK} |\n" in text
    assert (
        f"<br>\\- 2026-12-06T10:00:00Z · pending → approved · by alice v\u0456a api {MARK} |"
        in text
    )
    assert f'| nested | {{"why": "bob voted via socket {MARK}"}} |' in text
    assert f"| by carol via\u3164link {MARK} | 1 |" in text
    assert f"(session s1) · approved by alice via api {MARK}, client x)." in text
    assert f"> [!failure] Rejected\n> {claim} {MARK}, really\n" in text
    assert f'· by bob · "{claim} {MARK}, really"\n' in text
    assert verify_problems(vault, made) == []


def test_the_history_the_service_writes_is_not_marked(vault: Vault) -> None:
    """Proven votes and decisions (``alice approved (1 of 2) via api``) stay unmarked, a
    vote's typed reason is marked, and verify is clean."""
    made = vault.submit("deploy", {"v": 1}, requested_by="bot").id
    vault.engine.approve(made, reason="approved by bob via link", proof=Proof("alice", "api"))
    vault.engine.approve(made, proof=Proof("bob", "socket", "uid 1001"))
    text = note_text(vault, made)
    history = text[text.index("## History") :]
    assert " alice approved (1 of 2) via api · " in history
    assert f'"approved by bob via link {MARK}"' in history
    assert " bob approved (2 of 2) via socket from uid 1001" in history
    assert "pending → approved" in history
    assert MARK not in history.replace(f"via link {MARK}", "")
    assert verify_problems(vault, made) == []


def test_a_history_line_written_before_the_marking_still_verifies(vault: Vault) -> None:
    """A note keeps the unmarked reason an earlier version wrote: verify takes it as is."""
    made = vault.submit("payment", {"v": 1}, requested_by="bot").id
    vault.reject(made, by="bob", reason="approved by alice via api")
    step = vault.get(made).history[-1]
    path = vault.root / str(vault.get(made).path)
    text = path.read_text(encoding="utf-8")
    assert history_line(step) in text
    path.write_text(text.replace(history_line(step), history_line(step, marked=False)))
    assert MARK not in path.read_text(encoding="utf-8").split("## History")[1]
    assert verify_problems(vault, made) == []


def test_the_ways_to_decide_name_the_web_inbox_beside_the_others() -> None:
    """``authenticated: true`` names the web inbox with the API and the socket; its
    address where the service's public URL is known."""
    proven = frozenset({"api", "session", "socket"})
    assert proven_ways(proven) == (
        "`hitl-vault --server URL approve`, the service's web inbox or the CLI through the "
        "service's socket"
    )
    assert "the web inbox at https://vault.example.com/ or" in proven_ways(
        proven, "https://vault.example.com"
    )
    assert proven_ways(frozenset({"session"})) == "the service's web inbox"
    assert proven_ways(frozenset({"socket", "link"})) == (
        "the CLI through the service's socket or the decision link sent to you"
    )
    assert "the service's web inbox" in proof_needed(proven)


def test_the_note_and_needs_attention_name_the_web_inbox(vault: Vault) -> None:
    """A new note's callout names the inbox at the public URL the store keeps, and an
    unproven approval's refusal and Needs attention name the inbox."""
    vault.engine.journal.set_setting(PUBLIC_URL, "https://vault.example.com", AT, "owner")
    made = vault.submit("payment", {"v": 1}, requested_by="bot").id
    assert (
        "> Its rules count only an approval proven through api, session or socket: approve "
        "with `hitl-vault --server URL approve`, the web inbox at https://vault.example.com/ "
        "or the CLI through the service's socket.\n"
    ) in note_text(vault, made)
    with pytest.raises(DecisionRefusedError, match="the service's web inbox"):
        vault.approve(made, by="alice")
    assert "the service's web inbox or the CLI" in flagged(vault)


def test_a_callout_written_before_the_inbox_was_named_is_replaced(vault: Vault) -> None:
    """A pending note with the callout an earlier version wrote shows Approved once decided."""
    made = vault.submit("payment", {"v": 1}, requested_by="bot").id
    request = vault.get(made)
    proven = frozenset({"api", "session", "socket"})
    inbox = vault.engine.journal.setting(PUBLIC_URL)  # another test may have set it
    now = callout(request.status, request.expires, request.rule, None, proven=proven, inbox=inbox)
    before = callout(
        request.status, request.expires, request.rule, None, proven=proven, marked=False
    )
    assert "the service's signed-in pages" not in "\n".join(before)
    assert before != now and before in callouts_written(
        request.status, request.expires, request.rule, None, proven=proven, inbox=inbox
    )
    path = vault.root / str(request.path)
    path.write_text(path.read_text(encoding="utf-8").replace("\n".join(now), "\n".join(before)))
    assert vault.engine.approve(made, proof=Proof("alice", "api")).status is Status.APPROVED
    text = note_text(vault, made)
    assert "> [!success] Approved" in text and "Its rules count only" not in text
