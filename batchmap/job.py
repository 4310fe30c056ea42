"""`batchmap.Job`: the Python API over one job database; the CLI is a thin layer on it.

    import batchmap
    job = batchmap.Job("jobs.db")
    job.load("ids.csv")                        # LoadStats(read, added, duplicates, blank)
    result = job.run(api_key="...", out="heatmaps")
    job.status()                               # the facts of `batchmap status --json`
    failed = list(job.rows(state="failed"))

`run` blocks; `arun` is the same inside a running event loop (a notebook). Neither installs a
signal handler: stop a run with `Stop.request()` or by cancelling the task running `arun`,
which stops gracefully (in-flight requests end or go back to `pending`) and re-raises.
`fetch` is `run` from the configuration objects (`Api`, `Pace`, `Output`) and can own the
process's stop signals: the CLI's run and resume are exactly that call, and its status and
report are `status` and `report`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Required, TypedDict, Unpack, cast

from batchmap.config import DEFAULT_DB, Api, Output, Pace
from batchmap.context import Stop
from batchmap.errors import BatchmapError, InputError
from batchmap.files import Layout
from batchmap.lock import JobLock
from batchmap.models import JobState, LoadStats, Written
from batchmap.overlays import OverlayOptions, OverlayReport, export_overlays
from batchmap.report import Format, read_status, write_report
from batchmap.session import (
    STOP_SIGNALS,
    Prepared,
    Progress,
    RunResult,
    fetch,
    load_ids,
    prepare,
    stored_output,
)
from batchmap.store import Store, check_database
from batchmap.verify import VerifyReport, verify
from batchmap.where import check_sources

PathLike = str | os.PathLike[str]


class Job:
    """One job database: load identifiers, fetch their heatmaps, ask what happened."""

    def __init__(self, db: PathLike = DEFAULT_DB) -> None:
        self.db = Path(db)

    def __repr__(self) -> str:
        return f"Job({str(self.db)!r})"

    def load(
        self,
        source: PathLike | Iterable[str],
        *,
        column: str | None = None,
        images: PathLike | None = None,
        image_column: str | None = None,
    ) -> LoadStats:
        """Add identifiers (a CSV file, or any iterable of strings) as `pending` rows.

        A CSV's other columns are kept with each row. `images` (a folder) and `image_column`
        say where each identifier's original photo is; the job remembers them.

        Idempotent: known identifiers and finished rows are never touched. Takes the job
        lock, so a load never races a run.
        """
        check_database(self.db)
        if isinstance(source, str | os.PathLike):
            with _in_api_terms():
                check_sources(self.db, Path(source))  # no lock file for a CSV that is not there
        with _in_api_terms(), JobLock(self.db), Store(self.db) as store:
            if isinstance(source, str | os.PathLike):
                return load_ids(
                    store, Path(source), column=column, image_column=image_column,
                    images=Path(images) if images is not None else None,
                )  # fmt: skip
            if isinstance(source, bytes):
                raise InputError("Job.load: expected a path or an iterable of str, not bytes")
            cleaned = _Cleaned(source)
            seen, added = store.load_ids(cleaned)
            return LoadStats(read=seen, added=added, duplicates=seen - added, blank=cleaned.blank)

    def run(self, **options: Unpack[RunOptions]) -> RunResult:
        """Fetch every unfinished row (after loading `load`, a CSV, if given); blocks.

        Keywords (`RunOptions`): `api_key` (required), `base_url`, `out`, `layout`, `pace`,
        `timeout`, `load`, `column`, `retry_failed`, `prefilter`, `limit`, `images`,
        `image_column`, `proxy_sees_key`, `on_progress`, `stop`. `base_url`, `out` and
        `layout` default to what the job remembers from its first run, `prefilter` to what it
        remembers too (on unless a run turned it off); `limit` fetches at most that many rows
        (the rest stay pending). Raises AuthError
        (401/403), ApiUnusableError (API unreachable, every first answer 404, a wait over
        `pace.max_wait`), StorageError, InputError; returns a RunResult otherwise, also when
        stopped (`interrupted`). Inside a running event loop (a notebook), use
        `await job.arun(...)`: `run` says so instead of starting.
        """
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise RuntimeError(
                "Job.run() cannot start inside a running event loop (a notebook cell, an "
                "async function): use `await job.arun(...)` there, with the same arguments"
            )
        with _in_api_terms():
            api, pace, output, preparing, on_progress, stop = _configs("run", options)
            return self.fetch(api, pace, output, on_progress=on_progress, stop=stop, **preparing)

    async def arun(self, **options: Unpack[RunOptions]) -> RunResult:
        """`run` inside a running event loop. Cancelling the task stops the run gracefully.

        The last call of `on_progress` is the final state, the same counts as the result.
        """
        with _in_api_terms():
            api, pace, output, preparing, on_progress, stop = _configs("arun", options)
            with prepare(self.db, api, pace, output, **preparing) as prepared:
                return await _fetch(prepared, on_progress, stop, signals=False)

    def fetch(
        self,
        api: Api,
        pace: Pace,
        output: Output,
        *,
        on_progress: Callable[[Progress], None] | None = None,
        stop: Stop | None = None,
        signals: bool = False,
        **preparing: Unpack[Preparing],
    ) -> RunResult:
        """`run` from the configuration objects as they are (the CLI builds them from its
        options, so errors name its flags); blocks. The one path every run takes.

        Loading and recovery happen before the event loop starts, so Ctrl-C during a long load
        rolls it back whole. With `signals`, SIGINT, SIGTERM and SIGHUP stop the run like
        `stop.request()` (a second one at once): for a program that owns the process.
        """
        with prepare(self.db, api, pace, output, **preparing) as prepared:
            return asyncio.run(_fetch(prepared, on_progress, stop, signals=signals))

    def status(self) -> dict[str, Any]:
        """The facts `batchmap status --json` prints: counts, errors, pauses, the timeline."""
        return read_status(self.db)

    def report(
        self,
        output: PathLike | None = None,
        *,
        fmt: Format | str = Format.CSV,
        state: JobState | str | None = None,
    ) -> Written:
        """Write one record per identifier (csv, json, jsonl, html or timeline-csv) to
        `output`, or to standard output when None; returns what was written."""
        selected = JobState(state) if state is not None else None
        return write_report(self.db, fmt=Format(fmt), state=selected, output=_path(output))

    def verify(
        self, *, repair: bool = False, on_progress: Callable[[int, int], None] | None = None
    ) -> VerifyReport:
        """Check every `done` row's file against its size and sha256; find strays.

        `repair` returns exactly the missing and changed rows to `pending` (a later run
        fetches only them) and drops partial files; it takes the job lock to do so.
        """
        check_database(self.db)
        check_sources(self.db, None)  # no lock file beside a job that does not exist
        with contextlib.ExitStack() as stack:
            if repair:
                stack.enter_context(JobLock(self.db))
            store = stack.enter_context(Store(self.db, create=False))
            out, layout = stored_output(store)
            return verify(store, out=out, layout=layout, repair=repair, on_progress=on_progress)

    def export_overlays(self, out: PathLike, **options: Unpack[OverlayOptions]) -> OverlayReport:
        """Blend each done heatmap over its own photo into `out` (needs Pillow); resumable.

        Keywords (`OverlayOptions`): `max_side`, `opacity`, `fmt` ("jpeg" or "png"), `sheet`
        (a contact sheet per that many rows), `force` (write every composite again), `on_row`.
        Photos the job cannot find are listed in `out/missing-originals.csv`.
        """
        return export_overlays(self.db, Path(out), **options)

    def rows(self, state: JobState | str | None = None) -> Iterator[dict[str, Any]]:
        """Every row (optionally of one state) as a dict, in load order, streamed."""
        selected = JobState(state) if state is not None else None
        with Store(self.db, create=False) as store:
            yield from store.rows(state=selected)


def _path(value: PathLike | None) -> Path | None:
    return Path(value) if value is not None else None


class Preparing(TypedDict, total=False):
    """What a run does before it fetches: the keywords of `Job.fetch` beside its configs."""

    load: PathLike | None  # a CSV to load first
    column: str | None
    retry_failed: bool
    prefilter: bool | None  # None: what the job remembers (on unless a run turned it off)
    limit: int | None
    images: PathLike | None
    image_column: str | None
    proxy_sees_key: bool


class _Fetching(Preparing, total=False):
    on_progress: Callable[[Progress], None] | None
    stop: Stop | None


class RunOptions(_Fetching, total=False):
    """The keywords of `Job.run` and `Job.arun`; only `api_key` is required."""

    api_key: Required[str]
    base_url: str | None
    out: PathLike | None
    layout: Layout | str | None
    pace: Pace | None
    timeout: float | None


_PREPARING = Preparing.__required_keys__ | Preparing.__optional_keys__
_KEYWORDS = RunOptions.__required_keys__ | RunOptions.__optional_keys__


def _configs(
    name: str, options: RunOptions
) -> tuple[Api, Pace, Output, Preparing, Callable[[Progress], None] | None, Stop | None]:
    """The configuration objects `run` and `arun` build from their keywords, and the rest."""
    unknown = sorted(set(options) - _KEYWORDS)
    if unknown:  # what Python says of a misspelt keyword, since **options takes any
        raise TypeError(f"Job.{name}() got an unexpected keyword argument {unknown[0]!r}")
    if "api_key" not in options:
        raise TypeError(f"Job.{name}() missing required keyword argument: 'api_key'")
    limit = options.get("limit")
    if limit is not None and (isinstance(limit, bool) or limit < 1):
        raise InputError(f"limit={limit!r}: expected a whole number of rows, at least 1")
    api_key, base_url, timeout = options["api_key"], options.get("base_url"), options.get("timeout")
    api = Api(api_key, base_url) if timeout is None else Api(api_key, base_url, timeout)
    layout = options.get("layout")
    output = Output(_path(options.get("out")), Layout(layout) if layout else None)
    preparing = cast(Preparing, {k: v for k, v in options.items() if k in _PREPARING})
    pace = options.get("pace") or Pace()
    return api, pace, output, preparing, options.get("on_progress"), options.get("stop")


async def _fetch(
    prepared: Prepared,
    on_progress: Callable[[Progress], None] | None,
    stop: Stop | None,
    *,
    signals: bool,
) -> RunResult:
    """Fetch a prepared job; the last call of `on_progress` is the final state."""
    stop = stop or Stop()
    last: list[Progress] = []

    def track(progress: Progress) -> None:
        last[:] = [progress]
        if on_progress is not None:
            on_progress(progress)

    loop = asyncio.get_running_loop()
    if signals:
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, stop.request, sig.name)
    try:
        result = await fetch(prepared, on_progress=track, stop=stop)
    finally:
        if signals:
            for sig in STOP_SIGNALS:
                loop.remove_signal_handler(sig)
    if on_progress is not None:
        on_progress(_final(result, last[0] if last else None))
    return result


def _final(result: RunResult, last: Progress | None) -> Progress:
    """The run's end as a Progress: the result's counts, nothing pending that is not."""
    counts, tally = result.counts, result.tally
    return Progress(
        done=counts[JobState.DONE], no_heatmap=counts[JobState.NO_HEATMAP],
        failed=counts[JobState.FAILED],
        pending=counts[JobState.PENDING] + counts[JobState.RUNNING], total=sum(counts.values()),
        rate=last.rate if last else 0.0, pacer_rate=last.pacer_rate if last else None,
        eta=0.0, pause=None, requests=tally.requests, retries=tally.retries,
        rate_limited=tally.rate_limited, last_error=tally.last_error,
        stopping=result.interrupted, in_flight=0,
    )  # fmt: skip


# The library's arguments for the CLI's options: an error raised under `Job` names these.
_API_TERMS = {
    "--api-key or IDENTIFAI_API_KEY": "api_key",
    "--api-key": "api_key",
    "--base-url": "base_url",
    "--outage-limit": "pace.outage_limit",
    "--max-wait": "pace.max_wait",
    "--max-rate": "pace.max_rate",
    "--max-attempts": "pace.max_attempts",
    "--backoff-base": "pace.backoff_base",
    "--concurrency": "pace.concurrency",
    "--timeout": "timeout",
    "--max-body": "max_body",
    "--layout": "layout",
    "--column": "column",
    "--out": "out",
    "--no-prefilter": "prefilter=False",
}
_FLAG = re.compile("|".join(re.escape(flag) for flag in _API_TERMS) + r"(?![\w-])")


def in_api_terms(message: str) -> str:
    """A CLI-worded message with each option named as the Python API's argument."""
    return _FLAG.sub(lambda match: _API_TERMS[match.group(0)], message)


@contextlib.contextmanager
def _in_api_terms() -> Iterator[None]:
    """Re-raise batchmap's errors (same class, same exit code) worded for the API's caller."""
    try:
        yield
    except BatchmapError as error:
        text = str(error)
        worded = in_api_terms(text)
        if worded == text:
            raise
        raise type(error)(worded) from error


class _Cleaned:
    """Identifiers from an iterable, trimmed; blanks counted and skipped."""

    def __init__(self, source: Iterable[str]) -> None:
        self.source = source
        self.blank = 0

    def __iter__(self) -> Iterator[str]:
        for value in self.source:
            identifier = str(value).strip()
            if identifier:
                yield identifier
            else:
                self.blank += 1
