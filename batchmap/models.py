"""Plain data: job states, jobs, fetch outcomes, what a report wrote. No I/O here."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from enum import StrEnum


class JobState(StrEnum):
    """The state column of the job table."""

    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    NO_HEATMAP = "no_heatmap"
    FAILED = "failed"


class Failure(StrEnum):
    """Why a request got no usable answer: what outage detection and messages need to know."""

    CONNECT = "connect"  # refused, DNS failure, TLS error: the host was never reached
    TIMEOUT = "timeout"  # an answer began but did not complete within --timeout
    SILENT = "silent"  # no answer at all within --timeout (connected, then silence)
    NETWORK = "network"  # reset, closed mid-answer, protocol error
    SERVER = "server"  # 5xx or 408: the server answered that it is in trouble
    BODY = "body"  # 200 with a truncated, non-PNG or too large body
    REDIRECT = "redirect"  # a redirect to another origin, or a loop: about the address


class Meaning(StrEnum):
    """What one HTTP answer means for its job (the README's "What each answer does")."""

    DONE = "done"  # 200 with a complete PNG
    NO_HEATMAP = "no_heatmap"  # 204: final, never retried
    FAILED = "failed"  # 404 and other 4xx: permanent
    RETRY = "retry"  # 5xx, timeout, reset, truncated or non-PNG 200
    RATE_LIMITED = "rate_limited"  # 429: not the job's fault, pause the pool
    STOP = "stop"  # 401/403: stop the whole run


@dataclass(frozen=True, slots=True)
class Claim:
    """A claimed row of the job table."""

    rowid: int
    identifier: str
    attempts: int = 0


@dataclass(frozen=True, slots=True)
class Outcome:
    """The result of one request for one identifier, already judged by policy."""

    verdict: Meaning
    http_status: int | None = None
    error: str | None = None
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    failure: Failure | None = None  # set for RETRY outcomes, and FAILED redirects
    retry_after: float | None = None  # the server's Retry-After, validated (policy.retry_after)


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

    job: Claim
    state: JobState
    attempts: int
    http_status: int | None
    saved: Saved | None = None
    error: str | None = None
    retryable: bool | None = None


@dataclass(frozen=True, slots=True)
class Classification:
    """What identifAI's bulk classifications endpoint says of one identifier."""

    identifier: str
    has_heatmap: bool | None
    verdict: str | None  # the main verdict's classification: "artificial", "human", ...
    confidence: float | None
    image_hash: str | None
    image_name: str | None
    status: str | None  # newer API versions: "new", "done", "errored"; None when not sent
    raw: str  # the whole object, as JSON


@dataclass(slots=True)
class MinuteStats:
    """One minute of a run's timeline, added to the `timeline` table with the next flush."""

    minute: str  # UTC start of the minute, 'YYYY-MM-DDTHH:MM:00Z'
    requests: int = 0
    classification_requests: int = 0
    ok: int = 0
    no_heatmap: int = 0
    not_found: int = 0
    client_error: int = 0
    server_error: int = 0
    rate_limited: int = 0
    network_error: int = 0
    finished: int = 0
    paused_seconds: float = 0.0
    outage_seconds: float = 0.0
    pause_reasons: dict[str, float] = field(default_factory=dict)
    pacer_rate: float | None = None
    limits: tuple[tuple[int, float], ...] = ()


# The timeline table's columns, in the schema's order: the one definition is MinuteStats
# (store.py creates the table from it, report.py writes timeline-csv from it).
TIMELINE_COLUMNS: tuple[str, ...] = ("run_id", *(f.name for f in fields(MinuteStats)))
# Its counters: the numbers a later flush adds to the same minute.
TIMELINE_COUNTERS: tuple[str, ...] = tuple(
    f.name for f in fields(MinuteStats) if f.type in ("int", "float")
)


@dataclass(frozen=True, slots=True)
class Written:
    """What a report wrote: the rows it accounts for and how many it shows one by one.

    For csv/json/jsonl every row is written (`rendered == rows`); the HTML page counts all
    rows but renders at most a capped number of thumbnails and failed rows. `reader_gone`
    is set when standard output was closed early (`| head`): not an error.
    """

    rows: int
    rendered: int
    thumbnails: int = 0
    failures: int = 0
    reader_gone: bool = False

    def __str__(self) -> str:
        # The row count, so `f"wrote {written} rows"` reads as before the CLI uses message().
        return str(self.rows)

    def message(self, target: object) -> str:
        """The one line the CLI prints after writing to `target`."""
        noun = "row" if self.rows == 1 else "rows"
        if self.rendered == self.rows:
            return f"wrote {self.rows} {noun} to {target}"
        return (
            f"wrote {self.rows} {noun} to {target} ({self.thumbnails} thumbnails and "
            f"{self.failures} failed rows shown; all rows: batchmap report --format csv)"
        )
