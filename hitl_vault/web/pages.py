"""The decision page a signed link opens, and the one-tap answers for ntfy's buttons.

* ``GET /d/{secret}``: the request as it would run (summary, action, the params exactly,
  edited ones marked, the context, the votes, who may still decide, the expiry) and a form
  to approve or reject with a reason. It changes nothing: mail scanners fetch every link.
  ``?choice=approve`` or ``?choice=reject`` preselects a button (e-mail's two links).
* ``POST /d/{secret}``: the form (``csrf``, ``decision``, ``reason``), decided as the
  link's person ``via link`` through :meth:`Service.decide`, the API's own path: quorum,
  self-approval, stages, ``require_reason`` and ``authenticated:`` all apply.
* ``POST /d/{secret}/approve`` and ``/reject``: the one-tap endpoints (no CSRF token: the
  signed URL is the credential; the Origin check refuses a foreign page's POST), answered
  in one line of plain text.

A link that cannot decide (used, expired, decided since, params changed, a disabled person,
ended, not one of ours) gets a page saying why with a 4xx status, and nothing changes. Forged links
count as failed sign-ins from the client's address; once refused (429), its every link
attempt is, until the block ends. A link's secret is never logged (the access log shows
``/d/…``).
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request as HttpRequest
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ..access import links
from ..access.links import CHOICES, LinkError, LinkGrant, LinkProblem
from ..errors import (
    DecisionRefusedError,
    ForbiddenError,
    IllegalTransitionError,
    JournalDamagedError,
    JournalUnavailableError,
    ParamsChangedError,
    RequestNotFoundError,
    UsageError,
    VaultError,
)
from ..identity import LINK, Principal, Role, proven_by
from ..model import Status
from ..policy.quorum import proof_needed
from ..serve.service import Service
from ..times import format_ts, utcnow
from .render import any_hidden, base_of, page, plain
from .safety import client_of, csrf_ok, csrf_token

REASON_LIMIT = 2000  # characters of a reason typed on the page
FORM_LIMIT = 16 * 1024  # bytes of a form's body

# Each refusal's status and the page's title.
REFUSALS = {
    LinkProblem.BAD: (404, "This link does not work"),
    LinkProblem.USED: (410, "This link was used already"),
    LinkProblem.EXPIRED: (410, "This request expired"),
    LinkProblem.DECIDED: (409, "This request was decided since"),
    LinkProblem.PARAMS_CHANGED: (409, "The params changed since this link was sent"),
    LinkProblem.PERSON_DISABLED: (403, "This link's person may not decide"),
    LinkProblem.ENDED: (410, "This link was ended"),
}


def decision_values(service: Service, request_id: str, via: str) -> dict[str, Any]:
    """What ``decision.html`` shows of a request (call it on a service thread): the caller
    adds ``form_action``, ``csrf``, ``person``, ``choice``, ``reason`` and ``message``.
    ``via``: the channel the decision would come through, to warn where it does not count."""
    engine = service.engine
    request = engine.get(request_id)
    params, sha, edited = engine.params_to_run(request_id)
    created = engine.journal.created_params(request_id)
    count = engine.votes(request)
    plan = count.plan
    proof_note = ""
    if plan.authenticated is not None and via not in plan.authenticated:
        needed = proof_needed(plan.authenticated)
        proof_note = f"An approval from this page does not count here: it {needed}."
    # Whether anything the page shows holds a character that does not show as itself.
    shown = [request.action, request.summary, request.context or "", request.requested_by]
    shown += [*created, *params, *(json.dumps(v, ensure_ascii=False) for v in params.values())]
    shown += [f"{t.by} {t.reason}" for t in request.votes()]
    return {
        "r": {
            "id": request.id,
            "action": request.action,
            "summary": request.summary,
            "context": request.context or "",
            "requested_by": request.requested_by,
            "risk": str(request.risk),
            "expires": format_ts(request.expires) if request.expires else "never",
        },
        "params": [
            {
                "name": name,
                "value": json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True),
                "edited": name not in created or created[name] != value,
            }
            for name, value in params.items()
        ],
        "removed": [name for name in created if name not in params],
        "edited": edited,
        "params_sha": sha,
        "votes": [
            {"name": t.by, "decision": str(t.to_status), "via": proven_by(t), "reason": t.reason}
            for t in request.votes()
        ],
        "progress": count.progress(),
        "reason_required": str(plan.require_reason),
        "reason_limit": REASON_LIMIT,
        "proof_note": proof_note,
        "hidden": any_hidden(shown),
    }


def page_refusal(e: VaultError) -> tuple[int, str]:
    """The status and title of a page for an error a decision may meet."""
    if isinstance(e, LinkError):
        return REFUSALS[e.problem]
    if isinstance(e, ParamsChangedError):
        return REFUSALS[LinkProblem.PARAMS_CHANGED]
    if isinstance(e, IllegalTransitionError):
        return REFUSALS[LinkProblem.DECIDED]
    if isinstance(e, DecisionRefusedError | ForbiddenError):
        return 403, "This decision does not count"
    if isinstance(e, RequestNotFoundError):
        return 404, "No such request"
    if isinstance(e, UsageError):
        return 422, "This form is not complete"
    if isinstance(e, JournalUnavailableError | JournalDamagedError):
        return 503, "The service cannot decide just now"
    return 503, "The service cannot decide this"


def parse_form(raw: bytes) -> dict[str, str]:
    """The urlencoded form's fields (the first of each name)."""
    if len(raw) > FORM_LIMIT:
        raise UsageError("form", f"is over {FORM_LIMIT} bytes", "send the page's form as it is")
    try:
        text = raw.decode("utf-8")
        fields = urllib.parse.parse_qs(text, keep_blank_values=True, max_num_fields=20)
    except (UnicodeDecodeError, ValueError):
        raise UsageError("form", "is not a form this page sends", "use the page's form") from None
    return {name: values[0] for name, values in fields.items()}


class LinkPages:
    """The link routes' endpoints: each does its journal work in one call on a service
    thread (:meth:`Service.call`)."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.store = service.engine.journal

    def _grant(self, secret: str, client: str) -> LinkGrant:
        """The link's grant; a forged one counts against ``client``; a refused ``client``'s
        every attempt is a 429."""
        left = self.service.refused_for(client)
        if left > 0:
            raise _TooMany(left)
        try:
            return links.check(self.store, secret, now=utcnow())
        except LinkError as e:
            if e.problem is LinkProblem.BAD:
                self.service.failed_attempt(client)
            raise

    def _checked(self, grant: LinkGrant) -> dict[str, Any]:
        """The page's values, once the params that would run are the link's (an edit in the
        note the journal has not heard of yet counts too)."""
        values = decision_values(self.service, grant.request_id, LINK)
        if values["params_sha"] != grant.params_sha:
            raise LinkError(LinkProblem.PARAMS_CHANGED, links.PARAMS_CHANGED, grant.request_id)
        return values

    def _params_unchanged(self, grant: LinkGrant) -> None:
        """The params that would run are the link's (read as :meth:`_checked` reads them,
        without the rest of the page)."""
        if self.service.engine.params_to_run(grant.request_id)[1] != grant.params_sha:
            raise LinkError(LinkProblem.PARAMS_CHANGED, links.PARAMS_CHANGED, grant.request_id)

    def _page(self, base: str, secret: str, grant: LinkGrant, **extra: Any) -> dict[str, Any]:
        return {
            **self._checked(grant),
            "base": base,
            "person": grant.person,
            "form_action": f"{base}/d/{secret}",
            "csrf": csrf_token(self.store.link_key(), grant.spent_as),
            "choice": None,
            "reason": "",
            "message": "",
            **extra,
        }

    async def show(self, request: HttpRequest) -> Response:
        secret, client = request.path_params["secret"], client_of(request.scope)
        choice, base = request.query_params.get("choice"), base_of(request)

        def work() -> Response:
            grant = self._grant(secret, client)
            chosen = choice if choice in CHOICES else None
            return page("decision.html", **self._page(base, secret, grant, choice=chosen))

        return await self._answered(work, base)

    async def decide(self, request: HttpRequest) -> Response:
        secret, client = request.path_params["secret"], client_of(request.scope)
        raw, base = await request.body(), base_of(request)

        def work() -> Response:
            grant = self._grant(secret, client)
            form = parse_form(raw)
            key = self.store.link_key()
            if not csrf_ok(key, grant.spent_as, form.get("csrf", "")):
                raise ForbiddenError(
                    "this form did not come from the decision page (or the page is old): "
                    "open the link again and decide there"
                )
            decision, reason = form.get("decision", ""), form.get("reason", "").strip()
            try:
                return self._decided(grant, client, decision, reason, base=base)
            except (DecisionRefusedError, UsageError) as e:  # the form again, saying why
                status, _ = page_refusal(e)
                values = self._page(base, secret, grant, reason=reason, message=str(e))
                values["choice"] = decision if decision in CHOICES else None
                return page("decision.html", status, **values)

        return await self._answered(work, base)

    def one_tap(self, decision: str) -> Callable[[HttpRequest], Awaitable[Response]]:
        async def tapped(request: HttpRequest) -> Response:
            secret, client = request.path_params["secret"], client_of(request.scope)
            await request.body()

            def work() -> Response:
                grant = self._grant(secret, client)
                return self._decided(grant, client, decision, "", base=None)

            return await self._answered(work, None)

        return tapped

    def _decided(
        self, grant: LinkGrant, client: str, decision: str, reason: str, *, base: str | None
    ) -> Response:
        """Decide as the link's person, via link, spending the link in the decision's
        transaction; the answer is a page under ``base``, or one line (``base`` None)."""
        if decision not in CHOICES:
            raise UsageError("decision", f"{decision[:20]!r} is not a decision", "press a button")
        if len(reason) > REASON_LIMIT:
            raise UsageError("reason", f"is over {REASON_LIMIT} characters", "say it shorter")
        approve = decision == "approve"
        if not approve:  # a rejection runs nothing, so the engine compares no params
            self._params_unchanged(grant)
        who = Principal(grant.person, Role.APPROVER, LINK, client=client)
        try:  # an approval: the engine refuses any params but the link's (the note's too)
            done = self.service.decide(
                who, grant.request_id, approve, reason, grant.params_sha if approve else None,
                spend=lambda: links.spend(self.store, grant, utcnow()),
            )  # fmt: skip
        except ParamsChangedError:
            raise LinkError(
                LinkProblem.PARAMS_CHANGED, links.PARAMS_CHANGED, grant.request_id
            ) from None
        word = "approved" if approve else "rejected"
        pending = done.status is Status.PENDING
        said = f"{word} by {grant.person} via link"
        said += " (a vote; more are needed)" if pending else ""
        if base is None:
            return plain(f"{said}: request {done.id} is {done.status}")
        progress = self.service.engine.votes(done).progress() if pending else ""
        return page(
            "done.html", base=base,
            title=f"You {word} it" if not pending else "Your vote is recorded",
            message=said[:1].upper() + said[1:], progress=progress, request_id=done.id,
            status=str(done.status),
        )  # fmt: skip

    async def _answered(self, work: Callable[[], Response], base: str | None) -> Response:
        """``work``'s page; a refusal as a page under ``base`` (or a line, ``base`` None)
        saying why, with its 4xx."""
        try:
            return await self.service.call(work)
        except _TooMany as e:
            text = f"too many failed attempts from your address: try again in {e.seconds} s"
            if base is not None:
                answer = page(
                    "refused.html", 429, base=base, title="Too many attempts", message=text
                )
            else:
                answer = plain(text, 429)
            answer.headers["Retry-After"] = str(e.seconds)
            return answer
        except VaultError as e:
            status, title = page_refusal(e)
            if base is not None:
                return page("refused.html", status, base=base, title=title, message=str(e))
            return plain(str(e), status)


class _TooMany(Exception):
    """The client's address is refused for now (429)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = max(1, int(seconds + 0.999))
        super().__init__(f"refused for {self.seconds} s")


def routes(service: Service) -> list[BaseRoute]:
    """The link pages' routes, for ``serve``'s app to mount."""
    pages = LinkPages(service)
    return [
        Route("/d/{secret}", pages.show, methods=["GET"]),
        Route("/d/{secret}", pages.decide, methods=["POST"]),
        Route("/d/{secret}/approve", pages.one_tap("approve"), methods=["POST"]),
        Route("/d/{secret}/reject", pages.one_tap("reject"), methods=["POST"]),
    ]
