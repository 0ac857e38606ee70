"""A decision made from the API or CLI while an editor is half-way through saving the note."""

from __future__ import annotations

from pathlib import Path

from hitl_vault import Status, Vault
from hitl_vault.cli.template import init_vault


def test_a_rejection_made_while_the_note_is_truncated_shows_after_the_next_sync(
    tmp_path: Path,
) -> None:
    """Note truncated (an editor's save not yet written), reject, the save lands: the decision
    stands, no stale "no frontmatter" flag stays, and the next run shows it in the note."""
    root = tmp_path / "vault"
    init_vault(root)
    with Vault(root) as vault:
        req = vault.submit("payment", {"amount": 1500}, requested_by="bot")
        assert req.path is not None
        full = req.path.read_bytes()
        req.path.write_bytes(b"")  # the editor's O_TRUNC; its write is still to come
        assert vault.reject(req.id, by="alice", reason="no").status is Status.REJECTED
        req.path.write_bytes(full)  # the editor's write lands
        journal = vault.engine.journal
        listed = [a.message for a in journal.attention()]
        assert not [m for m in listed if "no frontmatter" in m and "rejected" not in m]
        assert len(listed) == 1 and "does not show that the request is rejected yet" in listed[0]
        vault.run(once=True)
        note = root / "Rejected" / req.path.name
        assert "status: rejected" in note.read_text(encoding="utf-8")
        assert not req.path.exists()
        assert journal.attention() == []
        assert vault.get(req.id).status is Status.REJECTED
