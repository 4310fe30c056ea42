"""The asyncio worker pool: claim rows, pace, fetch, write, record; stop gracefully.

Every worker waits its turn at one shared Pacer. Transient failures go to a retry heap with
their backoff time rather than holding a worker asleep; a 429 puts its job straight back.
Whether a failure is the row's own or the API's is `health.Health`'s decision, acted on in
one place for the workers and the prefilter (`Runner.failed`): an outage pauses the pool and
gives back the attempts Health names. Redirects to another origin are an answer about the
address: answered to every row, they stop the run. With the prefilter on, the classifications
endpoint is asked about rows in batches ahead of the workers (`prefilter.Prefilter`), which
shares the run's services (`context.RunContext`) and calls back only through
`prefilter.Pool`. A stop gives requests in flight GRACE seconds, then abandons them.
Order of effects per heatmap: fetch -> staged file -> durable file under its final name
(files.publish, a batch at a time) -> `done` row, with the run's timeline in the same commit.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
from collections import deque
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from pathlib import Path

from batchmap.context import RunContext, Tally
from batchmap.errors import ApiUnusableError, AuthError, BatchmapError
from batchmap.fetch import fetch_heatmap
from batchmap.files import heatmap_path, publish, remove_file, stage
from batchmap.health import Call
from batchmap.models import Claim, Failure, JobState, Meaning, Outcome, Record
from batchmap.pacer import MAX_PAUSE
from batchmap.policy import backoff_delay, stop_message, until_text
from batchmap.prefilter import Prefilter

log = logging.getLogger("batchmap")

WAITING, FETCHING = "waiting for its turn", "fetching"  # the interruptible phases of a worker
RECORD_BATCH = 64  # finished rows written to the table in one transaction
FLUSH_EVERY = 0.2  # seconds: the longest a finished row waits to be recorded
TIMELINE_EVERY = 5.0  # seconds: how often the timeline is written when no row finishes
PROBATION = 8  # a job that never had a success stops when its first answers are all 404
REDIRECTS = 4  # answers in a row redirecting elsewhere (or looping): the address is wrong
GRACE = 3.0  # seconds requests in flight get to end after a stop, before they are abandoned


@dataclass(frozen=True, slots=True)
class ServerWait:
    """A wait the server named that is longer than the pacer holds, kept exactly."""

    until: float  # wall-clock (epoch) seconds
    status: int | None  # the HTTP status that said it

    def text(self, *, now: float, span: bool = True) -> str:
        """'the API asked to wait until 14:05 (24 h) (HTTP 429 Retry-After)'."""
        said = f"the API asked to wait {until_text(self.until, now=now, span=span)}"
        return said if self.status is None else f"{said} (HTTP {self.status} Retry-After)"


class Runner:
    """Fetches every pending row of a store with a pool of workers sharing one pacer."""

    def __init__(self, ctx: RunContext, *, run_id: int | None = None) -> None:
        self.ctx = ctx
        self.run_id = run_id
        self._ready: deque[Claim] = deque()
        self._retries: list[tuple[float, int, Claim]] = []
        self._in_flight: dict[int, Claim] = {}
        self._condemned: dict[int, Record] = {}  # out of attempts; failed once the API answers
        self._owed: dict[int, int] = {}  # attempts refunded to rows that were in flight
        self._held_404: list[Record] = []  # a new job's first 404s, until something else answers
        self._probation = False
        self._held_redirects: list[Record] = []  # redirects elsewhere, until something else answers
        self._only_redirects = True  # every answer of this run so far was a redirect elsewhere
        # A server-named wait longer than the pacer holds (an hour): kept here, exactly.
        self._hold_until = ctx.clock() + max(0.0, ctx.settings.wait_until - ctx.wall())
        self.server_wait: ServerWait | None = None  # saved in the job by the session
        self._exhausted = False
        self._wake = asyncio.Event()
        self._phase: dict[asyncio.Task[object], str] = {}  # workers that a stop may interrupt
        self._unrecorded: list[Record] = []
        self._flushing = asyncio.Lock()
        self._timeline_flushed = 0.0
        self.prefilter: Prefilter | None = None

    async def run(self) -> Tally:
        """Work until no row is left, a stop is requested, or the run must end."""
        ctx = self.ctx
        ctx.tally.started_at = ctx.clock()
        counts = ctx.store.counts()
        self._probation = counts[JobState.DONE] + counts[JobState.NO_HEATMAP] == 0
        if ctx.settings.prefilter:
            self.prefilter = Prefilter(ctx, self)
        helpers = [
            asyncio.create_task(self._watch_stop()),
            asyncio.create_task(self._flush_now_and_then()),
        ]
        if self.prefilter is not None:
            helpers.append(asyncio.create_task(self.prefilter.run()))
        try:
            await asyncio.gather(*(self._worker() for _ in range(ctx.settings.pace.concurrency)))
        finally:
            for helper in helpers:
                helper.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            if not ctx.stopping and self._held_redirects and self._only_redirects:
                self._stop_for_redirects()  # every answer was a redirect: about the address
            if not ctx.stopping:
                # The work is over: whatever waited for proof that the API is up is final now.
                for record in (*self._held_404, *self._held_redirects, *self._condemned.values()):
                    self._finish(record)  # counted as this run's, like every other end
                self._held_404.clear()
                self._held_redirects.clear()
                self._condemned.clear()
            await self.flush(final=True)
            # Claimed rows nobody finished go back to pending: nothing is lost or left running.
            leftover = [
                *self._ready,
                *(job for _, _, job in self._retries),
                *self._in_flight.values(),
                *(
                    record.job
                    for record in (
                        *self._held_404,
                        *self._held_redirects,
                        *self._condemned.values(),
                    )
                ),
            ]
            ctx.store.release(leftover)
            self._ready.clear()
            self._retries.clear()
        if ctx.ended_by is not None:
            raise ctx.ended_by
        return ctx.tally

    @property
    def in_flight(self) -> int:
        """Requests under way (for 'stopping: N requests in flight')."""
        return sum(1 for phase in self._phase.values() if phase == FETCHING)

    async def _watch_stop(self) -> None:
        # The first stop interrupts workers waiting for their turn; requests in flight get
        # GRACE seconds (real time: a service manager kills at 10 s), then are abandoned, as
        # at once on a second stop or the end of the run. Their rows go back to pending.
        # A worker writing a file is never interrupted.
        await self.ctx.stop.graceful.wait()
        self._wake.set()
        self._interrupt(WAITING)
        try:
            await asyncio.wait_for(self.ctx.stop.force.wait(), GRACE)
        except TimeoutError:
            log.info("abandoning %d request(s) still in flight after %.0f s", self.in_flight, GRACE)
        self._interrupt(WAITING, FETCHING)

    def _interrupt(self, *phases: str) -> None:
        for task, phase in list(self._phase.items()):
            if phase in phases:
                task.cancel()

    async def _worker(self) -> None:
        job: Claim | None = None
        try:
            while (job := await self._next_job()) is not None:
                self._in_flight[job.rowid] = job
                try:
                    await self._process(job)
                finally:
                    self._wake.set()
        except Exception as error:
            # Disk full under --out, a damaged database, or a bug: stop every worker at once;
            # the row at hand goes back to pending with the others.
            if job is not None:
                self._in_flight.pop(job.rowid, None)
                self._ready.append(job)
            if not isinstance(error, BatchmapError):
                log.debug("unexpected error in a worker", exc_info=True)
                error = BatchmapError(f"unexpected error, run stopped: {error!r}")
            self.ctx.end(error)

    async def _next_job(self) -> Claim | None:
        ctx = self.ctx
        while not ctx.stopping:
            now = ctx.clock()
            if self._retries and self._retries[0][0] <= now:
                return heapq.heappop(self._retries)[2]
            asking = self.prefilter is not None and self.prefilter.active
            if not self._ready and not self._exhausted:
                claimed = ctx.store.claim(
                    max(32, 4 * ctx.settings.pace.concurrency), asked_only=asking
                )
                if self.prefilter is not None:
                    self.prefilter.claimed(len(claimed))
                self._exhausted = not claimed and not asking
                self._ready.extend(claimed)
            if self._ready:
                return self._ready.popleft()
            if not self._retries and not self._in_flight and not asking:
                return None
            # Wait for a retry to come due, or for another worker or the prefilter to move on.
            self._wake.clear()
            await self._first_of(
                self._wake.wait(), ctx.sleep(self._retries[0][0] - now) if self._retries else None
            )
        return None

    def wake(self) -> None:
        """Let waiting workers look for work again (the prefilter asked another batch)."""
        self._exhausted = False
        self._wake.set()

    async def _first_of(self, *waits: Awaitable[object] | None) -> None:
        tasks = [asyncio.ensure_future(wait) for wait in waits if wait is not None]
        _, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()

    async def turn(self) -> float | None:
        """Wait for the pacer in the interruptible phase; None when a stop came meanwhile."""
        ctx = self.ctx
        me = asyncio.current_task()
        assert me is not None
        self._phase[me] = WAITING
        try:
            while (left := self._hold_until - ctx.clock()) > 0:
                await ctx.sleep(left)  # a long wait the server named, beyond the pacer's hour
            sent_at = await ctx.pacer.wait_turn()
        except asyncio.CancelledError:
            if not ctx.stopping:
                raise
            me.uncancel()
            return None
        finally:
            self._phase.pop(me, None)
        return None if ctx.stopping else sent_at

    async def _process(self, job: Claim) -> None:
        sent_at = await self.turn()
        if sent_at is None:
            return  # no new request after a stop: released to pending by run()
        ctx = self.ctx
        me = asyncio.current_task()
        assert me is not None
        try:
            self._phase[me] = FETCHING
            outcome = await fetch_heatmap(
                ctx.client,
                job.identifier,
                timeout=ctx.settings.timeout,
                max_bytes=ctx.settings.max_body,
            )
        except asyncio.CancelledError:
            if not ctx.stopping:
                raise  # not our stop: let it through
            me.uncancel()
            return  # interrupted by a stop: released to pending by run()
        finally:
            self._phase.pop(me, None)
        # From here on nothing interrupts the worker: a fetched heatmap is always settled.
        ctx.tally.requests += 1
        ctx.timeline.count_answer(outcome)
        self.learn(outcome, sent_at=sent_at)
        self._decide(job, outcome)
        if len(self._unrecorded) >= RECORD_BATCH:
            await self.flush()

    def learn(self, outcome: Outcome, *, sent_at: float) -> None:
        """Tell the pacer about an answer; a wait longer than allowed ends the run."""
        ctx = self.ctx
        if outcome.http_status is None:
            ctx.pacer.on_no_answer(sent_at=sent_at)
        else:
            ctx.pacer.on_answer(outcome.http_status, outcome.headers, sent_at=sent_at)
        wait = outcome.retry_after
        if wait is not None and wait > MAX_PAUSE:
            # Longer than the pacer holds: kept exactly, here and in the job (session saves it).
            now = ctx.wall()
            self._hold_until = max(self._hold_until, ctx.clock() + wait)
            self.server_wait = ServerWait(now + wait, outcome.http_status)
        if wait is not None and wait > ctx.settings.pace.max_wait:
            now = ctx.wall()
            ctx.end(
                ApiUnusableError(
                    f"the API asked to wait {until_text(now + wait, now=now)} (HTTP "
                    f"{outcome.http_status} Retry-After), over --max-wait "
                    f"({ctx.settings.pace.max_wait:g} s); rows are pending: `batchmap resume` "
                    "then, or with a larger --max-wait to wait it out"
                )
            )
        elif wait is not None and outcome.verdict is Meaning.RETRY:
            # A 5xx's Retry-After pauses everyone, as a 429's does (the pacer sees 503 itself).
            ctx.pacer.pause(
                ctx.clock() + wait, f"server asked to wait (HTTP {outcome.http_status})"
            )

    def _path_for(self, job: Claim) -> Path:
        settings = self.ctx.settings
        return heatmap_path(settings.out, job.identifier, layout=settings.layout)

    def _drop_stray_file(self, job: Claim) -> None:
        # A row that ends without a heatmap keeps no file, even one an earlier crash left.
        remove_file(self._path_for(job))

    def _decide(self, job: Claim, outcome: Outcome) -> None:
        if outcome.verdict is Meaning.STOP:
            # The key or account is refused: stop the whole run at once, touching no row.
            self.ctx.end(AuthError(stop_message(outcome.http_status or 401)))
            return
        del self._in_flight[job.rowid]
        if job.rowid in self._owed:  # attempts an outage refunded while it was in flight
            job = Claim(job.rowid, job.identifier, job.attempts - self._owed.pop(job.rowid))
        if self.ctx.stopping and self.ctx.ended_by is not None:
            self._ready.append(job)  # the run is ending for the API's sake: back to pending
            return
        if outcome.verdict is Meaning.RETRY and outcome.failure not in (None, Failure.BODY):
            self._transient(job, outcome)
            return
        self._answered()
        attempts = job.attempts + 1
        match outcome.verdict:
            case Meaning.DONE:
                saved = stage(self._path_for(job), outcome.body, out=self.ctx.settings.out)
                self._finish(Record(job, JobState.DONE, attempts, 200, saved=saved))
            case Meaning.NO_HEATMAP:
                self._drop_stray_file(job)
                self._finish(Record(job, JobState.NO_HEATMAP, attempts, outcome.http_status))
            case Meaning.FAILED if outcome.failure is Failure.REDIRECT:
                self._hold_redirect(self._failure(job, outcome, attempts=attempts, retryable=False))
            case Meaning.FAILED if self._probation and outcome.http_status == 404:
                self._hold_404(job, outcome, attempts)
            case Meaning.FAILED:
                self._finish(self._failure(job, outcome, attempts=attempts, retryable=False))
            case Meaning.RETRY:  # a damaged or oversized body: the server answered, the row pays
                self._charge(job, outcome, attempts)
            case Meaning.RATE_LIMITED:
                # Not the job's fault and not an attempt: first in line once the pause ends.
                self.ctx.tally.rate_limited += 1
                self._ready.appendleft(job)
        if outcome.http_status not in (404, 429) and outcome.failure is not Failure.REDIRECT:
            self._end_probation()  # something else answered: the base URL reaches the API
        if outcome.http_status != 429 and outcome.failure is not Failure.REDIRECT:
            self._end_redirect_hold()

    def _answered(self) -> None:
        """A good answer: the API is up, so rows that ran out of attempts did fail."""
        lasted = self.ctx.health.on_answer()
        if lasted is not None:
            log.info("the API answers again after %.0f s", lasted)
        if self._condemned:
            for record in self._condemned.values():
                self._finish(record)
            self._condemned.clear()

    def failed(self, row: int | None, outcome: Outcome) -> Call:
        """A request about `row` (None: a classifications batch) failed transiently.

        Health says whose fault it is; this acts on it for the workers and the prefilter
        alike: an API that cannot be used ends the run, an outage gives back the attempts
        Health names and pauses the pool for a probe. Charging is left to the caller.
        """
        ctx = self.ctx
        assert outcome.failure is not None
        ctx.tally.last_error = outcome.error
        call = ctx.health.on_failure(row, outcome.failure, outcome.error or "")
        if call.give_up is not None:
            ctx.end(ApiUnusableError(call.give_up))
            return call
        if call.refund:  # only when an outage is declared: the retry heap is rebuilt
            self._refund(call.refund)
        if call.pause_for > 0:
            ctx.pacer.pause(ctx.clock() + call.pause_for, call.reason, probe=True)
        return call

    def _transient(self, job: Claim, outcome: Outcome) -> None:
        call = self.failed(job.rowid, outcome)
        if call.charge:
            self._charge(job, outcome, job.attempts + 1)
        else:
            # Not the row's fault (or the run ends). Last in line: the next probe tries another
            # identifier (silence is judged over several of them, health.Health).
            self._ready.append(job)

    def _charge(self, job: Claim, outcome: Outcome, attempts: int) -> None:
        """Spend one attempt of the row: back off and retry, or fail once the API is up."""
        ctx = self.ctx
        ctx.tally.last_error = outcome.error
        ctx.store.record_attempt(
            job, attempts=attempts, http_status=outcome.http_status, error=outcome.error
        )
        retry = Claim(job.rowid, job.identifier, attempts)
        if attempts >= ctx.settings.pace.max_attempts:
            record = self._failure(retry, outcome, attempts=attempts, retryable=True)
            if outcome.failure is Failure.BODY:
                self._finish(record)
            else:
                self._condemned[job.rowid] = record
            return
        delay = backoff_delay(
            attempts,
            retry_after=outcome.retry_after,
            base=ctx.settings.pace.backoff_base,
            jitter=ctx.jitter,
        )
        heapq.heappush(self._retries, (ctx.clock() + delay, job.rowid, retry))
        ctx.tally.retries += 1

    def _refund(self, refund: Mapping[int, int]) -> None:
        """An outage was declared: give back the attempts Health names (rowid -> attempts).

        Wherever the row is now: waiting for its retry, out of attempts, or in flight again
        (then when its answer comes; the row at hand too, which is settled next).
        """
        owed = dict(refund)
        kept = []
        for due, rowid, job in self._retries:
            if rowid in owed:
                self._ready.appendleft(Claim(rowid, job.identifier, job.attempts - owed.pop(rowid)))
            else:
                kept.append((due, rowid, job))
        heapq.heapify(kept)
        self._retries = kept
        for rowid, record in list(self._condemned.items()):
            if rowid in owed:
                del self._condemned[rowid]
                attempts = record.attempts - owed.pop(rowid)
                self._ready.appendleft(Claim(rowid, record.job.identifier, attempts))
        self._owed.update(owed)  # rows in flight again: settled when they come back

    def _hold_404(self, job: Claim, outcome: Outcome, attempts: int) -> None:
        self._held_404.append(self._failure(job, outcome, attempts=attempts, retryable=False))
        if len(self._held_404) >= PROBATION:
            self.ctx.end(
                ApiUnusableError(
                    f"every request answered 404 ({len(self._held_404)} of {len(self._held_404)}"
                    f"): check --base-url (path prefix?) and the CSV column (--column); the rows "
                    "are pending again"
                )
            )

    def _hold_redirect(self, record: Record) -> None:
        # A redirect to another origin, or a loop, is an answer about the address: held until
        # another answer shows the address is right, then failed as the row's own.
        self._held_redirects.append(record)
        if len(self._held_redirects) >= REDIRECTS:
            self._stop_for_redirects()

    def _stop_for_redirects(self) -> None:
        said = self._held_redirects[-1].error or "every request was redirected elsewhere"
        self.ctx.end(ApiUnusableError(f"{said}; no row failed, rows are pending"))

    def _end_redirect_hold(self) -> None:
        self._only_redirects = False
        for record in self._held_redirects:
            self._finish(record)
        self._held_redirects.clear()

    def _end_probation(self) -> None:
        if self._probation:
            self._probation = False
            for record in self._held_404:
                self._finish(record)
            self._held_404.clear()

    def _failure(self, job: Claim, outcome: Outcome, *, attempts: int, retryable: bool) -> Record:
        self.ctx.tally.last_error = outcome.error
        return Record(
            job, JobState.FAILED, attempts, outcome.http_status, error=outcome.error,
            retryable=retryable,
        )  # fmt: skip

    def _finish(self, record: Record) -> None:
        if record.state is not JobState.DONE:
            self._drop_stray_file(record.job)
        self.ctx.finished(record.state)
        self._unrecorded.append(record)

    async def flush(self, *, final: bool = False) -> None:
        """Publish staged heatmaps durably, then record the batch and the timeline in one commit.

        Until then a row stays `running` in the table: a crash now costs a refetch, never a
        `done` row without its file. Shielded: a batch once taken is always recorded, even
        when the caller is cancelled (the next flush waits for it on the lock).
        """
        await asyncio.shield(self._flush(final=final))

    async def _flush(self, *, final: bool) -> None:
        async with self._flushing:
            batch, self._unrecorded = self._unrecorded, []
            ctx = self.ctx
            now = ctx.clock()
            due = final or now - self._timeline_flushed >= TIMELINE_EVERY
            if not batch and not due:
                return
            paths = [Path(record.saved.path) for record in batch if record.saved]
            if paths:
                await asyncio.to_thread(publish, paths, out=ctx.settings.out)
            minutes = ctx.timeline.take(ctx.pacer.view()) if self.run_id is not None else []
            ctx.store.record(batch, timeline=minutes, run_id=self.run_id)
            self._timeline_flushed = now

    async def _flush_now_and_then(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_EVERY)  # real time: this bounds the loss to a crash
            ctx = self.ctx
            ctx.timeline.sample_pause(ctx.pacer.view(), outage=ctx.health.in_outage)
            overdue = ctx.health.overdue()  # on a clock, not only when a request ends
            if overdue is not None and not ctx.stopping:
                ctx.end(ApiUnusableError(overdue))
            await self.flush()
