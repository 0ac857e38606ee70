"""What the MCP tools take and give, as agents read it: a description for each argument, and
the output schema of each answer (the tools return it as structured content, and the same
JSON as text for clients that read only text).

An answer is a request as ``hitl-vault show --json`` prints it, plus what the tools add
(``executor``, ``next``, ``note``). Its schema names the keys an agent acts on and lets
others through, so a field added to the request later reaches agents without a change here.
"""

# No postponed annotations here: pydantic reads these classes at runtime.
from typing import Annotated, Any, Required

from pydantic import ConfigDict, Field, with_config
from typing_extensions import TypedDict

# --- the arguments ---------------------------------------------------------------------

Action = Annotated[
    str,
    Field(
        description="What you want to do, as a short name (letters, digits, '-', '_', '.'), "
        "e.g. deploy or send_email; the vault's rules match on it."
    ),
]
Params = Annotated[
    dict[str, Any],
    Field(
        description='Exactly what would be done, as a JSON object (e.g. {"amount": 120, '
        '"to": "ACME"}); the human may edit it, so do the action with the params the '
        "approved request returns."
    ),
]
Summary = Annotated[str, Field(description="One line the human reads first.")]
Why = Annotated[
    str | None, Field(description="Why you ask: what you are working on and what led here.")
]
Timeout = Annotated[
    str | float | None,
    Field(
        description="How long the request may wait for a decision: 90s, 15m, 1h, 2d, or "
        "seconds as a number (the rules may set a shorter one; default: the rules')."
    ),
]
RequestId = Annotated[
    str, Field(description="The request's id, as request_approval or list_requests gave it.")
]
WaitSeconds = Annotated[
    float,
    Field(
        description="How long to wait for a decision, in seconds: at most 45 (clients cancel "
        "a tool call after about a minute); 0 answers at once."
    ),
]
StatusFilter = Annotated[
    str | None,
    Field(
        description="Only requests with this status: pending, approved, rejected, timed_out, "
        "cancelled, executing, executed or failed (default: all)."
    ),
]
Limit = Annotated[int, Field(description="How many requests, newest first: 1 to 1000.")]
ReportedResult = Annotated[
    str | None,
    Field(description="What the action did, when it worked (the request becomes executed)."),
]
ReportedError = Annotated[
    str | None,
    Field(description="Why the action failed, when it did (the request becomes failed)."),
]

# --- the answers -----------------------------------------------------------------------

_Text = str | None


@with_config(ConfigDict(extra="allow"))
class RequestShape(TypedDict, total=False):
    """A request in the vault, and what its status means for you now (``next``)."""

    id: Required[Annotated[str, Field(description="Pass it to wait_for_approval, get_request.")]]
    status: Required[
        Annotated[
            str,
            Field(
                description="pending (wait), approved (go ahead, or the daemon runs it when "
                "executor is true), rejected, timed_out or cancelled (do not do it), "
                "executing, executed or failed (the vault's daemon ran it)."
            ),
        ]
    ]
    action: Required[str]
    next: Required[
        Annotated[str, Field(description="One sentence: what to do now, given the status.")]
    ]
    executor: Annotated[
        bool, Field(description="true: the vault's daemon runs it once approved; never you.")
    ]
    params: Annotated[
        dict[str, Any], Field(description="The params to act with (as the human left them).")
    ]
    summary: str
    risk: Annotated[str, Field(description="low, medium, high or critical.")]
    rule: Annotated[str, Field(description="The rule that decided, or defaults.")]
    requested_by: str
    created: _Text
    expires: Annotated[_Text, Field(description="When it times out if nobody decides.")]
    decided_by: Annotated[_Text, Field(description="Who decided (a person, or null).")]
    reason: Annotated[_Text, Field(description="Why it was decided so, if given.")]
    decided_at: _Text
    executed_at: _Text
    result: Annotated[_Text, Field(description="What running it gave, once executed.")]
    error: Annotated[_Text, Field(description="Why running it failed, once failed.")]
    context: _Text
    votes: Annotated[
        dict[str, str | None],
        Field(
            description="Each approver's vote: approved, rejected, or null for one who may "
            "still vote (requests that need several approvals)."
        ),
    ]
    stage: Annotated[_Text, Field(description="The stage collecting approvals, if staged.")]
    approvers: Annotated[
        list[str] | None, Field(description="Who may still approve now; null: anyone may.")
    ]
    note: Annotated[_Text, Field(description="The note the human decides in, in the vault.")]
    history: Annotated[list[str], Field(description="What happened to it, a line each.")]


class RequestList(TypedDict):
    """Requests in the vault, newest first."""

    requests: Annotated[
        list[RequestShape], Field(description="Each with its votes and next step (no history).")
    ]
    more: Annotated[bool, Field(description="true: there are more than limit.")]
