"""Is the API up? Outage decisions as a pure state machine over answers and failures; no I/O.

The runner reports every transient failure here, by the row it was about, and acts on the
returned `Call`:

- Before the API has answered once in this run, nothing is a row's fault: failures are
  forgiven and probed one at a time at growing intervals; connection failures (refused, DNS,
  TLS) past a few probes mean a wrong address or no network, and the run gives up at once.
- After that, transient failures of STREAK different identifiers with no good answer between
  them for STREAK_SECONDS mean an outage (a server failing every other request is flaky, not
  down: its rows pay attempts and back off one by one): the pool pauses and probes one
  request at a time, at intervals that double up to PROBE_CAP; the attempts the streak's rows
  paid are refunded (`Call.refund`: rowid -> attempts); requests made during the outage spend
  no attempts. An outage longer than the limit gives up.
- A failure while the API is otherwise answering is the row's own: it spends an attempt.
- The same few identifiers failing are theirs, not an outage: an identifier that paid for a
  failure and then saw the API answer others (a suspect) never counts towards an outage, so the
  last few broken rows of a job fail after --max-attempts instead of waiting for an outage
  limit. A timeout after the status line (a trickling body) is the row's too: the server
  answered.
- Silence is an outage: before the first answer, SILENT failures (no status line within
  --timeout) of START_PROBES identifiers give up as refused connections do.

A request is about one row, named by its rowid; a classifications request (the prefilter's, a
batch of rows that no attempt is spent on) is about the row `None`: the endpoint is one subject.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from batchmap.models import Failure

STREAK = 3  # distinct identifiers failing in a row, with no good answer between, mean an outage
STREAK_SECONDS = 2.0  # ... once no good answer came for this long (a flaky server answers often)
START_PROBES = 3  # connection failures before any answer after which the address is wrong
PROBE_FIRST = 1.0  # seconds before the first probe of an outage
PROBE_CAP = 120.0  # probes of a long outage come this often


@dataclass(frozen=True, slots=True)
class Call:
    """What the runner should do about one failure."""

    charge: bool  # spend one of the row's attempts (and back off that row alone)
    pause_for: float = 0.0  # > 0: pause the pool this long, then let one probe through
    reason: str = ""  # why the pool pauses, for progress and the timeline
    refund: dict[int, int] = field(default_factory=dict)  # rowid -> attempts to give back
    give_up: str | None = None  # stop the run: the API cannot be used as given


class Health:
    """Tracks whether the API answers; decides charges, outage pauses and when to give up."""

    def __init__(
        self,
        *,
        outage_limit: float,
        where: str,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.outage_limit = outage_limit
        self.where = where  # host:port, for messages
        self.clock = clock
        self.wall = wall
        self.answered = False  # any good answer in this run
        self.outage_since: float | None = None  # monotonic start of the current outage
        self.outage_total = 0.0  # seconds of outage this run, ended ones only
        # Rows failing since the last good answer, in order, with the attempts each paid since.
        self._streak: dict[int | None, int] = {}
        self._streak_since = 0.0
        self._start_failures = 0
        self._silent: set[int | None] = set()  # rows that got no answer at all before the first
        self.suspects: set[int | None] = set()  # failed while the API answered: never an outage
        self._last_error = "no answer"
        self._probe = PROBE_FIRST

    @property
    def in_outage(self) -> bool:
        """True while the pool is paused for an outage (or before the first answer)."""
        return self.outage_since is not None

    def on_answer(self) -> float | None:
        """A good answer (anything but 5xx/408 or no answer); returns an ended outage's length."""
        self.answered = True
        # Those that paid for a failure, now that the API answered: their own trouble.
        self.suspects.update(row for row, paid in self._streak.items() if paid)
        self._streak.clear()
        self._start_failures = 0
        self._probe = PROBE_FIRST
        if self.outage_since is None:
            return None
        lasted = self.clock() - self.outage_since
        self.outage_total += lasted
        self.outage_since = None
        return lasted

    def on_failure(self, row: int | None, failure: Failure, error: str) -> Call:
        """A request about `row` failed transiently (no answer, timeout, 5xx): whose fault?"""
        now = self.clock()
        self._last_error = error
        if not self.answered:
            self._add_to_streak(now, row)
            return self._before_first_answer(now, row, failure, error)
        if self.outage_since is not None:
            if now - self.outage_since > self.outage_limit:
                return Call(charge=False, give_up=self._too_long(now, error))
            return self._probe_later(error)
        if failure is Failure.TIMEOUT or row in self.suspects:
            self.suspects.add(row)
            return Call(charge=True)  # the server answers; this row fails on its own
        self._add_to_streak(now, row)
        if len(self._streak) >= STREAK and now - self._streak_since >= STREAK_SECONDS:
            self.outage_since = self._streak_since
            refund = {key: paid for key, paid in self._streak.items() if key is not None and paid}
            self._streak = dict.fromkeys(self._streak, 0)  # given back: not theirs to pay
            call = self._probe_later(error)
            return Call(False, call.pause_for, call.reason, refund=refund)
        self._streak[row] += 1
        return Call(charge=True)

    def _add_to_streak(self, now: float, row: int | None) -> None:
        if not self._streak:
            self._streak_since = now
        self._streak.setdefault(row, 0)

    def overdue(self) -> str | None:
        """Why the run must give up now, checked on a clock: an outage past the limit."""
        if self.outage_since is None:
            return None
        now = self.clock()
        if now - self.outage_since <= self.outage_limit:
            return None
        return self._too_long(now, self._last_error)

    def _before_first_answer(
        self, now: float, row: int | None, failure: Failure, error: str
    ) -> Call:
        if self.outage_since is None:
            self.outage_since = now
        if failure is Failure.SILENT:
            self._silent.add(row)
            if len(self._silent) >= START_PROBES:
                return Call(
                    charge=False,
                    give_up=(
                        f"the API at {self.where} never answers ({error}, "
                        f"{len(self._silent)} identifiers): check --base-url, the network and "
                        "--timeout; no row was changed"
                    ),
                )
        if failure is Failure.CONNECT:
            self._start_failures += 1
            if self._start_failures >= START_PROBES:
                return Call(
                    charge=False,
                    give_up=(
                        f"cannot reach the API at {self.where} ({error}): check --base-url "
                        "and the network; no row was changed"
                    ),
                )
        if now - self.outage_since > self.outage_limit:
            return Call(charge=False, give_up=self._too_long(now, error))
        return self._probe_later(error)

    def _probe_later(self, error: str) -> Call:
        pause = self._probe
        self._probe = min(PROBE_CAP, self._probe * 2)
        return Call(charge=False, pause_for=pause, reason=f"{self.since_text()} ({error})")

    def since_text(self) -> str:
        """'API unreachable since 14:02:11', in local time (shown, so wall clock)."""
        assert self.outage_since is not None
        since = self.wall() - (self.clock() - self.outage_since)
        return f"API unreachable since {time.strftime('%H:%M:%S', time.localtime(since))}"

    def _too_long(self, now: float, error: str) -> str:
        assert self.outage_since is not None
        minutes = (now - self.outage_since) / 60
        return (
            f"{self.since_text()}, for {minutes:.0f} min, over the --outage-limit "
            f"({self.outage_limit:g} s); last error: {error}. Rows are pending: "
            "`batchmap resume` when the API is back"
        )
