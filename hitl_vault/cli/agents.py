"""The ``hitl-vault`` commands for agents: ``gate`` (a tool-call hook), ``hook install``
and ``mcp`` (a Model Context Protocol server). Each imports what it needs when it runs."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import click

from ..agents.formats import FORMATS, INSTALLABLE
from ..agents.gate_client import TOKEN_ENV
from .common import cli_errors, duration, open_vault, vault_path

# What installs the MCP SDK: the package's extra from an index, or (the README's way of
# installing hitl-vault) from a clone of its repository, where the first form finds nothing.
INSTALL_MCP = (
    "pip install 'hitl-vault[mcp]', or from a clone of hitl-vault: pip install '.[mcp]' in "
    "its folder"
)


@click.command(
    "mcp",
    help=(
        "Serve the vault to an agent over stdio (Model Context Protocol): it asks and waits."
        f"\n\nNeeds the mcp extra: {INSTALL_MCP}. Approved actions with an executor are run by the "
        "daemon (`hitl-vault run`), not by this server."
    ),
)
@click.pass_context
def mcp_server(ctx: click.Context) -> None:
    """Serve the vault to an agent over stdio (Model Context Protocol)."""
    try:
        from ..agents.mcp_server import serve  # the SDK is loaded only by this command
    except ImportError as e:
        if (e.name or "").startswith("hitl_vault"):
            raise
        raise click.ClickException(
            f"the MCP server needs the mcp package, version 2, which does not import here "
            f"({e}): install the mcp extra: {INSTALL_MCP}"
        ) from None
    vault = open_vault(ctx)
    with cli_errors(), vault:
        serve(vault)


def server_options(command: Callable[..., None]) -> Callable[..., None]:
    """--server URL and --token-file PATH: the gate asks the service, with an agent token."""
    command = click.option(
        "--token-file",
        metavar="PATH",
        help=f"A file (mode 600) holding the agent's token (default: ${TOKEN_ENV}).",
    )(command)
    return click.option(
        "--server",
        metavar="URL",
        help="Ask the hitl-vault service at URL (https://, or http:// to this machine).",
    )(command)


@click.command()
@click.option(
    "--format",
    "fmt",
    type=click.Choice(list(FORMATS)),
    default="claude",
    show_default=True,
    help="The agent's hook format.",
)
@click.option(
    "--wait",
    default="9m",
    show_default=True,
    metavar="DURATION",
    help="How long to wait for a human before denying (keep it below the hook's timeout).",
)
@server_options
@click.pass_context
def gate(
    ctx: click.Context, fmt: str, wait: str, server: str | None, token_file: str | None
) -> None:
    """An agent's PreToolUse hook: read the tool call on stdin, answer allow or deny.

    The rules decide; an ask becomes a request a human approves in its note while the
    gate waits up to --wait, then it denies and the agent's identical retry is matched
    to the same request. With --server, the service decides (no access to the vault
    needed), and anything but its answer denies the call.
    """
    seconds = duration(wait, "--wait")
    server = server or ctx.obj.get("server")  # hitl-vault --server URL gate: the same
    token_file = token_file or ctx.obj.get("token_file")
    if token_file is not None and server is None:
        raise click.UsageError("--token-file goes with --server URL")
    stdin: bytes = sys.stdin.buffer.read()
    if server is not None:
        from ..agents import gate_client

        code, out, err = gate_client.run(server, token_file, FORMATS[fmt], seconds, stdin)
    else:
        from ..agents.gate import run as run_gate

        code, out, err = run_gate(vault_path(ctx), FORMATS[fmt], seconds, stdin)
    click.echo(out, nl=False)
    click.echo(err, nl=False, err=True)
    ctx.exit(code)


@click.group()
def hook() -> None:
    """Agent hooks that send tool calls through `hitl-vault gate`."""


def _agent_options(command: Callable[..., None]) -> Callable[..., None]:
    """--agent, --project DIR and --dry-run: whose settings file, where, and only the diff."""
    command = click.option(
        "--dry-run", is_flag=True, help="Print the diff of the settings file; change nothing."
    )(command)
    command = click.option(
        "--project",
        metavar="DIR",
        type=click.Path(file_okay=False, path_type=Path),
        help="The project's settings (DIR/.claude/settings.json, DIR/.cursor/hooks.json, "
        "DIR/.gemini/settings.json, DIR/.codex/hooks.json); default: the user's, under ~.",
    )(command)
    return click.option(
        "--agent",
        type=click.Choice(list(INSTALLABLE)),
        default="claude",
        show_default=True,
        help="Whose settings file to change.",
    )(command)


def _project(project: Path | None) -> Path | None:
    """--project as given, refused (naming it) when it is not a folder."""
    if project is not None and not project.is_dir():
        raise click.ClickException(
            f"--project {project}: no such folder (give the folder the agent works in; "
            "create it first if the project is new)"
        )
    return project


@hook.command("install")
@_agent_options
@click.option(
    "--wait",
    default="9m",
    show_default=True,
    metavar="DURATION",
    help="How long the gate waits for a human; the hook's timeout is a minute more.",
)
@click.option(
    "--replace",
    is_flag=True,
    help="Take over another vault's gate, and widen a matcher narrower than the guard needs.",
)
@server_options
@click.pass_context
def hook_install(
    ctx: click.Context,
    agent: str,
    project: Path | None,
    dry_run: bool,
    wait: str,
    replace: bool,
    server: str | None,
    token_file: str | None,
) -> None:
    """Add the gate to the agent's settings, keeping everything else (with a backup).

    With --server URL --token-file PATH, the hook asks the service with the agent's token
    and needs no vault on this machine."""
    from ..agents.install import (
        check_starts,
        command_line,
        install,
        posttool_line,
        server_command_line,
        vault_inside,
    )

    seconds = duration(wait, "--wait")
    project = _project(project)
    where = INSTALLABLE[agent]
    warning = ""
    if server is not None:
        with cli_errors():
            command = server_command_line(server, token_file, wait)
    elif token_file is not None:
        raise click.UsageError("--token-file goes with --server URL")
    else:
        vault = vault_path(ctx)
        if not vault.is_dir():
            raise click.ClickException(
                f"{vault}: no vault there (create one with `hitl-vault init {vault}`, "
                "or give --vault)"
            )
        command = command_line(vault, wait)
        warning = vault_inside(vault, project)
    with cli_errors():
        check_starts(command, project or Path.cwd())
        report = install(
            where.path(project),
            command,
            seconds,
            where,
            outcome=posttool_line(command, agent),
            replace=replace,
            dry_run=dry_run,
        )
    click.echo(report)
    if warning:
        click.echo(warning, err=True)


@hook.command("uninstall")
@_agent_options
def hook_uninstall(agent: str, project: Path | None, dry_run: bool) -> None:
    """Take the hitl-vault gate out of the agent's settings, keeping everything else
    (with a backup)."""
    from ..agents.install import uninstall

    project = _project(project)
    where = INSTALLABLE[agent]
    with cli_errors():
        report = uninstall(where.path(project), where, dry_run=dry_run)
    click.echo(report)
