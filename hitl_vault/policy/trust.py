"""May this vault be trusted? Who can change the rules, and what changed in them.

``hitl-vault.yaml`` is a control plane: whoever can write it can add an
executor (``run: [sh, -c, ...]``) or drop the need for a human. So can whoever
can replace it, or swap ``.hitl/`` or a request folder for a link elsewhere.
:func:`check_vault` looks at the vault folder, the rules file, ``.hitl/``,
``Inbox/`` and the four request folders (those that exist: a missing one is
created later) with ``os.lstat``, never following a link, and reports:

* an **error** when one of them may be written by anyone (``S_IWOTH``);
* an **error** when one of them belongs to another user than the one running
  hitl-vault. *Root aside* means: an entry owned by root (uid 0) is accepted
  whoever runs hitl-vault, since root can change anything anyway and a vault
  under a root-owned tree is normal. It does not mean "a daemon running as root
  accepts everything": as root, an entry owned by uid 12345 is refused, since
  that user could rewrite what root then runs;
* an **error** when ``.hitl/``, ``Inbox/`` or a request folder is a symlink
  (notes would land outside the vault, ``chmod`` would hit the link's target);
* a **warning** when one of them may be written by its group (``S_IWGRP``,
  usual under umask 002).

The rules file itself may be a symlink (people keep it in a dotfiles repo): its
target is then checked too, with ``os.stat``, under the same rules. The folders
holding that target are not checked. The vault folder itself is checked through
a link as well, since that is the path the user chose.

Permissions and ownership are POSIX notions: where ``os.geteuid`` does not exist
(Windows), only the symlink checks run. Every message has the shape of
:func:`~hitl_vault.errors.located`: ``PATH: problem (fix)``.

:func:`policy_change` gives the SHA-256 of a new ``hitl-vault.yaml`` and a short
summary of what changed, to journal on every reload and show on the dashboard.
"""

from __future__ import annotations

import contextlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from ..errors import VaultError, located
from ..model import INBOX_FOLDER, REQUEST_FOLDERS, RULES_FILE, STATE_DIR

_POSIX = hasattr(os, "geteuid")

MAX_DIFF_LINES = 20
MAX_DIFF_CHARS = 1500
MAX_LINE_CHARS = 120


@dataclass(frozen=True)
class TrustReport:
    """What :func:`check_vault` found: errors refuse the vault, warnings do not."""

    errors: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.errors


class UntrustedVaultError(VaultError):
    """Someone other than the vault's user could change its rules or its state."""

    def __init__(self, problems: tuple[str, ...]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


def raise_for(report: TrustReport) -> None:
    """Raise :class:`UntrustedVaultError` listing every error of ``report``; warnings pass."""
    if report.errors:
        raise UntrustedVaultError(report.errors)


class _Found:
    """The messages gathered so far, as :func:`located` shapes them."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.warnings: list[str] = []

    def error(self, where: str, problem: str, fix: str) -> None:
        self.errors.append(located(where, problem, fix))

    def warn(self, where: str, problem: str, fix: str) -> None:
        self.warnings.append(located(where, problem, fix))


def _mode_and_owner(where: str, path: Path, st: os.stat_result, found: _Found) -> None:
    """World-writable or foreign-owned: an error; group-writable: a warning."""
    if not _POSIX:
        return
    me = os.geteuid()
    if not st.st_mode & (stat.S_IWOTH | stat.S_IWGRP) and st.st_uid in (me, 0):
        return  # the common case, checked before every agent tool call: nothing to quote
    import shlex

    quoted = shlex.quote(os.path.abspath(path))
    if st.st_mode & stat.S_IWOTH:
        found.error(where, "anyone may write it", f"chmod o-w {quoted}")
    if st.st_mode & stat.S_IWGRP:
        found.warn(where, "its group may write it", f"chmod g-w {quoted}")
    if st.st_uid not in (me, 0):
        found.error(
            where,
            f"belongs to uid {st.st_uid}; only uid {me} (running hitl-vault) or root may own it",
            f"sudo chown {me} {quoted}, or run hitl-vault as uid {st.st_uid}",
        )


def _lstat(where: str, path: Path, found: _Found) -> os.stat_result | None:
    """``os.lstat``, or None when the entry does not exist (or cannot be seen: an error)."""
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as e:
        found.error(where, f"cannot be inspected ({e.strerror})", "check its parent's permissions")
        return None


def check_vault(root: Path) -> TrustReport:
    """Check who may change the vault's rules, state and request folders (see the module doc)."""
    found = _Found()
    try:
        top = os.stat(root)  # through a link: the vault path is the user's choice
    except OSError:
        top = None  # not a vault: the caller says so
    if top is not None:
        _mode_and_owner(str(root), root, top, found)

    rules = root / RULES_FILE
    st = _lstat(RULES_FILE, rules, found)
    if st is not None and stat.S_ISLNK(st.st_mode):
        real = Path(os.path.realpath(rules))
        with contextlib.suppress(OSError):  # a dangling link: loading the rules reports it
            _mode_and_owner(f"{RULES_FILE} -> {real}", real, os.stat(real), found)
    elif st is not None:
        _mode_and_owner(RULES_FILE, rules, st, found)

    for name in (STATE_DIR, INBOX_FOLDER, *REQUEST_FOLDERS):
        path = root / name
        st = _lstat(name, path, found)
        if st is None:
            continue
        if stat.S_ISLNK(st.st_mode):
            import shlex

            link, moved = shlex.quote(os.path.abspath(path)), shlex.quote(os.path.realpath(path))
            found.error(
                name,
                f"is a symlink to {os.readlink(path)}; hitl-vault keeps this folder inside the "
                "vault and follows no link there",
                f"replace the link by the folder itself: rm {link} && mv {moved} {link}",
            )
        else:
            _mode_and_owner(name, path, st, found)
    return TrustReport(tuple(found.errors), tuple(found.warnings))


def check_module(path: Path) -> TrustReport:
    """Check who may change the Python a rule runs: the file, the folder holding it
    (whoever may write the folder may replace the file) and its ``__pycache__`` (Python
    runs a cached copy whose header matches the file), under the same rules as the vault's
    own files (see the module doc)."""
    found = _Found()
    for entry in (path, path.parent, path.parent / "__pycache__"):
        with contextlib.suppress(OSError):  # none (no __pycache__ yet), or gone meanwhile
            _mode_and_owner(str(entry), entry, os.stat(entry), found)
    return TrustReport(tuple(found.errors), tuple(found.warnings))


def _printable(line: str) -> str:
    """One line of the diff, cut to MAX_LINE_CHARS, with control characters made visible."""
    line = "".join(c if c.isprintable() or c == "\t" else "\ufffd" for c in line)
    return line if len(line) <= MAX_LINE_CHARS else line[: MAX_LINE_CHARS - 1] + "…"


def policy_change(old_text: str | None, new_text: str) -> tuple[str, str]:
    """``(sha256 hex of new_text, short summary of what changed since old_text)``.

    The summary is a unified diff without context (``@@ -3 +3 @@`` then ``-old``
    / ``+new`` lines), cut after MAX_DIFF_LINES changed lines or about
    MAX_DIFF_CHARS characters with ``…and N more changed lines``. ``old_text``
    None (nothing loaded before) gives ``first load (N lines)``.
    """
    import hashlib

    digest = hashlib.sha256(new_text.encode("utf-8", "surrogateescape")).hexdigest()
    new_lines = new_text.splitlines()
    if old_text is None:
        return digest, f"first load ({len(new_lines)} lines)"
    if old_text == new_text:
        return digest, "no change"
    import difflib  # here, once there is a change: the agent gate loads this module each call

    diff = difflib.unified_diff(old_text.splitlines(), new_lines, lineterm="", n=0)
    body = [line for line in diff if not line.startswith(("---", "+++"))]
    if not body:
        return digest, "no line changed (only line endings or the final newline)"
    changed = sum(1 for line in body if not line.startswith("@@"))
    shown: list[str] = []
    size = shown_changed = 0
    for line in body:
        text = _printable(line)
        is_hunk = line.startswith("@@")
        if size + len(text) > MAX_DIFF_CHARS or (not is_hunk and shown_changed == MAX_DIFF_LINES):
            break
        shown.append(text)
        size += len(text) + 1
        shown_changed += not is_hunk
    if shown and shown[-1].startswith("@@"):
        shown.pop()  # a hunk header without any of its lines says nothing
    if shown_changed < changed:
        shown.append(f"…and {changed - shown_changed} more changed lines")
    return digest, "\n".join(shown)


def user_name(uid: int) -> str:
    """``uid 1000 (alice)``: a user id with its name where the system knows it."""
    try:
        import pwd  # POSIX only

        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except (ImportError, KeyError):
        return f"uid {uid}"
