"""The operations the CLI offers, as plain functions over a job database.

Each one opens what it needs, does one thing and returns data; the CLI only shows it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from batchmap.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, InputError
from batchmap.fetch import make_client
from batchmap.files import Layout, heatmap_path, remove_file, remove_partials
from batchmap.ids import IdSource
from batchmap.lock import JobLock
from batchmap.models import DEFAULT_BASE_URL, JobState, LoadStats
from batchmap.pacer import Pacer
from batchmap.runner import Runner, RunSettings, Tally
from batchmap.store import Store

log = logging.getLogger("batchmap")

DEFAULT_OUT = Path("heatmaps")


@dataclass(frozen=True, slots=True)
class FetchOptions:
    """Everything a run needs besides the job table."""

    api_key: str
    base_url: str = DEFAULT_BASE_URL
    out: Path | None = None
    layout: Layout | None = None
    concurrency: int = 4
    max_rate: float | None = None
    max_attempts: int = 5
    timeout: float = 30.0
    backoff_base: float = 1.0
    retry_failed: bool = False


@dataclass(frozen=True, slots=True)
class RunResult:
    """How a run ended and the table's counts afterwards."""

    tally: Tally
    counts: dict[JobState, int]
    interrupted: bool
    elapsed: float

    @property
    def exit_code(self) -> int:
        """PRODUCT.md: 130 interrupted, 1 some rows failed, 0 all done or no_heatmap."""
        if self.interrupted:
            return EXIT_INTERRUPTED
        unfinished = self.counts[JobState.PENDING] + self.counts[JobState.RUNNING]
        return EXIT_FAILED if self.counts[JobState.FAILED] or unfinished else EXIT_OK


Tick = Callable[[Runner, dict[JobState, int]], None]


def load_csv(db_path: Path, csv_path: Path, *, column: str | None = None) -> LoadStats:
    """Add the identifiers of a CSV to the job table; finished rows are never touched."""
    source = IdSource(csv_path, column=column)
    store = Store(db_path)
    try:
        seen, added = store.load_ids(source)
    finally:
        store.close()
    return LoadStats(read=seen, added=added, duplicates=seen - added, blank=source.blank)


def fetch_all(
    db_path: Path, options: FetchOptions, *, on_tick: Tick | None = None, tick_every: float = 0.5
) -> RunResult:
    """Fetch every unfinished row, holding the job lock for the whole run."""
    check_base_url(options.base_url)
    warn_if_plain_http(options.base_url)
    store = Store(db_path, create=False)
    try:
        with JobLock(db_path):
            # Recover with the layout the killed run used, before this run's options apply.
            _recover(store, *_stored_output(store))
            settings = _settings(store, options)
            remove_partials(settings.out)  # in case this run's --out differs from the last
            if options.retry_failed:
                store.retry_failed()
            pacer = Pacer(max_rate=options.max_rate)
            saved = store.get_meta("pacer")
            if isinstance(saved, dict):
                pacer.restore(saved)
            return asyncio.run(_run(store, pacer, settings, options, on_tick, tick_every))
    finally:
        store.close()


def _stored_output(store: Store) -> tuple[Path, Layout]:
    """The output directory and layout the last run used (or the defaults)."""
    out = Path(store.get_meta("out") or DEFAULT_OUT).absolute()
    return out, Layout(store.get_meta("layout") or Layout.SHARDED)


def _settings(store: Store, options: FetchOptions) -> RunSettings:
    # The first run's --out and --layout stick to the database, so `resume` finds its files.
    stored_out, stored_layout = _stored_output(store)
    out = options.out or stored_out
    layout = options.layout or stored_layout
    store.set_meta("out", str(out.absolute()))
    store.set_meta("layout", layout.value)
    return RunSettings(
        out=out.absolute(),
        layout=layout,
        concurrency=options.concurrency,
        max_attempts=options.max_attempts,
        timeout=options.timeout,
        backoff_base=options.backoff_base,
    )


def _recover(store: Store, out: Path, layout: Layout) -> None:
    """Undo what a killed run left: `running` rows, their possibly written files, partials."""
    # A `running` row's file may be complete but unrecorded (killed between rename and
    # commit): remove it first, durably, and only then mark the row pending. A kill in
    # between leaves the row `running`, so the next start does this again.
    for job in store.running():
        remove_file(heatmap_path(out, job.identifier, layout=layout))
    store.recover()
    removed = remove_partials(out)
    if removed:
        log.info("removed %d partial file(s) left by an interrupted run", removed)


async def _run(
    store: Store,
    pacer: Pacer,
    settings: RunSettings,
    options: FetchOptions,
    on_tick: Tick | None,
    tick_every: float,
) -> RunResult:
    client = make_client(
        options.base_url,
        api_key=options.api_key,
        timeout=options.timeout,
        concurrency=options.concurrency,
    )
    async with client:
        runner = Runner(store, client, pacer, settings)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, runner.stop.request)
        base_counts = store.counts()
        ticker = asyncio.create_task(_tick(runner, base_counts, on_tick, tick_every))
        try:
            tally = await runner.run()
        finally:
            ticker.cancel()
            store.set_meta("pacer", pacer.state())
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
    return RunResult(
        tally=tally,
        counts=store.counts(),
        interrupted=runner.stop.graceful.is_set(),
        elapsed=runner.clock() - tally.started_at,
    )


async def _tick(
    runner: Runner, base_counts: dict[JobState, int], on_tick: Tick | None, every: float
) -> None:
    saved: dict[str, object] = {}
    while True:
        state = runner.pacer.state()
        if state != saved:
            runner.store.set_meta("pacer", state)  # a server-imposed pause survives a restart
            saved = state
        if on_tick is not None:
            on_tick(runner, base_counts)
        await asyncio.sleep(every)


def check_base_url(base_url: str) -> None:
    """Refuse a base URL that could never reach an API, before any row is touched."""
    try:
        url = httpx.URL(base_url)
    except httpx.InvalidURL as error:
        raise InputError(f"--base-url {base_url!r}: {error}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise InputError(f"--base-url {base_url!r}: expected http(s)://HOST[:PORT][/PREFIX]")


def warn_if_plain_http(base_url: str) -> None:
    """The key travels in a header: say so when it would cross a network unencrypted."""
    url = httpx.URL(base_url)
    if url.scheme != "http":
        return
    try:
        loopback = ipaddress.ip_address(url.host).is_loopback
    except ValueError:
        loopback = url.host == "localhost"
    if not loopback:
        log.warning("warning: %s uses plain http; the API key would travel unencrypted", url.host)
