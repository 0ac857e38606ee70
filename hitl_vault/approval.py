"""Ask first, then do it yourself: ``approval()`` and ``@requires_approval``.

The requester carries out such a request (the daemon never runs it): it is
submitted, waited on, journaled ``executing`` when the requester's code starts,
and ``executed`` or ``failed`` when that code returns or raises.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from .errors import Rejected, TimedOut, VaultError
from .model import Request, Status, check_action

if TYPE_CHECKING:
    from .engine import Engine

F = TypeVar("F", bound=Callable[..., Any])


class Approval:
    """What the requester gets: the approved request, and a place for the result."""

    def __init__(self, request: Request) -> None:
        self.request = request
        self.result: Any = None

    @property
    def id(self) -> str:
        return self.request.id

    @property
    def params(self) -> Mapping[str, Any]:
        """The params as approved (a human may have edited them)."""
        return self.request.params


def refusal(request: Request) -> VaultError | None:
    """The error to raise instead of running a decided request, or None if it was approved."""
    who = f" by {request.decided_by}" if request.decided_by else ""
    why = f": {request.reason}" if request.reason else ""
    if request.status is Status.TIMED_OUT:
        return TimedOut(request, f"request {request.id}: nobody decided before {request.expires}")
    if request.status in (Status.REJECTED, Status.CANCELLED):
        return Rejected(request, f"request {request.id}: {request.status}{who}{why}")
    if request.status is not Status.APPROVED:
        return VaultError(f"request {request.id}: is {request.status}, expected approved")
    return None


@contextmanager
def carrying_out(engine: Engine, request: Request) -> Iterator[Approval]:
    """Executing on entry; executed on a normal exit, failed (and re-raised) on an error."""
    refused = refusal(request)
    if refused is not None:
        raise refused
    started = engine.start_execution(request.id, by=request.requested_by, params=request.params)
    if started is None:
        current = engine.get(request.id)
        if current.status is Status.CANCELLED:  # withdrawn by a human before it started
            who = current.history[-1].by if current.history else "someone"
            raise Rejected(current, f"request {request.id}: cancelled by {who} before it started")
        raise VaultError(f"request {request.id}: was already started; not running it again")
    if started.to_status is Status.REJECTED:  # a block rule added since it was approved
        engine.show_in_note(request.id, engine.now())
        raise Rejected(engine.get(request.id), f"request {request.id}: {started.reason}")
    engine.show_in_note(request.id, engine.now())
    handle = Approval(engine.get(request.id))
    try:
        yield handle
    except BaseException as e:
        engine.finish_execution(handle.id, False, error=f"{type(e).__name__}: {e}")
        engine.show_in_note(handle.id, engine.now())
        raise
    result = None if handle.result is None else str(handle.result)
    engine.finish_execution(handle.id, True, result=result)
    engine.show_in_note(handle.id, engine.now())


@asynccontextmanager
async def approval(
    engine: Engine,
    action: str,
    params: Mapping[str, Any] | None = None,
    *,
    summary: str = "",
    timeout: str | float | None = None,
    requested_by: str | None = None,
    wait_timeout: float | None = None,
) -> AsyncIterator[Approval]:
    """See :meth:`hitl_vault.Vault.approval`."""
    request = engine.submit(
        action, params, summary=summary, timeout=timeout,
        requested_by=requested_by, carried_by_requester=True,
    )  # fmt: skip
    if request.status is Status.PENDING:
        request = await engine.wait(request.id, wait_timeout)
    with carrying_out(engine, request) as handle:
        yield handle


def requires_approval(
    engine: Engine,
    action: str,
    *,
    summary: str = "",
    timeout: str | float | None = None,
    requested_by: str | None = None,
) -> Callable[[F], F]:
    """See :meth:`hitl_vault.Vault.requires_approval`."""
    check_action(action)

    def decorate(fn: F) -> F:
        signature = inspect.signature(fn)

        def ask(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Request:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            params = dict(bound.arguments)
            return engine.submit(
                action, params, summary=summary.format(**params) if summary else "",
                timeout=timeout, requested_by=requested_by or fn.__qualname__,
                carried_by_requester=True,
            )  # fmt: skip

        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                request = ask(args, kwargs)
                if request.status is Status.PENDING:
                    request = await engine.wait(request.id)
                with carrying_out(engine, request) as handle:
                    handle.result = await fn(**handle.params)
                return handle.result

            return run_async  # type: ignore[return-value]

        @functools.wraps(fn)
        def run_sync(*args: Any, **kwargs: Any) -> Any:
            request = ask(args, kwargs)
            if request.status is Status.PENDING:
                request = engine.wait_sync(request.id)
            with carrying_out(engine, request) as handle:
                handle.result = fn(**handle.params)
            return handle.result

        return run_sync  # type: ignore[return-value]

    return decorate
