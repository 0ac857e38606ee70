"""The agent gate's cost per tool call: `hitl-vault gate` on an allowed tool against
`python -c pass` from the same environment, run in turn (gate, pass, gate, pass, ...).

Run:  python tests/benchmarks/gate_bench.py [-n RUNS]

Prints the median wall time of each, the median of the pairwise ratios, and whether
that ratio is within the goal (4x). Also times `hitl-vault --version` the same way, so
that a change that slows every command shows. Not a pytest module; everything happens
in a temporary folder that is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GOAL = 4.0
CALL = {
    "session_id": "bench-session",
    "transcript_path": "/tmp/transcript.jsonl",
    "cwd": "/tmp",
    "permission_mode": "default",
    "hook_event_name": "PreToolUse",
    "tool_name": "Read",
    "tool_input": {"file_path": "/etc/hosts"},
    "tool_use_id": "toolu_bench",
}
RULES = """\
rules:
  - name: reads
    action: [Read, Glob, Grep, LS]
    decision: allow
    risk: low
  - name: pushes
    action: Bash
    params: {command: "re:git push.*"}
    decision: ask
"""


# As installed: Python keeps compiled modules (.pyc), as pip arranges for an install;
# with PYTHONDONTWRITEBYTECODE set, every start would compile hitl_vault from source.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def _wall(argv: list[str], stdin: bytes) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, input=stdin, capture_output=True, check=False, env=ENV)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{argv} exited {done.returncode}: {done.stderr.decode()}")
    return elapsed


def compare(a: list[str], stdin: bytes, runs: int) -> tuple[float, float, float]:
    """Median wall seconds of ``a``, of ``python -c pass``, and the median pairwise ratio."""
    base = [sys.executable, "-c", "pass"]
    for _ in range(2):  # warm the page cache and the .pyc files
        _wall(a, stdin)
        _wall(base, b"")
    times_a, times_b, ratios = [], [], []
    for _ in range(runs):
        ta, tb = _wall(a, stdin), _wall(base, b"")
        times_a.append(ta)
        times_b.append(tb)
        ratios.append(ta / tb)
    return statistics.median(times_a), statistics.median(times_b), statistics.median(ratios)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--runs", type=int, default=40)
    args = parser.parse_args()
    command = Path(sys.executable).with_name("hitl-vault")
    if not command.exists():
        raise SystemExit(f"{command} is missing: install the package (pip install -e .)")
    with tempfile.TemporaryDirectory() as tmp:
        vault = Path(tmp) / "vault"
        subprocess.run([str(command), "init", str(vault)], check=True, capture_output=True)
        (vault / "hitl-vault.yaml").write_text(RULES, encoding="utf-8")
        gate = [str(command), "--vault", str(vault), "gate"]
        stdin = json.dumps(CALL).encode()
        out = subprocess.run(gate, input=stdin, capture_output=True, check=True, env=ENV).stdout
        assert json.loads(out)["hookSpecificOutput"]["permissionDecision"] == "allow", out
        print(
            f"python {sys.version.split()[0]}, {args.runs} interleaved runs each, "
            "compiled modules (.pyc) kept as an install keeps them"
        )
        for name, argv, data in (
            ("hitl-vault gate (allowed Read)", gate, stdin),
            ("hitl-vault --version", [str(command), "--version"], b""),
        ):
            a, b, ratio = compare(argv, data, args.runs)
            verdict = "within" if ratio <= GOAL else "OVER"
            print(
                f"{name}: median {a * 1000:.1f} ms; python -c pass: median {b * 1000:.1f} ms; "
                f"ratio {ratio:.2f}x ({verdict} the {GOAL:.0f}x goal)"
                if name.startswith("hitl-vault gate")
                else f"{name}: median {a * 1000:.1f} ms; python -c pass: median "
                f"{b * 1000:.1f} ms; ratio {ratio:.2f}x"
            )


if __name__ == "__main__":
    main()
