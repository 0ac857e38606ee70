"""A note read against its request (:class:`~hitl_vault.notes.state.Reading`): the decision
a human's save makes and what keeps it from counting, with no journal and no I/O."""

from __future__ import annotations

from pathlib import Path

import pytest

from hitl_vault import Request, Status, Vault
from hitl_vault.cli.template import init_vault
from hitl_vault.notes.file import Note, parse_note
from hitl_vault.notes.state import NoteState, Reading


@pytest.fixture
def pending(tmp_path: Path) -> tuple[Request, str]:
    """A pending request and the text of its new note."""
    init_vault(tmp_path / "vault")
    with Vault(tmp_path / "vault") as vault:
        request = vault.submit("payment", {"amount": 1500}, requested_by="bot")
        assert request.path is not None
        return vault.get(request.id), request.path.read_text(encoding="utf-8")


def _note(text: str, request: Request) -> Note:
    return parse_note(text.encode("utf-8"), f"Pending_Approval/{request.id}.md")


def test_a_status_typed_is_the_decision(pending: tuple[Request, str]) -> None:
    """``status: yes`` in Pending_Approval/ approves."""
    request, text = pending
    reading = Reading.of(
        _note(text.replace("status: pending", "status: yes"), request), request, "Pending_Approval"
    )
    assert reading.state is NoteState.DECISION
    assert reading.decision() == (Status.APPROVED, None)


def test_the_folder_decides_when_the_status_is_untouched(pending: tuple[Request, str]) -> None:
    """A note moved into Rejected/ with its status left pending rejects."""
    request, text = pending
    assert Reading.of(_note(text, request), request, "Rejected").decision() == (
        Status.REJECTED,
        None,
    )


def test_a_status_and_a_folder_that_disagree_decide_nothing(pending: tuple[Request, str]) -> None:
    """``status: approved`` moved into Rejected/: no decision, and the problem says which."""
    request, text = pending
    note = _note(text.replace("status: pending", "status: approved"), request)
    decided, problem = Reading.of(note, request, "Rejected").decision()
    assert decided is None
    assert problem is not None and "says approved but was moved into Rejected/" in problem


def test_an_owned_field_changed_keeps_a_decision_from_counting(
    pending: tuple[Request, str],
) -> None:
    """A human's approval in a note whose ``action`` was changed is not acted on."""
    request, text = pending
    edited = text.replace("status: pending", "status: approved").replace(
        "action: payment", "action: refund"
    )
    reading = Reading.of(_note(edited, request), request, "Pending_Approval")
    assert reading.tampered() == ["action"]
    decided, problem = reading.decision()
    assert decided is None
    assert problem is not None and "action changed; only hitl-vault sets it" in problem


def test_an_unknown_status_names_its_line(pending: tuple[Request, str]) -> None:
    """``status: aproved`` is no status: the problem names the line and the fix."""
    request, text = pending
    reading = Reading.of(
        _note(text.replace("status: pending", "status: aproved"), request),
        request,
        "Pending_Approval",
    )
    decided, problem = reading.decision()
    assert decided is None
    assert problem is not None and 'unknown status "aproved"' in problem
    assert "line 3" in problem and "use approved or rejected" in problem
