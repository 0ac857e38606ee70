"""``hitl-vault hook install``: put the gate into an agent's settings file.

The hook is merged into what the file holds (every other key and hook kept) and the
file is backed up first. Where the file is and what the hook entry says (its timeout
above the gate's ``--wait``) are the agent's :class:`~hitl_vault.agents.formats.HookSettings`.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from ..errors import UsageError, VaultError
from ..times import utcnow
from .formats import HookSettings


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
    command = hook.get("command", "") if isinstance(hook, dict) else ""
    words = command.split() if isinstance(command, str) else []
    return "gate" in words and any("hitl-vault" in w or "hitl_vault" in w for w in words)


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


def _merge(data: dict[str, Any], entry: dict[str, Any], path: Path, where: HookSettings) -> str:
    """Put ``entry`` (one hook) under hooks.<event>: "added", "updated" or "unchanged"."""
    hooks = data.setdefault("hooks", {})
    if not isinstance(hooks, dict):
        raise VaultError(f'{path}: "hooks" is not an object (fix it, then install again)')
    groups = hooks.setdefault(where.event, [])
    if not isinstance(groups, list):
        problem = f'"hooks.{where.event}" is not a list (fix it, then install again)'
        raise VaultError(f"{path}: {problem}")
    for group in groups:
        inner = group.get("hooks") if isinstance(group, dict) else None
        if not isinstance(inner, list):
            continue
        for i, hook in enumerate(inner):
            if _is_ours(hook):  # its group's matcher is left as the user set it
                if hook == entry:
                    return "unchanged"
                inner[i] = entry
                return "updated"
    groups.append({"matcher": where.matcher, "hooks": [entry]})
    return "added"


def install(
    path: Path, command: str, wait: float, where: HookSettings, *, dry_run: bool = False
) -> str:
    """Merge the gate's hook, as the agent's settings ``where`` write it, into the settings
    file at ``path``; what was done, to print.

    A settings file that is a link (kept in a dotfiles repository) is written through it."""
    path = Path(os.path.realpath(path))
    entry = where.entry(command, wait)
    data, before = _read(path)
    what = _merge(data, entry, path, where)
    after = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    shown = json.dumps(entry, indent=2, ensure_ascii=False)
    lines = [f"{path}: {where.event} hook {what}:", shown]
    if what == "unchanged":
        return "\n".join([f"{path}: the hitl-vault gate is already installed; nothing changed"])
    if dry_run:
        return "\n".join([*lines, "dry run: nothing written"])
    backup = None
    if before is not None:
        backup = path.with_name(f"{path.name}.{utcnow().strftime('%Y%m%dT%H%M%S%fZ')}.bak")
        _write(backup, before, path)
    _write(path, after, path)
    if backup is not None:
        lines.append(f"the previous file is kept as {backup}")
    lines.append(where.restart)
    return "\n".join(lines)


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
