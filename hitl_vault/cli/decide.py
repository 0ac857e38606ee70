"""``approve``, ``reject``, ``cancel`` and ``retry``: deciding requests from the command line,
exactly as editing their notes would."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from ..agents.formats import FORMATS
from ..model import Status
from .common import cli_errors, echo_json, json_option, open_vault, param_option
from .ids import complete_ids, resolve_id

if TYPE_CHECKING:
    from ..model import Request
    from ..vault import Vault


def _decision_command(
    name: str, method: Callable[[Vault], Callable[..., Request]]
) -> click.Command:
    @click.command(
        name,
        help=f"{name.capitalize()} pending requests (same as editing each note); each ID is "
        "decided on its own, and the exit code is 0 only if all were. An ID may be the start "
        "of an id that no other id starts with.",
    )
    @click.argument(
        "request_ids",
        metavar="ID...",
        nargs=-1,
        required=True,
        shell_complete=complete_ids(Status.PENDING),
    )
    @click.option("--by", metavar="NAME", help="Who decides (default: your user name).")
    @click.option("--reason", default="", help="Why; shown in the note and the journal.")
    @json_option
    @click.pass_context
    def command(
        ctx: click.Context,
        /,
        request_ids: tuple[str, ...],
        by: str | None,
        reason: str,
        as_json: bool,
        **kw: Any,
    ) -> None:
        from ..shapes import decided_json
        from .text import parse_params

        pairs, params_json = kw.pop("pairs", ()), kw.pop("params_json", None)
        edits = pairs or params_json is not None
        if len(request_ids) > 1 and (edits or kw.get("expect")):
            raise click.UsageError("-p, --params-json and --expect go with one ID only")
        with cli_errors():
            typed = parse_params(pairs, params_json) if edits else None
        vault = open_vault(ctx)
        entries: list[dict[str, Any]] = []  # --json: one per ID, in the order given
        error: click.ClickException | None = None
        with vault:
            for given in request_ids:
                try:
                    with cli_errors():
                        request_id = resolve_id(vault, given)
                        if typed is not None:
                            kw["params"] = _edited_params(
                                vault, request_id, typed, params_json is not None, kw["expect"]
                            )
                        request = method(vault)(request_id, by=by, reason=reason, **kw)
                        votes = vault.votes(request.id)
                except click.ClickException as e:
                    entries.append(decided_json(given, None, None, e.format_message()))
                    if len(request_ids) > 1:
                        click.echo(f"Error: {e.format_message()}", err=True)
                    error = e
                    continue
                if request.status is Status.PENDING:  # one vote of several: say what is missing
                    line, why = f"{request.id} pending: {votes.progress()}", None
                else:
                    line, why = f"{request.id} {request.status}", _not_approved(name, request)
                entries.append(decided_json(request.id, request, votes, why))
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

    return command


def _not_approved(name: str, request: Request) -> str | None:
    """Why an ``approve`` did not approve (a block rule refused edited params), else None."""
    ran = (Status.APPROVED, Status.EXECUTING, Status.EXECUTED, Status.FAILED)
    if name == "approve" and request.status not in ran:  # (executing...: on its way already)
        return f"not approved: {request.reason}"
    return None


def _edited_params(
    vault: Vault, request_id: str, typed: dict[str, Any], whole: bool, expect: str | None
) -> dict[str, Any]:
    """``approve ID -p k=v``: the params to run. ``--params-json`` gives all of them (``-p``
    on top); ``-p`` alone changes those approving would run now, as ``show`` prints them
    (edited in the note but not recorded: only with ``--expect``, as without ``-p``)."""
    from ..params import check_expected

    if whole:
        return typed
    base, sha, edited = vault.params_to_run(request_id)
    if edited and expect is None:
        check_expected(request_id, sha, None, edited)
    return {**base, **typed}


def _approve(vault: Vault) -> Callable[..., Request]:
    """``approve``, or with ``--always`` approve and allow the same call again for a while."""

    def approve(
        request_id: str,
        *,
        always: bool = False,
        lasting: str | None = None,
        session: bool = False,
        prefix: bool = False,
        **kw: Any,
    ) -> Request:
        from ..errors import UsageError

        if not always:
            if lasting is not None or session or prefix:
                raise UsageError("--for, --session, --prefix", "go with --always", "add --always")
            return vault.approve(request_id, **kw)
        if kw.get("params") is not None:
            raise UsageError(
                "--always", "cannot go with -p or --params-json", "approve the call as asked"
            )
        allow = vault.always(
            request_id, kw["by"], kw["reason"], lasting=lasting or "24h", session=session,
            prefix=prefix, expect=kw.get("expect"),
        )  # fmt: skip
        if allow is None:
            click.echo("no always allow yet: the vote that approves it adds one", err=True)
            return vault.get(request_id)
        click.echo(
            f"{allow.name}: {allow.describe()} allowed without asking until "
            f"{allow.until:%Y-%m-%d %H:%M} UTC (`hitl-vault rules revoke {allow.name}` ends it)",
            err=True,
        )
        return vault.get(request_id)

    return approve


approve = _decision_command("approve", _approve)
click.option(
    "--prefix",
    is_flag=True,
    help="With --always, for a shell command with no metacharacters: allow every command "
    "that starts with it.",
)(approve)
click.option(
    "--session",
    is_flag=True,
    help="With --always: only for the agent session that asked.",
)(approve)
click.option(
    "--for",
    "lasting",
    metavar="DUR",
    help="With --always: how long the allow lasts (default 24h).",
)(approve)
click.option(
    "--always",
    is_flag=True,
    help="Also allow the very same call again without asking (see `hitl-vault rules always`).",
)(approve)
click.option(
    "--expect",
    metavar="HASH",
    help="Approve only if the params to run (before -p) have this hash (as `show` prints it).",
)(approve)
click.option(
    "--params-json", metavar="JSON", help="Run these params instead, all of them (-p wins)."
)(approve)
param_option(approve)
reject = _decision_command("reject", lambda v: v.reject)


def _one_request_command(
    name: str,
    method: Callable[[Vault], Callable[..., Request]],
    first: tuple[Status, ...],
    by: str,
    doc: str,
) -> click.Command:
    """A command that does one thing to one request and prints it (``first``: the statuses
    completion offers first)."""

    @click.command(name, help=doc)
    @click.argument("request_id", metavar="ID", shell_complete=complete_ids(*first))
    @click.option("--by", metavar="NAME", help=by)
    @json_option
    @click.pass_context
    def command(ctx: click.Context, request_id: str, by: str | None, as_json: bool) -> None:
        from ..shapes import request_json

        vault = open_vault(ctx)
        with cli_errors(), vault:
            request = method(vault)(resolve_id(vault, request_id), by=by)
            if as_json:
                echo_json(request_json(request, vault.votes(request.id)))
                return
        click.echo(f"{request.id} {request.status}")

    return command


cancel = _one_request_command(
    "cancel",
    lambda v: v.cancel,
    (Status.PENDING, Status.APPROVED),
    "Who withdraws it (default: see the README).",
    "Withdraw a pending request, or an approved one whose action has not started.",
)
retry = _one_request_command(
    "retry",
    lambda v: v.retry,
    (Status.FAILED, Status.TIMED_OUT),
    "Who retries it (default: your user name).",
    "A new request from a failed or timed-out one, decided by the rules again.",
)


@click.command(
    "done",
    help="Record how an approved request that has no executor ended: executed with --result, "
    "or failed with --error (once). For an action you carried out yourself, or an agent's "
    "tool call the gate handed out; the daemon records the outcome of what it runs.",
)
@click.argument(
    "request_id", metavar="ID", shell_complete=complete_ids(Status.APPROVED, Status.EXECUTING)
)
@click.option("--result", metavar="TEXT", help="What it did: the request becomes executed.")
@click.option("--error", metavar="TEXT", help="Why it failed: the request becomes failed.")
@click.option("--by", metavar="NAME", help="Who reports it (default: its requester).")
@json_option
@click.pass_context
def done(
    ctx: click.Context,
    request_id: str,
    result: str | None,
    error: str | None,
    by: str | None,
    as_json: bool,
) -> None:
    from ..shapes import request_json

    if (result is None) == (error is None):
        raise click.UsageError("give --result TEXT or --error TEXT (one of them)")
    vault = open_vault(ctx)
    with cli_errors(), vault:
        request = vault.done(resolve_id(vault, request_id), result=result, error=error, by=by)
        if as_json:
            echo_json(request_json(request, vault.votes(request.id)))
            return
    click.echo(f"{request.id} {request.status}")


@click.command()
@click.option(
    "--format",
    "fmt",
    type=click.Choice(list(FORMATS)),
    default="claude",
    show_default=True,
    help="The agent's hook format.",
)
@click.option("--server", metavar="URL", help="Report to the hitl-vault service at URL.")
@click.option("--token-file", metavar="PATH", help="A file (mode 600) holding the agent's token.")
@click.pass_context
def posttool(ctx: click.Context, fmt: str, server: str | None, token_file: str | None) -> None:
    """An agent's PostToolUse hook: record how a call the gate handed out ended.

    Reads the hook input on stdin; a call the gate handed out becomes executed (or failed,
    with the tool's error). Any other call records nothing. Exits 0, or 1 with the problem.
    """
    import sys

    from .common import vault_path

    server = server or ctx.obj.get("server")
    token_file = token_file or ctx.obj.get("token_file")
    if token_file is not None and server is None:
        raise click.UsageError("--token-file goes with --server URL")
    stdin = sys.stdin.buffer.read()
    hook = FORMATS[fmt]
    if server is not None:
        from ..agents.posttool_client import run as run_remote

        code, _, err = run_remote(server, token_file, hook, stdin)
    else:
        from ..agents.posttool import run

        code, _, err = run(vault_path(ctx), hook, stdin)
    click.echo(err, nl=False, err=True)
    ctx.exit(code)
