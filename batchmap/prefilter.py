"""Ask in bulk before spending a request: the classifications stage of a run.

identifAI's `GET /api/classifications?identifiers[]=...` answers for 100 identifiers at once
whether each has a heatmap, and with its verdict. It shares the heatmap endpoint's quota, so
it goes through the same pacer. The stage stays a little ahead of the workers: they claim
only rows it has asked about. `has_heatmap: false` (classification done) ends a row
`no_heatmap` without a heatmap request; anything the list does not decide goes to the
heatmap endpoint as before. When the endpoint is missing or answers in a shape it does not
document, the stage says so once, remembers it for this base URL, and steps aside.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import httpx

from batchmap.errors import ApiUnusableError, AuthError, BatchmapError
from batchmap.fetch import fetch_classifications
from batchmap.health import Health
from batchmap.minutes import MinuteLog
from batchmap.models import Claim, Failure, Meaning, Outcome
from batchmap.pacer import Pacer
from batchmap.policy import backoff_delay, stop_message
from batchmap.store import Store

log = logging.getLogger("batchmap")

BATCH = 100  # identifAI's documented maximum per request
AHEAD = 2 * BATCH  # asked rows the workers have not claimed yet: ask more below this
GIVE_UP_AFTER = 3  # consecutive failed requests (outside outages) before stepping aside
META_KEY = "prefilter"
NO_PREFILTER_KEY = "no_prefilter"  # meta: true once a run was told --no-prefilter


def remembered_unavailable(meta: Any, base_url: str) -> str | None:
    """Why the endpoint was found unusable at this base URL before, or None."""
    if isinstance(meta, dict) and meta.get("base_url") == base_url and not meta.get("available"):
        return str(meta.get("reason") or "unusable")
    return None


class _Limits(Protocol):
    @property
    def timeout(self) -> float: ...

    @property
    def max_body(self) -> int: ...


class _Counts(Protocol):
    requests: int
    rate_limited: int


class Run(Protocol):
    """What the stage uses of the run it is part of (`runner.Runner`, which imports this
    module: the stage names the services it shares instead of importing the runner back)."""

    store: Store
    client: httpx.AsyncClient
    pacer: Pacer
    health: Health
    timeline: MinuteLog
    clock: Callable[[], float]
    sleep: Callable[[float], Awaitable[None]]
    jitter: Callable[[float], float]

    @property
    def settings(self) -> _Limits: ...

    @property
    def tally(self) -> _Counts: ...

    @property
    def stopping(self) -> bool: ...

    async def turn(self) -> float | None: ...

    def learn(self, outcome: Outcome, *, sent_at: float) -> None: ...

    def end(self, error: BatchmapError) -> None: ...

    def wake(self) -> None: ...

    def finish_classified(self, count: int) -> None: ...


class Prefilter:
    """Asks the classifications endpoint about pending rows, a batch at a time, ahead of claims."""

    def __init__(self, runner: Run) -> None:
        self.runner = runner
        self.active = True
        self._ahead = 0  # asked and still pending, not yet claimed by a worker
        self._failures = 0
        self._tried_one = False
        self._seen_200 = bool((runner.store.get_meta(META_KEY) or {}).get("available"))

    def claimed(self, count: int) -> None:
        """Workers took `count` asked rows."""
        self._ahead = max(0, self._ahead - count)

    async def run(self) -> None:
        """Ask batch after batch until every pending row was asked, or the stage steps aside."""
        runner = self.runner
        try:
            while self.active and not runner.stopping:
                if self._ahead >= AHEAD:
                    await runner.sleep(0.05)
                    continue
                batch = runner.store.unasked(BATCH)
                if not batch:
                    break
                await self._ask(batch)
        finally:
            self.active = False
            runner.wake()

    async def _ask(self, batch: list[Claim]) -> None:
        runner = self.runner
        sent_at = await runner.turn()
        if sent_at is None:
            return
        answer = await fetch_classifications(
            runner.client,
            [job.identifier for job in batch],
            timeout=runner.settings.timeout,
            max_bytes=runner.settings.max_body,
        )
        outcome = answer.outcome
        runner.tally.requests += 1
        runner.timeline.count_answer(outcome, classifications=True)
        runner.learn(outcome, sent_at=sent_at)
        if answer.unsupported is not None:
            await self._unsupported(batch, answer.unsupported, status=outcome.http_status)
            return
        match outcome.verdict:
            case Meaning.DONE:
                self._failures = 0
                runner.health.on_answer()
                if not self._seen_200:
                    self._seen_200 = True
                    self._remember(available=True, reason="")
                finished = runner.store.record_classifications(batch, answer.found)
                runner.finish_classified(finished)
                self._ahead += len(batch) - finished
                runner.wake()
            case Meaning.RATE_LIMITED:
                runner.tally.rate_limited += 1
            case Meaning.STOP:
                runner.end(AuthError(stop_message(outcome.http_status or 401)))
            case Meaning.FAILED:
                # A 4xx for the whole batch: leave these rows to the heatmap endpoint (which
                # stops the run if it redirects elsewhere too: the address is wrong).
                if outcome.failure is not Failure.REDIRECT:
                    runner.health.on_answer()
                runner.store.record_classifications(batch, ())
                self._ahead += len(batch)
                runner.wake()
            case Meaning.RETRY:
                await self._failed(batch, outcome.failure, outcome.error or "", outcome.retry_after)

    async def _unsupported(self, batch: list[Claim], reason: str, *, status: int | None) -> None:
        runner = self.runner
        if status == 404 and len(batch) > 1 and not self._seen_200 and not self._tried_one:
            # A 404 for a whole batch may mean one unknown identifier, not a missing route:
            # one request about a single identifier tells them apart.
            self._tried_one = True
            await self._ask(batch[:1])
            if self._seen_200:
                runner.store.record_classifications(batch[1:], ())
                self._ahead += len(batch) - 1
                runner.wake()
            return
        if self._seen_200:
            # The endpoint worked before: a 404 here means an identifier it does not know.
            runner.store.record_classifications(batch, ())
            self._ahead += len(batch)
            runner.wake()
            return
        log.warning(
            "note: the classifications endpoint is not usable here (%s); fetching heatmaps "
            "directly (remembered for this base URL; --no-prefilter turns the stage off)",
            reason,
        )
        self._remember(available=False, reason=reason)
        self.active = False

    async def _failed(
        self, batch: list[Claim], failure: Failure | None, error: str, retry_after: float | None
    ) -> None:
        runner = self.runner
        if failure not in (None, Failure.BODY):
            call = runner.health.on_failure(f"classifications:{batch[0].identifier}",
                                            failure, error)  # fmt: skip
            if call.give_up is not None:
                runner.end(ApiUnusableError(call.give_up))
                return
            if call.pause_for > 0:
                runner.pacer.pause(runner.clock() + call.pause_for, call.reason, probe=True)
            if not call.charge:
                return  # an outage: the batch is asked again when it ends
        self._failures += 1
        if self._failures >= GIVE_UP_AFTER:
            log.warning(
                "note: the classifications endpoint keeps failing (%s); fetching heatmaps "
                "directly for the rest of this run",
                error,
            )
            self.active = False
            return
        await runner.sleep(
            backoff_delay(self._failures, retry_after=retry_after, jitter=runner.jitter)
        )

    def _remember(self, *, available: bool, reason: str) -> None:
        base_url = str(self.runner.client.base_url).rstrip("/")
        self.runner.store.set_meta(
            META_KEY, {"base_url": base_url, "available": available, "reason": reason}
        )
