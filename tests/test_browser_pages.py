"""The pages people decide on, in a real browser (Debian's chromium), as a person meets them,
against a real ``hitl-vault serve`` whose public URL is recorded.

A decision link comes in the message alice's own channel got (a loopback receiver):
pressing Approve runs the action and the note says ``via link``; a reject takes the reason
typed; a link used once gives a page saying so, with a 4xx, the second time; what a
submitter wrote is shown as text (no script runs: no dialog opens); and at a phone's 360 px
the page does not scroll sideways (its screenshot is kept in tests/artifacts/). The inbox:
alice signs in with a one-time link (``hitl-vault token login alice``), finds the request
there (the inbox fits 360 px too), and approves it ``via session``.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from hitl_vault import Request
from hitl_vault.cli.main import cli
from hitl_vault.cli.template import init_vault
from hitl_vault.identity import Person
from hitl_vault.model import Status
from hitl_vault.times import utcnow

from .browser import Tab, threads_end_with_it
from .helpers import VaultHelper, eventually
from .receivers import Receiver
from .servers import Server, serving

pytestmark = [pytest.mark.process]

RULES = """\
defaults:
  decision: ask
  timeout: 1h
  quiet: 100ms
rules:
  - name: deploys
    action: deploy
    decision: ask
    approvers: [alice]
    require_reason: reject
"""
XSS = "<script>alert(1)</script> <img src=x onerror=alert(1)>"


class Deploys:
    """The ``deploy`` action's executor, in the service's process: the ids it ran."""

    def __init__(self) -> None:
        self.ran: list[str] = []
        self._changed = threading.Condition()

    def __call__(self, request: Request) -> str:
        with self._changed:
            self.ran.append(request.id)
            self._changed.notify_all()
        return f"deployed {request.params.get('version')}"

    def wait_for(self, request_id: str, timeout: float = 15) -> bool:
        """Whether the action ran for ``request_id`` (waiting up to ``timeout``)."""
        with self._changed:
            return self._changed.wait_for(lambda: request_id in self.ran, timeout)


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """Not per test here: the ``server`` fixture checks that the threads the module started
    end with its service (see tests/browser.py, threads_end_with_it)."""
    yield


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with threads_end_with_it(), Receiver().start() as running:
        yield running


@pytest.fixture(scope="module")
def deploys() -> Deploys:
    return Deploys()


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, receiver: Receiver, deploys: Deploys
) -> Iterator[Server]:
    """The service, alice in people with a channel of her own, and the public URL (the
    service's own loopback address) recorded, so her messages carry links."""
    root = Path(tmp_path_factory.mktemp("links")) / "vault"
    init_vault(root)
    (root / "hitl-vault.yaml").write_text(RULES, encoding="utf-8")
    with serving(root) as running:
        running.vault.action("deploy")(deploys)
        journal, now = running.vault.engine.journal, utcnow()
        alice = Person("alice", notify=(f"json://127.0.0.1:{receiver.port}/alice",))
        journal.save_person(alice, now, "test", "person added")
        journal.set_setting("public_url", running.url, now, "test")
        yield running


@pytest.fixture(scope="module")
def agent(server: Server) -> str:
    return server.token("ci-bot")


def ask(server: Server, agent: str, receiver: Receiver, **body: Any) -> tuple[str, str]:
    """Submit a deploy as the agent; (its id, the decision link alice's channel got)."""
    answer = server.call("POST", "/api/v1/requests", {"action": "deploy", **body}, token=agent)
    assert answer.status == 201, answer.body
    made = str(answer.body["id"])
    pattern = re.compile(re.escape(server.url) + r"/d/[^\s)>\]]+")

    def link() -> str | None:
        for post in receiver.got("/alice"):
            found = pattern.search(post.message)
            if made in post.message and found:
                return found.group(0)
        return None

    eventually(lambda: link() is not None, 15)
    found = link()
    assert found is not None
    return made, found


def test_approving_from_the_link_runs_the_action_and_the_note_says_via_link(
    server: Server, agent: str, receiver: Receiver, deploys: Deploys, tab: Tab
) -> None:
    """The link in alice's message opens the page with the params that would run; Approve
    runs the action, and the note records the approval by alice via link."""
    params = {"version": "4.2.0", "environment": "staging"}
    made, link = ask(server, agent, receiver, params=params, summary="Deploy 4.2.0 to staging")
    page = tab.page
    opened = page.goto(link)
    assert opened is not None and opened.status == 200
    assert page.locator("h1").inner_text() == "Deploy 4.2.0 to staging"
    shown = page.locator("dl.params").inner_text()
    assert "version" in shown and '"4.2.0"' in shown and '"staging"' in shown
    assert server.vault.engine.journal.status_of(made) is Status.PENDING  # GET changed nothing

    page.locator('button[name="decision"][value="approve"]').click()
    page.wait_for_load_state()
    assert "approved by alice via link" in page.locator("main").inner_text().lower()
    assert deploys.wait_for(made)
    vault = VaultHelper(server.root)
    eventually(lambda: vault.shows(made, Status.EXECUTED, "Done"), 15)
    assert "by alice via link" in vault.note(made)


def test_a_reject_keeps_its_reason_and_the_link_then_decides_nothing(
    server: Server, agent: str, receiver: Receiver, deploys: Deploys, tab: Tab
) -> None:
    """Reject with a reason records both; the same link opened again gives a page saying
    why it cannot decide, with a 4xx, and nothing runs."""
    made, link = ask(server, agent, receiver, params={"version": "0.0.1"}, summary="Roll back")
    page = tab.page
    page.goto(link)
    page.locator('textarea[name="reason"]').fill("not during the freeze")
    page.locator('button[name="decision"][value="reject"]').click()
    page.wait_for_load_state()
    assert "rejected by alice via link" in page.locator("main").inner_text().lower()
    request = server.vault.engine.get(made)
    assert request.status is Status.REJECTED
    assert request.history[-1].reason == "not during the freeze"

    again = page.goto(link)
    assert again is not None and 400 <= again.status < 500
    said = page.locator("main").inner_text()
    assert "used" in said.lower() and "Nothing was changed" in said
    assert page.locator('button[name="decision"]').count() == 0
    assert server.vault.engine.get(made).status is Status.REJECTED and made not in deploys.ran


def test_a_summary_with_markup_is_shown_as_text_and_runs_no_script(
    server: Server, agent: str, receiver: Receiver, tab: Tab
) -> None:
    """A summary, params and context holding a script and an onerror image are shown
    as the text they are; no dialog opens."""
    _, link = ask(
        server, agent, receiver, summary=XSS, context=XSS, params={"note": XSS, "version": "1"}
    )
    page = tab.page
    page.goto(link)
    page.wait_for_load_state("load")  # a broken image's onerror would have fired by now
    assert page.locator("h1").inner_text() == XSS
    assert XSS in page.locator("dl.params").inner_text()
    assert page.locator("main script, main img").count() == 0
    assert tab.dialogs == []


def test_the_page_fits_a_360_px_phone(
    server: Server, agent: str, receiver: Receiver, tab: Tab
) -> None:
    """At 360 px the page does not scroll sideways, even with a long unbroken param; its
    screenshot is kept as tests/artifacts/decision-page-360px.png."""
    _, link = ask(
        server, agent, receiver,
        summary="Deploy the payments service to production for the quarter's release",
        params={"version": "7.1.0", "image": "registry.example.com/" + "x" * 200},
        context="Asked by the release checklist, step 4 of 6.",
    )  # fmt: skip
    page = tab.page
    page.goto(link)
    assert page.viewport_size is not None and page.viewport_size["width"] == 360
    assert page.locator('meta[name="viewport"]').count() == 1
    assert tab.scroll_width() <= 360
    shot = tab.screenshot("decision-page-360px")
    assert shot.stat().st_size > 0


def test_the_inbox_signs_in_with_a_one_time_link_and_decides_via_session(
    server: Server, agent: str, receiver: Receiver, deploys: Deploys, tab: Tab
) -> None:
    """token login's one-time link signs alice in; the inbox lists the request (fitting
    360 px; screenshot kept), and her approval there runs it and is recorded via session."""
    made, _ = ask(server, agent, receiver, params={"version": "5.0.0"}, summary="Deploy 5.0.0")
    said = CliRunner().invoke(cli, ["--vault", str(server.root), "token", "login", "alice"])
    assert said.exit_code == 0, said.output
    login = said.stdout.strip()
    assert login.startswith(f"{server.url}/login/")
    page = tab.page

    page.goto(login)  # the link's page asks first: a preview fetch spends nothing
    page.get_by_role("button", name=re.compile("Sign in")).click()
    page.wait_for_url(f"{server.url}/")
    entry = page.locator(f'a[href$="/r/{made}"]')
    assert entry.inner_text() == "Deploy 5.0.0"
    assert tab.scroll_width() <= 360  # the inbox reads on a phone too
    tab.screenshot("inbox-360px")
    entry.click()
    assert '"5.0.0"' in page.locator("dl.params").inner_text()
    page.locator('button[name="decision"][value="approve"]').click()
    page.wait_for_load_state()
    assert "approved" in page.locator("main").inner_text().lower()
    assert deploys.wait_for(made)
    vault = VaultHelper(server.root)
    eventually(lambda: vault.shows(made, Status.EXECUTED, "Done"), 15)
    assert "by alice via session" in vault.note(made)
