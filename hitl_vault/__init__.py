"""hitl-vault: a human-in-the-loop approval gate that lives in a folder of Markdown notes.

The names below are loaded on first use (a module ``__getattr__``), so importing one
submodule, as the agent gate does before every tool call, does not load the rest.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .approval import Approval
    from .client import Client
    from .errors import (
        BodyTooLargeError,
        DaemonRunningError,
        DecisionRefusedError,
        ForbiddenError,
        IllegalTransitionError,
        NotAnApproverError,
        NotAuthenticatedError,
        NoteError,
        NotReportableError,
        NotRetryableError,
        Refused,
        Rejected,
        RequestNotFoundError,
        RulesError,
        ServiceError,
        TimedOut,
        TooManyAttemptsError,
        UsageError,
        VaultError,
        VaultNotFoundError,
        WaitTimeoutError,
    )
    from .events import Event, Listener
    from .model import Request, Risk, Status, Transition
    from .policy.pitch import Pitch
    from .policy.rules import Decision, Proposal, RuleMatch, Ruling
    from .vault import Vault

# Each public name and the submodule it lives in.
_HOMES = {
    "TooManyAttemptsError": "errors",
    "ServiceError": "errors",
    "NotAuthenticatedError": "errors",
    "ForbiddenError": "errors",
    "BodyTooLargeError": "errors",
    "Approval": "approval",
    "Client": "client",
    "DaemonRunningError": "errors",
    "DecisionRefusedError": "errors",
    "NotRetryableError": "errors",
    "NotReportableError": "errors",
    "IllegalTransitionError": "errors",
    "NotAnApproverError": "errors",
    "NoteError": "errors",
    "Refused": "errors",
    "Rejected": "errors",
    "RequestNotFoundError": "errors",
    "RulesError": "errors",
    "TimedOut": "errors",
    "UsageError": "errors",
    "VaultError": "errors",
    "VaultNotFoundError": "errors",
    "WaitTimeoutError": "errors",
    "Event": "events",
    "Listener": "events",
    "Request": "model",
    "Pitch": "policy.pitch",
    "Status": "model",
    "Transition": "model",
    "Decision": "policy.rules",
    "Proposal": "policy.rules",
    "Risk": "policy.rules",
    "RuleMatch": "policy.rules",
    "Ruling": "policy.rules",
    "Vault": "vault",
}

__all__ = [
    "Approval",
    "BodyTooLargeError",
    "Client",
    "DaemonRunningError",
    "Decision",
    "DecisionRefusedError",
    "Event",
    "ForbiddenError",
    "IllegalTransitionError",
    "Listener",
    "NotAnApproverError",
    "NotAuthenticatedError",
    "NotReportableError",
    "NotRetryableError",
    "NoteError",
    "Pitch",
    "Proposal",
    "Refused",
    "Rejected",
    "Request",
    "RequestNotFoundError",
    "Risk",
    "RuleMatch",
    "RulesError",
    "Ruling",
    "ServiceError",
    "Status",
    "TimedOut",
    "TooManyAttemptsError",
    "Transition",
    "UsageError",
    "Vault",
    "VaultError",
    "VaultNotFoundError",
    "WaitTimeoutError",
    "__version__",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f".{home}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})
