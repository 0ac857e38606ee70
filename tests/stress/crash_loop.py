"""Heavier crash loop than the suite's: many SIGKILLs of a real daemon, then the figures.

    python tests/stress/crash_loop.py [--kills 200] [--seed 1] [--min 0.05] [--max 0.7]

Each round starts ``hitl-vault run`` on a fresh vault, streams approvals into
it, and SIGKILLs it after a random time (sometimes before it is even
watching, often with actions running); a last daemon then catches up. Exit
status 0 when every guarantee held: nothing ran twice, every non-idempotent
request executed once or failed as interrupted, every idempotent one executed
with its key recorded once, every note shows its final status, verify is clean.
Not collected by pytest (the suite runs a 20-kill version in tests/test_crash.py; .ci/run
runs this one with 100 kills).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.test_crash import crash_loop


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--min", type=float, default=0.05, help="shortest life of a daemon (s)")
    parser.add_argument("--max", type=float, default=0.7, help="longest life of a daemon (s)")
    parser.add_argument("--keep", action="store_true", help="keep the vault and print its path")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="hitl-crash-"))
    figures = crash_loop(base / "vault", args.kills, args.seed, (args.min, args.max))
    print(figures.show())
    for problem in figures.problems:
        print("PROBLEM:", problem)
    print(f"{len(figures.problems)} problems" + (f"; vault kept at {base}" if args.keep else ""))
    if not args.keep:
        import shutil

        shutil.rmtree(base, ignore_errors=True)
    return 1 if figures.problems else 0


if __name__ == "__main__":
    sys.exit(main())
