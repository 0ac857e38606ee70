"""The rules in force for the local gate, kept parsed in ``.hitl/gate-policy.pickle`` (and
as :mod:`.fastgate`'s plain table) so that the next gate call need not import PyYAML."""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..model import JOURNAL_FILE, RULES_FILE, STATE_DIR
from ..policy.always import STAMP_FILE, Allow
from ..policy.rules import Policy

POLICY_CACHE = "gate-policy.pickle"
MAX_CACHE_BYTES = 4 << 20


def rules_in_force(root: Path) -> Policy:
    """The policy ``hitl-vault.yaml`` states (see :func:`in_force`)."""
    return in_force(root)[0]


def in_force(root: Path) -> tuple[Policy, tuple[Allow, ...]]:
    """The policy ``hitl-vault.yaml`` states, as :func:`~hitl_vault.policy.rulesfile.load_policy`
    reads it, and the "always" allows the journal holds, kept in ``.hitl/gate-policy.pickle``
    for the next gate call (an allow that expires since stops matching all the same).

    The copy is used only for the very same bytes of the rules file read by the same
    hitl-vault code and Python, and the same bytes of ``.hitl/always-stamp`` (rewritten
    after each allow added or revoked); anything else (or a copy that does not load) is
    read afresh. Parsing needs PyYAML, which costs more to import than an allowed tool call
    may take. ``.hitl/`` is trusted as the journal is: the caller checked who may write it.
    The plain table of :mod:`.fastgate` is kept beside it.
    """
    import pickle
    import sys

    from .. import __version__
    from ..durable import read_file
    from ..errors import NoteError
    from ..policy import rules

    path = root / RULES_FILE
    try:
        raw: bytes | None = read_file(path, RULES_FILE, follow_links=True)
    except FileNotFoundError:
        raw = None
    except NoteError:
        raw = b"unreadable"  # load_policy says why
    here = Path(rules.__file__ or ".").parent  # the code that reads and matches rules
    # Every module of policy/ (a new one is covered without a list to keep up to date).
    with os.scandir(here) as found:
        mtimes = sorted((e.name, e.stat().st_mtime_ns) for e in found if e.name.endswith(".py"))
    code = [__version__, sys.version, mtimes]
    stamp = _stamp(root)
    key = (code, raw, stamp)  # compared whole: no hash to import and compute on every call
    cache = root / STATE_DIR / POLICY_CACHE
    try:
        kept_key, kept, allows = pickle.loads(_read_private(cache))
        if kept_key == key and isinstance(kept, Policy) and isinstance(allows, tuple):
            _fast_table(root, raw, kept)
            return kept, allows
    except Exception:  # none yet, someone else's, or from other code: parse afresh
        pass
    from ..policy.rulesfile import load_policy

    policy = load_policy(path, RULES_FILE)
    allows = _allows(root)
    if raw is not None and read_file(path, RULES_FILE, follow_links=True) != raw:
        return policy, allows  # changed while read: keep no copy of either
    try:
        _keep(cache, pickle_policy(key, policy, allows))
    except Exception:  # a copy that cannot be made only costs time
        import logging

        log = logging.getLogger(__name__)
        log.warning("could not keep the parsed rules in %s", cache, exc_info=True)
    _fast_table(root, raw, policy)
    return policy, allows


def _stamp(root: Path) -> bytes | None:
    """The stamp's bytes (None: no allow was ever added here)."""
    try:
        return _read_private(root / STATE_DIR / STAMP_FILE)
    except FileNotFoundError:
        return None
    except OSError:  # not this user's, or not a file: never trust a copy keyed on it
        return os.urandom(16)


def _allows(root: Path) -> tuple[Allow, ...]:
    """The allows in force in the vault's journal (none without one: nothing to open)."""
    if not (root / STATE_DIR / JOURNAL_FILE).is_file():
        return ()
    from ..journal.sqlite import Journal
    from ..times import utcnow

    journal = Journal(root / STATE_DIR / JOURNAL_FILE)
    try:
        return tuple(journal.allows(utcnow()))
    finally:
        journal.close()


def _fast_table(root: Path, raw: bytes | None, policy: Policy) -> None:
    """Keep the rules as the fast path reads them (:mod:`.fastgate`), with the bytes they
    were read from (the caller found the vault trusted)."""
    from . import fastgate

    fastgate.keep(str(root), raw, fastgate.table_of(policy))


def _read_private(path: Path) -> bytes:
    """The bytes of a regular file only this user may have written (else OSError): a
    pickle runs code as it loads, so nobody else's is ever loaded."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    try:
        st = os.fstat(fd)
        mine = not hasattr(os, "geteuid") or st.st_uid == os.geteuid()
        if not stat.S_ISREG(st.st_mode) or not mine or st.st_mode & 0o022:
            raise PermissionError(f"{path} is not a private file of this user")
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read(MAX_CACHE_BYTES)
    finally:
        os.close(fd)


def pickle_policy(key: Any, policy: Policy, allows: tuple[Allow, ...] = ()) -> bytes:
    import copyreg
    import pickle
    from types import MappingProxyType

    def proxy(m: MappingProxyType[Any, Any]) -> tuple[Any, tuple[dict[Any, Any]]]:
        return read_only, (dict(m),)

    copyreg.pickle(MappingProxyType, proxy)
    return pickle.dumps((key, policy, allows), protocol=pickle.HIGHEST_PROTOCOL)


def read_only(mapping: dict[Any, Any]) -> Mapping[Any, Any]:
    """A mapping proxy again, as the rules hold their mappings (for unpickling)."""
    from types import MappingProxyType

    return MappingProxyType(mapping)


def _keep(cache: Path, data: bytes) -> None:
    """Write the copy through a temp file and a rename; a failure only costs time."""
    import tempfile

    try:
        if not cache.parent.is_dir():  # as the journal makes it: private, whatever the umask
            cache.parent.mkdir(mode=0o700)
            os.chmod(cache.parent, 0o700)
        fd, tmp = tempfile.mkstemp(prefix=f".{cache.name}.", dir=cache.parent)
    except OSError:
        return
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, cache)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
