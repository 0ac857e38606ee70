"""The Obsidian link in a message opens the note wherever it rests now: it names the note
by its file name alone (Obsidian resolves ``file=`` like a ``[[wikilink]]``), never the
folder it was in when the message went out."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from hitl_vault import Status
from hitl_vault.model import FOLDER_OF
from hitl_vault.notify.message import compose, note_link

from .helpers import Clock, VaultHelper, ended
from .receivers import Receiver
from .test_notifications import add_notify, stepped
from .test_notify import a_request


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver().start() as started:
        yield started


def opens(root: Path, link: str) -> list[Path]:
    """The notes ``link`` opens, found as Obsidian finds ``file=``: a vault-relative path
    as is, a bare name by matching the name (or the name without ``.md``) of every note
    outside dot folders, as a ``[[wikilink]]`` is resolved. One path when it opens one."""
    parts = urlsplit(link)
    assert (parts.scheme, parts.netloc) == ("obsidian", "open"), link
    (target,) = parse_qs(parts.query)["file"]
    if "/" in target:
        return [p for p in [root / target, root / f"{target}.md"] if p.is_file()]
    return sorted(
        p
        for p in root.rglob("*.md")
        if not any(part.startswith(".") for part in p.relative_to(root).parts)
        and target in (p.name, p.stem)
    )


def link_in(message: str) -> str:
    return next(line.split(": ", 1)[1] for line in message.splitlines() if "obsidian://" in line)


def test_the_link_names_no_folder_and_is_the_same_at_every_step() -> None:
    """A message's link names the note by its file name, whatever folder the note is in."""
    links = set()
    for status in Status:
        request = a_request(status=status)
        note = f"{FOLDER_OF[status]}/{request.id}.md"
        links.add(link_in(compose("pending", request, note=note, vault_name="My Vault").body))
    (link,) = links
    (file,) = parse_qs(urlsplit(link).query)["file"]
    assert file == "20261122T101500Z-payment-7f3a2c.md"
    assert note_link("R&D #1", "Done/x-1.md") == "obsidian://open?vault=R%26D%20%231&file=x-1.md"


def test_a_link_sent_while_pending_opens_the_note_after_it_moved_to_done(
    vault_path: Path, clock: Clock, helper: VaultHelper, receiver: Receiver
) -> None:
    """The link a pending message carried still opens the note once it rests in Done/."""
    add_notify(vault_path, f"- url: json://127.0.0.1:{receiver.port}/hook\n  on: [pending]")
    with stepped(vault_path, clock) as (vault, daemon):
        other = vault.submit("payment", {"amount": 700}, summary="another, still pending")
        req = vault.submit("payment", {"amount": 1500}, summary="Pay ACME")
        daemon.run_once(clock.now)
        daemon.notifier.send_due()
        posts = {post.title: post for post in receiver.wait_for(2)}
        link = link_in(posts["[high] Pay ACME — waiting for approval"].message)
        assert opens(vault_path, link) == [vault_path / "Pending_Approval" / f"{req.id}.md"]
        vault.approve(req.id, by="alice")
        ended(daemon, clock, req.id, Status.EXECUTED)
        daemon.run_once(clock.advance(vault.policy.defaults.quiet + timedelta(seconds=1)))
        assert helper.shows(req.id, Status.EXECUTED, "Done")
    assert opens(vault_path, link) == [vault_path / "Done" / f"{req.id}.md"]
    assert "Pending_Approval" not in link and "%2F" not in link
    assert other.id not in link
