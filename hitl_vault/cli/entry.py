"""The ``hitl-vault`` command's first step: ``gate`` and ``posttool`` without click, the
rest through it.

An agent's hook runs ``hitl-vault gate`` before every tool call (and ``hitl-vault
posttool`` after it), so those commands are parsed here by hand and run importing only
what they need; any other command, and any whose arguments are not plainly right
(``--help``, an unknown ``--format``), goes to the click CLI in :mod:`hitl_vault.cli.main`,
which also knows ``gate`` and ``posttool``.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from ..agents.formats import HookFormat


class GateArguments(NamedTuple):
    """``hitl-vault gate``'s arguments: the vault's, or the service's and its token file."""

    vault: str
    hook: HookFormat
    wait: float
    server: str | None = None  # --server URL: ask the service, not the vault
    token_file: str | None = None


def gate_arguments(argv: list[str], command: str = "gate") -> GateArguments | None:
    """The arguments of ``[--vault PATH] gate [--format F] [--wait DUR] [--server URL
    [--token-file PATH]]`` (``--server``, or ``$HITL_VAULT_SERVER``, and ``--token-file``
    also before ``gate``), or None for anything else (click then parses it, and explains
    any mistake). ``command="posttool"``: the same for ``posttool``, which has no
    ``--wait``."""
    from ..agents.formats import FORMATS
    from ..errors import UsageError
    from ..times import parse_duration

    vault = os.environ.get("HITL_VAULT") or "vault"
    given: dict[str, str] = {}
    words = iter(argv)
    seen_gate = False
    for word in words:
        if word == command and not seen_gate:
            seen_gate = True
            continue
        name, eq, value = word.partition("=")
        after = ("--format", "--wait") if command == "gate" else ("--format",)
        allowed: tuple[str, ...] = after if seen_gate else ("--vault",)
        allowed += ("--server", "--token-file")  # the root's and the gate's mean the same
        if name not in allowed or name in given:
            return None
        if not eq:
            value = next(words, "")
        if not value or value.startswith("-"):
            return None
        given[name] = value
    if not seen_gate or given.get("--format", "claude") not in FORMATS:
        return None
    try:
        wait = parse_duration(given.get("--wait", "9m"), "--wait").total_seconds()
    except UsageError:  # click says what is wrong with it
        return None
    hook = FORMATS[given.get("--format", "claude")]
    server = given.get("--server") or os.environ.get("HITL_VAULT_SERVER") or None
    token_file = given.get("--token-file")
    if token_file is not None and server is None:
        return None  # click says --token-file needs --server
    return GateArguments(given.get("--vault", vault), hook, wait, server, token_file)


def posttool(fast: GateArguments) -> None:
    """``hitl-vault posttool``: record how a call the gate handed out ended; never exit 2
    (a PostToolUse hook cannot undo the call, and 2 reads as a blocking error)."""
    stdin = sys.stdin.buffer.read()
    try:
        if fast.server is not None:
            from ..agents.posttool_client import run as run_remote

            code, _, err = run_remote(fast.server, fast.token_file, fast.hook, stdin)
        else:
            from ..agents.posttool import run

            code, _, err = run(fast.vault, fast.hook, stdin)
    except Exception as e:  # a bug: say so, and let the agent go on
        code, err = 1, f"hitl-vault posttool failed ({type(e).__name__}: {e})\n"
    sys.stderr.buffer.write(err.encode("utf-8", "replace"))
    sys.exit(code)


_ROOT_VALUED = ("--vault", "--server", "--token-file")  # the root options that take a value


def subcommand(argv: list[str]) -> str | None:
    """The command ``argv`` names (the first word after the root's options), or None."""
    words = iter(argv)
    for word in words:
        if word in _ROOT_VALUED:
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None


def main() -> None:
    after = gate_arguments(sys.argv[1:], "posttool") if "posttool" in sys.argv else None
    if after is not None:
        posttool(after)
        return
    if subcommand(sys.argv[1:]) == "posttool":  # not plainly right: click says why, exit 1
        from .main import main as cli_main

        try:
            cli_main()
        except SystemExit as e:
            sys.exit(1 if e.code == 2 else e.code)  # never 2: that reads as a blocking error
        return
    reply: tuple[int, str, str] | None = None
    try:
        reply = _fast(sys.argv[1:])
    except BaseException as e:  # never exit 1 (Claude Code runs the tool then): fail closed
        reply = 2, "", f"hitl-vault gate failed ({type(e).__name__}: {e}); blocked\n"
    if reply is None:
        fast = gate_arguments(sys.argv[1:])
        if fast is None:
            from .main import main as cli_main

            cli_main()
            return
        reply = _gate(fast, _STDIN.pop() if _STDIN else None)
    code, out, err = reply
    # UTF-8 whatever the locale says: a reason with an accent must still block.
    sys.stdout.buffer.write(out.encode("utf-8", "replace"))
    sys.stderr.buffer.write(err.encode("utf-8", "replace"))
    sys.stdout.flush()
    sys.exit(code)


_STDIN: list[bytes] = []  # what the fast path read, for the full gate


def _fast(argv: list[str]) -> tuple[int, str, str] | None:
    """The reply when :mod:`~hitl_vault.agents.fastgate` can give it (an allowed call),
    importing next to nothing; None: the full gate or the CLI goes on."""
    if "gate" not in argv:
        return None
    from ..agents import fastgate

    plain = fastgate.arguments(argv)
    if plain is None:
        return None
    vault, fmt, wait, server = plain
    stdin = sys.stdin.buffer.read()
    _STDIN.append(stdin)
    if server is not None:
        from ..agents.fastremote import answer_remote

        return answer_remote(server, fmt, wait, stdin)
    said = fastgate.answer(vault, fmt, stdin)
    return None if said is None else (0, said, "")


def _gate(fast: GateArguments, stdin: bytes | None) -> tuple[int, str, str]:
    """The full gate's reply, locally or from the service; it fails closed."""
    try:
        if stdin is None:
            stdin = sys.stdin.buffer.read()
        if fast.server is not None:
            from ..agents import gate_client

            return gate_client.run(fast.server, fast.token_file, fast.hook, fast.wait, stdin)
        from ..agents.gate import run

        return run(fast.vault, fast.hook, fast.wait, stdin)
    except BaseException as e:  # never exit 1 (Claude Code runs the tool then): fail closed
        if isinstance(e, SystemExit) and e.code == 2:
            raise
        return 2, "", f"hitl-vault gate failed ({type(e).__name__}: {e}); blocked\n"
