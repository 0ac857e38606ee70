"""``hitl-vault posttool --server URL``: report a handed-out call's outcome to the service.

``hitl-vault gate --server`` keeps, on the agent's machine, a mark per call the service
handed out (in ``$XDG_STATE_HOME/hitl-vault/handed``, by default
``~/.local/state/hitl-vault/handed``); this finds the mark of exactly this call and sends
``POST /api/v1/requests/{id}/result`` with the agent's token. A call without a mark
sends nothing.
"""

from __future__ import annotations

import json

from .formats import HookFormat
from .hookio import BadInput, Reply
from .posttool import client_marks, outcome_of, read, take_mark


def run(server: str, token_file: str | None, hook: HookFormat, stdin: bytes) -> Reply:
    """(exit code, stdout, stderr): the whole of ``hitl-vault posttool --server``."""
    try:
        call, data = read(stdin, hook)
    except BadInput as e:
        return 1, "", f"hitl-vault posttool: {e}\n"
    request_id = take_mark(client_marks(), call)
    if request_id is None:
        return 0, "", ""
    from urllib.parse import quote

    from .gate_client import ServerError, Service, check_url, read_token

    result, error = outcome_of(data)
    body = {"result": result} if error is None else {"error": error}
    path = f"/api/v1/requests/{quote(request_id, safe='')}/result"
    try:
        service = Service(check_url(server), read_token(token_file))
        service.ask("POST", path, json.dumps(body).encode("utf-8"), wait=0.0)
    except ServerError as e:
        if "HTTP 409" in str(e):  # reported already, or closed by the service's deadline
            return 0, "", ""
        return 1, "", f"hitl-vault posttool: could not report {request_id}: {e}\n"
    return 0, "", ""
