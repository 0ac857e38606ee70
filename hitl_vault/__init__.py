"""hitl-vault: a human-in-the-loop approval gate that lives in a folder of Markdown notes."""

from .asking import Approval
from .errors import (
    DaemonRunningError,
    IllegalTransitionError,
    NotAnApproverError,
    NoteError,
    NotRetryableError,
    Refused,
    Rejected,
    RequestNotFoundError,
    RulesError,
    TimedOut,
    UsageError,
    VaultError,
    VaultNotFoundError,
    WaitTimeoutError,
)
from .events import Event, Listener
from .model import Request, Status, Transition
from .rules import Decision, Proposal, Risk, RuleMatch, Ruling
from .vault import Vault

__version__ = "0.1.0"

__all__ = [
    "Approval",
    "DaemonRunningError",
    "Decision",
    "Event",
    "IllegalTransitionError",
    "Listener",
    "NotAnApproverError",
    "NotRetryableError",
    "NoteError",
    "Proposal",
    "Refused",
    "Rejected",
    "Request",
    "RequestNotFoundError",
    "Risk",
    "RuleMatch",
    "RulesError",
    "Ruling",
    "Status",
    "TimedOut",
    "Transition",
    "UsageError",
    "Vault",
    "VaultError",
    "VaultNotFoundError",
    "WaitTimeoutError",
    "__version__",
]
