"""Params as they travel: JSON-like data only, checked before anything is written."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from .errors import UsageError


def clean_params(params: Mapping[str, Any] | None, argument: str = "params") -> dict[str, Any]:
    """Params as JSON-like data (text keys; numbers, text, booleans, null, lists, mappings)."""

    def check(value: Any, where: str) -> Any:
        if value is None or isinstance(value, bool | int | str):
            return value
        if isinstance(value, float):
            if math.isfinite(value):
                return value
        elif isinstance(value, list | tuple):
            return [check(v, f"{where}[{i}]") for i, v in enumerate(value)]
        elif isinstance(value, Mapping):
            out = {}
            for k, v in value.items():
                if not isinstance(k, str):
                    raise UsageError(argument, f"key {k!r} in {where} is not text", "use text keys")
                out[k] = check(v, f"{where}.{k}")
            return out
        raise UsageError(
            argument,
            f"{where} is a {type(value).__name__}",
            "pass numbers, text, booleans, lists or mappings (params travel as JSON)",
        )

    if params is None:
        return {}
    if not isinstance(params, Mapping):
        raise UsageError(argument, "is not a mapping", "pass a dict of name -> value")
    result: dict[str, Any] = check(params, "params")
    return result
