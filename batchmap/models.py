"""Plain data: job states, jobs, fetch outcomes. No I/O here."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

DEFAULT_BASE_URL = "https://backend.identifai.net"


class JobState(StrEnum):
    """The state column of the job table."""

    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    NO_HEATMAP = "no_heatmap"
    FAILED = "failed"


class Verdict(StrEnum):
    """What one HTTP answer means for its job (PRODUCT.md's table)."""

    DONE = "done"  # 200 with a complete PNG
    NO_HEATMAP = "no_heatmap"  # 204: final, never retried
    FAILED = "failed"  # 404 and other 4xx: permanent
    RETRY = "retry"  # 5xx, timeout, reset, truncated or non-PNG 200
    RATE_LIMITED = "rate_limited"  # 429: not the job's fault, pause the pool
    STOP = "stop"  # 401/403: stop the whole run


@dataclass(frozen=True, slots=True)
class Job:
    """A claimed row of the job table."""

    rowid: int
    identifier: str
    attempts: int = 0


@dataclass(frozen=True, slots=True)
class Outcome:
    """The result of one request for one identifier, already judged by policy."""

    verdict: Verdict
    http_status: int | None = None
    error: str | None = None
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Saved:
    """Where a heatmap was written and what it was."""

    path: str
    bytes: int
    sha256: str


@dataclass(frozen=True, slots=True)
class LoadStats:
    """What loading a CSV did to the job table."""

    read: int
    added: int
    duplicates: int
    blank: int


@dataclass(frozen=True, slots=True)
class Record:
    """A final outcome waiting to be written to the job table."""

    job: Job
    state: JobState
    attempts: int
    http_status: int | None
    saved: Saved | None = None
    error: str | None = None
    retryable: bool | None = None
