"""Submitter text in a note's body and in Dashboard.md is text, never markup.

Summaries, params, ``requested_by``, reasons, rule sentences and file names come
from outside hitl-vault. In Obsidian they must not hide the rest of a note
(``%%``), embed or link a file (``![[...]]``, ``[[...]]``), render HTML, run a
Dataview query (`` `= ...` ``, `` `$= ...` ``), spoof a name with bidi controls
or start a new Markdown block. The checks are precise string assertions on what
CommonMark and Obsidian read: a character is escaped when an odd number of
backslashes stands right before it.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hitl_vault import Vault
from hitl_vault.daemon.dashboard import render_dashboard
from hitl_vault.daemon.loop import Daemon
from hitl_vault.errors import UsageError
from hitl_vault.model import Kind, Status, Transition
from hitl_vault.notes.file import parse_note
from hitl_vault.notes.render import history_key, history_line
from hitl_vault.policy.rules import Decision, Proposal, RuleMatch
from hitl_vault.text import inline, one_line
from hitl_vault.times import utcnow

from .helpers import needs_attention

RLO = "\u202e"
# Unicode format characters (category Cf) that reorder or hide text.
FORMAT_CHARS = (
    "\u00ad\u061c\u180e\u200b\u200c\u200d\u200e\u200f\u202a\u202b\u202c\u202d\u202e"
    "\u2060\u2066\u2067\u2068\u2069\ufeff"
)
HOSTILE = (
    f"Pay %% ![[hitl-vault.yaml]] [[Welcome]] `$= dv.current()` `= this.file.name` "
    f"<img src=x onerror=alert(1)> <script>alert(2)</script> &amp; {RLO}fdp.exe\n"
    "# new heading\n| a | b |\n#tag ==hi== (status:: approved) $x$ ~~s~~ ^block"
)
# What Obsidian or CommonMark would read as the start of something, unescaped.
TOKENS = ("%%", "![[", "[[", "]]", "`", "<img", "<script", "<", "&", "==", "::", "$", "~~", "^")
# Lines of a note's body that hitl-vault writes itself, with its own code spans.
OWN_LINES = {
    "> Set `status` to `approved` or `rejected` (optionally fill `reason` and",
    "> `decided_by`), or move this note into Approved/ or Rejected/.",
}
ASCII_PUNCTUATION = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"


def unescaped(text: str, token: str) -> list[int]:
    """Where ``token`` starts in ``text`` with no backslash escaping its first character."""
    pattern = r"(?<!\\)(?:\\\\)*(" + re.escape(token) + ")"
    return [m.start(1) for m in re.finditer(pattern, text)]


def unescape(text: str) -> str:
    """What CommonMark shows for inline text: each backslash before ASCII punctuation dropped."""
    return re.sub(r"\\([" + re.escape(ASCII_PUNCTUATION) + "])", r"\1", text)


def body(path: Path) -> str:
    """A note's text after its frontmatter."""
    text = path.read_text(encoding="utf-8")
    assert text.startswith("---\n")
    return text.split("\n---\n", 1)[1]


def assert_inert(text: str, own: set[str] = OWN_LINES) -> None:
    """No markup token left unescaped and no format character, outside hitl-vault's own lines."""
    cf = sorted({f"U+{ord(ch):04X}" for ch in text if unicodedata.category(ch) == "Cf"})
    assert cf == [], f"format characters left: {cf}"
    for line in text.splitlines():
        if line in own:
            continue
        if line.startswith("Matched rule `large-payments`: "):
            line = line.removeprefix("Matched rule `large-payments`")
        found = [t for t in TOKENS if unescaped(line, t)]
        assert found == [], f"unescaped {found} in {line!r}"


def test_a_hostile_summary_params_and_requester_are_shown_as_text(vault: Vault) -> None:
    """A reviewer sees every character the submitter sent, and none of it acts as markup."""
    params = {"amount": 1500, f"memo{RLO}%%": HOSTILE, "list": [1, "`= this`", "[[x]]"]}
    with pytest.raises(UsageError, match="not printable"):  # a name is one printable line
        vault.submit("payment", params, requested_by=f"bot{RLO}%%\n# evil")
    req = vault.submit("payment", params, summary=HOSTILE, requested_by="bot%% # evil")
    assert req.path is not None
    text = body(req.path)
    assert_inert(text)
    lines = text.splitlines()
    flat = " ".join(HOSTILE.replace(RLO, "").split())
    assert lines[0] == "# " + inline(flat)
    assert lines[0].startswith(
        "# Pay \\%\\% !\\[\\[hitl-vault.yaml\\]\\] \\[\\[Welcome\\]\\] \\`\\$= dv.current()\\` "
        "\\`= this.file.name\\` \\<img src=x onerror=alert(1)> \\<script>alert(2)\\</script> "
        "\\&amp; fdp.exe \\# new heading \\| a \\| b \\| \\#tag \\=\\=hi\\=\\= "
        "(status\\:\\: approved) \\$x\\$ \\~\\~s\\~\\~ \\^block"
    )
    assert unescape(lines[0]) == "# " + flat  # reads exactly as sent, bidi control aside
    rows = [line for line in lines if line.startswith("| ") and "---" not in line]
    assert rows == [
        "| param | value |",
        "| amount | 1500 |",
        "| memo\\%\\% | " + inline(flat) + " |",
        '| list | \\[1, "\\`= this\\`", "\\[\\[x\\]\\]"\\] |',
    ]
    for row in rows:  # every cell's | is escaped: two columns, as Obsidian splits them
        assert len(re.split(r"(?<!\\)\|", row)) == 4, row
    history = [line for line in lines if history_key(line)[0]]
    assert len(history) == 1
    assert history[0].endswith(" · created → pending · by bot\\%\\% \\# evil · rule large-payments")


def test_the_note_keeps_the_exact_values_in_its_frontmatter(vault: Vault) -> None:
    """Escaping is for the body only: properties still hold what was submitted."""
    params = {"memo": HOSTILE, "n": [1, "`= this`"]}
    req = vault.submit("payment", {"amount": 1500, **params}, summary=HOSTILE, requested_by="a%%b")
    assert req.path is not None
    note = parse_note(req.path.read_bytes(), "Pending_Approval/x.md")
    assert note.meta["summary"] == " ".join(HOSTILE.split())
    assert note.meta["params"] == {"amount": 1500, **params}
    assert note.meta["requested_by"] == "a%%b"


def test_a_hostile_note_can_still_be_decided_and_verified(vault: Vault) -> None:
    """The daemon still finds and extends the history of a note full of hostile text."""
    req = vault.submit("payment", {"amount": 1500, "memo": HOSTILE}, summary=HOSTILE)
    decided = vault.approve(req.id, by="alice %% [[x]]", reason="ok ==really== `= 1`")
    assert decided.status is Status.APPROVED
    assert decided.path is not None
    text = body(decided.path)
    assert_inert(text)
    history = [line for line in text.splitlines() if history_key(line)[0]]
    assert [history_key(line)[1] for line in history] == ["created → pending", "pending → approved"]
    assert history[1].endswith(
        ' · pending → approved · by alice \\%\\% \\[\\[x\\]\\] · "ok \\=\\=really\\=\\= \\`= 1\\`"'
    )
    assert "> [!success] Approved" in text
    assert vault.verify() == []


def test_a_rejection_reason_in_the_callout_cannot_hide_or_quote(vault: Vault) -> None:
    """A rejection's reason shows on one line of the callout, as typed."""
    req = vault.submit("payment", {"amount": 1500}, summary="pay")
    done = vault.reject(req.id, by="bob", reason="no %% ![[x]]\n> [!note] fake\n- item")
    assert done.path is not None
    text = body(done.path)
    assert_inert(text)
    assert "> [!failure] Rejected\n> no \\%\\% !\\[\\[x\\]\\] > \\[!note\\] fake - item\n" in text
    assert vault.verify() == []


def test_a_python_rule_sentence_is_escaped_and_stays_on_its_line(vault: Vault) -> None:
    """A rule that quotes a param in its explanation cannot turn it into markup."""

    def memo_rule(proposal: Proposal) -> RuleMatch | None:
        memo = proposal.params.get("memo")
        if memo is None:
            return None
        return RuleMatch(Decision.ASK, rule="memo %% rule", explanation=f"memo is {memo}")

    vault.rule(memo_rule)
    req = vault.submit("payment", {"amount": 1500, "memo": "[[Welcome]] %%\n- item\n1. x"})
    assert req.path is not None
    text = body(req.path)
    assert_inert(text)
    lines = text.splitlines()
    start = lines.index("Matched rule `large-payments`: payment with amount >= 500 needs approval.")
    assert lines[start + 1] == (
        "Matched rule memo \\%\\% rule: memo is \\[\\[Welcome\\]\\] \\%\\% \\- item 1\\. x"
    )
    assert lines[start + 2] == ""


def test_the_dashboard_shows_hostile_file_names_and_summaries_as_text(vault: Vault) -> None:
    """Dashboard.md lists a badly named file and a hostile request without running either."""
    (vault.root / "Inbox" / "![[x]] %%.md").write_text("---\naction: [broken\n---\n")
    req = vault.submit("payment", {"amount": 1500}, summary=HOSTILE, requested_by="x%%")
    assert req.path is not None
    renamed = req.path.with_name("a ]( %% [[b #c.md")
    req.path.rename(renamed)
    daemon = Daemon(vault.engine)
    try:
        daemon.run_once()
    finally:
        daemon.close()
    assert vault.get(req.id).path == renamed
    text = render_dashboard(vault.engine.journal, utcnow())
    own = {
        "Regenerated by the hitl-vault daemon; edits here are overwritten. "
        "[[Approvals.base|Approvals]] has sortable tables of every request.",
    }
    head, dataview = text.split("## With Dataview", 1)
    assert_inert(head, own)
    assert "[[" not in dataview and "%%" not in dataview
    attention = needs_attention(head)
    assert attention.startswith("- Inbox/!\\[\\[x\\]\\] \\%\\%.md line 3: ")
    target = "Pending_Approval/a%20%5D%28%20%25%25%20%5B%5Bb%20%23c.md"
    label = inline(one_line(HOSTILE, 80))
    rows = [line for line in head.splitlines() if line.startswith(f"| [{label}]({target}) |")]
    assert len(rows) == 1, head
    assert len(re.split(r"(?<!\\)\|", rows[0])) == 6, rows[0]  # four columns
    assert f"- [{req.id}]({target}) " in head
    assert "· created → pending · by x\\%\\% · rule large-payments" in head


def test_a_plain_summary_reads_as_typed() -> None:
    """Ordinary text gains at most a backslash before $, and shows unchanged."""
    summary = "Pay invoice INV-2024-001 for $1,500 (urgent)"
    assert inline(summary) == "Pay invoice INV-2024-001 for \\$1,500 (urgent)"
    for text in ("Deploy web_api v1.2 to prod", "a = b, 10:30, x > y, 50.5", "C# & F#"):
        assert unescape(inline(text)) == text
    assert inline("Deploy web_api v1.2 to prod") == "Deploy web_api v1.2 to prod"
    assert inline("a = b, 10:30, x > y, 50.5") == "a = b, 10:30, x > y, 50.5"


def test_format_characters_and_line_breaks_are_removed() -> None:
    """Bidi overrides, zero-width characters and line breaks never reach a note."""
    assert inline(f"in{FORMAT_CHARS}voice.pdf") == "invoice.pdf"
    assert inline("one\ntwo\r\n\tthree\u2028four\x85five  six") == "one two three four five six"
    assert inline("bell\x07 esc\x1b[31m") == "bell esc\\[31m"


def test_text_cannot_start_a_block() -> None:
    """At the start of a line, list, quote, heading, rule and fence markers are escaped."""
    assert inline("- item") == "\\- item"
    assert inline("+ item") == "\\+ item"
    assert inline("12. item") == "12\\. item"
    assert inline("3) item") == "3\\) item"
    assert inline("> [!note] x") == "\\> \\[!note\\] x"
    assert inline("## x") == "\\#\\# x"
    assert inline("---") == "\\---"
    assert inline("===") == "\\=\\=\\="
    assert inline("```js") == "\\`\\`\\`js"
    assert inline("~~~") == "\\~\\~\\~"
    assert inline("    indented code") == "indented code"
    assert inline("_x_ snake_case") == "\\_x\\_ snake_case"


def test_history_lines_keep_their_fixed_start() -> None:
    """Other code finds a history line by its time and move, whatever follows them."""
    at = utcnow()
    t = Transition(at, Status.PENDING, Status.REJECTED, "- bob\n", "`$= x` %%", ("[[d]]",))
    line = history_line(t)
    assert history_key(line) == (at.strftime("%Y-%m-%dT%H:%M:%SZ"), "pending → rejected")
    assert line.endswith(
        ' · pending → rejected · by \\- bob · "\\`\\$= x\\` \\%\\%" · \\[\\[d\\]\\]'
    )
    kept = Transition(at, Status.PENDING, Status.PENDING, "", "", ("<b>x</b>",), kind=Kind.IGNORED)
    assert history_line(kept).endswith(" · kept pending · \\<b>x\\</b>")


@given(st.text())
def test_any_text_shows_as_itself_and_starts_nothing(text: str) -> None:
    """Whatever is sent, a reader sees those characters (minus invisible ones) and no markup."""
    shown = inline(text)
    visible = "".join(
        ch
        for ch in text
        if unicodedata.category(ch) not in ("Cf", "Cs")
        and not (unicodedata.category(ch) == "Cc" and not ch.isspace())
    )
    assert unescape(shown) == " ".join(visible.split())
    assert "\n" not in shown and "\r" not in shown
    assert not [ch for ch in shown if unicodedata.category(ch) in ("Cf", "Cc", "Cs")]
    # Every backslash written is a CommonMark escape: it is followed by ASCII punctuation.
    assert re.fullmatch(r"(?:[^\\]|\\[" + re.escape(ASCII_PUNCTUATION) + "])*", shown)
    assert [t for t in TOKENS if unescaped(shown, t)] == []
    assert not re.match(r"[-+>=]|[0-9]+[.)]", shown)
    for delimiter in ("%%", "[[", "]]", "==", "::", "~~", "**"):
        assert delimiter not in shown
