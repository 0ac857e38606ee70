"""``POST /api/v1/gate``: an agent's hook input, asked of the service with its agent token,
answered as ``hitl-vault gate`` would (:func:`hitl_vault.agents.gate_service.decide_remote`).

The body is the hook's input as the agent wrote it on the hook's stdin, with an optional
``"format"`` (``claude``, the default, ``cursor``, ``gemini``, ``codex``) saying whose hook it
is: which fields to read, and whether edited params can go back. The answer never waits:
a request a human has yet to decide is ``"pending"``, and the client waits on it with
``GET /api/v1/requests/{id}?wait=`` (a wait holds no thread), then asks again: the
identical call is matched to the same request and, once approved, handed out once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..agents.formats import FORMATS
from ..agents.gate_service import decide_remote
from ..agents.hookio import BadInput
from ..errors import UsageError
from ..identity import Principal

if TYPE_CHECKING:
    from .service import Service

FORMAT_KEY = "format"


def gate_handler(service: Service) -> Callable[[Principal, dict[str, Any]], dict[str, Any]]:
    """The handler ``build_app(service, gate=...)`` mounts: (agent, hook input) → the
    answer's JSON, run on one of the service's threads."""

    def gate(who: Principal, body: dict[str, Any]) -> dict[str, Any]:
        service.check_agent(who)
        name = body.get(FORMAT_KEY, "claude")
        hook = FORMATS.get(name) if isinstance(name, str) else None
        if hook is None:
            choices = ", ".join(FORMATS)
            raise UsageError(FORMAT_KEY, f"{name!r} is not a hook format", f"use one of {choices}")
        try:
            call = hook.call_of(body)
        except BadInput as e:
            fix = "send the hook's input as the agent wrote it"
            raise UsageError("hook input", str(e), fix) from None
        answer = decide_remote(service.engine, call, who, hook)
        return answer.json(lambda request: service.shown(request, who))

    return gate
