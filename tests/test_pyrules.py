"""``python: module:function`` rules in hitl-vault.yaml (docs: "Rules written in Python"): read
with the line and fix of each mistake, run by every way in (the Python API, the CLI, the
gate local and over HTTP, MCP, the REST API and the Inbox), trusted as the rules file is,
and a function that fails leaves the request pending, or rejects it with ``on_error: reject``."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from mcp import Client

from hitl_vault import Status, Vault
from hitl_vault.agents.formats import CLAUDE
from hitl_vault.agents.gate_service import decide_remote
from hitl_vault.agents.hookio import Call
from hitl_vault.agents.mcp_server import build_server
from hitl_vault.cli.main import cli
from hitl_vault.cli.template import init_vault
from hitl_vault.daemon.loop import Daemon
from hitl_vault.errors import RulesError
from hitl_vault.identity import API, Principal, Role
from hitl_vault.policy.rules import Decision, Proposal
from hitl_vault.policy.rulesfile import parse_policy

from .helpers import COMMAND, Clock
from .servers import serving

MODULE = """\
import pathlib
pathlib.Path(__file__).with_suffix(".imported").touch()

def amounts(proposal):
    amount = proposal.params["amount"]  # KeyError when there is none
    return "allow" if amount < 100 else "ask" if amount < 5000 else "block"
"""
RULES = """\
defaults: {{decision: ask, timeout: 1h, quiet: 200ms}}
rules:
  - name: invoices
    action: invoice
    python: {module}:amounts
    risk: high
  - name: strict-invoices
    action: strict
    python: {module}:amounts
    on_error: reject
  - name: reads
    action: Read
    decision: allow
"""
AGENT = Principal("ci-bot", Role.AGENT, API, credential="c1")


def python_vault(path: Path) -> str:
    """A template vault at ``path`` whose rules call a module of its own (a name no other
    test imported, since a process imports a module once); that module's name."""
    module = f"rules_{uuid.uuid4().hex[:10]}"
    init_vault(path)
    (path / f"{module}.py").write_text(MODULE, encoding="utf-8")
    (path / "hitl-vault.yaml").write_text(RULES.format(module=module), encoding="utf-8")
    return module


@pytest.fixture
def vault_path(tmp_path: Path) -> Path:
    """The template vault with the python rules above (the ``vault`` and ``daemon`` use it)."""
    python_vault(tmp_path / "vault")
    return tmp_path / "vault"


def note_text(request: Any) -> str:
    return Path(request.path).read_text(encoding="utf-8")


# --- reading them -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "said"),
    [
        ("{name: r, action: x, python: m:f, decision: allow}", "line 2: rule r has both decision"),
        ("{name: r, action: x, decision: ask, on_error: reject}", "on_error but no python"),
        ("{name: r, action: x, python: m:f, on_error: maybe}", "use one of: pending, reject"),
        ("{name: r, action: x, python: not-a-function}", "package.module:function"),
    ],
)
def test_a_python_rule_that_cannot_work_is_refused_with_its_line_and_fix(
    rule: str, said: str
) -> None:
    """decision beside python, on_error without python, a bad on_error or target: refused."""
    with pytest.raises(RulesError, match=re.escape(said)):
        parse_policy(f"rules:\n  - {rule}\n")


def test_min_risk_never_allows_what_a_failed_function_asks() -> None:
    """A function that fails asks at risk critical, so no min_risk lets it through."""
    policy = parse_policy(
        "defaults: {min_risk: critical}\n"
        "rules:\n  - {name: r, action: x, python: no_such_module_here:f, risk: low}\n"
    )
    ruling = policy.evaluate(Proposal("x", {}))
    assert ruling.decision is Decision.ASK and ruling.risk == "critical"
    assert "no module named 'no_such_module_here'" in ruling.reason
    assert policy.applied(ruling)[0] is Decision.ASK


# --- the Python API, the CLI and the Inbox -------------------------------------------------


def test_the_function_decides_and_the_rules_other_keys_apply(vault: Vault) -> None:
    """allow, ask (at the rule's risk) and block come from the function."""
    assert vault.submit("invoice", {"amount": 20}).status is Status.APPROVED
    asked = vault.submit("invoice", {"amount": 900})
    assert asked.status is Status.PENDING and asked.rule == "invoices" and asked.risk == "high"
    blocked = vault.submit("invoice", {"amount": 9000})
    assert blocked.status is Status.REJECTED and blocked.rule == "invoices"


def test_a_function_that_raises_leaves_the_request_pending_with_the_error_in_its_note(
    vault: Vault,
) -> None:
    """The note says what the function raised; on_error: reject rejects with it instead."""
    pending = vault.submit("invoice", {"note": "no amount"})
    assert pending.status is Status.PENDING
    assert "raised KeyError: 'amount'" in note_text(pending)
    rejected = vault.submit("strict", {"note": "no amount"})
    assert rejected.status is Status.REJECTED
    assert rejected.reason is not None and "raised KeyError: 'amount'" in rejected.reason


@pytest.mark.parametrize("opened", ["the module", "its folder", "its __pycache__"])
def test_a_module_others_may_write_is_never_imported(tmp_path: Path, opened: str) -> None:
    """A module, a folder holding it or its __pycache__ that anyone may write is refused
    before it runs: the request asks, saying which and the fix."""
    root = tmp_path / "vault"
    python_vault(root)
    package = f"checks_{uuid.uuid4().hex[:10]}"
    (root / package / "__pycache__").mkdir(parents=True)
    (root / package / "__init__.py").write_text("", encoding="utf-8")
    (root / package / "limits.py").write_text(MODULE, encoding="utf-8")
    rules = RULES.format(module=f"{package}.limits")
    (root / "hitl-vault.yaml").write_text(rules, encoding="utf-8")
    opening = {"the module": "limits.py", "its folder": ".", "its __pycache__": "__pycache__"}
    (root / package / opening[opened]).chmod(0o777)
    with Vault(root) as vault:
        asked = vault.submit("invoice", {"amount": 20})
    assert asked.status is Status.PENDING
    assert "anyone may write it" in note_text(asked) and "chmod o-w" in note_text(asked)
    assert not list((root / package).glob("*.imported"))


def test_submit_and_rules_check_run_the_function(vault_path: Path) -> None:
    """`rules check` prints what the function said; `submit` is rejected by on_error."""
    runner = CliRunner()
    checked = runner.invoke(
        cli, ["--vault", str(vault_path), "rules", "check", "invoice", "-p", "amount=900"]
    )
    assert checked.exit_code == 0, checked.output
    assert "decision: ask" in checked.output and "matched invoices: ask" in checked.output
    submitted = runner.invoke(cli, ["--vault", str(vault_path), "submit", "strict", "--json"])
    assert json.loads(submitted.output)["status"] == "rejected", submitted.output


def test_an_inbox_proposal_meets_the_function(daemon: Daemon, vault: Vault, clock: Clock) -> None:
    """A proposal dropped in Inbox/ is blocked by what the function says."""
    proposal = vault.root / "Inbox" / "big.json"
    proposal.write_text('{"action": "invoice", "params": {"amount": 9000}}', encoding="utf-8")
    daemon.notice(proposal)
    daemon.run_once(clock.now)
    [made] = vault.list()
    assert made.action == "invoice" and made.status is Status.REJECTED
    assert made.rule == "invoices"


# --- agents: the gate, MCP and the REST API ------------------------------------------------


def hook_input(tool: str, tool_input: dict[str, Any], cwd: Path) -> str:
    return json.dumps(
        {"session_id": "s1", "cwd": str(cwd), "hook_event_name": "PreToolUse",
         "tool_name": tool, "tool_input": tool_input, "tool_use_id": "t1"}
    )  # fmt: skip


@pytest.mark.process
def test_the_local_gate_runs_the_function_and_imports_it_only_when_asked(
    vault_path: Path,
) -> None:
    """A Read no python rule concerns imports no rule module; a call one does is decided by
    it, twice (the second time from the parsed rules the gate keeps)."""
    argv = [str(COMMAND), "--vault", str(vault_path), "gate"]

    def gate(tool: str, tool_input: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        call = hook_input(tool, tool_input, vault_path.parent)
        return subprocess.run(
            argv, input=call, capture_output=True, text=True, timeout=60, check=False
        )

    read = gate("Read", {"file_path": "/etc/hosts"})
    assert read.returncode == 0, read.stderr
    assert not list(vault_path.glob("*.imported"))
    for _ in range(2):
        denied = gate("strict", {"note": "no amount"})
        assert denied.returncode == 0, denied.stderr
        answer = json.loads(denied.stdout)["hookSpecificOutput"]
        assert answer["permissionDecision"] == "deny"
        assert "raised KeyError: 'amount'" in answer["permissionDecisionReason"]
    assert list(vault_path.glob("*.imported"))


def test_the_gate_over_http_runs_the_function(vault: Vault) -> None:
    """The service's gate: what the function allows is no decision, its failure a deny."""
    where = Path("/home/dev/app")
    small = Call("c", "s", "invoice", {"amount": 5}, where)
    allowed = decide_remote(vault.engine, small, AGENT, CLAUDE)
    assert allowed.decision == "none"
    failed = Call("c", "s", "strict", {"note": "x"}, where)
    denied = decide_remote(vault.engine, failed, AGENT, CLAUDE)
    assert denied.decision == "deny" and "raised KeyError" in denied.reason


async def test_mcp_request_approval_meets_the_function(vault_path: Path) -> None:
    """request_approval over MCP: blocked by the function, or pending with its error."""
    with Vault(vault_path) as vault:
        async with Client(build_server(vault)) as agent:
            blocked = await agent.call_tool(
                "request_approval", {"action": "invoice", "params": {"amount": 9000}}
            )
            failed = await agent.call_tool("request_approval", {"action": "invoice", "params": {}})
    said = [json.loads(r.content[0].text) for r in (blocked, failed)]  # type: ignore[union-attr]
    assert said[0]["status"] == "rejected" and said[0]["rule"] == "invoices"
    assert said[1]["status"] == "pending"


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Any]:
    python_vault(tmp_path / "served")
    with serving(tmp_path / "served") as server:
        yield server


@pytest.mark.slow  # a real uvicorn: about a second
def test_the_rest_api_runs_the_function(service: Any) -> None:
    """POST /api/v1/requests: the function's block, and on_error: reject, with the error."""
    agent = service.token("ci-bot")
    big = service.call(
        "POST", "/api/v1/requests", {"action": "invoice", "params": {"amount": 9e3}}, token=agent
    )
    strict = service.call(
        "POST", "/api/v1/requests", {"action": "strict", "params": {}}, token=agent
    )
    assert big.status == 201 and big.body["status"] == "rejected", big.body
    assert strict.body["status"] == "rejected" and "KeyError" in strict.body["reason"]


def test_a_function_in_a_package_is_found_on_the_python_path(tmp_path: Path) -> None:
    """A module outside the vault, on the Python path, is imported and checked as one."""
    package = tmp_path / f"pkg_{uuid.uuid4().hex[:8]}"
    package.mkdir()
    (package / "__init__.py").write_text("", encoding="utf-8")
    (package / "checks.py").write_text("def no(p):\n    return 'block'\n", encoding="utf-8")
    sys.path.insert(0, str(tmp_path))
    try:
        policy = parse_policy(f"rules:\n  - {{name: n, python: {package.name}.checks:no}}\n")
        assert policy.evaluate(Proposal("anything", {})).decision is Decision.BLOCK
    finally:
        sys.path.remove(str(tmp_path))


def test_a_python_executor_others_may_write_is_refused_as_a_rule_is(tmp_path: Path) -> None:
    """The executors' loader refuses a world-writable module too, naming it and the fix."""
    from hitl_vault.errors import UsageError
    from hitl_vault.execute.executor import load_handler

    name = f"pay_{uuid.uuid4().hex[:10]}"
    source = tmp_path / f"{name}.py"
    source.write_text(MODULE, encoding="utf-8")
    source.chmod(0o666)
    sys.path.insert(0, str(tmp_path))
    try:
        with pytest.raises(UsageError, match="anyone may write it"):
            load_handler(f"{name}:amounts")
        source.chmod(0o644)
        assert callable(load_handler(f"{name}:amounts"))
    finally:
        sys.path.remove(str(tmp_path))
