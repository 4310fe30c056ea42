"""Identifier -> safe file name, atomic durable writes, and clean-up of partial files.

Crash safety rests on one ordering: the PNG is written to `.partial/` (`stage`), fsynced,
renamed to its final name and the directory fsynced (`publish`), and only then is the row
recorded `done`. A crash leaves either nothing under the final name or the complete file.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path, PurePath

from batchmap.errors import StorageError
from batchmap.models import Saved

PARTIAL_DIR = ".partial"

# A lowercase name of these characters is its own file name. Every other identifier gets a
# readable prefix plus a hash; the `~` that only hashed names contain keeps the two kinds apart,
# and lowercase-only names stay distinct on case-insensitive file systems.
_PLAIN = re.compile(r"[a-z0-9_-][a-z0-9_.-]{0,199}")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_WINDOWS_RESERVED = re.compile(r"(con|prn|aux|nul|com\d|lpt\d)(\..*)?")
_HASHED = re.compile(r"[A-Za-z0-9_.-]{0,60}~(?P<digest>[0-9a-f]{32})\.png")
_SHARD = re.compile(r"[0-9a-f]{2}")

# Local storage trouble, as opposed to a bug: a one-line StorageError (exit 5) naming the path.
STORAGE_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO, errno.EFBIG}
)


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


def looks_like_heatmap(relative: PurePath, *, layout: Layout) -> bool:
    """Whether a path relative to `out` is one `heatmap_path` could have produced.

    `verify` uses it to tell batchmap's files from anything else a user keeps under `out`.
    """
    parts = relative.parts
    if layout is Layout.FLAT:
        return len(parts) == 1 and _is_heatmap_name(parts[0], shard=None)
    return len(parts) == 2 and _is_heatmap_name(parts[1], shard=parts[0])


def _is_heatmap_name(name: str, *, shard: str | None) -> bool:
    if shard is not None and not _SHARD.fullmatch(shard):
        return False
    if hashed := _HASHED.fullmatch(name):
        # Both the name's digest and the shard are the identifier's sha256: they must agree.
        return not name.startswith(".") and (shard is None or hashed["digest"][:2] == shard)
    identifier = name.removesuffix(".png")
    if name == identifier or file_name(identifier) != name:
        return False
    return shard is None or hashlib.sha256(identifier.encode()).hexdigest()[:2] == shard


@contextmanager
def storage_errors(*, out: Path) -> Iterator[None]:
    """Turn a full, read-only or unwritable --out into a StorageError naming the path."""
    try:
        yield
    except OSError as error:
        if error.errno not in STORAGE_ERRNOS:
            raise
        where = error.filename or out
        raise StorageError(
            f"{where}: {error.strerror or error} (writing heatmaps under --out {out}); "
            "fix it, then resume"
        ) from error


def stage(path: Path, data: bytes, *, out: Path) -> Saved:
    """Write `data` under `.partial/`, to appear at `path` once `publish` has run."""
    partial = _partial_path(path, out=out)
    with storage_errors(out=out):
        partial.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(partial, "wb") as handle:
                handle.write(data)
        except OSError as error:
            partial.unlink(missing_ok=True)  # a half-written file only takes space
            if error.filename is None:  # write() and close() do not say which file
                error.filename = str(partial)
            raise
    return Saved(path=str(path), bytes=len(data), sha256=hashlib.sha256(data).hexdigest())


def publish(paths: Iterable[Path], *, out: Path) -> None:
    """Move staged files to their final names, durably: data first, then names.

    Every file is fsynced before it is renamed, so even a power cut cannot leave a partial
    file under a final name; the directories are fsynced last, so the names survive too.
    One call for many files lets their fsyncs share the file system's journal commits.
    """
    targets = list(paths)
    with storage_errors(out=out):
        for path in targets:
            _fsync_file(_partial_path(path, out=out))
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
    with storage_errors(out=out):
        count = sum(1 for _ in partial_dir.iterdir())
        shutil.rmtree(partial_dir)
    return count


def remove_file(path: Path) -> None:
    """Remove, durably, a file that no finished row accounts for; a missing file is fine."""
    with storage_errors(out=path.parent):
        try:
            path.unlink()
        except FileNotFoundError:
            return
        _fsync_dir(path.parent)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            os.fsync(fd)
        except OSError as error:  # fsync may be where a delayed ENOSPC or EIO shows
            error.filename = str(path)
            raise
    finally:
        os.close(fd)


def _fsync_dir(directory: Path) -> None:
    # The rename is durable only once the directory entry is on disk.
    _fsync_file(directory)
