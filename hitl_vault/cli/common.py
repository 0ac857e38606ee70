"""What every ``hitl-vault`` command shares: opening the vault, turning a library error into
an exit code, JSON output, and the options several commands take."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..errors import UsageError, VaultError

if TYPE_CHECKING:
    from ..vault import Vault

DEFAULT_VAULT = "vault"


class BadUsage(click.UsageError):
    """Exit code 2 with a one-line message (an argument the library refused)."""


@contextmanager
def cli_errors() -> Iterator[None]:
    """A library error as one line on stderr: exit 2 for bad usage, else 1."""
    try:
        yield
    except UsageError as e:
        raise BadUsage(str(e)) from None
    except VaultError as e:
        raise click.ClickException(str(e)) from None


def vault_path(ctx: click.Context) -> Path:
    return Path(ctx.obj["vault"]).expanduser()


def open_vault(ctx: click.Context) -> Vault:
    from ..vault import Vault

    with cli_errors():
        return Vault(vault_path(ctx))


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


param_option = click.option(
    "-p",
    "--param",
    "pairs",
    multiple=True,
    metavar="KEY=VALUE",
    help="A parameter: numbers, true/false and null are read as such, the rest is text. "
    "Repeatable.",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")


def duration(text: str, option: str) -> float:
    from ..times import parse_duration

    with cli_errors():
        return parse_duration(text, option).total_seconds()
