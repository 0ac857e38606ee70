"""``hitl-vault db``: the journal on a PostgreSQL server (docs/several-hosts.md): make or
upgrade its tables (``migrate``) and move a vault's SQLite journal into it (``import``);
and ``--journal``, the option ``run`` and ``serve`` take to name that server."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

import click

from .common import cli_errors, vault_path

F = TypeVar("F", bound=Callable[..., Any])


def _url(given: str | None) -> str:
    """The server's URL: ``--journal``, else ``$HITL_VAULT_JOURNAL`` (exit 2 without one)."""
    from ..journal.pg_url import JOURNAL_ENV, journal_url

    with cli_errors():
        url = journal_url(given)
    if url is None:
        raise click.UsageError(f"give --journal postgresql://... or set {JOURNAL_ENV}")
    return url


def journal_option(fn: F) -> F:
    """``--journal URL`` (run, serve): the server journal for this process and what it
    starts, as if ``$HITL_VAULT_JOURNAL`` held it; a URL with a password is refused."""

    def use(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
        if value is not None:
            from ..journal.pg_url import JOURNAL_ENV

            os.environ[JOURNAL_ENV] = _url(value)  # actions' programs use the same journal
        return value

    return click.option(
        "--journal",
        metavar="URL",
        expose_value=False,
        callback=use,
        help="The journal on a PostgreSQL server, postgresql://USER@HOST/DB, never with a "
        "password (~/.pgpass has it); default: $HITL_VAULT_JOURNAL, else .hitl/journal.db.",
    )(fn)


url_option = click.option(
    "--journal",
    "given",
    metavar="URL",
    help="The server: postgresql://USER@HOST/DB (default: $HITL_VAULT_JOURNAL).",
)


@click.group()
def db() -> None:
    """The journal on a PostgreSQL server, shared by several hosts (the postgres extra)."""


@db.command()
@url_option
def migrate(given: str | None) -> None:
    """Create or upgrade the journal's tables on the server, under a lock (hosts never do it
    themselves; one whose code is older than the tables refuses to start)."""
    from ..journal.pg_host import migrate_journal
    from ..journal.pg_url import shown

    url = _url(given)
    with cli_errors():
        done = migrate_journal(url)
    change = "up to date" if done.before == done.after else f"{done.before} -> {done.after}"
    click.echo(f"{shown(url)}: schema {done.after} ({change}); vault {done.vault_id}")


@db.command("import")
@url_option
@click.pass_context
def import_(ctx: click.Context, given: str | None) -> None:
    """Move this vault's SQLite journal (.hitl/journal.db) into the server's empty journal
    with its chain intact, record the server in .hitl/, and move the local file aside."""
    from ..journal.pg_host import import_journal

    url = _url(given)
    root = vault_path(ctx)
    with cli_errors():
        counts, aside = import_journal(root, url)
    click.echo(
        f"imported {counts['requests']} requests and {counts['entries']} entries; "
        f"the local journal is now {aside} (run `hitl-vault verify`)"
    )
