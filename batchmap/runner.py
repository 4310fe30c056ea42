"""The asyncio worker pool: claim rows, pace, fetch, write, record; stop gracefully.

Every worker waits its turn at one shared Pacer. Transient failures go to a retry heap with
their backoff time rather than holding a worker asleep; a 429 puts its job straight back.
Order of effects per heatmap: fetch -> staged file -> durable file under its final name
(files.publish, a batch at a time) -> `done` row.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import backoff
import httpx

from batchmap.errors import AuthError
from batchmap.fetch import fetch_heatmap
from batchmap.files import Layout, heatmap_path, publish, remove_file, stage
from batchmap.models import Job, JobState, Outcome, Record, Verdict
from batchmap.pacer import Pacer
from batchmap.policy import backoff_delay, stop_message
from batchmap.store import Store

WAITING, FETCHING = "waiting for its turn", "fetching"  # the interruptible phases of a worker
RECORD_BATCH = 64  # finished rows written to the table in one transaction
FLUSH_EVERY = 0.2  # seconds: the longest a finished row waits to be recorded


@dataclass(frozen=True, slots=True)
class RunSettings:
    """How one run behaves (the CLI's options)."""

    out: Path
    layout: Layout = Layout.SHARDED
    concurrency: int = 4
    max_attempts: int = 5
    timeout: float = 30.0
    backoff_base: float = 1.0


@dataclass(slots=True)
class Tally:
    """What this run did so far; the progress display reads it."""

    requests: int = 0
    rate_limited: int = 0
    retries: int = 0
    finished: Counter[JobState] = field(default_factory=Counter)
    started_at: float = 0.0
    last_error: str | None = None


class StopSignal:
    """Ctrl-C/SIGTERM once: stop claiming, let in-flight requests end. Twice: abandon them."""

    def __init__(self) -> None:
        self.graceful = asyncio.Event()
        self.force = asyncio.Event()

    def request(self) -> None:
        """Escalate one step."""
        if self.graceful.is_set():
            self.force.set()
        self.graceful.set()


class Runner:
    """Fetches every pending row of a store with a pool of workers sharing one pacer."""

    def __init__(
        self,
        store: Store,
        client: httpx.AsyncClient,
        pacer: Pacer,
        settings: RunSettings,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        jitter: Callable[[float], float] = backoff.full_jitter,
    ) -> None:
        self.store = store
        self.client = client
        self.pacer = pacer
        self.settings = settings
        self.clock = clock
        self.sleep = sleep
        self.jitter = jitter
        self.tally = Tally()
        self.stop = StopSignal()
        self.auth_error: AuthError | None = None
        self._ready: deque[Job] = deque()
        self._retries: list[tuple[float, int, Job]] = []
        self._in_flight: dict[int, Job] = {}
        self._exhausted = False
        self._wake = asyncio.Event()
        self._phase: dict[asyncio.Task[object], str] = {}  # workers that a stop may interrupt
        self._unrecorded: list[Record] = []
        self._flushing = asyncio.Lock()

    async def run(self) -> Tally:
        """Work until no row is left, a stop is requested, or the API refuses the key."""
        self.tally.started_at = self.clock()
        helpers = [
            asyncio.create_task(self._watch_stop()),
            asyncio.create_task(self._flush_now_and_then()),
        ]
        try:
            await asyncio.gather(*(self._worker() for _ in range(self.settings.concurrency)))
        finally:
            for helper in helpers:
                helper.cancel()
            await self.flush()
            # Claimed rows nobody finished go back to pending: nothing is lost or left running.
            leftover = [*self._ready, *(job for _, _, job in self._retries)]
            self.store.release([*leftover, *self._in_flight.values()])
            self._ready.clear()
            self._retries.clear()
        if self.auth_error is not None:
            raise self.auth_error
        return self.tally

    @property
    def stopping(self) -> bool:
        """True once a stop was requested or the run must end."""
        return self.stop.graceful.is_set()

    async def _watch_stop(self) -> None:
        # The first stop interrupts workers waiting for their turn, the second (or a 401/403)
        # abandons requests in flight too. A worker writing a file is never interrupted.
        await self.stop.graceful.wait()
        self._wake.set()
        self._interrupt(WAITING)
        await self.stop.force.wait()
        self._interrupt(WAITING, FETCHING)

    def _interrupt(self, *phases: str) -> None:
        for task, phase in list(self._phase.items()):
            if phase in phases:
                task.cancel()

    async def _worker(self) -> None:
        while (job := await self._next_job()) is not None:
            self._in_flight[job.rowid] = job
            try:
                await self._process(job)
            finally:
                self._wake.set()

    async def _next_job(self) -> Job | None:
        while not self.stopping:
            now = self.clock()
            if self._retries and self._retries[0][0] <= now:
                return heapq.heappop(self._retries)[2]
            if not self._ready and not self._exhausted:
                claimed = self.store.claim(max(32, 4 * self.settings.concurrency))
                self._exhausted = not claimed
                self._ready.extend(claimed)
            if self._ready:
                return self._ready.popleft()
            if not self._retries and not self._in_flight:
                return None
            # Wait for a retry to come due, or for another worker to finish or reschedule.
            self._wake.clear()
            await self._first_of(
                self._wake.wait(), self.sleep(self._retries[0][0] - now) if self._retries else None
            )
        return None

    async def _first_of(self, *waits: Awaitable[object] | None) -> None:
        tasks = [asyncio.ensure_future(wait) for wait in waits if wait is not None]
        _, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()

    async def _process(self, job: Job) -> None:
        me = asyncio.current_task()
        assert me is not None
        try:
            self._phase[me] = WAITING
            sent_at = await self.pacer.wait_turn()
            if self.stopping:
                return  # no new request after a stop: released to pending by run()
            self._phase[me] = FETCHING
            outcome = await fetch_heatmap(
                self.client, job.identifier, timeout=self.settings.timeout
            )
        except asyncio.CancelledError:
            if not self.stopping:
                raise  # not our stop: let it through
            me.uncancel()
            return  # interrupted by a stop: released to pending by run()
        finally:
            self._phase.pop(me, None)
        # From here on nothing interrupts the worker: a fetched heatmap is always settled.
        self.tally.requests += 1
        if outcome.http_status is None:
            self.pacer.on_no_answer()
        else:
            self.pacer.on_answer(outcome.http_status, outcome.headers, sent_at=sent_at)
        await self._settle(job, outcome)

    def _path_for(self, job: Job) -> Path:
        return heatmap_path(self.settings.out, job.identifier, layout=self.settings.layout)

    def _drop_stray_file(self, job: Job) -> None:
        # A row that ends without a heatmap keeps no file, even one an earlier crash left.
        remove_file(self._path_for(job))

    async def _settle(self, job: Job, outcome: Outcome) -> None:
        self._decide(job, outcome)
        if len(self._unrecorded) >= RECORD_BATCH:
            await self.flush()

    def _decide(self, job: Job, outcome: Outcome) -> None:
        attempts = job.attempts + 1
        match outcome.verdict:
            case Verdict.DONE:
                saved = stage(self._path_for(job), outcome.body, out=self.settings.out)
                self._finish(Record(job, JobState.DONE, attempts, 200, saved=saved))
            case Verdict.NO_HEATMAP:
                self._drop_stray_file(job)
                self._finish(Record(job, JobState.NO_HEATMAP, attempts, outcome.http_status))
            case Verdict.FAILED:
                self._fail(job, outcome, attempts=attempts, retryable=False)
            case Verdict.RETRY if attempts >= self.settings.max_attempts:
                self._fail(job, outcome, attempts=attempts, retryable=True)
            case Verdict.RETRY:
                self.store.record_attempt(
                    job, attempts=attempts, http_status=outcome.http_status, error=outcome.error
                )
                delay = backoff_delay(attempts, base=self.settings.backoff_base, jitter=self.jitter)
                retry = Job(job.rowid, job.identifier, attempts)
                heapq.heappush(self._retries, (self.clock() + delay, job.rowid, retry))
                self.tally.retries += 1
                self.tally.last_error = outcome.error
                del self._in_flight[job.rowid]
            case Verdict.RATE_LIMITED:
                # Not the job's fault and not an attempt: first in line once the pause ends.
                self.tally.rate_limited += 1
                self._ready.appendleft(job)
                del self._in_flight[job.rowid]
            case Verdict.STOP:
                # The key or account is refused: stop the whole run at once, touching no row.
                self.auth_error = AuthError(stop_message(outcome.http_status or 401))
                self.stop.graceful.set()
                self.stop.force.set()

    def _fail(self, job: Job, outcome: Outcome, *, attempts: int, retryable: bool) -> None:
        self._drop_stray_file(job)
        self.tally.last_error = outcome.error
        self._finish(
            Record(
                job,
                JobState.FAILED,
                attempts,
                outcome.http_status,
                error=outcome.error,
                retryable=retryable,
            )
        )

    def _finish(self, record: Record) -> None:
        self.tally.finished[record.state] += 1
        del self._in_flight[record.job.rowid]
        self._unrecorded.append(record)

    async def flush(self) -> None:
        """Publish staged heatmaps durably, then record the batch in one transaction.

        Until then a row stays `running` in the table: a crash now costs a refetch, never a
        `done` row without its file. Shielded: a batch once taken is always recorded, even
        when the caller is cancelled (the next flush waits for it on the lock).
        """
        await asyncio.shield(self._flush())

    async def _flush(self) -> None:
        async with self._flushing:
            batch, self._unrecorded = self._unrecorded, []
            if not batch:
                return
            paths = [Path(record.saved.path) for record in batch if record.saved]
            if paths:
                await asyncio.to_thread(publish, paths, out=self.settings.out)
            self.store.record(batch)

    async def _flush_now_and_then(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_EVERY)  # real time: this bounds the loss to a crash
            await self.flush()
