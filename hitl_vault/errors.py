"""Every error hitl-vault raises on purpose.

Each one subclasses :class:`VaultError`, keeps its fields, and carries a
message that names the file or request and says what to do about it. The CLI
turns any of them into one line on stderr and exit code 1; anything else that
escapes is a bug.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def located(where: str, problem: str, fix: str, line: int | None = None) -> str:
    """``file line 3: what is wrong (how to fix it)``: the shape of every file error."""
    at = f"{where} line {line}" if line else where
    return f"{at}: {problem} ({fix})"


class VaultError(Exception):
    """The root of every error hitl-vault raises on purpose."""


class VaultNotFoundError(VaultError):
    """The vault folder does not exist or is not a vault."""

    def __init__(self, path: Path, fix: str) -> None:
        self.path = path
        super().__init__(f"{path}: no vault here ({fix})")


class NoteError(VaultError):
    """A note (a request or a proposal) cannot be read or changed safely.

    ``where`` is the path as the user should see it (relative to the vault when
    possible), ``line`` the 1-based line of the problem when one is known.
    """

    def __init__(self, where: str, problem: str, fix: str, line: int | None = None) -> None:
        self.where, self.problem, self.fix, self.line = where, problem, fix, line
        super().__init__(located(where, problem, fix, line))


class ChangedUnderfootError(NoteError):
    """The note changed between our read and our write; nothing was written."""

    def __init__(self, where: str) -> None:
        super().__init__(
            where,
            "changed while hitl-vault was updating it; your version was kept",
            "nothing to do: the update is retried once the note is quiet",
        )


class RulesError(VaultError):
    """``hitl-vault.yaml`` is missing, unreadable or invalid."""

    def __init__(self, where: str, problem: str, fix: str, line: int | None = None) -> None:
        self.where, self.problem, self.fix, self.line = where, problem, fix, line
        super().__init__(located(where, problem, fix, line))


class UsageError(VaultError):
    """An argument given to the API or the CLI is not acceptable."""

    def __init__(self, argument: str, problem: str, fix: str) -> None:
        self.argument = argument
        super().__init__(f"{argument}: {problem} ({fix})")


class AccessError(VaultError):
    """A change to people or credentials that cannot be made as asked (an unknown person, a
    name taken already): which person or token, why, and the fix."""

    def __init__(self, subject: str, problem: str, fix: str) -> None:
        self.subject, self.problem, self.fix = subject, problem, fix
        super().__init__(f"{subject}: {problem} ({fix})")


class RequestNotFoundError(VaultError):
    """No request with this id is in the journal."""

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        super().__init__(
            f"request {request_id}: not found in this vault "
            "(check the id with `hitl-vault list`, or pass --vault)"
        )


class IllegalTransitionError(VaultError):
    """The request is not in a status from which this move is allowed."""

    def __init__(self, request_id: str, current: str, wanted: str) -> None:
        self.request_id = request_id
        self.current = current
        self.wanted = wanted
        if wanted == "cancelled" and current in ("executing", "executed", "failed"):
            why = "its action has started already; nothing can withdraw it now"
        elif wanted == "cancelled":
            why = "only a pending request, or an approved one whose action has not started, "
            why += "can be cancelled"
        else:
            why = "only a pending request can be approved or rejected"
        super().__init__(
            f"request {request_id}: is {current}, so it cannot become {wanted} ({why})"
        )


class DecisionRefusedError(VaultError):
    """A person's decision or vote does not count (who they are, a missing reason, the
    order of stages); nothing was recorded."""

    def __init__(self, request_id: str, who: str, problem: str) -> None:
        self.request_id = request_id
        self.who = who
        self.problem = problem
        super().__init__(f"request {request_id}: {problem}")


class UnprovenDecisionError(DecisionRefusedError):
    """An approval under ``authenticated:`` that did not come proven through the service
    (a note edit, ``--by``, a script's name): the request stays pending."""


class NotRetryableError(VaultError):
    """``retry`` of a request that did not fail or time out, or that was retried already."""

    def __init__(
        self, request_id: str, current: str, retried_as: str | None = None, why: str = ""
    ) -> None:
        self.request_id, self.current, self.retried_as = request_id, current, retried_as
        if not why and retried_as is not None:
            why = f"it was retried already as {retried_as} (retry that one if it fails too)"
        elif not why:
            why = f"it is {current}; only a failed or timed-out request can be retried"
        super().__init__(f"request {request_id}: cannot be retried: {why}")


class NotReportableError(VaultError):
    """``done`` of a request whose outcome is not the caller's to report: one the daemon
    runs (it has an executor), one not approved, or one whose outcome is recorded already."""

    def __init__(self, request_id: str, current: str, why: str) -> None:
        self.request_id, self.current = request_id, current
        super().__init__(
            f"request {request_id}: is {current}, so no outcome can be reported ({why})"
        )


class NotAnApproverError(DecisionRefusedError):
    """Someone outside a rule's ``approvers`` tried to decide."""

    def __init__(self, request_id: str, who: str, approvers: frozenset[str], rule: str) -> None:
        self.approvers = approvers
        names = ", ".join(sorted(approvers)) or "nobody"
        super().__init__(
            request_id,
            who,
            f"{who or 'an unnamed person'} may not decide it; "
            f"rule {rule} allows {names} (decide with --by NAME / by=NAME as one of them)",
        )


class DaemonRunningError(VaultError):
    """Another daemon holds the vault's lock."""

    def __init__(self, lock: Path | str, holder: str) -> None:
        self.lock = lock  # the lock's folder, or the server journal's URL (no password)
        super().__init__(
            f"{lock}: another hitl-vault daemon is already running on this vault ({holder}); "
            "stop it first, or run this one on another vault"
        )


class WaitTimeoutError(VaultError, TimeoutError):
    """``wait`` gave up before anybody decided; the request is still pending."""

    def __init__(self, request_id: str, seconds: float) -> None:
        self.request_id = request_id
        super().__init__(
            f"request {request_id}: still pending after waiting {seconds:g}s "
            "(wait again, or give a longer timeout)"
        )


class Refused(VaultError):
    """The request will never run: the base of :class:`Rejected` and :class:`TimedOut`."""

    def __init__(self, request: Any, message: str) -> None:
        self.request = request
        super().__init__(message)


class Rejected(Refused):
    """A human or a rule rejected the request, or its requester cancelled it."""


class TimedOut(Refused):
    """Nobody decided before the request expired."""


class CatchUpError(VaultError):
    """``run --once`` could not handle some files, even after retrying."""

    def __init__(self, paths: list[str]) -> None:
        self.paths = paths
        shown = ", ".join(paths[:5]) + (f" and {len(paths) - 5} more" if len(paths) > 5 else "")
        super().__init__(
            f"could not handle {shown}, even after retrying (the log above says why; "
            "everything else was done: run `hitl-vault run --once` again once it is fixed)"
        )


class JournalDamagedError(VaultError):
    """The journal file is not a database any more, or SQLite found it damaged."""

    def __init__(self, path: Path, problem: str) -> None:
        self.path = path
        super().__init__(
            f"{path}: the journal cannot be read ({problem}); restore .hitl/ from the backup "
            "taken together with the vault (never .hitl/ alone), or move it aside to start anew"
        )


class JournalMissingError(JournalDamagedError):
    """The journal file was deleted (or replaced) while a process had it open: what it would
    write now no other process would see, and they would find its requests "not found".
    ``rescued``: where a copy of what that process still held was saved."""

    def __init__(self, path: Path, rescued: Path | None = None) -> None:
        self.path, self.rescued = path, rescued
        kept = f" (a copy of what it held is saved in {rescued})" if rescued else ""
        back = (
            f"move {rescued.name} to {path.name} (or restore .hitl/ from the backup taken "
            "with the vault)"
            if rescued
            else "restore .hitl/ from the backup taken with the vault"
        )
        fresh = (
            f" (or, to start a fresh journal instead, move {rescued.name} out of {path.parent})"
            if rescued
            else ""
        )
        VaultError.__init__(
            self,
            f"{path}: the journal was deleted or replaced while hitl-vault was running{kept}; "
            f"nothing more is recorded until it is back. Stop every hitl-vault process (the "
            f"daemon too), {back}, then run `hitl-vault verify`{fresh}",
        )


class JournalMovedError(JournalMissingError):
    """The journal a process had open now lives elsewhere: the vault (or its ``.hitl/``
    folder) was moved or renamed while the process ran. Nothing is lost and no copy is made;
    the process stops, and is started again from the vault's new place."""

    def __init__(self, path: Path) -> None:
        self.path, self.rescued = path, None
        where = path.parent.parent if path.parent.name == ".hitl" else path.parent
        VaultError.__init__(
            self,
            f"{path}: the vault moved from {where} while hitl-vault was running; nothing more "
            "is recorded here: start it again from its new place",
        )


class JournalUnavailableError(VaultError):
    """The journal could not be read or written just now (held by another process for too
    long, a full disk, an I/O error): nothing was recorded, and trying again may work."""

    def __init__(self, path: Path, problem: str) -> None:
        self.path = path
        super().__init__(
            f"{path}: the journal cannot be used just now ({problem}); nothing was recorded: "
            "try again (free disk space, or stop what holds it)"
        )


class ServerUnavailableError(JournalUnavailableError):
    """The journal's PostgreSQL server cannot be reached or used just now (down, refusing the
    connection, a lock held too long): nothing was recorded, and trying again may work;
    ``at_commit``: the connection was lost while committing, so the write may have been
    recorded after all. ``where`` is the server's URL without its password."""

    def __init__(self, where: str, problem: str, at_commit: bool = False) -> None:
        self.path, self.where, self.at_commit = Path(where), where, at_commit
        said = (
            "the server may have recorded it before the connection was lost: look (show, "
            "list) before trying again"
            if at_commit
            else "nothing was recorded: try again"
        )
        VaultError.__init__(
            self,
            f"{where}: the journal cannot be used just now ({problem}); {said} (check that "
            "the server runs and admits this host: pg_hba.conf, ~/.pgpass)",
        )


class NotLeaderError(ServerUnavailableError):
    """A write only the vault's leader may make, from a host whose term is over (another
    host leads now, or this one's lease ran out): refused inside the database, nothing was
    recorded. The leader of the current term does this work instead."""

    def __init__(self, where: str, term: int) -> None:
        self.path, self.where, self.at_commit, self.term = Path(where), where, False, term
        VaultError.__init__(
            self,
            f"{where}: this host no longer leads the vault (its term {term} is over); nothing "
            "was recorded: the host that leads now does this work",
        )


class ServerDamagedError(JournalDamagedError):
    """The journal's PostgreSQL server holds something hitl-vault did not write, or says its
    data is damaged. ``where`` is the server's URL without its password."""

    def __init__(self, where: str, problem: str) -> None:
        self.path, self.where = Path(where), where
        VaultError.__init__(
            self,
            f"{where}: the journal cannot be read ({problem}); restore the database from a "
            "backup, then run `hitl-vault verify`",
        )


class ServerJournalError(VaultError):
    """A journal on a server that cannot be used as this host is set up: a schema to create
    or upgrade, a newer schema than this code, another vault's database, or a host whose
    ``.hitl/`` says its journal is on a server but was given none (or the other way round)."""

    def __init__(self, where: str, problem: str, fix: str) -> None:
        self.where, self.problem, self.fix = where, problem, fix
        super().__init__(f"{where}: {problem} ({fix})")


class DuplicateError(VaultError):
    """The journal has a request with this id, or made from this Inbox proposal, already."""

    def __init__(self, what: str) -> None:
        self.what = what
        super().__init__(f"{what} is recorded already")


class NotRunnableError(VaultError):
    """An approved request the journal's entries or its note do not let run."""

    def __init__(self, request_id: str, problem: str) -> None:
        self.request_id, self.problem = request_id, problem
        super().__init__(
            f"request {request_id}: not run: {problem} (`hitl-vault verify` shows what "
            "disagrees; restore .hitl/ and the vault from the same moment, or submit it anew)"
        )


class ParamsChangedError(VaultError):
    """An approval would run other params than those the approver was shown."""

    def __init__(self, request_id: str, problem: str, fix: str) -> None:
        self.request_id = request_id
        super().__init__(f"request {request_id}: not approved: {problem} ({fix})")


class ServiceError(VaultError):
    """The service refused a request (``status``: the HTTP status it answered), or could
    not be reached (``status`` 0); the message is the service's own, or says what failed."""

    def __init__(self, message: str, status: int = 0) -> None:
        self.status = status
        super().__init__(message)


class NotAuthenticatedError(ServiceError):
    """No token, or one the service does not know, or a revoked or expired one (401)."""

    def __init__(self, message: str = "", status: int = 401) -> None:
        super().__init__(
            message
            or "the service did not accept the token (unknown, revoked or expired): ask the "
            "service's owner for one (`hitl-vault token add NAME --role ...`)",
            status,
        )


class ForbiddenError(ServiceError):
    """The token is good, but its role or its actions do not allow this (403)."""

    def __init__(self, message: str, status: int = 403) -> None:
        super().__init__(message, status)


class BodyTooLargeError(ServiceError):
    """The body sent was over the service's limit (413)."""

    def __init__(self, message: str, status: int = 413) -> None:
        super().__init__(message, status)


class TooManyAttemptsError(ServiceError):
    """Too many failed sign-ins from this address: refused for a while (429)."""

    def __init__(self, message: str, status: int = 429) -> None:
        super().__init__(message, status)
