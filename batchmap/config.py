"""One validated configuration object per concern, each default written once.

Like httpx's `Limits` and `Timeout`: the CLI builds these from typed options, the Python API
takes them as they are, and every check that a value makes sense lives here. A value that
cannot work raises InputError naming the option, before anything is opened or sent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from batchmap.errors import InputError
from batchmap.files import Layout
from batchmap.numeric import finite
from batchmap.policy import BACKOFF_BASE

DEFAULT_BASE_URL = "https://backend.identifai.net"
DEFAULT_DB = Path("batchmap.db")
DEFAULT_OUT = Path("heatmaps")
DEFAULT_LAYOUT = Layout.SHARDED
MIB = 1024 * 1024
DEFAULT_TIMEOUT = 30.0  # seconds for one whole request
DEFAULT_MAX_BODY = 32 * MIB  # a heatmap is a few hundred KB; a larger answer is refused
PROGRESS_EVERY = 10.0  # seconds between plain or JSON progress lines (--progress-every)


def _in_range(option: str, value: float, *, low: float, high: float = math.inf) -> None:
    # An unbounded option (--max-wait inf) may be infinite; nothing may be NaN or out of range.
    if finite(value, low=low, high=high) is None and not value == high == math.inf:
        shown = f"between {low:g} and {high:g}" if math.isfinite(high) else f"at least {low:g}"
        raise InputError(f"{option} {value!r}: expected a number {shown}")


def _whole(option: str, value: int, *, low: int, high: int) -> None:
    if not low <= value <= high:
        raise InputError(f"{option} {value!r}: expected a whole number from {low} to {high}")


@dataclass(frozen=True, slots=True)
class Api:
    """Where the API is and how one request may behave. The key is never shown (repr=False)."""

    api_key: str = field(repr=False)
    base_url: str | None = None  # None: the job's remembered base URL, else DEFAULT_BASE_URL
    timeout: float = DEFAULT_TIMEOUT
    max_body: int = DEFAULT_MAX_BODY

    def __post_init__(self) -> None:
        _in_range("--timeout", self.timeout, low=0.1, high=3600.0)
        _whole("--max-body", self.max_body, low=1024, high=1024 * MIB)


@dataclass(frozen=True, slots=True)
class Pace:
    """How hard and how long a run pushes: concurrency, rate, retries, waits it accepts."""

    concurrency: int = 4
    max_rate: float | None = None  # request starts per second at most; None: learn the server's
    max_attempts: int = 5  # tries per identifier for its own transient failures
    backoff_base: float = BACKOFF_BASE  # seconds before the first retry, doubling each time
    max_wait: float = 3600.0  # a server-requested wait longer than this stops the run
    outage_limit: float = 3600.0  # an API unreachable for longer than this stops the run

    def __post_init__(self) -> None:
        _whole("--concurrency", self.concurrency, low=1, high=256)
        if self.max_rate is not None:
            _in_range("--max-rate", self.max_rate, low=0.01, high=10_000.0)
        _whole("--max-attempts", self.max_attempts, low=1, high=100)
        _in_range("--backoff-base", self.backoff_base, low=0.0, high=60.0)
        _in_range("--max-wait", self.max_wait, low=1.0, high=7 * 86400.0)
        _in_range("--outage-limit", self.outage_limit, low=1.0, high=30 * 86400.0)


@dataclass(frozen=True, slots=True)
class Output:
    """Where heatmaps go; None means the job's remembered choice (or the default)."""

    out: Path | None = None
    layout: Layout | None = None


PACE = Pace()
"""The defaults, for the CLI's help texts."""
