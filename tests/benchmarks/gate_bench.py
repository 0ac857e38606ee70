"""The agent gate's cost per tool call: `hitl-vault gate` on an allowed tool against
`python -c pass` from the same environment, as whole processes in interleaved pairs
(gate, pass, gate, pass, ...), locally and with `--server` (a real `hitl-vault serve`).

Run:  python tests/benchmarks/gate_bench.py [-n RUNS]

Prints, for each, the median wall and CPU time of both and the median of the pairwise
ratios, and whether the wall ratio is within the goal (4x). Not a pytest module;
everything happens in a temporary folder that is removed at the end.

The environment is an install, not this checkout's venv: a development venv made with
``pip install -e .`` has a ``.pth`` file that imports an editable-install finder (and
pathlib, re, urllib.parse with it) at every Python start, ``python -c pass`` included.
That doubles the baseline (about 25 ms instead of 13 ms here) and hides the gate's own
cost of those imports in it, so the ratio read small. So the bench makes a plain venv
whose ``python -c pass`` loads nothing of hitl-vault's, puts the package and its
dependencies on its path as an install does (plain entries, no finder), writes the
``hitl-vault`` command as pip writes a console script, and keeps compiled modules
(``.pyc``) as an install does.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

GOAL = 4.0
# As pip writes a console script.
SCRIPT = """\
#!{python}
# -*- coding: utf-8 -*-
import re
import sys
from hitl_vault.cli.entry import main
if __name__ == '__main__':
    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])
    sys.exit(main())
"""
# As installed: Python keeps compiled modules (.pyc), as pip arranges for an install;
# with PYTHONDONTWRITEBYTECODE set, every start would compile hitl_vault from source.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def installed(where: Path) -> tuple[Path, Path]:
    """(python, hitl-vault) of a plain venv in ``where`` that has hitl-vault and its
    dependencies on its path, with no ``.pth`` that runs code."""
    import hitl_vault

    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True)
    python = where / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
    )  # fmt: skip
    package_parent = Path(hitl_vault.__file__).resolve().parent.parent
    deps = Path(sysconfig.get_paths()["purelib"])
    lines = dict.fromkeys([str(package_parent), str(deps)])
    (site / "hitl_vault_bench.pth").write_text("\n".join(lines) + "\n", encoding="utf-8")
    command = where / "bin" / "hitl-vault"
    command.write_text(SCRIPT.format(python=python), encoding="utf-8")
    command.chmod(0o755)
    return python, command


def _timed(argv: list[str], stdin: bytes, env: dict[str, str]) -> tuple[float, float]:
    """(wall s, CPU s) of one whole process, with its CPU from the kernel's accounting."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(argv, input=stdin, capture_output=True, check=False, env=env)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{argv} exited {done.returncode}: {done.stderr.decode()}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def compare(
    a: list[str], base: list[str], stdin: bytes, env: dict[str, str], runs: int
) -> dict[str, float]:
    """Medians of ``a`` and ``base`` (wall and CPU) and of their pairwise ratios."""
    for _ in range(2):  # warm the page cache and the .pyc files
        _timed(a, stdin, env)
        _timed(base, b"", env)
    walls: list[tuple[float, float]] = []
    cpus: list[tuple[float, float]] = []
    for _ in range(runs):
        wa, ca = _timed(a, stdin, env)
        wb, cb = _timed(base, b"", env)
        walls.append((wa, wb))
        cpus.append((ca, cb))
    med = statistics.median
    return {
        "a_wall": med(w[0] for w in walls),
        "b_wall": med(w[1] for w in walls),
        "wall_ratio": med(w[0] / w[1] for w in walls),
        "a_cpu": med(c[0] for c in cpus),
        "b_cpu": med(c[1] for c in cpus),
        "cpu_ratio": med(c[0] / c[1] for c in cpus if c[1] > 0),
    }


def show(name: str, r: dict[str, float], goal: bool = True) -> None:
    """One line of figures; ``goal``: whether the 4x goal is this command's."""
    verdict = "within" if r["wall_ratio"] <= GOAL else "OVER"
    said = f" ({verdict} the {GOAL:.0f}x goal)" if goal else ""
    print(
        f"{name}: wall median {r['a_wall'] * 1000:.1f} ms against {r['b_wall'] * 1000:.1f} ms "
        f"for python -c pass, ratio {r['wall_ratio']:.2f}x{said}; "
        f"CPU median {r['a_cpu'] * 1000:.1f} ms against {r['b_cpu'] * 1000:.1f} ms, "
        f"ratio {r['cpu_ratio']:.2f}x"
    )


def hook_call(project: Path, tool: str = "Read") -> bytes:
    """A plain Read inside the project, which the template's rules let through (over
    ``--server``, where no path is resolved, a TodoWrite, which they let through too)."""
    tool_input = (
        {"file_path": str(project / "README.md")}
        if tool == "Read"
        else {"todos": [{"content": "read the README", "status": "pending"}]}
    )
    return json.dumps(
        {
            "session_id": "bench-session",
            "transcript_path": "/tmp/transcript.jsonl",
            "cwd": str(project),
            "permission_mode": "default",
            "hook_event_name": "PreToolUse",
            "tool_name": tool,
            "tool_input": tool_input,
            "tool_use_id": "toolu_bench",
        }
    ).encode()


@contextmanager
def served(command: Path, vault: Path, env: dict[str, str]) -> Iterator[tuple[str, str]]:
    """A real `hitl-vault serve` on 127.0.0.1 (an ephemeral port): (URL, agent token)."""
    from hitl_vault.access.tokens import mint
    from hitl_vault.identity import Role
    from hitl_vault.times import utcnow
    from hitl_vault.vault import Vault

    with Vault(vault) as v:
        _, token = mint(v.engine.journal, "bench-agent", Role.AGENT, now=utcnow(), by="bench")
    log = vault.parent / "serve.log"
    argv = [str(command), "--vault", str(vault), "serve", "--listen", "127.0.0.1:0"]
    with open(log, "wb") as f:
        process = subprocess.Popen(argv, stderr=f, stdin=subprocess.DEVNULL, env=env)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            found = re.search(r"on (http://127\.0\.0\.1:\d+)", log.read_text(errors="replace"))
            if found:
                break
            time.sleep(0.05)  # polling a log file: no event to wait on
        else:
            raise SystemExit(f"hitl-vault serve did not start:\n{log.read_text()}")
        yield found.group(1), token
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(15)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("-n", "--runs", type=int, default=40)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="gate-bench-"))
    try:
        python, command = installed(tmp / "venv")
        vault, project = tmp / "vault", tmp / "project"
        subprocess.run([str(command), "init", str(vault)], check=True, capture_output=True)
        project.mkdir()
        (project / "README.md").write_text("# a project\n", encoding="utf-8")
        stdin = hook_call(project)
        base = [str(python), "-c", "pass"]
        gate = [str(command), "--vault", str(vault), "gate"]
        out = subprocess.run(gate, input=stdin, capture_output=True, check=True, env=ENV)
        assert out.stdout == b"", out  # no decision: the template lets it through
        print(
            f"python {sys.version.split()[0]}, {args.runs} interleaved pairs each, a plain "
            "venv (no editable-install finder), compiled modules (.pyc) kept"
        )
        show("hitl-vault gate (allowed Read)", compare(gate, base, stdin, ENV, args.runs))
        with served(command, vault, ENV) as (url, token):
            env = {**ENV, "HITL_VAULT_TOKEN": token}
            remote = [str(command), "gate", "--server", url]
            todo = hook_call(project, "TodoWrite")
            out = subprocess.run(remote, input=todo, capture_output=True, check=True, env=env)
            assert out.stdout == b"", out
            timed = compare(remote, base, todo, env, args.runs)
            show("hitl-vault gate --server (allowed TodoWrite)", timed)
        version = [str(command), "--version"]
        show("hitl-vault --version", compare(version, base, b"", ENV, args.runs), goal=False)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
