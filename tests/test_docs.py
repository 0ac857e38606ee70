"""The docs site stays true to the code: every command has help text and a line in the CLI
page, the references are generated from the commands and the public names, the architecture
page names every room, and the files shown (rules, a note, service files) are valid.

The strict Sphinx build itself runs in .ci/run; the examples run in test_docs_examples.py.
"""

from __future__ import annotations

import re
import shlex
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import click
from click.testing import CliRunner

import hitl_vault
from hitl_vault.cli.main import cli
from hitl_vault.notes.file import parse_note
from hitl_vault.policy.rules import Proposal
from hitl_vault.policy.rulesfile import parse_policy

DOCS = Path(__file__).resolve().parent.parent / "docs"
BLOCK = re.compile(r"(?ms)^```(\S+)\n(.*?)^```$")


def blocks(page: str, language: str) -> list[str]:
    text = (DOCS / page).read_text(encoding="utf-8")
    return [body for lang, body in BLOCK.findall(text) if lang == language]


def commands(group: click.Group = cli, prefix: str = "") -> Iterator[tuple[str, click.Command]]:
    """Every command under the root group, by its path (``notify test``), groups included."""
    for name, command in group.commands.items():
        path = f"{prefix}{name}"
        yield path, command
        if isinstance(command, click.Group):
            yield from commands(command, f"{path} ")


def test_every_command_has_help_text() -> None:
    """Each command and group says what it does in its --help (the CLI reference shows it)."""
    assert cli.help
    missing = [path for path, command in commands() if not (command.help or "").strip()]
    assert not missing, f"commands without help text: {missing}"


def test_the_cli_page_has_a_line_for_every_command() -> None:
    """The CLI page's table names each command that does something, and only those."""
    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    table = set(re.findall(r"(?m)^\| `([a-z][a-z -]*)` \|", text))
    real = {path for path, command in commands() if not isinstance(command, click.Group)}
    assert table == real


def test_the_cli_reference_is_generated_from_the_root_group() -> None:
    """The CLI reference is sphinx-click over the root group, with every subcommand."""
    text = (DOCS / "cli-reference.md").read_text(encoding="utf-8")
    assert "```{click} hitl_vault.cli.main:cli\n" in text
    assert ":nested: full" in text and ":prog: hitl-vault" in text


def test_the_api_reference_documents_every_public_name() -> None:
    """Each name in hitl_vault.__all__ resolves, and the API page documents it."""
    text = (DOCS / "api.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"(?m)^\.\. (?:autoclass|autoexception|py:data):: (\S+)$", text))
    for name in hitl_vault.__all__:
        if name == "__version__":
            continue
        assert getattr(hitl_vault, name) is not None
        assert f"hitl_vault.{name}" in documented, f"api.md does not document {name}"
    assert "hitl_vault.store.JournalStore" in documented


def test_every_page_is_in_a_table_of_contents() -> None:
    """Every page under docs/ is reachable from the index's tables of contents."""
    index = (DOCS / "index.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"(?m)^([a-z][a-z-]*)$", index))
    pages = {p.stem for p in DOCS.glob("*.md")} - {"index"}
    assert pages <= listed, f"not in a toctree: {pages - listed}"


def test_the_architecture_page_names_every_room_and_the_four_jobs() -> None:
    """Each sub-package has its line, and each "add a ..." job names its room."""
    text = (DOCS / "architecture.md").read_text(encoding="utf-8")
    package = Path(hitl_vault.__file__).parent
    rooms = [p.name for p in package.iterdir() if (p / "__init__.py").exists()]
    assert rooms
    for room in rooms:
        assert f"| `hitl_vault/{room}/` |" in text, f"architecture.md has no line for {room}/"
    for job, room in [
        ("Add a notification channel", "hitl_vault/notify/"),
        ("Add an agent hook format", "hitl_vault/agents/"),
        ("Add a journal backend", "hitl_vault/journal/"),
        ("Add an HTTP endpoint", "hitl_vault/serve/"),
    ]:
        section = text.split(f"### {job}\n", 1)[1].split("\n### ", 1)[0]
        assert f"`{room}`" in section, f"{job}: should name {room}"


def test_the_rules_examples_are_valid_rules_files() -> None:
    """The rules shown in Concepts parse, with the rules, the action and the answers they show."""
    rules, numbers, modes = blocks("concepts.md", "yaml")
    policy = parse_policy(rules, "docs/concepts.md")
    negatives = parse_policy(f"rules:\n{numbers}", "docs/concepts.md")
    assert negatives.evaluate(Proposal("payment", {"amount": -100})).decision == "ask"
    assert [r.name for r in policy.rules][:2] == ["small-payments", "large-payments"]
    assert "payment" in policy.actions
    assert parse_policy(modes, "docs/concepts.md").evaluate(Proposal("x", {})) is not None


def test_the_who_can_approve_example_says_who_decides() -> None:
    """The several-approvers example: two of three, lead then finance, escalation."""
    rules = blocks("approvers.md", "yaml")[0]
    policy = parse_policy(rules, "docs/approvers.md")
    deploy = policy.evaluate(Proposal("deploy", {})).plan
    assert deploy.stages[0].quorum == 2 and deploy.prevent_self_approval
    assert deploy.stages[0].approvers == frozenset({"alice", "bob", "carol"})
    wire = policy.evaluate(Proposal("wire", {})).plan
    assert [(s.name, s.approvers) for s in wire.stages] == [
        ("lead", frozenset({"alice", "bob"})),
        ("finance", frozenset({"alice", "bob"})),
    ]
    hotfix = policy.evaluate(Proposal("hotfix", {})).plan
    assert hotfix.escalate_to == {"dave"} and not hotfix.by_votes


def test_the_request_example_parses_strictly() -> None:
    """The example note in Concepts parses strictly: a pending payment of 1500."""
    (note,) = blocks("concepts.md", "markdown")
    parsed = parse_note(note.encode(), "docs/concepts.md")
    assert parsed.meta["status"] == "pending" and parsed.meta["params"]["amount"] == 1500


def test_the_service_examples_run_the_daemon() -> None:
    """The systemd unit and the launchd plist start `hitl-vault --vault ... run`."""
    (unit,) = blocks("service.md", "ini")
    assert re.search(r"(?m)^ExecStart=\S+/hitl-vault --vault \S+ run$", unit)
    (plist,) = blocks("service.md", "xml")
    args = [e.text for e in ET.fromstring(plist.split("\n", 2)[2]).iter("string")]
    assert args[-1] == "run" and str(args[1]).endswith("/hitl-vault")


def test_the_proven_decisions_examples_ask_for_proof() -> None:
    """The rules in Who can approve's proven decisions and in Separate users parse, and
    their deploys rule counts only proven approvals (api, session, socket)."""
    proven = frozenset({"api", "session", "socket"})
    (_, quorum) = blocks("approvers.md", "yaml")
    plan = parse_policy(quorum, "docs/approvers.md").evaluate(Proposal("deploy", {})).plan
    assert plan.authenticated == proven and plan.stages[0].quorum == 2
    (rules,) = blocks("separate-users.md", "yaml")
    plan = parse_policy(rules, "docs/separate-users.md").evaluate(Proposal("deploy", {})).plan
    assert plan.authenticated == proven and plan.stages[0].approvers == frozenset({"alice"})


def test_the_separate_users_unit_serves_as_its_own_user() -> None:
    """The systemd unit in Separate users runs `hitl-vault ... serve` as the user hitl, with
    options the command has, and makes the folder its socket is in."""
    (unit,) = blocks("separate-users.md", "ini")
    settings = dict(re.findall(r"(?m)^(\w+)=(.*)$", unit))
    assert settings["User"] == "hitl" and settings["RuntimeDirectory"] == "hitl-vault"
    program, *args = shlex.split(settings["ExecStart"])
    assert program.endswith("/hitl-vault") and "serve" in args
    assert "/run/hitl-vault/" in args[args.index("--socket") + 1]
    result = CliRunner().invoke(cli, [*args, "--help"], prog_name="hitl-vault")
    assert result.exit_code == 0 and "Usage: hitl-vault serve" in result.output, result.output
