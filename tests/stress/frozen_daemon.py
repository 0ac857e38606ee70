"""Many approvals saved while a real daemon is frozen (SIGSTOP), then SIGCONT: all run once.

    python tests/stress/frozen_daemon.py [--count 1000]

The suite runs the same check with 300 approvals (tests/test_crash.py); .ci/run runs
this one with 1,000, outside the suite. Exit status 0 when every approval ran exactly
once and every note reached Done/; an assertion names what broke otherwise.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from hitl_vault.cli.template import init_vault
from tests.test_crash import frozen_approvals


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--count", type=int, default=1000, help="approvals saved while frozen")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="hitl-frozen-"))
    try:
        init_vault(base / "vault")
        started = time.monotonic()
        frozen_approvals(base / "vault", args.count)
        print(f"{args.count} approvals ran once each ({time.monotonic() - started:.1f}s)")
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
