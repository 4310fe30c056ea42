"""The job table: idempotent loading, claiming, recording, recovery."""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchmap.errors import InputError, LockedError
from batchmap.fakeserver import heatmap_png
from batchmap.files import Layout, heatmap_path
from batchmap.lock import JobLock
from batchmap.models import Classification, JobState, MinuteStats, Record, Saved
from batchmap.store import REPORT_COLUMNS, SCHEMA_V1, V1_COLUMNS, Store
from tests.conftest import FakeServer, Workspace


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "jobs.db")


def test_loading_again_adds_only_new_identifiers(store: Store) -> None:
    assert store.load_ids(["a", "b", "a"]) == (3, 2)
    assert store.load_ids(["b", "c"]) == (2, 1)
    assert store.counts()[JobState.PENDING] == 3


def test_loading_never_resets_finished_rows(store: Store) -> None:
    store.load_ids(["a"])
    (job,) = store.claim(10)
    store.record([Record(job, JobState.DONE, 1, 200, saved=Saved("/x/a.png", 10, "ff"))])
    store.load_ids(["a"])
    assert store.counts()[JobState.DONE] == 1


def test_a_load_that_fails_halfway_adds_nothing(store: Store) -> None:
    def stream() -> Iterator[str]:
        yield "a"
        raise InputError("bad line")

    with pytest.raises(InputError):
        store.load_ids(stream())
    assert store.counts()[JobState.PENDING] == 0


def test_claims_go_load_by_load_in_identifier_order_and_never_twice(store: Store) -> None:
    store.load_ids(["c", "a", "b"])
    store.load_ids(["0", "a"])
    claimed = [store.claim(2), store.claim(2), store.claim(2)]
    assert [[j.identifier for j in batch] for batch in claimed] == [["a", "b"], ["c", "0"], []]


def test_recover_returns_running_rows_to_pending(store: Store) -> None:
    store.load_ids(["a", "b"])
    claimed = store.claim(2)
    assert store.counts()[JobState.RUNNING] == 2
    assert {j.identifier for j in store.running()} == {j.identifier for j in claimed}
    assert store.recover() == 2
    assert store.counts()[JobState.PENDING] == 2
    assert store.running() == []


def test_release_does_not_undo_a_finished_row(store: Store) -> None:
    store.load_ids(["a"])
    (job,) = store.claim(1)
    store.record([Record(job, JobState.NO_HEATMAP, 1, 204)])
    store.release([job])
    assert store.counts()[JobState.NO_HEATMAP] == 1


def test_retry_failed_puts_failed_rows_back_with_fresh_attempts(store: Store) -> None:
    store.load_ids(["a", "b"])
    a, b = store.claim(2)
    store.record(
        [
            Record(a, JobState.FAILED, 5, 503, error="HTTP 503", retryable=True),
            Record(b, JobState.FAILED, 1, 404, error="HTTP 404", retryable=False),
        ]
    )
    assert store.retry_failed() == 2
    assert {j.attempts for j in store.claim(5)} == {0}


def test_status_queries(store: Store) -> None:
    store.load_ids(["a", "b", "c"])
    a, b, c = store.claim(3)
    store.record(
        [
            Record(a, JobState.FAILED, 1, 404, error="HTTP 404"),
            Record(b, JobState.FAILED, 1, 404, error="HTTP 404"),
            Record(c, JobState.DONE, 1, 200, saved=Saved("/p", 1, "00")),
        ]
    )
    assert store.top_errors() == [("HTTP 404", 2)]
    by_status, last = store.activity()
    assert by_status == [(404, 2), (200, 1)]
    assert last is not None and last.endswith("Z")
    assert [row["identifier"] for row in store.rows(state=JobState.FAILED)] == ["a", "b"]


def test_meta_values_round_trip(store: Store) -> None:
    store.set_meta("pacer", {"rate": 1.5})
    store.set_meta("pacer", {"rate": 2.5})
    assert store.get_meta("pacer") == {"rate": 2.5}
    assert store.get_meta("missing") is None


def test_a_file_that_is_not_a_database_is_one_clear_error(tmp_path: Path) -> None:
    bogus = tmp_path / "x.db"
    bogus.write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(InputError, match="not a batchmap job database"):
        Store(bogus)


def test_status_on_a_missing_database_does_not_create_it(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such job database"):
        Store(tmp_path / "none.db", create=False)
    assert not (tmp_path / "none.db").exists()


@settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(
        st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), min_size=1),
        max_size=30,
    )
)
def test_any_text_identifier_is_stored_exactly_once_as_given(
    tmp_path: Path, identifiers: list[str]
) -> None:
    store = Store(Path(tempfile.mkdtemp(dir=tmp_path)) / "jobs.db")  # fresh for every example
    try:
        assert store.load_ids(identifiers) == (len(identifiers), len(set(identifiers)))
        assert sorted(row["identifier"] for row in store.rows()) == sorted(set(identifiers))
    finally:
        store.close()


# --------------------------------------------------------------------------- schema version 2

V1_STATES = ("pending", "running", "done", "no_heatmap", "failed")


def make_v1_db(path: Path) -> list[tuple[Any, ...]]:
    """A database as the released batchmap left it, one row in every state; its rows."""
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.executescript(SCHEMA_V1)
    rows = [
        (f"id-{state}", state, *values)
        for state, values in {
            "pending": (None, 0, None, None, None, None, None, "t0", None, None),
            "running": (503, 2, None, None, None, "HTTP 503", None, "t0", "t1", None),
            "done": (200, 1, "/o/ab/id-done.png", 123, "ff" * 32, None, None, "t0", "t1", "t1"),
            "no_heatmap": (204, 1, None, None, None, None, None, "t0", "t1", "t1"),
            "failed": (404, 1, None, None, None, "HTTP 404: no", 0, "t0", "t1", "t1"),
        }.items()
    ]
    with conn:
        conn.executemany(f"INSERT INTO jobs VALUES ({', '.join('?' * 12)})", rows)
        conn.execute("INSERT INTO meta VALUES ('out', '\"/o\"'), ('layout', '\"sharded\"')")
    conn.close()
    return rows


def read_v1_columns(path: Path) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(f"SELECT {', '.join(V1_COLUMNS)} FROM jobs ORDER BY rowid").fetchall()
    finally:
        conn.close()


def test_a_released_database_is_brought_forward_in_place_with_its_rows_intact(
    tmp_path: Path,
) -> None:
    db = tmp_path / "jobs.db"
    rows = make_v1_db(db)
    with Store(db, create=False) as store:
        assert store.get_meta("schema_version") == 2
        assert store.get_meta("out") == "/o"
        assert store.counts() == {JobState(state): 1 for state in V1_STATES}
        assert [row["has_heatmap"] for row in store.rows()] == [None] * 5
        assert store.runs() == [] and store.timeline() == []
    assert read_v1_columns(db) == rows
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA user_version").fetchone() == (2,)
    assert {name for (name,) in conn.execute("SELECT name FROM sqlite_master")} >= {
        "jobs", "meta", "runs", "timeline", "jobs_state", "jobs_unasked",
    }  # fmt: skip
    conn.close()
    with Store(db) as store:  # a second opening finds it current and changes nothing
        assert store.counts()[JobState.DONE] == 1


def test_a_new_database_and_a_brought_forward_one_have_the_same_schema(tmp_path: Path) -> None:
    make_v1_db(tmp_path / "old.db")
    for name in ("old.db", "new.db"):
        Store(tmp_path / name).close()

    def schema(name: str) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(tmp_path / name)
        try:
            return [
                *conn.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name"),
                *conn.execute("PRAGMA table_info(jobs)"),
                conn.execute("PRAGMA user_version").fetchone(),
                conn.execute("PRAGMA application_id").fetchone(),
            ]
        finally:
            conn.close()

    assert schema("old.db") == schema("new.db")


def test_a_copy_made_with_sqlite_dump_is_still_recognised(tmp_path: Path) -> None:
    # `.dump | sqlite3 fixed.db` (the recovery the damage message suggests) drops the header
    # stamps; the meta row and the columns still say it is a job database.
    with Store(tmp_path / "jobs.db") as store:
        store.load_ids(["a", "b"])
    source = sqlite3.connect(tmp_path / "jobs.db")
    target = sqlite3.connect(tmp_path / "fixed.db")
    target.executescript("\n".join(source.iterdump()))
    source.close()
    target.close()
    with Store(tmp_path / "fixed.db", create=False) as store:
        assert store.counts()[JobState.PENDING] == 2


def test_a_released_database_resumes_without_refetching_finished_rows(
    workspace: Workspace, shared_fake: FakeServer
) -> None:
    from tests.conftest import expected_state, make_ids

    done, pending = make_ids("v1-upgrade", ok=4), make_ids("v1-upgrade-pending", ok=2)
    conn = sqlite3.connect(workspace.db)
    conn.executescript(SCHEMA_V1)
    with conn:
        for identifier in done:
            path = heatmap_path(workspace.out, identifier, layout=Layout.SHARDED)
            path.parent.mkdir(parents=True, exist_ok=True)
            png = heatmap_png(identifier)
            path.write_bytes(png)
            conn.execute(
                "INSERT INTO jobs (identifier, state, http_status, attempts, path, bytes, sha256,"
                " created_at, finished_at) VALUES (?, 'done', 200, 1, ?, ?, ?, 't0', 't1')",
                (identifier, str(path), len(png), hashlib.sha256(png).hexdigest()),
            )
        conn.executemany("INSERT INTO jobs (identifier, created_at) VALUES (?, 't0')", zip(pending))
        conn.execute("INSERT INTO meta VALUES ('out', ?)", (json.dumps(str(workspace.out)),))
    conn.close()
    before = shared_fake.per_identifier()
    result = workspace.resume(shared_fake)
    assert result.code == 0, result.output
    asked = shared_fake.per_identifier() - before
    assert set(asked) == set(pending)  # nothing refetched
    rows = workspace.rows()
    assert all(rows[i]["state"] == expected_state(i) == "done" for i in done + pending)


# --------------------------------------------------------------------------- context manager


def test_the_store_is_a_context_manager_that_closes(tmp_path: Path) -> None:
    with Store(tmp_path / "jobs.db") as store:
        store.load_ids(["a"])
    with pytest.raises(sqlite3.ProgrammingError):
        store.conn.execute("SELECT 1")
    store.close()  # closing twice is harmless


# --------------------------------------------------------------------------- the prefilter


def _classification(identifier: str, **fields: Any) -> Classification:
    values: dict[str, Any] = {
        "has_heatmap": True, "verdict": "artificial", "confidence": 0.97,
        "image_hash": "ab" * 32, "image_name": f"{identifier}.jpg", "status": None,
    }  # fmt: skip
    values.update(fields)
    return Classification(
        identifier=identifier, raw=json.dumps({"identifier": identifier}), **values
    )


def test_unasked_rows_are_pending_never_asked_and_not_claimed(store: Store) -> None:
    store.load_ids(["a", "b", "c", "d"])
    (running,) = store.claim(1)
    assert [j.identifier for j in store.unasked(10)] == ["b", "c", "d"]
    store.record_classifications(store.unasked(2), [])
    assert [j.identifier for j in store.unasked(10)] == ["d"]
    assert store.counts()[JobState.PENDING] == 3  # asking claims nothing
    assert [j.identifier for j in store.claim(10, asked_only=True)] == ["b", "c"]
    assert running.identifier == "a"


def test_classifications_finalise_only_pending_rows_without_heatmap_whose_answer_is_done(
    store: Store,
) -> None:
    ids = ["claimed", "no", "no-status-new", "no-errored", "yes", "not-in-answer", "no-done"]
    store.load_ids(ids)
    jobs = {job.identifier: job for job in store.unasked(10)}
    (running,) = store.claim(1)  # "claimed", first in identifier order
    found = [
        _classification("no", has_heatmap=False, verdict="human", confidence=0.12),
        _classification("no-status-new", has_heatmap=False, status="new"),
        _classification("no-errored", has_heatmap=False, status="errored"),
        _classification("yes"),
        _classification("no-done", has_heatmap=False, status="done"),
        _classification(running.identifier, has_heatmap=False),
    ]
    finished = store.record_classifications(list(jobs.values()), found)
    rows = {row["identifier"]: row for row in store.rows()}
    assert running.identifier == "claimed"
    assert finished == 2
    assert {i for i, row in rows.items() if row["state"] == "no_heatmap"} == {"no", "no-done"}
    assert rows["no"]["http_status"] is None and rows["no"]["finished_at"] is not None
    assert (rows["no"]["verdict"], rows["no"]["confidence"], rows["no"]["has_heatmap"]) == (
        "human", 0.12, 0,
    )  # fmt: skip
    assert rows["yes"]["state"] == "pending" and rows["yes"]["has_heatmap"] == 1
    assert rows["yes"]["image_name"] == "yes.jpg" and rows["yes"]["image_hash"] == "ab" * 32
    assert rows["claimed"]["state"] == "running" and rows["claimed"]["has_heatmap"] == 0
    assert rows["not-in-answer"]["state"] == "pending" and rows["not-in-answer"]["verdict"] is None
    assert store.unasked(10) == []
    assert store.verdict_counts() == {"artificial": 5, "human": 1}


def test_a_non_finite_confidence_is_saved_as_unknown(store: Store) -> None:
    store.load_ids(["a"])
    store.record_classifications(store.unasked(1), [_classification("a", confidence=math.nan)])
    (row,) = store.rows()
    assert row["confidence"] is None


# --------------------------------------------------------------------------- runs and timeline


def test_runs_are_listed_oldest_first_with_their_options_but_never_a_key(store: Store) -> None:
    first = store.start_run({"base_url": "http://x", "api_key": "SECRET", "out": Path("/o")})
    store.end_run(first, exit_code=0)
    second = store.start_run({"concurrency": 4})
    runs = store.runs()
    assert [run["run_id"] for run in runs] == [first, second]
    assert runs[0]["options"] == {"base_url": "http://x", "out": "/o"}
    assert runs[0]["exit_code"] == 0 and runs[0]["ended_at"] is not None
    assert runs[1]["ended_at"] is None and runs[1]["pid"] == os.getpid()
    assert "SECRET" not in json.dumps(runs)


def test_timeline_increments_add_up_per_run_and_minute_and_runs_never_mix(store: Store) -> None:
    store.load_ids(["a", "b"])
    a, b = store.claim(2)
    one, two = store.start_run({}), store.start_run({})
    minute = "2026-01-01T10:00:00Z"
    store.record(
        [Record(a, JobState.NO_HEATMAP, 1, 204)],
        timeline=[
            MinuteStats(minute, requests=3, no_heatmap=1, rate_limited=2, paused_seconds=1.5,
                        pause_reasons={"rate limit": 1.5}, pacer_rate=2.0, limits=((2, 1.0),)),
        ],
        run_id=one,
    )  # fmt: skip
    store.record(
        [Record(b, JobState.DONE, 1, 200, saved=Saved("/o/b.png", 1, "00"))],
        timeline=[
            MinuteStats(minute, requests=1, ok=1, finished=1, paused_seconds=0.5,
                        pause_reasons={"rate limit": 0.5, "outage": 2.0}, pacer_rate=1.5),
            MinuteStats("2026-01-01T10:01:00Z", requests=1, pacer_rate=math.inf),
        ],
        run_id=one,
    )  # fmt: skip
    store.record([], timeline=[MinuteStats(minute, requests=7)], run_id=two)
    by_key = {(row["run_id"], row["minute"]): row for row in store.timeline()}
    first = by_key[(one, minute)]
    assert (first["requests"], first["ok"], first["no_heatmap"], first["rate_limited"]) == (
        4,
        1,
        1,
        2,
    )
    assert first["paused_seconds"] == 2.0
    assert first["pause_reasons"] == {"rate limit": 2.0, "outage": 2.0}
    assert first["pacer_rate"] == 1.5 and first["limits"] == [[2, 1.0]]  # the latest known
    assert by_key[(one, "2026-01-01T10:01:00Z")]["pacer_rate"] is None  # never Infinity
    assert by_key[(two, minute)]["requests"] == 7  # the other run's minute is its own row
    assert [row["minute"] for row in store.timeline(since="2026-01-01T10:01:00Z")] == [
        "2026-01-01T10:01:00Z"
    ]


def test_a_crash_before_commit_loses_the_records_and_their_minutes_together(
    tmp_path: Path,
) -> None:
    db = tmp_path / "jobs.db"
    with Store(db) as store:
        store.load_ids(["a"])
        (job,) = store.claim(1)
        run_id = store.start_run({})
    # The process dies at the very moment it would commit the minute: a kill -9 at the worst
    # instant. Had the outcomes their own transaction, they would survive without their minute.
    script = f"""
        import os
        from pathlib import Path
        from batchmap.models import Claim, JobState, MinuteStats, Record
        from batchmap.store import Store
        store = Store(Path({str(db)!r}))
        seen = []

        def trace(sql):
            seen.append(sql)
            if sql == "COMMIT" and any(s.startswith("INSERT INTO timeline") for s in seen):
                os._exit(9)  # the commit that would make the minute durable

        store.conn.set_trace_callback(trace)
        store.record(
            [Record(Claim({job.rowid}, "a"), JobState.NO_HEATMAP, 1, 204)],
            timeline=[MinuteStats("2026-01-01T10:00:00Z", requests=1, no_heatmap=1, finished=1)],
            run_id={run_id},
        )
    """
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], check=False)
    assert done.returncode == 9
    with Store(db) as store:
        assert store.counts()[JobState.RUNNING] == 1
        assert store.timeline() == []
        store.record(
            [Record(job, JobState.NO_HEATMAP, 1, 204)],
            timeline=[MinuteStats("2026-01-01T10:00:00Z", requests=1, finished=1)],
            run_id=run_id,
        )
        assert store.counts()[JobState.NO_HEATMAP] == 1
        assert [row["finished"] for row in store.timeline()] == [1]


def test_timeline_increments_need_a_run(store: Store) -> None:
    with pytest.raises(ValueError, match="run_id"):
        store.record([], timeline=[MinuteStats("2026-01-01T10:00:00Z")])


# --------------------------------------------------------------------------- verify's queries


def test_done_files_and_return_to_pending(store: Store) -> None:
    store.load_ids(["a", "b", "c"])
    a, b, c = store.claim(3)
    store.record(
        [
            Record(a, JobState.DONE, 1, 200, saved=Saved("/o/a.png", 3, "aa")),
            Record(b, JobState.DONE, 2, 200, saved=Saved("/o/b.png", 4, "bb")),
            Record(c, JobState.FAILED, 1, 404, error="HTTP 404"),
        ]
    )
    assert list(store.done_files()) == [
        (a.rowid, "a", "/o/a.png", 3, "aa"),
        (b.rowid, "b", "/o/b.png", 4, "bb"),
    ]
    assert list(store.untracked_paths(["/o/a.png", "/o/x.png", "/o/x.png"])) == ["/o/x.png"]
    assert store.return_to_pending([b.rowid, c.rowid]) == 1  # only a done row goes back
    rows = {row["identifier"]: row for row in store.rows()}
    assert rows["b"]["state"] == "pending" and rows["b"]["path"] is None
    assert rows["b"]["attempts"] == 0 and rows["c"]["state"] == "failed"
    assert [j.identifier for j in store.claim(5)] == ["b"]


def test_report_columns_keep_the_old_ones_first() -> None:
    assert REPORT_COLUMNS[: len(V1_COLUMNS)] == V1_COLUMNS
    assert REPORT_COLUMNS[len(V1_COLUMNS) :] == (
        "has_heatmap", "verdict", "confidence", "image_hash", "image_name", "user_columns",
    )  # fmt: skip


# --------------------------------------------------------------------------- the job lock


def test_lock_owner_names_the_live_run_without_taking_its_lock(tmp_path: Path) -> None:
    db = tmp_path / "jobs.db"
    assert JobLock.owner(db) is None
    assert not (tmp_path / "jobs.db.lock").exists()  # asking creates nothing
    script = f"""
        import sys, time
        from pathlib import Path
        from batchmap.lock import JobLock
        with JobLock(Path({str(db)!r})):
            print("locked", flush=True)
            sys.stdin.read()
    """
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"locked\n"
        assert JobLock.owner(db) == holder.pid
        assert JobLock.owner(db) == holder.pid
        with pytest.raises(LockedError, match=f"pid {holder.pid}"), JobLock(db):
            pass  # the holder still holds it
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=10)
    assert JobLock.owner(db) is None
    with JobLock(db):
        assert JobLock.owner(db) == os.getpid()


def test_a_run_starting_while_status_probes_the_lock_is_not_refused(tmp_path: Path) -> None:
    db = tmp_path / "jobs.db"
    lock_file = tmp_path / "jobs.db.lock"
    lock_file.touch()
    fd = os.open(lock_file, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_SH)  # what `owner` holds for an instant
    timer = threading.Timer(0.03, os.close, (fd,))
    timer.start()
    try:
        with JobLock(db):
            assert JobLock.owner(db) == os.getpid()
    finally:
        timer.join()


_increments = st.lists(
    st.tuples(
        st.sampled_from([1, 2]),  # run
        st.sampled_from(["2026-01-01T10:00:00Z", "2026-01-01T10:01:00Z"]),
        st.integers(0, 50),  # requests
        st.integers(0, 5),  # rate_limited
        st.floats(0, 30),  # paused seconds, all for one reason
        st.sampled_from(["rate limit", "outage", "server wait"]),
    ),
    max_size=12,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(_increments, st.integers(1, 4))
def test_the_timeline_is_the_sum_of_its_increments_however_they_are_batched(
    tmp_path: Path, increments: list[tuple[int, str, int, int, float, str]], batch: int
) -> None:
    with Store(Path(tempfile.mkdtemp(dir=tmp_path)) / "jobs.db") as store:
        runs = {1: store.start_run({}), 2: store.start_run({})}
        stats = [
            (runs[run], MinuteStats(minute, requests=requests, rate_limited=limited,
                                    paused_seconds=paused, pause_reasons={reason: paused}))
            for run, minute, requests, limited, paused, reason in increments
        ]  # fmt: skip
        for run_id in runs.values():
            mine = [item for rid, item in stats if rid == run_id]
            for start in range(0, len(mine), batch):
                store.record([], timeline=mine[start : start + batch], run_id=run_id)
        expected: dict[tuple[int, str], dict[str, Any]] = {}
        for run_id, item in stats:
            row = expected.setdefault(
                (run_id, item.minute), {"requests": 0, "rate_limited": 0, "reasons": {}}
            )
            row["requests"] += item.requests
            row["rate_limited"] += item.rate_limited
            for reason, seconds in item.pause_reasons.items():
                row["reasons"][reason] = row["reasons"].get(reason, 0.0) + seconds
        found = {(row["run_id"], row["minute"]): row for row in store.timeline()}
        assert set(found) == set(expected)
        for key, row in expected.items():
            assert found[key]["requests"] == row["requests"]
            assert found[key]["rate_limited"] == row["rate_limited"]
            assert found[key]["pause_reasons"] == pytest.approx(row["reasons"])
            assert found[key]["paused_seconds"] == pytest.approx(sum(row["reasons"].values()))


def test_a_later_flush_without_pauses_keeps_the_minutes_pause_reasons(store: Store) -> None:
    run = store.start_run({})
    minute = "2026-01-01T10:00:00Z"
    store.record(
        [],
        timeline=[
            MinuteStats(
                minute,
                paused_seconds=3.0,
                outage_seconds=3.0,
                pause_reasons={"API unreachable": 3.0},
            )
        ],
        run_id=run,
    )
    store.record([], timeline=[MinuteStats(minute, requests=5)], run_id=run)  # fmt: skip
    (row,) = store.timeline()
    assert row["pause_reasons"] == {"API unreachable": 3.0} and row["requests"] == 5
