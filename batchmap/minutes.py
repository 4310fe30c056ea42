"""The run's timeline as it happens: counts per wall-clock minute, handed to the store in batches.

The runner counts every answer and finished row here; each flush takes the increments so
far (`take`) and the store adds them to the `timeline` table in the same transaction as the
rows they describe. Time runs on the monotonic clock; the minute a count belongs to is the
wall-clock minute at that instant, converted here, at the edge.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

from batchmap.models import Meaning, MinuteStats, Outcome
from batchmap.pacer import PacerView

_FIELD_OF_STATUS = {200: "ok", 204: "no_heatmap", 404: "not_found", 429: "rate_limited"}


def minute_of(wall: float) -> str:
    """'2026-11-28T04:31:00Z': the UTC minute a wall-clock instant falls in."""
    moment = datetime.fromtimestamp(wall, UTC).replace(second=0, microsecond=0)
    return moment.strftime("%Y-%m-%dT%H:%M:00Z")


class MinuteLog:
    """Per-minute increments of requests, answers, finishes and pauses since the last take."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.clock = clock
        self.wall = wall
        self._minutes: dict[str, MinuteStats] = {}
        self._sampled = clock()

    def _now(self) -> MinuteStats:
        minute = minute_of(self.wall())
        stats = self._minutes.get(minute)
        if stats is None:
            stats = self._minutes[minute] = MinuteStats(minute)
        return stats

    def count_answer(self, outcome: Outcome, *, classifications: bool = False) -> None:
        """One request ended: count it by what came back."""
        stats = self._now()
        stats.requests += 1
        if classifications:
            stats.classification_requests += 1
        status = outcome.http_status
        if status is None:
            stats.network_error += 1
        elif status >= 500:
            stats.server_error += 1
        elif status in _FIELD_OF_STATUS and not (classifications and status != 429):
            name = _FIELD_OF_STATUS[status]
            setattr(stats, name, getattr(stats, name) + 1)
        elif 400 <= status < 500 and outcome.verdict is not Meaning.RATE_LIMITED:
            stats.client_error += 1

    def count_finished(self, count: int, *, no_heatmap: bool = False) -> None:
        """Rows that reached a final state (the prefilter's no_heatmap rows counted as such)."""
        stats = self._now()
        stats.finished += count
        if no_heatmap:
            stats.no_heatmap += count

    def sample_pause(self, view: PacerView, *, outage: bool) -> None:
        """Called now and then: the time since the last call was paused, and why, if it was."""
        now = self.clock()
        elapsed, self._sampled = now - self._sampled, now
        if view.paused_until <= now or elapsed <= 0:
            return
        stats = self._now()
        stats.paused_seconds += elapsed
        if outage:
            stats.outage_seconds += elapsed
        reason = _short_reason(view.pause_reason)
        stats.pause_reasons[reason] = stats.pause_reasons.get(reason, 0.0) + elapsed

    def take(self, view: PacerView) -> list[MinuteStats]:
        """The increments since the last take, stamped with the pacer's rate and limits."""
        if not self._minutes:
            self._now()  # an empty minute still carries the pacer's rate
        taken = list(self._minutes.values())
        self._minutes = {}
        for stats in taken:
            stats.pacer_rate = view.rate
            stats.limits = view.limits
        return taken


def _short_reason(reason: str) -> str:
    """A pause reason without its changing details: 'rate limited (429)', 'API unreachable'."""
    if reason.startswith("quota of"):  # "quota of 60 per 60.0s": which limit, not "quota of"
        return reason.split(" used up", 1)[0]
    for prefix in ("API unreachable", "rate limited", "server asked to wait"):
        if reason.startswith(prefix):
            return prefix
    return reason.split(" (", 1)[0][:60] or "paused"
