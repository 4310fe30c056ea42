"""Paced runs: batchmap against a rate-limited fake, compared with what the limiter allows.

"Steady" is the second half of a run by time: from the stats sample nearest the midpoint
between the server's first request and its last answer, to that last answer. The first half
holds the pacer's learning (scout, first 429s); every figure is shown for the whole run too.
"""

from __future__ import annotations

import itertools
import json
import shlex
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from tools.bench.common import Report, SharedData, count, line, percent, ratio, say, write_ids_csv
from tools.bench.processes import (
    FINAL,
    FakeServer,
    batchmap,
    batchmap_argv,
    fake_server,
    n429,
    resolved_rows,
    run_child,
)

STATS_EVERY = 0.1  # seconds between /_fake/stats samples while a paced run goes on


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
        # The pacer alone: the prefilter's saving is measured in its own section.
        args += ["--base-url", server.url, "-q", "--no-prefilter"]
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


STEADY_RULE = (
    "steady = the second half by time: from the stats sample nearest the midpoint of "
    "first request .. last answer, to the last answer"
)


def paced_figures(
    report: Report, name: str, shape: RunShape, resolved: int, allowed: float, goal: float
) -> None:
    """Print and record the rate, 429 share and requests per id, whole run beside steady."""
    steady_from = shape.seconds - shape.steady_seconds
    say(
        f"  server: {shape.requests} requests, {shape.limited} answered 429; first request "
        f"to last answer {shape.seconds:.1f} s, steady {steady_from:.1f} s .. "
        f"{shape.seconds:.1f} s of it"
    )
    say(f"  ({STEADY_RULE}; the whole run includes learning)")
    whole = shape.answered / shape.seconds / allowed
    steady = shape.steady_answered / shape.steady_seconds / allowed
    share = shape.limited / max(1, shape.requests)
    steady_share = shape.steady_limited / max(1, shape.steady_requests)
    per_id = shape.requests / max(1, resolved)
    steady_per_answer = shape.steady_requests / max(1, shape.steady_answered)
    for key, value in (
        ("run_seconds", shape.seconds),
        ("steady_seconds", shape.steady_seconds),
        ("steady_rule", STEADY_RULE),
        ("requests", shape.requests),
        ("answered_429", shape.limited),
        ("answered_per_s_ratio_whole", whole),
        ("answered_per_s_ratio_steady", steady),
        ("share_429_whole", share),
        ("share_429_steady", steady_share),
        ("requests_per_resolved_id", per_id),
        ("requests_per_answer_steady", steady_per_answer),
    ):
        report.figure(name, key, value)
    line(
        f"answered/s ÷ {allowed:g}/s",
        f"{ratio(whole)} (whole run)  {ratio(steady)} (steady)",
        report.check(name, "answered/s ÷ allowed (steady)", steady, ">=", goal, ratio),
    )
    report.info(name, "answered/s ÷ allowed (whole run)", whole, ratio)
    line(
        "429 share of requests",
        f"{percent(share)} (whole run)  {percent(steady_share)} (steady)",
        report.check(name, "429 share (steady)", steady_share, "<=", 0.01, percent),
    )
    report.info(name, "429 share (whole run)", share, percent)
    line(
        "requests per resolved id",
        f"{per_id:.3f} (whole run)",
        report.check(name, "requests per resolved id", per_id, "<=", 1.02, ratio),
    )
    line("requests per answer", f"{steady_per_answer:.3f} (steady)")


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


def section_leaky_retry_after(report: Report, _shared: SharedData) -> None:
    """The same bucket with the fake's rate headers on: a whole-second Retry-After on each 429.

    nginx's limit_req behaves so: no X-RateLimit-*, and `Retry-After: 1` costs a full second
    of pause for every probe that meets the limit (issue 9, finding 9).
    """
    say(
        "== leaky-retry-after: leaky bucket 20/s, burst 5, 429s carry a whole-second "
        "Retry-After (no X-RateLimit-*), 600 ids =="
    )
    flags = ["--no-limits", "--leaky-rate", "20", "--leaky-burst", "5"]
    paced_section(report, "leaky-retry-after", flags, 600, 20.0, ratio_goal=0.95, rerun=False)
