"""hitl-vault benchmarks: decision latency against a measured floor, throughput, burst and scale.

Run:  python tests/benchmarks/bench.py [--quick] [--profile DIR]

Not a pytest module (the name does not match test_*.py). Everything happens in
temporary directories that are removed at the end; every daemon thread and
subprocess started here is stopped here.

Sections
  1. floor      bare watchdog Observer: in-place save -> callback, + one libyaml
                (CSafeLoader) parse of the frontmatter + one fsync'd append
  2. latency    in-place save of `status: approved` -> in-process @vault.action
                handler starts (daemon in a thread of this process); also a
                `hitl-vault run` subprocess with a `run:` executor (start time
                written by the executor with time.time())
  3. submit     Vault.submit requests/s from 1 process and from 4 processes,
                checking no lost or duplicate ids (notes, journal rows, chain)
  4. burst      N pending notes approved in one go; decisions/s until the last
                handler has started. The saves come from another process, as a
                bulk paste in Obsidian, a git pull or a sync tool's would; then
                again from a thread of the daemon's own process, for comparison
  5. scale      `hitl-vault run --once` wall time over N pending; a `hitl-vault run`
                daemon's VmRSS and idle CPU (utime+stime) with N pending

--profile DIR writes cProfile data (daemon thread for 2 and 4, the submit loop,
and `run --once` for 5) to DIR and prints the top functions.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import http.server
import io
import json
import logging
import multiprocessing as mp
import os
import platform
import pstats
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

import hitl_vault
from hitl_vault import Vault
from hitl_vault.cli.template import init_vault
from hitl_vault.daemon.loop import Daemon

ACTION = "bench"
CLK_TCK = os.sysconf("SC_CLK_TCK")

# --------------------------------------------------------------------------- helpers


def pct(values: list[float], p: float) -> float:
    """The p-th percentile (nearest rank on the sorted values)."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = max(0, min(len(s) - 1, round(p / 100 * (len(s) - 1))))
    return s[k]


@dataclass
class Dist:
    """A distribution of latencies, in milliseconds."""

    label: str
    ms: list[float] = field(default_factory=list)
    missed: int = 0  # samples that never completed (timed out)

    @property
    def median(self) -> float:
        return statistics.median(self.ms) if self.ms else float("nan")

    @property
    def p99(self) -> float:
        return pct(self.ms, 99)

    def row(self) -> str:
        if not self.ms:
            return f"  {self.label:<58} {'(no samples)':>10}  missed={self.missed}"
        extra = f"  missed={self.missed}" if self.missed else ""
        return (
            f"  {self.label:<58} {len(self.ms):>5} {min(self.ms):>8.2f} {self.median:>8.2f} "
            f"{statistics.fmean(self.ms):>8.2f} {pct(self.ms, 90):>8.2f} {self.p99:>8.2f} "
            f"{max(self.ms):>8.2f}{extra}"
        )


DIST_HEADER = (
    f"  {'(milliseconds)':<58} {'n':>5} {'min':>8} {'median':>8} {'mean':>8} {'p90':>8} "
    f"{'p99':>8} {'max':>8}"
)


class LogCapture(logging.Handler):
    """Collects WARNING+ records from hitl_vault and watchdog loggers (in this process)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = f"{record.levelname} {record.name}: {record.getMessage()}"
        if record.exc_info:
            text += " [with traceback]"
        self.records.append(text)

    @contextlib.contextmanager
    def attached(self) -> Iterator[LogCapture]:
        loggers = [logging.getLogger(n) for n in ("hitl_vault", "watchdog")]
        for lg in loggers:
            lg.addHandler(self)
        try:
            yield self
        finally:
            for lg in loggers:
                lg.removeHandler(self)


def summarize_logs(lines: list[str], limit: int = 4) -> list[str]:
    """Group log lines by their gist (request ids and paths stripped) with counts."""
    import re

    def gist(line: str) -> str:
        line = re.sub(r"\d{8}T\d{6}Z-[\w-]+?-[0-9a-f]{6}", "<id>", line)
        return line[:160]

    counts = Counter(gist(x) for x in lines)
    return [f"{n:>5} x {g}" for g, n in counts.most_common(limit)]


def machine_info(tmp: Path) -> list[str]:
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    fs = "?"
    with contextlib.suppress(OSError):
        best = ""
        real = str(tmp.resolve())
        for line in Path("/proc/mounts").read_text().splitlines():
            dev, mnt, typ, opts, *_ = line.split()
            if (real == mnt or real.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
                best, fs = mnt, f"{typ} on {mnt} ({dev}, {opts.split(',')[0]})"
    try:
        affinity: int | None = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count()
    import watchdog.version

    where = Path(hitl_vault.__file__).resolve().parent
    rev = subprocess.run(
        ["git", "-C", str(where), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    if rev:
        dirty = subprocess.run(
            ["git", "-C", str(where), "status", "--porcelain", "."], capture_output=True, text=True
        ).stdout.strip()
        rev = f"git {rev}" + (" + uncommitted changes" if dirty else "")
    return [
        f"code:        hitl_vault from {where} ({rev or 'not a git checkout'})",
        f"CPU:         {model}; {os.cpu_count()} logical cores ({affinity} usable)",
        f"OS:          {platform.system()} {platform.release()}",
        f"Python:      {platform.python_version()} ({sys.executable})",
        f"temp dir:    {tmp} on {fs}",
        f"versions:    hitl-vault {getattr(hitl_vault, '__version__', '?')}, watchdog "
        f"{watchdog.version.VERSION_STRING}, PyYAML {yaml.__version__} "
        f"(libyaml: {yaml.__with_libyaml__}), SQLite {sqlite3.sqlite_version}",
    ]


def approved_bytes(raw: bytes) -> bytes:
    """The note with `status: pending` changed to `status: approved` (in the frontmatter)."""
    out = raw.replace(b"\nstatus: pending", b"\nstatus: approved", 1)
    assert out != raw, "no `status: pending` line in the note"
    return out


def save_in_place(path: Path, data: bytes) -> None:
    """An editor's in-place save: open 'w' (truncate), write, close."""
    with open(path, "wb") as f:
        f.write(data)


def is_request(path: Path) -> bool:
    """Not the template's folder notes (_README.md) or temp files."""
    return not path.name.startswith(("_", "."))


# --notify: every vault gets three notify targets, two on a local receiver (in a process of
# its own) and one unreachable; the first is told of every step, the others of what waits.
NOTIFY_TARGETS: list[str] = []


def _receive(port: Any, received: Any) -> None:
    """The receiver's process: accept every post (never in the daemon's process)."""

    class Receiver(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", 0)))
            with received.get_lock():
                received.value += 1
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    port.value = server.server_address[1]
    server.serve_forever()


@contextlib.contextmanager
def notify_receiver() -> Iterator[tuple[int, Any]]:
    """A local HTTP server in a process of its own that accepts every post: (port, count)."""
    port, received = mp.Value("i", 0), mp.Value("i", 0)
    proc = mp.Process(target=_receive, args=(port, received), daemon=True)
    proc.start()
    deadline = time.monotonic() + 10
    while not port.value and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        yield port.value, received
    finally:
        proc.terminate()
        proc.join()


def new_vault(parent: Path, name: str) -> Path:
    path = parent / name
    init_vault(path)
    if NOTIFY_TARGETS:  # the first told of every step, the others of what waits (the default)
        events = ["[pending, approved, executed, failed]", "[pending]", "[pending]"]
        entries = "".join(
            f"  - url: {url}\n    on: {on}\n"
            for url, on in zip(NOTIFY_TARGETS, events, strict=True)
        )
        with open(path / "hitl-vault.yaml", "a", encoding="utf-8") as f:
            f.write("\nnotify:\n" + entries)
    return path


def submit_many(vault: Vault, n: int, tag: str = "") -> list[Any]:
    return [
        vault.submit(
            ACTION,
            {"amount": 1000 + i, "recipient": "vendor@example.com", "currency": "USD"},
            summary=f"Bench request {tag}{i}: pay vendor@example.com",
            requested_by="bench",
        )
        for i in range(n)
    ]


def hitl_cmd() -> list[str]:
    """The `hitl-vault` console script next to this Python, else `python -m hitl_vault`."""
    script = Path(sys.executable).with_name("hitl-vault")
    return [str(script)] if script.exists() else [sys.executable, "-m", "hitl_vault"]


CHILDREN: list[subprocess.Popen[bytes]] = []


def spawn(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    CHILDREN.append(proc)
    return proc


def stop_child(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> int | None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    with contextlib.suppress(ValueError):
        CHILDREN.remove(proc)
    return proc.returncode


def wait_for_text(path: Path, text: str, timeout: float, proc: subprocess.Popen[bytes]) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if text in path.read_text(errors="replace"):
                return True
        if proc.poll() is not None:
            return False
        time.sleep(0.01)
    return False


def cpu_ticks(pid: int) -> int:
    fields_ = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields_[11]) + int(fields_[12])  # utime, stime (fields 14, 15)


def proc_status(pid: int, key: str) -> int:
    """A kB value from /proc/PID/status (VmRSS, VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return -1


def log_problems(path: Path) -> list[str]:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    return [
        ln for ln in lines if any(w in ln for w in ("WARNING", "ERROR", "CRITICAL", "Traceback"))
    ]


class Profiler:
    """Optional cProfile capture per section (only when --profile DIR is given)."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder
        self.reports: list[tuple[str, str]] = []
        if folder:
            folder.mkdir(parents=True, exist_ok=True)

    def wrap(self, name: str, target: Callable[..., Any]) -> Callable[..., Any]:
        if not self.folder:
            return target

        def run(*a: Any, **kw: Any) -> Any:
            prof = cProfile.Profile()
            prof.enable()
            try:
                return target(*a, **kw)
            finally:
                prof.disable()
                self.save(name, prof)

        return run

    def save(self, name: str, prof: cProfile.Profile | str) -> None:
        assert self.folder
        out = self.folder / f"{name}.prof"
        if isinstance(prof, cProfile.Profile):
            prof.dump_stats(out)
        buf = io.StringIO()
        st = pstats.Stats(str(out), stream=buf)
        st.sort_stats("tottime").print_stats(14)
        self.reports.append((name, buf.getvalue()))

    def cmd(self, name: str) -> list[str]:
        if not self.folder:
            return hitl_cmd()
        return [
            sys.executable,
            "-m",
            "cProfile",
            "-o",
            str(self.folder / f"{name}.prof"),
            "-m",
            "hitl_vault",
        ]


# --------------------------------------------------------------------------- 1. floor


def bench_floor(tmp: Path, note: bytes, n: int, gap: float) -> dict[str, Dist]:
    """Bare watchdog: save -> first callback; + CSafeLoader parse + fsync'd append."""
    folder = tmp / "floor"
    (folder / "Pending_Approval").mkdir(parents=True)
    paths = [folder / "Pending_Approval" / f"note-{i:04d}.md" for i in range(n)]
    for p in paths:
        p.write_bytes(note)
    journal = open(folder / "journal.log", "ab")  # noqa: SIM115 - closed in the finally below
    approved = approved_bytes(note)

    first_cb: dict[str, float] = {}
    parse_ms: dict[str, float] = {}
    fsync_ms: dict[str, float] = {}
    done: dict[str, float] = {}
    events: dict[str, threading.Event] = {str(p): threading.Event() for p in paths}

    class Handler(FileSystemEventHandler):
        def on_any_event(self, event: FileSystemEvent) -> None:
            t = time.perf_counter()
            if event.event_type in ("opened", "closed_no_write"):
                return
            src = event.src_path
            src = src.decode() if isinstance(src, bytes) else src
            ev = events.get(src)
            if ev is None or ev.is_set():
                return
            first_cb.setdefault(src, t)
            try:
                raw = Path(src).read_bytes()
            except OSError:
                return
            t1 = time.perf_counter()
            text = raw.decode("utf-8")
            if not text.startswith("---\n"):
                return  # the truncated file of the first event: wait for the next one
            end = text.find("\n---\n", 4)
            if end < 0:
                return
            meta = yaml.load(text[4 : end + 1], Loader=yaml.CSafeLoader)
            t2 = time.perf_counter()
            if not isinstance(meta, dict) or meta.get("status") != "approved":
                return
            journal.write(f"{meta['id']} approved {time.time()}\n".encode())
            journal.flush()
            os.fsync(journal.fileno())
            t3 = time.perf_counter()
            parse_ms[src] = (t2 - t1) * 1000
            fsync_ms[src] = (t3 - t2) * 1000
            done[src] = t3
            ev.set()

    observer = Observer()
    observer.daemon = True
    observer.schedule(Handler(), str(folder), recursive=True)
    observer.start()
    res = {
        "cb": Dist("watchdog callback (save -> first event)"),
        "parse": Dist("  libyaml CSafeLoader parse of the frontmatter"),
        "fsync": Dist("  fsync'd append to a journal file"),
        "floor": Dist("FLOOR: save -> callback + parse + fsync'd append"),
    }
    try:
        time.sleep(0.1)
        for p in paths:
            key = str(p)
            t0 = time.perf_counter()
            save_in_place(p, approved)
            if not events[key].wait(5):
                res["floor"].missed += 1
                continue
            res["cb"].ms.append((first_cb[key] - t0) * 1000)
            res["parse"].ms.append(parse_ms[key])
            res["fsync"].ms.append(fsync_ms[key])
            res["floor"].ms.append((done[key] - t0) * 1000)
            time.sleep(gap)
    finally:
        observer.stop()
        observer.join(10)
        journal.close()
    return res


# --------------------------------------------------------------------------- 2. latency


@dataclass
class HandlerLog:
    """What the in-process @vault.action handler saw: start times and call counts per id."""

    starts: dict[str, float] = field(default_factory=dict)
    calls: Counter[str] = field(default_factory=Counter)
    events: dict[str, threading.Event] = field(default_factory=dict)
    cond: threading.Condition = field(default_factory=threading.Condition)

    def handler(self, request: Any) -> str:
        t = time.perf_counter()
        with self.cond:
            self.calls[request.id] += 1
            self.starts.setdefault(request.id, t)
            ev = self.events.get(request.id)
            self.cond.notify_all()
        if ev is not None:
            ev.set()
        return "ok"

    def duplicates(self) -> dict[str, int]:
        return {k: v for k, v in self.calls.items() if v > 1}


class InProcessDaemon:
    """A Daemon running `run_forever` in a thread of this process."""

    def __init__(self, vault: Vault, profiler: Profiler, name: str) -> None:
        self.daemon = Daemon(vault.engine)
        self.ready = threading.Event()
        target = profiler.wrap(name, self.daemon.run_forever)
        self.thread = threading.Thread(
            target=target, kwargs={"ready": self.ready}, name="bench-daemon", daemon=True
        )

    def __enter__(self) -> InProcessDaemon:
        self.thread.start()
        if not self.ready.wait(30):
            raise RuntimeError("the daemon did not become ready in 30 s")
        return self

    def __exit__(self, *exc: object) -> None:
        self.daemon.stop()
        self.thread.join(60)
        if self.thread.is_alive():
            print("  !! the daemon thread did not stop within 60 s", file=sys.stderr)


def journal_counts(vault_path: Path) -> dict[str, int]:
    db = sqlite3.connect(vault_path / ".hitl" / "journal.db")
    try:
        rows = db.execute("SELECT status, COUNT(*) FROM requests GROUP BY status").fetchall()
        return dict(rows)
    finally:
        db.close()


def bench_latency_inprocess(
    tmp: Path, n: int, gap: float, profiler: Profiler
) -> tuple[Dist, list[str], bytes]:
    """Save `status: approved` -> in-process handler start, one at a time."""
    path = new_vault(tmp, "latency")
    warm = 5
    notes: list[str] = []
    logs = LogCapture()
    with Vault(path) as vault:
        reqs = submit_many(vault, n + warm)
        sample_note = reqs[0].path.read_bytes()
        hl = HandlerLog()
        vault.action(ACTION)(hl.handler)
        for r in reqs:
            hl.events[r.id] = threading.Event()
        dist = Dist("hitl-vault in-process daemon: save -> handler starts")
        with logs.attached(), InProcessDaemon(vault, profiler, "latency_daemon_thread"):
            for i, r in enumerate(reqs):
                data = approved_bytes(r.path.read_bytes())
                t0 = time.perf_counter()
                save_in_place(r.path, data)
                if not hl.events[r.id].wait(10):
                    if i >= warm:
                        dist.missed += 1
                    continue
                if i >= warm:
                    dist.ms.append((hl.starts[r.id] - t0) * 1000)
                time.sleep(gap)
            time.sleep(0.2)
        dups = hl.duplicates()
        if dups:
            notes.append(f"!! handler ran more than once for {len(dups)} request(s): {dups}")
        if dist.missed:
            notes.append(f"!! {dist.missed} approval(s) never reached the handler within 10 s")
        counts = journal_counts(path)
        notes.append(f"journal after stop: {counts}")
    if logs.records:
        notes.append(f"{len(logs.records)} warning/error log record(s) in the daemon:")
        notes += ["    " + x for x in summarize_logs(logs.records)]
    return dist, notes, sample_note


EXECUTOR = """\
import os, sys, time
t = time.time()
out = sys.argv[1]
rid = os.environ["HITL_REQUEST_ID"]
sys.stdin.read()
tmp = os.path.join(out, "." + rid)
with open(tmp, "w") as f:
    f.write(repr(t))
os.rename(tmp, os.path.join(out, rid))
print("ok")
"""


def bench_spawn_floor(tmp: Path, script: Path, out: Path, n: int) -> Dist:
    """How long the executor itself takes to start: Popen -> its time.time()."""
    dist = Dist("  (executor spawn alone: Popen -> its time.time())")
    for i in range(n):
        rid = f"spawn-{os.getpid()}-{i}"  # unique per run: escaped processes are found by id
        t0 = time.time()
        proc = subprocess.Popen(
            [sys.executable, "-S", str(script), str(out)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "HITL_REQUEST_ID": rid},
            start_new_session=True,
        )
        proc.communicate(b"{}")
        dist.ms.append((float((out / rid).read_text()) - t0) * 1000)
    return dist


def add_run_executor(path: Path, tmp: Path) -> tuple[Path, Path]:
    """Give the vault a `run:` executor for ACTION that writes its start time to out/<id>."""
    out = tmp / f"{path.name}-out"
    out.mkdir()
    script = tmp / "bench_executor.py"
    script.write_text(EXECUTOR)
    argv = json.dumps([sys.executable, "-S", str(script), str(out)])
    rules = path / "hitl-vault.yaml"
    text = rules.read_text()
    assert "\nactions:\n" in text, "the template's hitl-vault.yaml has no actions: section"
    action = f"  {ACTION}:\n    run: {argv}\n    timeout: 30s\n    idempotent: false\n"
    rules.write_text(text.replace("\nactions:\n", "\nactions:\n" + action, 1))
    return out, script


def wait_started(out: Path, rid: str, timeout: float) -> float | None:
    """The executor's own start time (time.time()) for request ``rid``, once it has written it."""
    target = out / rid
    deadline = time.monotonic() + timeout
    while not target.exists():
        if time.monotonic() > deadline:
            return None
        time.sleep(0.0005)
    return float(target.read_text())


def bench_latency_subprocess(tmp: Path, n: int, gap: float) -> tuple[list[Dist], list[str]]:
    """Save -> `run:` executor starts, with `hitl-vault run` as a separate process."""
    path = new_vault(tmp, "latency-sub")
    out, script = add_run_executor(path, tmp)
    warm = 3
    notes: list[str] = []
    with Vault(path) as vault:
        reqs = submit_many(vault, n + warm)
    spawn_dist = bench_spawn_floor(tmp, script, out, 30)
    log = tmp / "latency-sub.log"
    proc = spawn([*hitl_cmd(), "--vault", str(path), "run"], log)
    dist = Dist("`hitl-vault run` subprocess: save -> run: executor starts")
    try:
        if not wait_for_text(log, "watching", 60, proc):
            notes.append("!! the daemon did not start: " + log.read_text()[-500:])
            return [dist, spawn_dist], notes
        for i, r in enumerate(reqs):
            data = approved_bytes(r.path.read_bytes())
            t0 = time.time()
            save_in_place(r.path, data)
            started = wait_started(out, r.id, 15)
            if started is None:
                if i >= warm:
                    dist.missed += 1
                continue
            if i >= warm:
                dist.ms.append((started - t0) * 1000)
            time.sleep(gap)
        time.sleep(0.5)
    finally:
        rc = stop_child(proc)
    counts = journal_counts(path)
    runs = len([p for p in out.iterdir() if not p.name.startswith(("spawn-", "."))])
    notes.append(
        f"daemon exit code {rc}; executor ran {runs} time(s) for {len(reqs)} approvals;"
        f" journal {counts}"
    )
    if dist.missed:
        notes.append(f"!! {dist.missed} approval(s) never started the executor within 15 s")
    problems = log_problems(log)
    if problems:
        notes.append(f"{len(problems)} warning/error line(s) in the daemon log:")
        notes += ["    " + x for x in summarize_logs(problems)]
    return [dist, spawn_dist], notes


# --------------------------------------------------------------------------- 3. submit


def _submit_worker(path: str, m: int, tag: str, barrier: Any, results: Any) -> None:
    ids: list[str] = []
    errors: list[str] = []
    try:
        vault = Vault(path)
    except Exception as e:
        barrier.wait()
        results.put((tag, [], [repr(e)], 0.0, 0.0))
        return
    barrier.wait()
    t0 = time.time()
    for i in range(m):
        try:
            r = vault.submit(
                ACTION,
                {"amount": 1000 + i, "recipient": "vendor@example.com", "currency": "USD"},
                summary=f"Bench request {tag}-{i}",
                requested_by=f"bench-{tag}",
            )
            ids.append(r.id)
        except Exception as e:
            errors.append(f"{type(e).__name__}: {e}")
    t1 = time.time()
    vault.close()
    results.put((tag, ids, errors, t0, t1))


def check_submitted(path: Path, ids: list[str]) -> list[str]:
    """Lost or duplicate ids: returned ids vs note files vs journal rows; chain intact."""
    notes = sorted(p.stem for p in (path / "Pending_Approval").glob("*.md") if is_request(p))
    db = sqlite3.connect(path / ".hitl" / "journal.db")
    try:
        rows = [r[0] for r in db.execute("SELECT id FROM requests")]
        entries = db.execute("SELECT COUNT(*) FROM entries").fetchone()[0]
    finally:
        db.close()
    with Vault(path) as vault:
        chain = vault.engine.journal.verify_chain()
    problems = []
    if len(set(ids)) != len(ids):
        problems.append(f"{len(ids) - len(set(ids))} duplicate id(s) returned")
    if set(notes) != set(ids):
        problems.append(
            f"notes vs returned ids: {len(set(ids) - set(notes))} missing, "
            f"{len(set(notes) - set(ids))} extra"
        )
    if len(rows) != len(set(rows)) or set(rows) != set(ids):
        problems.append(f"journal rows {len(rows)} vs {len(ids)} ids returned")
    if entries != len(ids):
        problems.append(f"journal has {entries} entries for {len(ids)} requests")
    if chain:
        problems.append(f"hash chain: {chain[:2]}")
    verdict = "OK" if not problems else "PROBLEMS: " + "; ".join(problems)
    return [
        f"{len(ids)} returned, {len(notes)} notes, {len(rows)} journal rows, {entries} entries, "
        f"chain {'intact' if not chain else 'BROKEN'} -> {verdict}"
    ]


def bench_submit(
    tmp: Path, n1: int, m: int, procs: int, profiler: Profiler
) -> tuple[dict[str, float], list[str]]:
    out: dict[str, float] = {}
    notes: list[str] = []
    path = new_vault(tmp, "submit-1")
    with Vault(path) as vault:
        warm_ids = [r.id for r in submit_many(vault, 5, "warm")]  # imports, first pages
        loop = profiler.wrap("submit_loop", lambda: submit_many(vault, n1))
        t0 = time.perf_counter()
        reqs = loop()
        dt = time.perf_counter() - t0
    out["one"] = n1 / dt
    ids = [r.id for r in reqs]
    notes.append(f"1 process: {n1} in {dt:.2f} s; " + check_submitted(path, ids + warm_ids)[0])

    path = new_vault(tmp, f"submit-{procs}")
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(procs + 1)
    results = ctx.Queue()
    workers = [
        ctx.Process(target=_submit_worker, args=(str(path), m, f"p{k}", barrier, results))
        for k in range(procs)
    ]
    for w in workers:
        w.start()
    barrier.wait()
    got = [results.get(timeout=600) for _ in workers]
    for w in workers:
        w.join(30)
    all_ids = [i for _, ids_, _, _, _ in got for i in ids_]
    errors = [e for _, _, errs, _, _ in got for e in errs]
    span = max(g[4] for g in got) - min(g[3] for g in got)
    out["multi"] = len(all_ids) / span if span > 0 else float("nan")
    per = [len(g[1]) / (g[4] - g[3]) for g in got if g[4] > g[3]]
    notes.append(
        f"{procs} processes: {len(all_ids)} in {span:.2f} s (per process "
        f"{min(per):.0f}-{max(per):.0f}/s); " + check_submitted(path, all_ids)[0]
    )
    if errors:
        notes.append(
            f"!! {len(errors)} submit error(s): " + "; ".join(Counter(errors).keys())[:300]
        )
    return out, notes


# --------------------------------------------------------------------------- 4. burst


# Saves the notes listed in argv[1] (JSON: [path, hex bytes]) in place when told "go" on
# stdin; prints perf_counter() before the first and after the last (CLOCK_MONOTONIC on
# Linux, so the same clock as this process's).
SAVER = """\
import json, sys, time
saves = [(p, bytes.fromhex(h)) for p, h in json.load(open(sys.argv[1]))]
sys.stdin.readline()
first = time.perf_counter()
for path, data in saves:
    with open(path, "wb") as f:
        f.write(data)
print(first, time.perf_counter(), flush=True)
"""


class SaverProcess:
    """Another process, ready to save the given notes in place at once."""

    def __init__(self, tmp: Path, saves: list[tuple[Path, bytes]]) -> None:
        listing = tmp / "burst-saves.json"
        listing.write_text(json.dumps([(str(p), b.hex()) for p, b in saves]))
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SAVER, str(listing)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def save_all(self) -> tuple[float, float]:
        """Go; (perf_counter at the first save, at the end of the last)."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        first, last = map(float, self.proc.stdout.readline().split())
        self.proc.wait(30)
        return first, last


def bench_burst(
    tmp: Path, n: int, profiler: Profiler, settle: float, writer: str = "process"
) -> tuple[dict[str, float], list[str]]:
    """``writer``: "process" (another process saves the notes) or "thread" (one of ours)."""
    path = new_vault(tmp, f"burst-{writer}")
    notes: list[str] = []
    out: dict[str, float] = {}
    logs = LogCapture()
    with Vault(path) as vault:
        warm = submit_many(vault, 1, "warm")[0]
        reqs = submit_many(vault, n)
        data = [(r.path, approved_bytes(r.path.read_bytes())) for r in reqs]
        hl = HandlerLog()
        vault.action(ACTION)(hl.handler)
        wanted = {r.id for r in reqs}
        with (
            logs.attached(),
            InProcessDaemon(vault, profiler, f"burst_{writer}_daemon_thread"),
        ):
            save_in_place(warm.path, approved_bytes(warm.path.read_bytes()))
            with hl.cond:
                hl.cond.wait_for(lambda: warm.id in hl.starts, timeout=60)
            if writer == "process":
                t0, t_written = SaverProcess(tmp, data).save_all()
            else:
                t0 = time.perf_counter()
                for p, b in data:
                    save_in_place(p, b)
                t_written = time.perf_counter()
            with hl.cond:
                complete = hl.cond.wait_for(lambda: wanted <= hl.starts.keys(), timeout=300)
            started = [hl.starts[i] for i in wanted if i in hl.starts]
            t_last = max(started) if started else float("nan")
            out["rate"] = len(started) / (t_last - t0) if started else 0.0
            out["write_s"] = t_written - t0
            out["last_s"] = t_last - t0
            notes.append(
                f"{n} saves written in {t_written - t0:.2f} s; {len(started)}/{n} handlers started;"
                f" last one {t_last - t0:.2f} s after the first save"
            )
            if not complete:
                notes.append(f"!! {n - len(started)} approvals never reached the handler in 300 s")
            # Correctness beyond speed: do all notes settle in Done/ once quiet?
            t_settle = time.monotonic()
            deadline = t_settle + settle
            done_dir = path / "Done"
            settled = 0
            while time.monotonic() < deadline:
                settled = sum(1 for p in done_dir.glob("*.md") if is_request(p))
                if settled >= n + 1:
                    break
                time.sleep(0.25)
            notes.append(
                f"notes in Done/: {settled}/{n + 1} after {time.monotonic() - t_settle:.1f} s "
                f"more (quiet = {vault.policy.defaults.quiet.total_seconds():g} s)"
            )
        dups = hl.duplicates()
        if dups:
            notes.append(f"!! handler ran more than once for {len(dups)} request(s)")
        notes.append(f"journal after stop: {journal_counts(path)}")
    if logs.records:
        notes.append(f"{len(logs.records)} warning/error log record(s) in the daemon:")
        notes += ["    " + x for x in summarize_logs(logs.records)]
    return out, notes


# --------------------------------------------------------------------------- 5. scale


def bench_scale(
    tmp: Path, n: int, idle: float, profiler: Profiler, decisions: int = 5
) -> tuple[dict[str, float], list[str]]:
    path = new_vault(tmp, f"scale-{n}")
    executed, _ = add_run_executor(path, tmp)
    out: dict[str, float] = {}
    notes: list[str] = []
    t0 = time.perf_counter()
    with Vault(path) as vault:
        reqs = submit_many(vault, n)
    notes.append(f"created {n} pending requests in {time.perf_counter() - t0:.1f} s (not timed)")

    t0 = time.perf_counter()
    subprocess.run([*hitl_cmd(), "--version"], capture_output=True, check=True)
    out["startup_s"] = time.perf_counter() - t0

    for k in (1, 2):
        log = tmp / f"scale-{n}-once{k}.log"
        cmd = profiler.cmd(f"run_once_{n}_{k}") if k == 1 else hitl_cmd()
        t0 = time.perf_counter()
        with open(log, "wb") as f:
            argv = [*cmd, "--vault", str(path), "run", "--once"]
            rc = subprocess.run(argv, stdout=f, stderr=subprocess.STDOUT, timeout=900).returncode
        out[f"once{k}_s"] = time.perf_counter() - t0
        if rc != 0:
            notes.append(f"!! run --once #{k} exited {rc}: {log.read_text()[-400:]}")
        problems = log_problems(log)
        if problems:
            notes.append(f"run --once #{k}: {len(problems)} warning/error line(s):")
            notes += ["    " + x for x in summarize_logs(problems)]
        if k == 1 and profiler.folder:
            profiler.save(f"run_once_{n}_{k}", "")
    counts = journal_counts(path)
    if counts != {"pending": n}:
        notes.append(f"!! after run --once the journal says {counts} (expected {n} pending)")

    log = tmp / f"scale-{n}-daemon.log"
    proc = spawn([*hitl_cmd(), "--vault", str(path), "run"], log)
    try:
        t0 = time.perf_counter()
        if not wait_for_text(log, "watching", 120, proc):
            notes.append("!! the daemon did not start: " + log.read_text()[-400:])
            return out, notes
        # settled: no CPU used for 1 s (at most 120 s)
        last, still_since = cpu_ticks(proc.pid), time.perf_counter()
        while time.perf_counter() - t0 < 120:
            time.sleep(0.25)
            now_ticks = cpu_ticks(proc.pid)
            if now_ticks != last:
                last, still_since = now_ticks, time.perf_counter()
            elif time.perf_counter() - still_since >= 1.0:
                break
        out["settle_s"] = still_since - t0
        out["startup_cpu_s"] = last / CLK_TCK
        a = cpu_ticks(proc.pid)
        time.sleep(idle)
        b = cpu_ticks(proc.pid)
        out["idle_cpu_pct"] = (b - a) / CLK_TCK / idle * 100
        out["rss_mb"] = proc_status(proc.pid, "VmRSS") / 1024
        out["hwm_mb"] = proc_status(proc.pid, "VmHWM") / 1024
        # A few decisions with n pending: save -> `run:` executor starts (separate daemon).
        lat = Dist(f"decision with {n} pending")
        for r in reqs[:decisions]:
            data = approved_bytes(r.path.read_bytes())
            t1 = time.time()
            save_in_place(r.path, data)
            started = wait_started(executed, r.id, 120)
            if started is None:
                lat.missed += 1
            else:
                lat.ms.append((started - t1) * 1000)
            time.sleep(0.05)
        out["decide_median_ms"] = lat.median
        out["decide_max_ms"] = max(lat.ms) if lat.ms else float("nan")
        if lat.missed:
            notes.append(f"!! {lat.missed} of {decisions} decisions never started the executor")
    finally:
        code = stop_child(proc)
    if code not in (0, -signal.SIGTERM):
        notes.append(f"!! daemon exit code {code}")
    problems = log_problems(log)
    if problems:
        notes.append(f"daemon: {len(problems)} warning/error line(s):")
        notes += ["    " + x for x in summarize_logs(problems)]
    return out, notes


# --------------------------------------------------------------------------- main


def verdict(ok: bool | None) -> str:
    return "n/a " if ok is None else ("PASS" if ok else "MISS")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a reduced run (under a minute)")
    ap.add_argument("--profile", metavar="DIR", type=Path, help="write cProfile data to DIR")
    ap.add_argument("--gap", type=float, default=0.02, help="seconds between sequential saves")
    ap.add_argument(
        "--notify",
        action="store_true",
        help="three notify targets in every vault (two local, one unreachable)",
    )
    args = ap.parse_args()
    if args.notify:
        with notify_receiver() as (port, received):
            NOTIFY_TARGETS[:] = [
                f"json://127.0.0.1:{port}/a",
                f"json://127.0.0.1:{port}/b",
                "json://127.0.0.1:9/unreachable",  # the discard port: refused at once
            ]
            try:
                return _main(args)
            finally:
                print(f"  notifications received by the local receiver: {received.value}")
    return _main(args)


def _main(args: argparse.Namespace) -> int:
    q = args.quick
    cfg: dict[str, Any] = {
        "saves": 50 if q else 300,
        "sub_saves": 20 if q else 200,
        "submit_one": 200 if q else 1000,
        "submit_each": 50 if q else 250,
        "procs": 4,
        "burst": 200 if q else 2000,
        "scale": [300] if q else [1000, 10000],
        "idle": 3.0 if q else 10.0,
        "settle": 15.0 if q else 90.0,
    }
    profiler = Profiler(args.profile)
    tmp = Path(tempfile.mkdtemp(prefix="hitl-bench-"))
    started = time.perf_counter()
    print(
        "hitl-vault benchmark"
        + (" (--quick)" if q else "")
        + (" (--notify)" if NOTIFY_TARGETS else "")
    )
    for line in machine_info(tmp):
        print("  " + line)
    print(f"  settings:    {cfg}, gap between sequential saves {args.gap * 1000:g} ms")
    sys.stdout.flush()
    r: dict[str, Any] = {}
    try:
        # 2 first (it gives the sample note), then 1 on the same note.
        print("\n[1+2] decision latency (sequential in-place saves)")
        sys.stdout.flush()
        lat, lat_notes, note = bench_latency_inprocess(tmp, cfg["saves"], args.gap, profiler)
        floor = bench_floor(tmp, note, max(cfg["saves"], 200), args.gap)
        sub, sub_notes = bench_latency_subprocess(tmp, cfg["sub_saves"], args.gap)
        print(DIST_HEADER)
        for d in floor.values():
            print(d.row())
        print(lat.row())
        ratio = lat.median / floor["floor"].median
        print(f"  {'  ratio to the floor (median / median)':<58} {ratio:>8.1f}x")
        for d in sub:
            print(d.row())
        for line in lat_notes:
            print("  in-process: " + line)
        for line in sub_notes:
            print("  subprocess: " + line)
        r.update(lat=lat, floor=floor["floor"], ratio=ratio)

        print(f"\n[3] submit throughput (Vault.submit, {ACTION!r} -> pending)")
        sys.stdout.flush()
        sub_r, sub_n = bench_submit(
            tmp, cfg["submit_one"], cfg["submit_each"], cfg["procs"], profiler
        )
        print(f"  1 process:  {sub_r['one']:8.0f} requests/s")
        print(f"  {cfg['procs']} processes: {sub_r['multi']:8.0f} requests/s (aggregate)")
        for line in sub_n:
            print("  " + line)
        r["submit"] = sub_r

        print(f"\n[4] burst: {cfg['burst']} pending notes approved in one go (daemon in-process)")
        sys.stdout.flush()
        burst, burst_n = bench_burst(tmp, cfg["burst"], profiler, cfg["settle"])
        print(
            f"  {burst['rate']:8.0f} decisions/s (first save -> last handler start), "
            "saved by another process"
        )
        for line in burst_n:
            print("    " + line)
        sys.stdout.flush()
        in_thread, thread_n = bench_burst(tmp, cfg["burst"], profiler, cfg["settle"], "thread")
        print(
            f"  {in_thread['rate']:8.0f} decisions/s, saved by a thread of the daemon's process "
            "(sharing its interpreter lock)"
        )
        for line in thread_n:
            print("    " + line)
        r["burst"] = burst

        print("\n[5] scale: pending requests at rest")
        sys.stdout.flush()
        scale: dict[int, dict[str, float]] = {}
        for n in cfg["scale"]:
            res, notes = bench_scale(tmp, n, cfg["idle"], profiler)
            scale[n] = res
            print(
                f"  {n:>6} pending: run --once {res.get('once1_s', float('nan')):6.2f} s "
                f"(2nd run {res.get('once2_s', float('nan')):.2f} s; bare `hitl-vault --version`"
                f" {res.get('startup_s', float('nan')):.2f} s)"
            )
            print(
                f"  {'':>6}          daemon: settled {res.get('settle_s', float('nan')):.1f} s "
                f"after start ({res.get('startup_cpu_s', float('nan')):.1f} s CPU), then "
                f"{res.get('rss_mb', float('nan')):.1f} MB VmRSS (peak "
                f"{res.get('hwm_mb', float('nan')):.1f} MB), "
                f"{res.get('idle_cpu_pct', float('nan')):.2f}% of a core over "
                f"{cfg['idle']:g} s idle"
            )
            print(
                f"  {'':>6}          then 5 sequential approvals, save -> `run:` executor starts:"
                f" median {res.get('decide_median_ms', float('nan')):.0f} ms, max "
                f"{res.get('decide_max_ms', float('nan')):.0f} ms"
            )
            for line in notes:
                print("  " + " " * 8 + line)
            sys.stdout.flush()
        r["scale"] = scale
    finally:
        for proc in list(CHILDREN):
            stop_child(proc)
        shutil.rmtree(tmp, ignore_errors=True)

    big = max(r["scale"])
    s = r["scale"][big]
    exact = big >= 10000
    print(f"\n[goals]{'' if exact else f' (scale goals judged at {big} pending, not 10,000)'}")
    goals = [
        ("decision latency median <= 10 ms", f"{r['lat'].median:.2f} ms", r["lat"].median <= 10),
        (
            "decision latency within 10x of the floor",
            f"{r['ratio']:.1f}x (floor {r['floor'].median:.2f} ms)",
            r["ratio"] <= 10,
        ),
        ("decision latency p99 <= 50 ms", f"{r['lat'].p99:.2f} ms", r["lat"].p99 <= 50),
        (
            "submit >= 500/s from one process",
            f"{r['submit']['one']:.0f}/s",
            r["submit"]["one"] >= 500,
        ),
        ("burst >= 500 decisions/s", f"{r['burst']['rate']:.0f}/s", r["burst"]["rate"] >= 500),
        (
            f"run --once over {big} pending <= 3 s",
            f"{s.get('once1_s', float('nan')):.2f} s",
            s.get("once1_s", 1e9) <= 3,
        ),
        (
            f"<= 150 MB resident with {big} pending",
            f"{s.get('rss_mb', float('nan')):.1f} MB",
            s.get("rss_mb", 1e9) <= 150,
        ),
        (
            f"<= 2% of a core idle with {big} pending",
            f"{s.get('idle_cpu_pct', float('nan')):.2f}%",
            s.get("idle_cpu_pct", 1e9) <= 2,
        ),
    ]
    for name, value, ok in goals:
        print(f"  {verdict(ok)}  {name:<44} {value}")
    print(f"\ntotal benchmark time {time.perf_counter() - started:.0f} s")
    for name, text in profiler.reports:
        print(f"\n[profile] {name} (top by tottime; full data in {args.profile}/{name}.prof)")
        print("\n".join(text.splitlines()[:34]))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        for p in list(CHILDREN):
            stop_child(p)
        raise
