"""The ``hitl-vault`` command: the group, and the commands to set up, run, submit and check
(click is imported only in :mod:`hitl_vault.cli`: :mod:`~hitl_vault.cli.show` lists and
shows requests, :mod:`~hitl_vault.cli.decide` decides them, :mod:`~hitl_vault.cli.agents`
holds the commands for agents).

Each command builds a :class:`Vault`, calls one method, prints the result, and
turns a :class:`VaultError` into one line on stderr with exit code 1 (2 for
bad usage). A traceback means a bug.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import click

from .. import __version__
from ..model import Status
from .access import people, token
from .agents import gate, hook, mcp_server
from .always import rules_always, rules_revoke
from .common import (
    DEFAULT_VAULT,
    cli_errors,
    echo_json,
    json_option,
    open_vault,
    param_option,
    vault_path,
)
from .db import db, journal_option
from .decide import approve, cancel, done, posttool, reject, retry
from .remote import SERVER_ENV, ServerAwareGroup
from .serve import serve
from .show import list_, show

if TYPE_CHECKING:
    from ..model import Request
    from ..vault import Vault

# What a command needs is imported inside it: `--version`, `--help` and the agent gate
# start without the journal, the notes, the file watcher and the notifier.


@click.group(cls=ServerAwareGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--vault",
    envvar="HITL_VAULT",
    default=DEFAULT_VAULT,
    show_default=True,
    metavar="PATH",
    help="The vault folder (or set $HITL_VAULT).",
)
@click.option(
    "--server",
    envvar=SERVER_ENV,
    metavar="URL|unix:PATH",
    help="Run submit, show, list, approve, reject and cancel against the service at URL "
    "(a token in $HITL_VAULT_TOKEN or --token-file), or at its Unix socket (no token: "
    f"your OS user says who you are). Or set ${SERVER_ENV}.",
)
@click.option(
    "--token-file",
    metavar="PATH",
    help="With --server URL: a file (mode 600) holding your token (default: $HITL_VAULT_TOKEN).",
)
@click.version_option(__version__, prog_name="hitl-vault")
@click.pass_context
def cli(ctx: click.Context, vault: str, server: str | None, token_file: str | None) -> None:
    """A human-in-the-loop approval gate that lives in a folder of Markdown notes."""
    ctx.ensure_object(dict)
    ctx.obj["vault"] = vault
    ctx.obj["server"] = server
    ctx.obj["token_file"] = token_file


@cli.command()
@click.argument("path", required=False, type=click.Path(path_type=Path))
@click.pass_context
def init(ctx: click.Context, path: Path | None) -> None:
    """Create a vault from the template (PATH defaults to --vault); never overwrites a file."""
    from .template import init_vault

    target = path or vault_path(ctx)
    with cli_errors():
        report = init_vault(target)
    click.echo(
        f"vault ready at {target} ({len(report.created)} files created, {len(report.kept)} kept)"
    )


@cli.command()
@click.option("--once", is_flag=True, help="Catch up on everything, then exit.")
@click.option("-v", "--verbose", is_flag=True, help="Also log each note looked at, written or run.")
@journal_option
@click.pass_context
def run(ctx: click.Context, once: bool, verbose: bool) -> None:
    """Run the daemon: watch the vault, apply decisions, execute, time out.

    With no vault at the path yet, one is created from the template first.
    """
    from ..vault import Vault
    from .template import init_vault

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
@click.option("--reasoning", metavar="TEXT", help="Why this action (## Proposal).")
@click.option("--confidence", metavar="0-1", help="How sure the requester is, from 0 to 1.")
@click.option("--alternative", "alternatives", multiple=True, metavar="TEXT",
              help="Another way considered (repeatable).")  # fmt: skip
@click.option("--risk-factor", "risk_factors", multiple=True, metavar="TEXT",
              help="Something that could go wrong (repeatable).")  # fmt: skip
@click.option(
    "--wait-result",
    is_flag=True,
    help="For an action the daemon runs: block until it has run and print its result; "
    "exit 0 if executed, 1 otherwise.",
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
    reasoning: str | None,
    confidence: str | None,
    alternatives: tuple[str, ...],
    risk_factors: tuple[str, ...],
    wait_result: bool,
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
        if wait_result:
            _check_executor(vault, action)
        request = vault.submit(
            action, params, summary=summary, timeout=timeout, requested_by=by, context=context,
            reasoning=reasoning, confidence=_number(confidence), alternatives=alternatives,
            risk_factors=risk_factors,
        )  # fmt: skip
        if not as_json:
            click.echo(f"{request.id} {request.status}")
            if request.status is Status.REJECTED and not wait:  # blocked by a rule: say why
                click.echo(outcome(request), err=True)
        if wait and request.status is Status.PENDING:
            request = vault.wait_sync(request.id)
            if not as_json:
                click.echo(f"{request.id} {request.status}")
        if wait_result and request.status not in _ENDED:
            request = vault.wait_sync(request.id, outcome=True)
            if not as_json:
                click.echo(f"{request.id} {request.status}")
        if as_json:
            echo_json(request_json(request, vault.votes(request.id)))
    if wait_result:
        _print_result(ctx, request, as_json)
    if wait and request.status not in (Status.APPROVED, Status.EXECUTING, Status.EXECUTED):
        if not as_json:  # --json has it all in the object
            click.echo(outcome(request), err=True)
        ctx.exit(1)


def _number(text: str | None) -> float | None:
    """``--confidence`` as a number; other text gets the error every entry gives."""
    from ..policy.pitch import check_confidence

    try:
        return float(text) if text is not None else None
    except ValueError:
        return check_confidence(text)


_ENDED = frozenset(s for s in Status if s.is_final)


def _check_executor(vault: Vault, action: str) -> None:
    """--wait-result waits for the daemon: refused for an action it never runs."""
    from ..errors import UsageError

    if action not in vault.policy.actions:
        raise UsageError(
            "--wait-result",
            f"the action {action!r} has no executor (actions: in hitl-vault.yaml), so the "
            "daemon never runs it",
            "use --wait, carry it out yourself, then `hitl-vault done ID --result TEXT`",
        )


def _print_result(ctx: click.Context, request: Request, as_json: bool) -> None:
    """--wait-result: the result on stdout and exit 0 if executed, else why not and exit 1."""
    from ..shapes import outcome

    if request.status is Status.EXECUTED:
        if not as_json and request.result:
            click.echo(request.result)
        return
    if not as_json:
        click.echo(request.error if request.status is Status.FAILED else outcome(request), err=True)
    ctx.exit(1)


@cli.group()
def notify() -> None:
    """Notification targets (notify: in hitl-vault.yaml)."""


@notify.command("test")
@json_option
@click.pass_context
def notify_test(ctx: click.Context, as_json: bool) -> None:
    """Send a test message to every target; say, per target, delivered or why not.

    Exits 0 when every target got it, 1 otherwise. --json prints {ok, targets: [{target,
    delivered, error}]}.
    """
    from ..shapes import tested_json

    vault = open_vault(ctx)
    with cli_errors(), vault:
        results = vault.send_test_notifications()
    data = tested_json(results)
    if as_json:
        echo_json(data)
    if not results:
        click.echo(
            "no notify: targets in hitl-vault.yaml (see the README's Notifications)", err=as_json
        )
    elif not as_json:
        for shown, error in results:
            click.echo(f"{shown}: {'delivered' if error is None else 'NOT delivered: ' + error}")
    if not data["ok"]:
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
    """Dry run: what the rules decide for ACTION with these params (decision), and what
    submit would do with it under mode: and min_risk (would); creates nothing."""
    from ..shapes import ruling_json
    from .text import parse_params

    with cli_errors():
        params = parse_params(pairs, None)
    vault = open_vault(ctx)
    with cli_errors(), vault:
        ruling = vault.evaluate(action, params)
        timeout = ruling.timeout or vault.policy.defaults.timeout
        would = vault.policy.applied(ruling)
    data = ruling_json(ruling, timeout, would)
    if as_json:
        echo_json(data)
        return
    click.echo(f"decision: {data['decision']}")
    shown = f" ({data['would_reason']})" if data["would_reason"] else ""
    click.echo(f"would:    {data['would']}{shown}")
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
@json_option
@click.pass_context
def verify(ctx: click.Context, as_json: bool) -> None:
    """Check the journal's hash chain and that every note agrees with the journal.

    --json prints {ok, requests, problems, checked_at}; the exit code is 1 when there are
    problems, as without it.
    """
    from ..shapes import verified_json
    from ..times import utcnow

    vault = open_vault(ctx)
    with cli_errors(), vault:
        problems = vault.verify()
        count = len(vault.list())
    data = verified_json(problems, count, utcnow())
    if as_json:
        echo_json(data)
    elif problems:
        for problem in problems:
            click.echo(problem, err=True)
    if problems:
        raise click.ClickException(f"{len(problems)} problem(s) found")
    if not as_json:
        click.echo(
            f"ok: {count} requests; the journal chain and every note agree ({data['checked_at']})"
        )


for command in (list_, show, approve, reject, cancel, retry, done, gate, posttool, hook):
    cli.add_command(command)
for command in (mcp_server, serve):
    cli.add_command(command)
cli.add_command(people)  # people and tokens for the service (cli/access.py)
rules.add_command(rules_always)  # "always" allows (cli/always.py)
rules.add_command(rules_revoke)
cli.add_command(token)
cli.add_command(db)  # the journal on a PostgreSQL server (cli/db.py)


def main() -> None:
    cli(prog_name="hitl-vault", obj={}, auto_envvar_prefix=None)


if __name__ == "__main__":  # pragma: no cover
    main()
