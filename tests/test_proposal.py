"""The requester's structured context (docs/notes.md "Proposal", docs/agents.md): reasoning,
confidence, alternatives and risk factors, from `submit` flags, `Vault.submit`, the Inbox,
MCP and the API; the same error for a bad value at every entry; shown in the note's
## Proposal section, `show --json`, the API and messages; and rules that ask or block on
confidence, never allow."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from mcp import Client

from hitl_vault import Vault
from hitl_vault.agents.mcp_server import serving as mcp_serving
from hitl_vault.cli.main import cli
from hitl_vault.cli.template import init_vault
from hitl_vault.daemon.inbox import Inbox
from hitl_vault.errors import RulesError, UsageError, VaultError
from hitl_vault.notify.message import compose
from hitl_vault.policy.rules import Decision

from .servers import Server, serving

RULES = """\
defaults: {decision: allow}
rules:
  - name: unsure
    action: deploy
    confidence: "< 0.5"
    decision: ask
    reason: the agent is not sure
  - name: guessing
    action: deploy
    confidence: "< 0.1"
    decision: block
"""
CASE: dict[str, Any] = {
    "reasoning": "The tests pass.\n## History\n[[Welcome]]",
    "confidence": 0.3,
    "alternatives": ["wait for Monday", "`= this.file`"],
    "risk_factors": ["users see a short outage"],
}
# What a bad value gets, whichever door it came in by.
BAD: list[tuple[dict[str, Any], str]] = [
    ({"confidence": 1.5}, "confidence: 1.5 is outside 0–1 (give a number from 0 to 1)"),
    ({"confidence": "high"}, "confidence: 'high' is not a number (give a number from 0 to 1)"),
    ({"alternatives": "one"}, "alternatives: is str, not a list (pass a list of strings)"),
    ({"risk_factors": [3]}, "risk_factors[0]: is int, not text (pass a string)"),
]


def new_vault(root: Path) -> Path:
    init_vault(root)
    (root / "hitl-vault.yaml").write_text(RULES, encoding="utf-8")
    return root


@pytest.fixture
def vault_path(tmp_path: Path) -> Path:
    return new_vault(tmp_path / "vault")


def section(note: str, heading: str) -> list[str]:
    """The lines of one ## section of a note."""
    lines = note.splitlines()
    start = lines.index(heading) + 1
    end = next((i for i in range(start, len(lines)) if lines[i].startswith("## ")), len(lines))
    return lines[start:end]


def test_submit_flags_are_kept_and_shown_in_the_note_and_show_json(vault_path: Path) -> None:
    """--reasoning, --confidence, --alternative and --risk-factor (repeatable) reach the
    journal; the note shows them escaped under ## Proposal."""
    argv = ["--vault", str(vault_path), "submit", "deploy", "-p", "tag=v2", "--json",
            "--reasoning", CASE["reasoning"], "--confidence", "0.3",
            "--alternative", CASE["alternatives"][0], "--alternative", CASE["alternatives"][1],
            "--risk-factor", CASE["risk_factors"][0]]  # fmt: skip
    made = CliRunner().invoke(cli, argv)
    assert made.exit_code == 0, made.output
    shown = json.loads(made.output)
    assert shown["status"] == "pending" and shown["rule"] == "unsure"
    assert shown["proposal"] == {**CASE, "diff": None, "diff_by": None}
    note = Path(shown["path"]).read_text(encoding="utf-8")
    assert section(note, "## Proposal") == [
        "**Confidence:** 0.3 (as the requester asserts it)",
        "",
        "**Reasoning:**",
        "The tests pass.",
        "\\#\\# History",
        "\\[\\[Welcome\\]\\]",
        "",
        "**Alternatives:**",
        "- wait for Monday",
        "- \\`= this.file\\`",
        "",
        "**Risk factors:**",
        "- users see a short outage",
        "",
    ]
    assert note.count("\n## History\n") == 1


@pytest.mark.parametrize(("bad", "said"), BAD)
def test_a_bad_value_gets_the_same_error_from_vault_cli_and_inbox(
    vault_path: Path, bad: dict[str, Any], said: str
) -> None:
    """Vault.submit raises it, the CLI prints it, the Inbox flags the proposal with it."""
    with Vault(vault_path) as v:
        with pytest.raises(UsageError) as raised:
            v.submit("deploy", {}, **bad)
        assert str(raised.value) == said
        inbox = vault_path / "Inbox" / "bad.json"
        inbox.write_text(json.dumps({"action": "deploy", "params": {}, **bad}), encoding="utf-8")
        assert (
            Inbox(vault_path, v.engine.journal, v.engine.submit).take(inbox, v.engine.now()) == []
        )
        flagged = {a.path: a.message for a in v.engine.journal.attention()}
        assert flagged["Inbox/bad.json"] == f"Inbox/bad.json: {said}"
        assert v.list() == []
    if "confidence" in bad:
        argv = [
            "--vault",
            str(vault_path),
            "submit",
            "deploy",
            "--confidence",
            str(bad["confidence"]),
        ]
        out = CliRunner().invoke(cli, argv)
        assert out.exit_code == 2 and f"Error: {said}" in out.output


def test_an_inbox_proposal_carries_its_case_in_the_frontmatter(vault_path: Path) -> None:
    """A Markdown proposal's reasoning, confidence, alternatives and risk_factors keys."""
    note = vault_path / "Inbox" / "deploy.md"
    note.write_text(
        "---\naction: deploy\nparams: {tag: v3}\nreasoning: It is Tuesday.\nconfidence: 0.05\n"
        "alternatives: [skip it]\nrisk_factors: [none known]\n---\n",
        encoding="utf-8",
    )
    with Vault(vault_path) as v:
        (made,) = Inbox(vault_path, v.engine.journal, v.engine.submit).take(note, v.engine.now())
    assert made.pitch is not None
    assert (made.pitch.reasoning, made.pitch.confidence) == ("It is Tuesday.", 0.05)
    assert (made.pitch.alternatives, made.pitch.risk_factors) == (("skip it",), ("none known",))
    assert (made.rule, made.status.value) == ("guessing", "rejected")  # < 0.1 blocks


def test_rules_ask_or_block_on_confidence_and_ignore_a_request_without_one(
    vault_path: Path,
) -> None:
    """< 0.5 asks, < 0.1 blocks, a sure or a silent requester falls to the defaults."""
    with Vault(vault_path) as v:
        unsure = v.submit("deploy", {}, confidence=0.4)
        guess = v.submit("deploy", {}, confidence=0.0)
        sure = v.submit("deploy", {}, confidence=0.9)
        silent = v.submit("deploy", {})
    assert (unsure.rule, unsure.status.value) == ("unsure", "pending")
    assert (guess.rule, guess.status.value) == ("guessing", "rejected")
    assert (sure.rule, sure.status.value) == ("defaults", "approved")
    assert (silent.rule, silent.status.value) == ("defaults", "approved")
    assert Vault(vault_path).evaluate("deploy").decision is Decision.ALLOW


def test_approvers_a_confidence_rule_names_still_decide_when_it_is_approved(
    vault_path: Path,
) -> None:
    """The rules read again at the decision see the request's confidence: someone the
    confidence rule does not name cannot approve it."""
    (vault_path / "hitl-vault.yaml").write_text(
        "defaults: {decision: ask}\nrules:\n  - name: unsure\n    action: deploy\n"
        "    confidence: '< 0.5'\n    approvers: [senior]\n    decision: ask\n",
        encoding="utf-8",
    )
    with Vault(vault_path) as v:
        request = v.submit("deploy", {}, confidence=0.2)
        with pytest.raises(VaultError, match="senior"):
            v.approve(request.id, by="bob")
        assert v.approve(request.id, by="senior").status.value == "approved"


def test_an_allow_rule_on_confidence_is_refused_with_its_line_and_the_fix(
    vault_path: Path,
) -> None:
    """The requester asserts its confidence, so no rule may allow on it."""
    (vault_path / "hitl-vault.yaml").write_text(
        "rules:\n  - name: ok\n    action: x\n    decision: ask\n"
        "  - name: sure\n    action: deploy\n    confidence: '>= 0.9'\n    decision: allow\n",
        encoding="utf-8",
    )
    with pytest.raises(RulesError) as raised:
        Vault(vault_path).submit("deploy", {})
    error = raised.value
    assert (error.where.endswith("hitl-vault.yaml"), error.line) == (True, 5)
    assert "rule sure allows on confidence" in error.problem
    assert "use decision: ask or block" in error.fix


def test_a_message_shows_the_case(vault_path: Path) -> None:
    """A notification says the confidence, reasoning, alternatives and risk factors."""
    with Vault(vault_path) as v:
        request = v.submit("deploy", {"tag": "v2"}, **CASE)
    body = compose("pending", request, note="n.md", vault_name="v").body
    assert "Confidence (the requester's own): 0.3" in body
    assert "Reasoning: The tests pass. ## History [[Welcome]]" in body
    assert "Alternatives:\n- wait for Monday\n- `= this.file`" in body
    assert "Risk factors:\n- users see a short outage" in body


async def test_mcp_request_approval_takes_the_case_and_refuses_a_bad_one(vault_path: Path) -> None:
    """request_approval's reasoning, confidence, alternatives and risk_factors arguments;
    a bad confidence is the tool's error, saying what every entry says."""
    with Vault(vault_path) as vault, mcp_serving(vault) as server:
        async with Client(server) as client:
            tools = {t.name: t for t in (await client.list_tools()).tools}
            schema = tools["request_approval"].input_schema["properties"]
            asked = await client.call_tool("request_approval",
                                           {"action": "deploy", "params": {}, **CASE})  # fmt: skip
            refused = await client.call_tool(
                "request_approval", {"action": "deploy", "params": {}, "confidence": 2}
            )
    assert schema["confidence"]["maximum"] == 1 and schema["alternatives"]["type"][0] == "array"
    assert not asked.is_error, asked.content
    req = json.loads(asked.content[0].text)  # type: ignore[union-attr]
    assert req["status"] == "pending"
    assert refused.is_error
    assert BAD[0][1].replace("1.5", "2") in refused.content[0].text  # type: ignore[union-attr]
    pitch = Vault(vault_path).get(req["id"]).pitch
    assert pitch is not None and pitch.alternatives == tuple(CASE["alternatives"])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = new_vault(tmp_path_factory.mktemp("proposal") / "vault")
    with serving(root) as running:
        yield running


def test_the_api_takes_the_case_and_shows_it_in_the_request_object(server: Server) -> None:
    """POST /api/v1/requests keeps the four fields; the request object has them as proposal."""
    token = server.token("case-bot")
    made = server.call("POST", "/api/v1/requests", {"action": "deploy", **CASE}, token=token)
    assert made.status == 201, made.body
    assert made.body["proposal"] == {**CASE, "diff": None, "diff_by": None}
    assert made.body["rule"] == "unsure"
    got = server.call("GET", f"/api/v1/requests/{made.body['id']}", token=token)
    assert got.body["proposal"]["confidence"] == 0.3
    from hitl_vault import Client

    sent = Client(server.url, token).submit("deploy", {}, confidence=0.05, risk_factors=["late"])
    assert (sent["status"], sent["proposal"]["risk_factors"]) == ("rejected", ["late"])


@pytest.mark.parametrize(("bad", "said"), [*BAD, ({"confidence": True}, "confidence: True")])
def test_the_api_answers_a_bad_value_with_422_carrying_the_error(
    server: Server, bad: dict[str, Any], said: str
) -> None:
    """A value out of range or of the wrong type is a 422 saying what every entry says."""
    answer = server.call("POST", "/api/v1/requests", {"action": "deploy", **bad},
                         token=server.token("bad-bot"))  # fmt: skip
    assert answer.status == 422, answer.body
    assert said in json.dumps(answer.body, ensure_ascii=False)


def test_the_openapi_document_describes_the_fields() -> None:
    """The submit body lists the four fields with their types and range."""
    from hitl_vault.serve.openapi import document

    body = document()["paths"]["/api/v1/requests"]["post"]["requestBody"]
    schema = body["content"]["application/json"]["schema"]
    props = schema["properties"]
    assert props["confidence"]["minimum"] == 0 and props["confidence"]["maximum"] == 1
    assert props["risk_factors"]["items"]["type"] == "string"


def test_a_python_rule_may_not_match_on_confidence(tmp_path: Path) -> None:
    """A python: rule's function may answer allow, so a confidence: condition on it is
    refused when the rules are read, as on an allow rule."""
    from hitl_vault.errors import RulesError
    from hitl_vault.policy.rulesfile import parse_policy

    text = (
        "rules:\n  - name: by-code\n    action: transfer\n"
        '    confidence: "> 0.9"\n    python: mymodule:decide\n'
    )
    with pytest.raises(RulesError, match="by-code allows on confidence"):
        parse_policy(text, "hitl-vault.yaml", tmp_path)
