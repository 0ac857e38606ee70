"""``list`` and ``show``: the requests of a vault, as a person or a program reads them."""

from __future__ import annotations

import json

import click

from ..model import Status
from .common import cli_errors, echo_json, json_option, open_vault
from .ids import complete_ids, resolve_id


@click.command("list")
@click.option(
    "--status",
    type=click.Choice([s.value for s in Status]),
    help="Only requests with this status.",
)
@click.option(
    "--limit", type=click.IntRange(min=1), metavar="N", help="At most N requests (the newest)."
)
@json_option
@click.pass_context
def list_(ctx: click.Context, status: str | None, limit: int | None, as_json: bool) -> None:
    """List requests, newest first, under a header line (--json: a list of request objects,
    without their history)."""
    from ..shapes import listed_json
    from ..text import shown

    vault = open_vault(ctx)
    with cli_errors(), vault:
        requests = vault.list(status=status, limit=limit)
        if as_json:
            full = [vault.get(r.id) for r in requests]
            echo_json([listed_json(r, vault.votes(r.id)) for r in full])
            return
    if not requests:
        click.echo("no requests")
        return
    width = max(len(r.id) for r in requests)
    click.echo(f"{'ID':<{width}}  {'STATUS':<9}  {'RISK':<8}  SUMMARY")
    for r in requests:
        click.echo(f"{r.id:<{width}}  {r.status:<9}  {r.risk:<8}  {shown(r.summary or r.action)}")


@click.command()
@click.argument("request_id", metavar="ID", shell_complete=complete_ids())
@json_option
@click.pass_context
def show(ctx: click.Context, request_id: str, as_json: bool) -> None:
    """Show one request with its history (ID: the id, or its start if only one id has it)."""
    from ..chain import decision_entry, recorded_by
    from ..notes.render import history_line
    from ..shapes import request_json
    from ..text import NOT_PRINTABLE_ASCII, visible

    vault = open_vault(ctx)
    with cli_errors(), vault:
        request_id = resolve_id(vault, request_id)
        request = vault.get(request_id)
        where = request.path.relative_to(vault.root).as_posix() if request.path else "(no note)"
        decider = decision_entry(vault.engine.journal.entries(request_id))
        params, sha, edited = vault.params_to_run(request_id)
        votes = vault.votes(request_id)
    uid, actor = (decider.uid, decider.actor) if decider else (None, None)
    credential = decider.credential if decider else None
    data = {**request_json(request, votes), "decided_uid": uid, "decided_actor": actor}
    data["decided_credential"] = credential
    data |= {"params": params, "params_sha": sha}
    if edited:
        data["edited_in_note"] = edited
    if as_json:
        echo_json(data)
        return
    if data["decided_by"] and (uid, actor) != (None, None):  # the name is claimed, not these
        who = recorded_by(uid, actor, credential)
        data["decided_by"] = f"{data['decided_by']} (recorded by {who})"
    for key in (
        "id",
        "status",
        "action",
        "summary",
        "risk",
        "rule",
        "requested_by",
        "created",
        "expires",
        "decided_by",
        "reason",
        "decided_at",
        "executed_at",
        "result",
        "error",
    ):
        if data[key] not in (None, ""):
            click.echo(f"{key + ':':<14}{data[key]}")
    click.echo(f"{'note:':<14}{where}")
    if votes.plan.by_votes and (request.status is Status.PENDING or request.votes()):
        cast = ", ".join(f"{n} {v or '(not yet)'}" for n, v in data["votes"].items())
        click.echo(f"{'votes:':<14}{cast or '(none yet)'}")
        if request.status is Status.PENDING:
            click.echo(f"{'needed:':<14}{votes.progress()}")
    if edited:
        click.echo(f"{'edited:':<14}since it was asked for: {edited}")
    click.echo(f"params (sha256 {sha[:16]}):")
    for key, value in params.items():
        click.echo(f"  {key}: {json.dumps(value, ensure_ascii=False)}")
    if request.context:
        click.echo("context:")
        for line in request.context.splitlines():
            click.echo(f"  {NOT_PRINTABLE_ASCII.sub(visible, line)}".rstrip())
    click.echo("history:")
    for t in request.history:
        click.echo("  " + history_line(t))
