"""SQLite failures as one-line errors that name the file and tell the trouble apart.

Every Store method is wrapped (`guarded`, `guarded_iter`), so no `sqlite3.Error` leaves the
package: a full disk, a read-only file, damage and a lock each get their own sentence and exit
code, and a damaged database is never called "not a job database" (which invites deleting it).
"""

from __future__ import annotations

import functools
import os
import shlex
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Concatenate, ParamSpec, Protocol, TypeVar

from batchmap.errors import BatchmapError, LockedError, StorageError

BUSY_TIMEOUT = 30.0  # seconds another writer may hold the database before we give up

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


class OnFile(Protocol):
    """What a guarded method's object has: the database file its errors name."""

    path: Path


S = TypeVar("S", bound=OnFile)


def one_line(error: BaseException) -> str:
    """An error's text on one line."""
    return " ".join(str(error).split())


def recovery_hint(path: Path) -> str:
    """How to save the rows of a damaged database into a new file (no refetching)."""
    fixed = path.with_name(f"{path.stem}-recovered{path.suffix or '.db'}")
    source, target = shlex.quote(str(path)), shlex.quote(str(fixed))
    return (
        f"recover its rows with `sqlite3 {source} .recover | sqlite3 {target}` "
        f"(or `.dump` where .recover is missing), then use --db {target}"
    )


def damaged_error(path: Path, detail: str) -> StorageError:
    """A damaged job database: never 'not a job database', which would invite deleting it."""
    return StorageError(
        f"{path}: the job database is damaged ({detail}); batchmap changed nothing. "
        + recovery_hint(path)
    )


def storage_error(path: Path, error: sqlite3.Error) -> BatchmapError:
    """One line naming the file, with the exit code that tells the trouble apart."""
    detail = one_line(error)
    code = getattr(error, "sqlite_errorcode", 0) & 0xFF  # the primary code of an extended one
    if code == sqlite3.SQLITE_FULL or (code == sqlite3.SQLITE_IOERR and _disk_full(path)):
        return StorageError(f"{path}: disk full ({detail}); free some space, then resume")
    if code == sqlite3.SQLITE_READONLY:
        return StorageError(
            f"{path}: the job database is read-only ({detail}); make it and its directory "
            "writable, or copy it somewhere writable and use --db"
        )
    if code == sqlite3.SQLITE_IOERR:
        return StorageError(f"{path}: disk I/O error ({detail}); check the disk, then resume")
    if code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
        return damaged_error(path, detail)
    if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return LockedError(
            f"{path}: another process kept the job database locked for {BUSY_TIMEOUT:.0f} s "
            f"({detail}); close it (a sqlite3 shell, datasette) and try again"
        )
    if code == sqlite3.SQLITE_CANTOPEN:
        return StorageError(f"{path}: cannot open the job database ({detail})")
    return StorageError(f"{path}: job database error ({detail})")


def _disk_full(path: Path) -> bool:
    """Whether the file system holding `path` has no block left (an I/O error's likely cause)."""
    try:
        return os.statvfs(path.absolute().parent).f_bavail == 0
    except OSError:
        return False


def guarded(method: Callable[Concatenate[S, P], R]) -> Callable[Concatenate[S, P], R]:
    """Turn any SQLite error of a Store method into a one-line error naming the file."""

    @functools.wraps(method)
    def wrapper(self: S, /, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as error:
            raise storage_error(self.path, error) from error

    return wrapper


def guarded_iter(
    method: Callable[Concatenate[S, P], Iterator[T]],
) -> Callable[Concatenate[S, P], Iterator[T]]:
    """`guarded` for generators: errors surface while the caller iterates."""

    @functools.wraps(method)
    def wrapper(self: S, /, *args: P.args, **kwargs: P.kwargs) -> Iterator[T]:
        try:
            yield from method(self, *args, **kwargs)
        except sqlite3.Error as error:
            raise storage_error(self.path, error) from error

    return wrapper
