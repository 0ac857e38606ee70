"""``hitl-vault verify``: the journal's hash chain, and every note against the journal."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import NoteError
from .model import history_key, read_status_word
from .notefile import read_note

if TYPE_CHECKING:
    from .vault import Vault


def verify_vault(vault: Vault) -> list[str]:
    """Every disagreement between the journal's chain, its entries and the notes."""
    problems = vault.journal.verify_chain()
    for summary in vault.journal.requests():
        request = vault.journal.get(summary.id)
        assert request is not None
        path = vault.notes.locate(request.id, str(request.path) if request.path else None)
        if path is None:
            problems.append(
                f"request {request.id}: its note is missing "
                "(`hitl-vault run --once` writes it again from the journal)"
            )
            continue
        where = vault.notes.rel(path)
        try:
            note = read_note(path, where)
        except NoteError as e:
            problems.append(str(e))
            continue
        shown = read_status_word(note.status_text)
        if shown is not request.status:
            problems.append(
                f"{where}: status says {note.status_text!r} but the journal says "
                f"{request.status} (`hitl-vault run --once` brings the note up to date)"
            )
        body = note.lines[note.fm_end + 1 :]
        noted = {history_key(line): line.strip() for line in body if history_key(line)[0]}
        journaled = {t.key for t in request.history}
        for t in request.history:
            if t.key not in noted:
                problems.append(f"{where}: history lacks journal entry {t.history_line()[2:]!r}")
        for key, line in noted.items():
            if key not in journaled:
                problems.append(f"{where}: history line {line!r} is not in the journal")
    return problems
