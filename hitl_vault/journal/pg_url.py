"""A journal on a PostgreSQL server, as a host names it: a ``postgresql://`` URL in
``$HITL_VAULT_JOURNAL`` (or ``--journal`` on ``run`` and ``serve``). Read without the
driver, so the CLI can check and show a URL on an install without the ``postgres`` extra.

A URL never holds the password: a command line is visible to every local user, and an
environment is easily copied into logs. The password comes from a passfile
(``~/.pgpass``, ``PGPASSFILE``), a service file (``PGSERVICEFILE``) or ``PGPASSWORD``,
which libpq reads by itself.
"""

from __future__ import annotations

import os
import urllib.parse

from ..errors import UsageError

JOURNAL_ENV = "HITL_VAULT_JOURNAL"
SCHEMES = ("postgresql", "postgres")
# Query keys that hold a secret (libpq's ``sslpassword`` unlocks the client's key), compared
# without regard to case.
SECRET_KEYS = ("password", "sslpassword")


def _secret(key: str) -> bool:
    return key.lower() in SECRET_KEYS


def journal_url(given: str | None = None) -> str | None:
    """The server journal this process is told to use: ``given`` (``--journal``), else
    ``$HITL_VAULT_JOURNAL``; None (or empty) for the SQLite journal in ``.hitl/``. Checked by
    :func:`check_url`; ``where`` in an error is the option or the variable it came from."""
    where = "--journal" if given is not None else JOURNAL_ENV
    url = given if given is not None else os.environ.get(JOURNAL_ENV)
    if url is None or not url.strip():
        return None
    return check_url(url.strip(), where)


def check_url(url: str, where: str = JOURNAL_ENV) -> str:
    """``url`` if it names a PostgreSQL journal without a password; :class:`UsageError`
    naming ``where`` and the fix otherwise."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise UsageError(
            where,
            f"{shown(url)!r} is not a postgresql:// URL",
            "give postgresql://USER@HOST:PORT/DATABASE, or unset it for the SQLite journal",
        )
    query = urllib.parse.parse_qs(parts.query)
    if parts.password is not None or any(map(_secret, query)):
        raise UsageError(
            where,
            "the URL holds a password (or sslpassword), which every local user could read "
            "(on a command line, or copied from an environment)",
            "remove it from the URL and put it in ~/.pgpass (mode 600), a service file "
            "(PGSERVICEFILE) or PGPASSWORD",
        )
    return url


def shown(url: str) -> str:
    """The URL as logs and errors show it: no password, whatever was written."""
    try:
        parts = urllib.parse.urlsplit(url)
        if parts.password is None:
            netloc = parts.netloc
        else:
            user, _, host = parts.netloc.rpartition("@")
            netloc = f"{user.partition(':')[0]}:***@{host}"
        query = "&".join(
            f"{k}=***" if _secret(k) else f"{k}={v}"
            for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
        )
    except ValueError:
        return "(a URL that cannot be read)"
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, ""))
