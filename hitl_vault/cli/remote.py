"""``hitl-vault --server URL|unix:PATH submit|show|list|approve|reject|cancel``: the same
commands, asked of the service instead of a vault on this machine.

Over HTTP (``https://…``, or ``http://`` to this machine) a token says who you are: an
agent token submits and cancels its own requests, an approver token decides
(``$HITL_VAULT_TOKEN``, or ``--token-file PATH``). Over ``unix:PATH`` (the service's Unix
socket) no token is needed: the kernel tells the service which OS user you are, and
``people`` which person. The output and the exit codes are the local commands'; what
differs is said in each command's help: there is no ``--by`` (the token or the socket
says who), an ID is the whole id (no prefix), and ``approve`` takes no edited params.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, BinaryIO

import click

from ..model import Status
from ..text import shown
from .common import cli_errors, echo_json, json_option, param_option

SERVER_ENV = "HITL_VAULT_SERVER"
UNIX = "unix:"


def connect(ctx: click.Context) -> Any:
    """The client of the service ``--server`` names (:class:`hitl_vault.Client`, or the Unix
    socket's, which needs no token); both offer get, list, approve, reject and cancel."""
    server: str = ctx.obj["server"]
    if server.startswith(UNIX):
        from ..serve.socket_client import SocketClient

        path = server[len(UNIX) :]
        if not path:
            example = "unix:/run/hitl-vault/vault.sock"
            raise click.BadParameter(f"unix: needs the socket's path, e.g. {example}", ctx, None)
        return SocketClient(path)
    from ..agents.gate_client import ServerError, read_token
    from ..client import Client

    try:
        secret = read_token(ctx.obj.get("token_file"))
    except ServerError as e:
        raise click.ClickException(str(e)) from None
    with cli_errors():
        return Client(server, secret)


@contextmanager
def remote_errors() -> Iterator[None]:
    """:func:`cli_errors`, and a refusal names the status the service answered with."""
    from ..errors import ServiceError

    try:
        with cli_errors():
            yield
    except click.ClickException as e:
        cause = e.__context__
        if isinstance(cause, ServiceError) and cause.status:
            said = f"{e.format_message()} (the service answered {cause.status})"
            raise click.ClickException(said) from None
        raise


def _no_by(by: str | None) -> None:
    if by is not None:
        raise click.UsageError(
            "--by: over --server you are who your token (or, over unix:, your OS user) is; "
            "leave --by out"
        )


by_refused = click.option("--by", metavar="NAME", hidden=True, help="Not over --server.")


@click.command("submit")
@click.argument("action")
@param_option
@click.option("--params-json", metavar="JSON", help="All params as one JSON object (-p wins).")
@click.option("--summary", default="", help="One line a human reads first.")
@click.option("--timeout", metavar="DURATION", help="How long it may stay pending: 90s, 1h, 2d.")
@click.option("--context", metavar="TEXT", help="Why you ask, for whoever decides.")
@click.option(
    "--context-file",
    metavar="PATH",
    type=click.File("rb", lazy=False),
    help="The context from a UTF-8 file ('-' reads stdin).",
)
@click.option("--wait", is_flag=True, help="Block until decided; exit 0 if approved, 1 if not.")
@click.option(
    "--wait-result",
    is_flag=True,
    help="Block until it has run and print its result; exit 0 if executed, 1 otherwise.",
)
@by_refused
@json_option
@click.pass_context
def submit(
    ctx: click.Context,
    action: str,
    pairs: tuple[str, ...],
    params_json: str | None,
    summary: str,
    timeout: str | None,
    context: str | None,
    context_file: BinaryIO | None,
    wait: bool,
    wait_result: bool,
    by: str | None,
    as_json: bool,
) -> None:
    """Propose an action to the service with an agent token; prints its id and status.

    The requester is the token's name. Not over unix: (people decide there; agents ask
    with a token)."""
    from .text import parse_params, read_context

    _no_by(by)
    if ctx.obj["server"].startswith(UNIX):
        raise click.UsageError(
            "submit: the Unix socket is where people decide; an agent submits over HTTP "
            "with its token (--server https://… and $HITL_VAULT_TOKEN)"
        )
    with cli_errors():
        params = parse_params(pairs, params_json)
    if context_file is not None:
        if context is not None:
            raise click.UsageError("give --context or --context-file, not both")
        with cli_errors():
            context = read_context(context_file)
    client = connect(ctx)
    with remote_errors():
        data = client.submit(action, params, summary=summary, context=context, timeout=timeout)
        if not as_json:
            click.echo(f"{data['id']} {data['status']}")
            if data["status"] == Status.REJECTED and not wait:
                click.echo(outcome(data), err=True)
        if wait and data["status"] == Status.PENDING:
            data = waited(client, data["id"])
            if not as_json:
                click.echo(f"{data['id']} {data['status']}")
        if wait_result and not Status(data["status"]).is_final:
            data = ended(client, data["id"])
            if not as_json:
                click.echo(f"{data['id']} {data['status']}")
    if as_json:
        echo_json(data)
    if wait_result:
        _said_result(ctx, data, as_json)
    if wait and data["status"] not in (Status.APPROVED, Status.EXECUTING, Status.EXECUTED):
        if not as_json:
            click.echo(outcome(data), err=True)
        ctx.exit(1)


def waited(client: Any, request_id: str) -> dict[str, Any]:
    """The request once it is no longer pending, asked in long-polls that start short and
    double (to 16 s): the service holds a poll until the status changes from what it is
    when the poll starts, so a decision made just before is seen at the poll's end."""
    from ..errors import WaitTimeoutError

    poll = 0.5
    while True:
        try:
            return client.wait(request_id, poll)  # type: ignore[no-any-return]
        except WaitTimeoutError:
            poll = min(poll * 2, 16.0)


def _said_result(ctx: click.Context, data: dict[str, Any], as_json: bool) -> None:
    """--wait-result: the result and exit 0 if executed, else why not and exit 1."""
    if data["status"] != Status.EXECUTED:
        if not as_json:
            click.echo(outcome(data), err=True)
        ctx.exit(1)
    if not as_json and data["result"]:
        click.echo(shown(data["result"]))


def ended(client: Any, request_id: str) -> dict[str, Any]:
    """The request once it has ended (executed, failed, rejected, timed out, cancelled),
    asked in long-polls as :func:`waited` asks them."""
    from ..errors import WaitTimeoutError

    poll = 0.5
    while True:
        try:
            data: dict[str, Any] = client.wait(request_id, poll)
        except WaitTimeoutError:
            data = {"status": Status.PENDING}
        if Status(data["status"]).is_final:
            return data
        poll = min(poll * 2, 16.0)


def outcome(data: dict[str, Any]) -> str:
    """Why a request will not run, from its JSON (as the local ``submit --wait`` says it)."""
    status = data["status"]
    if status == Status.TIMED_OUT:
        return "timed out: nobody decided" + (f" by {data['expires']}" if data["expires"] else "")
    if status == Status.FAILED:
        return f"failed after it was approved: {shown(data['error'] or '(no error recorded)')}"
    if status == Status.CANCELLED:
        return "cancelled"
    who = shown(data["decided_by"]) if data["decided_by"] else f"rule {shown(data['rule'])}"
    reason = shown(data["reason"] or "")
    return f"{status} by {who}" + (f": {reason}" if reason else " (no reason given)")


@click.command("list")
@click.option("--status", type=click.Choice([s.value for s in Status]), help="Only this status.")
@click.option("--limit", type=click.IntRange(min=1), metavar="N", help="At most N requests.")
@json_option
@click.pass_context
def list_(ctx: click.Context, status: str | None, limit: int | None, as_json: bool) -> None:
    """List the requests the service shows you (an agent token: its own), newest first."""
    client = connect(ctx)
    with remote_errors():
        found = client.list(status=status, limit=limit)
    if as_json:
        echo_json(found)
        return
    if not found:
        click.echo("no requests")
        return
    width = max(len(r["id"]) for r in found)
    click.echo(f"{'ID':<{width}}  {'STATUS':<9}  {'RISK':<8}  SUMMARY")
    for r in found:
        title = shown(r["summary"] or r["action"])
        click.echo(f"{r['id']:<{width}}  {r['status']:<9}  {r['risk']:<8}  {title}")


_SHOWN_KEYS = (
    *("id", "status", "action", "summary", "risk", "rule", "requested_by", "created"),
    *("expires", "decided_by", "reason", "decided_at", "executed_at", "result", "error"),
)


@click.command("show")
@click.argument("request_id", metavar="ID")
@json_option
@click.pass_context
def show(ctx: click.Context, request_id: str, as_json: bool) -> None:
    """Show one request with its history (ID: the whole id)."""
    from ..text import NOT_PRINTABLE_ASCII, visible

    client = connect(ctx)
    with remote_errors():
        data = client.get(request_id)
    if as_json:
        echo_json(data)
        return
    for key in _SHOWN_KEYS:
        if data.get(key) not in (None, ""):
            click.echo(f"{key + ':':<14}{shown(data[key])}")
    click.echo(f"{'note:':<14}{data.get('path') or '(no note)'} (on the service)")
    votes = data.get("votes") or {}
    if votes:
        cast = ", ".join(f"{n} {v or '(not yet)'}" for n, v in votes.items())
        click.echo(f"{'votes:':<14}{cast}")
    if data.get("edited_in_note"):
        click.echo(f"{'edited:':<14}since it was asked for: {data['edited_in_note']}")
    click.echo(f"params (sha256 {str(data.get('params_sha', ''))[:16]}):")
    for key, value in (data.get("params") or {}).items():
        click.echo(f"  {key}: {json.dumps(value, ensure_ascii=False)}")
    if data.get("context"):
        click.echo("context:")
        for line in str(data["context"]).splitlines():
            click.echo(f"  {NOT_PRINTABLE_ASCII.sub(visible, line)}".rstrip())
    click.echo("history:")
    for line in data.get("history") or ():
        click.echo(f"  - {NOT_PRINTABLE_ASCII.sub(visible, str(line))}")


def _decision(name: str) -> click.Command:
    approving = name == "approve"

    @click.command(
        name,
        help=f"{name.capitalize()} pending requests as the person your approver token (or, over "
        "unix:, your OS user) is; each ID (the whole id) is decided on its own, and the exit "
        "code is 0 only if all were.",
    )
    @click.argument("request_ids", metavar="ID...", nargs=-1, required=True)
    @click.option("--reason", default="", help="Why; shown in the note and the journal.")
    @by_refused
    @json_option
    @click.pass_context
    def command(
        ctx: click.Context,
        /,
        request_ids: tuple[str, ...],
        reason: str,
        by: str | None,
        as_json: bool,
        expect: str | None = None,
    ) -> None:
        _no_by(by)
        if expect is not None and len(request_ids) > 1:
            raise click.UsageError("--expect goes with one ID only")
        client = connect(ctx)
        entries: list[dict[str, Any]] = []
        error: click.ClickException | None = None
        for request_id in request_ids:
            try:
                with remote_errors():
                    if approving:
                        data = client.approve(request_id, reason, expect)
                    else:
                        data = client.reject(request_id, reason)
            except click.ClickException as e:
                failed = {"id": request_id, "ok": False, "error": e.format_message()}
                entries.append({**failed, "request": None})
                if len(request_ids) > 1:
                    click.echo(f"Error: {e.format_message()}", err=True)
                error = e
                continue
            why = None
            ran = (Status.APPROVED, Status.EXECUTING, Status.EXECUTED, Status.FAILED)
            if data["status"] == Status.PENDING:
                line = f"{data['id']} pending: a vote of several (see show {data['id']})"
            else:
                line = f"{data['id']} {data['status']}"
                if approving and data["status"] not in ran:
                    why = f"not approved: {data['reason']}"
            entries.append({"id": data["id"], "ok": why is None, "error": why, "request": data})
            if not as_json:
                click.echo(line)
            if why:
                click.echo(why, err=True)
        if as_json:
            echo_json(entries)
        if error is not None and len(request_ids) == 1:
            raise error
        if not all(entry["ok"] for entry in entries):
            ctx.exit(1)

    if approving:
        command = click.option(
            "--expect", metavar="HASH", help="Approve only if the params have this hash."
        )(command)
    return command


approve = _decision("approve")
reject = _decision("reject")


@click.command("cancel")
@click.argument("request_id", metavar="ID")
@by_refused
@json_option
@click.pass_context
def cancel(ctx: click.Context, request_id: str, by: str | None, as_json: bool) -> None:
    """Withdraw a request: an agent token its own pending ones; a person a pending one, or
    an approved one whose action has not started."""
    _no_by(by)
    client = connect(ctx)
    with remote_errors():
        data = client.cancel(request_id)
    if as_json:
        echo_json(data)
        return
    click.echo(f"{data['id']} {data['status']}")


# The commands ``--server`` runs against the service, by name.
COMMANDS: dict[str, click.Command] = {
    c.name or "": c for c in (submit, list_, show, approve, reject, cancel)
}


class ServerAwareGroup(click.Group):
    """The root group: with ``--server`` (or ``$HITL_VAULT_SERVER``), the commands that
    have a service's form run it; the others refuse, as they need the vault itself."""

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        server = ctx.params.get("server")
        if not server or ctx.resilient_parsing:
            return super().get_command(ctx, cmd_name)
        if cmd_name in COMMANDS:
            return COMMANDS[cmd_name]
        local = super().get_command(ctx, cmd_name)
        if local is None or cmd_name in _EVERYWHERE:
            return local
        return _refused(cmd_name)


# Commands that never touch a vault, or have their own way to a service (gate, posttool).
_EVERYWHERE = frozenset({"gate", "hook", "init", "posttool"})


def _refused(name: str) -> click.Command:
    def refuse(args: tuple[str, ...]) -> None:
        names = ", ".join(COMMANDS)
        raise click.UsageError(
            f"{name} works on a vault on this machine, not over --server (which runs {names}); "
            f"leave --server (and ${SERVER_ENV}) out"
        )

    return click.Command(
        name,
        callback=refuse,
        context_settings={"ignore_unknown_options": True},
        params=[click.Argument(["args"], nargs=-1)],
        add_help_option=False,
    )
