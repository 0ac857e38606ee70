"""Approving through the ways real editors save a file, against a real ``hitl-vault run``.

Each editor style approves several requests (in a row, and some at once) while
the daemon watches; each must end executed exactly once, in Done/, with the
human's own edits (decided_by, a line in the body) kept.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from hitl_vault import Status, Vault

from .helpers import QUIET, DaemonProcess, VaultHelper, eventually, save_by_rename

pytestmark = pytest.mark.process  # nearly every test here starts a real process


def approve_text(text: str, n: int) -> str:
    """What the human's buffer holds after approving: status, decided_by and a line of their own."""
    text = text.replace("status: pending", "status: approved", 1)
    text = text.replace("decided_by:", "decided_by: alice", 1)
    return text.replace("\n## Details", f"\nChecked invoice {n} by phone.\n\n## Details", 1)


# --- the editors --------------------------------------------------------------------------


def in_place_one_write(path: Path, text: str) -> None:
    """open('w'), one write, close: usually one `modified` event."""
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(text)


def in_place_two_writes(path: Path, text: str) -> None:
    """Truncate, write half, flush, write the rest (Node's writeFileSync gives two events)."""
    half = len(text) // 2
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(text[:half])
        f.flush()
        os.fsync(f.fileno())
        time.sleep(0.003)
        f.write(text[half:])


def temp_then_rename(path: Path, text: str) -> None:
    save_by_rename(path, text)


def vim_dance(path: Path, text: str) -> None:
    """vim's default: rename note to note~, write a new file, delete note~."""
    backup = path.with_name(path.name + "~")
    os.rename(path, backup)
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.unlink(backup)


def truncate_then_write_soon(path: Path, text: str) -> None:
    """The file is empty for a moment (well under the quiet period) before the content comes."""
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.flush()
        time.sleep(QUIET.total_seconds() / 4)
        f.write(text)


def truncate_then_write_late(path: Path, text: str) -> None:
    """The file stays empty for longer than the quiet period before the content comes."""
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.flush()
        time.sleep(QUIET.total_seconds() * 3)
        f.write(text)


EDITORS: dict[str, Callable[[Path, str], None]] = {
    "in-place-one-write": in_place_one_write,
    "in-place-two-writes": in_place_two_writes,
    "temp-then-rename": temp_then_rename,
    "vim-backup-dance": vim_dance,
    "truncate-then-write-soon": truncate_then_write_soon,
    "truncate-then-write-late": truncate_then_write_late,
}


def _check_done(vault: Vault, request_id: str, n: int) -> None:
    done = vault.root / "Done" / f"{request_id}.md"
    text = done.read_text(encoding="utf-8")
    assert "status: executed" in text
    assert "decided_by: alice" in text
    assert f"Checked invoice {n} by phone." in text, "the human's own line was lost"
    moves = [line.split(" · ")[1] for line in text.splitlines() if line.startswith("- 20")]
    assert moves == [
        "created → pending",
        "pending → approved",
        "approved → executing",
        "executing → executed",
    ], text
    others = [
        vault.root / folder / f"{request_id}.md"
        for folder in ("Pending_Approval", "Approved", "Rejected")
    ]
    assert not any(p.exists() for p in others), "a second copy of the note was left behind"
    history = vault.get(request_id).history
    assert [t.to_status for t in history if t.kind == "transition"] == [
        Status.PENDING,
        Status.APPROVED,
        Status.EXECUTING,
        Status.EXECUTED,
    ]


@pytest.mark.parametrize("editor", list(EDITORS))
def test_approval_through_each_editor_runs_exactly_once(
    vault_path: Path, helper: VaultHelper, editor: str
) -> None:
    """Approvals saved as each editor saves, one by one and in a batch, each run exactly once."""
    save = EDITORS[editor]
    helper.record_runs()
    with Vault(vault_path) as vault, DaemonProcess(vault_path) as daemon:
        # One at a time, each waiting for the daemon to catch up ...
        one_by_one = [vault.submit("payment", {"amount": 600 + n}) for n in range(3)]
        helper.settle()
        for n, req in enumerate(one_by_one):
            assert req.path is not None
            save(req.path, approve_text(req.path.read_text(encoding="utf-8"), n))
            eventually(
                lambda req=req: vault.engine.journal.status_of(req.id) is Status.EXECUTED, 30
            )
        # ... and several saved at once, from threads, as a sync tool delivering a batch would.
        batch = [vault.submit("payment", {"amount": 700 + n}) for n in range(4)]
        helper.settle()
        threads = []
        for n, req in enumerate(batch, start=len(one_by_one)):
            assert req.path is not None
            text = approve_text(req.path.read_text(encoding="utf-8"), n)
            threads.append(threading.Thread(target=save, args=(req.path, text)))
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        everyone = one_by_one + batch
        for req in everyone:
            done = vault_path / "Done" / f"{req.id}.md"
            eventually(lambda done=done: done.exists() and "status: executed" in done.read_text())
        eventually(
            lambda: (
                not any((vault_path / "Approved").glob("2*.md"))
                and not any((vault_path / "Pending_Approval").glob("2*.md"))
            ),
            15,
        )
        for n, req in enumerate(everyone):
            _check_done(vault, req.id, n)
        assert sorted(helper.runs()) == sorted(r.id for r in everyone)
        assert vault.verify() == []
        assert daemon.stop() == 0


def test_an_approval_saved_the_moment_a_note_appears_is_never_missed(
    vault_path: Path, helper: VaultHelper
) -> None:
    """A bot (or a very quick human) approves each request within a millisecond of its note.

    Other tests leave the daemon a moment with each new note (``settle``); this
    one does not, on purpose.
    """
    helper.record_runs()
    with Vault(vault_path) as vault, DaemonProcess(vault_path) as daemon:
        reqs = []
        for n in range(100):
            req = vault.submit("payment", {"amount": 600 + n})
            assert req.path is not None
            in_place_one_write(req.path, approve_text(req.path.read_text(encoding="utf-8"), n))
            reqs.append(req)
            time.sleep(0.01)  # pacing the bot, not an assertion

        def all_ran() -> bool:
            return all(vault.engine.journal.status_of(r.id) is Status.EXECUTED for r in reqs)

        try:
            eventually(all_ran, 60)  # real runs, all of them: generous on a loaded machine
        except AssertionError:
            missed = [r.id for r in reqs if vault.engine.journal.status_of(r.id) is Status.PENDING]
            notes = [vault.get(i).path for i in missed]
            says = [p.read_text().count("status: approved") if p else None for p in notes]
            raise AssertionError(
                f"{len(missed)} of {len(reqs)} approvals never acted on although the note says "
                f"approved ({says}): {missed[:3]}"
            ) from None
        assert sorted(helper.runs()) == sorted(r.id for r in reqs)
        assert daemon.stop() == 0


@pytest.mark.slow
@pytest.mark.parametrize("editor", ["in-place-one-write", "vim-backup-dance"])
def test_approvals_saved_as_the_daemon_comes_to_tidy_new_notes_are_never_reverted(
    vault_path: Path, helper: VaultHelper, editor: str
) -> None:
    """Humans (or a bot) approve a batch of new requests about one quiet period after they appear.

    That is when the daemon comes back to each new note to bring it up to date.
    Every approval must be journaled and run; none may be overwritten with
    ``status: pending`` by the daemon's write.
    """
    save = EDITORS[editor]
    helper.record_runs()
    with Vault(vault_path) as vault, DaemonProcess(vault_path) as daemon:
        reqs = [vault.submit("payment", {"amount": 1000 + n}) for n in range(120)]
        time.sleep(QUIET.total_seconds() * 0.6)  # pacing the human, not an assertion
        for n, req in enumerate(reqs):
            assert req.path is not None
            save(req.path, approve_text(req.path.read_text(encoding="utf-8"), n))

        def all_ran() -> bool:
            return all(vault.engine.journal.status_of(r.id) is Status.EXECUTED for r in reqs)

        try:
            eventually(all_ran, 60)  # real runs, all of them: generous on a loaded machine
        except AssertionError:
            lost = [r for r in reqs if vault.engine.journal.status_of(r.id) is Status.PENDING]
            shown = []
            for r in lost[:3]:
                path = vault.get(r.id).path
                text = path.read_text(encoding="utf-8") if path else "(no note)"
                status = next(line for line in text.splitlines() if line.startswith("status:"))
                shown.append(f"{r.id}: note says {status!r}; alice's line kept: {'alice' in text}")
            raise AssertionError(
                f"{len(lost)} of {len(reqs)} approvals were lost:\n" + "\n".join(shown)
            ) from None
        assert sorted(helper.runs()) == sorted(r.id for r in reqs)
        assert daemon.stop() == 0


FOLDERS = ("Pending_Approval", "Approved", "Done", "Rejected")


class FastHuman:
    """One writer typing into several notes at once, saving in place after every line.

    Like an editor that reloads a note when it changes on disk, it reads the
    note where it is now, adds a line at the end and saves in place (O_TRUNC,
    never creating a file: if the note moved away, it looks for it again). On
    its third visit to a note it also approves it. Each note is visited again
    after 50-500 ms, so some gaps are shorter and some longer than the quiet
    period the daemon waits for before rewriting or moving a note.
    """

    def __init__(self, vault: Path, ids: list[str], seconds: float, seed: int = 7) -> None:
        import random

        self.vault, self.ids, self.seconds = vault, ids, seconds
        self.rng = random.Random(seed)
        self.written: dict[str, list[str]] = {i: [] for i in ids}
        self.saved_in: dict[str, int] = dict.fromkeys(FOLDERS, 0)
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, name="fast-human")

    def locate(self, request_id: str) -> Path | None:
        for folder in FOLDERS:
            path = self.vault / folder / f"{request_id}.md"
            if path.exists():
                return path
        return None

    def _save(self, request_id: str, line: str, approve: bool) -> bool:
        path = self.locate(request_id)
        if path is None:
            return False
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return False
        newline = b"\r\n" if b"\r\n" in data[:8] else b"\n"
        if not data.endswith(newline):
            data += newline
        if approve:
            data = data.replace(b"status: pending", b"status: approved", 1)
        data += line.encode() + newline
        try:
            fd = os.open(path, os.O_WRONLY | os.O_TRUNC)  # in place; never re-creates a moved note
        except FileNotFoundError:
            return False
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        self.saved_in[path.parent.name] += 1
        return True

    def _run(self) -> None:
        try:
            now = time.monotonic()
            due = {i: now + self.rng.uniform(0, 0.3) for i in self.ids}
            visits = dict.fromkeys(self.ids, 0)
            stop = now + self.seconds
            while True:
                request_id = min(due, key=due.__getitem__)
                wait = due[request_id] - time.monotonic()
                if due[request_id] > stop:
                    return
                if wait > 0:
                    time.sleep(wait)
                visits[request_id] += 1
                line = f"Human line {visits[request_id]} for {request_id[-6:]}."
                for _ in range(100):
                    if self._save(request_id, line, approve=visits[request_id] == 3):
                        self.written[request_id].append(line)
                        break
                due[request_id] = time.monotonic() + self.rng.uniform(0.05, 0.5)
        except BaseException as e:  # pragma: no cover - reported by the test
            self.errors.append(e)

    def __enter__(self) -> FastHuman:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.thread.join()


@pytest.mark.slow
def test_a_fast_human_typing_into_notes_the_daemon_is_moving_loses_no_line(
    vault_path: Path, helper: VaultHelper
) -> None:
    """A human typing into notes while the daemon rewrites and moves them loses no line."""
    from hitl_vault.notes.file import parse_note

    helper.record_runs()
    seconds = 6.0
    with Vault(vault_path) as vault, DaemonProcess(vault_path) as daemon:
        reqs = [vault.submit("payment", {"amount": 900 + n}) for n in range(8)]
        helper.settle()
        ids = [r.id for r in reqs]
        with FastHuman(vault_path, ids, seconds) as human:
            pass
        assert not human.errors, human.errors
        total = sum(len(lines) for lines in human.written.values())
        print(
            f"fast human: {total} lines in {seconds:.0f}s into {len(ids)} notes "
            f"({total / seconds:.1f} saves/s, each note every 50-500 ms, "
            f"quiet {QUIET.total_seconds()}s); "
            f"saves by folder: {human.saved_in}"
        )
        # The daemon moved notes while the human kept typing into them.
        assert human.saved_in["Done"] > 0 and human.saved_in["Pending_Approval"] > 0
        for request_id in ids:
            done = vault_path / "Done" / f"{request_id}.md"
            eventually(lambda d=done: d.exists() and "status: executed" in d.read_text(), 30)
        eventually(lambda: not any((vault_path / "Approved").glob("2*.md")), 10)
        for request_id in ids:
            done = vault_path / "Done" / f"{request_id}.md"
            note = parse_note(done.read_bytes(), done.name)  # the frontmatter is still valid
            assert note.meta["id"] == request_id and note.meta["status"] == "executed"
            body = note.body
            lost = [line for line in human.written[request_id] if line not in body]
            assert not lost, f"{request_id}: {len(lost)} human lines lost, e.g. {lost[:3]}"
            assert len(human.written[request_id]) >= 3, "the writer never approved this note"
            assert [p for p in vault_path.glob(f"*/{request_id}.md") if p != done] == []
        assert sorted(helper.runs()) == sorted(ids)
        assert vault.verify() == []
        assert daemon.stop() == 0


def test_an_editor_saving_again_right_after_the_daemon_moved_the_note(
    vault_path: Path, helper: VaultHelper
) -> None:
    """A stale editor buffer (status: approved) saved in place after the note went to Done/.

    VS Code re-creates the file at its old path; the journal says it already ran,
    so nothing runs again, and the daemon does not lose the human's new line.
    """
    helper.record_runs()
    with Vault(vault_path) as vault, DaemonProcess(vault_path) as daemon:
        req = vault.submit("payment", {"amount": 1500})
        assert req.path is not None
        helper.settle()
        buffer = approve_text(req.path.read_text(encoding="utf-8"), 0)
        in_place_one_write(req.path, buffer)
        done = vault_path / "Done" / f"{req.id}.md"
        eventually(lambda: done.exists() and "status: executed" in done.read_text(), 30)
        note = req.path
        eventually(lambda: not note.exists())
        in_place_two_writes(note, buffer + "Another line typed after it ran.\n")
        # The stale copy is a second note for the same request: listed, never acted on.
        eventually(lambda: note.name in helper.attention(), 15)
        assert helper.runs() == [req.id]
        assert vault.engine.journal.status_of(req.id) is Status.EXECUTED
        assert "Another line typed after it ran." in req.path.read_text()
        assert daemon.stop() == 0
