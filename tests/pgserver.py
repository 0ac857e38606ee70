"""A throwaway PostgreSQL server for the tests: ``initdb`` into a temp folder, ``pg_ctl``
start on a Unix socket there (no TCP port), trust authentication, no fsync. Run as a user
that is not root, as PostgreSQL requires: under root, as ``postgres`` (``runuser``).

``.ci/run`` starts one (``python tests/pgserver.py start``, which prints the URL and the
folder) and exports the URL in ``HITL_VAULT_TEST_PG``; a test session given none starts its
own (the ``pg_url`` fixture in conftest.py) and stops it at the end.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

# Where the tests read a server's URL; a database made for each test inside it.
TEST_PG_ENV = "HITL_VAULT_TEST_PG"
_BIN_DIRS = ("/usr/local/bin", "/usr/lib/postgresql/15/bin")
_USER = "hitl"  # the server's superuser (trust authentication, only through the socket)


@dataclass(frozen=True)
class Server:
    """A running throwaway server: its folder (data, socket, log) and a URL for it."""

    folder: Path
    url: str

    def stop(self) -> None:
        """Stop it at once and remove its folder."""
        data = self.folder / "data"
        if (data / "postmaster.pid").exists():
            _run(["pg_ctl", "stop", "-D", str(data), "-m", "immediate", "-w"], self.folder)
        shutil.rmtree(self.folder, ignore_errors=True)


def _tool(name: str) -> str | None:
    for folder in _BIN_DIRS:
        if os.access(Path(folder) / name, os.X_OK):
            return str(Path(folder) / name)
    return shutil.which(name)


def _as_user(folder: Path) -> list[str]:
    """The prefix that runs a command as a user PostgreSQL accepts (``postgres`` under root)."""
    if os.geteuid() != 0:
        return []
    entry = pwd.getpwnam("postgres")
    os.chown(folder, entry.pw_uid, entry.pw_gid)
    return ["runuser", "-u", "postgres", "--"]


def _run(command: list[str], folder: Path) -> subprocess.CompletedProcess[str]:
    tool = _tool(command[0])
    if tool is None:
        raise FileNotFoundError(f"{command[0]} not found in {', '.join(_BIN_DIRS)} or PATH")
    return subprocess.run(
        [*_as_user(folder), tool, *command[1:]],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        cwd=folder,
    )


def start(parent: Path | None = None) -> Server:
    """Start a server; raises (FileNotFoundError, KeyError, CalledProcessError) saying why
    none can be started here."""
    folder = Path(tempfile.mkdtemp(prefix="hitl-pg-", dir=parent))
    folder.chmod(0o755)
    try:
        _run(["initdb", "-D", "data", "-U", _USER, "--auth=trust", "-E", "UTF8",
              "--locale=C.UTF-8", "--no-sync"], folder)  # fmt: skip
        options = (
            f"-k {folder} -c listen_addresses='' -c fsync=off -c synchronous_commit=off "
            "-c full_page_writes=off -c max_connections=200"
        )
        _run(["pg_ctl", "start", "-D", "data", "-l", "log", "-w", "-t", "60", "-o", options],
             folder)  # fmt: skip
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return Server(folder, f"postgresql://{_USER}@/postgres?host={folder}")


def why_not(e: BaseException) -> str:
    """What to say when no server could be started."""
    if isinstance(e, subprocess.CalledProcessError):
        return f"{e.cmd[0]} failed: {(e.stderr or e.stdout or '').strip()[-400:]}"
    return str(e)


def main(argv: list[str]) -> int:
    """``start``: start one, print ``URL FOLDER``; ``stop FOLDER``: stop it."""
    if argv[:1] == ["start"]:
        server = start()
        print(server.url, server.folder)
        return 0
    if argv[:1] == ["stop"] and len(argv) == 2:
        Server(Path(argv[1]), "").stop()
        return 0
    print("usage: pgserver.py start | stop FOLDER", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))


def fresh_journal(url: str) -> str:
    """A URL for an empty journal of its own on the server at ``url``: a new schema there,
    with the tables ``db migrate`` makes (much quicker than a database of its own)."""
    import psycopg

    from hitl_vault.journal.pg_migrate import migrate

    schema = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}".encode())
    joined = "&" if "?" in url else "?"
    made = f"{url}{joined}options=-csearch_path%3D{schema}"
    migrate(made)
    return made
