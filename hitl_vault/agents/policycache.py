"""The gate's private copy of the parsed rules (and the always allows): read only from a
regular file this user alone may have written, since a pickle runs code as it loads, and
written through a temp file and a rename, where a failure only costs time."""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..policy.always import Allow
    from ..policy.rules import Policy

MAX_CACHE_BYTES = 4 << 20


def read_private(path: Path) -> bytes:
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


def keep_copy(cache: Path, data: bytes) -> None:
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
