"""End-to-end: the real `batchmap` CLI against the real fake server, over a loopback socket."""

from __future__ import annotations

import csv
import io
import json
import re
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from batchmap.store import REPORT_COLUMNS
from tests.conftest import (
    API_KEY,
    FORBIDDEN_KEY,
    FakeServer,
    Result,
    Row,
    Workspace,
    check_done_row,
    check_final_states,
    cli_env,
    expected_state,
    files_under,
    make_ids,
    partial_files,
    wait_for,
)

StartServer = Callable[..., FakeServer]


def counts_of(rows: dict[str, Row]) -> dict[str, int]:
    states = ("pending", "running", "done", "no_heatmap", "failed")
    return {state: sum(1 for r in rows.values() if r["state"] == state) for state in states}


def requests_for(server: FakeServer, identifiers: list[str]) -> dict[str, int]:
    seen = server.per_identifier()
    return {identifier: seen[identifier] for identifier in identifiers}


def once_each(identifiers: list[str], *, again: set[str] = frozenset()) -> dict[str, int]:  # type: ignore[assignment]
    """Heatmap requests a run should have made: none for rows the prefilter ended."""
    return {
        i: 0 if expected_state(i) == "no_heatmap" else 2 if i in again else 1 for i in identifiers
    }


def error_line(result: Result) -> str:
    """The one `batchmap: error:` line on stderr, which is its last; never a traceback."""
    assert "Traceback" not in result.output
    lines = result.stderr.strip("\n").split("\n")
    errors = [line for line in lines if line.startswith("batchmap: error: ")]
    assert errors == lines[-1:], result.stderr
    return errors[0]


def one_error_line(result: Result) -> str:
    """Nothing on stderr but the one `batchmap: error:` line."""
    message = error_line(result)
    assert result.stderr == message + "\n", result.stderr
    return message


# --------------------------------------------------------------------------- a mixed run


MIXED = make_ids("t", ok=30, no_heatmap=5, missing=5)


@pytest.fixture(scope="module")
def mixed_run(
    tmp_path_factory: pytest.TempPathFactory, shared_fake: FakeServer
) -> tuple[Workspace, Result]:
    """One run over identifiers answered 200, 204 and 404; several tests read what it left."""
    space = Workspace(tmp_path_factory.mktemp("mixed"), cli_env(IDENTIFAI_API_KEY=API_KEY))
    result = space.run(space.csv(MIXED), shared_fake)
    return space, result


def test_a_run_with_unknown_identifiers_exits_1_and_records_every_outcome(
    mixed_run: tuple[Workspace, Result],
) -> None:
    space, result = mixed_run
    assert result.code == 1, result.output
    assert "Traceback" not in result.output
    assert "loaded ids.csv: 40 identifiers read, 40 added" in result.stderr
    assert "Some rows failed" in result.stdout
    rows = space.rows()
    check_final_states(rows, MIXED, space.out)
    for row in rows.values():
        assert row["finished_at"] is not None, row
        known = row["state"] != "failed"  # the list is silent on identifiers it does not know
        assert (row["verdict"] in ("artificial", "human")) is known, row
        if row["state"] == "no_heatmap":
            # Ended by the classifications prefilter: no heatmap request was spent on it.
            assert (row["attempts"], row["has_heatmap"], row["http_status"]) == (0, 0, None)
            assert (row["error"], row["sha256"]) == (None, None), row
            continue
        assert row["attempts"] == 1, row
        if row["state"] == "done":
            assert row["error"] is None, row
        else:
            assert row["http_status"] == 404, row
            assert "404" in row["error"] and "Image not found" in row["error"], row
            assert row["retryable"] == 0, row


def test_every_done_row_has_its_exact_png_inside_out(mixed_run: tuple[Workspace, Result]) -> None:
    space, _ = mixed_run
    done = [row for row in space.rows().values() if row["state"] == "done"]
    assert len(done) == 30
    for row in done:
        check_done_row(row, space.out)
    assert len({row["path"] for row in done}) == 30


def test_status_json_counts_every_state(mixed_run: tuple[Workspace, Result]) -> None:
    space, _ = mixed_run
    status = space.status()
    assert status["total"] == 40
    assert status["counts"] == counts_of(space.rows()) == {
        "pending": 0, "running": 0, "done": 30, "no_heatmap": 5, "failed": 5,
    }  # fmt: skip
    assert status["http_status"] == {"200": 30, "none": 5, "404": 5}  # 5 ended by the prefilter
    assert status["top_errors"] == [{"error": "HTTP 404: Image not found", "count": 5}]
    assert Path(status["out"]) == space.out.absolute()


def _reported(table: dict[str, Row]) -> dict[str, Row]:
    # Reports carry REPORT_COLUMNS: the raw classification JSON and asked_at stay in the table.
    return {key: {name: row[name] for name in REPORT_COLUMNS} for key, row in table.items()}


def report_rows(space: Workspace) -> dict[str, Row]:
    """The job table as a report shows it: the report columns, in their order."""
    return {
        identifier: {column: row[column] for column in REPORT_COLUMNS}
        for identifier, row in space.rows().items()
    }


def _as_text(row: Row) -> dict[str, str]:
    return {key: "" if value is None else str(value) for key, value in row.items()}


@pytest.mark.parametrize("fmt", ["csv", "json", "jsonl"])
def test_report_carries_exactly_the_rows_of_the_job_table(
    mixed_run: tuple[Workspace, Result], fmt: str
) -> None:
    space, _ = mixed_run
    result = space.cli("report", "--db", space.db, "--format", fmt)
    assert result.code == 0, result.output
    table = _reported(space.rows())
    records: list[dict[str, Any]]
    if fmt == "csv":
        records = list(csv.DictReader(io.StringIO(result.stdout)))
        expected: list[dict[str, Any]] = [_as_text(row) for row in table.values()]
    elif fmt == "json":
        records = json.loads(result.stdout)
        expected = list(table.values())
    else:
        records = [json.loads(line) for line in result.stdout.splitlines()]
        expected = list(table.values())
    assert records == expected


def test_report_of_one_state_to_a_file(mixed_run: tuple[Workspace, Result]) -> None:
    space, _ = mixed_run
    target = space.root / "failed.jsonl"
    result = space.cli(
        "report", "--db", space.db, "--format", "jsonl", "--state", "failed", "-o", target.name
    )
    assert result.code == 0, result.output
    assert f"wrote 5 rows to {target.name}" in result.stderr
    records = [json.loads(line) for line in target.read_text(encoding="utf-8").splitlines()]
    table = _reported(space.rows())
    assert records == [row for row in table.values() if row["state"] == "failed"]


# --------------------------------------------------------------------------- exit codes, reruns


def test_a_run_where_every_heatmap_exists_exits_0_and_resume_fetches_nothing(
    workspace: Workspace, shared_fake: FakeServer
) -> None:
    ids = make_ids("all-ok", ok=20)
    result = workspace.run(workspace.csv(ids), shared_fake)
    assert result.code == 0, result.output
    check_final_states(workspace.rows(), ids, workspace.out)
    assert requests_for(shared_fake, ids) == dict.fromkeys(ids, 1)

    again = workspace.resume(shared_fake)
    assert again.code == 0, again.output
    assert requests_for(shared_fake, ids) == dict.fromkeys(ids, 1)


def test_rerun_load_and_resume_of_a_finished_table_send_no_request_and_change_no_row(
    workspace: Workspace, shared_fake: FakeServer
) -> None:
    ids = make_ids("rerun", ok=16, no_heatmap=2, missing=2)
    csv_path = workspace.csv(ids)
    first = workspace.run(csv_path, shared_fake)
    assert first.code == 1, first.output
    finished = workspace.rows()
    check_final_states(finished, ids, workspace.out)
    assert requests_for(shared_fake, ids) == once_each(ids)

    loaded = workspace.cli("load", csv_path, "--db", workspace.db)
    assert loaded.code == 0, loaded.output
    assert "20 identifiers read, 0 added, 20 already known or duplicate" in loaded.stderr
    # Exit codes are about this invocation: last run's 404s do not fail a run that had
    # nothing to do (a nightly cron can tell a new failure from last month's), unless --strict.
    second = workspace.run(csv_path, shared_fake)
    assert second.code == 0, second.output
    nothing = "nothing to do: 20 rows finished earlier; 2 rows failed earlier"
    assert nothing in second.stdout
    resumed = workspace.resume(shared_fake)
    assert resumed.code == 0, resumed.output
    assert nothing in resumed.stdout
    assert workspace.resume(shared_fake, "--strict").code == 1
    assert requests_for(shared_fake, ids) == once_each(ids)
    assert workspace.rows() == finished  # not even a timestamp moved

    # --retry-failed asks again for the failed rows, and only for them.
    retried = workspace.resume(shared_fake, "--retry-failed")
    assert retried.code == 1, retried.output
    failed = {i for i in ids if expected_state(i) == "failed"}
    assert requests_for(shared_fake, ids) == once_each(ids, again=failed)
    check_final_states(workspace.rows(), ids, workspace.out)


# --------------------------------------------------------------------------- loading

LOADED = re.compile(
    r"loaded (?P<file>\S+): (?P<read>\d+) identifiers read, (?P<added>\d+) added, "
    r"(?P<dups>\d+) already known or duplicate, (?P<blank>\d+) blank"
)


def load_counts(result: Result) -> tuple[str, int, int, int, int]:
    assert result.code == 0, result.output
    found = LOADED.search(result.stderr)
    assert found is not None, result.stderr
    return (
        found["file"], int(found["read"]), int(found["added"]), int(found["dups"]),
        int(found["blank"]),
    )  # fmt: skip


def test_loading_is_idempotent_trims_and_counts_duplicates_and_blank_lines(
    workspace: Workspace,
) -> None:
    first = workspace.root / "first.csv"
    first.write_text(
        "identifier\n"
        + "".join(f"load-{i:02d}\n" for i in range(1, 6))
        + "\n"  # blank line
        + "load-02\n"  # duplicate
        + "  load-03  \n"  # duplicate once trimmed
        + "   \n"  # whitespace only: blank
        + "".join(f"load-{i:02d}\n" for i in range(6, 11))
        + "load-10\n",  # duplicate
        encoding="utf-8",
    )
    overlap = workspace.csv([f"load-{i:02d}" for i in range(6, 16)], name="overlap.csv")

    assert load_counts(workspace.cli("load", first.name, "--db", workspace.db)) == (
        "first.csv", 13, 10, 3, 2,
    )  # fmt: skip
    assert load_counts(workspace.cli("load", first.name, "--db", workspace.db)) == (
        "first.csv", 13, 0, 13, 2,
    )  # fmt: skip
    assert load_counts(workspace.cli("load", overlap.name, "--db", workspace.db)) == (
        "overlap.csv", 10, 5, 5, 0,
    )  # fmt: skip
    rows = workspace.rows()
    assert list(rows) == [f"load-{i:02d}" for i in range(1, 16)]
    assert {row["state"] for row in rows.values()} == {"pending"}
    assert not workspace.out.exists()  # load fetches nothing


# --------------------------------------------------------------------------- rate limits, faults


def test_a_rate_limited_run_paces_itself_and_never_fails_a_row_for_429(
    workspace: Workspace, fake_server_factory: StartServer
) -> None:
    server = fake_server_factory("--limit", "5/1")  # Laravel's whole-second windows
    ids = make_ids("pace", ok=36, no_heatmap=2, missing=2)
    result = workspace.run(workspace.csv(ids), server)
    assert result.code == 1, result.output
    rows = workspace.rows()
    check_final_states(rows, ids, workspace.out)
    for row in rows.values():
        # A 429 is not an attempt; a row the prefilter ended cost no heatmap request at all.
        assert row["attempts"] == (0 if row["state"] == "no_heatmap" else 1), row
        assert "429" not in (row["error"] or ""), row
    stats = server.stats()
    heatmap_200 = stats["by_status"]["200"] - stats["classification_by_status"].get("200", 0)
    assert (heatmap_200, stats["by_status"]["404"]) == (36, 2)
    limited = stats["by_status"].get("429", 0)
    assert limited <= max(2, 0.03 * stats["requests"]), stats["by_status"]


def test_transient_5xx_are_retried_until_every_row_ends_right(
    workspace: Workspace, fake_server_factory: StartServer
) -> None:
    # The fake's dice are seeded, so request n of the run is a 503 or not whatever the timing;
    # --backoff-base keeps the real exponential backoff short.
    server = fake_server_factory("--no-limits", "--error-rate", "0.3", "--seed", "1")
    ids = make_ids("flaky", ok=16, no_heatmap=2, missing=2)
    result = workspace.run(
        workspace.csv(ids), server, "--max-attempts", "10", "--timeout", "5",
        "--backoff-base", "0.02", "--no-prefilter",
    )  # fmt: skip
    assert result.code == 1, result.output
    rows = workspace.rows()
    check_final_states(rows, ids, workspace.out)
    attempts = sum(row["attempts"] for row in rows.values())
    stats = server.stats()
    # Failures while others succeed cost their row an attempt; in a streak they cost nothing.
    assert stats["requests"] >= attempts and stats["by_status"]["503"] >= 7
    for row in rows.values():
        if row["state"] != "failed":
            assert row["error"] is None, row  # a later success clears the transient error


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (("--error-rate", "1.0"), "HTTP 503"),
        (("--latency", "3"), "no answer within 0.3s"),
        (("--truncate-rate", "1.0"), "peer closed connection"),
    ],
    ids=["503", "too-slow", "truncated"],
)
def test_a_server_that_never_answers_well_is_an_outage_that_fails_no_row(
    workspace: Workspace, fake_server_factory: StartServer, flags: tuple[str, str], said: str
) -> None:
    server = fake_server_factory("--no-limits", *flags)
    ids = make_ids("down", ok=10)
    result = workspace.run(
        workspace.csv(ids), server, "--max-attempts", "2", "--timeout", "0.3",
        "--outage-limit", "3", "--no-prefilter",
    )  # fmt: skip
    assert result.code == 4, result.output
    message = error_line(result)
    assert "--outage-limit" in message and said in message and "batchmap resume" in message
    rows = workspace.rows()
    assert {(row["state"], row["attempts"]) for row in rows.values()} == {("pending", 0)}
    assert server.requests() < 4 * len(ids)  # probes, not a retry storm
    assert files_under(workspace.out) == set()
    assert partial_files(workspace.out) == []


def test_a_row_whose_answer_is_never_a_png_fails_retryable_while_others_succeed(
    workspace: Workspace, fake_server_factory: StartServer
) -> None:
    server = fake_server_factory("--no-limits", "--not-png-rate", "1.0")
    ids = make_ids("damaged", ok=8)
    result = workspace.run(workspace.csv(ids), server, "--max-attempts", "2", "--timeout", "5")
    assert result.code == 1, result.output
    rows = workspace.rows()
    assert sorted(rows) == sorted(ids)
    for row in rows.values():
        # The server answered 200 every time: the body is the row's problem, never an outage.
        assert (row["state"], row["attempts"], row["retryable"]) == ("failed", 2, 1), row
        assert row["path"] is None and row["sha256"] is None, row
        assert "not a PNG" in row["error"], row
    assert files_under(workspace.out) == set()
    assert partial_files(workspace.out) == []


def test_dropped_connections_are_retried_until_every_row_ends_right(
    workspace: Workspace, fake_server_factory: StartServer
) -> None:
    server = fake_server_factory("--no-limits", "--drop-rate", "0.3", "--seed", "7")
    ids = make_ids("dropped", ok=16, no_heatmap=2, missing=2)
    result = workspace.run(
        workspace.csv(ids), server, "--max-attempts", "10", "--backoff-base", "0.02"
    )
    assert result.code == 1, result.output
    check_final_states(workspace.rows(), ids, workspace.out)
    assert server.stats()["dropped"] > 0


# --------------------------------------------------------------------------- the API key


def test_a_wrong_key_stops_the_run_with_exit_3_and_leaves_rows_pending(
    workspace: Workspace, fake_server_factory: StartServer
) -> None:
    server = fake_server_factory("--no-limits")
    ids = make_ids("wrong-key", ok=18, no_heatmap=1, missing=1)
    csv_path = workspace.csv(ids)
    wrong = "wrong-key-b8Tq4Lm2ZxVv"
    result = workspace.cli(
        *workspace.fetch_args(["run", csv_path.name], server, "--concurrency", "4"),
        env=cli_env(IDENTIFAI_API_KEY=wrong),
    )
    assert result.code == 3, result.output
    message = error_line(result)
    assert "401" in message and "API key" in message
    assert wrong not in result.output
    rows = workspace.rows()
    assert {(r["state"], r["attempts"], r["http_status"]) for r in rows.values()} == {
        ("pending", 0, None)
    }
    assert server.requests() <= 4  # stopped at once: no request after those already in flight

    fixed = workspace.resume(server)  # the right key picks the table up as it was
    assert fixed.code == 1, fixed.output
    check_final_states(workspace.rows(), ids, workspace.out)


def test_a_key_without_api_access_stops_with_exit_3_and_says_to_accept_the_terms(
    workspace: Workspace, shared_fake: FakeServer
) -> None:
    ids = make_ids("forbidden", ok=10)
    csv_path = workspace.csv(ids)
    result = workspace.cli(
        *workspace.fetch_args(["run", csv_path.name], shared_fake),
        env=cli_env(IDENTIFAI_API_KEY=FORBIDDEN_KEY),
    )
    assert result.code == 3, result.output
    message = error_line(result)
    assert "403" in message and "terms of service" in message
    assert {row["state"] for row in workspace.rows().values()} == {"pending"}


def _files_holding(root: Path, needle: bytes) -> list[Path]:
    return [
        path
        for path in sorted(root.rglob("*"))
        if path.is_file() and not path.name.startswith("fake-") and needle in path.read_bytes()
    ]


def test_the_api_key_never_reaches_the_database_reports_or_verbose_output(
    workspace: Workspace, shared_fake: FakeServer
) -> None:
    ids = make_ids("secret", ok=10, no_heatmap=2, missing=2)
    result = workspace.run(workspace.csv(ids), shared_fake, "-vv")
    assert result.code == 1, result.output
    assert "HTTP Request: GET" in result.stderr  # -vv really logs every request
    outputs = [
        result,
        workspace.cli("status", "--db", workspace.db),
        workspace.cli("report", "--db", workspace.db, "--format", "csv"),
    ]
    for fmt in ("csv", "json", "jsonl", "html"):  # reports to files: the scan below reads them
        outputs.append(
            workspace.cli("report", "--db", workspace.db, "--format", fmt, "-o", f"r.{fmt}")
        )
    for output in outputs:
        assert output.code in (0, 1), output.output
        assert API_KEY not in output.output
    # The database, its WAL and shm files, the lock file, the reports and the heatmaps.
    assert (workspace.root / "r.html").stat().st_size > 0
    assert _files_holding(workspace.root, API_KEY.encode()) == []


def test_the_api_key_option_works_and_is_not_stored(
    workspace: Workspace, shared_fake: FakeServer
) -> None:
    ids = make_ids("key-option", ok=5)
    csv_path = workspace.csv(ids)
    env = {k: v for k, v in workspace.env.items() if k != "IDENTIFAI_API_KEY"}
    result = workspace.cli(
        *workspace.fetch_args(["run", csv_path.name], shared_fake, "--api-key", API_KEY),
        env=env,
    )
    assert result.code == 0, result.output
    check_final_states(workspace.rows(), ids, workspace.out)
    assert API_KEY not in result.output
    assert _files_holding(workspace.root, API_KEY.encode()) == []


def _second_loopback_host() -> str:
    """127.0.0.2 where the system routes all of 127/8 to loopback (Linux), else 127.0.0.1."""
    try:
        with socket.socket() as probe:
            probe.bind(("127.0.0.2", 0))
    except OSError:
        return "127.0.0.1"  # a different port is a different origin too
    return "127.0.0.2"


def test_a_redirect_to_another_origin_is_refused_and_the_key_never_sent_there(
    workspace: Workspace, fake_server_factory: StartServer
) -> None:
    elsewhere = fake_server_factory("--no-limits", host=_second_loopback_host())
    server = fake_server_factory("--no-limits", "--redirect-to", elsewhere.url)
    ids = make_ids("redirect", ok=5)
    result = workspace.run(workspace.csv(ids), server)
    # Every answer redirects elsewhere: an answer about the address, not about the rows.
    assert result.code == 4, result.output
    assert "(another origin, not followed)" in result.output
    for row in workspace.rows().values():
        assert row["state"] == "pending", row
    assert server.requests() <= len(ids) + 1  # and one classifications request, refused too
    assert elsewhere.requests() == 0 and not elsewhere.per_identifier()


# --------------------------------------------------------------------------- identifiers, input

AWKWARD = [
    "a/b/c", "..", ".", "what?x=1", "frag#ment", "pre%2Fencoded", "with space inside",
    "héllo wörld 画像", "../../etc/passwd", "/leading-slash", "trailing/", "back\\slash",
    "..%2F..%2Fescape", "Mixed", "mixed", "%", ".hidden", "'quote\"", "nul.txt",
]  # fmt: skip


@pytest.mark.parametrize("layout", ["sharded", "flat"])
def test_any_identifier_is_fetched_percent_encoded_and_saved_inside_out(
    workspace: Workspace, shared_fake: FakeServer, layout: str
) -> None:
    ids = AWKWARD
    assert {expected_state(i) for i in ids} == {"done"}
    before = shared_fake.per_identifier()
    result = workspace.run(workspace.csv(ids), shared_fake, "--layout", layout)
    assert result.code == 0, result.output
    rows = workspace.rows()
    check_final_states(rows, ids, workspace.out)  # paths resolve inside --out, right sha256
    assert len({row["path"] for row in rows.values()}) == len(ids)
    outside = {
        path.name
        for path in workspace.root.rglob("*")
        if path.is_file() and workspace.out not in path.parents
    }
    assert outside <= {"ids.csv", "jobs.db", "jobs.db-wal", "jobs.db-shm", "jobs.db.lock"}
    # The server saw each identifier, decoded, exactly once: nothing was mangled in the URL.
    after = shared_fake.per_identifier()
    assert {i: after[i] - before[i] for i in ids} == dict.fromkeys(ids, 1)


BAD_INPUTS: dict[str, tuple[bytes | None, list[str], list[str]]] = {
    # name: (file bytes or None for a missing file, extra options, texts the message holds)
    "missing": (None, [], ["missing.csv", "no such file"]),
    "empty": (b"", [], ["empty.csv", "empty"]),
    "wrong-column": (b"identifier\nabc\n", ["--column", "image"], ["wrong-column.csv:1", "image"]),
    "latin1": (b"identifier\nabc\ncaf\xe9\n", [], ["latin1.csv:3", "UTF-8"]),
    "nul": (b"identifier\nabc\nde\x00f\n", [], ["nul.csv:3", "NUL"]),
}


@pytest.mark.parametrize("command", ["load", "run"])
@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_naming_the_file_with_exit_2(
    workspace: Workspace, shared_fake: FakeServer, case: str, command: str
) -> None:
    content, options, texts = BAD_INPUTS[case]
    csv_path = workspace.root / f"{case}.csv"
    if content is not None:
        csv_path.write_bytes(content)
    args: list[str | Path] = [command, csv_path.name, "--db", workspace.db, *options]
    if command == "run":
        args += ["--out", workspace.out, "--base-url", shared_fake.url]
    result = workspace.cli(*args)
    assert result.code == 2, result.output
    message = one_error_line(result)
    for text in texts:
        assert text in message, message
    assert result.stdout == ""
    assert not workspace.out.exists()


# --------------------------------------------------------------------------- one database, two runs


def test_a_second_run_on_the_same_database_is_refused_naming_the_first(
    workspace: Workspace, fake_server_factory: StartServer
) -> None:
    slow_server = fake_server_factory("--no-limits", "--latency", "0.3")
    ids = make_ids("twice", ok=20, no_heatmap=2, missing=2)
    csv_path = workspace.csv(ids)
    first = workspace.spawn(
        *workspace.fetch_args(["run", csv_path.name], slow_server, "--concurrency", "4")
    )
    wait_for(lambda: slow_server.requests() > 0, timeout=20, what="the first run to fetch")

    second = workspace.run(csv_path, slow_server)
    assert second.code == 2, second.output
    message = error_line(second)
    assert f"pid {first.pid}" in message and "another batchmap" in message

    finished = first.finish()
    assert finished.code == 1, finished.output
    check_final_states(workspace.rows(), ids, workspace.out)
    assert requests_for(slow_server, ids) == once_each(ids)


# --------------------------------------------------------------------------- try before you spend


def test_limit_fetches_at_most_n_rows_and_asks_only_about_them(
    workspace: Workspace, shared_fake: FakeServer
) -> None:
    ids = make_ids("limit", ok=230, no_heatmap=20)
    first = workspace.run(workspace.csv(ids), shared_fake, "--limit", "10")
    assert first.code == 0, first.output
    assert "--limit 10: 240 rows still pending; `batchmap resume` fetches the rest" in first.stdout
    rows = workspace.rows()
    touched = {i for i in ids if rows[i]["state"] != "pending"}
    assert len(touched) == 10
    asked = {i for i, row in rows.items() if row["asked_at"] is not None}
    assert asked == touched  # the prefilter asked only about the first 10, not 100
    fetched = {i for i, n in requests_for(shared_fake, ids).items() if n}
    assert fetched <= touched and len(fetched) <= 10
    rest = workspace.resume(shared_fake)
    assert rest.code == 0 and {row["state"] for row in workspace.rows().values()} == {
        "done", "no_heatmap"
    }  # fmt: skip


def test_dry_run_loads_nothing_sends_nothing_and_prints_the_cost(
    workspace: Workspace, fake_server_factory: Callable[..., FakeServer]
) -> None:
    server = fake_server_factory("--no-limits")
    ids = make_ids("dry", ok=900, no_heatmap=100)
    csv_path = workspace.csv(ids)
    fresh = workspace.run(csv_path, server, "--dry-run")
    assert fresh.code == 0, fresh.output
    assert not workspace.db.exists() and not workspace.out.exists()
    assert server.stats()["requests"] == 0
    assert "rows to fetch: 1,000 (1,000 new from ids.csv, 0 unfinished in the job)" in fresh.stdout
    assert "without the prefilter: 1,000 heatmap requests, 16m" in fresh.stdout
    assert "with the prefilter: 10 classification requests + at most 1,000" in fresh.stdout
    assert "2 per 1 s, 60 per 60 s (about 1.00/s), identifAI's documented limits" in fresh.stdout

    # Without a key too: an estimate spends nothing. A known job: only its unfinished rows.
    assert workspace.run(csv_path, server, "--limit", "200").code == 0
    before = workspace.rows()
    again = workspace.cli(*workspace.fetch_args(["resume"], server, "--dry-run"), env=cli_env())
    assert again.code == 0, again.output
    assert "rows to fetch: 800 (800 unfinished in the job)" in again.stdout
    assert re.search(
        r"with the prefilter: 8 classification requests \+ about [\d,]+ heatmap requests "
        r"\(\d+% of this job's finished rows had no heatmap\)",
        again.stdout,
    ), again.stdout
    assert workspace.rows() == before
