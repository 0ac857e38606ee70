"""What a requester puts forward beside the params: why (``reasoning``), how sure it is
(``confidence``, 0 to 1), what else it considered (``alternatives``), what could go wrong
(``risk_factors``), and the diff of what an edit will change.

Kept with the request as one JSON object (``Request.pitch``), shown to the approver in the
note's ``## Proposal`` and ``## Diff`` sections, in messages, ``show --json`` and the API
(as ``proposal``). The agent asserts all of it, the diff too when its own side made it
(``diff_by: agent``): only ``confidence`` reaches the rules, and only to ask or block.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from ..errors import UsageError

# The most text each part may hold; a diff longer than its limit is cut with a marker,
# never refused (a large Write still asks), and the note keeps its size.
MAX_REASONING = 20_000
MAX_ITEMS = 20
MAX_ITEM = 1_000
MAX_DIFF_LINES = 400
MAX_DIFF_CHARS = 40_000

# Who made the diff: the process that read the file to decide, or the agent's side of the
# gate over HTTP, which read the file on the agent's machine (the service cannot).
DIFF_BY = ("gate", "agent")


@dataclass(frozen=True)
class Pitch:
    """The structured context of one request (all parts optional)."""

    reasoning: str | None = None
    confidence: float | None = None
    alternatives: tuple[str, ...] = ()
    risk_factors: tuple[str, ...] = ()
    diff: str | None = None
    diff_by: str | None = None  # "gate" or "agent" when there is a diff

    def as_json(self) -> dict[str, Any]:
        """The stable JSON form (``proposal`` in ``show --json`` and the API)."""
        return {
            "reasoning": self.reasoning,
            "confidence": self.confidence,
            "alternatives": list(self.alternatives),
            "risk_factors": list(self.risk_factors),
            "diff": self.diff,
            "diff_by": self.diff_by,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Pitch:
        """The pitch a stored object holds (written by :meth:`as_json`); ValueError if not."""
        try:
            got = make_pitch(
                reasoning=data.get("reasoning"),
                confidence=data.get("confidence"),
                alternatives=data.get("alternatives"),
                risk_factors=data.get("risk_factors"),
                diff=data.get("diff"),
                diff_by=data.get("diff_by"),
            )
        except UsageError as e:
            raise ValueError(str(e)) from None
        return got if got is not None else cls()

    @property
    def proposed(self) -> bool:
        """Whether the requester said anything for the ``## Proposal`` section."""
        return bool(
            self.reasoning or self.confidence is not None or self.alternatives or self.risk_factors
        )


def make_pitch(
    *,
    reasoning: object = None,
    confidence: object = None,
    alternatives: object = None,
    risk_factors: object = None,
    diff: object = None,
    diff_by: object = None,
) -> Pitch | None:
    """The pitch as it is stored, None when nothing was said. Every entry (the CLI, the
    API, MCP, the Inbox, ``Vault.submit``) checks through here, so a bad value gets the
    same :class:`UsageError` naming the argument and the fix everywhere."""
    pitch = Pitch(
        reasoning=_text(reasoning, "reasoning"),
        confidence=check_confidence(confidence),
        alternatives=_items(alternatives, "alternatives"),
        risk_factors=_items(risk_factors, "risk_factors"),
        diff=cut_diff(_diff(diff)),
        diff_by=None,
    )
    if pitch.diff is not None:
        if diff_by not in DIFF_BY:
            raise UsageError("diff_by", f"is {diff_by!r}", "use gate or agent")
        pitch = replace(pitch, diff_by=str(diff_by))
    return pitch if pitch.proposed or pitch.diff else None


def check_confidence(value: object) -> float | None:
    """A number from 0 to 1, or None; anything else is a UsageError naming ``confidence``."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UsageError("confidence", f"{value!r} is not a number", "give a number from 0 to 1")
    if not math.isfinite(value) or not 0 <= value <= 1:
        raise UsageError("confidence", f"{value} is outside 0–1", "give a number from 0 to 1")
    return float(value)


def _text(value: object, argument: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise UsageError(argument, f"is {type(value).__name__}, not text", "pass a string")
    if len(value) > MAX_REASONING:
        raise UsageError(
            argument,
            f"has {len(value):,} characters, over the {MAX_REASONING:,} a request may carry",
            "say it in fewer words: put long material in a file and name its path",
        )
    return _storable(value) if value.strip() else None


def _items(value: object, argument: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise UsageError(
            argument, f"is {type(value).__name__}, not a list", "pass a list of strings"
        )
    if len(value) > MAX_ITEMS:
        raise UsageError(
            argument, f"has {len(value)} items, over {MAX_ITEMS}", "name the main ones"
        )
    items = []
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise UsageError(
                f"{argument}[{i}]", f"is {type(item).__name__}, not text", "pass a string"
            )
        if len(item) > MAX_ITEM:
            raise UsageError(
                f"{argument}[{i}]",
                f"has {len(item):,} characters, over {MAX_ITEM:,}",
                "say it in one or two sentences",
            )
        if item.strip():
            items.append(_storable(item))
    return tuple(items)


def _diff(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise UsageError("diff", f"is {type(value).__name__}, not text", "pass a unified diff")
    return _storable(value) if value.strip() else None


def cut_diff(diff: str | None) -> str | None:
    """The diff kept to ``MAX_DIFF_LINES`` lines and ``MAX_DIFF_CHARS`` characters, what is
    left out said in its last line; a diff within both is kept as it is (so a cut diff
    read back is the same diff)."""
    if diff is None:
        return None
    lines = diff.splitlines()
    if len(lines) <= MAX_DIFF_LINES and len(diff) <= MAX_DIFF_CHARS:
        return diff
    kept: list[str] = []
    size = 0
    for line in lines[: MAX_DIFF_LINES - 1]:
        size += len(line) + 1
        if size > MAX_DIFF_CHARS - 100:  # room for the last line
            break
        kept.append(line)
    kept.append(f"… {len(lines) - len(kept)} more lines not shown")
    return "\n".join(kept)


def _storable(text: str) -> str:
    """Text as UTF-8 can hold it: a lone surrogate becomes "?"."""
    return text.encode("utf-8", "replace").decode("utf-8")
