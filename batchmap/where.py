"""Which server, folder and database a run uses, said at its start; checks before any file.

"A refused run changes nothing": a missing job database or CSV is refused here, before the
job lock (and its lock file) or an empty database could appear.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from batchmap.errors import InputError
from batchmap.ids import IdSource
from batchmap.report import learned_limits
from batchmap.store import Store

log = logging.getLogger("batchmap")

# identifAI's documented limits: 2 requests a second and 60 a minute, per key.
DOCUMENTED_LIMITS = ({"limit": 2, "window_seconds": 1.0}, {"limit": 60, "window_seconds": 60.0})


def check_sources(db: Path, load: Path | None) -> None:
    """Refuse a missing job (nothing to resume) or an unreadable CSV before anything is made."""
    if load is None:
        if not db.exists():
            raise InputError(f"{db}: no such job database (run `batchmap load` or `run` first)")
        return
    with IdSource(load)._open():  # the reader's own one-line errors, before the lock
        pass


def limits_text(limits: list[dict[str, Any]]) -> str:
    """`2 per 1 s, 60 per 60 s (about 1.00/s)`."""
    parts = [f"{item['limit']} per {item['window_seconds']:g} s" for item in limits]
    return f"{', '.join(parts)} (about {steady_rate(limits):.2f}/s)"


def steady_rate(limits: list[dict[str, Any]]) -> float:
    """The sustained request rate a set of fixed windows allows: the tightest of them."""
    return float(min(item["limit"] / item["window_seconds"] for item in limits))


def remembered_limits(store: Store) -> list[dict[str, Any]]:
    """The rate limits earlier runs of this job learned (empty: still to learn)."""
    pacer = store.get_meta("pacer")
    return learned_limits(pacer.get("windows")) if isinstance(pacer, dict) else []


def where_lines(
    *, base_url: str, out: Path | str | None, db: Path, limits: list[dict[str, Any]]
) -> list[str]:
    """What a run or `status` says about where it works."""
    pace = (
        f"rate limits remembered: {limits_text(limits)}"
        if limits
        else "rate limits still to learn (identifAI documents 2/s and 60/min, about 1/s)"
    )
    return [
        f"server {base_url} · heatmaps in {out or '(not chosen yet)'} · job {db.absolute()}",
        pace,
    ]


def say_where(store: Store, base_url: str, out: Path, db: Path) -> None:
    """Log, at the start of a run, which server, folder and database it uses."""
    for line in where_lines(base_url=base_url, out=out, db=db, limits=remembered_limits(store)):
        log.info("%s", line, extra={"event": "where"})
