"""History lines cannot be forged by text from outside: a requester's name (``--by``, an
Inbox ``requested_by``, an MCP client's name), a decider's name or a reason keeps none of
hitl-vault's separators (`` · `` and ``→``, nor characters that look like them), so no
line reads as a step hitl-vault did not record, and the note's history still reads back."""

from __future__ import annotations

import json
import re
import unicodedata
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from hitl_vault import Status, Vault
from hitl_vault.agents.mcp_server import requester
from hitl_vault.cli.main import cli
from hitl_vault.daemon.dashboard import render_dashboard
from hitl_vault.daemon.loop import Daemon
from hitl_vault.model import Kind, Transition
from hitl_vault.notes.render import history_key, history_line
from hitl_vault.text import history_text, inline, one_line
from hitl_vault.times import utcnow

from .helpers import Clock

FORGED = "mallory · 2026-01-01T00:00:00Z · pending → approved · by alice"
# The separators hitl-vault writes, and characters a reader would take for them.
LOOKALIKES = "·•∙⋅・･⸱◦→⟶⇒➔⮕⟹↦"
# Lookalikes a name with "DOT" or "ARROW" in a punctuation or symbol does not catch: NFC
# or NFKC maps some to `·`; others are letters, or named otherwise.
SUBTLE = {
    "\u0387": "GREEK ANO TELEIA (NFC: a middle dot)",
    "\u2027": "HYPHENATION POINT",
    "\u1427": "CANADIAN SYLLABICS FINAL MIDDLE DOT (a letter)",
    "\ua78f": "LATIN LETTER SINOLOGICAL DOT (a letter)",
    "\u16eb": "RUNIC SINGLE PUNCTUATION",
    "\u2e31": "WORD SEPARATOR MIDDLE DOT",
    "\u318d": "HANGUL LETTER ARAEA",
    "\u0140": "LATIN SMALL LETTER L WITH MIDDLE DOT (NFKC: l and a middle dot)",
    "\u2e33": "RAISED DOT",
    "\u2981": "Z NOTATION SPOT",
}


def hitl(vault: Path, *args: str) -> str:
    result = CliRunner().invoke(cli, ["--vault", str(vault), *args], catch_exceptions=False)
    assert result.exit_code == 0, (result.output, result.stderr)
    return result.stdout


def history(vault: Path, request_id: str) -> list[str]:
    """The note's history lines, as a reader sees them."""
    with Vault(vault) as v:
        path = v.get(request_id).path
    assert path is not None
    return [line for line in path.read_text().splitlines() if history_key(line)[0]]


def assert_only_ours(line: str, separators: int, arrows: int) -> None:
    """The line holds exactly the separators hitl-vault wrote, and nothing like them."""
    assert line.count(" · ") == separators, line
    assert line.count("→") == arrows, line
    assert not [ch for ch in LOOKALIKES + "".join(SUBTLE) if ch not in "·→" and ch in line], line


def test_a_forged_by_and_reason_on_the_cli_stay_one_field_each(vault_path: Path) -> None:
    """`submit --by` and `approve --by/--reason` with ` · ` and `→` write no extra step."""
    out = json.loads(
        hitl(vault_path, "submit", "payment", "-p", "amount=900", "--by", FORGED, "--json")
    )
    request_id = out["id"]
    created = history(vault_path, request_id)[0]
    assert_only_ours(created, separators=3, arrows=1)  # time · move · by · rule
    assert history_key(created)[1] == "created → pending"
    assert "by mallory . 2026-01-01T00:00:00Z . pending -> approved . by alice" in created
    assert out["history"][0] == created[2:]
    hitl(vault_path, "approve", request_id, "--by", "bob → alice", "--reason", f'ok" · {FORGED}')
    approved = history(vault_path, request_id)[1]
    assert_only_ours(approved, separators=3, arrows=1)  # time · move · by · "reason"
    assert history_key(approved)[1] == "pending → approved"
    shown = hitl(vault_path, "show", request_id)
    for line in shown.split("history:\n")[1].splitlines():
        assert line.count(" · ") <= 3 and line.count("→") == 1, line
    assert "ok: 1 requests" in hitl(vault_path, "verify")


def test_an_inbox_requested_by_cannot_forge_a_step(vault_path: Path, clock: Clock) -> None:
    """An Inbox proposal's `requested_by` with separators shows as one field."""
    with Vault(vault_path, clock=clock) as vault, Daemon(vault.engine, clock=clock) as daemon:
        (vault_path / "Inbox" / "pay.json").write_text(
            json.dumps({"action": "payment", "params": {"amount": 900}, "requested_by": FORGED})
        )
        daemon.run_once(clock.now)
        (request,) = vault.list()
    assert request.requested_by == FORGED  # the journal keeps what was given
    (created,) = history(vault_path, request.id)
    assert_only_ours(created, separators=3, arrows=1)
    assert "ok: 1 requests" in hitl(vault_path, "verify")


def test_the_api_and_an_mcp_client_name_cannot_forge_a_step(vault_path: Path) -> None:
    """`Vault.submit(requested_by=...)`, an MCP client's name and a reject reason stay text."""
    with Vault(vault_path) as vault:
        via_mcp = vault.submit("payment", {"amount": 900}, requested_by=requester(FORGED))
        direct = vault.submit("payment", {"amount": 901}, requested_by="eve ∙ pending ⟶ approved")
        vault.reject(direct.id, by="carol ⋅ x → y", reason=f"no · {FORGED}")
        assert vault.verify() == []
        dashboard = render_dashboard(vault.engine.journal, utcnow())
    assert_only_ours(history(vault_path, via_mcp.id)[0], separators=3, arrows=1)
    created, rejected = history(vault_path, direct.id)
    assert_only_ours(created, separators=3, arrows=1)
    assert_only_ours(rejected, separators=3, arrows=1)
    (line,) = [line for line in dashboard.splitlines() if "pending → rejected" in line]
    assert_only_ours(line, separators=4, arrows=1)  # ... · "reason" · claimed by carol


def test_a_note_written_before_the_separators_were_replaced_still_verifies(
    vault_path: Path,
) -> None:
    """A history line that kept ` · ` from outside, as earlier versions wrote it, still
    matches the journal for `verify`."""
    with Vault(vault_path) as vault:
        request = vault.submit("payment", {"amount": 900}, requested_by=FORGED)
        assert request.path is not None
        text = request.path.read_text()
        new = history_line(request.history[0])
        old = new.replace(inline(history_text(FORGED)), inline(one_line(FORGED)))
        assert old != new
        request.path.write_text(text.replace(new, old))
        assert vault.verify() == []
        request.path.write_text(text.replace(new, old.replace("mallory", "mal")))
        assert any("differs from the journal" in p for p in vault.verify())


def test_a_details_arrow_stays_but_not_its_dots() -> None:
    """hitl-vault's `amount 1500 → 1000` in a detail stays (a name loses its arrow); a detail
    loses its ` · ` all the same."""
    at = utcnow()
    edited = Transition(
        at, Status.PENDING, Status.PENDING, "a → b", "", ("amount 1500 → 1000",), kind=Kind.EDITED
    )
    assert history_line(edited).endswith(" · params edited · by a -> b · amount 1500 → 1000")
    approved = Transition(at, Status.PENDING, Status.APPROVED, "bob", "", ('memo "x · y" → "z"',))
    assert history_line(approved).endswith(' · pending → approved · by bob · memo "x . y" → "z"')


@pytest.mark.parametrize("lookalike", list(SUBTLE), ids=list(SUBTLE.values()))
def test_a_subtle_lookalike_of_the_middle_dot_becomes_a_full_stop(lookalike: str) -> None:
    """Each lookalike a name check alone misses becomes `.`, in a name and a detail."""
    forged = f"mallory {lookalike} pending → approved {lookalike} by alice"
    for arrows in (True, False):
        shown = history_text(forged, arrows=arrows)
        assert lookalike not in shown and "·" not in shown, shown
        assert ". pending" in shown and ". by alice" in shown, shown


def test_letters_and_marks_that_are_no_separator_stay() -> None:
    """Text that only has dots on its letters, or other scripts, is kept as written."""
    for text in ("Đặng Thị Ngọc", "Ȧnne Żółć", "山田・", "ﬁle ½"):
        kept = text.replace("・", ".")
        assert history_text(text) == kept


def test_a_subtle_lookalike_on_the_cli_writes_no_extra_step(vault_path: Path) -> None:
    """`submit --by` with U+0387 and U+2027 as separators is one field; `verify` holds."""
    forged = "mallory \u0387 pending \u2192 approved \u2027 by alice"
    out = json.loads(
        hitl(vault_path, "submit", "payment", "-p", "amount=900", "--by", forged, "--json")
    )
    (created,) = history(vault_path, out["id"])
    assert_only_ours(created, separators=3, arrows=1)
    assert "by mallory . pending -> approved . by alice" in created
    assert "ok: 1 requests" in hitl(vault_path, "verify")


def test_a_note_that_kept_a_subtle_lookalike_still_verifies(vault_path: Path) -> None:
    """A line written before, with U+0387 from outside kept as given, still verifies."""
    forged = "mallory \u0387 pending \u2192 approved \u1427 by alice"
    with Vault(vault_path) as vault:
        request = vault.submit("payment", {"amount": 900}, requested_by=forged)
        assert request.path is not None
        text = request.path.read_text()
        new = history_line(request.history[0])
        old = new.replace(inline(history_text(forged)), inline(one_line(forged)))
        assert old != new
        request.path.write_text(text.replace(new, old))
        assert vault.verify() == []


# A list of characters, not st.text: given an alphabet, st.text seldom draws these.
OUTSIDE_TEXT = st.lists(
    st.one_of(st.sampled_from(f"{LOOKALIKES}{''.join(SUBTLE)} ab-\n"), st.characters())
).map("".join)


@given(OUTSIDE_TEXT)
def test_any_outside_text_holds_no_separator(text: str) -> None:
    """Whatever the text, a history line gets no ` · `, `→` or lookalike from it."""
    shown = history_text(text)
    assert not [ch for ch in LOOKALIKES + "".join(SUBTLE) if ch in shown]
    assert not [ch for ch in shown if "·" in unicodedata.normalize("NFKC", ch)]
    assert "\n" not in shown and not re.search(r"\s{2}", shown)
    assert history_text(shown) == shown


STEPS = st.builds(
    Transition,
    at=st.sampled_from(
        [utcnow().replace(microsecond=0), utcnow().replace(microsecond=0, second=0)]
    ),
    from_status=st.sampled_from([None, Status.PENDING, Status.APPROVED]),
    to_status=st.sampled_from([Status.PENDING, Status.APPROVED, Status.REJECTED]),
    by=st.sampled_from(["", "alice", "bob", "alice · forged"]),
    reason=st.sampled_from(["", "ok", "ok →"]),
    details=st.lists(st.sampled_from(["1 of 2", "retry of x", "via", "api"]), max_size=3).map(
        tuple
    ),
    kind=st.sampled_from(list(Kind)),
).filter(lambda t: t.kind is not Kind.LINKED or bool(t.details))  # (a link names its other)


@given(st.lists(STEPS, min_size=2, max_size=6))
def test_a_kept_history_line_is_the_line_its_step_renders_to(steps: list[Transition]) -> None:
    """Lines are kept once rendered; each is still exactly what its own step renders to,
    whichever steps (differing in any field) were shown before it, in each of the forms."""
    from hitl_vault.notes.render import _history_line

    for t in steps + steps[::-1]:
        for kept, marked in ((False, True), (False, False), (True, True)):
            assert history_line(t, kept, marked=marked) == _history_line(t, kept, marked)
