"""Print how the pacer does against simulated limiters, on a fake clock (runs in seconds).

    .venv/bin/python tools/pacer_sim.py [--minutes 20] [--workers 4 --latency 0.05]

Per case: efficiency (answers per second / what the limiter allows) in steady state and over
the whole run, the share of requests answered 429 (or 503), and requests per resolved
identifier. By default one worker and 1 ms latency; with --workers, that many workers whose
answers take --latency seconds and arrive out of order. "Steady" is the second half of the
run: long after learning is over, and the same rule for every limiter. The storm starts a
minute in, so it counts in the whole-run figures only.

Then the cases `python -m tools.bench limiters` runs on real sockets, simulated (4 workers,
4 ms answers, until every id is resolved), with the same figures the bench prints beside
its real runs: requests per id, 429 share, whole-run efficiency against the ideal finish.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from batchmap.pacer import Pacer
from tests.limiters import (
    FakeClock,
    Laravel,
    LeakyBucket,
    Limiter,
    NginxLimitReq,
    Storm,
    VirtualClock,
    figures,
    ideal_seconds,
    simulate,
    simulate_pool,
)
from tools.bench.limiters import CASES as REAL_CASES
from tools.bench.limiters import simulated

CASES: list[tuple[str, float, Callable[[FakeClock | VirtualClock], Limiter]]] = [
    ("laravel 2/1s + 60/60s, whole seconds", 1.0, lambda c: Laravel(((2, 1), (60, 60)))),
    (
        "laravel 2/1s + 60/60s, fewest-left headers",
        1.0,
        lambda c: Laravel(((2, 1), (60, 60)), headers="min"),
    ),
    ("laravel 20/1s + 300/30s, whole seconds", 10.0, lambda c: Laravel(((20, 1), (300, 30)))),
    (
        "laravel 20/1s + 300/30s, fewest-left headers",
        10.0,
        lambda c: Laravel(((20, 1), (300, 30)), headers="min"),
    ),
    ("leaky bucket 20/s burst 5, no headers", 20.0, lambda c: LeakyBucket(rate=20.0, burst=5)),
    ("nginx limit_req 20/s, Retry-After 1", 20.0, lambda c: NginxLimitReq(rate=20.0)),
    (
        "nginx limit_req 20/s, 503 without Retry-After",
        20.0,
        lambda c: NginxLimitReq(rate=20.0, status=503, retry_after=None),
    ),
    (
        "10 s 429 storm (Retry-After 3) at 15/s",
        15.0,
        lambda c: Storm(NginxLimitReq(rate=15.0, burst=5), start=c() + 60, seconds=10),
    ),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=20.0, help="simulated minutes per case")
    parser.add_argument("--workers", type=int, default=1, help="concurrent workers")
    parser.add_argument("--latency", type=float, default=0.001, help="seconds per answer")
    parser.add_argument("--jitter", type=float, default=0.0, help="up to this much more, each way")
    args = parser.parse_args()
    seconds = args.minutes * 60
    print(
        f"{args.minutes:g} simulated minutes, {args.workers} worker(s), "
        f"latency {args.latency}s + up to {args.jitter}s each way"
    )
    print(f"{'case':48} {'steady':>7} {'whole':>7} {'429s':>7} {'req/id':>7}")
    for name, allowed, make in CASES:
        clock = FakeClock() if args.workers == 1 else VirtualClock()
        pacer = Pacer(clock=clock, sleep=clock.sleep, wall=clock)
        server = make(clock)
        if isinstance(clock, FakeClock):
            log = simulate(pacer, clock, server, seconds=seconds, latency=args.latency)
        else:
            log = simulate_pool(
                pacer,
                clock,
                server,
                seconds=seconds,
                workers=args.workers,
                latency=args.latency,
                jitter=args.jitter,
            )
        f = figures(log, allowed=allowed, steady_after=seconds / 2)
        print(
            f"{name:48} {f.steady:7.3f} {f.whole:7.3f} {f.refused:7.2%} {f.per_id:7.4f}",
            flush=True,
        )
    print("\nthe real-limiter cases of `python -m tools.bench limiters`, simulated:")
    print(f"{'case':48} {'whole':>7} {'of_slow':>7} {'429s':>7} {'req/id':>7}")
    for case in REAL_CASES:
        g = simulated(case, ideal_seconds(case.model, case.ids))
        print(
            f"{case.name:48} {g.whole:7.3f} {g.of_slow:7.3f} {g.share:7.2%} {g.per_id:7.4f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
