"""What keeps the pages safe: the headers every page and file is sent with, CSRF tokens
for forms, and where a page reads the client's address.

The headers: a Content-Security-Policy that allows no script at all and styles only from
this service (so nothing a submitter wrote can run, even if it escaped the templates),
no framing, no Referer (a link's secret is in its URL), nothing cached (a page shows a
request as it stands, and may hold a link's secret). A CSRF token is an HMAC, under the
store's link key, of what the form is bound to (a link, a session): a page elsewhere
cannot make one, and nothing is stored to check it.
"""

from __future__ import annotations

import hashlib
import hmac

from starlette.types import Scope

CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}
_CSRF = b"hitl-vault form\n"
# The routes the pages' forms post to, each a regular expression matching a whole path:
# there the service's guard takes ``Origin: null``, which a browser sends for a form on a
# page with ``Referrer-Policy: no-referrer``. Each checks the form's CSRF token (or the
# link in its path), which is what counts there; nowhere else is ``Origin: null`` taken.
FORMS = (
    r"/d/[^/]+",  # a link's form
    r"/d/[^/]+/(?:approve|reject)",  # a link's one-tap answers
    r"/r/[^/]+",  # the inbox's decision form
    r"/login",  # the sign-in form
    r"/login/[^/]+",  # a one-time sign-in link's form
    r"/logout",
)


def csrf_token(key: bytes, bound_to: str) -> str:
    """The CSRF token of a form bound to ``bound_to`` (a link's spent-as hash, a session)."""
    return hmac.new(key, _CSRF + bound_to.encode("utf-8"), hashlib.sha256).hexdigest()


def csrf_ok(key: bytes, bound_to: str, token: str) -> bool:
    """Whether ``token`` is the form's CSRF token (compared in constant time)."""
    return hmac.compare_digest(csrf_token(key, bound_to).encode(), token.encode("utf-8"))


def client_of(scope: Scope) -> str:
    """The client's address, as the service counts failed attempts by it."""
    client = scope.get("client")
    return str(client[0]) if client else "unknown"
