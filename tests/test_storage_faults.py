"""Local storage trouble: foreign, damaged, full, read-only and failing files.

Each case must end as one line naming the file with its own exit code (2 for a file that is not
ours, 5 for storage trouble), never a traceback, and a file that is not ours must not change by
a single byte. Real faults where the kernel can give them (tmpfs, read-only bind mounts, which
need root and `mount`; skipped with a message otherwise), injected ones where it cannot.
"""

from __future__ import annotations

import errno
import hashlib
import os
import sqlite3
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from batchmap.errors import EXIT_STORAGE, EXIT_USAGE, InputError, StorageError
from batchmap.files import Layout, heatmap_path, publish, remove_file, stage
from batchmap.models import Claim, Classification, JobState, MinuteStats, Record, Saved
from batchmap.store import Store
from tests.conftest import Workspace

# --------------------------------------------------------------------------- helpers


def snapshot(directory: Path) -> dict[str, str]:
    """Every file in `directory` with the sha256 of its bytes."""
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.iterdir())
        if path.is_file()
    }


def _mount(*args: str) -> bool:
    try:
        done = subprocess.run(["mount", *args], capture_output=True, check=False, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def _umount(target: Path) -> None:
    subprocess.run(["umount", "-l", str(target)], capture_output=True, check=False, timeout=10)


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """Mount a tmpfs of the given size (e.g. '256k'); skipped where mounting is not allowed."""
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        target = tmp_path / f"tmpfs-{len(mounted)}"
        target.mkdir()
        if not _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(target)):
            pytest.skip("cannot mount a tmpfs here (needs root and mount): real ENOSPC untested")
        mounted.append(target)
        return target

    yield mount
    for target in mounted:
        _umount(target)


@pytest.fixture
def read_only_view(tmp_path: Path) -> Iterator[Callable[[Path], Path]]:
    """A read-only bind mount of a directory (root ignores file permissions, not mounts)."""
    mounted: list[Path] = []

    def mount(source: Path) -> Path:
        target = tmp_path / f"ro-{len(mounted)}"
        target.mkdir()
        if not _mount("--bind", str(source), str(target)):
            pytest.skip("cannot bind-mount here (needs root and mount): read-only untested")
        mounted.append(target)
        if not _mount("-o", "remount,ro,bind", str(target)):
            pytest.skip("cannot remount read-only here: read-only untested")
        return target

    yield mount
    for target in mounted:
        _umount(target)


def fill(directory: Path) -> None:
    """Take every free byte of the file system under `directory`."""
    with open(directory / "filler", "wb", buffering=0) as handle:
        try:
            while True:
                handle.write(b"\0" * 4096)
        except OSError as error:
            assert error.errno == errno.ENOSPC


def job_db(path: Path, *, ids: int = 3) -> Path:
    """A closed job database with `ids` pending rows and one done row."""
    with Store(path) as store:
        store.load_ids(f"id-{i:06d}" for i in range(ids))
        (job,) = store.claim(1)
        store.record([Record(job, JobState.DONE, 1, 200, saved=Saved("/o/a.png", 1, "00"))])
    return path


def foreign_wal_db(path: Path) -> Path:
    """Another program's database: its own `jobs` table, WAL mode, closed cleanly."""
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("CREATE TABLE jobs (id INTEGER PRIMARY KEY, command TEXT, state TEXT)")
    conn.executemany("INSERT INTO jobs (command, state) VALUES (?, 'queued')", [("a",), ("b",)])
    conn.commit()
    conn.close()
    return path


# --------------------------------------------------------------------------- foreign files


def _foreign_with_v1_jobs_and_more(path: Path) -> Path:
    # Exactly batchmap's released `jobs` table, next to a table that is not ours.
    from batchmap.store import SCHEMA_V1

    conn = sqlite3.connect(path)
    conn.executescript(SCHEMA_V1 + "CREATE TABLE invoices (n INTEGER);")
    conn.close()
    return path


def _foreign_rollback_db(path: Path) -> Path:
    conn = sqlite3.connect(path)
    conn.executescript("PRAGMA user_version = 2; CREATE TABLE notes (body TEXT);")
    conn.close()
    return path


def _not_sqlite(path: Path) -> Path:
    path.write_bytes(b"identifier\nabc\n" * 50)
    return path


def _foreign_without_tables(path: Path) -> Path:
    conn = sqlite3.connect(path)
    conn.executescript("PRAGMA application_id = 42; CREATE VIEW answer AS SELECT 42;")
    conn.close()
    return path


FOREIGN_FILES = {
    "no table but a view and another application id": _foreign_without_tables,
    "other program's jobs table, WAL": foreign_wal_db,
    "released jobs table beside another table": _foreign_with_v1_jobs_and_more,
    "other tables, user_version 2": _foreign_rollback_db,
    "not SQLite": _not_sqlite,
}


@pytest.mark.parametrize("create", [True, False], ids=["create", "open"])
@pytest.mark.parametrize("make", FOREIGN_FILES.values(), ids=FOREIGN_FILES.keys())
def test_a_file_that_is_not_ours_is_refused_without_changing_a_byte(
    tmp_path: Path, make: Callable[[Path], Path], create: bool
) -> None:
    path = make(tmp_path / "other.db")
    before = snapshot(tmp_path)
    with pytest.raises(InputError, match="not a batchmap job database") as caught:
        Store(path, create=create)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)
    assert snapshot(tmp_path) == before  # same bytes, and no -wal, -shm or -journal beside it


@pytest.mark.parametrize(
    "command",
    [
        ["status"],
        ["status", "--json"],
        ["load", "ids.csv"],
        ["report", "--format", "csv"],
        ["resume", "--base-url", "http://127.0.0.1:9"],
        ["run", "ids.csv", "--base-url", "http://127.0.0.1:9"],
    ],
    ids=lambda argv: argv[0] + ("-json" if "--json" in argv else ""),
)
def test_every_command_refuses_another_programs_database_with_exit_2_and_one_line(
    workspace: Workspace, command: list[str]
) -> None:
    foreign_wal_db(workspace.db)
    workspace.csv(["abc"])
    before = snapshot(workspace.root)
    result = workspace.cli(*command, "--db", workspace.db)
    assert result.code == EXIT_USAGE, result.output
    assert "Traceback" not in result.output
    (line,) = result.stderr.strip().splitlines()
    assert "not a batchmap job database" in line and str(workspace.db) in line
    after = snapshot(workspace.root)
    assert {k: v for k, v in after.items() if k.startswith("jobs.db")} == {
        k: v for k, v in before.items() if k.startswith("jobs.db")
    }


def test_another_programs_database_in_use_is_refused_without_touching_it(
    tmp_path: Path,
) -> None:
    path = foreign_wal_db(tmp_path / "other.db")
    owner = sqlite3.connect(path)  # its program has it open, with fresh rows only in its log
    owner.execute("PRAGMA wal_autocheckpoint = 0")
    with owner:
        owner.execute("INSERT INTO jobs (command, state) VALUES ('c', 'queued')")
    log = Path(f"{path}-wal")
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in (path, log)}
    try:
        for create in (True, False):
            with pytest.raises(InputError, match="not a batchmap job database"):
                Store(path, create=create)
        assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in (path, log)} == before
        assert owner.execute("SELECT count(*) FROM jobs").fetchone() == (3,)
    finally:
        owner.close()


def test_an_empty_file_or_an_empty_sqlite_database_becomes_a_job_database(
    tmp_path: Path,
) -> None:
    empty = tmp_path / "empty.db"
    empty.touch()
    blank = tmp_path / "blank.db"
    sqlite3.connect(blank).execute("VACUUM").connection.close()  # a valid file with no table
    for path in (empty, blank):
        with Store(path) as store:
            assert store.load_ids(["a"]) == (1, 1)
        with Store(path, create=False) as store:
            assert store.counts()[JobState.PENDING] == 1


def test_a_job_database_killed_before_its_first_checkpoint_is_still_ours(tmp_path: Path) -> None:
    # Its tables live only in the write-ahead log: the main file alone looks empty.
    db = tmp_path / "jobs.db"
    script = f"""
        import os, sys
        from pathlib import Path
        from batchmap.store import Store
        store = Store(Path({str(db)!r}))
        store.conn.execute("PRAGMA wal_autocheckpoint = 0")
        store.load_ids(["a", "b"])
        os._exit(9)
    """
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], check=False)
    assert done.returncode == 9
    assert Path(f"{db}-wal").stat().st_size > 0
    with Store(db, create=False) as store:
        assert store.counts()[JobState.PENDING] == 2


# --------------------------------------------------------------------------- damaged files


def damage_a_page_of_jobs(db: Path) -> int:
    """Overwrite a leaf page of the `jobs` table in the middle of the file; its page number."""
    conn = sqlite3.connect(db)
    try:
        pages: list[int] = [
            n
            for (n,) in conn.execute(
                "SELECT pageno FROM dbstat WHERE name = 'jobs' AND pagetype = 'leaf' "
                "ORDER BY pageno"
            )
        ]
        (page_size,) = conn.execute("PRAGMA page_size").fetchone()
    except sqlite3.OperationalError:
        pytest.skip("this SQLite has no dbstat table to find a page of jobs")
    finally:
        conn.close()
    page = pages[len(pages) // 2]
    with open(db, "r+b") as handle:
        handle.seek((page - 1) * page_size)
        handle.write(os.urandom(page_size))
    return page


@pytest.fixture
def damaged_db(tmp_path: Path) -> Path:
    db = job_db(tmp_path / "jobs.db", ids=20_000)
    assert not Path(f"{db}-wal").exists()  # closed: every page is in the main file
    damage_a_page_of_jobs(db)
    return db


def test_a_page_damaged_mid_file_is_found_by_the_integrity_check(damaged_db: Path) -> None:
    with Store(damaged_db, create=False) as store, pytest.raises(StorageError) as caught:
        store.check_integrity()
    message = str(caught.value)
    assert caught.value.exit_code == EXIT_STORAGE
    assert "damaged" in message and ".recover" in message and str(damaged_db) in message
    assert "not a batchmap" not in message and "\n" not in message


def test_reading_a_damaged_page_is_a_storage_error_naming_the_recovery(damaged_db: Path) -> None:
    with Store(damaged_db, create=False) as store, pytest.raises(StorageError, match="recover"):
        list(store.rows())


def test_status_on_a_damaged_database_exits_5_with_one_line(
    workspace: Workspace, damaged_db: Path
) -> None:
    result = workspace.cli("status", "--db", damaged_db)
    assert result.code == EXIT_STORAGE, result.output
    (line,) = result.stderr.strip().splitlines()
    assert ".recover" in line and "not a batchmap" not in line


def test_a_job_database_with_a_damaged_header_is_damaged_not_foreign(tmp_path: Path) -> None:
    db = job_db(tmp_path / "jobs.db")
    with open(db, "r+b") as handle:
        handle.write(b"\0" * 16)  # the magic string; the application id at 68 survives
    before = snapshot(tmp_path)
    with pytest.raises(StorageError, match="damaged"):
        Store(db)
    assert snapshot(tmp_path) == before


def test_a_job_database_whose_schema_page_is_damaged_is_damaged_at_open(tmp_path: Path) -> None:
    db = job_db(tmp_path / "jobs.db")
    with open(db, "r+b") as handle:
        handle.seek(100)  # past the header: the first page of the schema itself
        handle.write(b"\xff" * 3996)
    before = snapshot(tmp_path)
    with pytest.raises(StorageError, match="damaged") as caught:
        Store(db, create=False)
    assert ".recover" in str(caught.value) and "not a batchmap" not in str(caught.value)
    assert snapshot(tmp_path) == before


def test_a_healthy_database_passes_the_integrity_check(tmp_path: Path) -> None:
    with Store(job_db(tmp_path / "jobs.db")) as store:
        store.check_integrity()


# --------------------------------------------------------------------------- every method


def _calls() -> dict[str, Callable[[Store], Any]]:
    job = Claim(1, "id-000000")
    minute = MinuteStats("2026-01-01T00:00:00Z", requests=1)
    found = Classification("id-000000", False, "human", 0.9, "h", "n", "done", "{}")
    return {
        "load_ids": lambda s: s.load_ids(["x" * 5000 + str(i) for i in range(200)]),
        "running": lambda s: s.running(),
        "recover": lambda s: s.recover(),
        "claim": lambda s: s.claim(10),
        "release": lambda s: s.release([job]),
        "record": lambda s: s.record([Record(job, JobState.FAILED, 1, 404, error="e" * 9000)]),
        "record_attempt": lambda s: s.record_attempt(
            job, attempts=1, http_status=503, error="e" * 9000
        ),
        "retry_failed": lambda s: s.retry_failed(),
        "unasked": lambda s: s.unasked(10),
        "limit_to": lambda s: s.limit_to(10),
        "record_classifications": lambda s: s.record_classifications(
            [job], [replace(found, raw="r" * 9000)]
        ),
        "verdict_counts": lambda s: s.verdict_counts(),
        "start_run": lambda s: s.start_run({"note": "n" * 9000}),
        "end_run": lambda s: s.end_run(1, exit_code=0),
        "runs": lambda s: s.runs(),
        "timeline": lambda s: s.timeline(),
        "record-timeline": lambda s: s.record([], timeline=[minute], run_id=1),
        "counts": lambda s: s.counts(),
        "activity": lambda s: s.activity(),
        "top_errors": lambda s: s.top_errors(),
        "retryable_failures": lambda s: s.retryable_failures(),
        "rows": lambda s: list(s.rows()),
        "done_files": lambda s: list(s.done_files()),
        "untracked_paths": lambda s: list(s.untracked_paths(["/o/x.png"])),
        "return_to_pending": lambda s: s.return_to_pending([1, 2]),
        "get_meta": lambda s: s.get_meta("out"),
        "set_meta": lambda s: s.set_meta("note", "v" * 9000),
        "check_integrity": lambda s: s.check_integrity(),
    }


CALLS = _calls()
WRITES = {
    "load_ids", "recover", "claim", "release", "record", "record_attempt", "retry_failed",
    "record_classifications", "start_run", "end_run", "record-timeline", "return_to_pending",
    "set_meta",
}  # fmt: skip


def test_the_fault_tests_cover_every_public_store_method() -> None:
    public = {
        name
        for name in dir(Store)
        if not name.startswith("_") and callable(getattr(Store, name)) and name != "close"
    }
    assert public <= set(CALLS)


class FailingConnection:
    """A connection whose every statement fails as a dying disk makes SQLite fail."""

    def __init__(self, conn: sqlite3.Connection, *, code: int, message: str) -> None:
        self._conn = conn
        self._code = code
        self._message = message

    def _fail(self, *args: Any, **kwargs: Any) -> Any:
        error = sqlite3.OperationalError(self._message)
        error.sqlite_errorcode = self._code
        raise error

    execute = executemany = _fail

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


@pytest.mark.parametrize("call", CALLS.values(), ids=CALLS.keys())
def test_an_io_error_in_any_store_method_is_one_line_naming_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, call: Callable[[Store], Any]
) -> None:
    with Store(job_db(tmp_path / "jobs.db")) as store:
        failing = FailingConnection(store.conn, code=778, message="disk I/O error")  # IOERR_WRITE
        monkeypatch.setattr(store, "conn", failing)
        with pytest.raises(StorageError, match="disk I/O error") as caught:
            call(store)
        monkeypatch.undo()
    assert str(caught.value).startswith(str(tmp_path / "jobs.db"))
    assert caught.value.exit_code == EXIT_STORAGE


@pytest.mark.parametrize("name", sorted(WRITES))
def test_a_full_database_is_a_storage_error_and_changes_nothing(tmp_path: Path, name: str) -> None:
    db = job_db(tmp_path / "jobs.db")
    with Store(db) as store:
        store.start_run({})
        before = list(store.rows()), store.runs(), store.timeline()
        (pages,) = store.conn.execute("PRAGMA page_count").fetchone()
        store.conn.execute(f"PRAGMA max_page_count = {pages}")  # SQLITE_FULL, deterministically
        try:
            CALLS[name](store)
        except StorageError as error:
            assert "disk full" in str(error) and str(error).startswith(str(db))
        else:  # an update in place needs no new page: fine, as long as it is not a traceback
            return
        assert (list(store.rows()), store.runs(), store.timeline()) == before


def test_a_full_disk_under_the_database_is_one_line_saying_so(
    small_tmpfs: Callable[[str], Path],
) -> None:
    disk = small_tmpfs("2m")
    db = job_db(disk / "jobs.db")
    with Store(db, create=False) as store:
        fill(disk)
        with pytest.raises(StorageError, match="disk full") as caught:
            store.load_ids(f"new-{uuid.uuid4().hex}-{i}" for i in range(20_000))
        assert str(caught.value).startswith(str(db))
        assert store.counts()[JobState.PENDING] == 2  # nothing half-loaded
    # Opening needs the WAL index file, which a full disk may not give: then "disk full" too.
    try:
        Store(db, create=False).close()
    except StorageError as error:
        assert "disk full" in str(error)


@pytest.mark.parametrize("name", sorted(WRITES))
def test_a_read_only_database_is_readable_and_every_write_is_a_storage_error(
    tmp_path: Path, read_only_view: Callable[[Path], Path], name: str
) -> None:
    source = tmp_path / "data"
    source.mkdir()
    job_db(source / "jobs.db")
    view = read_only_view(source)
    with Store(view / "jobs.db", create=False) as store:
        assert store.counts()[JobState.DONE] == 1  # status and reports still work
        with pytest.raises(StorageError, match="read-only") as caught:
            CALLS[name](store)
    assert str(caught.value).startswith(str(view / "jobs.db"))


def test_a_released_database_on_read_only_media_cannot_be_brought_forward(
    tmp_path: Path, read_only_view: Callable[[Path], Path]
) -> None:
    from tests.test_store import make_v1_db

    source = tmp_path / "data"
    source.mkdir()
    make_v1_db(source / "jobs.db")
    view = read_only_view(source)
    with pytest.raises(StorageError, match="read-only"):
        Store(view / "jobs.db", create=False)


def test_status_on_a_read_only_database_works(
    workspace: Workspace, read_only_view: Callable[[Path], Path]
) -> None:
    source = workspace.root / "data"
    source.mkdir()
    job_db(source / "jobs.db")
    view = read_only_view(source)
    result = workspace.cli("status", "--db", view / "jobs.db")
    assert result.code == 0, result.output


# --------------------------------------------------------------------------- --out


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES])
def test_an_unwritable_out_while_staging_is_a_storage_error_naming_the_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr("batchmap.files.open", refuse, raising=False)
    path = heatmap_path(tmp_path, "abc", layout=Layout.SHARDED)
    with pytest.raises(StorageError) as caught:
        stage(path, b"png", out=tmp_path)
    assert os.strerror(code) in str(caught.value) and str(tmp_path) in str(caught.value)
    assert caught.value.exit_code == EXIT_STORAGE


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EACCES])
def test_an_unwritable_out_while_publishing_is_a_storage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    path = heatmap_path(tmp_path, "abc", layout=Layout.SHARDED)
    stage(path, b"png", out=tmp_path)

    def refuse(source: Any, target: Any) -> None:
        raise OSError(code, os.strerror(code), str(source))

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(StorageError, match=os.strerror(code)):
        publish([path], out=tmp_path)


def test_a_bug_is_not_dressed_as_storage_trouble(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        publish([tmp_path / "never-staged.png"], out=tmp_path)


def test_a_full_out_is_a_storage_error_naming_the_path_and_leaves_no_partial(
    small_tmpfs: Callable[[str], Path],
) -> None:
    out = small_tmpfs("256k")
    path = heatmap_path(out, "abc", layout=Layout.SHARDED)
    with pytest.raises(StorageError, match="No space left on device") as caught:
        stage(path, os.urandom(300 * 1024), out=out)
    assert str(out) in str(caught.value)
    assert [p for p in out.rglob("*") if p.is_file()] == []  # the half-written file is gone


def test_a_read_only_out_is_a_storage_error(
    tmp_path: Path, read_only_view: Callable[[Path], Path]
) -> None:
    source = tmp_path / "out"
    source.mkdir()
    (source / "ab").mkdir()
    (source / "ab" / "x.png").write_bytes(b"png")
    out = read_only_view(source)
    with pytest.raises(StorageError, match="Read-only file system"):
        stage(heatmap_path(out, "abc", layout=Layout.SHARDED), b"png", out=out)
    with pytest.raises(StorageError, match="Read-only file system"):
        remove_file(out / "ab" / "x.png")


def test_opening_while_another_process_writes_and_checkpoints_is_never_a_false_alarm(
    tmp_path: Path,
) -> None:
    # The first look at a file reads it without a lock (immutable): a checkpoint under way
    # must never make a job database look damaged or foreign to `status`.
    db = job_db(tmp_path / "jobs.db")
    script = f"""
        import sys
        from pathlib import Path
        from batchmap.models import JobState, Record, Saved
        from batchmap.store import Store
        with Store(Path({str(db)!r})) as store:
            store.conn.execute("PRAGMA wal_autocheckpoint = 4")  # checkpoint all the time
            print("writing", flush=True)
            i = 0
            while not sys.stdin.closed:
                store.load_ids(f"w-{{i}}-{{k}}" for k in range(100))
                jobs = store.claim(50)
                saved = Saved("/o/x.png", 1, "00")
                store.record([Record(j, JobState.DONE, 1, 200, saved=saved) for j in jobs])
                i += 1
                if i == 400:
                    break
    """
    writer = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert writer.stdout is not None and writer.stdout.readline() == b"writing\n"
        opened = 0
        while writer.poll() is None and opened < 150:
            with Store(db, create=False) as store:
                assert store.counts()[JobState.DONE] >= 1
            opened += 1
        assert opened > 10
    finally:
        writer.kill()
        writer.wait(timeout=10)
