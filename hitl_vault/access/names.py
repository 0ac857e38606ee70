"""Names of people and agents as the service accepts them, and who is making a change."""

from __future__ import annotations

import os

from ..errors import UsageError
from ..identity import same_name

NAME_LIMIT = 64  # characters: a name is shown in notes, lists and messages


def check_name(name: str, argument: str = "NAME") -> str:
    """``name`` as it will be kept (stripped), or a :class:`UsageError` saying what is wrong:
    empty, too long, or holding a character that is not printable (a newline, a tab)."""
    if not isinstance(name, str) or not same_name(name):
        raise UsageError(argument, "a name cannot be empty", "give a name like alice or deploy-bot")
    kept = name.strip()
    if not kept.isprintable():
        raise UsageError(
            argument,
            f"{kept!r} holds a character that is not printable (a newline or a tab, say)",
            "use letters, digits, spaces and punctuation only",
        )
    if len(kept) > NAME_LIMIT:
        raise UsageError(
            argument, f"{kept[:20]!r}… is longer than {NAME_LIMIT} characters", "use a shorter name"
        )
    return kept


def os_user() -> str:
    """The OS user running this process, by name (``uid N`` where the system has none): who
    made a change, as the service log records it, for people, tokens and settings alike
    (``public_url``, ``service_uid``). From the OS account (``pwd``), never from ``$USER``
    or ``$LOGNAME``, which the caller sets."""
    uid = os.getuid()
    try:
        import pwd  # POSIX only

        return pwd.getpwuid(uid).pw_name
    except (ImportError, KeyError):
        return f"uid {uid}"
