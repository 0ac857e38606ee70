"""Names of people and agents as the service accepts them, and who is making a change."""

from __future__ import annotations

import os

# One rule for every name that asks or decides, kept with the base (the rules and the
# notes check names too): people and tokens use it as they are.
from ..identity import check_name as check_name


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
