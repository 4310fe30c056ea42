"""The job table: idempotent loading, claiming, recording, recovery."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchmap.errors import InputError
from batchmap.models import JobState, Record, Saved
from batchmap.store import Store


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
