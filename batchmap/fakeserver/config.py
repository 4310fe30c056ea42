"""One validated settings object for a fake server: keys, limits, endpoints and faults."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

OutageKind = Literal["refuse", "503", "reset"]


@dataclass
class FakeConfig:
    """Keys, rate limits and fault rates of a fake server; rates are probabilities per request."""

    valid_key: str = "demo-key"
    forbidden_key: str = "forbidden-key"
    limits: tuple[tuple[int, float], ...] = ((2, 1.0), (60, 60.0))  # (max requests, window s)
    # Laravel's windows end on a whole second (file/database cache TTLs are integer
    # timestamps); False: exactly W after the first hit, as with Laravel on Redis. Windows
    # under a second are always exact (Laravel has none).
    whole_seconds: bool = True
    rate_headers: bool = True
    rate_limit_status: int = 429  # 503: nginx limit_req's default answer
    leaky_rate: float | None = None
    leaky_burst: int = 1
    error_rate: float = 0.0
    latency: float = 0.0
    drop_rate: float = 0.0
    truncate_rate: float = 0.0
    not_png_rate: float = 0.0
    redirect_to: str | None = None
    seed: int | None = None
    # The classifications endpoint: served as documented, absent (404 like an unknown route),
    # or a 200 in an undocumented shape.
    classifications: bool = True
    classifications_shape: Literal["documented", "odd"] = "documented"
    unknown_classifications: Literal["absent", "404"] = "absent"
    pending_rate: float = 0.0  # share of identifiers whose classification is still "new"
    # One outage, from `outage_at` seconds after start for `outage_for` seconds.
    outage_at: float | None = None
    outage_for: float = 0.0
    outage_kind: OutageKind = "refuse"
    outage_retry_after: int | None = None
    # identifAI answers 404 for identifiers it never issued; with this, so does the fake for
    # any identifier that is not 64 lowercase hex (a wrong CSV column fails in a rehearsal).
    strict_ids: bool = False

    def __post_init__(self) -> None:
        """Refuse settings that would make the fake misbehave in ways nobody asked for."""
        rates = (
            self.error_rate,
            self.drop_rate,
            self.truncate_rate,
            self.not_png_rate,
            self.pending_rate,
        )
        if any(not 0.0 <= rate <= 1.0 for rate in rates):
            raise ValueError("fault rates and --pending-rate must be between 0 and 1")
        if any(most < 1 or not 0 < window < math.inf for most, window in self.limits):
            raise ValueError("each limit needs at least 1 request and a positive window")
        if self.leaky_rate is not None and (self.leaky_rate <= 0 or self.leaky_burst < 1):
            raise ValueError("leaky_rate must be positive and leaky_burst at least 1")
        if not 0 <= self.latency < math.inf:
            raise ValueError("latency must not be negative")
        if self.rate_limit_status not in (429, 503):
            raise ValueError("rate_limit_status must be 429 or 503")
        if self.outage_at is not None and not (
            0 <= self.outage_at < math.inf and 0 < self.outage_for < math.inf
        ):
            raise ValueError("an outage needs --outage-at >= 0 and a positive --outage-for")
        if self.outage_kind not in ("refuse", "503", "reset"):
            raise ValueError("outage_kind must be refuse, 503 or reset")
        if self.outage_retry_after is not None and self.outage_retry_after < 0:
            raise ValueError("outage_retry_after must not be negative")
