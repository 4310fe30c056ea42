"""Ask in bulk before spending a request: the classifications stage of a run.

identifAI's `GET /api/classifications?identifiers[]=...` answers for 100 identifiers at once
whether each has a heatmap, and with its verdict. It shares the heatmap endpoint's quota, so
it goes through the same pacer. The stage stays a little ahead of the workers: they claim
only rows it has asked about. `has_heatmap: false` (classification done) ends a row
`no_heatmap` without a heatmap request; anything the list does not decide goes to the
heatmap endpoint as before. When the endpoint is missing or answers in a shape it does not
document, the stage says so once, remembers it for this base URL, and steps aside.

The stage shares the run's services (`context.RunContext`) with the worker pool and calls the
pool back only through `Pool`: for its turn at the pacer, to report an answer or a failure,
and to wake workers when rows are ready.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from batchmap.context import RunContext
from batchmap.errors import AuthError
from batchmap.fetch import fetch_classifications
from batchmap.health import Call
from batchmap.models import Claim, Failure, JobState, Meaning, Outcome
from batchmap.policy import backoff_delay, stop_message

log = logging.getLogger("batchmap")

BATCH = 100  # identifAI's documented maximum per request
AHEAD = 2 * BATCH  # asked rows the workers have not claimed yet: ask more below this
GIVE_UP_AFTER = 3  # consecutive failed requests (outside outages) before stepping aside
META_KEY = "prefilter"
NO_PREFILTER_KEY = "no_prefilter"  # meta: true once a run was told --no-prefilter


def on_by_default(no_prefilter: object) -> bool:
    """Whether a run that names neither --prefilter nor --no-prefilter uses the prefilter:
    on, unless the job remembers a --no-prefilter (the NO_PREFILTER_KEY meta value)."""
    return not no_prefilter


def remembered_unavailable(meta: Any, base_url: str) -> str | None:
    """Why the endpoint was found unusable at this base URL before, or None."""
    if isinstance(meta, dict) and meta.get("base_url") == base_url and not meta.get("available"):
        return str(meta.get("reason") or "unusable")
    return None


class Pool(Protocol):
    """What the stage needs of the worker pool it runs ahead of (`runner.Runner`)."""

    async def turn(self) -> float | None:
        """Wait for the pacer; None when a stop came meanwhile."""

    def learn(self, outcome: Outcome, *, sent_at: float) -> None:
        """Tell the pacer about an answer (a long wait may end the run)."""

    def failed(self, row: int | None, outcome: Outcome) -> Call:
        """A transient failure: the run's one handler (outages, refunds, giving up)."""

    def wake(self) -> None:
        """Asked rows are ready: let waiting workers claim them."""


class Prefilter:
    """Asks the classifications endpoint about pending rows, a batch at a time, ahead of claims."""

    def __init__(self, ctx: RunContext, pool: Pool) -> None:
        self.ctx = ctx
        self.pool = pool
        self.active = True
        self._ahead = 0  # asked and still pending, not yet claimed by a worker
        self._failures = 0
        self._tried_one = False
        self._seen_200 = bool((ctx.store.get_meta(META_KEY) or {}).get("available"))

    def claimed(self, count: int) -> None:
        """Workers took `count` asked rows."""
        self._ahead = max(0, self._ahead - count)

    async def run(self) -> None:
        """Ask batch after batch until every pending row was asked, or the stage steps aside."""
        ctx = self.ctx
        try:
            while self.active and not ctx.stopping:
                if self._ahead >= AHEAD:
                    await ctx.sleep(0.05)
                    continue
                batch = ctx.store.unasked(BATCH)
                if not batch:
                    break
                await self._ask(batch)
        finally:
            self.active = False
            self.pool.wake()

    async def _ask(self, batch: list[Claim]) -> None:
        ctx, pool = self.ctx, self.pool
        sent_at = await pool.turn()
        if sent_at is None:
            return
        answer = await fetch_classifications(
            ctx.client,
            [job.identifier for job in batch],
            timeout=ctx.settings.timeout,
            max_bytes=ctx.settings.max_body,
        )
        outcome = answer.outcome
        ctx.tally.requests += 1
        ctx.timeline.count_answer(outcome, classifications=True)
        pool.learn(outcome, sent_at=sent_at)
        if answer.unsupported is not None:
            await self._unsupported(batch, answer.unsupported, status=outcome.http_status)
            return
        match outcome.verdict:
            case Meaning.DONE:
                self._failures = 0
                ctx.health.on_answer()
                if not self._seen_200:
                    self._seen_200 = True
                    self._remember(available=True, reason="")
                finished = ctx.store.record_classifications(batch, answer.found)
                ctx.finished(JobState.NO_HEATMAP, finished, classified=True)
                self._ahead += len(batch) - finished
                pool.wake()
            case Meaning.RATE_LIMITED:
                ctx.tally.rate_limited += 1
            case Meaning.STOP:
                ctx.end(AuthError(stop_message(outcome.http_status or 401)))
            case Meaning.FAILED:
                # A 4xx for the whole batch: leave these rows to the heatmap endpoint (which
                # stops the run if it redirects elsewhere too: the address is wrong).
                if outcome.failure is not Failure.REDIRECT:
                    ctx.health.on_answer()
                ctx.store.record_classifications(batch, ())
                self._ahead += len(batch)
                pool.wake()
            case Meaning.RETRY:
                await self._failed(outcome)

    async def _unsupported(self, batch: list[Claim], reason: str, *, status: int | None) -> None:
        ctx = self.ctx
        if status == 404 and len(batch) > 1 and not self._seen_200 and not self._tried_one:
            # A 404 for a whole batch may mean one unknown identifier, not a missing route:
            # one request about a single identifier tells them apart.
            self._tried_one = True
            await self._ask(batch[:1])
            if self._seen_200:
                ctx.store.record_classifications(batch[1:], ())
                self._ahead += len(batch) - 1
                self.pool.wake()
            return
        if self._seen_200:
            # The endpoint worked before: a 404 here means an identifier it does not know.
            ctx.store.record_classifications(batch, ())
            self._ahead += len(batch)
            self.pool.wake()
            return
        log.warning(
            "note: the classifications endpoint is not usable here (%s); fetching heatmaps "
            "directly (remembered for this base URL; --no-prefilter turns the stage off)",
            reason,
        )
        self._remember(available=False, reason=reason)
        self.active = False

    async def _failed(self, outcome: Outcome) -> None:
        # About no one row (None): the endpoint is one subject for Health, and no row pays.
        transient = outcome.failure not in (None, Failure.BODY)
        if transient and not self.pool.failed(None, outcome).charge:
            return  # an outage (asked again when it ends), or the run ends
        self._failures += 1
        if self._failures >= GIVE_UP_AFTER:
            log.warning(
                "note: the classifications endpoint keeps failing (%s); fetching heatmaps "
                "directly for the rest of this run",
                outcome.error or "",
            )
            self.active = False
            return
        delay = backoff_delay(
            self._failures, retry_after=outcome.retry_after, jitter=self.ctx.jitter
        )
        await self.ctx.sleep(delay)

    def _remember(self, *, available: bool, reason: str) -> None:
        base_url = str(self.ctx.client.base_url).rstrip("/")
        self.ctx.store.set_meta(
            META_KEY, {"base_url": base_url, "available": available, "reason": reason}
        )
