"""What the CLI reads from the command line and prints, without click: ``-p`` values,
``--params-json``, ``--context-file``, the stable JSON shapes, one-line outcomes."""

from __future__ import annotations

import json
import math
import re
from typing import Any, BinaryIO

from ..errors import UsageError
from ..notes.strict_yaml import quoted_text
from ..policy.intake import MAX_CONTEXT

_NUMBER = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?")
_QUOTED = re.compile(r"""(".*"|'.*')""", re.S)


def parse_param(text: str) -> tuple[str, Any]:
    """``key=value``: a plain number, true/false or null is read as such, anything else is text.

    Not YAML 1.1's full reading, which would turn ``01234`` into 668, ``NO`` into
    false and ``12:30:00`` into 45000. A value in YAML quotes is that text.
    """
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise UsageError("-p", f"{text!r} is not key=value", "write e.g. -p amount=1500")
    return key.strip(), parse_scalar(raw)


def parse_scalar(raw: str) -> Any:
    word = raw.lower()
    if word in ("true", "false"):
        return word == "true"
    if word in ("null", "~"):
        return None
    if _NUMBER.fullmatch(raw):
        if raw.lstrip("-").isdigit():
            try:
                return int(raw)
            except ValueError:  # over Python's 4,300 digits: keep exactly what was typed
                return raw
        number = float(raw)
        return number if math.isfinite(number) else raw
    if _QUOTED.fullmatch(raw):
        unquoted = quoted_text(raw)
        return raw if unquoted is None else unquoted
    return raw


def parse_params(pairs: tuple[str, ...], as_json: str | None) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if as_json is not None:
        try:
            loaded = json.loads(as_json)
        except json.JSONDecodeError as e:
            raise UsageError("--params-json", f"not valid JSON: {e}", "fix the JSON") from None
        except RecursionError:
            raise UsageError("--params-json", "nested too deeply", "flatten it") from None
        except ValueError as e:  # a number of more than 4,300 digits
            raise UsageError("--params-json", str(e), "quote it") from None
        if not isinstance(loaded, dict):
            raise UsageError("--params-json", "must be a JSON object", 'write {"key": value, ...}')
        params.update(loaded)
    params.update(parse_param(p) for p in pairs)
    return params


def read_context(file: BinaryIO) -> str:
    """The text of ``--context-file``, read no further than a context may be long (a UTF-8
    character is at most 4 bytes), so ``/dev/zero`` or a huge file ends at once."""
    most = MAX_CONTEXT * 4
    try:
        data = file.read(most + 1)
    except OSError as e:
        raise UsageError(
            "--context-file", f"cannot read it: {e}", "name a file you may read"
        ) from None
    if len(data) > most:
        raise UsageError(
            "--context-file",
            f"is over the {MAX_CONTEXT:,} characters a context may hold",
            "give a shorter file",
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise UsageError(
            "--context-file", f"is not UTF-8 (byte {e.start + 1})", "save it as UTF-8"
        ) from None
