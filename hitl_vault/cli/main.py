"""The ``hitl-vault`` command (click is imported here, in :mod:`hitl_vault.cli.common` and in
:mod:`hitl_vault.cli.agents`, the commands for agents).

Each command builds a :class:`Vault`, calls one method, prints the result, and
turns a :class:`VaultError` into one line on stderr with exit code 1 (2 for
bad usage). A traceback means a bug.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import click

from .. import __version__
from ..model import Status
from .agents import gate, hook, mcp_server
from .common import (
    DEFAULT_VAULT,
    cli_errors,
    echo_json,
    json_option,
    open_vault,
    param_option,
    vault_path,
)

if TYPE_CHECKING:
    from ..model import Request
    from ..vault import Vault

# What a command needs is imported inside it: `--version`, `--help` and the agent gate
# start without the journal, the notes, the file watcher and the notifier.


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--vault",
    envvar="HITL_VAULT",
    default=DEFAULT_VAULT,
    show_default=True,
    metavar="PATH",
    help="The vault folder (or set $HITL_VAULT).",
)
@click.version_option(__version__, prog_name="hitl-vault")
@click.pass_context
def cli(ctx: click.Context, vault: str) -> None:
    """A human-in-the-loop approval gate that lives in a folder of Markdown notes."""
    ctx.ensure_object(dict)
    ctx.obj["vault"] = vault


@cli.command()
@click.argument("path", required=False, type=click.Path(path_type=Path))
@click.pass_context
def init(ctx: click.Context, path: Path | None) -> None:
    """Create a vault from the template (PATH defaults to --vault); never overwrites a file."""
    from ..template import init_vault

    target = path or vault_path(ctx)
    with cli_errors():
        report = init_vault(target)
    click.echo(
        f"vault ready at {target} ({len(report.created)} files created, {len(report.kept)} kept)"
    )


@cli.command()
@click.option("--once", is_flag=True, help="Catch up on everything, then exit.")
@click.option("-v", "--verbose", is_flag=True, help="Also log each note looked at, written or run.")
@click.pass_context
def run(ctx: click.Context, once: bool, verbose: bool) -> None:
    """Run the daemon: watch the vault, apply decisions, execute, time out.

    With no vault at the path yet, one is created from the template first.
    """
    from ..template import init_vault
    from ..vault import Vault

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    # watchdog's own debug output is a line per inotify event: noise even with -v.
    logging.getLogger("watchdog").setLevel(logging.WARNING)
    path = vault_path(ctx)
    with cli_errors():
        if not path.exists():
            init_vault(path)
            click.echo(f"created a new vault at {path}", err=True)
        with Vault(path) as vault:
            vault.run(once=once)


@cli.command()
@click.argument("action")
@param_option
@click.option("--params-json", metavar="JSON", help="All params as one JSON object (-p wins).")
@click.option("--summary", default="", help="One line a human reads first.")
@click.option(
    "--timeout", metavar="DURATION", help="How long it may stay pending: 90s, 15m, 1h, 2d."
)
@click.option("--by", metavar="NAME", help="Who is asking (default: your user name).")
@click.option(
    "--context", metavar="TEXT", help="Why you ask, for whoever decides (shown in the note)."
)
@click.option(
    "--context-file",
    metavar="PATH",
    type=click.File("rb", lazy=False),
    help="The context from a UTF-8 file ('-' reads stdin).",
)
@click.option(
    "--wait",
    is_flag=True,
    help="Block until decided; exit 0 if approved, 1 if not (then print who decided and why).",
)
@json_option
@click.pass_context
def submit(
    ctx: click.Context,
    action: str,
    pairs: tuple[str, ...],
    params_json: str | None,
    summary: str,
    timeout: str | None,
    by: str | None,
    context: str | None,
    context_file: BinaryIO | None,
    wait: bool,
    as_json: bool,
) -> None:
    """Propose an action; prints its id and status."""
    from ..shapes import outcome, request_json
    from .text import parse_params, read_context

    with cli_errors():
        params = parse_params(pairs, params_json)
    if context_file is not None:
        if context is not None:
            raise click.UsageError("give --context or --context-file, not both")
        with cli_errors():
            context = read_context(context_file)
    vault = open_vault(ctx)
    with cli_errors(), vault:
        request = vault.submit(
            action, params, summary=summary, timeout=timeout, requested_by=by, context=context
        )
        if not as_json:
            click.echo(f"{request.id} {request.status}")
        if wait and request.status is Status.PENDING:
            request = vault.wait_sync(request.id)
            if not as_json:
                click.echo(f"{request.id} {request.status}")
        if as_json:
            echo_json(request_json(request, vault.votes(request.id)))
    if wait and request.status not in (Status.APPROVED, Status.EXECUTING, Status.EXECUTED):
        if not as_json:  # --json has it all in the object
            click.echo(outcome(request), err=True)
        ctx.exit(1)


@cli.command("list")
@click.option(
    "--status",
    type=click.Choice([s.value for s in Status]),
    help="Only requests with this status.",
)
@json_option
@click.pass_context
def list_(ctx: click.Context, status: str | None, as_json: bool) -> None:
    """List requests, newest first."""
    from ..shapes import listed_json

    vault = open_vault(ctx)
    with cli_errors(), vault:
        requests = vault.list(status=status)
        if as_json:
            full = [vault.get(r.id) for r in requests]
            echo_json([listed_json(r, vault.votes(r.id)) for r in full])
            return
    if not requests:
        click.echo("no requests")
    for r in requests:
        click.echo(f"{r.id}  {r.status:<9}  {r.risk:<8}  {r.summary or r.action}")


@cli.command()
@click.argument("request_id", metavar="ID")
@json_option
@click.pass_context
def show(ctx: click.Context, request_id: str, as_json: bool) -> None:
    """Show one request with its history."""
    from ..notes.render import history_line
    from ..policy.trust import user_name
    from ..shapes import request_json
    from ..text import NOT_PRINTABLE_ASCII, visible

    vault = open_vault(ctx)
    with cli_errors(), vault:
        request = vault.get(request_id)
        where = request.path.relative_to(vault.root).as_posix() if request.path else "(no note)"
        uid = vault.decided_uid(request_id)
        params, sha, edited = vault.params_to_run(request_id)
        votes = vault.votes(request_id)
    data = {**request_json(request, votes), "decided_uid": uid, "params": params, "params_sha": sha}
    if edited:
        data["edited_in_note"] = edited
    if as_json:
        echo_json(data)
        return
    if data["decided_by"] and uid is not None:  # the name is claimed; the uid is the process's
        data["decided_by"] = f"{data['decided_by']} (recorded by {user_name(uid)})"
    for key in ("id", "status", "action", "summary", "risk", "rule", "requested_by",
                "created", "expires", "decided_by", "reason", "decided_at",
                "executed_at", "result", "error"):  # fmt: skip
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


def _decision_command(
    name: str, method: Callable[[Vault], Callable[..., Request]]
) -> click.Command:
    @cli.command(
        name,
        help=f"{name.capitalize()} pending requests (same as editing each note); each ID is "
        "decided on its own, and the exit code is 0 only if all were.",
    )
    @click.argument("request_ids", metavar="ID...", nargs=-1, required=True)
    @click.option("--by", metavar="NAME", help="Who decides (default: your user name).")
    @click.option("--reason", default="", help="Why; shown in the note and the journal.")
    @click.pass_context
    def command(
        ctx: click.Context, /, request_ids: tuple[str, ...], by: str | None, reason: str,
        **kw: Any,
    ) -> None:  # fmt: skip
        from .text import parse_params

        pairs, params_json = kw.pop("pairs", ()), kw.pop("params_json", None)
        edits = pairs or params_json is not None
        if len(request_ids) > 1 and (edits or kw.get("expect")):
            raise click.UsageError("-p, --params-json and --expect go with one ID only")
        with cli_errors():
            typed = parse_params(pairs, params_json) if edits else None
        vault = open_vault(ctx)
        failed = 0
        with vault:
            for request_id in request_ids:
                try:
                    with cli_errors():
                        if typed is not None:
                            kw["params"] = _edited_params(
                                vault, request_id, typed, params_json is not None, kw["expect"]
                            )
                        request = method(vault)(request_id, by=by, reason=reason, **kw)
                        if request.status is Status.PENDING:  # one vote of several
                            progress = vault.votes(request.id).progress()
                except click.ClickException as e:
                    if len(request_ids) == 1:
                        raise
                    click.echo(f"Error: {e.format_message()}", err=True)
                    failed += 1
                    continue
                if request.status is Status.PENDING:  # say what is still missing
                    click.echo(f"{request.id} pending: {progress}")
                    continue
                click.echo(f"{request.id} {request.status}")
                ran = (Status.APPROVED, Status.EXECUTING, Status.EXECUTED, Status.FAILED)
                if name == "approve" and request.status not in ran:  # (on its way already)
                    click.echo(f"not approved: {request.reason}", err=True)
                    failed += 1
        if failed:
            ctx.exit(1)

    return command


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


_approve = _decision_command("approve", lambda v: v.approve)
click.option(
    "--expect",
    metavar="HASH",
    help="Approve only if the params to run (before -p) have this hash (as `show` prints it).",
)(_approve)
click.option(
    "--params-json", metavar="JSON", help="Run these params instead, all of them (-p wins)."
)(_approve)
param_option(_approve)
_decision_command("reject", lambda v: v.reject)


@cli.command()
@click.argument("request_id", metavar="ID")
@click.option("--by", metavar="NAME", help="Who withdraws it (default: see the README).")
@click.pass_context
def cancel(ctx: click.Context, request_id: str, by: str | None) -> None:
    """Withdraw a pending request, or an approved one whose action has not started."""
    vault = open_vault(ctx)
    with cli_errors(), vault:
        request = vault.cancel(request_id, by=by)
    click.echo(f"{request.id} {request.status}")


@cli.command()
@click.argument("request_id", metavar="ID")
@click.option("--by", metavar="NAME", help="Who retries it (default: your user name).")
@json_option
@click.pass_context
def retry(ctx: click.Context, request_id: str, by: str | None, as_json: bool) -> None:
    """A new request from a failed or timed-out one, decided by the rules again."""
    from ..shapes import request_json

    vault = open_vault(ctx)
    with cli_errors(), vault:
        request = vault.retry(request_id, by=by)
        if as_json:
            echo_json(request_json(request, vault.votes(request.id)))
            return
    click.echo(f"{request.id} {request.status}")


@cli.group()
def notify() -> None:
    """Notification targets (notify: in hitl-vault.yaml)."""


@notify.command("test")
@click.pass_context
def notify_test(ctx: click.Context) -> None:
    """Send a test message to every target; say, per target, delivered or why not.

    Exits 0 when every target got it, 1 otherwise.
    """
    vault = open_vault(ctx)
    with cli_errors(), vault:
        results = vault.send_test_notifications()
    if not results:
        click.echo("no notify: targets in hitl-vault.yaml (see the README's Notifications)")
        ctx.exit(1)
    for shown, error in results:
        click.echo(f"{shown}: {'delivered' if error is None else 'NOT delivered: ' + error}")
    if any(error is not None for _, error in results):
        ctx.exit(1)


@cli.group()
def rules() -> None:
    """Inspect the rules in hitl-vault.yaml."""


@rules.command("check")
@click.argument("action")
@param_option
@json_option
@click.pass_context
def rules_check(ctx: click.Context, action: str, pairs: tuple[str, ...], as_json: bool) -> None:
    """Dry run: what the rules decide for ACTION with these params (creates nothing)."""
    from ..shapes import ruling_json
    from .text import parse_params

    with cli_errors():
        params = parse_params(pairs, None)
    vault = open_vault(ctx)
    with cli_errors(), vault:
        ruling = vault.evaluate(action, params)
        timeout = ruling.timeout or vault.policy.defaults.timeout
    data = ruling_json(ruling, timeout)
    if as_json:
        echo_json(data)
        return
    click.echo(f"decision: {data['decision']}")
    click.echo(f"risk:     {data['risk']}")
    if ruling.decision == "ask":
        click.echo(f"timeout:  {data['timeout']}")
    if ruling.approvers is not None:
        click.echo(f"approvers: {', '.join(sorted(ruling.approvers)) or '(nobody)'}")
    if ruling.reason:
        click.echo(f"reason:   {ruling.reason}")
    if not ruling.matches:
        click.echo(f"no rule matched; the default ({ruling.decision}) applies")
    for m in data["matches"]:
        click.echo(f"  matched {m['rule']}: {m['decision']} - {m['explanation']}")


@cli.command()
@click.pass_context
def verify(ctx: click.Context) -> None:
    """Check the journal's hash chain and that every note agrees with the journal."""
    from ..times import format_ts, utcnow

    vault = open_vault(ctx)
    with cli_errors(), vault:
        problems = vault.verify()
        count = len(vault.list())
    if problems:
        for problem in problems:
            click.echo(problem, err=True)
        raise click.ClickException(f"{len(problems)} problem(s) found")
    click.echo(
        f"ok: {count} requests; the journal chain and every note agree ({format_ts(utcnow())})"
    )


cli.add_command(gate)
cli.add_command(hook)
cli.add_command(mcp_server)


def main() -> None:
    cli(prog_name="hitl-vault", obj={}, auto_envvar_prefix=None)


if __name__ == "__main__":  # pragma: no cover
    main()
