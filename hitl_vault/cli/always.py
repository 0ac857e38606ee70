"""``rules always`` and ``rules revoke``: the "always" allows that ``approve --always``
made, listed and revoked (they are kept in the journal, never in the notes)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from .common import cli_errors, echo_json, json_option, open_vault

if TYPE_CHECKING:
    from ..policy.always import Allow


def allow_json(allow: Allow) -> dict[str, Any]:
    """One allow as ``rules always --json`` prints it."""
    from ..times import format_ts

    return {
        "name": allow.name,
        "action": allow.action,
        "params": dict(allow.params),
        "prefix": allow.prefix,
        "session": allow.session,
        "by": allow.by,
        "created": format_ts(allow.created),
        "until": format_ts(allow.until),
        "request": allow.request_id,
    }


def allow_line(allow: Allow) -> str:
    """``always-ID  Bash command "git status"  by alice until 2026-...``"""
    from ..times import format_ts

    only = f" (only for {allow.session})" if allow.session else ""
    return f"{allow.name}  {allow.describe()}{only}  by {allow.by} until {format_ts(allow.until)}"


@click.command("always")
@json_option
@click.pass_context
def rules_always(ctx: click.Context, as_json: bool) -> None:
    """List the "always" allows in force (made by approve --always): what each lets
    through without asking, who made it and when it ends."""
    vault = open_vault(ctx)
    with cli_errors(), vault:
        allows = vault.allows()
    if as_json:
        echo_json([allow_json(a) for a in allows])
        return
    if not allows:
        click.echo("no always allows in force")
    for allow in allows:
        click.echo(allow_line(allow))


@click.command("revoke")
@click.argument("name")
@click.option("--by", metavar="NAME", help="Who revokes it (default: your user name).")
@click.pass_context
def rules_revoke(ctx: click.Context, name: str, by: str | None) -> None:
    """Revoke the "always" allow NAME (as `rules always` lists it): the same call is asked
    about again. Recorded in the service log."""
    vault = open_vault(ctx)
    with cli_errors(), vault:
        vault.revoke_allow(name, by)
    click.echo(f"{name} revoked")
