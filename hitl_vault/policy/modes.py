"""How the rules apply as a whole: ``mode:`` and what the agent gate records (``gate:``)."""

from __future__ import annotations

from enum import StrEnum


class Mode(StrEnum):
    """``mode:`` in hitl-vault.yaml: enforce the rules, or only record what they would do."""

    ENFORCE = "enforce"
    MONITOR = "monitor"  # ask and block are recorded as "would ask/block" and allowed


class GateRecord(StrEnum):
    """``gate: {record: ...}``: which of the agent gate's decisions become requests.

    An ask always does (a human decides it in its note)."""

    ASKS = "asks"  # only asks: a blocked tool call is denied without a trace
    BLOCKS = "blocks"  # asks and blocks (the default)
    ALL = "all"  # also every allowed tool call
