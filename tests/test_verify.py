"""`verify`: every done row's file checked against its size and sha256, strays found, repair."""

from __future__ import annotations

import hashlib
from dataclasses import FrozenInstanceError
from pathlib import Path

import pytest

from batchmap.files import PARTIAL_DIR, Layout, heatmap_path, publish, stage
from batchmap.models import JobState, Record, Saved
from batchmap.store import Store
from batchmap.verify import CHUNK, VerifyReport, check_file, verify


def done_job(store: Store, out: Path, ids: list[str], *, layout: Layout) -> dict[str, Path]:
    """Rows `done` with real files written the way the runner writes them."""
    store.load_ids(ids)
    jobs = store.claim(len(ids))
    paths = {job.identifier: heatmap_path(out, job.identifier, layout=layout) for job in jobs}
    saved = [stage(paths[job.identifier], job.identifier.encode() * 50, out=out) for job in jobs]
    publish(paths.values(), out=out)
    store.record(
        [
            Record(job, JobState.DONE, 1, 200, saved=item)
            for job, item in zip(jobs, saved, strict=True)
        ]
    )
    return paths


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "jobs.db")


def test_a_complete_job_verifies_clean_with_progress(tmp_path: Path, store: Store) -> None:
    out = tmp_path / "out"
    done_job(store, out, [f"id{i}" for i in range(300)], layout=Layout.SHARDED)
    seen: list[tuple[int, int]] = []
    report = verify(
        store, out=out, layout=Layout.SHARDED, on_progress=lambda n, t: seen.append((n, t))
    )
    assert report.clean and report.ok == report.checked == 300
    assert seen[-1] == (300, 300) and all(n <= t for n, t in seen)


def test_missing_changed_stray_and_partial_files_are_found_and_repaired_exactly(
    tmp_path: Path, store: Store
) -> None:
    out = tmp_path / "out"
    layout = Layout.SHARDED
    ids = ["ok1", "ok2", "gone", "same-size", "shorter", "weird id/é"]
    paths = done_job(store, out, ids, layout=layout)
    paths["gone"].unlink()
    original = paths["same-size"].read_bytes()
    paths["same-size"].write_bytes(bytes([original[0] ^ 1]) + original[1:])
    paths["shorter"].write_bytes(b"x")
    paths["weird id/é"].unlink()
    paths["weird id/é"].mkdir()  # not a file any more
    stray = heatmap_path(out, "never-loaded", layout=layout)
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_bytes(b"another job's heatmap")
    (out / PARTIAL_DIR).mkdir(exist_ok=True)  # publish leaves it, empty
    (out / PARTIAL_DIR / "ok1.png.4242").write_bytes(b"half")
    unrelated = [
        out / "README.txt",
        out / "notes.png",  # heatmap-like name, but not where a sharded layout puts one
        out / "00" / "ok1.png",  # a name of ours in the wrong shard
        out / "ab" / "nested" / "x.png",
        out / "Thumbs.db",
    ]
    for path in unrelated:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"the user's")

    report = verify(store, out=out, layout=layout)
    assert (report.checked, report.ok, report.missing, report.changed) == (6, 2, 1, 3)
    assert (report.stray, report.partials, report.unrelated) == (1, 1, len(unrelated))
    assert report.missing_examples == (str(paths["gone"]),)
    assert set(report.changed_examples) == {
        str(paths[i]) for i in ("same-size", "shorter", "weird id/é")
    }
    assert report.stray_examples == (str(stray),)
    assert report.problems == 6 and not report.clean
    assert report.returned_to_pending == 0  # looking changes nothing
    assert {row["identifier"] for row in store.rows(state=JobState.DONE)} == set(ids)

    repaired = verify(store, out=out, layout=layout, repair=True, workers=2)
    assert repaired.returned_to_pending == 4 and repaired.partials_removed == 1
    assert repaired.changed_removed == 2  # the directory in the way is not a file to remove
    pending = {row["identifier"] for row in store.rows(state=JobState.PENDING)}
    assert pending == {"gone", "same-size", "shorter", "weird id/é"}
    assert not paths["same-size"].exists() and not paths["shorter"].exists()
    assert all(path.read_bytes() == b"the user's" for path in unrelated)  # never touched
    assert stray.exists()  # may be another job's: reported, never deleted
    assert not (out / PARTIAL_DIR).exists()

    after = verify(store, out=out, layout=layout)
    assert (after.checked, after.missing, after.changed, after.partials) == (2, 0, 0, 0)
    assert after.stray == 1


def test_flat_layout_strays_are_judged_by_the_flat_pattern(tmp_path: Path, store: Store) -> None:
    out = tmp_path / "out"
    done_job(store, out, ["a", "b"], layout=Layout.FLAT)
    (out / "c.png").write_bytes(b"stray")
    (out / "ab").mkdir()
    (out / "ab" / "d.png").write_bytes(b"not flat: unrelated")
    report = verify(store, out=out, layout=Layout.FLAT)
    assert (report.ok, report.stray, report.unrelated) == (2, 1, 1)


def test_a_job_database_kept_inside_out_is_unrelated(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    with Store(out / "jobs.db") as store:
        done_job(store, out, ["a"], layout=Layout.FLAT)
        report = verify(store, out=out, layout=Layout.FLAT, repair=True)
    assert report.clean and report.unrelated >= 1
    assert (out / "jobs.db").exists()


def test_check_file_streams_large_files(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    data = bytes(range(256)) * (3 * CHUNK // 256 + 7)
    path.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    assert check_file(str(path), size=len(data), sha256=digest) == "ok"
    assert check_file(str(path), size=len(data), sha256="0" * 64) == "changed"
    assert check_file(str(path), size=len(data) + 1, sha256=digest) == "changed"
    assert check_file(str(tmp_path / "none.png"), size=1, sha256=digest) == "missing"
    assert check_file(None, size=None, sha256=None) == "missing"


def test_the_report_is_immutable() -> None:
    report = VerifyReport(checked=0, ok=0, missing=0, changed=0, stray=0, partials=0, unrelated=0)
    with pytest.raises(FrozenInstanceError):
        report.ok = 1  # type: ignore[misc]


def test_repair_never_deletes_a_changed_file_outside_batchmaps_own_path(
    tmp_path: Path, store: Store
) -> None:
    # A row recorded under another directory (a job whose files were moved by hand).
    elsewhere = tmp_path / "elsewhere" / "a.png"
    elsewhere.parent.mkdir()
    elsewhere.write_bytes(b"the user's edited copy")
    store.load_ids(["a"])
    (job,) = store.claim(1)
    store.record([Record(job, JobState.DONE, 1, 200, saved=Saved(str(elsewhere), 3, "00"))])
    report = verify(store, out=tmp_path / "out", layout=Layout.FLAT, repair=True)
    assert (report.changed, report.returned_to_pending, report.changed_removed) == (1, 1, 0)
    assert elsewhere.read_bytes() == b"the user's edited copy"
