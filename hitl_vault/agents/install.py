"""``hitl-vault hook install``: put the gate into an agent's settings file.

The hook is merged into what the file holds (every other key and hook kept) and the
file is backed up first. Where the file is and what the hook entry says (its timeout
above the gate's ``--wait``) are the agent's :class:`~hitl_vault.agents.formats.HookSettings`.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import UsageError, VaultError
from ..times import utcnow
from .formats import FAIL_CLOSED, HookSettings


def command_line(vault: Path, wait: str) -> str:
    """The hook's command: this hitl-vault, by absolute path, with the absolute vault.

    A relative path or a bare ``hitl-vault`` could resolve elsewhere (or nowhere: a hook
    that cannot start is a non-blocking error, and the tool runs).
    """
    vault_abs = os.path.abspath(vault.expanduser())
    return shlex.join([*_program(), "--vault", vault_abs, "gate", "--wait", wait])


def server_command_line(server: str, token_file: str | None, wait: str) -> str:
    """The hook's command that asks the service at ``server`` with the agent token in
    ``token_file`` (by absolute path; None: ``$HITL_VAULT_TOKEN`` in the agent's
    environment). Raises :class:`UsageError` for a URL the gate would refuse, or a token
    file it could not use."""
    from .gate_client import ServerError, check_url, read_token

    try:
        check_url(server)
        if token_file is not None:
            read_token(token_file)
    except ServerError as e:
        raise UsageError("hook install", str(e), "fix it and install again") from None
    words = [*_program(), "gate", "--wait", wait, "--server", server]
    if token_file is not None:
        words += ["--token-file", os.path.abspath(os.path.expanduser(token_file))]
    return shlex.join(words)


def _program() -> list[str]:
    """This hitl-vault, as a hook runs it: the script by absolute path, or this Python."""
    script = Path(sys.argv[0])
    if script.name.startswith("hitl-vault") and script.is_file():
        program = [os.path.abspath(script)]
    else:
        # -P: the hook's folder (the project) is not put on the import path, so a
        # hitl_vault.py there is never imported in place of the gate (a --user install and
        # PYTHONPATH still work, as they would not under -I).
        program = [os.path.abspath(sys.executable), "-P", "-m", "hitl_vault"]
    return program


def check_starts(command: str, folder: Path) -> None:
    """Run the hook's program once (``--version``) from ``folder``, as the agent will: a
    hook that cannot start lets every tool call run, so it is never installed.

    Raises :class:`UsageError` naming what failed."""
    words = shlex.split(command)
    program = words[: words.index("--vault" if "--vault" in words else "gate")]
    try:
        done = subprocess.run(
            [*program, "--version"], cwd=folder, capture_output=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        problem = f"the hook's command cannot start ({e})"
    else:
        if done.returncode == 0:
            return
        said = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no output"]
        problem = f"the hook's command does not start from {folder} ({said[0]})"
    raise UsageError(
        "hook install", problem, "install hitl-vault where that python finds it, then try again"
    )


def _is_ours(hook: Any) -> bool:
    return _subcommand_of(hook) == "gate"


def _is_outcome(hook: Any) -> bool:
    return _subcommand_of(hook) == "posttool"


_ROOT_VALUED = ("--vault", "--server", "--token-file")
_ENV_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=.*")
_PYTHON = re.compile(r"python[0-9.]*")


def _subcommand(command: str) -> str | None:
    """The hitl-vault command a hook's ``command`` runs (``gate``, ``posttool``, ...), as
    ``hook install`` writes it: after optional ``NAME=value`` words, a program called
    ``hitl-vault`` or a Python with ``-m hitl_vault``, then the root's options, with
    ``|| exit 2`` after it or not; None for any other command (the user's own hooks)."""
    command = command.strip()
    if command.endswith(FAIL_CLOSED.strip()):
        command = command[: -len(FAIL_CLOSED.strip())]
    try:
        words = shlex.split(command)
    except ValueError:
        return None
    while words and _ENV_WORD.fullmatch(words[0]):
        words = words[1:]
    if not words:
        return None
    program, words = os.path.basename(words[0]), words[1:]
    if _PYTHON.fullmatch(program):
        while words and words[0].startswith("-") and words[0] not in ("-m", "-c"):
            words = words[1:]  # -P, -I, -s, ...
        if words[:2] != ["-m", "hitl_vault"]:
            return None
        words = words[2:]
    elif program != "hitl-vault":
        return None
    rest = iter(words)
    for word in rest:
        if word in _ROOT_VALUED:
            next(rest, None)
        elif not word.startswith("-"):
            return word
    return None


def _subcommand_of(hook: Any) -> str | None:
    command = hook.get("command", "") if isinstance(hook, dict) else ""
    return _subcommand(command) if isinstance(command, str) else None


def posttool_line(command: str, agent: str) -> str:
    """The outcome hook's command beside the gate's ``command`` (the same program, vault,
    or server and token): ``posttool --format <agent>``, which records how a call the gate
    handed out ended."""
    words = shlex.split(command)
    at = words.index("gate")
    rest = words[at + 1 :]
    if "--wait" in rest:
        del rest[rest.index("--wait") : rest.index("--wait") + 2]
    return shlex.join([*words[:at], "posttool", "--format", agent, *rest])


def _target(command: Any) -> str:
    """Whom a gate command asks: its ``--vault`` or ``--server`` ("" if neither)."""
    try:
        words = shlex.split(command) if isinstance(command, str) else []
    except ValueError:
        return str(command)
    for option in ("--vault", "--server"):
        for i, word in enumerate(words):
            if word == option and i + 1 < len(words):
                return words[i + 1]
            if word.startswith(option + "="):
                return word.split("=", 1)[1]
    return ""


def _read(path: Path) -> tuple[dict[str, Any], str | None]:
    """The settings and their text (None: no file yet)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}, None
    except (OSError, UnicodeDecodeError) as e:
        problem = f"{path}: cannot be read ({e}) (fix it or give another --project)"
        raise VaultError(problem) from None
    try:
        data = json.loads(text) if text.strip() else {}
    except ValueError as e:
        problem = f"{path}: is not valid JSON ({e}) (fix the file, then install again)"
        raise VaultError(problem) from None
    if not isinstance(data, dict):
        raise VaultError(f"{path}: holds JSON {type(data).__name__}, not an object (fix it)")
    return data, text


def _quiet_read(path: Path) -> dict[str, Any]:
    """Another settings file's JSON object ({} if it is missing or unreadable)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _lists(data: dict[str, Any], path: Path, events: list[str]) -> dict[str, list[Any]]:
    """hooks.<event> for each of ``events``, made where missing."""
    hooks = data.setdefault("hooks", {})
    if not isinstance(hooks, dict):
        raise VaultError(f'{path}: "hooks" is not an object (fix it, then install again)')
    lists = {}
    for event in events:
        found = hooks.setdefault(event, [])
        if not isinstance(found, list):
            problem = f'"hooks.{event}" is not a list (fix it, then install again)'
            raise VaultError(f"{path}: {problem}")
        lists[event] = found
    return lists


Mine = Callable[[Any], bool]  # which hooks are ours: the gate's, or the outcome hook's


def _ours_in(
    found: list[Any], where: HookSettings, mine: Mine = _is_ours
) -> tuple[list[Any], int, dict[str, Any]] | None:
    """The first of our hooks in an event's list: (the list holding it, its index, the dict
    whose ``matcher`` covers it: its group, or the entry itself in a flat list)."""
    for n, item in enumerate(found):
        if not isinstance(item, dict):
            continue
        if where.matcher is None:
            if mine(item):
                return found, n, item
            continue
        inner = item.get("hooks")
        for i, hook in enumerate(inner if isinstance(inner, list) else []):
            if mine(hook):
                assert isinstance(inner, list)
                return inner, i, item
    return None


def _merge(
    found: list[Any],
    entry: dict[str, Any],
    where: HookSettings,
    replace: bool,
    problems: list[str],
    mine: Mine,
) -> str:
    """Put ``entry`` into an event's list: "added", "updated" or "unchanged"; what stops
    it without ``--replace`` goes to ``problems``."""
    ours = _ours_in(found, where, mine)
    if ours is None:
        found.append(
            entry if where.matcher is None else {"matcher": where.matcher, "hooks": [entry]}
        )
        return "added"
    inner, i, holder = ours
    old = inner[i]
    was, now = _target(old.get("command")), _target(entry["command"])
    if was != now and not replace:
        problems.append(
            f"another hitl-vault gate is installed here, asking {was or 'the default vault'} "
            f"(give --replace to make it ask {now} instead)"
        )
    narrow = not where.wide_enough(holder.get("matcher"))
    if narrow and not replace:
        problems.append(
            f"its matcher {holder.get('matcher')!r} is narrower than the guard needs: tools it "
            "does not match skip the gate and the vault's guard (give --replace to widen it)"
        )
    if narrow and where.matcher is not None and len(inner) > 1:
        del inner[i]  # the user's other hooks in that group keep their matcher
        found.append({"matcher": where.matcher, "hooks": [entry]})
        return "updated"
    if narrow and where.matcher is not None:
        holder["matcher"] = where.matcher
    if old == entry and not narrow:
        return "unchanged"
    inner[i] = entry
    return "updated"


def install(
    path: Path,
    command: str,
    wait: float,
    where: HookSettings,
    *,
    outcome: str | None = None,
    replace: bool = False,
    dry_run: bool = False,
) -> str:
    """Merge the gate's hook, as the agent's settings ``where`` write it, into the settings
    file at ``path``; what was done, to print. Raises :class:`VaultError` naming the file
    and the fix where the hook would not work (hooks turned off, another vault's gate, a
    matcher narrower than the guard needs: the last two are replaced with ``replace``).

    A settings file that is a link (kept in a dotfiles repository) is written through it."""
    path = Path(os.path.realpath(path))
    entry = where.entry(command, wait)
    data, before = _read(path)
    for where_off in [path, *where.overriding(path)]:
        off = data if where_off == path else _quiet_read(where_off)
        if off.get("disableAllHooks") is True:
            also = "" if where_off == path else f" (those of {path} too)"
            raise VaultError(
                f'{where_off}: "disableAllHooks": true turns every hook off{also}, the gate '
                "included (remove that line, then install again)"
            )
    for key, value in where.top.items():
        data.setdefault(key, value)
    hooks: list[tuple[str, list[str], dict[str, Any], Mine]] = [
        ("hook", list(where.events), entry, _is_ours)
    ]
    if outcome is not None:  # `hitl-vault posttool`, after each tool call
        hooks.append(("outcome hook", list(where.after), where.after_entry(outcome), _is_outcome))
    lists = _lists(data, path, [event for _, events, _, _ in hooks for event in events])
    problems: list[str] = []
    lines, changed = [], False
    for name, events, one, mine in hooks:
        done = {e: _merge(lists[e], one, where, replace, problems, mine) for e in events}
        changed = changed or set(done.values()) != {"unchanged"}
        what = "/".join(dict.fromkeys(done.values()))
        lines += [f"{path}: {', '.join(done)} {name} {what}:", json.dumps(one, indent=2)]
    if problems:
        raise VaultError(f"{path}: " + "; ".join(dict.fromkeys(problems)))
    if not changed:
        return f"{path}: the hitl-vault gate is already installed; nothing changed"
    return _save(path, before, data, where, lines, dry_run)


def uninstall(path: Path, where: HookSettings, *, dry_run: bool = False) -> str:
    """Take every hitl-vault gate hook out of the agent's events in the settings file at
    ``path`` (and a group or event list left empty by that), keeping the rest."""
    path = Path(os.path.realpath(path))
    data, before = _read(path)
    hooks = data.get("hooks")
    if not isinstance(hooks, dict):
        hooks = {}
    removed = []
    for events, mine in ((where.events, _is_ours), (where.after, _is_outcome)):
        for event in events:
            found = hooks.get(event)
            while isinstance(found, list) and (ours := _ours_in(found, where, mine)) is not None:
                inner, i, holder = ours
                asks = _target(inner[i].get("command")) or "the default vault"
                removed.append(f"{event} ({asks})")
                del inner[i]
                if inner is not found and not inner:
                    found.remove(holder)
            if found == []:
                del hooks[event]
    if not removed:
        return f"{path}: no hitl-vault gate hook here; nothing changed"
    if hooks == {}:
        data.pop("hooks")
    lines = [f"{path}: hitl-vault hooks removed from {', '.join(removed)}"]
    return _save(path, before, data, where, lines, dry_run)


def _save(
    path: Path,
    before: str | None,
    data: dict[str, Any],
    where: HookSettings,
    lines: list[str],
    dry_run: bool,
) -> str:
    """Write ``data`` over the file (a backup of it first), or with ``dry_run`` print the
    unified diff instead; the report."""
    after = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    if dry_run:
        diff = difflib.unified_diff(
            (before or "").splitlines(keepends=True),
            after.splitlines(keepends=True),
            fromfile=str(path) if before is not None else "/dev/null",
            tofile=str(path),
        )
        return "\n".join([*lines, "".join(diff).rstrip("\n"), "dry run: nothing written"])
    backup = None
    if before is not None:
        stamp = utcnow().strftime("%Y%m%dT%H%M%S%fZ")
        backup = path.with_name(f"{path.name}.{stamp}.bak")
        for n in range(2, 100):  # never over an earlier backup made in the same instant
            if not backup.exists():
                break
            backup = path.with_name(f"{path.name}.{stamp}-{n}.bak")
        _write(backup, before, path)
    _write(path, after, path)
    if backup is not None:
        lines.append(f"the previous file is kept as {backup}")
    lines.append(where.restart)
    return "\n".join(lines)


def vault_inside(vault: Path, project: Path | None) -> str:
    """A warning when the vault is inside the project the agent works in ("" if not)."""
    if project is None:
        return ""
    inside = Path(os.path.realpath(vault.expanduser()))
    folder = Path(os.path.realpath(project.expanduser()))
    if not inside.is_relative_to(folder):
        return ""
    return (
        f"warning: the vault {inside} is inside the project {folder}: the guard denies the "
        "agent's calls that name it, but its file search and builds see it; move the vault "
        "out of the project"
    )


def _write(target: Path, text: str, settings: Path) -> None:
    """Write through a temp file and a rename, keeping the settings file's mode."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        mode = settings.stat().st_mode & 0o777 if settings.exists() else 0o644
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, mode)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as e:
        fix = "check the folder's permissions"
        raise UsageError(str(target), f"cannot be written ({e})", fix) from None
