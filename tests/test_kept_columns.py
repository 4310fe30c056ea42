"""The user's other CSV columns travel with each row into every report (issue 18, item 8)."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

from batchmap.ids import MAX_COLUMNS_BYTES, IdSource
from batchmap.store import V1_COLUMNS, Store
from tests.conftest import FakeServer, Workspace, make_ids
from tests.test_storage_faults import read_only_view  # noqa: F401  (a fixture)


def excel_csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    """What Excel writes in a ';' locale: a BOM, a header, CRLF line ends."""
    body = "Identifier;Name\r\n" + "".join(f"{i};{name}\r\n" for i, name in rows)
    path.write_bytes(b"\xef\xbb\xbf" + body.encode())
    return path


def test_a_failed_rows_report_names_the_users_own_file(
    workspace: Workspace, shared_fake: FakeServer
) -> None:
    ok, missing = make_ids("kept-ok", ok=3), make_ids("kept-404", missing=2)
    names = {ident: f"Photo {n:03}.jpg" for n, ident in enumerate(ok + missing)}
    excel_csv(workspace.root / "ids.csv", list(names.items()))

    loaded = workspace.cli("load", "ids.csv", "--db", workspace.db)
    assert loaded.code == 0, loaded.output
    ran = workspace.resume(shared_fake)
    assert ran.code in (0, 1), ran.output

    as_csv = workspace.cli("report", "--db", workspace.db, "--state", "failed", "--format", "csv")
    as_json = workspace.cli("report", "--db", workspace.db, "--state", "failed", "--format", "json")
    as_jsonl = workspace.cli("report", "--db", workspace.db, "--format", "jsonl")
    assert as_csv.code == as_json.code == as_jsonl.code == 0, as_csv.output + as_json.output

    records = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert {r["identifier"]: r["Name"] for r in records} == {i: names[i] for i in missing}
    assert all(r["state"] == "failed" for r in records)
    assert {r["identifier"]: r["user_columns"]["Name"] for r in json.loads(as_json.stdout)} == {
        i: names[i] for i in missing
    }
    every = [json.loads(line) for line in as_jsonl.stdout.splitlines()]
    assert {r["identifier"]: r["user_columns"] for r in every} == {
        i: {"Name": name} for i, name in names.items()
    }

    html = workspace.cli(
        "report", "--db", workspace.db, "--format", "html", "-o", workspace.root / "r.html"
    )
    assert html.code == 0, html.output
    page = (workspace.root / "r.html").read_text()
    assert all(names[i] in page for i in missing)


def test_loading_again_is_idempotent_and_takes_changed_names(tmp_path: Path) -> None:
    path = tmp_path / "ids.csv"
    path.write_text("id,name,notes\na1,one.jpg,\na2,two.jpg,x\n")
    with closing(Store(tmp_path / "jobs.db")) as store:
        assert store.load_ids(IdSource(path).with_columns()) == (2, 2)
        assert store.load_ids(IdSource(path).with_columns()) == (2, 0)
        before = {r["identifier"]: r["user_columns"] for r in store.rows()}
        assert before == {"a1": {"name": "one.jpg"}, "a2": {"name": "two.jpg", "notes": "x"}}
        path.write_text("id,name\na1,renamed.jpg\n")
        assert store.load_ids(IdSource(path).with_columns()) == (1, 0)
        after = {r["identifier"]: r["user_columns"] for r in store.rows()}
    assert after["a1"] == {"name": "renamed.jpg"} and after["a2"] == before["a2"]


def test_a_single_column_file_keeps_nothing_and_reads_fast(tmp_path: Path) -> None:
    path = tmp_path / "ids.csv"
    path.write_text("identifier\n" + "".join(f"{i:064x}\n" for i in range(1000)))
    source = IdSource(path)
    items = list(source.with_columns())
    assert items == [f"{i:064x}" for i in range(1000)]  # plain identifiers: the fast path
    assert source.kept_names == []


def pairs_of(source: IdSource) -> dict[str, str | None]:
    found = {}
    for item in source.with_columns():
        assert isinstance(item, tuple)
        found[item[0]] = item[1]
    return found


def test_long_columns_are_cut_to_the_bound_with_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "ids.csv"
    path.write_text("id,caption,other\nb1," + "é" * 5000 + ",z\nb2,short,\n", encoding="utf-8")
    source = IdSource(path)
    pairs = pairs_of(source)
    first = pairs["b1"]
    assert first is not None and len(first.encode()) <= MAX_COLUMNS_BYTES
    assert json.loads(first)["caption"].endswith("…")
    assert json.loads(pairs["b2"] or "{}") == {"caption": "short"}
    assert any("longer than 4,096 bytes" in w and "line 2" in w for w in source.warnings)


def test_an_older_database_gains_the_column_in_place(tmp_path: Path) -> None:
    db = tmp_path / "jobs.db"
    with closing(Store(db)) as store:
        store.load_ids(["c1"])
    with closing(sqlite3.connect(db)) as conn:  # as a batchmap before this change left it
        conn.execute("ALTER TABLE jobs DROP COLUMN user_columns")
        conn.commit()
    path = tmp_path / "ids.csv"
    path.write_text("id,name\nc1,old.jpg\nc2,new.jpg\n")
    with closing(Store(db)) as store:
        store.load_ids(IdSource(path).with_columns())
        rows = {r["identifier"]: r["user_columns"] for r in store.rows()}
    assert rows == {"c1": {"name": "old.jpg"}, "c2": {"name": "new.jpg"}}
    with closing(sqlite3.connect(db)) as conn:
        columns = [row[1] for row in conn.execute("PRAGMA table_info(jobs)")]
    assert columns[: len(V1_COLUMNS)] == list(V1_COLUMNS) and columns[-1] == "user_columns"


def test_an_older_database_on_read_only_media_is_still_reported(
    tmp_path: Path,
    read_only_view: Callable[[Path], Path],  # noqa: F811  (the fixture imported above)
) -> None:
    source = tmp_path / "data"
    source.mkdir()
    with closing(Store(source / "jobs.db")) as store:
        store.load_ids(["d1"])
    with closing(sqlite3.connect(source / "jobs.db")) as conn:
        conn.execute("ALTER TABLE jobs DROP COLUMN user_columns")
        conn.commit()
    view = read_only_view(source)
    with closing(Store(view / "jobs.db", create=False)) as store:
        rows = list(store.rows())
    assert [(r["identifier"], r["user_columns"]) for r in rows] == [("d1", None)]
