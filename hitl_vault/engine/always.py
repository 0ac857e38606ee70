"""The "always" allows made, listed and revoked: ``approve --always`` approves a request and
allows the same call again for a while (see :mod:`hitl_vault.policy.always`).

:class:`Allows` is handed the journal (where the allows are kept, each change in the
service log), the rules in force, this process's Python rules, the clock, the approval
to make, and the folder of the stamp file that tells the gate its copy is stale.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from ..errors import DecisionRefusedError, JournalUnavailableError, UsageError
from ..model import Request, Status
from ..policy.always import SHELL_TOOLS, STAMP_FILE, Allow, covered, place_of, plain, refusal
from ..policy.rules import Policy, Proposal, RuleFunction
from ..store import JournalStore
from ..times import format_ts, utcnow

_APPROVED = (Status.APPROVED, Status.EXECUTING, Status.EXECUTED, Status.FAILED)
LONGEST = timedelta(days=366)


class Allows:
    """The allows of one vault: made with an approval, listed, revoked."""

    def __init__(
        self,
        journal: JournalStore,
        policy: Callable[[], Policy],
        functions: Sequence[RuleFunction],
        now: Callable[[], datetime] = utcnow,
        state: Path | None = None,
    ) -> None:
        self._journal = journal
        self._policy = policy
        self._functions = functions
        self._now = now
        self._state = state

    def in_force(self) -> list[Allow]:
        """The allows that apply now (not revoked, not expired), oldest first."""
        return self._journal.allows(self._clock())

    def check(
        self, request: Request, *, lasting: timedelta, session: bool, prefix: bool
    ) -> dict[str, Any]:
        """Why an allow may not be made from ``request`` as asked (a refusal or a bad
        argument is raised); else the params the allow keeps."""
        if not timedelta(0) < lasting <= LONGEST:
            long = f"{lasting} is not a time an allow may last"
            raise UsageError("--for", long, "use 1m to 366d")
        proposal = Proposal(
            request.action, request.params, request.summary, request.requested_by,
            request.confidence,
        )  # fmt: skip
        policy = self._policy()
        why = refusal(policy, policy.evaluate(proposal, self._functions))
        if why is not None:
            raise DecisionRefusedError(request.id, "", f"no always allow: {why}")
        if session and not request.carried_by_requester:
            raise UsageError(
                "--session",
                f"request {request.id} was not made by an agent's session",
                "leave out --session: the allow then holds for every requester",
            )
        params = covered(request.action, request.params)
        if prefix and (request.action not in SHELL_TOOLS or "command" not in params):
            raise UsageError(
                "--prefix", f"request {request.id} is not a shell command", "leave out --prefix"
            )
        if prefix and not plain(str(params["command"])):
            raise UsageError(
                "--prefix",
                f"the command of {request.id} has shell metacharacters (;|&$`<>...)",
                "leave out --prefix: only this exact command is then allowed",
            )
        return params

    def add(
        self,
        request: Request,
        approve: Callable[[], Request],
        *,
        by: str,
        lasting: timedelta,
        session: bool = False,
        prefix: bool = False,
    ) -> Allow | None:
        """Approve ``request`` (``approve``) and allow the same call until ``lasting`` from
        now. Refused (nothing done) where :meth:`check` refuses; an approval that does not
        stand (a block rule turned it into a rejection) adds no allow and says so. Where
        votes decide (a rule with ``always: true``), a vote that leaves it pending adds no
        allow (None): the one that approves it does."""
        kept = self.check(request, lasting=lasting, session=session, prefix=prefix)
        decided = approve()
        if decided.status is Status.PENDING:
            return None
        if decided.status not in _APPROVED:
            why = f" ({decided.reason})" if decided.reason else ""
            problem = f"it is {decided.status}{why}, not approved: no always allow was added"
            raise DecisionRefusedError(request.id, by, problem)
        now = self._clock()
        cwd, server = place_of(request.action, request.context)
        allow = Allow(
            name=f"always-{request.id}",
            action=request.action,
            params=kept,
            by=decided.decided_by or by,
            created=now,
            until=now + lasting,
            request_id=request.id,
            prefix=prefix,
            session=request.requested_by if session else None,
            cwd=cwd,
            server=server,
        )
        with self._stamping():
            self._journal.add_allow(allow, by)
        return allow

    def revoke(self, name: str, by: str) -> None:
        """Revoke the allow ``name`` (journaled); unknown or revoked already: UsageError."""
        with self._stamping():
            revoked = self._journal.revoke_allow(name, self._clock(), by)
        if not revoked:
            raise UsageError(
                "NAME", f"no allow called {name} stands", "list them with `hitl-vault rules always`"
            )

    def _clock(self) -> datetime:
        return self._now()

    @contextlib.contextmanager
    def _stamping(self) -> Iterator[None]:
        """Around a change of the allows: the stamp file that tells the gate its cached copy
        is stale gets new bytes once the change is made. Its new bytes are written first,
        so a stamp that cannot be written stops the change before it is made (a revoked
        allow the gate's copy still held would let calls through)."""
        if self._state is None:  # a store of the caller's: no gate reads it
            yield
            return
        path = self._state / STAMP_FILE
        tmp = path.with_name(f".{STAMP_FILE}.{secrets.token_hex(4)}")
        try:
            self._state.mkdir(mode=0o700, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(f"{format_ts(self._clock())} {secrets.token_hex(8)}\n".encode())
        except OSError as e:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise JournalUnavailableError(path, f"cannot write it: {e.strerror or e}") from None
        try:
            yield
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        os.replace(tmp, path)
