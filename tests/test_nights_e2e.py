"""Issue 17, end to end: every night ends, and says how.

Each test drives the real CLI through a real socket at a tests/hostile.py server that
misbehaves one way (redirects, trickles, silence, long waits, slow answers under a signal)
and checks that the job either finishes with only rows broken on their own `failed`, or stops
within seconds with rows pending and one line saying what to do; nothing is left `running`.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.conftest import API_KEY, Workspace, cli_env, make_ids, partial_files
from tests.hostile import (
    HostileServer,
    as_proxy,
    failing,
    fake_heatmaps,
    hostile_in_thread,
    huge_pngs,
    redirect_all,
    redirect_loop,
    retry_after,
    silent,
    slow_after,
    stalling,
)

HEATMAP = "/api/classification/heatmap/"
CLASSIFICATIONS = "/api/classifications"


def run(
    space: Workspace, ids: list[str], url: str, *extra: str, command: str = "run"
) -> tuple[int, str, float]:
    head = ["run", space.csv(ids).name] if command == "run" else [command]
    started = time.monotonic()
    result = space.cli(
        *head, "--db", space.db, "--out", space.out, "--base-url", url,
        "--progress-every", "0.5", *extra, env=cli_env(IDENTIFAI_API_KEY=API_KEY),
    )  # fmt: skip
    assert "Traceback" not in result.output, result.output
    return result.code, result.output, time.monotonic() - started


def states(space: Workspace) -> dict[str, int]:
    counted: dict[str, int] = {}
    for row in space.rows().values():
        counted[row["state"]] = counted.get(row["state"], 0) + 1
    return counted


def port_of(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None
    return port


# -- 1. redirects are an answer about the address ---------------------------------------------


def test_a_base_url_that_redirects_to_https_stops_and_names_the_base_url_to_use(
    workspace: Workspace,
) -> None:
    ids = make_ids("upgrade", ok=40)
    server = HostileServer(redirect_all(scheme="https"))
    with hostile_in_thread(server) as url:
        code, output, took = run(workspace, ids, url)
    assert code == 4, output
    port = port_of(url)
    assert f"the API redirects to https://127.0.0.1:{port}" in output
    assert f"use --base-url https://127.0.0.1:{port}" in output
    assert states(workspace) == {"pending": 40}, "a redirecting address failed rows"
    assert len(server.requests) <= 12 and took < 15


def test_a_redirect_loop_stops_the_run_with_rows_pending(workspace: Workspace) -> None:
    ids = make_ids("loop", ok=30)
    server = HostileServer(redirect_loop())
    with hostile_in_thread(server) as url:
        code, output, _ = run(workspace, ids, url, "--no-prefilter")
    assert code == 4, output
    assert f"redirect loop (more than 5 redirects within {url}" in output
    assert states(workspace) == {"pending": 30}
    assert len(server.requests) <= 6 * 8


def test_a_single_row_that_redirects_while_others_succeed_fails_alone(
    workspace: Workspace,
) -> None:
    ids = make_ids("one-redirect", ok=12)
    moved, answer = ids[3], fake_heatmaps(key=API_KEY)

    def handle(request):  # type: ignore[no-untyped-def]
        if request.path.endswith(moved):
            return redirect_all(scheme="https")(request)
        return answer(request)

    with hostile_in_thread(handle) as url:
        code, output, _ = run(workspace, ids, url, "--no-prefilter")
    assert code == 1, output
    assert states(workspace) == {"done": 11, "failed": 1}
    assert "another origin" in (workspace.rows()[moved]["error"] or "")


# -- 2. a row that fails alone fails -----------------------------------------------------------


def test_rows_that_always_trickle_fail_on_their_own_and_the_job_ends(
    workspace: Workspace,
) -> None:
    ids = make_ids("trickle", ok=30)
    slow = ids[-5:]
    server = HostileServer(stalling(slow, every=0.5, then=fake_heatmaps(key=API_KEY)))
    with hostile_in_thread(server) as url:
        code, output, took = run(
            workspace, ids, url, "--no-prefilter", "--timeout", "1", "--max-attempts", "3",
            "--backoff-base", "0.5", "--outage-limit", "20",
        )  # fmt: skip
    assert code == 1, output  # not 4: five rows that trickle are theirs, not an outage
    assert states(workspace) == {"done": 25, "failed": 5}
    rows = workspace.rows()
    for identifier in slow:
        assert rows[identifier]["attempts"] == 3, rows[identifier]
        assert rows[identifier]["error"] == "timed out after 1s"
    assert took < 18, f"{took:.0f} s for five broken rows"
    top = workspace.status()["top_errors"]
    assert {"error": "timed out after 1s", "count": 5} in top


def test_the_same_few_rows_answering_500_fail_instead_of_passing_for_an_outage(
    workspace: Workspace,
) -> None:
    ids = make_ids("always-500", ok=30)
    broken = ids[-4:]
    server = HostileServer(failing(broken, then=fake_heatmaps(key=API_KEY)))
    with hostile_in_thread(server) as url:
        code, output, took = run(
            workspace, ids, url, "--no-prefilter", "--max-attempts", "4",
            "--backoff-base", "0.5", "--outage-limit", "20",
        )  # fmt: skip
    assert code == 1, output  # not 4 after the outage limit: they are broken, the API is not
    assert states(workspace) == {"done": 26, "failed": 4}
    assert {workspace.rows()[i]["attempts"] for i in broken} == {4}
    assert took < 18, f"{took:.0f} s for four broken rows"


def test_status_counts_timeouts_of_rows_still_waiting_for_their_retry(
    workspace: Workspace,
) -> None:
    ids = make_ids("waiting", ok=8)
    slow = ids[:2]
    server = HostileServer(stalling(slow, every=0.5, then=fake_heatmaps(key=API_KEY)))
    with hostile_in_thread(server) as url:
        spawned = workspace.spawn(
            "run", workspace.csv(ids).name, "--db", workspace.db, "--out", workspace.out,
            "--base-url", url, "--no-prefilter", "--timeout", "1", "--backoff-base", "60",
            env=cli_env(IDENTIFAI_API_KEY=API_KEY),
        )  # fmt: skip
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and sum(
            1 for row in workspace.rows().values() if row["error"]
        ) < len(slow):
            time.sleep(0.1)
        spawned.process.send_signal(signal.SIGINT)
        result = spawned.finish(timeout=20)
    assert result.code == 130, result.output
    assert states(workspace) == {"done": 6, "pending": 2}
    top = workspace.status()["top_errors"]
    assert top == [{"error": "timed out after 1s", "count": 2}]


# -- 3. silence is an outage -------------------------------------------------------------------


def test_a_server_that_never_answers_stops_the_run_like_a_refused_one(
    workspace: Workspace,
) -> None:
    ids = make_ids("silence", ok=10)
    with hostile_in_thread(silent()) as url:
        code, output, took = run(workspace, ids, url, "--timeout", "1", "--no-prefilter")
    assert code == 4, output
    assert "never answers (no answer within 1s" in output
    assert states(workspace) == {"pending": 10}
    assert took < 15, f"{took:.0f} s to see that nothing answers"


# -- 4. a server's long wait is kept exactly ---------------------------------------------------


def test_a_daily_quota_is_kept_until_the_time_the_server_named(workspace: Workspace) -> None:
    ids = make_ids("quota", ok=6)
    server = HostileServer(retry_after("86400", times=1000))
    with hostile_in_thread(server) as url:
        code, output, _ = run(workspace, ids, url, "--no-prefilter")
        assert code == 4, output
        assert "the API asked to wait until" in output and "(24 h)" in output
        asked = len(server.requests)
        status = workspace.status()
        assert status["pause"]["seconds_left"] > 86000, status["pause"]
        at = output.split("the API asked to wait until ", 1)[1].split(" (")[0]
        assert f"until {at}" in status["pause"]["reason"]

        code, again, took = run(workspace, ids, url, command="resume")
        assert code == 4 and took < 5, again
        assert f"the API asked to wait until {at} (24 h)" in again
        assert len(server.requests) == asked, "a request went out 24 h early"

        # Allowed to wait: it waits (no request), and a signal still stops it at once.
        spawned = workspace.spawn(
            "resume", "--db", workspace.db, "--base-url", url, "--max-wait", "100000",
            env=cli_env(IDENTIFAI_API_KEY=API_KEY),
        )  # fmt: skip
        time.sleep(2.5)
        spawned.process.send_signal(signal.SIGTERM)
        result = spawned.finish(timeout=15)
    assert result.code == 130, result.output
    assert len(server.requests) == asked
    assert states(workspace) == {"pending": 6}


# -- 5. signals --------------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_signal_stops_within_seconds_even_with_slow_requests_in_flight(
    workspace: Workspace, sig: signal.Signals
) -> None:
    ids = make_ids("signal", ok=30)
    server = HostileServer(slow_after(6, delay=60, then=fake_heatmaps(key=API_KEY)))
    with hostile_in_thread(server) as url:
        spawned = workspace.spawn(
            "run", workspace.csv(ids).name, "--db", workspace.db, "--out", workspace.out,
            "--base-url", url, "--concurrency", "4", "--no-prefilter",
            env=cli_env(IDENTIFAI_API_KEY=API_KEY),
        )  # fmt: skip
        deadline = time.monotonic() + 20
        while len(server.requests) < 9 and time.monotonic() < deadline:
            time.sleep(0.05)
        sent = time.monotonic()
        spawned.process.send_signal(sig)
        result = spawned.finish(timeout=20)
        took = time.monotonic() - sent
    assert result.code == 130, result.output
    assert took < 7, f"{took:.1f} s after {sig.name}: a service manager kills at 10"
    counted = states(workspace)
    assert "running" not in counted and counted.get("done", 0) >= 5, counted
    assert partial_files(workspace.out) == []
    with sqlite3.connect(workspace.db) as conn:
        ended, code, options = conn.execute(
            "SELECT ended_at, exit_code, options FROM runs ORDER BY run_id DESC"
        ).fetchone()
    assert ended is not None and code == 130
    assert json.loads(options)["ended_by"] == sig.name


def test_a_stop_while_every_worker_waits_out_a_pause_is_at_once(workspace: Workspace) -> None:
    ids = make_ids("paused", ok=10)
    server = HostileServer(retry_after("120", times=1000))
    with hostile_in_thread(server) as url:
        spawned = workspace.spawn(
            "run", workspace.csv(ids).name, "--db", workspace.db, "--out", workspace.out,
            "--base-url", url, "--no-prefilter", env=cli_env(IDENTIFAI_API_KEY=API_KEY),
        )  # fmt: skip
        deadline = time.monotonic() + 20
        while not server.requests and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        sent = time.monotonic()
        spawned.process.send_signal(signal.SIGINT)
        result = spawned.finish(timeout=20)
        took = time.monotonic() - sent
    assert result.code == 130, result.output
    assert took < 2.5, f"{took:.1f} s to stop workers that were only waiting"
    assert states(workspace) == {"pending": 10}


# -- 9. the smaller ones -----------------------------------------------------------------------


def test_no_prefilter_is_remembered_by_the_job(workspace: Workspace) -> None:
    ids = make_ids("remember", ok=4, missing=2)
    server = HostileServer(fake_heatmaps(key=API_KEY))
    with hostile_in_thread(server) as url:
        code, output, _ = run(workspace, ids, url, "--no-prefilter")
        assert code == 1, output
        code, output, _ = run(workspace, ids, url, "--retry-failed", command="resume")
        assert code == 1, output
    assert not [r for r in server.requests if r.path.startswith(CLASSIFICATIONS)]


def test_a_png_declaring_a_giant_size_fails_its_row_with_a_clear_error(
    workspace: Workspace,
) -> None:
    ids = make_ids("giant", ok=3)
    with hostile_in_thread(huge_pngs()) as url:
        code, output, _ = run(workspace, ids, url, "--no-prefilter", "--max-attempts", "1")
    assert code == 1, output
    for row in workspace.rows().values():
        assert row["state"] == "failed"
        assert "60000 x 60000 pixels, over the 16384 x 16384" in (row["error"] or ""), row


# -- 8. the guarantees without a test ------------------------------------------------------------

_KILLED_WRITER = """
import os, sqlite3, sys
conn = sqlite3.connect(sys.argv[1])
conn.execute("PRAGMA journal_mode=WAL")
conn.execute("PRAGMA wal_autocheckpoint=0")
conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
conn.executemany("INSERT INTO invoices (total) VALUES (?)", [(i,) for i in range(50)])
conn.commit()
os._exit(0)  # died with its commits in the -wal, never checkpointed
"""


@pytest.mark.parametrize("shm", ["kept", "absent"])
def test_a_foreign_wal_database_is_inspected_without_touching_anything_beside_it(
    workspace: Workspace, shm: str
) -> None:
    db = workspace.root / "books.db"
    written = subprocess.run([sys.executable, "-c", _KILLED_WRITER, str(db)], check=False)
    assert written.returncode == 0
    wal, shm_path = Path(f"{db}-wal"), Path(f"{db}-shm")
    assert wal.stat().st_size > 0
    if shm == "absent":
        shm_path.unlink()
    before = {
        p.name: p.read_bytes() for p in workspace.root.iterdir() if p.name.startswith("books")
    }
    stamps = {p.name: p.stat().st_mtime_ns for p in workspace.root.iterdir() if p.name in before}
    result = workspace.cli("status", "--db", db)
    assert result.code == 2, result.output
    assert "not a batchmap job database (an SQLite database with tables invoices)" in result.output
    after = {p.name: p.read_bytes() for p in workspace.root.iterdir() if p.name.startswith("books")}
    assert after == before, "a file beside the foreign database was changed or created"
    assert {p.name: p.stat().st_mtime_ns for p in workspace.root.iterdir() if p.name in before} == (
        stamps
    )


def test_a_write_error_on_classified_rows_leaves_none_asked_and_stuck(
    workspace: Workspace,
) -> None:
    # The `no_heatmap` update shares the verdicts' transaction: if it fails, nothing of the
    # batch is kept, and the rows are asked again; never pending, asked and has_heatmap=0.
    ids = make_ids("classified", ok=3, no_heatmap=5)
    loaded = workspace.cli("load", workspace.csv(ids).name, "--db", workspace.db)
    assert loaded.code == 0, loaded.output
    with sqlite3.connect(workspace.db) as conn:
        conn.execute(
            "CREATE TRIGGER refuse BEFORE UPDATE OF state ON jobs WHEN NEW.state = 'no_heatmap' "
            "BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END"
        )
    server = HostileServer(fake_heatmaps(key=API_KEY))
    with hostile_in_thread(server) as url:
        code, output, _ = run(workspace, ids, url, command="resume")
        assert code not in (0, 1), output
        stuck = [
            row
            for row in workspace.rows().values()
            if row["state"] in ("pending", "running")  # running: recovered at the next start
            and row["asked_at"]
            and row["has_heatmap"] == 0
        ]
        assert stuck == [], "rows asked, known without a heatmap, and never asked again"
        with sqlite3.connect(workspace.db) as conn:
            conn.execute("DROP TRIGGER refuse")
        code, output, _ = run(workspace, ids, url, command="resume")
    assert code == 0, output
    assert states(workspace) == {"done": 3, "no_heatmap": 5}


def test_429s_answered_to_classifications_requests_are_counted_in_the_timeline(
    workspace: Workspace,
) -> None:
    ids = make_ids("listed-429", ok=4, no_heatmap=2)
    answer, limited = fake_heatmaps(key=API_KEY), retry_after("1", times=2)

    def handle(request):  # type: ignore[no-untyped-def]
        if request.path.startswith(CLASSIFICATIONS) and request.index < 2:
            return limited(request)
        return answer(request)

    server = HostileServer(handle)
    with hostile_in_thread(server) as url:
        code, output, _ = run(workspace, ids, url)
    assert code == 0, output
    sent = sum(1 for r in server.requests if r.path.startswith(CLASSIFICATIONS) and r.index < 2)
    assert sent == 2
    with sqlite3.connect(workspace.db) as conn:
        (counted,) = conn.execute("SELECT sum(rate_limited) FROM timeline").fetchone()
    assert counted == 2, "429s answered to classifications requests left out of the timeline"


# -- 7. proxies are explicit -------------------------------------------------------------------


def test_a_proxy_in_the_environment_is_never_used_for_loopback(workspace: Workspace) -> None:
    ids = make_ids("loopback", ok=3)
    proxy = HostileServer(as_proxy(fake_heatmaps(key=API_KEY)))
    with (
        hostile_in_thread(proxy) as proxy_url,
        hostile_in_thread(fake_heatmaps(key=API_KEY)) as url,
    ):
        result = workspace.cli(
            "run", workspace.csv(ids).name, "--db", workspace.db, "--out", workspace.out,
            "--base-url", url,
            env=cli_env(IDENTIFAI_API_KEY=API_KEY, HTTP_PROXY=proxy_url, ALL_PROXY=proxy_url),
        )  # fmt: skip
    assert result.code == 0, result.output
    assert proxy.requests == []
    assert "through the proxy" not in result.output  # (the temporary path names the test)


def test_a_plain_http_base_url_never_hands_the_key_to_a_proxy_unasked(
    workspace: Workspace,
) -> None:
    ids = make_ids("proxied", ok=3)
    proxy = HostileServer(as_proxy(fake_heatmaps(key=API_KEY)))
    base = "http://api.example.test"  # never resolved: only the proxy on 127.0.0.1 is reached
    with hostile_in_thread(proxy) as proxy_url:
        env = cli_env(IDENTIFAI_API_KEY=API_KEY, HTTP_PROXY=proxy_url)
        args: list[str | Path] = ["--db", workspace.db, "--out", workspace.out, "--base-url", base]
        refused = workspace.cli("run", workspace.csv(ids).name, *args, env=env)
        assert refused.code == 2, refused.output
        assert f"through the proxy {proxy_url}, which would read the API key" in refused.output
        assert proxy.requests == []
        allowed = workspace.cli("resume", *args, "--proxy-sees-key", env=env)
    assert allowed.code == 0, allowed.output
    assert f"requests go through the proxy {proxy_url} (from HTTP_PROXY)" in allowed.output
    assert proxy.requests and all(r.target.startswith(base) for r in proxy.requests)


def test_a_dead_proxy_is_named_in_the_error(workspace: Workspace) -> None:
    ids = make_ids("dead-proxy", ok=3)
    with hostile_in_thread(fake_heatmaps()) as url:
        dead = url  # a port that refuses once the server is closed
    result = workspace.cli(
        "run", workspace.csv(ids).name, "--db", workspace.db, "--out", workspace.out,
        "--base-url", "https://api.example.test",
        env=cli_env(IDENTIFAI_API_KEY=API_KEY, HTTPS_PROXY=dead), timeout=30,
    )  # fmt: skip
    assert result.code == 4, result.output
    assert f"through the proxy {dead}" in result.output
    assert states(workspace) == {"pending": 3}
