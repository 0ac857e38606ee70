"""Rules and matching proposals against them.

Pure functions and frozen dataclasses: :meth:`Policy.evaluate` says what the
rules decide about a :class:`Proposal`. Reading ``hitl-vault.yaml`` into a
:class:`Policy` is :mod:`hitl_vault.policy.rulesfile`'s job. The one way out is a
``python:`` rule, which calls the function it names (:mod:`hitl_vault.policy.pyrules`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from ..errors import RulesError
from ..model import Risk
from .conditions import ActionMatcher, Condition, PathCondition, Where
from .confidence import confidence_holds
from .modes import GateRecord as GateRecord
from .modes import Mode as Mode
from .quorum import Part, Plan, RequireReason, Stage, combine, common

# --- the nouns: decisions, risks, proposals, what rules say -----------------------


class Decision(StrEnum):
    """What the rules say about a proposed action; ordered allow < ask < block."""

    ALLOW = "allow"
    ASK = "ask"
    BLOCK = "block"

    @property
    def rank(self) -> int:
        return list(Decision).index(self)


DEFAULT_RISK = Risk.MEDIUM


@dataclass(frozen=True)
class Proposal:
    """An action somebody wants to take, before any rule has looked at it."""

    action: str
    params: Mapping[str, Any]
    summary: str = ""
    requested_by: str = ""
    confidence: float | None = None  # the requester's own, 0 to 1 (see policy.confidence)
    where: Where | None = None  # the project and the paths named, as the gate resolved them


@dataclass(frozen=True)
class RuleMatch:
    """One rule that matched a proposal, and what it says.

    A callable rule may return one of these (or just a :class:`Decision`).
    """

    decision: Decision
    rule: str = ""
    risk: Risk | None = None
    timeout: timedelta | None = None
    approvers: frozenset[str] | None = None
    editable: bool = True
    reason: str = ""
    explanation: str = ""
    remind_before: timedelta | None = None  # one reminder this long before it expires
    approval: Part = field(
        default_factory=Part
    )  # quorum, stages, escalation... (``approvers`` is above)
    # It matched only because text that reads as a number was compared as that number
    # (an ask or block rule): it may make the decision stricter, never let min_risk allow it.
    by_numeric_text: bool = False
    skip_prompt: bool = False  # agent_prompt: skip: the gate answers allow, not no decision

    @property
    def part(self) -> Part:
        """What this match says about who decides, ``approvers`` included."""
        return replace(self.approval, approvers=self.approvers)


@dataclass(frozen=True)
class ActionSpec:
    """How the daemon carries out an approved action (``actions:`` in hitl-vault.yaml).

    Exactly one of ``run`` (an argv, never a shell string) and ``python``
    (``"package.module:function"``) is set.
    """

    name: str
    run: tuple[str, ...] | None = None
    python: str | None = None
    timeout: timedelta = timedelta(seconds=60)
    idempotent: bool = False


# A rule written in Python: it sees the proposal and returns a decision or None.
RuleFunction = Callable[[Proposal], "Decision | RuleMatch | str | None"]


@dataclass(frozen=True)
class Ruling:
    """The combined verdict of every matching rule (most restrictive wins)."""

    decision: Decision
    risk: Risk
    timeout: timedelta | None
    rule: str
    reason: str
    approvers: frozenset[str] | None
    editable: bool
    matches: tuple[RuleMatch, ...]
    remind_before: timedelta | None = None  # one reminder this long before expiry
    plan: Plan = field(default_factory=Plan)  # who decides: approvers, quorum, stages, escalation
    # a match held only through text read as a number, or through the requester's own
    # confidence: either may make a decision stricter, never let min_risk allow it
    by_numeric_text: bool = False

    @property
    def explanation(self) -> str:
        """One sentence per matching rule, or what the default did."""
        lines = [m.explanation for m in self.matches if m.explanation]
        return " ".join(lines)


# --- rules, policy and evaluation ----------------------------------------------

_VERB = {Decision.ALLOW: "is allowed", Decision.ASK: "needs approval", Decision.BLOCK: "is blocked"}


def _sentence(action: str, decision: Decision, conditions: str = "", reason: str = "") -> str:
    """``payment with amount >= 500 needs approval.`` / ``shell is blocked: <reason>.``"""
    text = action + (f" with {conditions}" if conditions else "") + " " + _VERB[decision]
    reason = reason.strip()
    if not reason:
        return text + "."
    return f"{text}: {reason}" + ("" if reason.endswith((".", "!", "?")) else ".")


@dataclass(frozen=True)
class Defaults:
    """What applies when no rule says otherwise."""

    decision: Decision = Decision.ASK  # when no rule matches: fail closed
    timeout: timedelta = timedelta(hours=24)  # how long a request may stay pending
    quiet: timedelta = timedelta(seconds=2)  # how long a note must be untouched before a rewrite
    remind_before: timedelta | None = None  # one reminder this long before expiry (None: none)
    min_risk: Risk | None = None  # an ask below this risk is allowed (and recorded as such)
    # Who decides, for every request (combined with what the matching rules say).
    approvers: frozenset[str] | None = None
    quorum: int | None = None
    prevent_self_approval: bool = False
    require_reason: RequireReason = RequireReason.NONE
    escalate_after: timedelta | None = None
    escalate_to: frozenset[str] = frozenset()
    authenticated: frozenset[str] | None = None  # the channels an approval must come through

    @property
    def part(self) -> Part:
        return Part(
            self.approvers, self.quorum, (), self.prevent_self_approval, self.require_reason,
            self.escalate_after, self.escalate_to, self.authenticated,
        )  # fmt: skip


@dataclass(frozen=True)
class Rule:
    """One entry of ``rules:``. ``action`` None matches every action; ``line`` is 1-based."""

    name: str
    decision: Decision
    action: ActionMatcher | None = None
    params: Mapping[str, Condition] = field(default_factory=lambda: MappingProxyType({}))
    risk: Risk | None = None
    timeout: timedelta | None = None
    approvers: frozenset[str] | None = None
    editable: bool = True
    reason: str = ""
    remind_before: timedelta | None = None
    quorum: int | None = None
    stages: tuple[Stage, ...] = ()
    prevent_self_approval: bool = False
    require_reason: RequireReason = RequireReason.NONE
    escalate_after: timedelta | None = None
    escalate_to: frozenset[str] = frozenset()
    authenticated: frozenset[str] | None = None
    confidence: Condition | None = None  # only to ask or block (see policy.confidence)
    path: PathCondition | None = None  # where the call's paths land (a gate call only)
    agent_prompt: str = "keep"  # "skip": an allow the gate answers as allow, not no decision
    always: bool = False  # "approve --always" allowed despite a quorum, stages, authenticated
    line: int = 0
    # ``python: module:function``: it decides (``decision`` is then only a placeholder), on
    # the proposals ``action`` and ``params`` let through; ``on_error`` when it cannot.
    python: RuleFunction | None = None
    on_error: Decision = Decision.ASK

    def match(self, proposal: Proposal) -> RuleMatch | None:
        """What this rule says about the proposal, or None when it does not apply."""
        if self.python is not None:
            return self._ask_python(proposal, self.python)
        if self.action is not None and not self.action.matches(proposal.action):
            return None
        if not confidence_holds(self.confidence, proposal.confidence):
            return None
        if self.path is not None and not self.path.holds(proposal.where):
            return None
        allowing = self.decision is Decision.ALLOW  # numbers as text only make it stricter
        given = proposal.params
        for name, condition in self.params.items():
            if name not in given or not condition.holds(given[name], allowing):
                return None
        by_text = not allowing and not all(c.holds(given[n], True) for n, c in self.params.items())
        by_text = by_text or self.confidence is not None  # asserted: it too only makes stricter
        said = [c.describe(n) for n, c in self.params.items()]
        if self.confidence is not None:
            said.append(self.confidence.describe("confidence"))
        conditions = " and ".join(said + ([self.path.describe()] if self.path else []))
        return RuleMatch(
            decision=self.decision,
            rule=self.name,
            risk=self.risk,
            timeout=self.timeout,
            approvers=self.approvers,
            editable=self.editable,
            reason=self.reason,
            explanation=_sentence(proposal.action, self.decision, conditions, self.reason),
            remind_before=self.remind_before,
            approval=Part(
                None, self.quorum, self.stages, self.prevent_self_approval, self.require_reason,
                self.escalate_after, self.escalate_to, self.authenticated,
            ),
            by_numeric_text=by_text,
            skip_prompt=self.agent_prompt == "skip" and allowing,
        )  # fmt: skip

    def _ask_python(self, proposal: Proposal, function: RuleFunction) -> RuleMatch | None:
        """What the rule's function says, on the proposals its other keys let through: a
        plain decision takes the rule's other keys (as if the rule had said it); one that
        raises, cannot be loaded or answers nonsense gives ``on_error``."""
        static = replace(self, python=None)
        if static.match(proposal) is None:
            return None
        try:
            result = _result(function, proposal, self.name)
            if result is None:
                return None
            if isinstance(result, str) and result in set(Decision):
                return replace(static, decision=Decision(result)).match(proposal)
            return _as_match(result, self.name, proposal)
        except RulesError as e:
            reason = f"the python rule {self.name} failed: {e.problem} ({e.fix})"
            failed = replace(static, decision=self.on_error, reason=reason).match(proposal)
            # A rule that could not say is treated as the worst case: min_risk never allows it.
            return None if failed is None else replace(failed, risk=Risk.CRITICAL)


_RETURN_FIX = (
    'a rule function must return None (no opinion), a Decision, "allow", "ask" or "block", '
    "or a RuleMatch"
)


def _function_name(fn: Any) -> str:
    return str(getattr(fn, "__name__", None) or type(fn).__name__)


def _approvers(matches: Sequence[RuleMatch]) -> frozenset[str] | None:
    """Who may decide when all of ``matches`` apply: the names every set of them allows."""
    approvers: frozenset[str] | None = None
    for m in matches:
        if m.approvers is not None:
            approvers = m.approvers if approvers is None else common(approvers, m.approvers)
    return approvers


def pinned(matches: Sequence[RuleMatch]) -> dict[str, Any]:
    """What Python rules required at submit, to keep with the request: the daemon and the
    CLI do not run the submitter's code, yet must enforce its approvers and
    ``editable: false`` (``approvers``, ``fixed`` and the ``rules`` that spoke; {} if none)."""
    found: dict[str, Any] = {}
    approvers = _approvers(matches)
    if approvers is not None:
        found["approvers"] = sorted(approvers)
    fixed = [m.rule for m in matches if not m.editable]
    if fixed:
        found["fixed"] = fixed
    if found:
        found["rules"] = [m.rule for m in matches]
    return found


def code_matches(proposal: Proposal, functions: Sequence[RuleFunction]) -> list[RuleMatch]:
    """What the Python rules registered in this process say about a proposal."""
    return [m for fn in functions if (m := _call(fn, proposal)) is not None]


def _call(fn: RuleFunction, proposal: Proposal) -> RuleMatch | None:
    """Run a Python rule; anything but a clear answer raises (the vault fails closed)."""
    name = _function_name(fn)
    result = _result(fn, proposal, name)
    return None if result is None else _as_match(result, name, proposal)


def _result(fn: RuleFunction, proposal: Proposal, name: str) -> Any:
    """What ``fn`` returns; RulesError when it raises (a RulesError of its own passes)."""
    try:
        return fn(proposal)
    except RulesError:
        raise
    except Exception as e:
        where, fix = f"rule function {name}", "fix it, or have it return a decision instead"
        raise RulesError(where, f"raised {type(e).__name__}: {e}", fix) from e


def _as_match(result: Any, name: str, proposal: Proposal) -> RuleMatch:
    """A rule function's answer as a RuleMatch named ``name`` unless it names itself."""
    where = f"rule function {name}"
    if isinstance(result, RuleMatch):
        approvers, timeout = result.approvers, result.timeout
        try:
            if not (approvers is None or isinstance(approvers, frozenset | set)) or not (
                timeout is None or isinstance(timeout, timedelta)
            ):
                raise TypeError("approvers must be a set and timeout a timedelta")
            match = replace(
                result,
                decision=Decision(result.decision),
                risk=None if result.risk is None else Risk(result.risk),
                approvers=None if approvers is None else frozenset(approvers),
                rule=result.rule or name,
            )
        except (ValueError, TypeError):
            problem = f"returned a RuleMatch with a bad field: {result!r}"
            raise RulesError(where, problem, _RETURN_FIX) from None
    elif isinstance(result, str) and result in set(Decision):
        match = RuleMatch(Decision(result), rule=name)
    else:
        raise RulesError(where, f"returned {result!r}", _RETURN_FIX)
    if not match.explanation:
        text = _sentence(proposal.action, match.decision, reason=match.reason)
        match = replace(match, explanation=text)
    return match


@dataclass(frozen=True)
class Policy:
    """Everything ``hitl-vault.yaml`` says: defaults, rules in file order, executors."""

    defaults: Defaults
    rules: tuple[Rule, ...]
    actions: Mapping[str, ActionSpec]
    source: str
    mode: Mode = Mode.ENFORCE
    gate_record: GateRecord = GateRecord.BLOCKS

    def applied(self, ruling: Ruling) -> tuple[Decision, str]:
        """The decision that takes effect for ``ruling`` under ``mode`` and
        ``defaults.min_risk``, and why it differs from the rules' ("" when it does not):
        monitor mode allows what would ask or block, and an ask below ``min_risk`` is
        allowed, unless a rule matched only by reading text as a number (``" 4.99e2 "``):
        such text may only make a decision stricter, and the rules would not match it so
        were they all allowing (see :mod:`hitl_vault.policy.conditions`)."""
        decision = ruling.decision
        if decision is Decision.ALLOW:
            return decision, ""
        would = "would ask" if decision is Decision.ASK else "would block"
        if self.mode is Mode.MONITOR:
            why = f": {ruling.reason}" if ruling.reason and decision is Decision.BLOCK else ""
            return Decision.ALLOW, f"{would} (monitor mode){why}"
        floor = self.defaults.min_risk
        below = floor is not None and ruling.risk.rank < floor.rank and not ruling.by_numeric_text
        # never the fail-closed default (no rule matched), nor where the rules name who decides
        if decision is Decision.ASK and below and ruling.matches and not ruling.plan.people:
            return Decision.ALLOW, f"would ask (risk {ruling.risk} is below min_risk {floor})"
        return decision, ""

    def evaluate(
        self,
        proposal: Proposal,
        functions: Sequence[RuleFunction] = (),
        *,
        code: Sequence[RuleMatch] | None = None,
    ) -> Ruling:
        """Combine every matching rule: the most restrictive decision wins.

        Risk is the highest stated, timeout the shortest stated (None: the caller
        applies ``defaults.timeout``), approvers the intersection of the sets
        stated, and a single ``editable: false`` makes the request not editable.
        ``code``: what the Python rules said already (:func:`code_matches`), instead of
        calling ``functions`` again.
        """
        matches = [m for rule in self.rules if (m := rule.match(proposal)) is not None]
        matches += code_matches(proposal, functions) if code is None else code
        if not matches:
            return Ruling(
                decision=self.defaults.decision,
                risk=DEFAULT_RISK,
                timeout=None,
                rule="defaults",
                reason="",
                approvers=None,
                editable=True,
                matches=(),
                remind_before=self.defaults.remind_before,
                plan=combine([self.defaults.part]),
            )
        decision = max((m.decision for m in matches), key=lambda d: d.rank)
        winner = next(m for m in matches if m.decision is decision)
        risks = [m.risk for m in matches if m.risk is not None]
        timeouts = [m.timeout for m in matches if m.timeout is not None]
        reminders = [m.remind_before for m in matches if m.remind_before is not None]
        approvers = _approvers(matches)
        return Ruling(
            decision=decision,
            risk=max(risks, key=lambda r: r.rank) if risks else DEFAULT_RISK,
            timeout=min(timeouts) if timeouts else None,
            rule=winner.rule,
            reason=winner.reason,
            approvers=approvers,
            editable=all(m.editable for m in matches),
            matches=tuple(matches),
            remind_before=min(reminders) if reminders else self.defaults.remind_before,
            plan=self.plan_of(matches),
            by_numeric_text=any(m.by_numeric_text for m in matches),
        )

    def plan_of(
        self,
        matches: Sequence[RuleMatch],
        pinned: Sequence[str] | None = None,
        authenticated: Sequence[str] | None = None,
    ) -> Plan:
        """Who decides when all of ``matches`` apply (the defaults too, the approvers the
        submitter's Python rules pinned, and the ``authenticated`` channels pinned at
        submit): see :func:`hitl_vault.policy.quorum.combine`."""
        parts = [self.defaults.part, *(m.part for m in matches)]
        if pinned is not None:
            parts.append(Part(approvers=frozenset(pinned)))
        if authenticated is not None:
            parts.append(Part(authenticated=frozenset(authenticated)))
        return combine(parts)
