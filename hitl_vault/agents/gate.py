"""``hitl-vault gate``: decide one agent tool call with the vault's rules, and a human when
they ask.

The gate adds a human; it never removes the agent's own checks. A call the rules allow
gets no decision (the agent's own permission settings apply), unless a matching rule says
``agent_prompt: skip``; an approval is an allow, a block or a rejection a deny.
An allowed call that nothing records costs one read of ``hitl-vault.yaml``: no journal,
no note, no file watcher. Everything else opens the vault's :class:`Engine` (imported only
then): a block is recorded as a rejected request, an ask becomes a pending request the
gate waits on, and what monitor mode or ``min_risk`` let through is recorded as approved.
A request the gate hands to the agent is journaled ``executing``: the agent runs the tool,
never the daemon, and its PostToolUse hook (``hitl-vault posttool``) records ``executed``
or ``failed``; without that report the daemon closes it as ``executed · outcome not
reported`` an hour later.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import VaultError, VaultNotFoundError
from ..model import REQUEST_FOLDERS, RULES_FILE, STATE_DIR
from ..policy.always import consult
from ..policy.rules import Decision, GateRecord, Proposal, RuleMatch
from ..policy.trust import check_vault, raise_for
from .formats import CLAUDE, HookFormat
from .guard import guard, where_of
from .hookio import NO_DECISION, Answer, BadInput, Call, Reply, bad_input
from .policycache import in_force as in_force  # where callers of the gate find it

if TYPE_CHECKING:
    from ..engine import Engine
    from ..model import Origin, Request
    from ..policy.conditions import Where
    from ..policy.rules import Ruling

DEFAULT_WAIT = 9 * 60.0  # below the 600 s hook timeout `hook install` writes
GUARD_RULE = "vault-guard"
RUN_BY_AGENT = "run by the agent: the gate allowed its tool call"
_RETRIES = 1000  # requests one session may make of one identical call (each approval is used once)


def run(vault: str | Path, hook: HookFormat, wait: float, stdin: bytes) -> Reply:
    """(exit code, stdout, stderr) for one hook call in ``hook``'s format: the whole of
    ``hitl-vault gate``.

    Input it cannot read exits 2 (every agent blocks the call then); anything it cannot
    decide (no vault, a broken rules file, a full disk) is a deny naming the problem.
    """
    try:
        call = hook.read_call(stdin)
    except BadInput as e:
        return bad_input(str(e))
    try:
        try:
            answer = decide(Path(vault), call, wait, hook)
        except VaultError as e:
            answer = Answer(False, f"hitl-vault could not decide, so the call is denied: {e}")
        return hook.render(answer, call.params)
    except Exception:  # a bug: still never let the agent's hook fail open
        import traceback

        return bad_input(f"internal error, please report it:\n{traceback.format_exc()}")


def decide(vault: Path, call: Call, wait: float, hook: HookFormat = CLAUDE) -> Answer:
    """What the vault says about ``call``, waiting at most ``wait`` seconds for a human;
    ``hook``: the format the answer goes back in (whether it can take edited input)."""
    deadline = time.monotonic() + wait
    given = Path(vault).expanduser().absolute()
    if not given.is_dir() or not (
        (given / RULES_FILE).exists() or any((given / f).is_dir() for f in REQUEST_FOLDERS)
    ):
        raise VaultNotFoundError(given, "create one with `hitl-vault init PATH` or fix --vault")
    root = given.resolve()
    raise_for(check_vault(root))  # rules anyone may rewrite decide nothing
    policy, allows = in_force(root)
    blocked = guard(call, root, given)
    if blocked is not None:
        if policy.gate_record is GateRecord.ASKS:
            return Answer(False, blocked)
        return _guarded(root, call, blocked)
    where = where_of(call)
    proposal = Proposal(call.tool, call.params, call.summary, call.requested_by, where=where)
    ruling = policy.evaluate(proposal)
    if allows:  # "always" allows, kept with the rules: still no journal opened
        from ..times import utcnow

        ruling = consult(policy, ruling, allows, proposal, utcnow(), call.place)
    decision, _ = policy.applied(ruling)
    skip = skips_prompt(ruling)  # an "always" allow too is no decision, as any allow
    if ruling.decision is Decision.ALLOW and policy.gate_record is not GateRecord.ALL:
        # the common case: nothing recorded, nothing more imported
        return Answer(True, f"allowed by hitl-vault rule {ruling.rule}") if skip else NO_DECISION
    if decision is Decision.BLOCK and policy.gate_record is GateRecord.ASKS:
        return Answer(False, blocked_by(ruling.rule, ruling.reason))
    from ..engine import Engine

    with Engine(root) as engine:
        if decision is Decision.ASK:
            return _ask(engine, call, deadline, hook, where)
        request = submit_call(engine, call, where=where)
        return handed_out(engine, request, call, hook, _marks(engine), skip)


def skips_prompt(ruling: Ruling) -> bool:
    """Whether an allow is answered as one (``agent_prompt: skip`` on a matching rule):
    otherwise what the rules let through gets no decision from the gate."""
    return ruling.decision is Decision.ALLOW and any(m.skip_prompt for m in ruling.matches)


def blocked_by(rule: str, reason: str) -> str:
    return f"blocked by hitl-vault rule {rule}" + (f": {reason}" if reason else "")


def submit_call(
    engine: Engine,
    call: Call,
    source: str | None = None,
    requested_by: str | None = None,
    agent_diff: object = None,
    *,
    here: bool = True,
    where: Where | None = None,
    origin: Origin | None = None,
) -> Request:
    """Record the call as a request, with the diff a file tool makes: read from the file
    ``here``, else the ``agent_diff`` the agent's side sent (labelled as the agent's);
    ``origin``: the agent token that asked through the service."""
    from .diffs import agent_pitch, gate_pitch

    pitch = gate_pitch(call.tool, call.params, call.cwd) if here else agent_pitch(agent_diff)
    return engine.submit(
        call.tool, call.params, summary=call.summary,
        requested_by=requested_by or call.requested_by, carried_by_requester=True,
        source=source, context=call.context, pitch=pitch, where=where, origin=origin,
    )  # fmt: skip


def _guarded(root: Path, call: Call, why: str) -> Answer:
    """Record the guard's deny as a request rejected by the rule ``vault-guard``."""
    from dataclasses import replace

    from ..engine import Engine
    from ..model import Risk
    from ..policy.rules import Mode

    def vault_guard(_: Proposal) -> RuleMatch:
        return RuleMatch(Decision.BLOCK, rule=GUARD_RULE, risk=Risk.CRITICAL, reason=why)

    with Engine(root) as engine:
        engine.policy = replace(engine.policy, mode=Mode.ENFORCE)  # the guard holds in monitor
        engine.functions.append(vault_guard)
        request = submit_call(engine, call, where=where_of(call))
    return Answer(False, f"{why} (recorded as {request.id})")


def _ask(
    engine: Engine, call: Call, deadline: float, hook: HookFormat, where: Where | None
) -> Answer:
    """Find the request an identical earlier call made, or make one; wait for a human."""
    from ..errors import WaitTimeoutError
    from ..model import Status

    request = asked(engine, call, call.key, call.requested_by, where=where)
    if request is None:
        return Answer(False, TOO_MANY)
    if request.status is Status.PENDING:
        try:
            request = engine.wait_sync(request.id, max(0.0, deadline - time.monotonic()))
        except WaitTimeoutError:
            shown = f" ({request.path.relative_to(engine.root)})" if request.path else ""
            return Answer(False, waiting(request, shown))
    return handed_out(engine, request, call, hook, _marks(engine))


def _marks(engine: Engine) -> Path:
    from .posttool import HANDED

    return engine.root / STATE_DIR / HANDED


TOO_MANY = f"{_RETRIES} identical calls in this session; start a new session"


def waiting(request: Request, where: str = "") -> str:
    """What the agent is told while its request waits for a human."""
    return (
        f"waiting for a human to approve hitl-vault request {request.id}{where}. "
        "It stays pending: once it is approved, make exactly the same call again "
        "and it will be allowed."
    )


def asked(
    engine: Engine,
    call: Call,
    key: str,
    requested_by: str,
    agent_diff: object = None,
    *,
    here: bool = True,
    where: Where | None = None,
    origin: Origin | None = None,
) -> Request | None:
    """The request that ``call`` (an identical retry: the same ``key``) made and that is
    still to be used, or a new one; None once the session made too many.

    An approval is handed out once: a request already handed out, timed out or
    cancelled sends the next identical call to a new request."""
    from ..errors import DuplicateError
    from ..model import Status

    finished = (
        Status.TIMED_OUT,
        Status.CANCELLED,
        Status.EXECUTING,
        Status.EXECUTED,
        Status.FAILED,
    )
    for n in range(_RETRIES):
        source = f"gate:{key}:{n}"
        found = engine.journal.proposal(source)
        if found is None:
            try:
                request = submit_call(
                    engine, call, source, requested_by, agent_diff, here=here, where=where,
                    origin=origin,
                )  # fmt: skip
            except DuplicateError:  # an identical call made it a moment ago
                found = engine.journal.proposal(source)
                if found is None:
                    raise
        if found is not None:
            request = engine.refresh(found)
        if request.status not in finished:
            return request
    return None


def handed_out(
    engine: Engine,
    request: Request,
    call: Call,
    hook: HookFormat,
    marks: Path | None = None,
    skip: bool = False,
) -> Answer:
    """Allow an approved request (handing it to the agent, once: ``executing`` until its
    outcome is reported), deny anything else. ``marks``: the folder where the agent's
    PostToolUse hook (:mod:`hitl_vault.agents.posttool`) finds which request this call is.

    What a human approved is an allow; what the rules let through (``record: all``,
    monitor mode, ``min_risk``) is no decision, unless ``skip`` (``agent_prompt: skip``)."""
    from ..errors import NotRunnableError
    from ..model import Status

    if request.status is Status.REJECTED:
        if not request.decided_by:  # a block rule, at submit
            return Answer(False, f"{blocked_by(request.rule, request.reason or '')} ({request.id})")
        why = f": {request.reason}" if request.reason else ""
        return Answer(
            False, f"rejected by {request.decided_by}{why} (hitl-vault request {request.id})"
        )
    if request.status is not Status.APPROVED:
        return Answer(False, f"hitl-vault request {request.id} is {request.status}; not run")
    from ..engine.execution import HANDED_OUT

    params = dict(request.params)
    edited = params if params != call.params else None
    cannot = hook.cannot_update(call.params, edited)
    try:
        started = engine.start_execution(
            request.id, by=request.requested_by, params=params,
            details=() if cannot else (HANDED_OUT,),
        )  # fmt: skip
    except NotRunnableError as e:
        return Answer(False, str(e))
    if started is None:
        return Answer(False, f"hitl-vault request {request.id} was already handed out; ask again")
    if started.to_status is Status.REJECTED:
        engine.show_in_note(request.id, engine.now())
        return Answer(False, f"{started.reason} (hitl-vault request {request.id})")
    if cannot:
        engine.finish_execution(request.id, False, error=f"not run: {cannot}")
    elif marks is not None:  # the agent's PostToolUse hook reports how it ended
        from .posttool import key_of, mark

        mark(marks, [call.key, key_of(call, edited)], request.id)
    engine.show_in_note(request.id, engine.now())
    return Answer(True, _allowed_because(request), edited, decided=bool(request.decided_by) or skip)


def _allowed_because(request: Request) -> str:
    if request.decided_by:
        why = f"approved by {request.decided_by}"
    else:  # by the rules: record: all, monitor mode, min_risk
        why = f"allowed ({request.reason})" if request.reason else "allowed"
    return f"{why} (hitl-vault request {request.id})"
