"""The decision links in people's messages, made by the service's daemon: each signed for
one request and one person (:mod:`hitl_vault.access.links`), at the public URL that
``serve --public-url`` recorded in the store, never at an address from ``hitl-vault.yaml``
(whoever could change that file could collect people's links)."""

from __future__ import annotations

from datetime import datetime

from ..access import links
from ..model import Request
from ..notify.people import Link, LinkMaker
from ..store import JournalStore

PUBLIC_URL = "public_url"  # the store's setting ``serve --public-url`` keeps


def decision_links(store: JournalStore) -> LinkMaker:
    """What makes a person's link to a request: None while the store has no public URL."""

    def make(request: Request, person: str, now: datetime) -> Link | None:
        public = store.setting(PUBLIC_URL)
        if not public:
            return None
        secret = links.mint(store, request, person, now=now)
        page = links.address(public, secret)
        return Link(
            page=page,
            approve=links.address(public, secret, "approve"),
            reject=links.address(public, secret, "reject"),
            tap_approve=f"{page}/approve",
            tap_reject=f"{page}/reject",
            secret=secret,
        )

    return make
