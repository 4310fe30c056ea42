"""Issue 17's cases for `make chaos`: servers that are not batchmap's fake (tests/hostile.py).

Per case: rows failed by the fault (not by their own identifier), requests spent, how long
the run took, and whether it ended by itself (an exit it chose, not a kill). A signal case
also gives the seconds from the signal to the exit. Every server listens on 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import signal
import sqlite3
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from batchmap.fakeserver import expected_status
from tests.hostile import (
    Handler,
    HostileServer,
    failing,
    fake_heatmaps,
    hostile_in_thread,
    redirect_all,
    redirect_loop,
    retry_after,
    silent,
    slow_after,
    stalling,
)
from tools.bench.common import Report, count, hex_id, line, say
from tools.bench.processes import Child, batchmap_argv, child_env

KEY = "bench-night-key"
IDS = 50
RUN_TIMEOUT = 120.0  # a case still running after this did not end by itself


@dataclass(frozen=True, slots=True)
class Night:
    """One hostile server; `broken` rows fail on their own (the case's own failures)."""

    name: str
    what: str
    server: Callable[[list[str]], Handler]
    args: tuple[str, ...] = ()
    ends: tuple[int, ...] = (0, 1)  # exits that mean the run ended as it should
    broken: int = 0  # the first `broken` identifiers misbehave on their own
    signal: signal.Signals | None = None  # sent once the server saw 10 requests


def _ok_ids(n: int) -> list[str]:
    found: list[str] = []
    i = 0
    while len(found) < n:
        identifier = hex_id("night", i)
        if expected_status(identifier) == 200:
            found.append(identifier)
        i += 1
    return found


NIGHTS = (
    Night(
        "redirect-https",
        "every answer a 301 to the same path over https (a base URL that should be https)",
        lambda _: redirect_all(scheme="https"),
        ends=(4,),
    ),
    Night("redirect-loop", "every answer a 302 to itself", lambda _: redirect_loop(), ends=(4,)),
    Night(
        "trickle-5-of-50",
        "5 of 50 ids answer headers, then a byte every 2 s (--timeout 3)",
        lambda ids: stalling(ids[:5], every=2.0, then=fake_heatmaps(key=KEY)),
        args=("--timeout", "3", "--max-attempts", "3", "--backoff-base", "0.5"),
        broken=5,
    ),
    Night(
        "500-4-of-50",
        "4 of 50 ids always answer 500 (the rest are fine)",
        lambda ids: failing(ids[:4], then=fake_heatmaps(key=KEY)),
        args=("--max-attempts", "3", "--backoff-base", "0.5"),
        broken=4,
    ),
    Night(
        "silence",
        "connections accepted, never answered (--timeout 3)",
        lambda _: silent(),
        args=("--timeout", "3"),
        ends=(4,),
    ),
    Night(
        "daily-quota",
        "429 with Retry-After: 86400 (run, then an immediate resume)",
        lambda _: retry_after("86400", times=10_000),
        ends=(4,),
    ),
    *(
        Night(
            f"{sig.name.lower()}-slow",
            f"{sig.name} while 4 requests wait for answers 60 s late",
            lambda _: slow_after(10, delay=60.0, then=fake_heatmaps(key=KEY)),
            args=("--concurrency", "4"),
            ends=(130,),
            signal=sig,
        )
        for sig in (signal.SIGTERM, signal.SIGHUP)
    ),
)


def _failed_by_fault(db: Path, broken: set[str]) -> tuple[int, dict[str, int]]:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        rows = conn.execute("SELECT identifier, state FROM jobs").fetchall()
    states: dict[str, int] = {}
    for _, state in rows:
        states[state] = states.get(state, 0) + 1
    return sum(1 for i, s in rows if s == "failed" and i not in broken), states


def run_night(night: Night, work: Path, report: Report) -> None:
    """One case: the CLI against its server, then (daily-quota) an immediate resume."""
    ids = _ok_ids(IDS)
    (work / "ids.csv").write_text("identifier\n" + "\n".join(ids) + "\n", encoding="utf-8")
    server = HostileServer(night.server(ids))
    base = ["--db", "jobs.db", "--out", "heatmaps", "--no-prefilter", "-q", *night.args]
    with hostile_in_thread(server) as url:
        argv = batchmap_argv("run", "ids.csv", "--base-url", url, *base)
        child = Child(argv, cwd=work, env=child_env(KEY), rss=False)
        to_exit = None
        if night.signal is not None:
            while len(server.requests) < 10 and child.running:
                time.sleep(0.02)
            sent = time.perf_counter()
            child.signal(night.signal)
        done = child.wait(RUN_TIMEOUT)
        if night.signal is not None:
            to_exit = child.started + done.wall - sent
        requests = len(server.requests)
        again = None
        if night.name == "daily-quota":
            argv = batchmap_argv("resume", "--base-url", url, *base)
            again = Child(argv, cwd=work, env=child_env(KEY), rss=False).wait(30.0)
    failed, states = _failed_by_fault(work / "jobs.db", set(ids[: night.broken]))
    ended = not done.timed_out and done.code in night.ends
    shown = ", ".join(f"{state} {n}" for state, n in sorted(states.items()))
    say(f"  exit {done.code}{' (killed: still running)' if done.timed_out else ''}; {shown}")
    line(
        "rows failed by the fault",
        str(failed),
        report.check("chaos", f"{night.name}: rows failed by the fault", failed, "==", 0, count),
    )
    line("requests spent", str(requests))
    line("run time", f"{done.wall:.1f} s")
    line(
        "ended by itself",
        "yes" if ended else "no",
        report.check("chaos", f"{night.name}: ended by itself", int(ended), "==", 1, count),
    )
    if to_exit is not None:
        line("signal to exit", f"{to_exit:.1f} s")
        report.figure("chaos", f"{night.name}.signal_to_exit_s", to_exit)
    if again is not None:
        line("resume at once", f"exit {again.code} in {again.wall:.1f} s, "
             f"{len(server.requests) - requests} requests")  # fmt: skip
    for key, value in (
        ("exit_code", done.code), ("failed_by_fault", failed), ("requests", requests),
        ("run_s", done.wall), ("ended_by_itself", ended),
    ):  # fmt: skip
        report.figure("chaos", f"{night.name}.{key}", value)


def section_nights(report: Report) -> None:
    """Every issue-17 case in turn."""
    say(f"== chaos, issue 17: {IDS} ids per case against tests/hostile.py servers ==")
    for night in NIGHTS:
        say(f"-- {night.name}: {night.what}")
        with tempfile.TemporaryDirectory(prefix=f"bench-night-{night.name}-") as tmp:
            run_night(night, Path(tmp), report)
