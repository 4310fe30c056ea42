"""One run of a job, from lock to summary: the orchestration behind `Job.run` and `Job.arun`.

Order matters for "a refused run changes nothing": the job lock first, then the database
(checked before anything is written), then what the job remembers (a different --out is
refused here), then the CSV, then recovery of a killed run, then the fetching.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
import os
import signal
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from batchmap import originals
from batchmap.config import DEFAULT_BASE_URL, DEFAULT_LAYOUT, DEFAULT_OUT, Api, Output, Pace
from batchmap.context import RunContext, RunSettings, Stop, Tally
from batchmap.errors import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    ApiUnusableError,
    BatchmapError,
    InputError,
)
from batchmap.fetch import Proxy, choose_proxy, make_client
from batchmap.files import Layout, heatmap_path, remove_file, remove_partials
from batchmap.ids import IdSource
from batchmap.lock import JobLock
from batchmap.models import JobState, LoadStats
from batchmap.pacer import Pacer
from batchmap.policy import RETRY_AFTER_MAX, check_api_key
from batchmap.prefilter import META_KEY as PREFILTER_KEY
from batchmap.prefilter import NO_PREFILTER_KEY, on_by_default, remembered_unavailable
from batchmap.runner import Runner, ServerWait
from batchmap.store import Store, check_database
from batchmap.timeline import ETA_WINDOW
from batchmap.where import check_sources, say_where

log = logging.getLogger("batchmap")

TICK_EVERY = 0.5  # seconds between progress snapshots
# Each stops a run as Ctrl-C does (SIGHUP: a closed ssh session without nohup).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
WAIT_KEY = "server_wait"  # meta: {"until": epoch seconds, "status": HTTP status} a server named


@dataclass(frozen=True, slots=True)
class Progress:
    """A snapshot of a run for a progress display or a library callback."""

    done: int
    no_heatmap: int
    failed: int
    pending: int
    total: int
    rate: float  # rows finished per second, recently
    pacer_rate: float | None  # request starts per second the pacer allows
    eta: float | None  # seconds
    pause: str | None  # why the pool waits, with the seconds left
    requests: int
    retries: int
    rate_limited: int
    last_error: str | None
    stopping: bool
    in_flight: int

    @property
    def finished(self) -> int:
        """Rows in a final state."""
        return self.done + self.no_heatmap + self.failed


@dataclass(frozen=True, slots=True)
class RunResult:
    """How a run ended and the table's counts afterwards."""

    counts: dict[JobState, int]
    tally: Tally
    interrupted: bool
    elapsed: float  # seconds
    retryable_failures: int  # failed rows that `resume --retry-failed` could still win
    limit: int | None = None  # at most this many rows were fetched (`--limit`)

    @property
    def exit_code(self) -> int:
        """About this run only: 130 interrupted, 1 rows failed in this run, 0 otherwise.

        Rows that failed in an earlier run do not make a later run fail (`failed_earlier`).
        """
        if self.interrupted:
            return EXIT_INTERRUPTED
        unfinished = self.counts[JobState.PENDING] + self.counts[JobState.RUNNING]
        failed_now = self.tally.finished[JobState.FAILED]
        return EXIT_FAILED if failed_now or (unfinished and self.limit is None) else EXIT_OK

    @property
    def failed_earlier(self) -> int:
        """Failed rows of the table that this run did not fail."""
        return self.counts[JobState.FAILED] - self.tally.finished[JobState.FAILED]


@dataclass(slots=True)
class Prepared:
    """A job ready to fetch: locked, checked, loaded and recovered; its run is on record."""

    store: Store
    key: str
    base_url: str
    settings: RunSettings
    run_id: int
    proxy: Proxy | None = None
    exit_code: int = EXIT_FAILED
    limit: int | None = None
    end_reason: str | None = None  # kept in the run's record (a signal, an error)


@contextmanager
def prepare(
    db: Path,
    api: Api,
    pace: Pace,
    output: Output,
    *,
    load: str | os.PathLike[str] | None = None,
    column: str | None = None,
    retry_failed: bool = False,
    prefilter: bool | None = None,
    proxy_sees_key: bool = False,
    limit: int | None = None,
    images: str | os.PathLike[str] | None = None,
    image_column: str | None = None,
) -> Iterator[Prepared]:
    """Everything before the first request, synchronous, under the job lock.

    Kept out of the event loop so that Ctrl-C during a long load is a KeyboardInterrupt that
    rolls the load back whole. The run's record is closed with its exit code on the way out.
    `prefilter` None: as the job remembers (--no-prefilter is remembered, --prefilter forgets).
    """
    load = Path(load) if load is not None else None
    images = Path(images) if images is not None else None
    key, stripped = check_api_key(api.api_key)
    if stripped:
        log.info("note: removed whitespace around the API key")
    if api.base_url is not None:
        check_base_url(api.base_url)
    check_database(db)  # refuse another program's file before the lock file appears beside it
    check_sources(db, load)  # nor beside a job that does not exist, or for a CSV that does not
    with JobLock(db), Store(db, create=load is not None) as store:
        store.check_integrity()
        out, layout = resolve_output(store, output)
        base_url = resolve_base_url(store, api.base_url)
        check_base_url(base_url)
        if load is not None:
            loaded = load_ids(store, load, column=column, images=images, image_column=image_column)
            show_load(load, loaded)
        # Recover with the output the killed run used; only then remember this run's choices.
        recover(store, *stored_output(store))
        store.set_meta("out", str(out))
        store.set_meta("layout", layout.value)
        store.set_meta("base_url", base_url)
        warn_if_plain_http(base_url)
        proxy = check_proxy(base_url, allowed=proxy_sees_key)
        remove_partials(out)
        wait_until = server_wait(store, max_wait=pace.max_wait)
        if retry_failed:
            store.retry_failed()
        if limit is not None:
            store.limit_to(limit)
        say_where(store, base_url, out, db)
        use_prefilter = remember_prefilter(store, prefilter) and _prefilter_wanted(store, base_url)
        settings = RunSettings(
            out=out, layout=layout, pace=pace, timeout=api.timeout, max_body=api.max_body,
            prefilter=use_prefilter, where=_where(base_url), wait_until=wait_until,
        )  # fmt: skip
        options = {
            "base_url": base_url, "out": str(out), "layout": layout.value,
            "concurrency": pace.concurrency, "max_rate": pace.max_rate,
            "prefilter": use_prefilter, "retry_failed": retry_failed, "limit": limit,
        }  # fmt: skip
        prepared = Prepared(
            store, key, base_url, settings, store.start_run(options), proxy, limit=limit
        )
        try:
            yield prepared
        except BatchmapError as error:
            prepared.exit_code = error.exit_code
            prepared.end_reason = str(error)
            raise
        except (KeyboardInterrupt, asyncio.CancelledError):
            prepared.exit_code = EXIT_INTERRUPTED
            prepared.end_reason = prepared.end_reason or "interrupted"
            raise
        finally:
            store.end_run(prepared.run_id, exit_code=prepared.exit_code, reason=prepared.end_reason)


async def fetch(
    prepared: Prepared,
    *,
    on_progress: Callable[[Progress], None] | None = None,
    stop: Stop | None = None,
) -> RunResult:
    """Fetch every unfinished row of a prepared job."""
    stop = stop or Stop()
    try:
        result = await _fetch(
            prepared.store, prepared.key, prepared.base_url, prepared.settings, prepared.run_id,
            on_progress, stop, prepared.proxy,
        )  # fmt: skip
    finally:
        prepared.end_reason = stop.reason
    result = dataclasses.replace(result, limit=prepared.limit)
    prepared.exit_code = result.exit_code
    return result


async def _fetch(
    store: Store,
    key: str,
    base_url: str,
    settings: RunSettings,
    run_id: int,
    on_progress: Callable[[Progress], None] | None,
    stop: Stop | None,
    proxy: Proxy | None = None,
) -> RunResult:
    pacer = Pacer(max_rate=settings.pace.max_rate)
    saved = store.get_meta("pacer")
    if isinstance(saved, dict):
        pacer.restore(saved)
    client = make_client(
        base_url, api_key=key, timeout=settings.timeout, concurrency=settings.pace.concurrency,
        proxy=proxy,
    )  # fmt: skip
    async with client:
        ctx = RunContext.make(store, client, pacer, settings, stop=stop)
        runner = Runner(ctx, run_id=run_id)
        watch = Watch(runner, store.counts())
        ticker = asyncio.create_task(_tick(runner, watch, on_progress))
        task = asyncio.ensure_future(runner.run())
        try:
            tally = await asyncio.shield(task)
        except asyncio.CancelledError:
            # Cancelling the caller's task is a stop: finish gracefully, then re-raise.
            ctx.stop.request()
            await asyncio.gather(task, return_exceptions=True)
            raise
        finally:
            ticker.cancel()
            if runner.server_wait is not None:
                wait = runner.server_wait
                store.set_meta(WAIT_KEY, {"until": wait.until, "status": wait.status})
            store.set_meta("pacer", with_server_wait(pacer.state(), runner.server_wait))
    counts = store.counts()
    return RunResult(
        counts=counts,
        tally=tally,
        interrupted=ctx.stop.requested,
        elapsed=ctx.clock() - tally.started_at,
        retryable_failures=store.retryable_failures(),
    )


async def _tick(
    runner: Runner, watch: Watch, on_progress: Callable[[Progress], None] | None
) -> None:
    saved: dict[str, Any] = {}
    while True:
        state = with_server_wait(runner.ctx.pacer.state(), runner.server_wait)
        if state != saved:
            runner.ctx.store.set_meta("pacer", state)  # a server-imposed pause survives a restart
            saved = state
        if on_progress is not None:
            on_progress(watch.progress())
        await asyncio.sleep(TICK_EVERY)


class Watch:
    """Turns a runner's tally into Progress snapshots, with a steady rate and ETA."""

    def __init__(self, runner: Runner, base: dict[JobState, int]) -> None:
        self.runner = runner
        self.base = base
        self._history: deque[tuple[float, int]] = deque()

    def progress(self) -> Progress:
        """The counts at start plus what this run did since; rate and ETA over a long window."""
        runner, ctx, base = self.runner, self.runner.ctx, self.base
        tally = ctx.tally
        finished = tally.finished
        done = base[JobState.DONE] + finished[JobState.DONE]
        no_heatmap = base[JobState.NO_HEATMAP] + finished[JobState.NO_HEATMAP]
        failed = base[JobState.FAILED] + finished[JobState.FAILED]
        total = sum(base.values())
        pending = total - done - no_heatmap - failed
        now = ctx.clock()
        self._history.append((now, sum(finished.values())))
        view = ctx.pacer.view()
        # A long window: a fixed-window limiter's pause must not swing the ETA (it spans at
        # least two of the longest learned windows, at most ETA_WINDOW).
        longest = max((window for _, window in view.limits), default=30.0)
        span_wanted = min(ETA_WINDOW, max(60.0, 2 * longest))
        while len(self._history) > 2 and self._history[0][0] < now - span_wanted:
            self._history.popleft()
        span = self._history[-1][0] - self._history[0][0]
        rate = (self._history[-1][1] - self._history[0][1]) / span if span > 0 else 0.0
        known = [r for r in (rate, view.rate) if r]
        pace = min(known) if known else None
        pause = None
        if view.paused_until > now:
            pause = f"paused {view.paused_until - now:.0f}s: {view.pause_reason}"
        return Progress(
            done=done, no_heatmap=no_heatmap, failed=failed, pending=pending, total=total,
            rate=rate, pacer_rate=view.rate, eta=pending / pace if pace else None, pause=pause,
            requests=tally.requests, retries=tally.retries, rate_limited=tally.rate_limited,
            last_error=tally.last_error, stopping=ctx.stopping, in_flight=runner.in_flight,
        )  # fmt: skip


# -- what the job remembers -----------------------------------------------------------------


def stored_output(store: Store) -> tuple[Path, Layout]:
    """The output directory and layout the last run used (or the defaults)."""
    out = Path(store.get_meta("out") or DEFAULT_OUT).absolute()
    return out, Layout(store.get_meta("layout") or DEFAULT_LAYOUT)


def resolve_output(store: Store, wanted: Output) -> tuple[Path, Layout]:
    """The job's output directory and layout: remembered at the first run, never split later.

    A different `--out` or `--layout` than the job's is refused with how to move the files,
    rather than scattering one job's heatmaps over two places.
    """
    stored_out, stored_layout = store.get_meta("out"), store.get_meta("layout")
    out = (wanted.out or Path(stored_out or DEFAULT_OUT)).absolute()
    layout = wanted.layout or Layout(stored_layout or DEFAULT_LAYOUT)
    if stored_out is not None and out != Path(stored_out):
        db = store.path
        raise InputError(
            f"--out {out}: this job keeps its heatmaps in {stored_out}; run without --out to "
            "continue there, or use another --db for a new job. To move this job's files: "
            f'mv {stored_out} {out} && sqlite-utils {db} "update jobs set path = '
            f"replace(path, '{stored_out}', '{out}')\" && sqlite-utils {db} \"update meta set "
            f"value = json_quote('{out}') where key = 'out'\""
        )
    if stored_layout is not None and layout.value != stored_layout:
        raise InputError(
            f"--layout {layout.value}: this job's heatmaps are laid out {stored_layout} in "
            f"{out}; run without --layout, or use another --db for a new job"
        )
    return out, layout


def resolve_base_url(store: Store, wanted: str | None) -> str:
    """The base URL of this run: given (then remembered, with a notice), remembered, default."""
    stored = store.get_meta("base_url")
    if wanted is None:
        return str(stored or DEFAULT_BASE_URL)
    wanted = wanted.rstrip("/")
    if stored is not None and stored != wanted:
        log.info("note: base URL changed from %s to %s (remembered for later runs)", stored, wanted)
    return wanted


def server_wait(store: Store, *, max_wait: float, now: float | None = None) -> float:
    """The time a server asked not to be called before (epoch; 0 for none), kept exactly.

    A wait longer than --max-wait refuses the run at once (exit 4) with the time; a shorter
    one is slept through by the runner.
    """
    saved = store.get_meta(WAIT_KEY)
    if not isinstance(saved, dict):
        return 0.0
    until, status = saved.get("until"), saved.get("status")
    moment = time.time() if now is None else now
    if not isinstance(until, int | float) or not moment < until < moment + RETRY_AFTER_MAX:
        return 0.0  # over, or not a sane number
    said = ServerWait(until, status if isinstance(status, int) else None).text(now=moment)
    if until - moment > max_wait:
        raise ApiUnusableError(
            f"{said}, over --max-wait ({max_wait:g} s): rows are pending; `batchmap resume` "
            "then, or with a larger --max-wait to wait it out"
        )
    log.info("%s: waiting for it (within --max-wait)", said)
    return float(until)


def with_server_wait(state: dict[str, Any], wait: ServerWait | None) -> dict[str, Any]:
    """The pacer's saved state with a server-named wait beyond its hour, so `status` says it."""
    if wait is None or wait.until <= float(state.get("paused_until") or 0.0):
        return state
    reason = wait.text(now=time.time(), span=False)  # status adds the seconds left
    return {**state, "paused_until": round(wait.until, 3), "pause_reason": reason}


def remember_prefilter(store: Store, wanted: bool | None) -> bool:
    """Whether to use the prefilter: as asked (and remembered), or as the job remembers."""
    if wanted is None:
        return on_by_default(store.get_meta(NO_PREFILTER_KEY))
    if bool(store.get_meta(NO_PREFILTER_KEY)) == wanted:
        store.set_meta(NO_PREFILTER_KEY, not wanted)
    return wanted


def _prefilter_wanted(store: Store, base_url: str) -> bool:
    reason = remembered_unavailable(store.get_meta(PREFILTER_KEY), base_url)
    if reason is not None:
        log.info("classifications prefilter off: %s has no usable endpoint (%s)", base_url, reason)
    return reason is None


def recover(store: Store, out: Path, layout: Layout) -> None:
    """Undo what a killed run left: `running` rows, their possibly written files, partials."""
    # A `running` row's file may be complete but unrecorded (killed between rename and
    # commit): remove it first, durably, and only then mark the row pending. A kill in
    # between leaves the row `running`, so the next start does this again.
    for claimed in store.running():
        remove_file(heatmap_path(out, claimed.identifier, layout=layout))
    store.recover()
    removed = remove_partials(out)
    if removed:
        log.info("removed %d partial file(s) left by an interrupted run", removed)


# -- loading --------------------------------------------------------------------------------


def load_ids(
    store: Store,
    csv_path: Path,
    *,
    column: str | None = None,
    images: Path | None = None,
    image_column: str | None = None,
) -> LoadStats:
    """Add a CSV's identifiers (and their rows' other columns) to the job table, saying what
    looked odd about them; with `images`/`image_column`, remember where the photos are."""
    source = IdSource(csv_path, column=column)
    pairs = originals.checked(source, images=images, image_column=image_column)
    seen, added = store.load_ids(pairs)
    for note in source.notes:
        log.info("note: %s", note)  # how the file was read, when that was guessed
    for warning in source.warnings:
        log.warning("warning: %s", warning)
    originals.remember_load(store, source, images=images, image_column=image_column)
    return LoadStats(read=seen, added=added, duplicates=seen - added, blank=source.blank)


def show_load(csv_path: Path | str | os.PathLike[str], stats: LoadStats) -> None:
    """One line: what loading a CSV added."""
    log.info(
        "loaded %s: %d identifiers read, %d added, %d already known or duplicate, %d blank",
        csv_path, stats.read, stats.added, stats.duplicates, stats.blank,
    )  # fmt: skip


# -- the address ----------------------------------------------------------------------------


def check_base_url(base_url: str) -> None:
    """Refuse a base URL that could never reach an API, before any row is touched."""
    try:
        url = httpx.URL(base_url)
    except httpx.InvalidURL as error:
        raise InputError(f"--base-url {base_url!r}: {error}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise InputError(f"--base-url {base_url!r}: expected http(s)://HOST[:PORT][/PREFIX]")


def _where(base_url: str) -> str:
    url = httpx.URL(base_url)
    port = url.port or (443 if url.scheme == "https" else 80)
    host = f"[{url.host}]" if ":" in url.host else url.host
    return f"{host}:{port}"


def check_proxy(base_url: str, *, allowed: bool) -> Proxy | None:
    """The proxy the environment names for the base URL, said at start; never for loopback.

    Through a proxy, an `https` base URL is a tunnel the proxy cannot read; a plain `http` one
    hands the proxy every request, the key included: refused unless `allowed`.
    """
    proxy = choose_proxy(base_url)
    if proxy is None:
        return None
    if httpx.URL(base_url).scheme == "http" and not allowed:
        raise InputError(
            f"{proxy.variable} sends requests through the proxy {proxy.shown}, which would "
            f"read the API key: --base-url is plain http. Use https, exempt the host with "
            f"NO_PROXY, or pass --proxy-sees-key"
        )
    log.info("note: requests go through the proxy %s (from %s)", proxy.shown, proxy.variable)
    return proxy


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
