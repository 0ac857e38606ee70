"""``people`` and ``token``: who may decide and which credentials may ask or answer, kept in
the vault's store and changed only here, by the service's owner (see
:mod:`hitl_vault.access`)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import click

from .common import cli_errors, echo_json, json_option, open_vault

if TYPE_CHECKING:
    from ..access.people import Change, People
    from ..identity import Credential, Person
    from ..store import JournalStore


@contextmanager
def _store(ctx: click.Context) -> Iterator[JournalStore]:
    """The vault's store, for one command; its errors as the CLI's."""
    vault = open_vault(ctx)
    with cli_errors(), vault:
        yield vault.engine.journal


def _when(value: Any) -> str | None:
    from ..times import format_ts

    return None if value is None else format_ts(value)


def _told(change: Change) -> None:
    """Say which channels heard of the change, and why any did not (the change stands)."""
    for told in change.told:
        said = "delivered" if told.error is None else f"NOT delivered: {told.error}"
        click.echo(f"  told {told.channel}: {said}")


@contextmanager
def _people(ctx: click.Context) -> Iterator[People]:
    """The vault's people, for one command by this OS user (who, like the vault folder's
    owner and the service's, is nobody's uid); its errors as the CLI's."""
    from ..access.names import os_user
    from ..access.people import People

    vault = open_vault(ctx)
    with cli_errors(), vault:
        yield People(vault.engine.journal, by=os_user(), vault=vault.root)


uid_option = click.option(
    "--uid",
    "uids",
    type=int,
    multiple=True,
    metavar="UID",
    help=(
        "An OS user id that is this person (never root's, the service's or the vault "
        "owner's). Repeatable."
    ),
)
notify_option = click.option(
    "--notify",
    "urls",
    multiple=True,
    metavar="URL",
    help="An Apprise URL that reaches this person (their own). Repeatable.",
)


@click.group()
def people() -> None:
    """Who may decide: people, their OS users and their channels (kept in the store)."""


@people.command("add")
@click.argument("name")
@uid_option
@notify_option
@click.pass_context
def people_add(ctx: click.Context, name: str, uids: tuple[int, ...], urls: tuple[str, ...]) -> None:
    """Add a person called NAME; logged, and told on their channels."""
    from ..times import utcnow

    with _people(ctx) as register:
        change = register.add(name, uids, urls, now=utcnow())
    click.echo(f"added {change.person.name}")
    _told(change)


@people.command("set")
@click.argument("name")
@uid_option
@notify_option
@click.option(
    "--enable", is_flag=True, help="Enable a disabled person again (no tokens or old links back)."
)
@click.pass_context
def people_set(
    ctx: click.Context, name: str, uids: tuple[int, ...], urls: tuple[str, ...], enable: bool
) -> None:
    """Replace NAME's uids (--uid) and/or channels (--notify); told on the old and new ones."""
    from ..times import utcnow

    with _people(ctx) as register:
        change = register.set(name, uids or None, urls or None, enable=enable, now=utcnow())
    click.echo(f"changed {change.person.name}" + (" (enabled)" if enable else ""))
    _told(change)


@people.command("list")
@json_option
@click.pass_context
def people_list(ctx: click.Context, as_json: bool) -> None:
    """Everyone in people, disabled ones too (channels shown with secrets masked)."""
    from ..notify.send import mask_url

    with _store(ctx) as store:
        found: list[Person] = store.people()
        now = _now()
        live = {p.name: sum(c.live(now) for c in store.credentials(p.name)) for p in found}
    rows: list[dict[str, Any]] = [
        {
            "name": p.name,
            "uids": list(p.uids),
            "notify": [mask_url(url) for url in p.notify],
            "disabled": p.disabled,
            "tokens": live[p.name],
            "created": _when(p.created),
            "changed": _when(p.changed),
        }
        for p in found
    ]
    if as_json:
        echo_json(rows)
        return
    if not rows:
        click.echo("nobody in people (add someone: hitl-vault people add NAME --uid UID)")
        return
    width = max(4, *(len(r["name"]) for r in rows))
    click.echo(f"{'NAME':<{width}}  {'STATE':<8}  {'UIDS':<12}  TOKENS  CHANNELS")
    for r in rows:
        state = "disabled" if r["disabled"] else "enabled"
        uids = " ".join(map(str, r["uids"])) or "-"
        channels = " ".join(r["notify"]) or "-"
        click.echo(f"{r['name']:<{width}}  {state:<8}  {uids:<12}  {r['tokens']:<6}  {channels}")


@people.command("disable")
@click.argument("name")
@click.pass_context
def people_disable(ctx: click.Context, name: str) -> None:
    """Disable NAME, revoking all their tokens and ending their inbox sessions at once; logged,
    and told on their channels."""
    from ..times import utcnow

    with _people(ctx) as register:
        change = register.disable(name, now=utcnow())
    click.echo(
        f"disabled {change.person.name}; {change.revoked} token(s) revoked, {change.ended} "
        "session(s) signed out"
    )
    _told(change)


def _now() -> Any:
    from ..times import utcnow

    return utcnow()


def _expiry(text: str) -> timedelta | None:
    from ..times import parse_duration

    if text.strip().lower() == "never":
        return None
    with cli_errors():
        return parse_duration(text, "--expires")


def _listed(credential: Credential, state: str) -> dict[str, Any]:
    c = credential
    return {
        "id": c.id,
        "name": c.name,
        "role": str(c.role),
        "actions": None if c.actions is None else list(c.actions),
        "created": _when(c.created),
        "expires": _when(c.expires),
        "revoked": _when(c.revoked),
        "last_used": _when(c.last_used),
        "state": state,
    }


@click.group()
def token() -> None:
    """Credentials for the service: agent tokens ask, approver tokens (a person's) answer."""


@token.command("add")
@click.argument("name")
@click.option(
    "--role",
    required=True,
    type=click.Choice(["agent", "approver"]),
    help="agent: may submit and wait; approver: a person from people, may decide.",
)
@click.option(
    "--actions",
    metavar="A,B",
    help="An agent token may ask for these actions only (comma-separated).",
)
@click.option(
    "--expires",
    default="90d",
    show_default=True,
    metavar="DURATION",
    help="How long it is valid: 12h, 30d, 365d, or never.",
)
@json_option
@click.pass_context
def token_add(
    ctx: click.Context,
    name: str,
    role: str,
    actions: str | None,
    expires: str,
    as_json: bool,
) -> None:
    """Make a token for NAME and print it, once: it is kept only as a hash.

    The token alone goes to stdout (what it is goes to stderr); --json prints {id, name,
    role, token, expires}.
    """
    from ..access import tokens
    from ..access.names import os_user

    valid_for = _expiry(expires)
    limited = None if actions is None else [a for a in actions.split(",") if a.strip()]
    with _store(ctx) as store:
        credential, secret = tokens.mint(
            store, name, role, actions=limited, expires=valid_for, now=_now(), by=os_user()
        )
    ends = _when(credential.expires)
    if as_json:
        echo_json(
            {
                "id": credential.id,
                "name": credential.name,
                "role": str(credential.role),
                "token": secret,
                "expires": ends,
            }
        )
        return
    click.echo(
        f"token {credential.id} for {credential.name} ({credential.role}, "
        f"expires {ends or 'never'}):",
        err=True,
    )
    click.echo(secret)
    click.echo(
        "This token will not be shown again: store it now (only its hash is kept).", err=True
    )


@token.command("end-links")
@click.argument("name", required=False)
@click.pass_context
def token_end_links(ctx: click.Context, name: str | None) -> None:
    """End every decision link sent so far, at once and for good, or NAME's only; logged.

    A link sent before is refused from now on (its page says it was ended); links in the
    messages sent after work, and decisions made through links stand.
    """
    from ..access import links
    from ..access.names import os_user
    from ..errors import AccessError

    with _store(ctx) as store:
        person = None if name is None else store.person(name)
        if name is not None and person is None:
            fix = "see them with hitl-vault people list"
            raise AccessError(name.strip(), "is not in people", fix)
        links.end(store, None if person is None else person.name, now=_now(), by=os_user())
    whose = "every decision link" if person is None else f"every decision link of {person.name}"
    click.echo(f"ended {whose} sent so far (links sent from now on work)")


@token.command("list")
@json_option
@click.pass_context
def token_list(ctx: click.Context, as_json: bool) -> None:
    """Every token, oldest first, with its state (live, expired, revoked, disabled); never a
    secret."""
    from ..access.tokens import state

    now = _now()
    with _store(ctx) as store:
        rows = [_listed(c, state(c, now, store)) for c in store.credentials()]
    if as_json:
        echo_json(rows)
        return
    if not rows:
        click.echo("no tokens (make one: hitl-vault token add NAME --role agent)")
        return
    width = max(4, *(len(r["name"]) for r in rows))
    click.echo(f"{'ID':<12}  {'NAME':<{width}}  {'ROLE':<8}  {'STATE':<8}  EXPIRES / LAST USED")
    for r in rows:
        limited = f"  actions {','.join(r['actions'])}" if r["actions"] is not None else ""
        click.echo(
            f"{r['id']:<12}  {r['name']:<{width}}  {r['role']:<8}  {r['state']:<8}  "
            f"{r['expires'] or 'never'} / {r['last_used'] or 'never'}{limited}"
        )


@token.command("revoke")
@click.argument("name_or_id", metavar="NAME|ID")
@click.pass_context
def token_revoke(ctx: click.Context, name_or_id: str) -> None:
    """Revoke every token of NAME, or the one token ID; logged."""
    from ..access import tokens
    from ..access.names import os_user

    with _store(ctx) as store:
        count = tokens.revoke(store, name_or_id, _now(), os_user())
    if count:
        click.echo(f"revoked {count} token(s) ({name_or_id})")
    else:
        click.echo(f"nothing to revoke: every token of {name_or_id} is revoked already")


@token.command("login")
@click.argument("name")
@click.pass_context
def token_login(ctx: click.Context, name: str) -> None:
    """Print a one-time link that signs NAME in to the web inbox (valid 10 minutes, once).

    The link goes to stdout (what it is goes to stderr). It uses the public URL that
    `hitl-vault serve --public-url` recorded; send it to the person on a channel of theirs.
    """
    from ..access.names import os_user
    from ..access.sessions import login_link

    with _store(ctx) as store:
        link, address = login_link(store, name, now=_now(), by=os_user())
    click.echo(f"sign-in link for {link.name}, valid until {_when(link.expires)}, once:", err=True)
    click.echo(address)
