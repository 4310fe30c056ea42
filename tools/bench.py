"""`make bench`: how close batchmap gets to its targets, measured against local baselines.

Sections (all by default, or name them): pacing leaky throughput resume scale.

Every section starts its own `batchmap fake-server` subprocess (so it runs on the other core)
with a key of its own, runs the real CLI as a subprocess in a temp dir, and prints a titled
block of figures with the command it ran. Figures are ratios measured in the same run, because
the machine is shared. A final table lists every target as PASS or MISS; the exit code is 0
even on a MISS (this reports, it does not test) and 1 only if a section could not run.

    python tools/bench.py [SECTION ...] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import importlib.util
import itertools
import json
import os
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, ClassVar

import httpx

SERVER_START_TIMEOUT = 20.0
STATS_EVERY = 0.1  # seconds between /_fake/stats samples while a paced run goes on
FIRST_REQUEST_POLL = 0.01  # seconds between samples while waiting for resume's first request
SCALE_IDS = 1_000_000
DUPLICATE_EVERY = 100  # one duplicate line per this many identifiers: ~1 %
BLANK_LINES = 5
DONE_ROWS = 900_000  # rows the resume section marks done before resuming
THROUGHPUT_IDS = 3000
THROUGHPUT_CONCURRENCY = 16
SMALL_IDS = 1000  # the small table that tells memory growth from a fixed cost
# Settings a user's environment could slip into the runs, and proxies (everything is local).
_DROPPED_ENV = {
    "identifai_api_key",
    "identifai_base_url",
    "batchmap_db",
    "batchmap_concurrency",
    "batchmap_max_rate",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "no_proxy",
}


# --------------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class Target:
    """One figure checked against the issue's target."""

    section: str
    figure: str
    value: float | None
    op: str  # ">=" or "<=" or "=="
    goal: float
    shown: str  # the value as printed
    goal_shown: str

    @property
    def verdict(self) -> str:
        """PASS, MISS, or n/a when the figure could not be measured."""
        if self.value is None:
            return "n/a"
        passed = {
            ">=": self.value >= self.goal,
            "<=": self.value <= self.goal,
            "==": self.value == self.goal,
        }[self.op]
        return "PASS" if passed else "MISS"


@dataclass
class Report:
    """Everything printed, also kept as data for --json."""

    targets: list[Target] = field(default_factory=list)
    figures: dict[str, dict[str, Any]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def figure(self, section: str, name: str, value: Any) -> None:
        """Keep one raw figure for the JSON output."""
        self.figures.setdefault(section, {})[name] = value

    def check(
        self,
        section: str,
        figure: str,
        value: float | None,
        op: str,
        goal: float,
        fmt: Callable[[float], str],
    ) -> str:
        """Record a target and return its printed tail: 'target >= 0.98  PASS'."""
        shown = "n/a" if value is None else fmt(value)
        target = Target(section, figure, value, op, goal, shown, fmt(goal))
        self.targets.append(target)
        return f"target {op} {target.goal_shown:<7} {target.verdict}"


def say(text: str = "") -> None:
    """Print one line at once, so progress shows while a long section runs."""
    print(text, flush=True)


def line(label: str, value: str, tail: str = "") -> None:
    """One figure line: label, value, and optionally the target verdict."""
    say(f"  {label:<30} {value:<36} {tail}".rstrip())


def ratio(value: float) -> str:
    """A ratio with three decimals."""
    return f"{value:.3f}"


def percent(value: float) -> str:
    """A share as a percentage."""
    return f"{100 * value:.2f}%"


def seconds(value: float) -> str:
    """A duration in seconds."""
    return f"{value:.2f} s"


def megabytes(value: float | None) -> str:
    """A size in MB."""
    return "n/a" if value is None else f"{value:.0f} MB"


def peak(big: Finished, small: Finished, what: str) -> str:
    """A peak RSS, and how much more it is than the same command's on a small input."""
    if big.maxrss_mb is None or small.maxrss_mb is None:
        return megabytes(big.maxrss_mb)
    return f"{big.maxrss_mb:.0f} MB (+{big.maxrss_mb - small.maxrss_mb:.0f} MB over {what})"


def count(value: float) -> str:
    """A whole number."""
    return f"{value:.0f}"


# --------------------------------------------------------------------------- test data


def hex_id(section: str, i: int) -> str:
    """The i-th benchmark identifier of a section: 64 hex digits."""
    return hashlib.sha256(f"bench-{section}-{i}".encode()).hexdigest()


def write_ids_csv(path: Path, section: str, n: int) -> list[str]:
    """A CSV with header `identifier` and n identifiers; returns them."""
    ids = [hex_id(section, i) for i in range(n)]
    path.write_text("identifier\n" + "\n".join(ids) + "\n", encoding="utf-8")
    return ids


def write_scale_csv(path: Path) -> int:
    """SCALE_IDS unique identifiers, ~1 % duplicate lines and a few blank lines; line count."""
    blanks = {SCALE_IDS * (k + 1) // (BLANK_LINES + 1) for k in range(BLANK_LINES)}
    lines = 1
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("identifier\n")
        chunk: list[str] = []
        for i in range(SCALE_IDS):
            chunk.append(hex_id("scale", i))
            if i % DUPLICATE_EVERY == DUPLICATE_EVERY - 1:
                chunk.append(hex_id("scale", i - DUPLICATE_EVERY // 2))
            if i in blanks:
                chunk.append("")
            if len(chunk) >= 50_000:
                handle.write("\n".join(chunk) + "\n")
                lines += len(chunk)
                chunk = []
        handle.write("\n".join(chunk) + "\n")
        lines += len(chunk)
    return lines


class SharedData:
    """Files more than one section uses, made once per bench run."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._scale_csv: Path | None = None

    def scale_csv(self) -> Path:
        """The 1M-identifier CSV (generated on first use)."""
        if self._scale_csv is None:
            path = self.root / "ids-1m.csv"
            started = time.perf_counter()
            lines = write_scale_csv(path)
            size = path.stat().st_size / 1e6
            took = time.perf_counter() - started
            say(
                f"  (generated {path.name}: {lines:,} lines, {SCALE_IDS:,} unique ids, "
                f"{size:.0f} MB, in {took:.1f} s)"
            )
            self._scale_csv = path
        return self._scale_csv


# --------------------------------------------------------------------------- processes


def batchmap_argv(*args: str) -> list[str]:
    """The real CLI, as `python -m batchmap`."""
    return [sys.executable, "-m", "batchmap", *args]


def shown(args: Sequence[str], key: str | None = None) -> str:
    """A command line as a user would type it."""
    prefix = f"IDENTIFAI_API_KEY={key} " if key else ""
    return f"  $ {prefix}batchmap {shlex.join(args)}"


def child_env(key: str | None = None) -> dict[str, str]:
    """This environment without batchmap settings or proxies, plus the key if given."""
    env = {k: v for k, v in os.environ.items() if k.lower() not in _DROPPED_ENV}
    if key is not None:
        env["IDENTIFAI_API_KEY"] = key
    return env


@dataclass(frozen=True, slots=True)
class Finished:
    """How a child process ended: exit code, wall time, its own peak RSS, its output."""

    code: int
    wall: float
    maxrss_mb: float | None  # None when not measured
    stdout: str
    stderr: str
    timed_out: bool


TIME = "/usr/bin/time"
# The fallback when GNU time is missing: a small parent that reports its child's ru_maxrss.
_RSS_WRAPPER = (
    "import os, sys\n"
    "pid = os.spawnv(os.P_NOWAIT, sys.argv[2], sys.argv[2:])\n"
    "_, status, usage = os.wait4(pid, 0)\n"
    "open(sys.argv[1], 'w').write(str(usage.ru_maxrss))\n"
    "sys.exit(os.waitstatus_to_exitcode(status))\n"
)


def rss_wrapped(argv: Sequence[str], report_to: Path) -> list[str]:
    """`argv` under a small parent that writes the child's peak RSS (KiB) to `report_to`.

    os.wait4 on our own child is not enough: Linux keeps in ru_maxrss the high-water mark of
    the image a process replaced by exec, and Python spawns with vfork, so each child would
    report at least this bench's own RSS. GNU time (or the wrapper) is small.
    """
    if Path(TIME).exists():
        return [TIME, "-f", "%M", "-o", str(report_to), *argv]
    return [sys.executable, "-c", _RSS_WRAPPER, str(report_to), *argv]


class Child:
    """A subprocess in a session of its own, waited for in a thread so its end time is exact.

    The main thread stays free to poll or signal. With `rss`, it runs under rss_wrapped().
    """

    live: ClassVar[set[Child]] = set()

    def __init__(
        self, argv: Sequence[str], *, cwd: Path, env: dict[str, str], rss: bool = True
    ) -> None:
        # Files, not pipes: a chatty child can never block; they live as long as the Child.
        self._out: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115
        self._err: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115
        self._rss_file: Path | None = None
        if rss:
            handle, name = tempfile.mkstemp(prefix="bench-rss-")
            os.close(handle)
            self._rss_file = Path(name)
            argv = rss_wrapped(argv, self._rss_file)
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            argv, cwd=cwd, env=env, stdout=self._out, stderr=self._err, start_new_session=True
        )
        self._ended = 0.0
        Child.live.add(self)
        self._waiter = threading.Thread(target=self._wait, daemon=True)
        self._waiter.start()

    def _wait(self) -> None:
        _, status = os.waitpid(self.proc.pid, 0)
        self._ended = time.perf_counter()
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        Child.live.discard(self)

    @property
    def running(self) -> bool:
        """True until the process has exited."""
        return self._waiter.is_alive()

    def signal(self, signum: int) -> None:
        """Send a signal to the process itself, if it still runs."""
        if self.running:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signum)

    def kill(self) -> None:
        """SIGKILL the process and anything it started (its whole session)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    @classmethod
    def kill_all(cls) -> None:
        """Kill every child still running (the bench is ending early)."""
        for child in list(cls.live):
            child.kill()

    def wait(self, timeout: float) -> Finished:
        """Wait for the end (killing the process after `timeout`) and collect what it did."""
        self._waiter.join(timeout)
        timed_out = self._waiter.is_alive()
        if timed_out:
            self.kill()
            self._waiter.join()
        outputs = []
        for handle in (self._out, self._err):
            handle.seek(0)
            outputs.append(handle.read().decode("utf-8", "replace"))
            handle.close()
        return Finished(
            code=self.proc.returncode,
            wall=self._ended - self.started,
            maxrss_mb=self._read_rss(),
            stdout=outputs[0],
            stderr=outputs[1],
            timed_out=timed_out,
        )

    def _read_rss(self) -> float | None:
        """The wrapper's report: the last line holds KiB (GNU time may add a line before it)."""
        if self._rss_file is None:
            return None
        lines = self._rss_file.read_text(encoding="utf-8").split()
        self._rss_file.unlink(missing_ok=True)
        return int(lines[-1]) / 1024 if lines and lines[-1].isdigit() else None


def run_child(
    argv: Sequence[str], *, cwd: Path, env: dict[str, str] | None = None, timeout: float = 85.0
) -> Finished:
    """Run a command to its end and measure it."""
    return Child(argv, cwd=cwd, env=env or child_env()).wait(timeout)


def batchmap(
    args: Sequence[str], *, cwd: Path, key: str | None = None, timeout: float = 85.0
) -> Finished:
    """Print and run one batchmap command; complain on stderr if it timed out."""
    say(shown(args, key))
    done = run_child(batchmap_argv(*args), cwd=cwd, env=child_env(key), timeout=timeout)
    if done.timed_out:
        say(f"  !! killed after {timeout:.0f} s")
    if done.code not in (0, 1, 130):
        say(f"  !! exit {done.code}: {done.stderr.strip()[-500:]}")
    return done


class FakeServer:
    """`batchmap fake-server` as a subprocess on a free port, and its /_fake/ endpoints."""

    def __init__(self, key: str, flags: Sequence[str]) -> None:
        self.key = key
        self.args = ["fake-server", "--port", "0", "--valid-key", key, *flags]
        say(shown(self.args))
        self.proc = subprocess.Popen(
            batchmap_argv(*self.args), stdout=subprocess.PIPE, env=child_env(), text=True
        )
        self.url = self._read_url()
        self.client = httpx.Client(base_url=self.url, trust_env=False, timeout=10.0)

    def _read_url(self) -> str:
        """The URL from the server's first stdout line (a thread, so a silent server times out)."""
        stdout = self.proc.stdout
        assert stdout is not None
        found: list[str] = []
        reader = threading.Thread(target=lambda: found.append(stdout.readline()), daemon=True)
        reader.start()
        reader.join(SERVER_START_TIMEOUT)
        text = found[0].strip() if found else ""
        if "listening on " not in text:
            self.proc.kill()
            raise RuntimeError(f"the fake server did not start: {text!r}")
        return text.rsplit(" ", 1)[-1]

    def stats(self) -> dict[str, Any]:
        """GET /_fake/stats."""
        data: dict[str, Any] = self.client.get("/_fake/stats").json()
        return data

    def reset(self) -> None:
        """Zero the counters."""
        self.client.post("/_fake/reset").raise_for_status()

    def close(self) -> None:
        """Stop the server."""
        self.client.close()
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@contextlib.contextmanager
def fake_server(section: str, flags: Sequence[str]) -> Iterator[FakeServer]:
    """A fake server with a key of the section's own for the duration of a block."""
    key = f"bench-{section}-{os.urandom(6).hex()}"
    server = FakeServer(key, flags)
    try:
        yield server
    finally:
        server.close()


def n429(stats: dict[str, Any]) -> int:
    """429 answers in a stats snapshot."""
    return int(stats["by_status"].get("429", 0))


# --------------------------------------------------------------------------- paced runs


@dataclass(frozen=True, slots=True)
class Sample:
    """One /_fake/stats reading."""

    t: float
    requests: int
    limited: int

    @property
    def answered(self) -> int:
        """Requests that got something other than 429."""
        return self.requests - self.limited


class Sampler:
    """Reads /_fake/stats every `every` seconds in a thread, with timestamps."""

    def __init__(self, url: str, every: float) -> None:
        self.url, self.every = url, every
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        with httpx.Client(base_url=self.url, trust_env=False, timeout=5.0) as client:
            while not self._stop.is_set():
                asked = time.monotonic()
                stats = client.get("/_fake/stats").json()
                seen = (asked + time.monotonic()) / 2
                self.samples.append(Sample(seen, int(stats["requests"]), n429(stats)))
                self._stop.wait(max(0.0, self.every - (time.monotonic() - asked)))

    def stop(self) -> list[Sample]:
        """Stop sampling, after one last sample, and return them all."""
        self._stop.set()
        self._thread.join()
        return self.samples


@dataclass(frozen=True, slots=True)
class RunShape:
    """A paced run seen from the server: when it started and ended, and its steady half."""

    start: float
    end: float
    answered: int
    requests: int
    limited: int
    steady_answered: int
    steady_requests: int
    steady_limited: int
    steady_seconds: float

    @property
    def seconds(self) -> float:
        """From the first request to the last answer."""
        return self.end - self.start


def _bracket(samples: list[Sample], reached: Callable[[Sample], bool]) -> float:
    """Midpoint between the last sample before a condition held and the first one where it did."""
    for before, after in itertools.pairwise(samples):
        if not reached(before) and reached(after):
            return (before.t + after.t) / 2
    return samples[0].t if reached(samples[0]) else samples[-1].t


def run_shape(samples: list[Sample]) -> RunShape:
    """Whole-run and second-half figures from timestamped stats samples."""
    last = samples[-1]
    start = _bracket(samples, lambda s: s.requests > 0)
    end = _bracket(samples, lambda s: s.answered >= last.answered)
    middle = min(samples, key=lambda s: abs(s.t - (start + end) / 2))
    return RunShape(
        start=start,
        end=end,
        answered=last.answered,
        requests=last.requests,
        limited=last.limited,
        steady_answered=last.answered - middle.answered,
        steady_requests=last.requests - middle.requests,
        steady_limited=last.limited - middle.limited,
        steady_seconds=end - middle.t,
    )


def resolved_rows(db: Path) -> dict[str, int]:
    """Rows per state, read straight from the job table."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        return dict(conn.execute("SELECT state, count(*) FROM jobs GROUP BY state").fetchall())


FINAL = ("done", "no_heatmap", "failed")


def paced_section(
    report: Report,
    name: str,
    flags: Sequence[str],
    n_ids: int,
    allowed: float,
    *,
    ratio_goal: float,
    rerun: bool,
) -> None:
    """Run batchmap against a rate-limited fake and compare what it got to what was allowed."""
    with (
        tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp,
        fake_server(name, flags) as server,
    ):
        work = Path(tmp)
        write_ids_csv(work / "ids.csv", name, n_ids)
        args = ["run", "ids.csv", "--db", "jobs.db", "--out", "heatmaps"]
        args += ["--base-url", server.url, "-q"]
        sampler = Sampler(server.url, STATS_EVERY)
        done = batchmap(args, cwd=work, key=server.key)
        time.sleep(2 * STATS_EVERY)  # a last sample or two after the process ended
        shape = run_shape(sampler.stop())
        rows = resolved_rows(work / "jobs.db")
        resolved = sum(rows.get(state, 0) for state in FINAL)
        states = ", ".join(f"{state} {rows.get(state, 0)}" for state in FINAL)
        say(
            f"  exit {done.code}, {done.wall:.1f} s from process start to exit; {resolved} of "
            f"{n_ids} ids resolved ({states})"
        )
        report.figure(name, "exit_code", done.code)
        report.figure(name, "resolved", resolved)
        paced_figures(report, name, shape, resolved, allowed, ratio_goal)
        learned(report, name, work)
        if rerun:
            rerun_finished(report, name, server, work, args)


def paced_figures(
    report: Report, name: str, shape: RunShape, resolved: int, allowed: float, goal: float
) -> None:
    """Print and record the rate, 429 share and requests per id of a paced run."""
    say(
        f"  server: {shape.requests} requests, {shape.limited} answered 429; first request "
        f"to last answer {shape.seconds:.1f} s, steady (second) half {shape.steady_seconds:.1f} s"
    )
    whole = shape.answered / shape.seconds / allowed
    steady = shape.steady_answered / shape.steady_seconds / allowed
    share = shape.limited / max(1, shape.requests)
    steady_share = shape.steady_limited / max(1, shape.steady_requests)
    per_id = shape.requests / max(1, resolved)
    for key, value in (
        ("run_seconds", shape.seconds),
        ("requests", shape.requests),
        ("answered_429", shape.limited),
        ("answered_per_s_ratio_whole", whole),
        ("answered_per_s_ratio_steady", steady),
        ("share_429_whole", share),
        ("share_429_steady", steady_share),
        ("requests_per_resolved_id", per_id),
    ):
        report.figure(name, key, value)
    line(
        f"answered/s ÷ {allowed:g}/s",
        f"{ratio(whole)} (whole run)  {ratio(steady)} (steady)",
        report.check(name, "answered/s ÷ allowed (steady)", steady, ">=", goal, ratio),
    )
    line(
        "429 share of requests",
        f"{percent(share)} (whole run)  {percent(steady_share)} (steady)",
        report.check(name, "429 share (steady)", steady_share, "<=", 0.01, percent),
    )
    line(
        "requests per resolved id",
        f"{per_id:.3f}",
        report.check(name, "requests per resolved id", per_id, "<=", 1.02, ratio),
    )


def learned(report: Report, name: str, work: Path) -> None:
    """What the pacer saved: its learned windows and rate (from `batchmap status --json`)."""
    args = ["status", "--db", "jobs.db", "--json"]
    done = run_child(batchmap_argv(*args), cwd=work)
    try:
        facts = json.loads(done.stdout)
    except json.JSONDecodeError:
        say(f"  !! `batchmap {shlex.join(args)}` gave no JSON (exit {done.code})")
        return
    limits = [
        f"{item['limit']} per {item['window_seconds']:.3f} s" for item in facts["learned_limits"]
    ]
    rate = facts.get("pacer_rate")
    report.figure(name, "learned_limits", facts["learned_limits"])
    report.figure(name, "pacer_rate", rate)
    say(
        f"  pacer saved (batchmap {shlex.join(args)}): limits "
        f"{', '.join(limits) or 'none'}; rate {'unpaced' if rate is None else f'{rate:.3f}/s'}"
    )


def rerun_finished(
    report: Report, name: str, server: FakeServer, work: Path, args: list[str]
) -> None:
    """`run` again on the same CSV and `resume` on the finished table must send nothing."""
    server.reset()
    again = batchmap(args, cwd=work, key=server.key)
    after_run = int(server.stats()["requests"])
    resume_args = ["resume", "--db", "jobs.db", "--base-url", server.url, "-q"]
    resumed = batchmap(resume_args, cwd=work, key=server.key)
    after_resume = int(server.stats()["requests"]) - after_run
    say(
        f"  run again: exit {again.code} in {again.wall:.2f} s, {after_run} requests; "
        f"resume: exit {resumed.code} in {resumed.wall:.2f} s, {after_resume} requests"
    )
    line(
        "requests re-running finished",
        f"{after_run + after_resume}",
        report.check(
            name, "requests on a finished table", after_run + after_resume, "==", 0, count
        ),
    )


def section_pacing(report: Report, _shared: SharedData) -> None:
    """identifAI's fixed windows, scaled 10x: 20/1 s burst, 60/6 s sustained (10/s)."""
    say(
        "== pacing: fixed windows 20/1s + 60/6s (identifAI's 2/s + 60/min shape, 10x faster), "
        "450 ids =="
    )
    paced_section(
        report,
        "pacing",
        ["--limit", "20/1", "--limit", "60/6"],
        450,
        10.0,
        ratio_goal=0.98,
        rerun=True,
    )


def section_leaky(report: Report, _shared: SharedData) -> None:
    """A leaky bucket the client is told nothing about."""
    say("== leaky: unannounced leaky bucket 20/s, burst 5, no rate headers, 600 ids ==")
    flags = ["--no-limits", "--leaky-rate", "20", "--leaky-burst", "5", "--no-rate-headers"]
    paced_section(report, "leaky", flags, 600, 20.0, ratio_goal=0.95, rerun=False)


# --------------------------------------------------------------------------- throughput


async def naive_fetch(url: str, key: str, ids: list[str], out: Path, concurrency: int) -> int:
    """The baseline: httpx + a semaphore, gather over every id, plain writes; returns 200s."""
    semaphore = asyncio.Semaphore(concurrency)
    saved = 0

    async def one(client: httpx.AsyncClient, identifier: str) -> None:
        nonlocal saved
        async with semaphore:
            response = await client.get(f"/api/classification/heatmap/{identifier}")
            if response.status_code == 200:
                with open(out / f"{identifier}.png", "wb") as handle:
                    handle.write(response.content)
                saved += 1

    async with httpx.AsyncClient(
        base_url=url, headers={"X-Api-Key": key}, trust_env=False
    ) as client:
        await asyncio.gather(*(one(client, identifier) for identifier in ids))
    return saved


@dataclass(frozen=True, slots=True)
class Timed:
    """Wall and process CPU time of one in-process run, and the requests it made."""

    wall: float
    cpu: float
    requests: int


def timed(server: FakeServer, work: Callable[[], object]) -> Timed:
    """Run `work` in this process between two stats readings."""
    server.reset()
    wall, cpu = time.perf_counter(), time.process_time()
    work()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return Timed(wall, cpu, int(server.stats()["requests"]))


def run_naive(server: FakeServer, ids: list[str], work: Path, n: int) -> Timed:
    """One baseline run in a fresh output directory."""
    out = work / f"naive-{n}"
    out.mkdir()
    return timed(
        server,
        lambda: asyncio.run(naive_fetch(server.url, server.key, ids, out, THROUGHPUT_CONCURRENCY)),
    )


def run_batchmap_inprocess(
    server: FakeServer, csv: Path, work: Path, n: int
) -> tuple[Timed, float]:
    """One batchmap run in this process on a fresh table; also the load time (not in Timed)."""
    from batchmap.app import FetchOptions, fetch_all, load_csv

    db = work / f"jobs-{n}.db"
    started = time.perf_counter()
    load_csv(db, csv)
    loaded = time.perf_counter() - started
    options = FetchOptions(
        api_key=server.key,
        base_url=server.url,
        out=work / f"heatmaps-{n}",
        concurrency=THROUGHPUT_CONCURRENCY,
    )
    result: list[int] = []
    run = timed(server, lambda: result.append(fetch_all(db, options).exit_code))
    if result[0] not in (0, 1):
        say(f"  !! batchmap exit code {result[0]}")
    return run, loaded


def alternate(server: FakeServer, ids: list[str], work: Path) -> tuple[list[Timed], list[Timed]]:
    """A warm-up, then naive and batchmap three times, alternating; prints every run."""
    run_naive(server, ids, work, 0)  # the fake caches PNGs: every measured run finds them warm
    naive: list[Timed] = []
    ours: list[Timed] = []
    loads: list[float] = []
    for attempt in (1, 2, 3):
        naive.append(run_naive(server, ids, work, attempt))
        run, loaded = run_batchmap_inprocess(server, work / "ids.csv", work, attempt)
        ours.append(run)
        loads.append(loaded)
    for label, runs in (("naive", naive), ("batchmap", ours)):
        each = "; ".join(
            f"{r.wall:.2f} s wall, {r.cpu:.2f} s CPU, {r.requests} requests" for r in runs
        )
        say(f"  {label:<9} {each}")
    say(f"  (batchmap's load_csv of the {len(ids)} ids, not in its time: {min(loads):.2f} s)")
    return naive, ours


def section_throughput(report: Report, _shared: SharedData) -> None:
    """Unthrottled: batchmap against a naive httpx script, both in this process."""
    n, width = THROUGHPUT_IDS, THROUGHPUT_CONCURRENCY
    say(
        f"== throughput: no limits, {n} ids, concurrency {width}, naive httpx vs batchmap, "
        "both in this process, best of 3 alternating runs after a warm-up =="
    )
    with (
        tempfile.TemporaryDirectory(prefix="bench-throughput-") as tmp,
        fake_server("throughput", ["--no-limits"]) as server,
    ):
        work = Path(tmp)
        ids = write_ids_csv(work / "ids.csv", "throughput", n)
        say(
            f"  naive:    asyncio.run(naive_fetch(url, key, ids, out, {width}))  "
            "# httpx.AsyncClient + Semaphore, gather, open/write, no fsync, no DB"
        )
        say(
            "  batchmap: load_csv(db, ids.csv); fetch_all(db, FetchOptions(api_key=key, "
            f"base_url=url, out=out, concurrency={width}))"
        )
        naive, ours = alternate(server, ids, work)
    throughput_figures(report, n, naive, ours)


def throughput_figures(report: Report, n: int, naive: list[Timed], ours: list[Timed]) -> None:
    """Best-of figures: the speed ratio and CPU per request; and whether sniffio is there."""
    naive_rate = n / min(r.wall for r in naive)
    our_rate = n / min(r.wall for r in ours)
    naive_cpu = 1000 * min(r.cpu / max(1, r.requests) for r in naive)
    our_cpu = 1000 * min(r.cpu / max(1, r.requests) for r in ours)
    speed = our_rate / naive_rate
    sniffio = importlib.util.find_spec("sniffio") is not None
    for key, value in (
        ("ids", n),
        ("naive_ids_per_s", naive_rate),
        ("batchmap_ids_per_s", our_rate),
        ("speed_ratio", speed),
        ("naive_cpu_ms_per_request", naive_cpu),
        ("batchmap_cpu_ms_per_request", our_cpu),
        ("sniffio_importable", sniffio),
    ):
        report.figure("throughput", key, value)
    line("ids/s (best of 3)", f"naive {naive_rate:.0f}  batchmap {our_rate:.0f}")
    line(
        "batchmap ÷ naive ids/s",
        ratio(speed),
        report.check("throughput", "batchmap ÷ naive ids/s", speed, ">=", 0.9, ratio),
    )
    line(
        "CPU ms per request (best)",
        f"naive {naive_cpu:.2f}  batchmap {our_cpu:.2f}  (x{our_cpu / naive_cpu:.2f})",
    )
    line("sniffio importable", "yes" if sniffio else "NO: httpcore retries the import per request")


# --------------------------------------------------------------------------- resume


def mark_done(db: Path, rows: int) -> float:
    """Mark the first `rows` rows done with a made-up file, in one UPDATE; returns seconds."""
    started = time.perf_counter()
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        conn.execute(
            "UPDATE jobs SET state = 'done', http_status = 200, attempts = 1, "
            "path = 'heatmaps/' || identifier || '.png', bytes = 4242, sha256 = ?, "
            "updated_at = created_at, finished_at = created_at WHERE rowid <= ?",
            ("0" * 64, rows),
        )
    return time.perf_counter() - started


def first_request_after(child: Child, server: FakeServer, limit: float) -> float | None:
    """Seconds from the child's start to the first heatmap request the server saw."""
    while child.running and time.perf_counter() - child.started < limit:
        asked = time.perf_counter()
        if int(server.stats()["requests"]) > 0:
            return (asked + time.perf_counter()) / 2 - child.started
        time.sleep(FIRST_REQUEST_POLL)
    return None


def build_resume_table(csv: Path, work: Path) -> None:
    """A 1M-row table, 900k rows done: `batchmap load`, then one UPDATE."""
    shutil.copy(csv, work / "ids.csv")
    loaded = batchmap(["load", "ids.csv", "--db", "jobs.db", "-q"], cwd=work)
    took = mark_done(work / "jobs.db", DONE_ROWS)
    say(
        f"  (setup: load {loaded.wall:.1f} s; one SQL UPDATE marking the first {DONE_ROWS:,} "
        f"rows done {took:.1f} s)"
    )


def section_resume(report: Report, shared: SharedData) -> None:
    """How soon `resume` sends its first request on a 1M-row table that is 90 % done."""
    say(
        f"== resume: {SCALE_IDS:,}-row table, {DONE_ROWS:,} done; start to first request, "
        "then SIGINT =="
    )
    with tempfile.TemporaryDirectory(prefix="bench-resume-") as tmp:
        work = Path(tmp)
        build_resume_table(shared.scale_csv(), work)
        with fake_server("resume", ["--no-limits"]) as server:
            args = ["resume", "--max-rate", "5", "--db", "jobs.db", "--out", "heatmaps"]
            args += ["--base-url", server.url, "-q"]
            say(shown(args, server.key))
            # Not under the RSS wrapper: the SIGINT must reach batchmap itself.
            child = Child(batchmap_argv(*args), cwd=work, env=child_env(server.key), rss=False)
            first = first_request_after(child, server, 30.0)
            stopped_at = time.perf_counter()
            child.signal(signal.SIGINT)
            end = child.wait(30.0)
            stop = child.started + end.wall - stopped_at
            sent = int(server.stats()["requests"])
        counts = resolved_rows(work / "jobs.db")
    report.figure("resume", "start_to_first_request_s", first)
    report.figure("resume", "exit_code_after_sigint", end.code)
    report.figure("resume", "sigint_to_exit_s", stop)
    line(
        "start to first request",
        "n/a" if first is None else seconds(first),
        report.check("resume", "start to first request", first, "<=", 2.0, seconds),
    )
    line(
        "SIGINT to exit",
        f"{seconds(stop)}, exit {end.code} ({sent} requests sent)",
        report.check("resume", "exit code after SIGINT", end.code, "==", 130, count),
    )
    say(f"  table after the stop: {', '.join(f'{k} {v:,}' for k, v in sorted(counts.items()))}")


# --------------------------------------------------------------------------- scale


def sqlite_import(csv: Path, work: Path) -> Finished | None:
    """The floor: sqlite3's own CSV import into a fresh one-column table."""
    sqlite = shutil.which("sqlite3") or "/usr/bin/sqlite3"
    if not Path(sqlite).exists():
        say("  sqlite3 CLI not found: no floor, the load ratio is skipped")
        return None
    argv = [sqlite, "floor.db", ".mode csv", f".import {csv.name} t"]
    say(f"  $ {shlex.join(['sqlite3', *argv[1:]])}")
    return run_child(argv, cwd=work)


def section_scale(report: Report, shared: SharedData) -> None:
    """Loading, status and reports at a million identifiers: time and peak memory."""
    say(f"== scale: load, status and report at {SCALE_IDS:,} ids (peak RSS per process) ==")
    csv = shared.scale_csv()
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        work = Path(tmp)
        shutil.copy(csv, work / csv.name)
        scale_load(report, work, csv.name)
        for flags in ([], ["--json"]):
            scale_status(report, work, flags)
        for fmt in ("csv", "jsonl"):
            scale_report(report, work, fmt)


def scale_status(report: Report, work: Path, flags: list[str]) -> None:
    """`batchmap status` on the 1M table: time (target 1.5 s)."""
    done = batchmap(["status", "--db", "jobs.db", *flags], cwd=work)
    label = " ".join(["status", *flags])
    report.figure("scale", label.replace(" --", "_") + "_s", done.wall)
    line(
        f"batchmap {label}",
        f"{seconds(done.wall)} (peak RSS {megabytes(done.maxrss_mb)})",
        report.check("scale", f"{label} time", done.wall, "<=", 1.5, seconds),
    )


def scale_load(report: Report, work: Path, csv: str) -> None:
    """The sqlite3 floor, then `batchmap load` of the same CSV: time ratio and peak RSS."""
    write_ids_csv(work / "small.csv", "scale-small", SMALL_IDS)
    floor = sqlite_import(work / csv, work)
    load = batchmap(["load", csv, "--db", "jobs.db"], cwd=work)
    small = run_child(batchmap_argv("load", "small.csv", "--db", "small.db", "-q"), cwd=work)
    said = load.stderr.strip().splitlines()
    say(f"  batchmap says: {said[-1] if said else '?'}")
    report.figure("scale", "load_s", load.wall)
    report.figure("scale", "load_peak_rss_mb", load.maxrss_mb)
    report.figure("scale", "sqlite3_import_s", None if floor is None else floor.wall)
    if floor is not None:
        load_ratio = load.wall / floor.wall
        line("sqlite3 .import (floor)", seconds(floor.wall))
        line(
            "batchmap load",
            f"{seconds(load.wall)} = {ratio(load_ratio)} x floor",
            report.check("scale", "load time ÷ sqlite3 import", load_ratio, "<=", 4.0, ratio),
        )
    line(
        "batchmap load peak RSS",
        peak(load, small, f"a {SMALL_IDS}-id load"),
        report.check("scale", "load peak RSS", load.maxrss_mb, "<=", 150, megabytes),
    )


def scale_report(report: Report, work: Path, fmt: str) -> None:
    """`batchmap report` of every row to a file; memory compared with a small table's."""
    out = f"report.{fmt}"
    done = batchmap(["report", "--db", "jobs.db", "--format", fmt, "-o", out], cwd=work)
    small = run_child(
        batchmap_argv("report", "--db", "small.db", "--format", fmt, "-o", "s." + fmt), cwd=work
    )
    size = (work / out).stat().st_size / 1e6 if (work / out).exists() else 0.0
    report.figure("scale", f"report_{fmt}_s", done.wall)
    report.figure("scale", f"report_{fmt}_peak_rss_mb", done.maxrss_mb)
    line(f"report --format {fmt}", f"{seconds(done.wall)}, {size:.0f} MB written")
    line(
        f"report --format {fmt} peak RSS",
        peak(done, small, f"{SMALL_IDS} rows"),
        report.check(
            "scale", f"report {fmt} peak RSS (flat)", done.maxrss_mb, "<=", 150, megabytes
        ),
    )


# --------------------------------------------------------------------------- main


SECTIONS: dict[str, Callable[[Report, SharedData], None]] = {
    "pacing": section_pacing,
    "leaky": section_leaky,
    "throughput": section_throughput,
    "resume": section_resume,
    "scale": section_scale,
}


def summary(report: Report, elapsed: float) -> None:
    """The final table: every target, its figure and PASS/MISS."""
    say(f"== summary ({elapsed:.0f} s) ==")
    say(f"  {'section':<11} {'figure':<36} {'value':>10}  {'target':<11} result")
    for t in report.targets:
        say(f"  {t.section:<11} {t.figure:<36} {t.shown:>10}  {t.op} {t.goal_shown:<8} {t.verdict}")
    for name, error in report.errors.items():
        say(f"  {name:<11} {'(section failed)':<36} {'':>10}  {'':<11} ERROR: {error}")


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Section names and --json."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "sections",
        nargs="*",
        metavar="SECTION",
        help=f"any of: {' '.join(SECTIONS)} (default: all)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    unknown = [name for name in args.sections if name not in SECTIONS]
    if unknown:
        parser.error(f"unknown section {', '.join(unknown)}; choose from {' '.join(SECTIONS)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the chosen sections, print the summary, write --json."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    chosen = args.sections or list(SECTIONS)
    report = Report()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-shared-") as shared_dir:
        shared = SharedData(Path(shared_dir))
        try:
            for name in chosen:
                run_section(report, shared, name)
        finally:
            Child.kill_all()  # only if interrupted: sections wait for their own children
    elapsed = time.perf_counter() - started
    summary(report, elapsed)
    if args.json is not None:
        write_json(args.json, report, elapsed)
    return 1 if report.errors else 0


def run_section(report: Report, shared: SharedData, name: str) -> None:
    """One section; an exception is printed and recorded, and the bench goes on."""
    began = time.perf_counter()
    try:
        SECTIONS[name](report, shared)
    except Exception as error:  # a broken section must not hide the others' figures
        report.errors[name] = f"{type(error).__name__}: {error}"
        traceback.print_exc()
    took = time.perf_counter() - began
    report.figure(name, "section_seconds", took)
    say(f"  ({name}: {took:.0f} s)")
    say()


def write_json(path: Path, report: Report, elapsed: float) -> None:
    """The results as JSON."""
    data = {
        "elapsed_s": elapsed,
        "figures": report.figures,
        "targets": [
            {
                "section": t.section,
                "figure": t.figure,
                "value": t.value,
                "op": t.op,
                "target": t.goal,
                "result": t.verdict,
            }
            for t in report.targets
        ],
        "errors": report.errors,
    }
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
