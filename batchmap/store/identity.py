"""Whether a file is a job database: judged by reading only, before anything is written.

A file is recognised as batchmap's before anything is written to it (`inspect_file`): any other
file is refused without changing a byte, and a damaged one is called damaged, never foreign.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import tempfile
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from urllib.parse import quote

from batchmap.errors import BatchmapError, InputError, StorageError
from batchmap.store.schema import (
    APPLICATION_ID,
    KEPT_JOB_COLUMNS,
    SCHEMA_VERSION,
    V1_COLUMNS,
    V2_COLUMNS,
)
from batchmap.store.sqlite_errors import damaged_error, one_line, storage_error

_SQLITE_MAGIC = b"SQLite format 3\x00"


class Kind(Enum):
    """What a database file holds, judged before anything is written to it."""

    NEW = "new"  # no file, an empty file, or an SQLite database without any table
    V1 = "v1"  # the released schema
    V2 = "v2"  # this schema, possibly without its header stamps (a `.dump` copy)
    CURRENT = "current"  # V2 with its stamps: nothing to write
    NEWER = "newer"  # a later batchmap's
    FOREIGN = "foreign"  # anything else


@dataclass(frozen=True, slots=True)
class Inspection:
    """The verdict on a file, and why."""

    kind: Kind
    detail: str = ""


def classify(conn: sqlite3.Connection) -> Inspection:
    """Judge an open database by its header stamps and its tables, reading only."""
    user_version = conn.execute("PRAGMA user_version").fetchone()[0]
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    tables = {
        name
        for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' "
            "ESCAPE '\\'"
        )
    }
    if not tables:
        # Nothing to protect, unless the file says it is another program's (stamps, views).
        (objects,) = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        if objects or app_id not in (0, APPLICATION_ID) or user_version not in (0, SCHEMA_VERSION):
            return Inspection(Kind.FOREIGN, "an SQLite database of another program")
        return Inspection(Kind.NEW)
    if "jobs" not in tables:
        return Inspection(Kind.FOREIGN, _tables_detail(tables))
    columns = tuple(row[1] for row in conn.execute("PRAGMA table_info(jobs)"))
    meta_version = _meta_schema_version(conn) if "meta" in tables else None
    claims_ours = (
        app_id == APPLICATION_ID or user_version == SCHEMA_VERSION or meta_version is not None
    )
    newest = max(user_version if app_id == APPLICATION_ID else 0, meta_version or 0)
    if claims_ours and newest > SCHEMA_VERSION:
        return Inspection(Kind.NEWER, f"schema version {newest}")
    if claims_ours and set(V2_COLUMNS) <= set(columns):
        stamped = app_id == APPLICATION_ID and user_version == SCHEMA_VERSION
        stamped = stamped and {"meta", "runs", "timeline"} <= tables
        stamped = stamped and {name for name, _ in KEPT_JOB_COLUMNS} <= set(columns)
        return Inspection(Kind.CURRENT if stamped else Kind.V2)
    if (
        app_id == 0
        and user_version == 0
        and meta_version is None
        and columns == V1_COLUMNS
        and tables <= {"jobs", "meta"}
        and ("meta" not in tables or columns_of(conn, "meta") == ("key", "value"))
    ):
        return Inspection(Kind.V1)
    return Inspection(Kind.FOREIGN, _tables_detail(tables))


def _tables_detail(tables: set[str]) -> str:
    names = sorted(tables)
    shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
    return f"an SQLite database with tables {shown}"


def columns_of(conn: sqlite3.Connection, table: str) -> tuple[str, ...]:
    """A table's column names, in order (none for a table that does not exist)."""
    return tuple(row[1] for row in conn.execute(f"PRAGMA table_info({table})"))


def _meta_schema_version(conn: sqlite3.Connection) -> int | None:
    if columns_of(conn, "meta") != ("key", "value"):
        return None
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    try:
        value = json.loads(row[0]) if row else None
    except (TypeError, ValueError):
        return None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def lacks_only_kept(conn: sqlite3.Connection) -> bool:
    """A stamped v2 file without the columns added in place since (`KEPT_JOB_COLUMNS`)."""
    if classify(conn).kind is not Kind.V2:
        return False
    stamped = conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    stamped = stamped and conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    return stamped and {"meta", "runs", "timeline"} <= tables


def read_only_uri(path: Path, *, immutable: bool) -> str:
    """The URI that opens `path` read-only; `immutable` also skips its lock and its log."""
    uri = "file:" + quote(str(path.absolute())) + "?mode=ro"
    return uri + "&immutable=1" if immutable else uri


def inspect_file(path: Path) -> Inspection:
    """Judge a file without changing a byte of it or creating any file beside it.

    `immutable=1` reads the main file only: no lock, no -wal/-shm (plain `mode=ro` creates
    both beside a WAL database and leaves them behind). Only when a write-ahead log already
    exists (a database in use, or a job killed before its first checkpoint) and that view is
    not clearly ours is the log read too: on a copy of both files in a temporary directory,
    since even a read-only connection rewrites (or creates) the -shm beside the original.
    """
    try:
        if path.is_dir():
            raise InputError(f"{path}: is a directory, not a job database")
        with open(path, "rb") as handle:
            header = handle.read(100)
    except FileNotFoundError:
        return Inspection(Kind.NEW)
    except OSError as error:
        raise StorageError(f"{path}: cannot read the job database ({error.strerror})") from error
    if not header:
        return Inspection(Kind.NEW)
    ours_by_header = len(header) >= 72 and int.from_bytes(header[68:72], "big") == APPLICATION_ID
    if not header.startswith(_SQLITE_MAGIC):
        if ours_by_header or Path(f"{path}.lock").exists():
            # batchmap has run on this file (its lock file is beside it): damaged, not foreign.
            raise damaged_error(path, "its header is not SQLite's")
        raise InputError(
            f"{path}: not a batchmap job database (not an SQLite file); batchmap left it "
            "unchanged: give another --db"
        )
    # A log beside the file means a live or killed writer: the main file alone may be stale, or
    # torn by a checkpoint under way. Anything but "ours" is then judged again, under a lock.
    in_use = Path(f"{path}-wal").exists()
    try:
        inspection = _inspect_with(path, immutable=True)
    except StorageError:
        if not in_use:
            raise
        return _inspect_copy(path, fallback=None)
    if in_use and inspection.kind in (Kind.NEW, Kind.FOREIGN):
        return _inspect_copy(path, fallback=inspection)
    return inspection


COPY_LIMIT = 256 * 1024 * 1024  # bytes of a database and its log copied aside to inspect them


def _inspect_copy(path: Path, *, fallback: Inspection | None) -> Inspection:
    """Judge a database with its write-ahead log applied, on a copy: nothing beside it changes.

    Too large to copy, or unreadable as a copy (a writer changed it meanwhile): the view
    without the log (`fallback`), saying so; a main file that looks empty is then refused,
    since its log may hold anything.
    """
    wal = Path(f"{path}-wal")
    try:
        size = path.stat().st_size + wal.stat().st_size
        if size <= COPY_LIMIT:
            with tempfile.TemporaryDirectory(prefix="batchmap-inspect-") as folder:
                copy = Path(folder) / "copy.db"
                shutil.copyfile(path, copy)
                shutil.copyfile(wal, f"{copy}-wal")
                return _inspect_with(copy, immutable=False, shown=path)
    except (OSError, BatchmapError):
        pass
    unread = "its write-ahead log was not read"
    if fallback is None or fallback.kind is Kind.NEW:
        return Inspection(Kind.FOREIGN, f"an SQLite database whose tables are in its log; {unread}")
    return Inspection(fallback.kind, f"{fallback.detail} ({unread})")


def check_database(path: Path) -> None:
    """Refuse another program's file (or a newer batchmap's) without writing anything."""
    inspection = inspect_file(path)
    if inspection.kind in (Kind.FOREIGN, Kind.NEWER):
        raise refusal(path, inspection)


def _inspect_with(path: Path, *, immutable: bool, shown: Path | None = None) -> Inspection:
    shown = shown or path  # the user's file, when `path` is a copy of it
    try:
        conn = sqlite3.connect(read_only_uri(path, immutable=immutable), uri=True)
    except sqlite3.Error as error:
        raise storage_error(shown, error) from error
    try:
        return classify(conn)
    except sqlite3.Error as error:
        code = getattr(error, "sqlite_errorcode", 0) & 0xFF
        if code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
            raise damaged_error(shown, one_line(error)) from error
        raise storage_error(shown, error) from error
    finally:
        conn.close()


def refusal(path: Path, inspection: Inspection) -> InputError:
    """The one line refusing a file that is another program's, or a newer batchmap's."""
    if inspection.kind is Kind.NEWER:
        return InputError(
            f"{path}: made by a newer batchmap ({inspection.detail}); upgrade batchmap to use it"
        )
    return InputError(
        f"{path}: not a batchmap job database ({inspection.detail}); batchmap left it "
        "unchanged: give another --db"
    )
