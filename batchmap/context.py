"""What the parts of one run share: its store, client, pacer, health, clock, timeline and tally.

The worker pool (`runner.Runner`) and the classifications stage (`prefilter.Prefilter`) send
requests through one pacer, count them in one tally and one timeline, report failures to one
`health.Health` and end through one `Stop`. `RunContext` holds these, made once per run by
`RunContext.make`, so that neither part reaches into the other: the stage gets the context and
the few callbacks of the pool it needs (`prefilter.Pool`). `RunSettings`, `Tally` and `Stop`
live here for the same reason: both parts, and the session above them, use them.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import backoff
import httpx

from batchmap.config import DEFAULT_LAYOUT, DEFAULT_MAX_BODY, DEFAULT_TIMEOUT, Pace
from batchmap.errors import BatchmapError
from batchmap.files import Layout
from batchmap.health import Health
from batchmap.minutes import MinuteLog
from batchmap.models import JobState
from batchmap.pacer import Pacer
from batchmap.store import Store


@dataclass(frozen=True, slots=True)
class RunSettings:
    """How one run behaves, resolved from the configuration objects of batchmap.config."""

    out: Path
    prefilter: bool  # resolved by the session (the job's memory, the endpoint's): no default
    layout: Layout = DEFAULT_LAYOUT
    pace: Pace = field(default_factory=Pace)
    timeout: float = DEFAULT_TIMEOUT
    max_body: int = DEFAULT_MAX_BODY
    where: str = "the API"  # host:port, for messages
    wait_until: float = 0.0  # wall-clock time before which the server asked not to be called


@dataclass(slots=True)
class Tally:
    """What this run did so far; progress snapshots are made from it."""

    requests: int = 0
    rate_limited: int = 0
    retries: int = 0
    finished: Counter[JobState] = field(default_factory=Counter)
    started_at: float = 0.0
    last_error: str | None = None


class Stop:
    """A cancel token. Once: stop claiming, let requests in flight end. Twice: abandon them."""

    def __init__(self) -> None:
        self.graceful = asyncio.Event()
        self.force = asyncio.Event()
        self.reason: str | None = None  # what asked first, e.g. "SIGTERM", for the run's record

    def request(self, reason: str = "stop requested") -> None:
        """Escalate one step (Ctrl-C, SIGTERM and SIGHUP do this; so can a library caller)."""
        if self.graceful.is_set():
            self.force.set()
        self.graceful.set()
        self.reason = self.reason or reason

    @property
    def requested(self) -> bool:
        """True once a stop was asked for."""
        return self.graceful.is_set()


@dataclass(slots=True)
class RunContext:
    """The services one run's parts share; time is injected (tests never really sleep)."""

    store: Store
    client: httpx.AsyncClient
    pacer: Pacer
    settings: RunSettings
    stop: Stop
    health: Health
    timeline: MinuteLog
    tally: Tally
    clock: Callable[[], float]
    wall: Callable[[], float]
    sleep: Callable[[float], Awaitable[None]]
    jitter: Callable[[float], float]
    ended_by: BatchmapError | None = None  # a 401/403 or an API that cannot be used

    @classmethod
    def make(
        cls,
        store: Store,
        client: httpx.AsyncClient,
        pacer: Pacer,
        settings: RunSettings,
        *,
        stop: Stop | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        jitter: Callable[[float], float] = backoff.full_jitter,
    ) -> RunContext:
        """A fresh run's context: its own Health, timeline and tally on the given clocks."""
        health = Health(
            outage_limit=settings.pace.outage_limit, where=settings.where, clock=clock, wall=wall
        )
        return cls(
            store, client, pacer, settings, stop or Stop(), health,
            MinuteLog(clock=clock, wall=wall), Tally(), clock, wall, sleep, jitter,
        )  # fmt: skip

    @property
    def stopping(self) -> bool:
        """True once a stop was requested or the run must end."""
        return self.stop.requested

    def end(self, error: BatchmapError) -> None:
        """End the run at once with `error` (run() raises it), abandoning requests in flight."""
        if self.ended_by is None:
            self.ended_by = error
        self.stop.graceful.set()
        self.stop.force.set()

    def finished(self, state: JobState, count: int = 1, *, classified: bool = False) -> None:
        """Rows that reached a final state in this run (`classified`: by the prefilter)."""
        self.tally.finished[state] += count
        self.timeline.count_finished(count, no_heatmap=classified)
