"""Templates to pages: one Jinja2 environment over ``web/templates`` that escapes every
value (autoescape on for every template, whatever its name), and the answers the pages
give, each with the safe headers (:data:`~.safety.HEADERS`). The stylesheet and the rest
of ``web/static`` are read once and served from memory, by name only."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import Any

import jinja2
from starlette.requests import Request as HttpRequest
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from .safety import HEADERS

_TYPES = {".css": "text/css; charset=utf-8", ".png": "image/png", ".svg": "image/svg+xml"}


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    """The pages' Jinja2 environment: everything escaped, undefined values an error."""
    return jinja2.Environment(
        loader=jinja2.PackageLoader("hitl_vault.web", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        auto_reload=False,  # installed templates do not change under a running service
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render(template: str, **values: Any) -> str:
    """``template`` (a file in ``web/templates``) filled with ``values``, escaped."""
    return environment().get_template(template).render(**values)


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
