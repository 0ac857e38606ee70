"""Text from outside hitl-vault made safe to show: as inline Markdown in a note or
``Dashboard.md``, on one line of history, or on a terminal."""

from __future__ import annotations

import re
import unicodedata

# What inline() escapes with a backslash (all ASCII punctuation, which CommonMark allows):
#   anywhere: \ escapes; ` code spans, so Dataview's `= ...` and `$= ...`; * emphasis;
#     [ ] links, [[wikilinks]], ![[embeds]], [^footnotes], [!callouts]; < HTML, <!-- -->
#     and <autolinks>; # headings and #tags; | table cells; % Obsidian %%comments%%;
#     $ math; ~ ~~strikethrough~~ and ~~~ fences; ^ ^block-ids; & &entities;
#   two or more in a row: == ==highlights==; :: Dataview (key:: value) fields
#     (a lone "a = b" or "10:30" stays as typed);
#   _ unless between two letters or digits, where CommonMark never reads it as emphasis;
#   at the very start, where a block would begin: - + = > and the . or ) of "12." / "3)".
_SPECIAL = re.compile(r"[\\`*\[\]<#|%$~^&]|={2,}|:{2,}|(?<![^\W_])_|_(?![^\W_])")


_BLOCK_START = re.compile(r"[-+=>]|[0-9]+(?=[.)])")


# Characters worth a look for being invisible: all but printable ASCII.
NOT_PRINTABLE_ASCII = re.compile(r"[^\x20-\x7e]")


def visible(match: re.Match[str]) -> str:
    """The character, or "" for a format character (Cf: bidi overrides and isolates,
    zero-width characters, BOM...), a lone surrogate or a control character that is
    not whitespace."""
    ch = match.group()
    category = unicodedata.category(ch)
    if category in ("Cf", "Cs") or (category == "Cc" and not ch.isspace()):
        return ""
    return ch


def _backslashed(match: re.Match[str]) -> str:
    return "".join("\\" + ch for ch in match.group())


def inline(text: object) -> str:
    r"""``text`` (from a submitter, a file name, a rule) made safe as inline Markdown in Obsidian.

    It shows as the same characters in reading view, and it can start nothing: no
    link, embed, comment, HTML, code span (so no Dataview query), tag, highlight,
    math, footnote or block id, and no new block or line. Format characters
    (Unicode category Cf: right-to-left overrides, isolates, zero-width spaces, ...)
    and control characters are removed, and every run of whitespace, line breaks
    included, becomes one space.

    The escape is CommonMark's: any ASCII punctuation character may be preceded by a
    backslash and is then a literal character (Obsidian reads these escapes too).
    Only the characters that can start something are escaped (see ``_SPECIAL``), so
    ``Pay INV-2024-001 for $1,500 (urgent)`` is written
    ``Pay INV-2024-001 for \$1,500 (urgent)``, and reads as typed. No two unescaped
    ``% = [ ] ~ * :`` are ever left side by side, so even a tool that ignores
    backslashes finds no ``%%``, ``[[``, ``==`` or ``::`` in the result.

    Code spans are not used for such text: Dataview runs a code span that begins with
    ``=`` or ``$=``, and a ``|`` needs its backslash inside one in a table all the same.
    """
    flat = " ".join(NOT_PRINTABLE_ASCII.sub(visible, str(text)).split())
    escaped = _SPECIAL.sub(_backslashed, flat)
    start = _BLOCK_START.match(escaped)
    if start:
        at = start.end() if escaped[0].isdigit() else 0
        escaped = f"{escaped[:at]}\\{escaped[at:]}"
    return escaped


def fenced(text: str, info: str = "") -> list[str]:
    """``text`` as a fenced code block no line of it can close or escape: the fence is
    backticks, longer than any run of backticks or tildes in the text (at least three).
    Format and control characters (but tabs) are removed, as everywhere text is shown."""
    lines = [NOT_PRINTABLE_ASCII.sub(visible, line) for line in text.splitlines()]
    runs = [len(run) for run in re.findall(r"`+|~+", "\n".join(lines))]
    fence = "`" * max(3, max(runs, default=0) + 1)
    return [fence + info, *lines, fence]


def one_line(text: str, limit: int = 300) -> str:
    """Text on one line (every run of whitespace, line breaks included, is one space),
    bounded: for a log line, a stored detail, a label."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


# Characters a reader takes for the `` · `` of a history line that neither their name nor
# their NFKC form gives away: Runic, Tibetan and Hangul dots, and letters shaped as one.
_DOTS = frozenset(
    "\u16eb"  # RUNIC SINGLE PUNCTUATION
    "\u0f0b"  # TIBETAN MARK INTERSYLLABIC TSHEG
    "\u0f0c"  # TIBETAN MARK DELIMITER TSHEG BSTAR
    "\u318d"  # HANGUL LETTER ARAEA
    "\u119e"  # HANGUL JUNGSEONG ARAEA
    "\u1427"  # CANADIAN SYLLABICS FINAL MIDDLE DOT (a letter)
    "\ua78f"  # LATIN LETTER SINOLOGICAL DOT (a letter)
)
# Words that name a dot in a punctuation mark or a symbol (HYPHENATION POINT, Z NOTATION
# SPOT, GREEK ANO TELEIA); "DOT" and "BULLET" are found anywhere in the name.
_DOT_ENDS = (" POINT", " SPOT", " TELEIA")


def _lookalike(ch: str, arrows: bool) -> str | None:
    """``.`` or ``->`` for a character that could pass for ``·`` or ``→``, else None."""
    if ch.isascii():
        return None
    if ch in _DOTS:
        return "."
    name = unicodedata.name(ch, "")
    kind = unicodedata.category(ch)[0]
    if kind in "PS":
        if "DOT" in name or "BULLET" in name or name.endswith(_DOT_ENDS):
            return "."
        if arrows and ("ARROW" in name or "HARPOON" in name):
            return "->"
    # A letter named as a dot alone (ARABIC BASELINE ROUND DOT), not one with a dot on it
    # (LATIN SMALL LETTER A WITH DOT BELOW) nor a syllable read "dot" (YI SYLLABLE DOT).
    elif kind == "L" and name.endswith(" DOT") and " WITH " not in name and "SYLLABLE " not in name:
        return "."
    return None


def _separator(ch: str, arrows: bool) -> str:
    """What a character that could pass for a history line's ``·`` or ``→`` becomes: the
    character itself and then each of its NFKC form (GREEK ANO TELEIA is a middle dot
    there, and LATIN SMALL LETTER L WITH MIDDLE DOT an ``l`` and one) are looked at."""
    if ch.isascii():
        return ch
    shown = _lookalike(ch, arrows)
    if shown is not None:
        return shown
    folded = unicodedata.normalize("NFKC", ch)
    if folded == ch:
        return ch
    parts = [(c, _lookalike(c, arrows)) for c in folded]
    if all(found is None for _, found in parts):
        return ch  # no separator in it: the text stays as given (a ligature, a fraction)
    return "".join(c if found is None else found for c, found in parts)


def history_text(text: str, limit: int = 300, *, arrows: bool = True) -> str:
    """Text from outside (a name, a reason, a detail) fit for one history line.

    A history line is ``- <time> · <move> · by <who> · "<why>" · <details>``, and a
    reader takes each `` · `` for the start of a field and ``→`` for a move. So no text
    from outside keeps either: a middle dot, a bullet, anything else named a dot or whose
    NFKC form holds one, and a few more lookalikes (``_DOTS``) become ``.``, an arrow
    becomes ``->`` (``arrows=False`` keeps arrows, for a detail,
    where hitl-vault writes ``amount 1500 → 1000`` for edited params: without a `` · ``
    of its own, no text there can pass for another field), and the text is
    :func:`one_line`. The journal keeps the text as given; only the line changes.
    """
    text = str(text)
    if not text.isascii():
        text = "".join(_separator(ch, arrows) for ch in text)
    return one_line(text, limit)


def shown(text: object) -> str:
    """Text from outside on one line for the terminal: no control or format characters
    (no escape sequence reaches the terminal), blanks collapsed."""
    return " ".join(NOT_PRINTABLE_ASCII.sub(visible, str(text)).split())
