"""Print how the pacer does against simulated limiters, on a fake clock (runs in seconds).

    .venv/bin/python tools/pacer_sim.py [--minutes 20]

Per case: efficiency (answers per second / what the limiter allows) in steady state and over
the whole run, the share of requests answered 429 (or 503), and requests per resolved
identifier. One worker, 1 ms latency. "Steady" is the second half of the run: long enough
after the start that learning is over, and the same rule for every limiter.
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
    figures,
    simulate,
)

CASES: list[tuple[str, float, Callable[[FakeClock], Limiter]]] = [
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
    seconds = parser.parse_args().minutes * 60
    print(f"{'case':48} {'steady':>7} {'whole':>7} {'429s':>7} {'req/id':>7}")
    for name, allowed, make in CASES:
        clock = FakeClock()
        pacer = Pacer(clock=clock, sleep=clock.sleep, wall=clock)
        log = simulate(pacer, clock, make(clock), seconds=seconds)
        f = figures(log, allowed=allowed, steady_after=seconds / 2)
        print(
            f"{name:48} {f.steady:7.3f} {f.whole:7.3f} {f.refused:7.2%} {f.per_id:7.4f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
