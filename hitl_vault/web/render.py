"""Templates to pages: one Jinja2 environment over ``web/templates`` that escapes every
value (autoescape on for every template, whatever its name), and the answers the pages
give, each with the safe headers (:data:`~.safety.HEADERS`). The stylesheet and the rest
of ``web/static`` are read once and served from memory, by name only.

What a submitter wrote may hold characters that do not show as themselves: a right-to-left
override makes ``rm`` read as ``mr``, a zero-width space hides between two letters. The
``reveal`` filter shows each such character as its code (``\u202e``) in a
``<mark class="hidden-char">``, so the page shows what would run, not what it looks like."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from functools import lru_cache
from importlib import resources
from typing import Any

import jinja2
from markupsafe import Markup, escape
from starlette.requests import Request as HttpRequest
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from ..identity import unclaimed_text
from .safety import HEADERS

# Characters that may not show as themselves: all but printable ASCII, a tab and a line break
# (each is then looked at, see :func:`hidden`).
_MAYBE_HIDDEN = re.compile(r"[^\t\n\x20-\x7e]")
_HIDDEN_CATEGORIES = frozenset({"Cf", "Cs", "Co", "Cn", "Cc", "Zl", "Zp", "Zs"})

_TYPES = {".css": "text/css; charset=utf-8", ".png": "image/png", ".svg": "image/svg+xml"}


def hidden(ch: str) -> bool:
    """Whether ``ch`` does not show as itself: a format character (bidi overrides and
    isolates, zero-width characters), a control character (a tab and a line break
    excepted), a lone surrogate, a private-use or unassigned one, a line or paragraph
    separator, a space other than the plain one."""
    return ch not in "\t\n " and unicodedata.category(ch) in _HIDDEN_CATEGORIES


def _code(ch: str) -> str:
    return f"\\u{ord(ch):04x}" if ord(ch) <= 0xFFFF else f"\\U{ord(ch):08x}"


def reveal(text: object) -> Markup:
    """``text`` escaped, each :func:`hidden` character shown as a marked code."""
    value = str(text)
    out, last = [], 0
    for match in _MAYBE_HIDDEN.finditer(value):
        if hidden(match.group()):
            out += [escape(value[last : match.start()]), _MARK.format(_code(match.group()))]
            last = match.end()
    out.append(escape(value[last:]))
    return Markup("").join(out)


def revealed(text: object) -> str:
    """``text`` with each :func:`hidden` character as its code (for a page's title)."""
    value = str(text)
    return _MAYBE_HIDDEN.sub(lambda m: _code(m.group()) if hidden(m.group()) else m.group(), value)


def any_hidden(texts: Iterable[object]) -> bool:
    """Whether any of ``texts`` holds a :func:`hidden` character."""
    return any(hidden(m.group()) for t in texts for m in _MAYBE_HIDDEN.finditer(str(t)))


_MARK = Markup('<mark class="hidden-char">{}</mark>')


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    """The pages' Jinja2 environment: everything escaped, undefined values an error."""
    made = jinja2.Environment(
        loader=jinja2.PackageLoader("hitl_vault.web", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        auto_reload=False,  # installed templates do not change under a running service
        trim_blocks=True,
        lstrip_blocks=True,
    )
    made.filters["reveal"] = reveal
    made.filters["revealed"] = revealed
    # Someone's text that claims a channel ("approved by alice via api") is marked, as notes
    # mark it: only the votes the page lists from the journal say how a decision was made.
    made.filters["unclaimed"] = unclaimed_text
    return made


def render(template: str, **values: Any) -> str:
    """``template`` (a file in ``web/templates``) filled with ``values``, escaped."""
    return environment().get_template(template).render(**values)


def base_of(request: HttpRequest) -> str:
    """The public URL's path the pages' own addresses start with (``/vault`` for
    ``https://host/vault``; "" at a host's root): the guard puts it in ``root_path``."""
    return str(request.scope.get("root_path", "")).rstrip("/")


def page(template: str, status: int = 200, /, **values: Any) -> Response:
    """An HTML page with the safe headers."""
    return Response(
        render(template, **values), status, headers=HEADERS, media_type="text/html; charset=utf-8"
    )


def plain(text: str, status: int = 200) -> Response:
    """A short plain-text answer (for the one-tap endpoints) with the safe headers."""
    return PlainTextResponse(text + "\n", status, headers=HEADERS)


def static_routes() -> list[Route]:
    """``GET /static/NAME`` for each file in ``web/static`` (read now, once)."""
    files = {
        item.name: item.read_bytes()
        for item in resources.files("hitl_vault.web").joinpath("static").iterdir()
        if item.is_file() and "." in item.name
    }

    async def serve_file(request: HttpRequest) -> Response:
        name = request.path_params["name"]
        if name not in files:
            return plain("no such file", 404)
        kind = _TYPES.get(name[name.rindex(".") :], "application/octet-stream")
        return Response(files[name], 200, headers=HEADERS, media_type=kind)

    return [Route("/static/{name}", serve_file, methods=["GET"])]
