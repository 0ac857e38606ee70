"""Hostile files in every folder of a vault watched by a real ``hitl-vault run``.

Each folder (the four request folders and ``Inbox/``) is one group: a daemon
runs, every hostile file is dropped in, a probe request shows the daemon is
still alive and acting, the daemon is restarted (so the start-up rescan sees
the same files), and a second probe is run. The per-case tests then check what
the group recorded: the file is byte for byte unchanged, nothing ran, and
Dashboard.md lists it under "Needs attention" with the problem and the fix.

Wherever it can, a hostile file is a real pending request's note (or a valid
proposal, in ``Inbox/``) saying ``status: approved`` with one thing broken, so
a daemon that read it leniently would run the action, and the test would see it.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from hitl_vault import Status, Vault
from hitl_vault.cli.template import init_vault

from .helpers import DaemonProcess, VaultHelper, eventually, set_status

REQUEST_FOLDERS = ("Pending_Approval", "Approved", "Done", "Rejected")
GROUPS = (*REQUEST_FOLDERS, "Inbox")
CONFLICT = ".sync-conflict-20261122-101500-ABCDEFG.md"
UNKNOWN_ID = "20261122T101500Z-payment-abcdef"
# An imperative fix, in parentheses or after a semicolon.
FIX = re.compile(
    r"(\(|; )(?:[^()]*\b)?(add|fix|quote|remove|delete|rename|write|save|move|compare|keep|put|"
    r"start|use|make|check|split)\b",
    re.IGNORECASE,
)


def approved(text: str) -> str:
    return text.replace("status: pending", "status: approved", 1)


# --- the hostile files -------------------------------------------------------------------

PROPOSAL = "---\naction: payment\nparams:\n  amount: 5\nsummary: hostile proposal\n---\n# hi\n"
BOMB = (
    'l1: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    "l2: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
    "l3: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
    "l4: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n"
    "l5: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n"
    "l6: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n"
    "l7: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\n"
)


def _in_frontmatter(text: str, extra: str) -> str:
    """``extra`` lines added just before the closing ``---``."""
    head, sep, rest = text.partition("\n---\n")
    assert sep, "the note has no closing ---"
    return head + "\n" + extra.rstrip("\n") + sep + rest


@dataclass(frozen=True)
class Case:
    name: str
    problem: str  # a regex the message must match: it names what is wrong
    # (note text with status approved, or a proposal) -> bytes; None for cases built by hand
    make: Callable[[str], bytes] | None = None
    own_request: bool = True  # request folders: the file is the note of a request of its own


CASES = (
    Case(
        "missing-close",
        r"closing|frontmatter",
        lambda t: t.replace("\n---\n", "\n", 1).encode(),
    ),
    Case(
        "yaml-error",
        r"YAML",
        lambda t: _in_frontmatter(t, 'tags: [unclosed, "list\nother: {a: 1').encode(),
    ),
    Case("alias-bomb", r"alias|anchor", lambda t: _in_frontmatter(t, BOMB).encode()),
    Case(
        "list-frontmatter",
        r"list|key: value|mapping",
        lambda t: b"---\n- status: approved\n- action: payment\n- amount: 5\n---\n# list\n",
        own_request=False,
    ),
    Case(
        "scalar-frontmatter",
        r"str|key: value|mapping|scalar",
        lambda t: b"---\njust some words, status approved\n---\n# scalar\n",
        own_request=False,
    ),
    Case(
        "non-utf8",
        r"UTF-8",
        lambda t: t.encode().replace(b"\n---\n", b"\nmemo: caf\xe9\n---\n", 1),
    ),
    Case(
        "two-mib",
        r"MiB|too (big|large)|limit",
        lambda t: (t + ("x" * 99 + "\n") * (2 * 1024 * 1024 // 100 + 1)).encode(),
    ),
    Case("content-key", r"content", lambda t: _in_frontmatter(t, "content: hello").encode()),
    Case(
        "impossible-date",
        r"date that does not exist",
        lambda t: _in_frontmatter(t, "due: 2026-02-30").encode(),
    ),
    Case(
        "long-number",
        r"number too long",
        lambda t: _in_frontmatter(t, "n: " + "9" * 5000).encode(),
    ),
    Case("non-string-key", r"key|text", lambda t: _in_frontmatter(t, "2024: year").encode()),
    Case("symlink", r"link"),
    Case("unknown-id", r"not a request|unknown|has an id|\bid\b"),
    Case("duplicate-id", r"second|duplicate|copy|has an id|\bid\b"),
    Case("sync-conflict", r"conflict|has an id|\bid\b"),
    Case("empty", r"no frontmatter|empty", lambda t: b""),
)
CASE_NAMES = tuple(c.name for c in CASES)


@dataclass
class Placed:
    case: Case
    path: Path  # the hostile file, as the daemon sees it
    before: bytes
    link_target: str | None = None
    request_id: str | None = None  # the request whose approval must not happen


@dataclass
class GroupResult:
    vault: Path
    placed: dict[str, Placed]
    after: dict[str, tuple[bytes | None, str | None]]
    outside_after: dict[str, bytes]
    outside_before: dict[str, bytes]
    attention: list[str]
    runs: list[str]
    probes: list[str]
    statuses: dict[str, Status | None]
    request_count: int
    expected_requests: int
    alive: bool
    exit_codes: list[int]
    log: str
    notes: list[str] = field(default_factory=list)


def _snapshot(path: Path) -> tuple[bytes | None, str | None]:
    link = os.readlink(path) if path.is_symlink() else None
    try:
        data = path.read_bytes() if link is None else None
    except FileNotFoundError:
        data = None
    if link is None and not path.exists():
        return None, None
    return data, link


def _place(vault: Vault, folder: str, outside: Path) -> dict[str, Placed]:
    """Put every hostile file into ``folder``; return what was put where."""
    where = vault.root / folder
    inbox = folder == "Inbox"
    placed: dict[str, Placed] = {}
    baits = {
        case.name: vault.submit("payment", {"amount": 1000}, summary=f"bait {case.name}")
        for case in CASES
        if case.own_request and (not inbox or case.name in ("duplicate-id", "sync-conflict"))
    }
    VaultHelper.settle()
    for case in CASES:
        request_id: str | None = None
        note: Path | None = None
        base = PROPOSAL  # in Inbox/: a valid proposal that rules would allow and run at once
        if case.name in baits:
            bait = baits[case.name]
            assert bait.path is not None
            request_id, note = bait.id, bait.path
            base = approved(bait.path.read_text())
        if case.name == "unknown-id":
            if inbox:
                text = _in_frontmatter(base, f"id: {UNKNOWN_ID}\nstatus: approved")
            else:
                text = re.sub(r"(?m)^id: .*$", f"id: {UNKNOWN_ID}", base, count=1)
            name, data = f"{UNKNOWN_ID}.md", text.encode()
        elif case.name == "duplicate-id":  # a copy; the original stays where it is
            copy = " copy" if folder == "Pending_Approval" else ""
            name, data = f"{request_id}{copy}.md", base.encode()
        elif case.name == "sync-conflict":
            name, data = f"{request_id}{CONFLICT}", base.encode()
        elif case.name == "symlink":
            target = outside / f"{folder}-target.md"
            target.write_text(base)
            path = where / (f"{request_id}.md" if request_id else "symlink.md")
            if note is not None:
                note.unlink()  # the request's note becomes a link to a file outside the vault
            os.symlink(target, path)
            placed[case.name] = Placed(case, path, target.read_bytes(), str(target), request_id)
            continue
        else:
            assert case.make is not None
            name = f"{request_id}.md" if request_id else f"{case.name}.md"
            data = case.make(base)
            if note is not None:
                note.unlink()  # the request's note itself turns hostile, here
        path = where / name
        path.write_bytes(data)
        placed[case.name] = Placed(case, path, data, None, request_id)
    return placed


_results: dict[str, GroupResult] = {}


def _run_group(base: Path, folder: str) -> GroupResult:
    vault_path = base / "vault"
    outside = base / "outside"
    outside.mkdir()
    init_vault(vault_path)
    helper = VaultHelper(vault_path)
    helper.record_runs()
    exit_codes: list[int] = []
    daemon = DaemonProcess(vault_path)
    with Vault(vault_path) as vault:
        daemon.start()
        try:
            placed = _place(vault, folder, outside)
            outside_before = {p.name: p.read_bytes() for p in outside.iterdir()}

            def flagged_all() -> bool:
                lines = helper.attention_lines()
                return all(any(p.path.name in line for line in lines) for p in placed.values())

            with contextlib.suppress(AssertionError):  # each case's test says which one was not
                eventually(flagged_all, 20)
            probes = []
            for round_ in range(2):
                probe = vault.submit("payment", {"amount": 2000}, summary=f"probe {round_}")
                assert probe.path is not None
                helper.settle()
                probes.append(probe.id)
                set_status(probe.path, "approved", decided_by="alice")
                done = vault_path / "Done" / f"{probe.id}.md"
                eventually(
                    lambda done=done: done.exists() and "status: executed" in done.read_text(), 30
                )
                if round_ == 0:  # a restart: the start-up rescan sees every file again
                    exit_codes.append(daemon.stop())
                    daemon.start()
            with contextlib.suppress(AssertionError):
                eventually(flagged_all, 10)
            alive = daemon.proc is not None and daemon.proc.poll() is None
            dashboard = helper.attention_lines()
        finally:
            if daemon.proc is not None and daemon.proc.poll() is None:
                exit_codes.append(daemon.stop())
        statuses = {
            name: vault.engine.journal.status_of(p.request_id) if p.request_id else None
            for name, p in placed.items()
        }
        request_count = sum(vault.engine.journal.counts().values())
    expected = 2 + len({p.request_id for p in placed.values() if p.request_id})
    return GroupResult(
        vault=vault_path,
        placed=placed,
        after={name: _snapshot(p.path) for name, p in placed.items()},
        outside_after={p.name: p.read_bytes() for p in outside.iterdir()},
        outside_before=outside_before,
        attention=dashboard,
        runs=helper.runs(),
        probes=probes,
        statuses=statuses,
        request_count=request_count,
        expected_requests=expected,
        alive=alive,
        exit_codes=exit_codes,
        log=daemon.log(),
    )


@pytest.fixture(scope="session")  # a worker runs each group once, in whatever order it gets them
def groups(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], GroupResult]]:
    def get(folder: str) -> GroupResult:
        if folder not in _results:
            _results[folder] = _run_group(tmp_path_factory.mktemp(f"hostile-{folder}"), folder)
        return _results[folder]

    yield get
    _results.clear()


@pytest.mark.process
@pytest.mark.parametrize("case", CASE_NAMES)
@pytest.mark.parametrize("folder", GROUPS)
def test_hostile_file_is_flagged_and_left_alone(
    groups: Callable[[str], GroupResult], folder: str, case: str
) -> None:
    """A hostile file stays byte for byte, runs nothing, and is listed with its problem and fix."""
    result = groups(folder)
    placed = result.placed[case]
    rel = placed.path.relative_to(result.vault).as_posix()
    # The daemon stayed up through all of it and still acted on a valid approval (twice).
    assert result.alive, f"the daemon died:\n{result.log[-3000:]}"
    assert result.exit_codes and all(code == 0 for code in result.exit_codes)
    assert sorted(result.runs) == sorted(result.probes), "something other than the probes ran"
    # Nothing was decided from the hostile file, and no request was made from it.
    if placed.request_id is not None:
        assert result.statuses[case] is Status.PENDING
    assert result.request_count == result.expected_requests
    # Byte for byte as it was (a link still a link to the same place, its target untouched).
    data, link = result.after[case]
    if placed.link_target is not None:
        assert link == placed.link_target, f"{rel}: the link was replaced or removed"
        assert result.outside_after == result.outside_before
    else:
        assert link is None
        assert data is not None, f"{rel} was removed"
        assert data == placed.before, f"{rel} was rewritten"
    # Listed under Needs attention, by file name, saying what is wrong and how to fix it.
    lines = [line for line in result.attention if rel in line]
    assert lines, f"{rel} is not under Needs attention:\n" + "\n".join(result.attention)
    message = lines[0]
    said = message.replace(rel, "<file>")  # the problem is named in words, not by the file name
    assert re.search(placed.case.problem, said, re.IGNORECASE), message
    assert FIX.search(said), f"the message names no fix: {message}"


@pytest.mark.process
@pytest.mark.parametrize("case", CASE_NAMES)
@pytest.mark.parametrize("folder", GROUPS)
def test_hostile_file_is_named_in_the_daemon_log(
    groups: Callable[[str], GroupResult], folder: str, case: str
) -> None:
    """A broken file is listed under Needs attention and in the log."""
    result = groups(folder)
    rel = result.placed[case].path.relative_to(result.vault).as_posix()
    named = [line.replace(rel, "<file>") for line in result.log.splitlines() if rel in line]
    assert named, f"{rel} is not in the daemon's log"
    assert any(re.search(result.placed[case].case.problem, line, re.I) for line in named)


# --- valid notes with a BOM or CRLF line endings ------------------------------------------


@pytest.mark.process
@pytest.mark.parametrize(
    ("bom", "crlf"), [(True, False), (False, True), (True, True)], ids=["bom", "crlf", "bom+crlf"]
)
def test_a_note_saved_with_bom_or_crlf_is_approved_executed_and_keeps_them(
    vault_path: Path, bom: bool, crlf: bool, helper: VaultHelper
) -> None:
    """A note saved with a BOM or CRLF line endings is approved, run once, and keeps them."""
    helper.record_runs()
    with Vault(vault_path) as vault, DaemonProcess(vault_path) as daemon:
        req = vault.submit("payment", {"amount": 1500}, summary="windows user")
        assert req.path is not None
        helper.settle()
        data = approved(req.path.read_text()).replace("decided_by:", "decided_by: carol")
        raw = data.encode()
        if crlf:
            raw = raw.replace(b"\n", b"\r\n")
        if bom:
            raw = b"\xef\xbb\xbf" + raw
        with open(req.path, "wb") as f:  # in place
            f.write(raw)
        done = vault_path / "Done" / f"{req.id}.md"
        eventually(lambda: done.exists() and b"status: executed" in done.read_bytes(), 30)
        out = done.read_bytes()
        assert out.startswith(b"\xef\xbb\xbf") is bom
        assert out.count(b"\xef\xbb\xbf") == (1 if bom else 0)
        if crlf:
            assert b"\n" not in out.replace(b"\r\n", b""), "a line lost its CRLF"
        else:
            assert b"\r" not in out
        assert "pending → approved · by carol" in out.decode("utf-8-sig")
        assert helper.runs() == [req.id]
        assert vault.get(req.id).status is Status.EXECUTED
        assert not helper.attention_lines() or all(
            req.id not in line for line in helper.attention_lines()
        )
        assert daemon.stop() == 0


@pytest.mark.process
@pytest.mark.parametrize("folder", GROUPS)  # one folder a test: a worker runs only its groups
def test_hostile_files_leave_nothing_outside_the_vault(
    groups: Callable[[str], GroupResult], folder: str
) -> None:
    """The symlink targets outside the vault are the only files there, unchanged."""
    result = groups(folder)
    assert list(result.outside_after) == [f"{folder}-target.md"]
    assert result.outside_after == result.outside_before
    leftovers = [p for p in (result.vault / folder).iterdir() if p.name.endswith(".hitl-tmp")]
    assert leftovers == []


# --- things that are not files at all -------------------------------------------------------


def _not_files(vault: Path) -> dict[str, str]:
    """In every folder: a named pipe, a link to an endless device and a folder, named as notes."""
    made: dict[str, str] = {}
    for folder in GROUPS:
        where = vault / folder
        os.mkfifo(where / "pipe.md")
        (where / "zero.md").symlink_to("/dev/zero")
        (where / "folder.md").mkdir()
        made |= {
            f"{folder}/pipe.md": "pipe",
            f"{folder}/zero.md": "link",
            f"{folder}/folder.md": "folder",
        }
    return made


def _kind(path: Path) -> str | None:
    st = path.lstat()
    if stat.S_ISFIFO(st.st_mode):
        return "pipe"
    if stat.S_ISLNK(st.st_mode):
        return "link" if os.readlink(path) == "/dev/zero" else "other link"
    return "folder" if stat.S_ISDIR(st.st_mode) else None


@pytest.mark.process
def test_pipes_devices_and_folders_named_like_notes_never_hang_the_daemon(
    vault_path: Path, helper: VaultHelper
) -> None:
    """Opening a pipe for reading waits for a writer, and /dev/zero never ends: neither is read.

    Each is flagged with a fix, left as it is, and a valid approval still runs, both
    under a watching daemon and under ``run --once`` (which rescans them all).
    """
    helper.record_runs()
    with Vault(vault_path) as vault, DaemonProcess(vault_path) as daemon:
        made = _not_files(vault_path)

        def flagged() -> list[str]:
            lines = helper.attention_lines()
            return [rel for rel in made if not any(rel in line for line in lines)]

        eventually(lambda: not flagged(), 30)
        probe = vault.submit("payment", {"amount": 2000}, summary="probe")
        assert probe.path is not None
        helper.settle()
        set_status(probe.path, "approved", decided_by="alice")
        eventually(lambda: vault.engine.journal.status_of(probe.id) is Status.EXECUTED, 30)
        assert daemon.stop() == 0
    problems = {"pipe": "a pipe", "link": "symbolic link", "folder": "a folder"}
    for line in helper.attention_lines():
        rel = next((r for r in made if r in line), None)
        if rel is not None:
            said = line.replace(rel, "<file>")
            assert problems[made[rel]] in said, line
            assert FIX.search(said), f"the message names no fix: {line}"
    with Vault(vault_path) as vault:
        late = vault.submit("payment", {"amount": 2000}, summary="approved while it was down")
        vault.approve(late.id, by="alice")
    once = helper.hitl("run", "--once", timeout=120)
    assert once.returncode == 0, once.stderr
    assert sorted(helper.runs()) == sorted([probe.id, late.id])
    assert {rel: _kind(vault_path / rel) for rel in made} == made
