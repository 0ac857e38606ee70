"""The REST API of ``hitl-vault serve``, over a real uvicorn on 127.0.0.1: its routes and
status codes, what an agent token may see and do, an approver's proven decision, the
long-poll, and what bad input and hostile requests get."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send

from hitl_vault.chain import RECORDER_ACTOR
from hitl_vault.cli.main import cli
from hitl_vault.identity import Principal

from .helpers import eventually
from .servers import Answer, Server, serving

RULES = """\
defaults:
  decision: ask
  timeout: 24h
  quiet: 1s
rules:
  - name: two-people
    action: release
    approvers: [alice, bob]
    quorum: 2
    decision: ask
  - name: proven-only
    action: guarded
    approvers: [alice, bob]
    authenticated: true
    decision: ask
"""


def gate(who: Principal, body: dict[str, Any]) -> dict[str, Any]:
    """A stand-in for the gate's handler: the hook's place, and a bug on demand."""
    if body.get("boom"):
        raise RuntimeError("a bug in a handler")
    return {"decision": "none", "reason": f"asked by {who.name}"}


# Whether the stand-in's lifespan is running now (a worker may start this module's server
# more than once: each start and stop sets it).
MCP_RUNNING = {"now": False}


async def mcp(scope: Scope, receive: Receive, send: Send) -> None:
    """A stand-in for the MCP app: says whether its lifespan is running."""
    await JSONResponse({"mcp": scope["path"], "running": MCP_RUNNING["now"]})(scope, receive, send)


@asynccontextmanager
async def mcp_running() -> AsyncIterator[None]:
    MCP_RUNNING["now"] = True
    yield
    MCP_RUNNING["now"] = False


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("api") / "vault"
    from hitl_vault.cli.template import init_vault

    init_vault(root)
    (root / "hitl-vault.yaml").write_text(RULES, encoding="utf-8")
    mounted = {"gate": gate, "mcp_app": mcp, "lifespans": [mcp_running]}
    # 1 s: short enough for the slow-client tests, long enough that a worker of a busy
    # parallel run, descheduled for a moment, never takes a whole request for a stalled one.
    with serving(root, trusted_proxy="127.0.0.1", read_timeout=1.0, app_options=mounted) as s:
        yield s


@pytest.fixture(scope="module")
def agent(server: Server) -> str:
    return server.token("bot")


@pytest.fixture(scope="module")
def alice(server: Server) -> str:
    return server.token("alice", "approver")


def submit(server: Server, token: str, action: str = "deploy", **body: object) -> dict[str, Any]:
    answer = server.call("POST", "/api/v1/requests", {"action": action, **body}, token=token)
    assert answer.status == 201, answer.body
    return answer.body  # type: ignore[no-any-return]


def cli_show(root: Path, request_id: str) -> dict[str, Any]:
    result = CliRunner().invoke(cli, ["--vault", str(root), "show", request_id, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)  # type: ignore[no-any-return]


def note_text(root: Path, request_id: str) -> str:
    """The request's note as it reads now ("" while the daemon is moving it)."""
    try:
        return Path(cli_show(root, request_id)["path"]).read_text(encoding="utf-8")
    except FileNotFoundError:  # moved between show and the read: the next look finds it
        return ""


def as_agent_sees(shown: dict[str, Any]) -> dict[str, Any]:
    """show --json's object without what an agent is not shown (its path aside)."""
    hidden = ("decided_uid", "decided_actor", "decided_credential")
    return {k: v for k, v in shown.items() if k not in hidden}


def test_an_agent_is_not_shown_the_servers_paths_uids_or_an_approvers_address(
    server: Server, agent: str, alice: str
) -> None:
    """An agent sees its request with path relative to the vault, no decided_uid, and
    proven history lines without the approver's address; the approver sees all of it,
    exactly as show --json prints it."""
    made = submit(server, agent)["id"]
    path = f"/api/v1/requests/{made}"
    from_office = {"X-Forwarded-For": "10.0.0.5"}
    decided = server.call(
        "POST", f"{path}/decision", {"decision": "approve"}, token=alice, headers=from_office
    ).body
    said = decided["history"][-1]
    assert said.endswith("by alice via api from 10\\.0.0.5")  # escaped as Markdown
    notes = {  # where the note is: pending until the daemon moves it, a moment later
        str(server.root / folder / f"{made}.md"): f"{folder}/{made}.md"
        for folder in ("Pending_Approval", "Approved")
    }
    assert "decided_uid" in decided and decided["path"] in notes
    assert decided["decided_actor"] == RECORDER_ACTOR  # the service's process, host/user
    assert decided["decided_credential"].startswith("token alice (id ")  # the token it used
    asked = server.vault.engine.journal.entries(made)[0]  # the agent's token asked for it
    assert asked.version == 3 and (asked.credential or "").startswith("token bot (id ")
    views = [
        server.call("GET", path, token=agent).body,
        server.call("GET", f"{path}?wait=1", token=agent).body,
        next(
            r for r in server.call("GET", "/api/v1/requests", token=agent).body if r["id"] == made
        ),
    ]
    for seen in views:
        assert seen["path"] in notes.values() and "decided_uid" not in seen
        assert "decided_actor" not in seen and "decided_credential" not in seen
        assert str(server.root) not in json.dumps(seen) and "0.0.5" not in json.dumps(seen)
    assert views[0]["history"][-1] == said.removesuffix(" from 10\\.0.0.5")
    doc = server.call("GET", "/openapi.json").body
    ok = doc["paths"]["/api/v1/requests/{id}"]["get"]["responses"]["200"]
    schema = ok["content"]["application/json"]["schema"]
    assert "approver" in schema["properties"]["decided_uid"]["description"]
    assert "relative" in schema["properties"]["path"]["description"]


def test_healthz_answers_without_credentials(server: Server) -> None:
    """GET /healthz needs no token and says nothing about the vault; on SQLite the service
    leads (its daemon holds the lock, the lease there) and has no term."""
    answer = server.call("GET", "/healthz")
    assert answer.status == 200 and answer.body["ok"] is True
    assert answer.body["role"] == "leader" and answer.body["term"] is None
    assert answer.body["lease"] == "lock"


def test_submit_answers_201_with_the_request_exactly_as_show_json_prints_it(
    server: Server, agent: str
) -> None:
    """POST /api/v1/requests → 201, the object show --json prints, requested_by the token's."""
    made = submit(server, agent, params={"env": "prod"}, summary="ship it", context="why")
    assert made["requested_by"] == "bot" and made["status"] == "pending"
    shown = cli_show(server.root, made["id"])
    assert made == {**as_agent_sees(shown), "path": f"Pending_Approval/{made['id']}.md"}
    assert server.call("GET", f"/api/v1/requests/{made['id']}", token=agent).body == made


def test_requested_by_cannot_be_given_and_unknown_fields_are_422(
    server: Server, agent: str
) -> None:
    """The caller cannot name another requester: any field beyond the API's is a 422."""
    answer = server.call(
        "POST", "/api/v1/requests", {"action": "deploy", "requested_by": "alice"}, token=agent
    )
    assert answer.status == 422
    assert "requested_by: is not a field" in answer.body["error"]


def test_a_bad_action_is_422_with_the_message_the_cli_gives(server: Server, agent: str) -> None:
    """422 carries the very words `hitl-vault submit` prints for the same input."""
    answer = server.call("POST", "/api/v1/requests", {"action": "no way"}, token=agent)
    result = CliRunner().invoke(cli, ["--vault", str(server.root), "submit", "no way"])
    assert answer.status == 422 and result.exit_code == 2
    assert answer.body["error"] in result.output
    timeout = server.call(
        "POST", "/api/v1/requests", {"action": "deploy", "timeout": "soon"}, token=agent
    )
    result = CliRunner().invoke(
        cli, ["--vault", str(server.root), "submit", "deploy", "--timeout", "soon"]
    )
    assert timeout.status == 422 and timeout.body["error"] in result.output


def test_an_agent_token_limited_to_actions_is_403_for_others(server: Server) -> None:
    """--actions: the token may ask for those actions only."""
    limited = server.token("deployer", actions=("deploy",))
    assert submit(server, limited)["requested_by"] == "deployer"
    answer = server.call("POST", "/api/v1/requests", {"action": "payment"}, token=limited)
    assert answer.status == 403 and "deploy only" in answer.body["error"]


def test_an_agent_sees_lists_waits_on_and_cancels_only_its_own(server: Server, agent: str) -> None:
    """Another agent's request is 404 to get, wait on and cancel, and never listed."""
    other = server.token("other-bot")
    mine = submit(server, agent)["id"]
    theirs = submit(server, other)["id"]
    for path in (f"/api/v1/requests/{theirs}", f"/api/v1/requests/{theirs}?wait=1"):
        assert server.call("GET", path, token=agent).status == 404
    assert server.call("POST", f"/api/v1/requests/{theirs}/cancel", token=agent).status == 404
    listed = server.call("GET", "/api/v1/requests?limit=1000", token=agent).body
    ids = {r["id"] for r in listed}
    assert mine in ids and theirs not in ids
    assert {r["requested_by"] for r in listed} == {"bot"}
    cancelled = server.call("POST", f"/api/v1/requests/{mine}/cancel", token=agent)
    assert cancelled.status == 200 and cancelled.body["status"] == "cancelled"
    again = server.call("POST", f"/api/v1/requests/{mine}/cancel", token=agent)
    assert again.status == 409


def test_an_agent_token_named_as_another_channels_requests_is_refused(server: Server) -> None:
    """A token named inbox, mcp:CLIENT or as the OS user would ask in that channel's name
    (its requests read as the Inbox's, a local gate session's, the owner's): it is refused
    (403, saying so), and it never sees what those channels made."""
    from hitl_vault.access.names import os_user

    for name in ("inbox", "mcp:claude", os_user()):
        made = server.vault.submit("deploy", {"secret": "s3"}, requested_by=name)
        token = server.token(name)
        for method, path in (
            ("GET", f"/api/v1/requests/{made.id}"),
            ("GET", "/api/v1/requests"),
            ("POST", f"/api/v1/requests/{made.id}/cancel"),
        ):
            answer = server.call(method, path, token=token)
            assert answer.status == 403 and "a name of its own" in answer.body["error"], name
        asked = server.call("POST", "/api/v1/requests", {"action": "deploy"}, token=token)
        assert asked.status == 403, name
        assert server.vault.get(made.id).status.value == "pending"


def test_an_agents_session_and_client_are_fields_of_their_own(server: Server) -> None:
    """The session and client an agent gives go in the request's own fields, beside the id
    of the token that asked: in the API's object, show --json and the note; the context
    stays as the agent wrote it, and a request made another way has none of them."""
    token = server.token("fielded")
    ids = {c.id for c in server.vault.engine.journal.credentials("fielded")}
    made = submit(server, token, context="why\n\nno more", session="s-42", client="ci 1.2")
    said = ("credential", "session", "client", "context", "requested_by")
    assert made["credential"] in ids
    expected = (made["credential"], "s-42", "ci 1.2", "why\n\nno more", "fielded")
    assert tuple(made[k] for k in said) == expected
    shown = cli_show(server.root, made["id"])
    assert tuple(shown[k] for k in said) == expected
    note = Path(shown["path"]).read_text(encoding="utf-8")
    assert (
        f"Asked through the service with the agent token {made['credential']} of fielded "
        "(session s-42, client ci 1.2)."
    ) in note
    plain = submit(server, token)
    assert (plain["session"], plain["client"], plain["context"]) == (None, None, None)
    local = cli_show(server.root, server.vault.submit("deploy", requested_by="fielded").id)
    assert (local["credential"], local["session"], local["client"]) == (None, None, None)


def test_an_agent_lists_what_its_tokens_asked_never_a_local_request_in_its_name(
    server: Server,
) -> None:
    """The store picks an agent's requests (those a token of its name asked), so a limit
    returns that many though newer ones are others'; a request made locally (the CLI, the
    Inbox) that names the agent as requested_by is not its: 404, never listed."""
    token, other = server.token("lister"), server.token("other-lister")
    mine = [submit(server, token)["id"] for _ in range(3)]
    for _ in range(3):
        submit(server, other)
    by_cli = CliRunner().invoke(
        cli, ["--vault", str(server.root), "submit", "deploy", "--by", "lister", "--json"]
    )
    assert by_cli.exit_code == 0, by_cli.output
    local = json.loads(by_cli.output)["id"]
    inbox = server.vault.submit("deploy", requested_by="LISTER").id
    listed = server.call("GET", "/api/v1/requests?limit=2", token=token).body
    assert [r["id"] for r in listed] == mine[::-1][:2]
    everything = server.call("GET", "/api/v1/requests?status=pending", token=token).body
    assert [r["id"] for r in everything] == mine[::-1]
    for theirs in (local, inbox):
        for path in (f"/api/v1/requests/{theirs}", f"/api/v1/requests/{theirs}?wait=1"):
            assert server.call("GET", path, token=token).status == 404
        assert server.call("POST", f"/api/v1/requests/{theirs}/cancel", token=token).status == 404
        assert server.vault.get(theirs).status.value == "pending"


def test_a_note_under_authenticated_says_how_to_decide_so_that_it_counts(
    server: Server, agent: str, alice: str
) -> None:
    """Under authenticated: true a pending note never tells a person to set status to
    approved (which would not count): it names the channels the rule takes and how to
    use them; once approved through the API, its callout says approved."""
    made = submit(server, agent, action="guarded")["id"]
    text = Path(cli_show(server.root, made)["path"]).read_text(encoding="utf-8")
    assert "Set `status` to `approved`" not in text
    assert (
        "> Its rules count only an approval proven through api, session or socket: approve "
        "with `hitl-vault --server URL approve`, the service's web inbox or the CLI through "
        "the service's socket.\n"
        "> Setting `status` to `approved` here approves nothing; `rejected` still rejects.\n"
    ) in text
    path = f"/api/v1/requests/{made}/decision"
    assert server.call("POST", path, {"decision": "approve"}, token=alice).status == 200

    def approved() -> str | None:
        now = note_text(server.root, made)
        return now if "> [!success] Approved" in now else None

    assert "Its rules count only" not in str(eventually(approved))


def test_a_decision_claimed_in_an_agents_text_is_marked_in_the_note(
    server: Server, agent: str, alice: str
) -> None:
    """A summary, context or proposal that says "approved by alice via api" (a history
    line copied in, full-width letters too) is marked in the note as not a record; the
    history line the service writes for alice's real approval is not, and verify is clean."""
    forged = "- 2026-12-06T14:00:00Z · pending → approved · by alice via api"
    made = submit(
        server, agent, action="guarded", summary="Approved by alice via api",
        context=f"Ship it.\n{forged}\nｂｙ ｂｏｂ ｖｉａ ｓｏｃｋｅｔ", reasoning="deploy via api",
        alternatives=["bob approved (1 of 2) via socket"],
    )["id"]  # fmt: skip
    note = Path(cli_show(server.root, made)["path"])
    text = note.read_text(encoding="utf-8")
    mark = "**(not a record: someone's text)**"
    assert f"# Approved by alice via api {mark}\n" in text
    assert f"\\- 2026-12-06T14:00:00Z · pending → approved · by alice via api {mark}\n" in text
    assert f"ｂｙ ｂｏｂ ｖｉａ ｓｏｃｋｅｔ {mark}\n" in text
    assert f"- bob approved (1 of 2) via socket {mark}\n" in text
    assert "\ndeploy via api\n" in text  # no decision claimed: shown as written
    checked = CliRunner().invoke(cli, ["--vault", str(server.root), "verify", "--json"])
    problems = json.loads(checked.output)["problems"]
    assert not [p for p in problems if made in p], problems
    path = f"/api/v1/requests/{made}/decision"
    assert server.call("POST", path, {"decision": "approve"}, token=alice).status == 200
    real = [line for line in cli_show(server.root, made)["history"] if "via api" in line]
    assert len(real) == 1 and "→ approved · by alice via api from" in real[0]
    assert mark not in real[0]


def test_decisions_are_for_approver_tokens_and_say_via_api(
    server: Server, agent: str, alice: str
) -> None:
    """An agent's decision is 403; an approver's counts, and its history line says via api."""
    made = submit(server, agent)["id"]
    path = f"/api/v1/requests/{made}/decision"
    assert server.call("POST", path, {"decision": "approve"}, token=agent).status == 403
    done = server.call("POST", path, {"decision": "reject", "reason": "no"}, token=alice)
    assert done.status == 200 and done.body["status"] == "rejected"
    assert done.body["decided_by"] == "alice"
    assert "by alice via api" in done.body["history"][-1]
    assert server.call("POST", path, {"decision": "approve"}, token=alice).status == 409
    assert server.call("POST", path, {"decision": "maybe"}, token=alice).status == 422


def test_an_api_approval_is_one_vote_as_approve_by_would_be(
    server: Server, agent: str, alice: str
) -> None:
    """Under quorum 2, alice's API approval is her vote; bob's CLI vote completes it."""
    made = submit(server, agent, "release")["id"]
    path = f"/api/v1/requests/{made}/decision"
    voted = server.call("POST", path, {"decision": "approve"}, token=alice).body
    assert voted["status"] == "pending" and voted["votes"] == {"alice": "approved", "bob": None}
    twice = server.call("POST", path, {"decision": "approve"}, token=alice)
    assert twice.status == 403  # her vote counts once, as with approve --by alice
    result = CliRunner().invoke(cli, ["--vault", str(server.root), "approve", made, "--by", "bob"])
    assert result.exit_code == 0, result.output
    assert server.call("GET", f"/api/v1/requests/{made}", token=alice).body["status"] == "approved"


def test_under_authenticated_rules_an_api_approval_counts_and_a_claimed_name_does_not(
    server: Server, agent: str, alice: str
) -> None:
    """authenticated: true: `approve --by bob` leaves it pending; alice's API approval approves."""
    made = submit(server, agent, "guarded")["id"]
    claimed = CliRunner().invoke(cli, ["--vault", str(server.root), "approve", made, "--by", "bob"])
    assert claimed.exit_code != 0
    assert server.call("GET", f"/api/v1/requests/{made}", token=alice).body["status"] == "pending"
    path = f"/api/v1/requests/{made}/decision"
    done = server.call("POST", path, {"decision": "approve"}, token=alice)
    assert done.status == 200 and done.body["status"] == "approved"


def test_list_filters_by_status_and_limit(server: Server, agent: str, alice: str) -> None:
    """GET /api/v1/requests?status=S&limit=N, newest first, as list --json prints them."""
    a, b = submit(server, agent)["id"], submit(server, agent)["id"]
    listed = server.call("GET", "/api/v1/requests?status=pending&limit=2", token=alice).body
    assert [r["id"] for r in listed] == [b, a]
    assert "history" not in listed[0]
    bad = server.call("GET", "/api/v1/requests?status=sleeping", token=alice)
    assert bad.status == 422 and "'sleeping' is not a status" in bad.body["error"]
    for limit in ("0", "%C2%B2", "1001", "x"):  # "²" is a digit to str.isdigit, not to int
        assert server.call("GET", f"/api/v1/requests?limit={limit}", token=alice).status == 422


@pytest.mark.process
def test_a_long_poll_returns_promptly_on_a_decision_made_by_another_process(
    server: Server, agent: str
) -> None:
    """?wait= wakes on the journal's events: a CLI approval elsewhere ends it at once."""
    made = submit(server, agent)["id"]
    answers: list[Answer] = []
    polling = threading.Thread(
        target=lambda: answers.append(
            server.call("GET", f"/api/v1/requests/{made}?wait=30", token=agent)
        )
    )
    polling.start()
    time.sleep(0.2)  # the poll is open (not an assertion: it returns on the decision anyway)
    cmd = [sys.executable, "-m", "hitl_vault", "--vault", str(server.root), "approve", made]
    subprocess.run([*cmd, "--by", "alice"], check=True, capture_output=True, timeout=30)
    decided = time.monotonic()
    polling.join(30)
    assert answers and answers[0].status == 200 and answers[0].body["status"] == "approved"
    assert time.monotonic() - decided < 3


def test_a_long_poll_ends_with_the_time_and_wait_is_bounded(server: Server, agent: str) -> None:
    """?wait= past 60 s is 422; a short one returns the request as it stands."""
    made = submit(server, agent)["id"]
    too_long = server.call("GET", f"/api/v1/requests/{made}?wait=61", token=agent)
    assert too_long.status == 422
    started = time.monotonic()
    held = server.call("GET", f"/api/v1/requests/{made}?wait=0.3", token=agent)
    assert held.status == 200 and held.body["status"] == "pending"
    assert 0.25 < time.monotonic() - started < 5


def test_401_without_detail_for_no_unknown_or_revoked_tokens(server: Server) -> None:
    """No token, a wrong scheme, an unknown or a revoked one: 401, and nothing more said."""
    from hitl_vault.access.tokens import revoke
    from hitl_vault.times import utcnow

    gone = server.token("leaver")
    revoke(server.vault.engine.journal, "leaver", utcnow(), "test")
    for headers in ({}, {"Authorization": "Basic Ym90OmJvdA=="}, {"Authorization": "Bearer x"}):
        answer = server.call("GET", "/api/v1/requests", headers=headers)
        assert (answer.status, answer.body) == (401, {"error": "unauthorized"})
    answer = server.call("GET", "/api/v1/requests", token=gone)
    assert (answer.status, answer.body) == (401, {"error": "unauthorized"})


def test_repeated_failed_sign_ins_get_429_but_a_valid_token_still_works(
    server: Server, agent: str
) -> None:
    """After 10 failures from one client address, its failures are 429 (no token or a
    wrong one alike), while a valid token from there still works: behind a proxy every
    agent shares that address. Other addresses are not refused (the address comes from
    the trusted proxy's X-Forwarded-For)."""
    from_there = {"X-Forwarded-For": "203.0.113.9"}
    for _ in range(10):
        assert (
            server.call("GET", "/api/v1/requests", token="hv_x", headers=from_there).status == 401
        )
    for token in ("hv_x", None):
        refused = server.call("GET", "/api/v1/requests", token=token, headers=from_there)
        assert refused.status == 429 and "retry-after" in refused.headers
    assert server.call("GET", "/api/v1/requests", token=agent, headers=from_there).status == 200
    made = server.call(
        "POST", "/api/v1/requests", {"action": "deploy"}, token=agent, headers=from_there
    )
    assert made.status == 201
    assert server.call("GET", "/api/v1/requests", token="hv_x").status == 401


def test_failed_sign_ins_are_summarised_in_the_service_log(server: Server) -> None:
    """A failed sign-in is in the service log at once, as an address and a count (never
    the token); later ones are summarised at most once a minute, not once per block."""
    journal = server.vault.engine.journal
    from_there = {"X-Forwarded-For": "203.0.113.77"}

    def told() -> list[str]:
        return [
            e.details[0]
            for e in journal.service_log()
            if e.event == "auth failed" and e.subject == "203.0.113.77"
        ]

    for _ in range(3):
        answer = server.call("GET", "/api/v1/requests", token="hv_guess", headers=from_there)
        assert answer.status == 401
    assert told() == ["1 failed"]  # the first at once; the next two wait for the minute
    server.serving.service._flush_failures(everything=True)  # as the service stops
    assert told() == ["2 failed", "1 failed"]
    assert not any("hv_guess" in str(e) for e in journal.service_log())


def test_a_token_in_the_url_is_refused_and_never_logged(
    server: Server, agent: str, caplog: pytest.LogCaptureFixture
) -> None:
    """?token= or ?access_token= is a 400, even with a good token, and the log never has it."""
    caplog.set_level(logging.DEBUG)
    for name in ("token", "access_token"):
        answer = server.call("GET", f"/api/v1/requests?{name}={agent}")
        assert answer.status == 400 and "Authorization: Bearer" in answer.body["error"]
    assert agent not in caplog.text
    assert "/api/v1/requests" in caplog.text  # the access log has the request, not its query


def test_a_body_over_the_limit_is_413_counted_as_it_arrives(server: Server, agent: str) -> None:
    """Over 1 MiB: 413 from Content-Length at once, and from a chunked body as it comes."""
    big = json.dumps({"action": "deploy", "context": "x" * (1024 * 1024)}).encode()
    assert server.call("POST", "/api/v1/requests", big, token=agent).status == 413
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            b"POST /api/v1/requests HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Authorization: Bearer " + agent.encode() + b"\r\n"
            b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        chunk = b"x" * 65536
        try:
            for _ in range(20):
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        except OSError:
            pass  # the service closed it: what it answered first is below
        assert sock.recv(100).startswith(b"HTTP/1.1 413")


def test_invalid_json_and_a_body_that_is_no_object_are_422(server: Server, agent: str) -> None:
    """Bad JSON, a list, NaN, a wrong type: 422 naming what is wrong."""
    cases = {
        b"{not json": "not valid JSON",
        b"[1, 2]": "must be a JSON object",
        b'{"action": "deploy", "params": {"x": NaN}}': "not valid JSON",
        b'{"action": "deploy", "params": [1]}': "params: must be an object",
        b'{"action": 7}': "action: must be text",
        b'{"action": "deploy", "summary": "\\ud800"}': "summary: holds text that is not valid",
        b'{"action": "deploy", "params": {"\\udfff": 1}}': "params: holds text that is not valid",
    }
    for body, said in cases.items():
        answer = server.call("POST", "/api/v1/requests", body, token=agent)
        assert answer.status == 422 and said in answer.body["error"], (body, answer.body)


def test_a_slow_client_is_timed_out_while_others_are_answered(server: Server, agent: str) -> None:
    """Half a request, then silence: the connection is closed after the read timeout, and
    the service answers everyone else meanwhile."""
    address = ("127.0.0.1", server.port)
    with (
        socket.create_connection(address, timeout=10) as slow,
        socket.create_connection(address, timeout=10) as stalled,
    ):
        slow.sendall(b"GET /api/v1/requests HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthor")
        stalled.sendall(  # a whole head, then a body that stops after its first byte
            b"POST /api/v1/requests HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Authorization: Bearer " + agent.encode() + b"\r\nContent-Length: 100\r\n\r\n{"
        )
        started = time.monotonic()
        assert server.call("GET", "/healthz").status == 200
        assert slow.recv(100) == b""  # closed by the service
        assert stalled.recv(100).startswith(b"HTTP/1.1 408")
        assert time.monotonic() - started < 5


def test_a_body_that_trickles_in_is_cut_at_one_deadline_for_all_of_it(
    server: Server, agent: str
) -> None:
    """A body sent a byte at a time, each well within the read timeout, still gets 408 once
    the whole body's deadline passes (the module's server: 1 s), not when it ends."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            b"POST /api/v1/requests HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Authorization: Bearer " + agent.encode() + b"\r\nContent-Length: 1000\r\n\r\n"
        )
        started = time.monotonic()
        sock.settimeout(0.1)
        answer = b""
        while not answer and time.monotonic() - started < 5:
            try:
                sock.sendall(b" ")
                answer = sock.recv(100)
            except TimeoutError:
                continue
            except OSError:
                break
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert time.monotonic() - started < 4  # the body would take 1,000 bytes x 0.1 s


def test_connections_over_the_limit_are_answered_503(server: Server, agent: str) -> None:
    """Over the service's connection limit (4,096 by default, here lowered for a moment), a
    request is answered 503 at once; below it, as usual."""
    from hitl_vault.serve.runner import MAX_CONNECTIONS

    assert server.serving.max_connections == MAX_CONNECTIONS == 4096
    running = server.serving._server
    assert running is not None and running.config.limit_concurrency == MAX_CONNECTIONS
    running.config.limit_concurrency = 2
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10):
            assert server.call("GET", "/healthz").status == 503
    finally:
        running.config.limit_concurrency = MAX_CONNECTIONS
    assert server.call("GET", "/api/v1/requests", token=agent).status == 200


def test_a_foreign_host_or_origin_is_refused(server: Server, agent: str) -> None:
    """DNS rebinding: a Host or Origin that is not this machine's (or the public URL's)."""
    evil = server.call("GET", "/api/v1/requests", token=agent, headers={"Host": "evil.example"})
    assert evil.status == 421
    origin = {"Origin": "http://evil.example"}
    assert server.call("GET", "/api/v1/requests", token=agent, headers=origin).status == 403
    local = {"Origin": f"http://localhost:{server.port}", "Host": f"localhost:{server.port}"}
    assert server.call("GET", "/api/v1/requests", token=agent, headers=local).status == 200


def test_the_openapi_document_lists_every_route(server: Server) -> None:
    """/openapi.json is an OpenAPI 3 document of every route, bodies closed to other fields."""
    doc = server.call("GET", "/openapi.json").body
    assert doc["openapi"].startswith("3.")
    assert {
        "/healthz",
        "/api/v1/requests",
        "/api/v1/requests/{id}",
        "/api/v1/requests/{id}/cancel",
        "/api/v1/requests/{id}/decision",
    } <= set(doc["paths"])
    submit_body = doc["paths"]["/api/v1/requests"]["post"]["requestBody"]
    assert submit_body["content"]["application/json"]["schema"]["additionalProperties"] is False


def test_the_gate_hook_mounts_and_a_bug_is_a_logged_500_in_json(
    server: Server, agent: str, alice: str, caplog: pytest.LogCaptureFixture
) -> None:
    """POST /api/v1/gate reaches the handler given to build_app (agent tokens only); a bug
    in it answers 500 as JSON, its traceback in the log: the only way to a 500."""
    answer = server.call("POST", "/api/v1/gate", {"tool_name": "Bash"}, token=agent)
    assert answer.status == 200 and answer.body == {"decision": "none", "reason": "asked by bot"}
    assert server.call("POST", "/api/v1/gate", {}, token=alice).status == 403
    with caplog.at_level(logging.ERROR):
        bug = server.call("POST", "/api/v1/gate", {"boom": True}, token=agent)
        assert bug.status == 500 and "a bug" in bug.body["error"]
        eventually(lambda: "RuntimeError: a bug in a handler" in caplog.text)


def test_the_mcp_app_mounts_at_mcp_with_its_lifespan_behind_the_guard(server: Server) -> None:
    """/mcp (no redirect to /mcp/) reaches the app given to build_app, whose lifespan runs
    with the service's; the Host check holds there too."""
    for method in ("POST", "GET", "DELETE"):
        answer = server.call(method, "/mcp", b"{}")
        assert answer.status == 200 and answer.body == {"mcp": "/mcp", "running": True}
    foreign = server.call("POST", "/mcp", b"{}", headers={"Host": "evil.example"})
    assert foreign.status == 421


def test_x_forwarded_for_counts_only_from_the_trusted_proxy(tmp_path: Path) -> None:
    """Without --trusted-proxy, X-Forwarded-For is the client's word: ignored, so failed
    sign-ins claiming ten addresses still count against the one they came from."""
    with serving(tmp_path / "vault") as untrusting:
        for n in range(10):
            claimed = {"X-Forwarded-For": f"198.51.100.{n}"}
            answer = untrusting.call("GET", "/api/v1/requests", token="hv_x", headers=claimed)
            assert answer.status == 401
        fresh = {"X-Forwarded-For": "198.51.100.99"}
        answer = untrusting.call("GET", "/api/v1/requests", token="hv_x", headers=fresh)
        assert answer.status == 429 and "127.0.0.1" in answer.body["error"]


def test_a_long_poll_whose_client_hangs_up_is_dropped_at_once(server: Server, agent: str) -> None:
    """A client that closes its connection mid-wait leaves no wait behind on the service."""
    made = submit(server, agent)["id"]
    waiters = server.serving.service.waiters
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            f"GET /api/v1/requests/{made}?wait=60 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {agent}\r\n\r\n".encode()
        )
        eventually(lambda: len(waiters) == 1)
    eventually(lambda: len(waiters) == 0, timeout=5)
