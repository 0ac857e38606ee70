"""Where a note-save's decision spends its time inside a real ``hitl-vault serve``, idle and
under load: the instrument behind docs/speed.md's account of the loaded note-save.

Run:  python tests/benchmarks/decision_trace.py [--rate 200] [--samples 40]

Not a pytest module. The service is ``hitl-vault serve`` started through this file
(``--serve``), which first wraps a few of the daemon's and the long-polls' methods with
timestamps and writes them out when the service stops (SIGTERM). The saves are
those of serve_bench.py's section 3: a note saved with ``status: approved`` while a
long-poll waits on its request, ten idle, then ten with 200 long-polls open and a client
submitting ``--rate`` a second, in turns. Both processes read ``time.perf_counter``
(CLOCK_MONOTONIC), so the bench's moments and the service's line up.

Printed for idle and for loaded saves, the median and mean (ms) of each stage on the way
from the save to the answer:

  heard     the save -> the daemon is told of the note (``Daemon.notice``, on the
            watcher's thread)
  queued    -> the step that looks at it begins (0 when the step under way takes it)
  prefix    -> that step reaches its look at the note (the parts of the step before it)
  look      -> the look ends (the decision made, not yet committed)
  published -> the long-polls on the request are told (committed, claimed, published)
  answered  -> the waiting client has the answer (read, sent, received)

and the share of the time around the saves that the daemon spent in steps, with the parts
of those steps (named as the daemon names them in its log when one fails; "looking at
notes" holds the telling that follows its commit).
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # (mypy reads the tests as a package; this file runs as a script)
    from tests.benchmarks import serve_bench as sb
else:
    sys.path.insert(0, str(Path(__file__).parent))
    import serve_bench as sb

TRACE_ENV = "HITL_DECISION_TRACE"  # where the served process writes its timestamps
STAGES = ("heard", "queued", "prefix", "look", "published", "answered")


# --- the service's side --------------------------------------------------------------------


def _instrumented(trace: Path) -> None:
    """Wrap the methods on a decision's way with timestamps; write them to ``trace`` at exit.

    A record is (what, when, which): ``heard`` (a note given to the daemon, by name),
    ``step`` and ``stepped`` (a daemon step begins, ends), ``look`` and ``looked`` (the
    daemon's look at a note, by name), ``told`` (a long-poll's request moved, by id), and
    ``part`` (a part of a step: its name and its length in ms)."""
    from hitl_vault.daemon.dashboard import DashboardWriter
    from hitl_vault.daemon.loop import Daemon
    from hitl_vault.daemon.paths import Looker
    from hitl_vault.serve.waiters import Waiters

    records: list[tuple[str, float, str]] = []
    now = time.perf_counter

    def wrap(cls: type, name: str, *, before: str | None = None, after: str | None = None) -> None:
        """Record ``before`` as the method starts and ``after`` as it ends: with the name of
        the file when the method's first argument is a path, else with nothing."""
        inner = getattr(cls, name)

        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            which = args[0].stem if args and isinstance(args[0], Path) else ""
            if before is not None:
                records.append((before, now(), which))
            try:
                return inner(self, *args, **kwargs)
            finally:
                if after is not None:
                    records.append((after, now(), which))

        setattr(cls, name, wrapper)

    def timed(cls: type, name: str, label: Callable[..., str]) -> None:
        """Record a ``part`` of a step: the method's run, named by ``label(*args)``."""
        inner = getattr(cls, name)

        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            start = now()
            try:
                return inner(self, *args, **kwargs)
            finally:
                records.append(("part", start, f"{label(*args)}\t{(now() - start) * 1000:.3f}"))

        setattr(cls, name, wrapper)

    def told(waiters: Any, request_id: str, *, look: bool = False) -> None:
        if look and request_id in waiters._by_id:  # a long-poll waits on it
            records.append(("told", now(), request_id))
        poke(waiters, request_id, look=look)

    wrap(Daemon, "notice", before="heard")
    wrap(Daemon, "run_once", before="step", after="stepped")
    wrap(Looker, "look", before="look", after="looked")
    timed(Daemon, "_guarded", lambda what, *_: what)
    timed(Daemon, "_look_safely", lambda *_: "looking at notes")
    timed(DashboardWriter, "step", lambda *_: "the dashboard")
    poke = Waiters.poke
    Waiters.poke = told  # type: ignore[method-assign,assignment]

    def write() -> None:
        trace.write_text("".join(f"{w}\t{t:.6f}\t{x}\n" for w, t, x in records))

    atexit.register(write)


def serve(argv: list[str]) -> None:
    """``hitl-vault serve`` (``argv``: its command line after the program), instrumented."""
    _instrumented(Path(os.environ[TRACE_ENV]))
    sys.argv = ["hitl-vault", *argv]
    from hitl_vault.cli.entry import main

    main()


# --- the bench's side ----------------------------------------------------------------------


class Saves:
    """Note-saves as serve_bench's section 3 takes them, each kept with its moments: the
    request, its note's name, when the save was made and when the answer came, loaded or
    not (``under_load`` asks for an idle turn, then a loaded one, in turns)."""

    def __init__(self) -> None:
        self.taken: list[tuple[str, str, float, float, bool]] = []
        self._turns = 0

    def __call__(self, vault: Path, port: int, agent: str, n: int) -> list[float]:
        loaded = self._turns % 2 == 1
        self._turns += 1
        taken = sb.note_saves(vault, port, agent, n)
        self.taken += [(*save, loaded) for save in taken]
        return [(back - saved) * 1000 for _, _, saved, back in taken]


def stages(
    records: list[tuple[str, float, str]], save: tuple[str, str, float, float, bool]
) -> dict[str, float] | None:
    """The stages of one save (ms), from the service's records; None if one is missing."""
    request_id, stem, saved, answered, _ = save
    after = [r for r in records if saved <= r[1] <= answered + 0.05]
    first: dict[str, float] = {}
    for what, at, which in after:
        wanted = what in ("heard", "look", "looked") and which == stem
        if (wanted or (what == "told" and which == request_id)) and what not in first:
            first[what] = at
    if len(first) < 4:
        return None
    # The step that looked: the last to begin before the look (maybe one under way when the
    # note was heard, which then took it without a wait).
    step = max((at for what, at, _ in records if what == "step" and at <= first["look"]), default=0)
    began = max(step, first["heard"])
    ms = {
        "heard": first["heard"] - saved,
        "queued": began - first["heard"],
        "prefix": first["look"] - began,
        "look": first["looked"] - first["look"],
        "published": first["told"] - first["looked"],
        "answered": answered - first["told"],
    }
    return {k: v * 1000 for k, v in ms.items()}


def steps_around(
    records: list[tuple[str, float, str]], windows: list[tuple[float, float]]
) -> tuple[float, dict[str, float]]:
    """The share of ``windows`` the daemon spent in steps, and the ms of each part."""

    def inside(at: float) -> bool:
        return any(a <= at <= b for a, b in windows)

    spent, parts, began = 0.0, defaultdict[str, float](float), None
    for what, at, which in records:
        if what == "step":
            began = at
        elif what == "stepped" and began is not None:
            spent += (at - began) if inside(began) else 0
            began = None
        elif what == "part" and inside(at):
            name, ms = which.split("\t")
            parts[name] += float(ms)
    total = sum(b - a for a, b in windows)
    return (spent / total if total else float("nan")), dict(parts)


def main() -> int:
    if sys.argv[1:2] == ["--serve"]:
        serve(sys.argv[2:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=200.0, help="submits a second (loaded)")
    parser.add_argument("--samples", type=int, default=40, help="saves of each kind")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="hv-trace-"))
    trace = tmp / "trace.tsv"
    os.environ[TRACE_ENV] = str(trace)
    saves = Saves()
    print(f"# note-save -> decision inside hitl-vault serve: {os.cpu_count()} cores")
    try:
        with sb.served(tmp, (sys.executable, __file__, "--serve")) as (proc, port, agent, _):
            api = sb.Api(port, agent)
            held = [api.submit(f"held{i}") for i in range(200)]
            api.close()
            vault = tmp / "vault"
            idle, loaded, busy = sb.under_load(
                vault, port, agent, held, args.rate, args.samples, proc.pid, saves
            )
        lines = (line.split("\t", 2) for line in trace.read_text().splitlines())
        records = sorted(((w, float(t), x) for w, t, x in lines), key=lambda r: r[1])
        print(
            f"idle {sb.med(idle):.1f} ms, at {args.rate:.0f} submits a second "
            f"{sb.med(loaded):.1f} ms: {sb.med(loaded) / sb.med(idle):.2f}x; the service "
            f"used {busy:.0f}% of a core meanwhile"
        )
        for kind, is_loaded in (("idle", False), ("loaded", True)):
            taken = [s for s in saves.taken if s[4] is is_loaded]
            found = [x for x in (stages(records, s) for s in taken) if x is not None]
            cells = "  ".join(
                f"{k} {statistics.median(v):.2f}/{statistics.mean(v):.2f}"
                for k in STAGES
                for v in ([x[k] for x in found],)
            )
            print(f"{kind:7s} ({len(found)} of {len(taken)} traced, median/mean ms): {cells}")
            windows = [(s[2] - 0.08, s[3]) for s in taken]
            share, parts = steps_around(records, windows)
            print(
                f"        the daemon in steps {share:.0%} of the time around these saves "
                "(from 80 ms before each, its submit, to its answer):"
            )
            for name, ms in sorted(parts.items(), key=lambda kv: -kv[1])[:8]:
                print(f"          {ms:7.1f} ms  {name}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
