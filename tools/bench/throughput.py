"""Unthrottled throughput: batchmap against a naive httpx script, both in this process."""

from __future__ import annotations

import asyncio
import importlib.util
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from tools.bench.common import Report, SharedData, line, ratio, say, write_ids_csv
from tools.bench.processes import FakeServer, fake_server

THROUGHPUT_IDS = 3000
THROUGHPUT_CONCURRENCY = 16


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
    from batchmap import Job, Pace

    db = work / f"jobs-{n}.db"
    job = Job(db)
    started = time.perf_counter()
    job.load(csv)
    loaded = time.perf_counter() - started
    result: list[int] = []

    def fetch() -> None:
        outcome = job.run(
            api_key=server.key,
            base_url=server.url,
            out=work / f"heatmaps-{n}",
            pace=Pace(concurrency=THROUGHPUT_CONCURRENCY),
            prefilter=False,  # the naive baseline asks no classifications either
        )
        result.append(outcome.exit_code)

    run = timed(server, fetch)
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
