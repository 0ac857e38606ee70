"""Request ids on the command line: a unique prefix stands for the whole id wherever an id
is taken, and the shell completes ids (click's ``shell_complete``) from the vault that
``--vault``, ``$HITL_VAULT`` or ``./vault`` names."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from click.shell_completion import CompletionItem

from ..errors import RequestNotFoundError
from ..model import Status, is_request_id
from .common import DEFAULT_VAULT, BadUsage

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..vault import Vault

# How many of the ids an ambiguous prefix matches are named in the error.
_NAMED = 10
# How long a completion waits for a journal another process holds (seconds).
_WAIT = 1.0


def resolve_id(vault: Vault, given: str) -> str:
    """The request id ``given`` is, or the one id it is the start of.

    An id that exists is taken as it is (one lookup); only otherwise are the vault's ids
    read. A whole, well-formed id is never a prefix: one the vault does not have is not
    found, even when a longer id starts with it (an action may hold a dash, so
    ``…-pay-abcdef`` starts ``…-pay-abcdef-123456``). No match is
    :class:`RequestNotFoundError` (exit 1, as for an unknown id), more than one a usage
    error (exit 2) naming them.
    """
    try:
        return vault.get(given).id
    except RequestNotFoundError:
        if not given or is_request_id(given):
            raise
    found = [r.id for r in vault.list() if r.id.startswith(given)]
    if not found:
        raise RequestNotFoundError(given)
    if len(found) == 1:
        return found[0]
    named = ", ".join(found[:_NAMED])
    if len(found) > _NAMED:
        named += f", and {len(found) - _NAMED} more"
    raise BadUsage(f'ID "{given}" matches {len(found)} requests: {named} (give more of the id)')


def _completion_vault(ctx: click.Context) -> Path:
    """The vault a command being completed would open (its --vault is parsed, not run)."""
    given = ctx.find_root().params.get("vault")
    return Path(given or os.environ.get("HITL_VAULT") or DEFAULT_VAULT).expanduser()


def complete_ids(*first: Status) -> Callable[[click.Context, Any, str], list[CompletionItem]]:
    """A ``shell_complete`` for an ID argument: the ids starting with what was typed, newest
    first, those in a status of ``first`` (for ``approve``: pending) before the rest, and
    without the ids already on the line. Each comes with its status and summary, which
    zsh and fish show. The journal is only read, never created nor written, and not
    waited for more than a second: no vault or journal there, or one another process
    holds or that cannot be read, and there is nothing to offer."""

    def complete(ctx: click.Context, param: Any, incomplete: str) -> list[CompletionItem]:
        from ..journal.sqlite_peek import read_ids
        from ..model import JOURNAL_FILE, STATE_DIR
        from ..text import shown

        requests = read_ids(_completion_vault(ctx) / STATE_DIR / JOURNAL_FILE, _WAIT)
        typed = (ctx.params.get(param.name) or ()) if param.nargs == -1 else ()
        offered = [r for r in requests if r.id.startswith(incomplete) and r.id not in typed]
        offered.sort(key=lambda r: r.status not in first)  # stable: newest first within each
        return [
            CompletionItem(r.id, help=f"{r.status}: {shown(r.summary or r.action)}")
            for r in offered
        ]

    return complete
