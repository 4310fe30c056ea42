"""Identifier -> safe file name, atomic durable writes, and clean-up of partial files.

Crash safety rests on one ordering: the PNG is written to `.partial/`, fsynced, renamed to
its final name and the directory fsynced (`sync_dirs`), and only then is the row recorded
`done`. A crash leaves either nothing under the final name or the complete file.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from collections.abc import Iterable
from enum import StrEnum
from pathlib import Path

from batchmap.models import Saved

PARTIAL_DIR = ".partial"

# A lowercase name of these characters is its own file name. Every other identifier gets a
# readable prefix plus a hash; the `~` that only hashed names contain keeps the two kinds apart,
# and lowercase-only names stay distinct on case-insensitive file systems.
_PLAIN = re.compile(r"[a-z0-9_-][a-z0-9_.-]{0,199}")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_WINDOWS_RESERVED = re.compile(r"(con|prn|aux|nul|com\d|lpt\d)(\..*)?")


class Layout(StrEnum):
    """How heatmaps are spread over directories."""

    SHARDED = "sharded"  # out/ab/<name>.png: 256 directories, a few thousand files each at 1M
    FLAT = "flat"  # out/<name>.png


def file_name(identifier: str) -> str:
    """A deterministic file name for an identifier: no separators, at most 241 bytes."""
    if _PLAIN.fullmatch(identifier) and not _WINDOWS_RESERVED.fullmatch(identifier):
        return identifier + ".png"
    digest = hashlib.sha256(identifier.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    prefix = _UNSAFE.sub("_", identifier)[:60].strip("._")
    return f"{prefix}~{digest}.png"


def heatmap_path(out: Path, identifier: str, *, layout: Layout) -> Path:
    """Where the heatmap of `identifier` lives under `out`; never outside it."""
    name = file_name(identifier)
    if layout is Layout.FLAT:
        return out / name
    shard = hashlib.sha256(identifier.encode("utf-8", "surrogatepass")).hexdigest()[:2]
    return out / shard / name


def write_atomic(path: Path, data: bytes, *, out: Path) -> Saved:
    """Write `data` to `path` so that the final name only ever holds the complete file.

    The data is durable on return; the new name is once `sync_dirs` has run on its directory,
    which the caller does (for many files at once) before recording them.
    """
    partial_dir = out / PARTIAL_DIR
    partial_dir.mkdir(parents=True, exist_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_dir / f"{path.name}.{os.getpid()}"
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    return Saved(path=str(path), bytes=len(data), sha256=hashlib.sha256(data).hexdigest())


def remove_partials(out: Path) -> int:
    """Delete what a killed process left half-written; call only while holding the job lock."""
    partial_dir = out / PARTIAL_DIR
    if not partial_dir.is_dir():
        return 0
    count = sum(1 for _ in partial_dir.iterdir())
    shutil.rmtree(partial_dir)
    return count


def remove_file(path: Path) -> None:
    """Remove, durably, a file that no finished row accounts for; a missing file is fine."""
    try:
        path.unlink()
    except FileNotFoundError:
        return
    _fsync_dir(path.parent)


def sync_dirs(directories: Iterable[Path]) -> None:
    """Make the renames into these directories durable."""
    for directory in directories:
        _fsync_dir(directory)


def _fsync_dir(directory: Path) -> None:
    # The rename is durable only once the directory entry is on disk.
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
