"""The agent gate's fast path: a tool call the rules surely let through gets no decision
before the rules' classes, the journal or anything else is imported.

The full gate (:mod:`.gate`) keeps, beside its parsed copy of the rules, a plain table
of them in ``.hitl/gate-fast.marshal`` (strings, numbers and tuples only, read with
:mod:`marshal`), written only after it found the vault trusted, with what that check
looked at (the owner and mode of the vault, its rules file and folders). Before every
call, :func:`answer` compares all of it (the rules file's bytes, hitl-vault's code, the
trust fingerprints) and answers only when the table shows, for certain, an allow with no
decision for a read-only tool the guard would let pass. Anything else, or any doubt,
returns None and the full gate decides, with the stdin already read.
"""

from __future__ import annotations

import json
import marshal
import os
import sys
from typing import Any

TABLE = "gate-fast.marshal"
STATE_DIR = ".hitl"  # as hitl_vault.model says: this module imports nothing of the package
RULES_FILE = "hitl-vault.yaml"
FOLDERS = ("Inbox", "Pending_Approval", "Approved", "Done", "Rejected")
# Tools that only read (the guard lets them near the vault, never into .hitl/).
READ_ONLY = frozenset(
    {"Read", "Glob", "Grep", "LS", "NotebookRead", "WebFetch", "WebSearch", "TodoWrite",
     "read_file", "read_many_files", "glob", "search_file_content", "list_directory"}
)  # fmt: skip
# What no decision is, per --format, and the hook event its input may name.
NO_DECISION = {"claude": "", "codex": "{}\n", "gemini": ""}
EVENTS = {"claude": "PreToolUse", "codex": "PreToolUse", "gemini": "BeforeTool"}
_MAX_BYTES = 1 << 20
_MAX_TEXT = 4096  # a longer string in the input: the full gate looks at it
_SOURCES = (
    ("agents", "fastgate.py"), ("agents", "gate.py"), ("agents", "guard.py"),
    ("agents", "formats.py"), ("agents", "hookio.py"), ("policy", "rules.py"),
    ("policy", "conditions.py"), ("policy", "quorum.py"), ("policy", "rulesfile.py"),
    ("policy", "trust.py"), ("policy", "confidence.py"), ("policy", "modes.py"),
    ("params.py",), ("model.py",),
)  # fmt: skip


class Doubt(Exception):
    """The fast path cannot be sure: the full gate decides."""


def arguments(argv: list[str]) -> tuple[str, str, str, str | None] | None:
    """(vault, format, wait, server URL or None) of ``[--vault V] gate [--format F]
    [--wait DUR] [--server URL]`` in its plainest spelling, for a format with a fast
    answer; None for anything else (``--token-file`` too)."""
    server = os.environ.get("HITL_VAULT_SERVER") or None
    vault, fmt, given, seen_gate = os.environ.get("HITL_VAULT") or "vault", "claude", set(), False
    wait = "9m"
    words = iter(argv)
    for word in words:
        if word == "gate" and not seen_gate:
            seen_gate = True
            continue
        name, eq, value = word.partition("=")
        allowed = ("--format", "--wait") if seen_gate else ("--vault",)
        if name not in (*allowed, "--server") or name in given:
            return None
        given.add(name)
        value = value if eq else next(words, "")
        if not value or value.startswith("-"):
            return None
        if name == "--vault":
            vault = value
        elif name == "--format":
            fmt = value
        elif name == "--server":
            server = value
        elif _plain_duration(value):
            wait = value
        else:
            return None
    return (vault, fmt, wait, server) if seen_gate and fmt in NO_DECISION else None


def _plain_duration(value: str) -> bool:
    """``9m``, ``30s``, ``500ms``, ``2h``: a duration the full parser surely takes."""
    number = value[:-2] if value.endswith("ms") else value[:-1]
    unit_ok = value.endswith(("ms", "s", "m", "h"))
    return unit_ok and number.isdigit() and number.isascii() and len(number) <= 4


def seconds(duration: str) -> float:
    """A duration :func:`arguments` accepted, in seconds."""
    if duration.endswith("ms"):
        return int(duration[:-2]) / 1000
    return int(duration[:-1]) * {"s": 1, "m": 60, "h": 3600}[duration[-1]]


def answer(vault: str, fmt: str, stdin: bytes) -> str | None:
    """The no-decision stdout for this call (exit 0), or None: the full gate decides."""
    if fmt not in NO_DECISION:
        return None
    try:
        root = os.path.realpath(os.path.abspath(os.path.expanduser(vault)))
        table = _table(root)
        tool, params, cwd = read_call(stdin, fmt)
        if tool not in READ_ONLY:
            raise Doubt
        places = _places(params, cwd, root)
        if not _allowed(table, tool, params, (os.path.realpath(cwd), places)):
            return None
    except (Doubt, OSError, ValueError, TypeError, EOFError, RecursionError):
        return None
    return NO_DECISION[fmt]


def read_call(stdin: bytes, fmt: str) -> tuple[str, dict[str, Any], str]:
    """(tool, input, cwd) of a hook call as the full gate reads it; Doubt if unsure."""
    data = json.loads(stdin.decode("utf-8"), parse_constant=_no_constant)
    if not isinstance(data, dict) or data.get("hook_event_name") not in (None, EVENTS[fmt]):
        raise Doubt
    tool, params = data.get("tool_name"), data.get("tool_input")
    names = ("session_id", "conversation_id")
    session = next((data[k] for k in names if data.get(k) not in (None, "")), None)
    roots = data.get("workspace_roots")
    cwd = data.get("cwd") or (roots[0] if isinstance(roots, list) and roots else None)
    if not (isinstance(tool, str) and tool and isinstance(params, dict)):
        raise Doubt
    if not (isinstance(session, str) and isinstance(cwd, str) and os.path.isabs(cwd)):
        raise Doubt
    return tool, params, cwd


def _no_constant(word: str) -> None:
    raise ValueError(word)


def texts(value: Any, depth: int = 0) -> list[str]:
    """Every string of a tool's input; Doubt for what the full gate might refuse."""
    if depth > 16:
        raise Doubt
    if isinstance(value, str):
        if len(value) > _MAX_TEXT or "\0" in value or "file:" in value.lower():
            raise Doubt
        value.encode("utf-8")  # a lone surrogate raises (UnicodeEncodeError is a ValueError)
        return [value]
    if isinstance(value, dict):
        return [t for k, v in value.items() for t in (*texts(k, depth), *texts(v, depth + 1))]
    if isinstance(value, list):
        return [t for v in value for t in texts(v, depth + 1)]
    if isinstance(value, float) and not (value == value and abs(value) != float("inf")):
        raise Doubt
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 1000:
        raise Doubt
    return []


def _places(params: dict[str, Any], cwd: str, root: str) -> tuple[str, ...]:
    """Where every string of the input would land as a path (more than the paths the call
    names: each string, and a glob's fixed folders), resolved as the guard resolves them;
    Doubt if any could reach ``.hitl/``."""
    state = os.path.join(root, STATE_DIR)
    found: list[str] = []
    for text in texts(params):
        if STATE_DIR in text:
            raise Doubt
        fixed = []
        for part in text.split("/"):
            if any(c in part for c in "*?[{"):
                break
            fixed.append(part)
        for candidate in (text, "/".join(fixed) or ("/" if text.startswith("/") else ".")):
            joined = os.path.join(cwd, os.path.expanduser(candidate))
            for landed in (os.path.realpath(joined), os.path.realpath(os.path.normpath(joined))):
                if _under(landed, state):
                    raise Doubt
                found.append(landed)
    return tuple(found)


def _under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


# --- the table: written by the full gate, read here ------------------------------------


def _code_key() -> tuple[Any, ...]:
    """What the table was made by: hitl-vault's version and code, and Python's."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    version = getattr(sys.modules.get("hitl_vault"), "__version__", "")
    mtimes = tuple(os.stat(os.path.join(package, *p)).st_mtime_ns for p in _SOURCES)
    return (version, sys.version, mtimes)


def fingerprints(root: str) -> tuple[Any, ...]:
    """What the vault's trust check looks at (owner, mode and kind of the vault, its rules
    file and the link's target, its folders), and who runs: the same answer, the check's
    same result."""

    def one(path: str, follow: bool) -> tuple[int, int] | None:
        try:
            st = os.stat(path) if follow else os.lstat(path)
        except FileNotFoundError:
            return None
        return (st.st_mode, st.st_uid)

    rules = os.path.join(root, RULES_FILE)
    found: list[Any] = [os.geteuid(), one(root, True), one(rules, False)]
    found += [os.path.realpath(rules), one(rules, True)]
    found += [one(os.path.join(root, name), False) for name in (STATE_DIR, *FOLDERS)]
    return tuple(found)


def _rules_bytes(root: str) -> bytes | None:
    try:
        with open(os.path.join(root, RULES_FILE), "rb") as f:
            raw = f.read(_MAX_BYTES + 1)
    except FileNotFoundError:
        return None
    if len(raw) > _MAX_BYTES:
        raise Doubt
    return raw


def _table(root: str) -> tuple[Any, ...]:
    """The rules table, if it holds for the rules, code and vault as they are now."""
    path = os.path.join(root, STATE_DIR, TABLE)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    try:
        st = os.fstat(fd)
        if (
            st.st_uid != os.geteuid()
            or st.st_mode & 0o022
            or not (st.st_mode & 0o170000) == 0o100000
        ):
            raise Doubt  # only this user's own private file
        with os.fdopen(fd, "rb", closefd=False) as f:
            kept = marshal.loads(f.read(_MAX_BYTES))
    finally:
        os.close(fd)
    if not isinstance(kept, tuple) or len(kept) != 4:
        raise Doubt
    code, raw, prints, table = kept
    if code != _code_key() or raw != _rules_bytes(root) or prints != fingerprints(root):
        raise Doubt
    return table  # type: ignore[no-any-return]


def keep(root: str, raw: bytes | None, table: tuple[Any, ...] | None) -> None:
    """Write the table for the rules file's ``raw`` bytes (called by the full gate once it
    found the vault trusted); None removes it. A failure only costs time."""
    import contextlib
    import tempfile

    path = os.path.join(root, STATE_DIR, TABLE)
    if table is None:
        with contextlib.suppress(OSError):
            os.unlink(path)
        return
    with contextlib.suppress(OSError):
        data = marshal.dumps((_code_key(), raw, fingerprints(root), table))
        with open(path, "rb") as f:
            if f.read(_MAX_BYTES + 1) == data:
                return
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{TABLE}.", dir=os.path.dirname(path))
    except OSError:
        return
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


# --- matching, as the rules match (see hitl_vault.policy.conditions) -------------------

_PATTERNS: dict[tuple[str, int], Any] = {}


def _compiled(pattern: str, flags: int) -> Any:
    found = _PATTERNS.get((pattern, flags))
    if found is None:
        import re

        found = _PATTERNS[(pattern, flags)] = re.compile(pattern, flags)
    return found


def _allowed(table: tuple[Any, ...], tool: str, params: dict[str, Any], where: Any) -> bool:
    """True only when the rules surely allow the call with no decision: every matching rule
    allows (none says ``agent_prompt: skip``), or none matches and the default allows."""
    default, rules = table
    matched = False
    for decision, any_action, names, patterns, conditions, path, skip in rules:
        named = any_action or tool in names
        if not named and not any(_compiled(p, f).fullmatch(tool) for p, f in patterns):
            continue
        allowing = decision == "allow"
        holds = _holds(conditions, path, params, where, allowing)
        if holds is False:
            continue
        if holds is None or not allowing or skip:
            return False
        matched = True
    return matched or default == "allow"


def _holds(
    conditions: Any, path: Any, params: dict[str, Any], where: Any, allowing: bool
) -> bool | None:
    """Whether a rule's conditions hold (None: cannot be sure from here)."""
    project, places = where
    for name, condition in conditions:
        if name not in params or not _condition(condition, params[name], allowing):
            return False
    if path is None:
        return True
    if path[0] == "inside":  # every place inside: surely every path the call names too
        return True if all(_under(p, project) for p in places) else None
    if not any(_compiled(path[1], path[2]).fullmatch(p) for p in places):
        return False  # no place matches: no path the call names does
    return None


def _condition(condition: Any, actual: Any, allowing: bool) -> bool:
    kind = condition[0]
    if kind == "any":
        return any(_condition(c, actual, allowing) for c in condition[1])
    if kind == "re":
        text = _as_text(actual)
        return (
            text is not None and _compiled(condition[1], condition[2]).fullmatch(text) is not None
        )
    if kind == "cmp":
        value = _real(actual) if allowing else _as_number(actual)
        return value is not None and _compare(condition[1], value, condition[2])
    expected = condition[1]
    if isinstance(expected, bool) or isinstance(actual, bool):
        return isinstance(expected, bool) and isinstance(actual, bool) and expected == actual
    if isinstance(expected, int | float) or isinstance(actual, int | float):
        left, right = _as_number(expected), _real(actual) if allowing else _as_number(actual)
        return left is not None and right is not None and left == right
    return bool(expected == actual)


def _compare(op: str, left: Any, right: Any) -> bool:
    return bool({"<=": left <= right, ">=": left >= right, "==": left == right,
            "!=": left != right, "<": left < right, ">": left > right}[op])  # fmt: skip


def _real(value: Any) -> Any:
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def _as_number(value: Any) -> Any:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return value
    if not isinstance(value, str):
        return None
    text = value.strip()
    number = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
    if _compiled(number, 0).fullmatch(text) is None:
        return None
    if text.lstrip("+-").isdigit():
        try:
            return int(text)
        except ValueError:
            return float(text)
    return float(text)


def _as_text(value: Any) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, dict | list | tuple | set | frozenset):
        return None
    return str(value)


# --- the table, from the parsed rules (on the full gate's path only) -------------------

_RULE_FIELDS = frozenset(
    {"name", "decision", "action", "params", "risk", "timeout", "approvers", "editable",
     "reason", "remind_before", "quorum", "stages", "prevent_self_approval", "require_reason",
     "escalate_after", "escalate_to", "authenticated", "path", "agent_prompt", "line",
     "always", "python", "on_error", "confidence"}
)  # fmt: skip
_POLICY_FIELDS = frozenset({"defaults", "rules", "actions", "source", "mode", "gate_record"})


def table_of(policy: Any) -> tuple[Any, ...] | None:
    """The policy as plain data for :func:`answer`, or None when the fast path must not
    answer for it (every allowed call on record, or rules it does not know)."""
    from dataclasses import fields

    from ..policy.conditions import AnyOf, Compare, Equals, Matches
    from ..policy.rules import Rule

    def condition(c: Any) -> tuple[Any, ...]:
        if isinstance(c, AnyOf):
            return ("any", tuple(condition(o) for o in c.options))
        if isinstance(c, Matches):
            return ("re", c.pattern.pattern, c.pattern.flags)
        if isinstance(c, Compare):
            return ("cmp", c.op, c.number)
        if isinstance(c, Equals) and (c.value is None or isinstance(c.value, str | int | float)):
            return ("eq", c.value)
        raise Doubt

    if {f.name for f in fields(policy)} - _POLICY_FIELDS or str(policy.gate_record) == "all":
        return None
    rules = []
    try:
        for rule in policy.rules:
            if type(rule) is not Rule or {f.name for f in fields(rule)} - _RULE_FIELDS:
                return None
            if rule.python is not None:  # Python decides: only the full gate runs it
                return None
            if rule.confidence is not None:  # a hook call states none: the rule never holds
                continue
            action, path = rule.action, rule.path
            pattern = path.pattern if path is not None else None
            where: tuple[Any, ...] | None = None
            if path is not None and path.inside_project:
                where = ("inside",)
            if path is not None and where is None:
                if pattern is None:
                    return None
                where = ("re", pattern.pattern, pattern.flags)
            rules.append((
                str(rule.decision),
                action is None,
                tuple(sorted(action.names)) if action is not None else (),
                tuple((p.pattern, p.flags) for p in action.patterns) if action is not None else (),
                tuple((name, condition(c)) for name, c in rule.params.items()),
                where,
                rule.agent_prompt == "skip",
            ))  # fmt: skip
    except Doubt:
        return None
    return (str(policy.defaults.decision), tuple(rules))
