"""What a user watches during a run: a live panel on a terminal, plain lines elsewhere."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from enum import StrEnum

from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from batchmap.models import JobState
from batchmap.runner import Runner

RATE_WINDOW = 30.0  # seconds of history behind the displayed rate


class Mode(StrEnum):
    """How progress is shown."""

    LIVE = "live"  # a terminal: a panel redrawn in place
    PLAIN = "plain"  # a pipe, a log file, CI: one line at a steady interval
    QUIET = "quiet"


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Counts and pace at one instant of a run."""

    counts: dict[JobState, int]
    total: int
    rate: float  # finished rows per second, recently
    pacer_rate: float | None
    eta: float | None  # seconds
    pause: str | None
    retries: int
    rate_limited: int
    last_error: str | None

    @property
    def finished(self) -> int:
        """Rows in a final state."""
        return sum(
            self.counts[state] for state in (JobState.DONE, JobState.NO_HEATMAP, JobState.FAILED)
        )


class ProgressView:
    """Called by the run's ticker; keeps a short history to derive the rate and the ETA."""

    def __init__(self, mode: Mode, *, console: Console | None = None, every: float = 10.0) -> None:
        self.mode = mode
        self.console = console or Console(stderr=True)
        self.every = every
        self._history: deque[tuple[float, int]] = deque()
        self._last_line = 0.0
        self._live: Live | None = None

    def __call__(self, runner: Runner, base: dict[JobState, int]) -> None:
        if self.mode is Mode.QUIET:
            return
        snap = snapshot(runner, base, self._history)
        if self.mode is Mode.PLAIN:
            now = time.monotonic()
            if now - self._last_line >= self.every:
                self._last_line = now
                self.console.print(plain_line(snap), highlight=False, soft_wrap=True)
            return
        if self._live is None:
            self._live = Live(console=self.console, refresh_per_second=4, transient=True)
            self._live.start()
        self._live.update(panel(snap))

    def close(self) -> None:
        """Take the live panel down before the summary is printed."""
        if self._live is not None:
            self._live.stop()
            self._live = None


def snapshot(
    runner: Runner, base: dict[JobState, int], history: deque[tuple[float, int]]
) -> Snapshot:
    """Combine the table's counts at start with what this run did since."""
    finished = runner.tally.finished
    counts = dict(base)
    for state in (JobState.DONE, JobState.NO_HEATMAP, JobState.FAILED):
        counts[state] += finished[state]
    counts[JobState.PENDING] = (
        base[JobState.PENDING] + base[JobState.RUNNING] - sum(finished.values())
    )
    counts[JobState.RUNNING] = 0
    now = runner.clock()
    history.append((now, sum(finished.values())))
    while len(history) > 2 and history[0][0] < now - RATE_WINDOW:
        history.popleft()
    span = history[-1][0] - history[0][0]
    rate = (history[-1][1] - history[0][1]) / span if span > 0 else 0.0
    view = runner.pacer.view()
    # The ETA trusts the pacer: at the API's ceiling the pacer's rate is the real throughput.
    known = [r for r in (rate, view.rate) if r]
    pace = min(known) if known else None
    remaining = counts[JobState.PENDING]
    pause = None
    if view.paused_until > now:
        pause = f"paused {view.paused_until - now:.0f}s: {view.pause_reason}"
    return Snapshot(
        counts=counts,
        total=sum(base.values()),
        rate=rate,
        pacer_rate=view.rate,
        eta=remaining / pace if pace else None,
        pause=pause,
        retries=runner.tally.retries,
        rate_limited=runner.tally.rate_limited,
        last_error=runner.tally.last_error,
    )


def duration(seconds: float | None) -> str:
    """12s, 4m05s, 3h20m, 11d14h."""
    if seconds is None:
        return "?"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def _counts_text(snap: Snapshot) -> str:
    c = snap.counts
    return (
        f"done {c[JobState.DONE]} · no_heatmap {c[JobState.NO_HEATMAP]} · "
        f"failed {c[JobState.FAILED]} · pending {c[JobState.PENDING]}"
    )


def _pace_text(snap: Snapshot) -> str:
    pacer = f"{snap.pacer_rate:.2f}/s" if snap.pacer_rate else "unpaced"
    return (
        f"rate {snap.rate:.2f}/s (pacer {pacer}) · ETA {duration(snap.eta)} · "
        f"retries {snap.retries} · 429s {snap.rate_limited}"
    )


def plain_line(snap: Snapshot) -> str:
    """One line for logs: counts, pace, ETA and any pause."""
    line = f"progress {snap.finished}/{snap.total}: {_counts_text(snap)} · {_pace_text(snap)}"
    return line + (f" · {snap.pause}" if snap.pause else "")


def panel(snap: Snapshot) -> Group:
    """The live view: a bar, the counts, the pace, and why the pool waits if it does."""
    share = 100 * snap.finished / snap.total if snap.total else 100.0
    top = Table.grid(padding=(0, 1))
    top.add_row(
        Text("batchmap", style="bold"),
        ProgressBar(total=max(snap.total, 1), completed=snap.finished, width=40),
        Text(f"{snap.finished}/{snap.total} ({share:.1f}%)"),
    )
    lines: list[Table | Text] = [top, Text(_counts_text(snap)), Text(_pace_text(snap))]
    if snap.pause:
        lines.append(Text(snap.pause, style="yellow"))
    if snap.last_error:
        lines.append(Text(f"last error: {snap.last_error}", style="dim"))
    return Group(*lines)
