"""Crash safety end to end: Ctrl-C, SIGTERM and kill -9 on the real CLI, then `resume`."""

from __future__ import annotations

import os
import random
import signal
import socket
import sqlite3
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from batchmap.files import Layout, heatmap_path
from tests.conftest import (
    FakeServer,
    Row,
    Spawned,
    Workspace,
    check_done_row,
    check_final_states,
    expected_sha,
    expected_state,
    files_under,
    make_ids,
    partial_files,
    read_rows,
    sha256_file,
    wait_for,
)

StartServer = Callable[..., FakeServer]


def final_path(out: Path, identifier: str) -> Path:
    """Where the CLI puts the heatmap of `identifier` with the default (sharded) layout."""
    return heatmap_path(out.absolute(), identifier, layout=Layout.SHARDED).resolve()


def check_after_kill(rows: dict[str, Row], out: Path) -> None:
    """What must hold right after kill -9, before anything repairs it.

    Every `done` row has its complete file. A file under --out belongs to a `done` row, or to
    a `running` row when the kill fell between the file's rename and the `done` commit; then
    it is complete (never a partial under the final name) and `resume` must deal with it.
    """
    owners = {final_path(out, identifier): row for identifier, row in rows.items()}
    for row in rows.values():
        if row["state"] == "done":
            check_done_row(row, out)
    for path in files_under(out):
        owner = owners.get(path)
        assert owner is not None, f"stray file {path}"
        assert owner["state"] in ("done", "running"), (path, owner)
        assert sha256_file(path) == expected_sha(owner["identifier"]), f"incomplete file {path}"


# --------------------------------------------------------------------------- graceful stops


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_the_run_with_130_and_resume_finishes_without_refetching(
    workspace: Workspace, fake_server_factory: StartServer, signum: signal.Signals
) -> None:
    server = fake_server_factory("--no-limits", "--latency", "0.2")
    ids = make_ids(f"stop-{signum.name}", ok=90, no_heatmap=5, missing=5)
    csv_path = workspace.csv(ids)
    running = workspace.spawn(*workspace.fetch_args(["run", csv_path.name], server))
    wait_for(lambda: server.requests() >= 16, timeout=30, what="the run to be fetching")

    running.process.send_signal(signum)
    sent = time.monotonic()
    result = running.finish(timeout=30)
    assert time.monotonic() - sent < 5, "a graceful stop waits for 0.2 s answers, not more"
    assert result.code == 130, result.output
    assert "Traceback" not in result.output
    assert "run interrupted" in result.stdout  # the summary
    assert "batchmap resume" in result.stdout

    rows = workspace.rows()
    states = Counter(row["state"] for row in rows.values())
    assert states["running"] == 0
    assert states["pending"] > 0 and states["done"] > 0, states
    for row in rows.values():
        if row["state"] == "done":
            check_done_row(row, workspace.out)
    done_paths = {Path(r["path"]).resolve() for r in rows.values() if r["state"] == "done"}
    assert files_under(workspace.out) == done_paths
    assert partial_files(workspace.out) == []
    asked = server.per_identifier()
    for identifier, row in rows.items():
        # Finished rows were asked once (none the prefilter ended); a pending row at most once
        # (an abandoned request).
        once = 0 if row["state"] == "no_heatmap" else 1
        assert asked[identifier] <= 1 if row["state"] == "pending" else asked[identifier] == once

    resumed = workspace.resume(server, "--concurrency", "16")
    assert resumed.code == 1, resumed.output  # some identifiers are unknown (404)
    check_final_states(workspace.rows(), ids, workspace.out)
    again = server.per_identifier()
    pending = {i for i, row in rows.items() if row["state"] == "pending"}
    wanted = {i: int(i in pending and expected_state(i) != "no_heatmap") for i in ids}
    assert {i: again[i] - asked[i] for i in ids} == wanted


def _has_job_table(db: Path) -> bool:
    if not db.exists():
        return False
    with sqlite3.connect(db, timeout=5) as conn:
        found = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'jobs'").fetchone()
    conn.close()
    return found is not None


@pytest.mark.parametrize(
    "signum",
    [signal.SIGINT, signal.SIGTERM],
    ids=["SIGINT", "SIGTERM"],
)
def test_a_signal_while_a_large_csv_loads_exits_130_and_adds_nothing(
    workspace: Workspace, shared_fake: FakeServer, signum: signal.Signals
) -> None:
    big = workspace.root / "big.csv"
    big.write_text("identifier\n" + "".join(f"big-{i:07d}\n" for i in range(200_000)))
    running = workspace.spawn(*workspace.fetch_args(["run", big.name], shared_fake))
    # The job table exists once loading starts; loading 200k identifiers takes about a second.
    wait_for(
        lambda: _has_job_table(workspace.db) or running.process.poll() is not None,
        timeout=30,
        interval=0.002,
    )
    running.process.send_signal(signum)
    result = running.finish(timeout=30)
    assert result.code == 130, result.output
    assert "Traceback" not in result.output
    assert result.stderr.strip().endswith("interrupted"), result.stderr
    with sqlite3.connect(workspace.db) as conn:
        (loaded,) = conn.execute("SELECT count(*) FROM jobs").fetchone()
    conn.close()
    assert loaded == 0  # the load is one transaction: an interrupted one adds nothing


# --------------------------------------------------------------------------- kill -9

KILLS = 10


def _ended_or_asked(process: Spawned, server: FakeServer, requests: int) -> Callable[[], bool]:
    """True once `process` has ended or the server has answered `requests` requests in all."""
    return lambda: process.process.poll() is not None or server.requests() >= requests


def test_kill_9_at_random_instants_then_resume_finishes_everything_exactly_once(
    workspace: Workspace, fake_server_factory: StartServer
) -> None:
    server = fake_server_factory("--no-limits", "--latency", "0.01")
    ids = make_ids("crash", ok=176, no_heatmap=12, missing=12)
    csv_path = workspace.csv(ids)
    # A fixed schedule (BATCHMAP_KILL_SEED explores others): the test never depends on luck.
    seed = int(os.environ.get("BATCHMAP_KILL_SEED", "20261128"))
    rng = random.Random(seed)
    print(f"kill -9 schedule seed: {seed}")  # shown by pytest if the test fails
    done_asked: dict[str, int] = {}  # requests the server had seen when a row was first `done`
    mid_work = 0  # kills that landed while the run was fetching and rows were unfinished

    for k in range(KILLS):
        command = ["run", csv_path.name] if k % 2 == 0 else ["resume"]
        start = server.requests()
        victim = workspace.spawn(*workspace.fetch_args(command, server))
        if k % 3 == 1:
            # Any instant after process start: imports, loading, recovery or fetching; but
            # never past a few requests, so the job is not finished before the last kill.
            asked_enough = _ended_or_asked(victim, server, start + 15)
            until = time.monotonic() + rng.uniform(0.25, 1.0)
            while time.monotonic() < until and not asked_enough():
                time.sleep(0.005)
        else:
            # An instant within the fetching, after a random number of requests.
            target = start + rng.randint(1, 15)
            wait_for(_ended_or_asked(victim, server, target), timeout=30, interval=0.005)
            time.sleep(rng.uniform(0.0, 0.02))
        victim.process.kill()
        victim.process.wait(timeout=10)

        asked = server.per_identifier()
        rows = read_rows(workspace.db) if workspace.db.exists() else {}
        context = f"kill {k} (seed {seed})"
        assert k > 0 or rows, f"{context}: the first run was killed before it loaded the CSV"
        check_after_kill(rows, workspace.out)
        for identifier, row in rows.items():
            if row["state"] == "done":
                done_asked.setdefault(identifier, asked[identifier])
        regressed = [i for i in done_asked if rows[i]["state"] != "done"]
        assert regressed == [], f"{context}: done rows changed state"
        unfinished = sum(row["state"] in ("pending", "running") for row in rows.values())
        print(
            f"{context}: {' '.join(command[:1])} killed, {len(done_asked)} done, "
            f"{unfinished} unfinished, {server.requests() - start} requests"
        )
        mid_work += unfinished > 0 and server.requests() > start

    assert mid_work >= KILLS // 2, "most kills should land while there is work in flight"
    final = workspace.resume(server)
    assert final.code == 1, final.output
    rows = workspace.rows()
    check_final_states(rows, ids, workspace.out)  # no strays, no partials, right files
    asked = server.per_identifier()
    refetched = {i: asked[i] - n for i, n in done_asked.items() if asked[i] != n}
    assert refetched == {}, f"rows done at a kill were downloaded again (seed {seed})"


# --------------------------------------------------------------------------- crash windows


def _crash_state(db: Path, identifier: str, *, state: str) -> None:
    """Rewrite one finished row as a killed process leaves it (no recorded file, no result)."""
    with sqlite3.connect(db) as conn:
        conn.execute(
            "UPDATE jobs SET state = ?, http_status = NULL, attempts = 0, path = NULL, "
            "bytes = NULL, sha256 = NULL, error = NULL, retryable = NULL, finished_at = NULL "
            "WHERE identifier = ?",
            (state, identifier),
        )
    conn.close()


def _victim_setup(
    workspace: Workspace, fake_server_factory: StartServer, prefix: str
) -> tuple[list[str], str, Path]:
    """A finished run, its first identifier, and that identifier's file."""
    server = fake_server_factory("--no-limits")
    ids = make_ids(prefix, ok=4)
    result = workspace.run(workspace.csv(ids), server)
    assert result.code == 0, result.output
    victim = ids[0]
    path = Path(workspace.rows()[victim]["path"])
    assert path.resolve() == final_path(workspace.out, victim)
    return ids, victim, path


def test_recovery_removes_the_file_of_a_running_row_before_any_request(
    workspace: Workspace, fake_server_factory: StartServer
) -> None:
    # kill -9 after publish renamed the file, before its batch was recorded: the row is
    # `running` and its complete file sits under the final name. The API is unreachable
    # now, so nothing but recovery can remove it.
    _, victim, path = _victim_setup(workspace, fake_server_factory, "window-running")
    _crash_state(workspace.db, victim, state="running")
    (workspace.out / ".partial").mkdir(exist_ok=True)
    (workspace.out / ".partial" / "other.png.12345").write_bytes(b"\x89PNG\r\n\x1a\nhalf")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"

    result = workspace.cli(
        "resume", "--db", workspace.db, "--out", workspace.out, "--base-url", closed
    )
    assert result.code == 4, result.output  # unreachable: stopped before any answer
    rows = workspace.rows()
    assert rows[victim]["state"] == "pending"
    assert not path.exists(), "an unrecorded file stayed under the final name"
    assert partial_files(workspace.out) == []


def test_a_leftover_file_of_a_pending_row_never_stays_when_the_row_fails(
    workspace: Workspace, fake_server_factory: StartServer
) -> None:
    # Recovery removes files before it marks rows pending, but a power cut can still roll
    # the database back past a claim whose file was fsynced: a `pending` row with a file.
    ids, victim, path = _victim_setup(workspace, fake_server_factory, "window-pending")
    _crash_state(workspace.db, victim, state="pending")
    broken = fake_server_factory("--no-limits", "--not-png-rate", "1.0")

    result = workspace.resume(broken, "--max-attempts", "1")
    assert result.code == 1, result.output
    rows = workspace.rows()
    assert rows[victim]["state"] == "failed"
    assert not path.exists(), "an unrecorded file stayed under the final name"
    assert files_under(workspace.out) == {
        Path(rows[i]["path"]).resolve() for i in ids if i != victim
    }
    assert partial_files(workspace.out) == []


def test_a_pause_the_server_imposed_survives_a_restart(
    workspace: Workspace, fake_server_factory: StartServer
) -> None:
    # 4 requests per 5 s: the run uses them up, meets a 429 and pauses the pool.
    server = fake_server_factory("--limit", "4/5")
    ids = make_ids("paused", ok=8)
    running = workspace.spawn(*workspace.fetch_args(["run", workspace.csv(ids).name], server))
    wait_for(lambda: server.stats()["by_status"].get("429", 0) >= 1, timeout=30, what="a 429")
    time.sleep(0.3)  # the pacer's state is saved every half second
    running.process.send_signal(signal.SIGINT)
    assert running.finish(timeout=30).code == 130
    status = workspace.status()
    assert status["pause"] is not None and "429" in status["pause"]["reason"], status
    limited = server.stats()["by_status"]["429"]

    # The restart waits out the pause it inherited instead of opening with a 429.
    resumed = workspace.resume(server)
    assert resumed.code == 0, resumed.output
    assert server.stats()["by_status"]["429"] == limited
    check_final_states(workspace.rows(), ids, workspace.out)
