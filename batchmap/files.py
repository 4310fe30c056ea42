"""Identifier -> safe file name, atomic durable writes, and clean-up of partial files.

Crash safety rests on one ordering: the PNG is written to `.partial/` (`stage`), fsynced,
renamed to its final name and the directory fsynced (`publish`), and only then is the row
recorded `done`. A crash leaves either nothing under the final name or the complete file.
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


def stage(path: Path, data: bytes, *, out: Path) -> Saved:
    """Write `data` under `.partial/`, to appear at `path` once `publish` has run."""
    partial = _partial_path(path, out=out)
    partial.parent.mkdir(parents=True, exist_ok=True)
    with open(partial, "wb") as handle:
        handle.write(data)
    return Saved(path=str(path), bytes=len(data), sha256=hashlib.sha256(data).hexdigest())


def publish(paths: Iterable[Path], *, out: Path) -> None:
    """Move staged files to their final names, durably: data first, then names.

    Every file is fsynced before it is renamed, so even a power cut cannot leave a partial
    file under a final name; the directories are fsynced last, so the names survive too.
    One call for many files lets their fsyncs share the file system's journal commits.
    """
    targets = list(paths)
    for path in targets:
        fd = os.open(_partial_path(path, out=out), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    directories = {path.parent for path in targets}
    for directory in directories:
        directory.mkdir(parents=True, exist_ok=True)
    for path in targets:
        os.replace(_partial_path(path, out=out), path)
    for directory in directories:
        _fsync_dir(directory)


def _partial_path(path: Path, *, out: Path) -> Path:
    return out / PARTIAL_DIR / f"{path.name}.{os.getpid()}"


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


def _fsync_dir(directory: Path) -> None:
    # The rename is durable only once the directory entry is on disk.
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
