"""Check the heatmaps on disk against the job table: missing, changed and stray files.

Every `done` row's file is read in full (streamed, in a thread pool, a bounded number at a
time) and compared with its recorded size and sha256. Under `out`, a *stray* file is one that
`heatmap_path` could have written for the job's layout but that no `done` row records; a
*partial* is anything left in `out/.partial`. Files of any other shape (a README, the job
database kept beside the heatmaps, another tool's output) are counted as `unrelated` and never
touched. `repair` returns exactly the missing and changed rows to `pending`, removes the changed
files at batchmap's own path for them, and drops the partials; stray complete files are only
reported, since they may be another job's sharing the directory.
"""

from __future__ import annotations

import hashlib
import os
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from batchmap.files import (
    PARTIAL_DIR,
    Layout,
    heatmap_path,
    looks_like_heatmap,
    remove_file,
    remove_partials,
)
from batchmap.models import JobState
from batchmap.store import Store

CHUNK = 1 << 20  # bytes read at a time per worker
EXAMPLES = 10  # paths kept per kind of problem
PROGRESS_EVERY = 256  # files between progress callbacks (and always the last one)

Progress = Callable[[int, int], None]


class FileCheck(StrEnum):
    """What one done row's file turned out to be."""

    OK = "ok"
    MISSING = "missing"
    CHANGED = "changed"  # another size or sha256, not a regular file, or unreadable


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """What `verify` found under `out` and, with repair, what it did."""

    checked: int  # done rows whose file was checked
    ok: int
    missing: int
    changed: int
    stray: int  # heatmap-shaped files no done row records (never deleted)
    partials: int  # files left in out/.partial
    unrelated: int  # other files under out (never touched)
    returned_to_pending: int = 0  # rows repair sent back to be fetched again
    partials_removed: int = 0
    changed_removed: int = 0  # changed files repair deleted from batchmap's own paths
    missing_examples: tuple[str, ...] = ()
    changed_examples: tuple[str, ...] = ()
    stray_examples: tuple[str, ...] = ()

    @property
    def problems(self) -> int:
        """Missing, changed and stray files and partials found (before any repair)."""
        return self.missing + self.changed + self.stray + self.partials

    @property
    def repaired(self) -> bool:
        """After a repair: every missing or changed row is pending again, every partial gone.

        Stray files are not the job's: listed, never touched, and no reason to fail a repair.
        """
        return (
            self.returned_to_pending >= self.missing + self.changed
            and self.partials_removed >= self.partials
        )

    @property
    def clean(self) -> bool:
        """Whether every done row has its exact file and nothing else of ours lies around."""
        return self.problems == 0


def check_file(path: str | None, *, size: int | None, sha256: str | None) -> FileCheck:
    """Compare one file with its recorded size and sha256, reading it in chunks."""
    if not path:
        return FileCheck.MISSING
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            if os.fstat(handle.fileno()).st_size != size:
                return FileCheck.CHANGED
            while chunk := handle.read(CHUNK):
                digest.update(chunk)
    except FileNotFoundError:
        return FileCheck.MISSING
    except OSError:  # a directory, a permission, a bad sector: not the file we recorded
        return FileCheck.CHANGED
    return FileCheck.OK if digest.hexdigest() == sha256 else FileCheck.CHANGED


def verify(
    store: Store,
    *,
    out: Path,
    layout: Layout,
    repair: bool = False,
    workers: int = 4,
    on_progress: Progress | None = None,
) -> VerifyReport:
    """Check every `done` row's file and look for stray files; optionally repair.

    With `repair`, hold the job lock: a running job's partials and just-published files would
    look stray to anyone else.
    """
    out = out.absolute()
    total = store.counts()[JobState.DONE]
    found: dict[FileCheck, list[tuple[int, str, str]]] = {kind: [] for kind in FileCheck}
    bad_rowids: list[int] = []
    checked = 0
    for (rowid, identifier, path), result in _checked(store, workers=workers):
        checked += 1
        if result is not FileCheck.OK:
            bad_rowids.append(rowid)
            if len(found[result]) < EXAMPLES or result is FileCheck.CHANGED:
                found[result].append((rowid, identifier, path))
        if on_progress is not None and (checked % PROGRESS_EVERY == 0 or checked == total):
            on_progress(checked, total)
    if on_progress is not None and checked != total:
        on_progress(checked, max(total, checked))
    counts = {kind: 0 for kind in FileCheck}
    # bad_rowids and found[CHANGED] hold only failures: bounded by the damage, not the job.
    counts[FileCheck.MISSING] = len(bad_rowids) - len(found[FileCheck.CHANGED])
    counts[FileCheck.CHANGED] = len(found[FileCheck.CHANGED])
    counts[FileCheck.OK] = checked - len(bad_rowids)

    walk = _Walk(out, layout=layout)
    stray: list[str] = []
    stray_count = 0
    for path in store.untracked_paths(walk.heatmaps()):
        stray_count += 1
        if len(stray) < EXAMPLES:
            stray.append(path)

    returned = partials_removed = changed_removed = 0
    if repair:
        returned = store.return_to_pending(bad_rowids)
        for _, identifier, path in found[FileCheck.CHANGED]:
            # Only a file at batchmap's own path for that identifier: never anything else.
            own = Path(path) == heatmap_path(out, identifier, layout=layout)
            if own and not Path(path).is_dir():
                remove_file(Path(path))
                changed_removed += 1
        partials_removed = remove_partials(out) if walk.partials else 0
    return VerifyReport(
        checked=checked,
        ok=counts[FileCheck.OK],
        missing=counts[FileCheck.MISSING],
        changed=counts[FileCheck.CHANGED],
        stray=stray_count,
        partials=walk.partials,
        unrelated=walk.unrelated,
        returned_to_pending=returned,
        partials_removed=partials_removed,
        changed_removed=changed_removed,
        missing_examples=tuple(path for _, _, path in found[FileCheck.MISSING][:EXAMPLES]),
        changed_examples=tuple(path for _, _, path in found[FileCheck.CHANGED][:EXAMPLES]),
        stray_examples=tuple(stray),
    )


def _checked(store: Store, *, workers: int) -> Iterator[tuple[tuple[int, str, str], FileCheck]]:
    """Each done row with its check, in table order; at most a few files in flight."""
    window: deque[tuple[tuple[int, str, str], Future[FileCheck]]] = deque()
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for rowid, identifier, path, size, sha256 in store.done_files():
            future = pool.submit(check_file, path, size=size, sha256=sha256)
            window.append(((rowid, identifier, path), future))
            if len(window) >= 4 * max(1, workers):
                row, oldest = window.popleft()
                yield row, oldest.result()
        while window:
            row, oldest = window.popleft()
            yield row, oldest.result()


class _Walk:
    """One pass over `out`: heatmap-shaped paths as a stream, the rest counted on the way."""

    def __init__(self, out: Path, *, layout: Layout) -> None:
        self.out = out
        self.layout = layout
        self.unrelated = 0
        partial_dir = out / PARTIAL_DIR
        self.partials = (
            sum(1 for path in partial_dir.rglob("*") if not path.is_dir())
            if partial_dir.is_dir()
            else 0
        )

    def heatmaps(self) -> Iterator[str]:
        for root, dirs, files in os.walk(self.out):
            here = Path(root)
            if here == self.out:
                dirs[:] = [name for name in dirs if name != PARTIAL_DIR]
            for name in files:
                path = here / name
                if looks_like_heatmap(path.relative_to(self.out), layout=self.layout):
                    yield str(path)
                else:
                    self.unrelated += 1
