"""The service layer: every operation the HTTP API, MCP over HTTP and the Unix socket offer,
for a principal (who a credential, a session or a socket peer proved to be).

What each may do is decided here, once, for every door:

* An agent asks: its requests have its name as ``requested_by`` (it cannot say otherwise)
  and record the token that asked (its id) and the session and client it said it was in,
  in fields of their own; only for the actions its credential lists (if it lists any). It
  sees, lists, waits on and cancels its own requests only: those a token of its name asked
  for, never one made another way that merely names it; another's is "not found" (404),
  not "forbidden", so an agent cannot learn which ids exist.
* An approver (a person) sees every request and decides them; the decision is recorded
  with its proof (``by alice via api``) and counts exactly as ``approve --by alice`` would.

The methods are plain calls (the journal is SQLite: they block for a moment); the HTTP
app runs them on the service's own threads (:meth:`Service.call`), and ``wait`` is async:
a wait holds no thread (see :mod:`~hitl_vault.serve.waiters`).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from ..access.failures import FailureLog
from ..chain import decision_entry
from ..errors import ForbiddenError, IllegalTransitionError, RequestNotFoundError
from ..identity import API, Principal, Proof, Role, proof_in, same_name
from ..model import Origin, Request, Status, Transition
from ..params import params_sha
from ..policy.pitch import Pitch
from ..shapes import listed_json, request_json
from ..times import utcnow
from .limits import FailedSignIns
from .requesters import shared
from .waiters import Waiters, following_journal
from .workers import Workers

if TYPE_CHECKING:
    from ..daemon.leader import Leadership
    from ..vault import Vault

log = logging.getLogger(__name__)

T = TypeVar("T")

# Threads that run the service's journal work (a wait holds none of them).
WORKERS = 8
# How often the failed sign-ins whose minute is over are written to the service log.
FAILURES_FLUSHED_EVERY = 5.0


class Service:
    """The vault as a service: what a principal may ask of it, decided in one place."""

    def __init__(self, vault: Vault, *, workers: int = WORKERS) -> None:
        self.vault = vault
        self.engine = vault.engine
        self.waiters = Waiters()
        self.sign_ins = FailedSignIns(time.monotonic)  # who gets 429
        # The service log's summaries of failed sign-ins, at most one a minute per address.
        self.failures = FailureLog(vault.engine.journal)
        # Set by ``serve`` when the daemon runs in this process: it publishes every write,
        # whoever made it, so the waits need no watch of their own on the journal.
        self.daemon_here = False
        self.leadership: Leadership | None = None  # set by ``serve`` on a shared journal
        self.closing = False  # stopping: the open waits answer now, as things stand
        self._workers = workers
        self._executor: Workers | None = None
        self._following: AbstractContextManager[None] | None = None
        self._summaries: asyncio.Task[None] | None = None

    def health(self) -> dict[str, Any]:
        """Whether this host does the owner's work (leader) or another does (follower), and
        the term; on a journal with no lease (SQLite: its lock is the lease) no term."""
        if self.leadership is not None:
            return {**self.leadership.health(), "lease": "database"}
        return {"role": "leader" if self.daemon_here else "follower", "term": None, "lease": "lock"}

    # --- lifetime ---------------------------------------------------------------------

    async def start(self) -> None:
        """Start serving on the running event loop (the app's lifespan calls it)."""
        self.waiters.bind(asyncio.get_running_loop())
        self.engine.listen(self.waiters.heard)
        self._executor = Workers(self._workers, "hitl-vault-api")
        self._summaries = asyncio.create_task(self._summarising())
        if not self.daemon_here:
            journal = self.engine.journal
            self._following = following_journal(journal.watch, self.engine.publish)
            self._following.__enter__()

    def close(self) -> None:
        """The service is stopping: every open wait answers now (on the event loop)."""
        self.closing = True
        self.waiters.poke_all()

    async def stop(self) -> None:
        """Stop: the open waits are woken (their requests re-read) and the threads end."""
        self.engine.events.remove(self.waiters.heard)
        self.close()
        if self._following is not None:
            following, self._following = self._following, None
            await asyncio.to_thread(following.__exit__, None, None, None)
        if self._summaries is not None:
            self._summaries.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._summaries
            self._summaries = None
            await asyncio.to_thread(self._flush_failures, True)
        if self._executor is not None:
            executor, self._executor = self._executor, None
            await asyncio.to_thread(executor.shutdown)

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` on one of the service's threads (it may block on the
        journal), awaited on the event loop."""
        if self._executor is None:
            raise RuntimeError("the service is not started (await Service.start() first)")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))

    # --- who is asking ----------------------------------------------------------------

    def authenticate(self, secret: str, client: str) -> Principal | None:
        """The principal a bearer token proves, or None (unknown, revoked, expired, a
        disabled person). ``client`` is where it came from (an address): a failure counts
        against it, and a door answers failures from an address refused after too many
        (:meth:`refused_for`) with 429 instead of 401. A valid token is never refused,
        wherever it comes from: behind a proxy every agent shares one address, and a
        guesser's failures there must not lock them out."""
        from ..access.tokens import authenticate  # the access room, loaded with the service

        credential = None
        if 0 < len(secret) <= 512 and secret.isascii() and secret.isprintable():
            credential = authenticate(self.engine.journal, secret, utcnow())
        if credential is None:
            self.failed_attempt(client)
            return None
        return Principal(
            name=credential.name,
            role=Role(credential.role),
            via=API,
            credential=credential.id,
            actions=credential.actions,
            client=client,
        )

    def failed_attempt(self, client: str) -> None:
        """One more failed sign-in from ``client`` (a bad token, a forged decision link):
        counted for :meth:`refused_for`, and summarised in the service log (never what was
        sent)."""
        if self.sign_ins.failed(client):
            log.warning("%s: too many failed sign-ins; its failures get 429 for now", client)
        if self.failures.failed(client, utcnow()):  # its first, or a minute since
            self._flush_failures()

    def check_agent(self, who: Principal) -> None:
        """:class:`ForbiddenError` for an agent token named as another channel's requests
        are (``inbox``, ``mcp:...``, the OS user: :mod:`.requesters`): it would ask in
        that channel's name."""
        why = shared(who.name) if who.role is Role.AGENT else None
        if why is not None:
            raise ForbiddenError(
                f"the agent token {who.name!r} is refused: {why}, so its requests would pass "
                "for that channel's; give the agent a token under a name of its own "
                "(hitl-vault token add NAME --role agent) and revoke this one"
            )

    def executes(self, action: str) -> bool:
        """Whether the daemon runs ``action`` itself once approved (an ``actions:`` entry)."""
        return action in self.engine.policy.actions

    def refused_for(self, client: str) -> float:
        """Seconds ``client``'s failed sign-ins are still answered 429 rather than 401 (0:
        not refused). Read it before :meth:`authenticate`, so the failure that gets an
        address refused is still a 401."""
        return self.sign_ins.refused_for(client)

    def _flush_failures(self, everything: bool = False) -> None:
        """The failed sign-ins due in the service log go there (``everything``: all of
        them, as the service stops): an address and a count, never a token."""
        try:
            for entry in self.failures.flush(utcnow(), everything=everything):
                log.info("%s from %s", entry.details[0], entry.subject)
        except Exception:  # the refusal stands either way; the log says why it is not kept
            log.exception("could not record failed sign-ins")

    async def _summarising(self) -> None:
        """Now and then, the failed sign-ins whose minute is over go to the service log."""
        while True:
            await asyncio.sleep(FAILURES_FLUSHED_EVERY)
            await self.call(self._flush_failures)

    # --- requests ---------------------------------------------------------------------

    def submit(
        self,
        who: Principal,
        action: str,
        params: Mapping[str, Any] | None = None,
        *,
        summary: str = "",
        context: str | None = None,
        timeout: str | float | None = None,
        pitch: Pitch | None = None,
    ) -> Request:
        """A new request in ``who``'s name (an agent's only; an approver answers, never asks);
        ``pitch``: its reasoning, confidence, alternatives and risk factors."""
        self.check_agent(who)
        if who.role is not Role.AGENT:
            raise ForbiddenError(
                f"{who.name} holds an approver token, which decides requests; "
                "submit with an agent token (`hitl-vault token add NAME --role agent`)"
            )
        if not who.may_ask(action):
            allowed = ", ".join(who.actions or ())
            raise ForbiddenError(
                f"action {action!r}: the token of {who.name} may ask for {allowed} only "
                "(ask the service's owner for a token with --actions that include it)"
            )
        return self.engine.submit(
            action, params, summary=summary, timeout=timeout, requested_by=who.name,
            context=context, pitch=pitch, origin=_origin(who), credential=who.recorded,
        )  # fmt: skip

    def get(self, who: Principal, request_id: str) -> Request:
        """One request with its history (:class:`RequestNotFoundError` for an id that is
        not there, or that is another agent's)."""
        self.check_agent(who)
        request = self.engine.journal.get(request_id) if _plausible(request_id) else None
        if request is None or not _sees(who, request):
            raise RequestNotFoundError(request_id)
        return self.engine.get(request_id)

    def list(
        self, who: Principal, status: Status | str | None = None, limit: int | None = None
    ) -> builtins.list[Request]:
        """Requests newest first (an agent's own only: the store picks them), without their
        history."""
        if who.role is Role.APPROVER:
            return self.engine.list(status, limit)
        self.check_agent(who)
        wanted = Status.named(status) if status is not None else None
        return self.engine.journal.requests(wanted, limit, agent=who.name)  # paths: relative

    async def wait(
        self, who: Principal, request_id: str, seconds: float, since: Status | None = None
    ) -> Request:
        """The request once its status is other than ``since`` (None: than it was), or
        after ``seconds`` (then as it is): at once if it is in a final status, or already
        other than ``since``. Wakes on the journal's events only."""
        return await self._waited(who, request_id, seconds, self.engine.get, since)

    async def wait_shown(
        self, who: Principal, request_id: str, seconds: float, since: Status | None = None
    ) -> dict[str, Any]:
        """:meth:`wait`, the request as :meth:`shown` gives it to ``who`` (read once, when
        it is over)."""
        then = lambda i: self._shown(i, who)  # noqa: E731
        return await self._waited(who, request_id, seconds, then, since)

    async def _waited(
        self,
        who: Principal,
        request_id: str,
        seconds: float,
        then: Callable[[str], T],
        since: Status | None = None,
    ) -> T:
        now = (await self.call(self.get, who, request_id)).status
        status = now if since is None else since
        if now.is_final or seconds <= 0 or now is not status:
            return await self.call(then, request_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        status_of = self.engine.journal.status_of

        def moved() -> tuple[bool, T | None]:  # on the thread that published, or a worker
            return (False, None) if status_of(request_id) is status else (True, then(request_id))

        with self.waiters.waiting(request_id, moved) as wait:
            done, result = await self.call(moved)  # (a move meanwhile: answered by both)
            while not done:
                left = deadline - loop.time()
                if left <= 0 or self.closing:
                    return await self.call(then, request_id)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wait.wake.wait(), left)
                wait.wake.clear()
                done, result = wait.answer()
                if not done and loop.time() < deadline:  # woken without it: events lost
                    done, result = await self.call(moved)
            return result  # type: ignore[return-value]

    def decide(
        self,
        who: Principal,
        request_id: str,
        approve: bool,
        reason: str = "",
        expect: str | None = None,
        *,
        spend: Callable[[], None] | None = None,
    ) -> Request:
        """``who``'s approval or rejection (their vote, where several are needed), proven:
        the history says ``by NAME via api`` (``via link`` for a decision link's). Approvers
        only. ``spend``: called inside the decision's transaction (see :meth:`Engine.approve`);
        a decision link marks itself spent there."""
        if who.role is not Role.APPROVER:
            raise ForbiddenError(
                f"{who.name} holds an agent token, which asks but never decides "
                "(a person decides, with an approver token of their own)"
            )
        self.get(who, request_id)
        proof = Proof(who.name, who.via, who.client, who.recorded)
        if approve:
            return self.engine.approve(
                request_id, reason=reason, expect=expect, proof=proof, spend=spend
            )
        return self.engine.reject(request_id, reason=reason, proof=proof, spend=spend)

    def cancel(self, who: Principal, request_id: str) -> Request:
        """Withdraw a request: an agent its own pending ones; an approver a pending one, or
        an approved one whose action has not started."""
        request = self.get(who, request_id)
        if who.role is Role.AGENT and request.status is not Status.PENDING:
            raise IllegalTransitionError(request_id, request.status, Status.CANCELLED)
        return self.engine.cancel(request_id, who.name, credential=who.recorded)

    def done(
        self, who: Principal, request_id: str, result: str | None, error: str | None
    ) -> Request:
        """How an approved request without an executor ended (:meth:`Vault.done`): an
        agent reports on its own requests, an approver on any; ``by`` is the token's name."""
        self.get(who, request_id)
        return self.engine.done(request_id, result, error, by=who.name, credential=who.recorded)

    # --- what a client is shown -------------------------------------------------------

    def shown(self, request: Request, who: Principal | None = None) -> dict[str, Any]:
        """The request exactly as ``hitl-vault show --json`` prints it (read afresh), as
        ``who`` may see it: an agent is not shown where the service keeps its notes
        (``path`` is relative to the vault), the uid that decided, or the address a
        person decided from (see :func:`_as_seen`); ``None``: everything, as a person."""
        return self._shown(request.id, who)

    def shown_new(self, request: Request, who: Principal | None = None) -> dict[str, Any]:
        """:meth:`shown` for a request :meth:`submit` just returned (it is what the journal
        holds): its params are those it was asked with, and the note it was just written
        to shows them, so nothing is read again."""
        params = dict(request.params)
        data = {
            **request_json(self._as_seen(request, who), self.engine.votes(request)),
            "params": params,
            "params_sha": params_sha(params),
        }
        return self._with_recorder(data, request.id, who)

    def _shown(self, request_id: str, who: Principal | None = None) -> dict[str, Any]:
        request = self.engine.get(request_id)
        params, sha, edited = self.engine.params_to_run(request.id)
        data = {
            **request_json(self._as_seen(request, who), self.engine.votes(request)),
            "params": params,
            "params_sha": sha,
        }
        if edited:
            data["edited_in_note"] = edited
        return self._with_recorder(data, request.id, who)

    def listed(
        self, requests: builtins.list[Request], who: Principal | None = None
    ) -> builtins.list[dict[str, Any]]:
        """Requests as ``hitl-vault list --json`` prints them, as ``who`` may see them."""
        full = [self.engine.get(r.id) for r in requests]
        return [listed_json(self._as_seen(r, who), self.engine.votes(r)) for r in full]

    def _with_recorder(
        self, data: dict[str, Any], request_id: str, who: Principal | None
    ) -> dict[str, Any]:
        """``data`` with who recorded the decision (``decided_uid``, ``decided_actor``: the
        process's ``host/user``, ``decided_credential``: its credential), for people only (an
        agent has no use for the server's users, nor for other people's credentials)."""
        if who is None or who.role is not Role.AGENT:
            entry = decision_entry(self.engine.journal.entries(request_id))
            data["decided_uid"] = entry.uid if entry else None
            data["decided_actor"] = entry.actor if entry else None
            data["decided_credential"] = entry.credential if entry else None
        return data

    def _as_seen(self, request: Request, who: Principal | None) -> Request:
        """``request`` as ``who`` may see it: a person everything; an agent neither the
        server's folders (``path`` relative to the vault) nor the address a person decided
        from (``from 10.0.0.5`` left out of proven history lines; ``via api`` stays)."""
        if who is None or who.role is not Role.AGENT:
            return request
        path = request.path
        if path is not None:
            path = (
                path.relative_to(self.engine.root)
                if path.is_relative_to(self.engine.root)
                else Path(path.name)
            )
        return replace(request, path=path, history=tuple(_sourceless(t) for t in request.history))


def _sees(who: Principal, request: Request) -> bool:
    """An approver sees every request; an agent its own: asked through the service (with a
    token, whose name the service wrote as ``requested_by``) in its name. A request made
    another way that names it (``submit --by``, an Inbox note) was asked by no token."""
    if who.role is Role.APPROVER:
        return True
    return request.credential is not None and same_name(request.requested_by) == same_name(who.name)


def _origin(who: Principal) -> Origin | None:
    """The token that asks, and the session and client its agent said (None: no token)."""
    if who.credential is None:
        return None
    return Origin(who.credential, who.session, who.client_name)


def _sourceless(step: Transition) -> Transition:
    """A proven step without the address it came from (the detail before ``via api``)."""
    proof = proof_in(step)
    if proof is None or not proof.client:
        return step
    return replace(step, details=step.details[:-2] + step.details[-1:])


def _plausible(request_id: str) -> bool:
    """An id worth looking up (any text reaches here from a URL)."""
    return 0 < len(request_id) <= 200 and request_id.isprintable()
