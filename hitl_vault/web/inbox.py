"""The web inbox: what a signed-in person may decide now, and the same decision page as a
link's, for a browser or a phone.

* ``GET /``: the requests the signed-in person may decide now, newest first (one they voted
  on already, or whose rules leave them out at this stage, is not listed): every pending
  request is looked at, the newest :data:`SHOWN_MOST` of theirs are shown, and the page says
  how many more wait; signed out, the sign-in page.
* ``POST /login``: sign in with an approver token, sent in the form's ``token`` field
  (never in the URL); then to ``/``.
* ``GET /login/{secret}``: the page a one-time sign-in link (``hitl-vault token login``)
  opens: whom it signs in, and a button. It changes nothing: mail scanners and chat apps
  fetch links to preview them, and would spend the link (and hold the session).
* ``POST /login/{secret}``: that button: signs in, spending the link, then to ``/``.
* ``POST /logout``: sign out (the form's ``csrf``).
* ``GET /r/{id}`` and ``POST /r/{id}``: the decision page (``csrf``, ``decision``,
  ``reason``), decided as the person ``via session`` through :meth:`Service.decide`, the
  API's own path.

The session's cookie is ``HttpOnly``, ``SameSite=Strict``, ``Path=/``, and ``Secure`` when
the public URL is https or the request came over https through the trusted proxy; a Secure
cookie's name has the ``__Host-`` prefix, which a browser lets no other host of the domain
(and no plain-http page) set, and a cookie of the plain name is then ignored. A form's
CSRF token is bound to the session (and a decision's to the request and the params the
page showed: approving runs exactly those). Failed sign-ins count against the client's
address as every door's do; once it is refused, its failures are answered 429.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from datetime import datetime
from typing import Any

from starlette.requests import Request as HttpRequest
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from ..access.sessions import PUBLIC_URL, Sessions, SignedIn, SignInError
from ..errors import (
    DecisionRefusedError,
    IllegalTransitionError,
    ParamsChangedError,
    RequestNotFoundError,
    UsageError,
    VaultError,
)
from ..identity import SESSION, Principal, Role, Session, proven_by, same_name
from ..model import Request, Status
from ..policy.quorum import Vote, refusal
from ..serve.service import Service
from ..times import format_ts, utcnow
from .pages import REASON_LIMIT, decision_values, page_refusal, parse_form
from .render import base_of, page
from .safety import HEADERS, client_of, csrf_ok, csrf_token

COOKIE = "hitl_vault_session"
# The sign-in forms' own cookie: a random value their CSRF token is bound to.
SIGN_IN_COOKIE = "hitl_vault_sign_in"
HOST_ONLY = "__Host-"  # a Secure cookie's name begins so: only this host sets it, Path=/
_NONCE = re.compile(r"[A-Za-z0-9_-]{43}")
_STALE_FORM = "This sign-in form is out of date, or came from another page: sign in here again."
_NO_TOKEN = "Give your approver token."
_BAD_TOKEN = (
    "That token signs nobody in (unknown, revoked or expired): ask the service's owner for "
    "an approver token of yours (hitl-vault token add NAME --role approver)."
)
SHOWN_MOST = 200  # requests one inbox page lists; it says how many more wait
CHOICES = ("approve", "reject")


def may_decide(service: Service, request: Request, name: str) -> bool:
    """Whether ``name`` may decide ``request`` now: it is pending, they have not voted on
    it, and their approval through a session would count at this stage (the rules' approvers,
    stages, self-approval and ``authenticated:``). Call it on a service thread."""
    if request.status is not Status.PENDING:
        return False
    count = service.engine.votes(request)
    if same_name(name) in count.voters:
        return False
    vote = Vote(name, approve=True, reason="(a reason)", via=SESSION)
    return refusal(count, vote, requester=request.requested_by) is None


def awaiting(service: Service, name: str, now: datetime) -> list[Request]:
    """What ``name`` may decide now, newest first (see :func:`may_decide`), of every pending
    request: others' newer ones hide none of theirs."""
    journal = service.engine.journal
    found = []
    for listed in journal.requests(Status.PENDING):
        if listed.expires is not None and listed.expires <= now:
            continue  # the daemon is about to time it out
        request = journal.get(listed.id)
        if request is not None and may_decide(service, request, name):
            found.append(request)
    return found


class InboxPages:
    """The inbox's endpoints: each does its journal work in one call on a service thread."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.store = service.engine.journal
        self.sessions = Sessions(self.store)

    # --- the pages ----------------------------------------------------------------------

    async def home(self, request: HttpRequest) -> Response:
        base = base_of(request)
        decided = request.query_params.get("decided", "")

        def work() -> Response:
            now, cookie = utcnow(), self._cookie(request, COOKIE)
            session = self.sessions.find(cookie, now)
            if session is None:
                return self._sign_in_page(request, forget=cookie is not None)
            found = awaiting(self.service, session.name, now)
            items = [_item(self.service, r) for r in found[:SHOWN_MOST]]
            return page(
                "inbox.html", base=base, person=session.name, items=items,
                csrf=self._csrf(session),
                ends=format_ts(session.expires), done=self._done(session, decided),
                more=max(0, len(found) - SHOWN_MOST),
            )  # fmt: skip

        return await self._answered(work, base)

    async def login(self, request: HttpRequest) -> Response:
        raw, client, https = await request.body(), client_of(request.scope), _https(request)
        base = base_of(request)

        def work() -> Response:
            form = parse_form(raw)
            if not self._sign_in_form_ok(request, form):
                return self._sign_in_page(request, 403, message=_STALE_FORM)
            token = form.get("token", "").strip()
            left = self.service.refused_for(client)
            who = self.service.authenticate(token, client) if token else None
            if who is None and left > 0:
                return _too_many(base, left)
            if who is None:
                message = _NO_TOKEN if not token else _BAD_TOKEN
                return self._sign_in_page(request, 401, message=message)
            try:
                signed = self.sessions.with_token(who, utcnow())
            except SignInError as e:
                return self._sign_in_page(request, 403, message=str(e))
            return self._signed_in(request, signed, https)

        return await self._answered(work, base)

    async def link_page(self, request: HttpRequest) -> Response:
        secret, client = request.path_params["secret"], client_of(request.scope)
        base = base_of(request)

        def work() -> Response:
            left = self.service.refused_for(client)
            if left > 0:
                return _too_many(base, left)
            try:
                person = self.sessions.check_link(secret, utcnow())
            except SignInError as e:
                return self._link_refused(request, e, client)
            return self._sign_in_page(request, link_for=person.name, secret=secret)

        return await self._answered(work, base)

    async def login_link(self, request: HttpRequest) -> Response:
        secret, client = request.path_params["secret"], client_of(request.scope)
        raw, https, base = await request.body(), _https(request), base_of(request)

        def work() -> Response:
            left = self.service.refused_for(client)
            if left > 0:
                return _too_many(base, left)
            try:
                if not self._sign_in_form_ok(request, parse_form(raw)):
                    person = self.sessions.check_link(secret, utcnow())
                    return self._sign_in_page(
                        request, 403, message=_STALE_FORM, link_for=person.name, secret=secret
                    )
                signed = self.sessions.with_link(secret, client, utcnow())
            except SignInError as e:
                return self._link_refused(request, e, client)
            return self._signed_in(request, signed, https)

        return await self._answered(work, base)

    def _link_refused(self, request: HttpRequest, e: SignInError, client: str) -> Response:
        """The sign-in page saying why a link does not sign in: 404 for one this service
        never made (a guess: a failed sign-in from ``client``), 410 for one used, expired, or
        whose person is disabled."""
        if e.unknown:
            self.service.failed_attempt(client)
        return self._sign_in_page(request, 404 if e.unknown else 410, message=str(e))

    async def logout(self, request: HttpRequest) -> Response:
        raw, base = await request.body(), base_of(request)

        def work() -> Response:
            session = self.sessions.find(self._cookie(request, COOKIE), utcnow())
            if session is not None:
                if not csrf_ok(self._key(), _bound(session), parse_form(raw).get("csrf", "")):
                    return page(
                        "refused.html", 403, base=base, title="Not signed out",
                        message="this form did not come from your inbox: sign out there",
                    )  # fmt: skip
                self.sessions.sign_out(session, utcnow())
            answer = RedirectResponse(f"{base}/", 303, headers=HEADERS)
            self._forget(request, answer)
            return answer

        return await self._answered(work, base)

    async def show(self, request: HttpRequest) -> Response:
        request_id, base = request.path_params["id"], base_of(request)

        def work() -> Response:
            cookie = self._cookie(request, COOKIE)
            session = self.sessions.find(cookie, utcnow())
            if session is None:
                return self._sign_in_page(request, 401, forget=cookie is not None)
            return page("decision.html", **self._decision(base, session, request_id))

        return await self._answered(work, base)

    async def decide(self, request: HttpRequest) -> Response:
        request_id = request.path_params["id"]
        raw, client, base = await request.body(), client_of(request.scope), base_of(request)

        def work() -> Response:
            cookie = self._cookie(request, COOKIE)
            session = self.sessions.find(cookie, utcnow())
            if session is None:
                return self._sign_in_page(request, 401, forget=cookie is not None)
            form = parse_form(raw)
            values = self._decision(base, session, request_id)
            decision, reason = form.get("decision", ""), form.get("reason", "").strip()
            values["reason"], values["choice"] = reason, decision if decision in CHOICES else None
            if not csrf_ok(self._key(), values["bound"], form.get("csrf", "")):
                values["message"] = (
                    "This page changed since you opened it (the params were edited, or the "
                    "form came from elsewhere): look at it again, then decide."
                )
                return page("decision.html", 409, **values)
            try:
                if decision not in CHOICES:
                    raise UsageError("decision", f"{decision[:20]!r} is not one", "press a button")
                if len(reason) > REASON_LIMIT:
                    raise UsageError("reason", f"is over {REASON_LIMIT} characters", "say less")
                who = Principal(session.name, Role.APPROVER, SESSION, client=client)
                approve = decision == "approve"
                expect = values["params_sha"] if approve else None
                done = self.service.decide(who, request_id, approve, reason, expect)
            except (DecisionRefusedError, UsageError, ParamsChangedError) as e:
                values["message"] = str(e)
                return page("decision.html", page_refusal(e)[0], **values)
            return RedirectResponse(f"{base}/?decided={done.id}", 303, headers=HEADERS)

        return await self._answered(work, base)

    # --- what the pages share -----------------------------------------------------------

    def _key(self) -> bytes:
        return self.store.link_key()

    def _csrf(self, session: Session) -> str:
        return csrf_token(self._key(), _bound(session))

    def _decision(self, base: str, session: Session, request_id: str) -> dict[str, Any]:
        """The decision page's values for ``session``'s person (RequestNotFoundError for an
        id there is none of), its form bound to the session, the request and its params;
        its addresses under ``base``."""
        if not (0 < len(request_id) <= 200 and request_id.isprintable()):
            raise RequestNotFoundError(request_id[:200])
        values = decision_values(self.service, request_id, SESSION)
        bound = f"{_bound(session)} request {request_id} params {values['params_sha']}"
        return {
            **values, "base": base, "person": session.name,
            "form_action": f"{base}/r/{request_id}",
            "csrf": csrf_token(self._key(), bound), "bound": bound, "choice": None,
            "reason": "", "message": "",
        }  # fmt: skip

    def _done(self, session: Session, request_id: str) -> str:
        """The line the inbox shows after a decision (``?decided=ID``): the person's own last
        decision or vote on it through a session, as the journal has it ("" if none)."""
        if not request_id or len(request_id) > 200 or not request_id.isprintable():
            return ""
        request = self.store.get(request_id)
        if request is None:
            return ""
        mine = [
            t
            for t in request.history
            if same_name(t.by) == same_name(session.name) and proven_by(t) == SESSION
        ]
        if not mine:
            return ""
        what = request.summary or request.action
        return f"You {mine[-1].to_status} {what!r} ({request.id}); it is {request.status} now."

    def _sign_in_page(
        self,
        request: HttpRequest,
        status: int = 200,
        *,
        message: str = "",
        link_for: str | None = None,
        secret: str = "",
        forget: bool = False,
    ) -> Response:
        """The sign-in page (``link_for``: a one-time link's, which signs that person in).
        Its form is bound to a random value in a cookie of its own, kept SameSite=Strict
        (and ``__Host-`` when Secure: a sibling host cannot plant one): a page of another
        site cannot sign the browser in as someone else. ``forget``: the request's session
        cookie is of a session that ended, and is cleared."""
        given, base = self._cookie(request, SIGN_IN_COOKIE) or "", base_of(request)
        nonce = given if _NONCE.fullmatch(given) else secrets.token_urlsafe(32)
        answer = page(
            "login.html", status, base=base, link_for=link_for, message=message,
            secret=secret, csrf=csrf_token(self._key(), f"sign-in {nonce}"),
        )  # fmt: skip
        secure = self._secure(_https(request))
        answer.set_cookie(
            self._name(SIGN_IN_COOKIE, secure), nonce, path=_path(base, secure), secure=secure,
            httponly=True,
            samesite="strict",
        )  # fmt: skip
        if forget:
            self._forget(request, answer)
        return answer

    def _sign_in_form_ok(self, request: HttpRequest, form: dict[str, str]) -> bool:
        """Whether a sign-in form came from a sign-in page this browser was shown."""
        nonce = self._cookie(request, SIGN_IN_COOKIE) or ""
        bound = f"sign-in {nonce}"
        return bool(_NONCE.fullmatch(nonce)) and csrf_ok(self._key(), bound, form.get("csrf", ""))

    def _secure(self, https: bool) -> bool:
        """Whether a cookie is Secure: the request came over https, or the public URL
        ``serve`` recorded is https (the browser reaches the service so)."""
        return https or (self.store.setting(PUBLIC_URL) or "").lower().startswith("https://")

    @staticmethod
    def _name(cookie: str, secure: bool) -> str:
        """A cookie's name: with the ``__Host-`` prefix when it is Secure."""
        return HOST_ONLY + cookie if secure else cookie

    def _cookie(self, request: HttpRequest, cookie: str) -> str | None:
        """The request's ``cookie``, by the name this service gives it now (see :meth:`_name`;
        one of the other name, which anyone on the domain could have set, is ignored)."""
        return request.cookies.get(self._name(cookie, self._secure(_https(request))))

    def _forget(self, request: HttpRequest, answer: Response) -> None:
        """Clear the session cookie (with the attributes it was set with)."""
        secure = self._secure(_https(request))
        answer.delete_cookie(
            self._name(COOKIE, secure),
            path=_path(base_of(request), secure),
            secure=secure,
            httponly=True,
            samesite="strict",
        )

    def _signed_in(self, request: HttpRequest, signed: SignedIn, https: bool) -> Response:
        """To the inbox, with the new session's cookie (see :meth:`_secure`), never outliving
        the session (``Path=/``, as a ``__Host-`` cookie must have)."""
        answer = RedirectResponse(f"{base_of(request)}/", 303, headers=HEADERS)
        secure = self._secure(https)
        lasts = (signed.session.expires - signed.session.created).total_seconds()
        answer.set_cookie(
            self._name(COOKIE, secure), signed.secret, max_age=int(lasts),
            path=_path(base_of(request), secure),
            secure=secure, httponly=True, samesite="strict",
        )  # fmt: skip
        return answer

    async def _answered(self, work: Callable[[], Response], base: str) -> Response:
        """``work``'s page; an error a page may meet as a page saying why, with its 4xx."""
        try:
            return await self.service.call(work)
        except IllegalTransitionError as e:
            title = "This request was decided since"
            return page("refused.html", 409, base=base, title=title, message=str(e))
        except VaultError as e:
            status, title = page_refusal(e)
            return page("refused.html", status, base=base, title=title, message=str(e))


def _path(base: str, secure: bool) -> str:
    """A cookie's Path: the service's own (the public URL's path, ``base``), except for a
    Secure cookie, whose ``__Host-`` name the browser takes only with ``Path=/``."""
    return "/" if secure or not base else base


def _bound(session: Session) -> str:
    """What a session's forms are bound to: the session (its secret's hash)."""
    return f"session {session.key}"


def _https(request: HttpRequest) -> bool:
    """The request came over https (directly, or through the trusted proxy, whose
    X-Forwarded-Proto uvicorn believes and no one else's)."""
    return request.url.scheme == "https"


def _too_many(base: str, seconds: float) -> Response:
    wait = max(1, int(seconds + 0.999))
    answer = page(
        "refused.html", 429, base=base, title="Too many attempts",
        message=f"too many failed sign-ins from your address: try again in {wait} s",
    )  # fmt: skip
    answer.headers["Retry-After"] = str(wait)
    return answer


def _item(service: Service, request: Request) -> dict[str, Any]:
    """One line of the inbox."""
    return {
        "id": request.id,
        "summary": request.summary or request.action,
        "action": request.action,
        "requested_by": request.requested_by,
        "created": format_ts(request.created),
        "expires": format_ts(request.expires) if request.expires else "never",
        "progress": service.engine.votes(request).progress(),
    }


def routes(service: Service) -> list[BaseRoute]:
    """The inbox's routes, for ``serve``'s app to mount."""
    inbox = InboxPages(service)
    return [
        Route("/", inbox.home, methods=["GET"]),
        Route("/login", inbox.login, methods=["POST"]),
        Route("/login/{secret}", inbox.link_page, methods=["GET"]),
        Route("/login/{secret}", inbox.login_link, methods=["POST"]),
        Route("/logout", inbox.logout, methods=["POST"]),
        Route("/r/{id}", inbox.show, methods=["GET"]),
        Route("/r/{id}", inbox.decide, methods=["POST"]),
    ]
