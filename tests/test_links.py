"""Signed decision links (hitl_vault.access.links) against a real vault and both stores:
what a link grants, and each reason one is refused."""

from __future__ import annotations

import base64
import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from hitl_vault import Vault
from hitl_vault.access import links
from hitl_vault.access.links import LinkError, LinkProblem
from hitl_vault.access.people import People
from hitl_vault.cli.main import cli
from hitl_vault.cli.template import init_vault
from hitl_vault.errors import UsageError
from hitl_vault.identity import Person
from hitl_vault.journal.sqlite import Journal
from hitl_vault.params import params_sha
from hitl_vault.testing import MemoryJournal
from hitl_vault.times import utcnow

RULES = "defaults:\n  decision: ask\n  timeout: 1h\n"


@pytest.fixture(scope="module")
def vault(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Vault]:
    """One vault for the module (each test asks anew); both stores keep links alike
    (tests/test_store_contract.py)."""
    root = tmp_path_factory.mktemp("links") / "v"
    init_vault(root)
    (root / "hitl-vault.yaml").write_text(RULES, encoding="utf-8")
    with Vault(root) as v:
        for name in ("alice", "carol"):
            v.engine.journal.save_person(Person(name), utcnow(), "test", "person added")
        yield v


def _pending(vault: Vault, params: dict[str, object] | None = None) -> str:
    return vault.submit("deploy", params or {"env": "prod"}, summary="ship it").id


def _mint(vault: Vault, request_id: str, person: str = "alice") -> str:
    store = vault.engine.journal
    request = store.get(request_id)
    assert request is not None
    return links.mint(store, request, person, now=utcnow())


def _refused(vault: Vault, secret: str, problem: LinkProblem) -> LinkError:
    with pytest.raises(LinkError) as caught:
        links.check(vault.engine.journal, secret, now=utcnow())
    assert caught.value.problem is problem, caught.value
    return caught.value


def test_a_link_grants_its_person_the_request_with_its_params(vault: Vault) -> None:
    """check gives back the request, the person and the params' hash the link was made for;
    the secret is URL-safe with a 256-bit signature, and the same request, params and person
    always give the same link."""
    made = _pending(vault)
    secret = _mint(vault, made)
    grant = links.check(vault.engine.journal, secret, now=utcnow())
    assert (grant.request_id, grant.person) == (made, "alice")
    assert grant.params_sha == params_sha({"env": "prod"})
    signature = secret.partition(".")[2]
    assert len(base64.urlsafe_b64decode(signature + "=")) == 32
    assert all(c.isalnum() or c in "-_." for c in secret)
    assert _mint(vault, made) == secret


def test_a_changed_or_foreign_link_is_refused_as_a_bad_signature(
    vault: Vault, tmp_path: Path
) -> None:
    """Another store's link, a payload or signature changed, one cut short, a signature spelled
    another way, or garbage: each is refused as not ours."""
    made = _pending(vault)
    secret = _mint(vault, made)
    payload, _, signature = secret.partition(".")
    other = MemoryJournal()
    other.save_person(Person("alice"), utcnow(), "test", "person added")
    request = vault.engine.journal.get(made)
    assert request is not None
    foreign = links.mint(other, request, "alice", now=utcnow())
    flipped = signature[:-1] + ("A" if signature[-1] != "A" else "B")
    respelled = signature[:-1] + chr(ord(signature[-1]) ^ 1)  # the same bytes, other spelling?
    forged_payload = base64.urlsafe_b64encode(b'[1,"x","alice",null,"y"]').decode().rstrip("=")
    for bad in (
        foreign, f"{payload}.{flipped}", f"{forged_payload}.{signature}", secret[:-5],
        payload, f"{payload}.{respelled}", "", "a.b", "x" * 5000, f"{payload}.{signature}.x",
    ):  # fmt: skip
        _refused(vault, bad, LinkProblem.BAD)


def test_a_spent_link_is_refused_as_used(vault: Vault) -> None:
    """Once spent, a link is refused as used, and spending it again fails too."""
    made = _pending(vault)
    secret = _mint(vault, made)
    store = vault.engine.journal
    grant = links.check(store, secret, now=utcnow())
    links.spend(store, grant, utcnow())
    assert "used already" in str(_refused(vault, secret, LinkProblem.USED))
    with pytest.raises(LinkError):
        links.spend(store, grant, utcnow())


def test_a_link_expires_with_its_request(vault: Vault) -> None:
    """Past the request's expiry the link is refused as expired, whatever the status says."""
    made = _pending(vault)
    secret = _mint(vault, made)
    later = utcnow() + timedelta(hours=2)
    with pytest.raises(LinkError) as caught:
        links.check(vault.engine.journal, secret, now=later)
    assert caught.value.problem is LinkProblem.EXPIRED


def test_a_link_for_a_request_decided_since_is_refused(vault: Vault) -> None:
    """A request rejected (in the note, the CLI...) since the link was sent: refused, saying
    what it is now."""
    made = _pending(vault)
    secret = _mint(vault, made)
    vault.reject(made, by="bob", reason="no")
    assert "rejected now" in str(_refused(vault, secret, LinkProblem.DECIDED))


def test_a_link_for_params_edited_since_is_refused(vault: Vault) -> None:
    """Params edited after the link was made: refused as changed (the link approves only
    what it was made for)."""
    made = _pending(vault)
    secret = _mint(vault, made)
    vault.engine.journal.record_edit(
        made, {"env": "staging"}, at=utcnow(), by="bob", changes="env: prod -> staging"
    )
    _refused(vault, secret, LinkProblem.PARAMS_CHANGED)


def test_a_link_of_a_disabled_person_is_refused(vault: Vault) -> None:
    """A person disabled since the link was sent: refused; and no link is made for them."""
    made = _pending(vault)
    secret = _mint(vault, made, "carol")
    store = vault.engine.journal
    store.save_person(Person("carol", disabled=True), utcnow(), "test", "person disabled")
    _refused(vault, secret, LinkProblem.PERSON_DISABLED)
    with pytest.raises(LinkError) as caught:
        _mint(vault, made, "carol")
    assert caught.value.problem is LinkProblem.PERSON_DISABLED
    with pytest.raises(LinkError):
        _mint(vault, made, "nobody-here")


def test_no_link_is_made_for_a_request_that_cannot_be_decided(vault: Vault) -> None:
    """mint refuses a request decided already, or expired by ``now``."""
    made = _pending(vault)
    store = vault.engine.journal
    request = store.get(made)
    assert request is not None and request.expires is not None
    with pytest.raises(LinkError) as caught:
        links.mint(store, request, "alice", now=request.expires)
    assert caught.value.problem is LinkProblem.EXPIRED
    vault.reject(made, by="bob")
    with pytest.raises(LinkError) as caught:
        _mint(vault, made)
    assert caught.value.problem is LinkProblem.DECIDED


def test_the_address_is_the_public_urls_with_an_optional_choice() -> None:
    """address: the page under the public URL (one slash), ``?choice=`` for e-mail's links;
    any other choice is a usage error."""
    assert links.address("https://v.example.com/", "abc.def") == "https://v.example.com/d/abc.def"
    assert (
        links.address("https://v.example.com/hv", "abc.def", "reject")
        == "https://v.example.com/hv/d/abc.def?choice=reject"
    )
    with pytest.raises(UsageError):
        links.address("https://v.example.com", "abc.def", "maybe")


def test_a_journal_made_before_links_gets_its_key_when_first_opened(tmp_path: Path) -> None:
    """A store without a link key (made by an earlier version) gets one the first time it is
    opened, and keeps it."""
    path = tmp_path / ".hitl" / "journal.db"
    Journal(path).close()
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("DELETE FROM link_key")
    db.close()
    journal = Journal(path)
    key = journal.link_key()
    journal.close()
    again = Journal(path)
    assert again.link_key() == key and len(key) == 32
    again.close()


def test_a_link_minted_for_an_earlier_expiry_expires_then(vault: Vault) -> None:
    """The expiry is signed into the link: a link made while the request expired earlier
    (a request's expiry is its link's) is refused once that time passed."""
    made = _pending(vault)
    store = vault.engine.journal
    request = store.get(made)
    assert request is not None
    soon = utcnow() + timedelta(seconds=5)
    secret = links.mint(store, replace(request, expires=soon), "alice", now=utcnow())
    assert links.check(store, secret, now=utcnow()).expires == soon.replace(microsecond=0)
    with pytest.raises(LinkError) as caught:
        links.check(store, secret, now=soon + timedelta(seconds=1))
    assert caught.value.problem is LinkProblem.EXPIRED


def test_a_person_disabled_and_enabled_again_finds_their_old_links_dead(vault: Vault) -> None:
    """people disable refuses a person's links at once; enabled again (people set --enable),
    the links sent before stay refused, as ended, and links made since work."""
    store = vault.engine.journal
    people = People(store, by="owner", owner_uid=-1, send=lambda url, message: None)
    people.add("erin", now=utcnow())
    made = _pending(vault)
    old = _mint(vault, made, "erin")
    people.disable("erin", now=utcnow())
    _refused(vault, old, LinkProblem.PERSON_DISABLED)
    people.set("Erin", enable=True, now=utcnow())
    assert "erin was disabled since" in str(_refused(vault, old, LinkProblem.ENDED))
    assert links.check(store, _mint(vault, made, "erin"), now=utcnow()).person == "erin"


def test_ending_links_refuses_those_sent_before_and_is_in_the_service_log(vault: Vault) -> None:
    """links.end for a person ends their links only; for everyone, every link; each change
    is in the service log with who made it, and links made after work."""
    store = vault.engine.journal
    store.save_person(Person("fay"), utcnow(), "test", "person added")
    made = _pending(vault)
    alice, fay = _mint(vault, made), _mint(vault, made, "fay")
    links.end(store, "Fay", now=utcnow(), by="owner")
    _refused(vault, fay, LinkProblem.ENDED)
    assert links.check(store, alice, now=utcnow()).person == "alice"
    entry = store.service_log(limit=1)[0]
    assert (entry.event, entry.subject, entry.by) == (
        "setting changed",
        "links ended for fay",
        "owner",
    )
    links.end(store, None, now=utcnow(), by="owner")
    _refused(vault, alice, LinkProblem.ENDED)
    assert store.service_log(limit=1)[0].subject == "links ended"
    for person in ("alice", "fay"):
        assert links.check(store, _mint(vault, made, person), now=utcnow()).person == person


def test_token_end_links_ends_everyones_or_one_persons_links(vault: Vault) -> None:
    """hitl-vault token end-links [NAME]: says what it ended; an unknown NAME is an error
    naming it, and nothing is ended."""
    made = _pending(vault)
    alice = _mint(vault, made)

    def run(*args: str) -> tuple[int, str, str]:
        result = CliRunner().invoke(
            cli, ["--vault", str(vault.root), "token", "end-links", *args], prog_name="hitl-vault"
        )
        return result.exit_code, result.stdout, result.stderr

    code, out, err = run("nobody")
    assert code != 0 and "nobody: is not in people" in err and not out
    assert links.check(vault.engine.journal, alice, now=utcnow()).person == "alice"
    assert run("ALICE") == (
        0, "ended every decision link of alice sent so far (links sent from now on work)\n", ""
    )  # fmt: skip
    _refused(vault, alice, LinkProblem.ENDED)
    assert run()[:2] == (0, "ended every decision link sent so far (links sent from now on work)\n")
