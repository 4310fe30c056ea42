"""What a user watches during a run: a live panel on a terminal, plain lines elsewhere."""

from __future__ import annotations

import json
import math
import time
from enum import StrEnum

from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from batchmap.config import PROGRESS_EVERY
from batchmap.session import Progress
from batchmap.timeline import human_seconds, iso


class Mode(StrEnum):
    """How progress is shown."""

    LIVE = "live"  # a terminal: a panel redrawn in place
    PLAIN = "plain"  # a pipe, a log file, CI: one line at a steady interval, with its time
    JSON = "json"  # `--log-format json`: one JSON object a line, at the same interval
    QUIET = "quiet"


class ProgressView:
    """Shows each Progress of a run: a live panel, a plain line now and then, or nothing."""

    def __init__(
        self, mode: Mode, *, console: Console | None = None, every: float = PROGRESS_EVERY
    ) -> None:
        self.mode = mode
        self.console = console or Console(stderr=True)
        self.every = every
        self._last_line = -math.inf
        self._live: Live | None = None
        self._last: Progress | None = None

    def __call__(self, progress: Progress) -> None:
        self._last = progress
        if self.mode is Mode.QUIET:
            return
        if self.mode in (Mode.PLAIN, Mode.JSON):
            now = time.monotonic()
            if now - self._last_line >= self.every:
                self._last_line = now
                self._line(progress)
            return
        if self._live is None:
            self._live = Live(console=self.console, refresh_per_second=4, transient=True)
            self._live.start()
        self._live.update(panel(progress))

    def _line(self, progress: Progress) -> None:
        if self.mode is Mode.JSON:
            self.console.file.write(json_line(progress) + "\n")
            self.console.file.flush()
        else:
            self.console.print(f"{iso()} {plain_line(progress)}", highlight=False, soft_wrap=True)

    def stopping(self, *, force: bool) -> None:
        """Say at once what a Ctrl-C does, before the slow requests in flight end."""
        if force:
            message = "stopping now: abandoning the requests in flight"
        else:
            in_flight = self._last.in_flight if self._last else 0
            message = (
                f"stopping: {in_flight} request{'' if in_flight == 1 else 's'} in flight, "
                "Ctrl-C again to abandon them"
            )
        if self._live is not None:
            self._live.console.print(message, style="yellow", highlight=False)
        elif self.mode is Mode.JSON:
            record = {
                "time": iso(),
                "level": "warning",
                "event": "stopping",
                "message": message,
            }
            self.console.file.write(json.dumps(record) + "\n")
            self.console.file.flush()
        else:
            self.console.print(message, highlight=False)

    def close(self) -> None:
        """Take the live panel down before the summary is printed."""
        if self._live is not None:
            self._live.stop()
            self._live = None


def json_line(snap: Progress, *, event: str = "progress") -> str:
    """One JSON object: time, level, event and the run's counts."""
    return json.dumps(
        {
            "time": iso(),
            "level": "info",
            "event": event,
            "finished": snap.finished,
            "total": snap.total,
            "done": snap.done,
            "no_heatmap": snap.no_heatmap,
            "failed": snap.failed,
            "pending": snap.pending,
            "rate": round(snap.rate, 3),
            "eta_seconds": None if snap.eta is None else round(snap.eta),
            "requests": snap.requests,
            "retries": snap.retries,
            "rate_limited": snap.rate_limited,
            "pause": snap.pause,
        },
        allow_nan=False,
    )


def _counts_text(snap: Progress) -> str:
    return (
        f"done {snap.done} · no_heatmap {snap.no_heatmap} · "
        f"failed {snap.failed} · pending {snap.pending}"
    )


def _pace_text(snap: Progress) -> str:
    pacer = f"{snap.pacer_rate:.2f}/s" if snap.pacer_rate else "unpaced"
    return (
        f"rate {snap.rate:.2f}/s (pacer {pacer}) · ETA {human_seconds(snap.eta)} · "
        f"retries {snap.retries} · 429s {snap.rate_limited}"
    )


def plain_line(snap: Progress) -> str:
    """One line for logs: counts, pace, ETA and any pause."""
    line = f"progress {snap.finished}/{snap.total}: {_counts_text(snap)} · {_pace_text(snap)}"
    return line + (f" · {snap.pause}" if snap.pause else "")


def panel(snap: Progress) -> Group:
    """The live view: a bar, the counts, the pace, and why the pool waits if it does."""
    share = 100 * snap.finished / snap.total if snap.total else 100.0
    top = Table.grid(padding=(0, 1))
    top.add_row(
        Text("batchmap", style="bold"),
        ProgressBar(total=max(snap.total, 1), completed=snap.finished, width=40),
        Text(f"{snap.finished}/{snap.total} ({share:.1f}%)"),
    )
    lines: list[Table | Text] = [top, Text(_counts_text(snap)), Text(_pace_text(snap))]
    if snap.stopping:
        lines.append(Text(f"stopping: {snap.in_flight} in flight", style="yellow"))
    elif snap.pause:
        lines.append(Text(snap.pause, style="yellow"))
    if snap.last_error:
        lines.append(Text(f"last error: {snap.last_error}", style="dim"))
    return Group(*lines)
