"""The mistakes people really make, through the real CLI and a real socket: each costs a line.

A key pasted with a newline, a mistyped port or path prefix, a second run with another --out,
a run refused by the lock: no row lost, nothing leaked, one line that says what to do.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import time
from collections.abc import Callable

import pytest

from tests.conftest import (
    API_KEY,
    FakeServer,
    Workspace,
    cli_env,
    make_ids,
    wait_for,
)

StartServer = Callable[..., FakeServer]
IDS = make_ids("mistake", ok=6, no_heatmap=1, missing=1)


def states(space: Workspace) -> dict[str, str]:
    return {identifier: row["state"] for identifier, row in space.rows().items()}


def leaks(space: Workspace, key: str, *texts: str) -> list[str]:
    """Where the key shows: the database files, the output, the given texts."""
    found = [text[:40] for text in texts if key.strip() in text]
    for path in space.root.rglob("*"):
        if path.is_file() and key.strip().encode() in path.read_bytes():
            found.append(str(path))
    return found


# --------------------------------------------------------------------------- the key


def test_a_key_pasted_with_spaces_and_a_newline_works_and_says_so(
    workspace: Workspace, shared_fake: FakeServer
) -> None:
    env = cli_env(IDENTIFAI_API_KEY=f" {API_KEY}\n")
    result = workspace.cli(*workspace.fetch_args(["run", workspace.csv(IDS).name], shared_fake),
                           env=env)  # fmt: skip
    assert result.code == 1, result.output  # the one 404 among them
    assert "removed whitespace around the API key" in result.stderr
    assert set(states(workspace).values()) == {"done", "no_heatmap", "failed"}


@pytest.mark.parametrize(
    "key", ["clé-secrète-Q7vX2mZk", "two words Q7vX2mZk", "ctrl\x01char-Q7vX2mZk"]
)
def test_a_key_that_cannot_be_a_header_is_refused_before_any_request_without_echoing_it(
    workspace: Workspace, fake_server_factory: StartServer, key: str
) -> None:
    server = fake_server_factory("--no-limits")
    result = workspace.cli(
        *workspace.fetch_args(["run", workspace.csv(IDS).name], server),
        env=cli_env(IDENTIFAI_API_KEY=key),
    )
    assert result.code == 2, result.output
    assert "Traceback" not in result.output and "Q7vX2mZk" not in result.output
    assert server.requests() == 0
    assert not leaks(workspace, "Q7vX2mZk")


# --------------------------------------------------------------------------- the address


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_wrong_port_stops_within_seconds_with_exit_4_and_rows_untouched(
    workspace: Workspace,
) -> None:
    port = _closed_port()
    started = time.monotonic()
    result = workspace.cli(
        "run", workspace.csv(IDS).name, "--db", workspace.db, "--out", workspace.out,
        "--base-url", f"http://127.0.0.1:{port}", env=cli_env(IDENTIFAI_API_KEY=API_KEY),
    )  # fmt: skip
    assert result.code == 4, result.output
    assert time.monotonic() - started < 20
    assert f"127.0.0.1:{port}" in result.stderr and "--base-url" in result.stderr
    assert set(states(workspace).values()) == {"pending"}
    assert {row["attempts"] for row in workspace.rows().values()} == {0}


def test_a_wrong_path_prefix_stops_after_a_handful_of_404s_with_rows_pending(
    workspace: Workspace, fake_server_factory: StartServer
) -> None:
    server = fake_server_factory("--no-limits")
    ids = make_ids("prefix", ok=30)
    result = workspace.cli(
        "run", workspace.csv(ids).name, "--db", workspace.db, "--out", workspace.out,
        "--base-url", server.url + "/v9", "--no-prefilter", "--concurrency", "2",
        env=cli_env(IDENTIFAI_API_KEY=API_KEY),
    )  # fmt: skip
    assert result.code == 4, result.output
    assert "every request answered 404" in result.stderr and "--base-url" in result.stderr
    assert set(states(workspace).values()) == {"pending"}
    assert server.requests() <= 12  # a handful, not the table


def test_resume_goes_to_the_server_the_job_was_started_with(
    workspace: Workspace, fake_server_factory: StartServer
) -> None:
    server = fake_server_factory("--no-limits")
    env = cli_env(IDENTIFAI_API_KEY=API_KEY)
    first = workspace.cli(*workspace.fetch_args(["run", workspace.csv(IDS).name], server), env=env)
    assert first.code == 1, first.output
    more = make_ids("later", ok=3)
    assert workspace.cli("load", workspace.csv(more, name="more.csv").name, "--db",
                         workspace.db).code == 0  # fmt: skip
    # No --base-url: the job remembers it (the production default is unreachable here).
    result = workspace.cli("resume", "--db", workspace.db, env=env)
    assert result.code == 0, result.output  # the earlier 404 is not this run's failure
    assert f"server {server.url} · " in result.stderr  # and it says which server it uses
    assert all(states(workspace)[identifier] == "done" for identifier in more)


def test_a_new_base_url_given_later_wins_with_a_notice(
    workspace: Workspace, fake_server_factory: StartServer
) -> None:
    old, new = fake_server_factory("--no-limits"), fake_server_factory("--no-limits")
    env = cli_env(IDENTIFAI_API_KEY=API_KEY)
    workspace.cli(*workspace.fetch_args(["run", workspace.csv(IDS).name], old), env=env)
    workspace.cli("load", workspace.csv(make_ids("moved", ok=2), name="b.csv").name,
                  "--db", workspace.db)  # fmt: skip
    result = workspace.cli(*workspace.fetch_args(["resume"], new), env=env)
    assert f"base URL changed from {old.url} to {new.url}" in result.stderr
    assert new.requests() >= 2
    later = workspace.cli("resume", "--db", workspace.db, "--retry-failed", env=env)
    assert later.code == 1 and new.requests() >= 3  # remembered: the new one again


# --------------------------------------------------------------------------- the job


def test_a_second_run_with_another_out_is_refused_and_changes_nothing(
    workspace: Workspace, shared_fake: FakeServer
) -> None:
    env = cli_env(IDENTIFAI_API_KEY=API_KEY)
    workspace.cli(*workspace.fetch_args(["run", workspace.csv(IDS).name], shared_fake), env=env)
    before = workspace.rows()
    other = workspace.root / "elsewhere"
    extra = workspace.csv(make_ids("split", ok=2), name="extra.csv")
    result = workspace.cli(
        "run", extra.name, "--db", workspace.db, "--out", other, "--base-url", shared_fake.url,
        env=env,
    )  # fmt: skip
    assert result.code == 2, result.output
    assert "mv " in result.stderr and str(workspace.out) in result.stderr
    assert workspace.rows() == before  # the refused run did not even load its CSV
    assert not other.exists()


def test_a_run_refused_by_the_lock_adds_no_rows(workspace: Workspace) -> None:
    workspace.cli("load", workspace.csv(IDS).name, "--db", workspace.db)
    lock = os.open(f"{workspace.db}.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        os.pwrite(lock, b"4242\n", 0)
        extra = workspace.csv(make_ids("locked", ok=3), name="extra.csv")
        result = workspace.cli("run", extra.name, "--db", workspace.db,
                               env=cli_env(IDENTIFAI_API_KEY=API_KEY))  # fmt: skip
    finally:
        os.close(lock)
    assert result.code == 2 and "pid 4242" in result.stderr, result.output
    with sqlite3.connect(workspace.db) as conn:
        assert conn.execute("select count(*) from jobs").fetchone()[0] == len(IDS)


# --------------------------------------------------------------------------- honest words


def test_the_first_ctrl_c_says_what_is_in_flight_and_what_a_second_does(
    workspace: Workspace, fake_server_factory: StartServer
) -> None:
    server = fake_server_factory("--no-limits", "--latency", "3")
    spawned = workspace.spawn(*workspace.fetch_args(["run", workspace.csv(IDS).name], server),
                              env=cli_env(IDENTIFAI_API_KEY=API_KEY))  # fmt: skip
    wait_for(lambda: server.requests() > 0 or spawned.process.poll() is not None, timeout=20,
             what="a first request")  # fmt: skip
    time.sleep(0.5)
    spawned.process.send_signal(signal.SIGINT)
    result = spawned.finish()
    assert result.code == 130, result.output
    assert "in flight, Ctrl-C again to abandon them" in result.stderr


def test_a_report_piped_into_head_ends_quietly(
    workspace: Workspace, shared_fake: FakeServer
) -> None:
    many = make_ids("pipe", ok=40)
    workspace.cli(*workspace.fetch_args(["run", workspace.csv(many).name], shared_fake),
                  env=cli_env(IDENTIFAI_API_KEY=API_KEY))  # fmt: skip
    report = subprocess.Popen(
        [*workspace.command("report", "--db", workspace.db, "--format", "jsonl")],
        cwd=workspace.root, env=workspace.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert report.stdout is not None and report.stderr is not None
    report.stdout.readline()
    report.stdout.close()  # the reader goes away, as `head -1` does
    code = report.wait(timeout=30)
    stderr = report.stderr.read().decode()
    report.stderr.close()
    assert code == 0 and stderr == "", stderr


def test_the_retry_hint_appears_only_for_failures_a_retry_could_win(
    workspace: Workspace, shared_fake: FakeServer
) -> None:
    result = workspace.cli(*workspace.fetch_args(["run", workspace.csv(IDS).name], shared_fake),
                           env=cli_env(IDENTIFAI_API_KEY=API_KEY))  # fmt: skip
    assert result.code == 1
    assert "--retry-failed" not in result.stdout and "all permanent" in result.stdout


@pytest.mark.parametrize("command", ["load", "run", "resume", "status", "report"])
def test_every_help_has_an_example_and_shows_its_environment_variables(
    workspace: Workspace, command: str
) -> None:
    result = workspace.cli(command, "--help")
    assert result.code == 0 and "Example:" in result.stdout
    assert "BATCHMAP_DB" in result.stdout
    if command in ("run", "resume"):
        for variable in ("IDENTIFAI_API_KEY", "IDENTIFAI_BASE_URL", "BATCHMAP_CONCURRENCY"):
            assert variable in result.stdout
    if command == "load":
        assert "-vv" not in result.stdout


def test_the_command_list_is_not_cut_off(workspace: Workspace) -> None:
    result = workspace.cli("--help")
    commands = result.stdout.split("Commands:", 1)[1]
    assert "..." not in commands, commands
    for command in ("load", "run", "resume", "status", "report", "verify", "fake-server"):
        assert f"  {command} " in commands


@pytest.mark.parametrize(
    ("option", "value"),
    [("--timeout", "nan"), ("--max-rate", "nan"), ("--max-rate", "0"), ("--max-wait", "inf")],
)
def test_a_number_that_cannot_work_is_one_line_naming_the_option(
    workspace: Workspace, option: str, value: str
) -> None:
    result = workspace.cli(
        "run", workspace.csv(IDS).name, "--db", workspace.db, option, value,
        env=cli_env(IDENTIFAI_API_KEY=API_KEY),
    )  # fmt: skip
    assert result.code == 2, result.output
    assert result.stderr.count("\n") == 1 and option in result.stderr
    assert not workspace.db.exists()  # refused before anything was written


# -- the first hour: what a new user touches ----------------------------------------------


def test_a_typo_in_the_csv_path_leaves_no_database_and_no_lock_file(
    workspace: Workspace,
) -> None:
    for command in (["run", "typo.csv"], ["load", "typo.csv"]):
        result = workspace.cli(*command, "--db", "x.db", env=cli_env(IDENTIFAI_API_KEY=API_KEY))
        assert result.code == 2 and result.stderr == "batchmap: error: typo.csv: no such file\n"
        assert sorted(p.name for p in workspace.root.iterdir()) == [], command


def test_resume_without_a_database_is_one_line_and_leaves_no_lock_file(
    workspace: Workspace,
) -> None:
    result = workspace.cli("resume", env=cli_env(IDENTIFAI_API_KEY=API_KEY))
    assert result.code == 2 and result.stderr.count("\n") == 1, result.output
    assert "batchmap.db: no such job database" in result.stderr
    assert list(workspace.root.iterdir()) == []


def test_no_api_key_is_one_line_in_the_style_of_every_other_error(workspace: Workspace) -> None:
    workspace.csv(IDS)
    result = workspace.cli("run", "ids.csv", "--db", workspace.db, env=cli_env())
    assert result.code == 2
    assert (
        result.stderr == "batchmap: error: no API key: set IDENTIFAI_API_KEY (or pass --api-key)\n"
    )
    assert not workspace.db.exists()


def test_status_piped_into_head_exits_0(workspace: Workspace) -> None:
    workspace.cli("load", workspace.csv(IDS).name, "--db", workspace.db)
    piped = subprocess.run(
        ["bash", "-c", f"{' '.join(workspace.command('status', '--db', workspace.db))} | head -1;"
         " exit ${PIPESTATUS[0]}"],
        cwd=workspace.root, env=workspace.env, capture_output=True, text=True, timeout=30,
        check=False,
    )  # fmt: skip
    assert piped.returncode == 0 and piped.stderr == "", piped.stderr


def test_dash_h_is_help_and_fake_server_help_has_an_example(workspace: Workspace) -> None:
    for command in ([], ["run"], ["status"], ["fake-server"]):
        result = workspace.cli(*command, "-h")
        assert result.code == 0 and "Usage:" in result.stdout, (command, result.output)
    fake = workspace.cli("fake-server", "--help")
    assert "Example:" in fake.stdout and "--strict-ids" in fake.stdout


def test_status_says_where_the_job_works_and_check_exits_1_while_rows_failed(
    workspace: Workspace, shared_fake: FakeServer
) -> None:
    assert workspace.run(workspace.csv(IDS), shared_fake).code == 1  # one 404
    facts = workspace.status()
    assert facts["base_url"] == shared_fake.url and facts["out"] == str(workspace.out)
    shown = workspace.cli("status", "--db", workspace.db)
    assert f"server {shared_fake.url} · heatmaps in {workspace.out} · job " in shown.stdout
    assert workspace.cli("status", "--db", workspace.db, "--check").code == 1
    assert workspace.resume(shared_fake, "--retry-failed").code == 1  # the 404 fails again
    clean = make_ids("clean", ok=2)
    other = Workspace(workspace.root / "clean", workspace.env)
    other.root.mkdir()
    assert other.run(other.csv(clean), shared_fake).code == 0
    assert other.cli("status", "--db", other.db, "--check").code == 0


def test_every_run_starts_by_saying_where_and_logs_carry_their_time(
    workspace: Workspace, shared_fake: FakeServer
) -> None:
    result = workspace.run(workspace.csv(IDS), shared_fake, "-vv")
    lines = result.stderr.splitlines()
    assert f"server {shared_fake.url} · heatmaps in {workspace.out} · job {workspace.db}" in lines
    assert "rate limits still to learn (identifAI documents 2/s and 60/min, about 1/s)" in lines
    progress = [line for line in lines if " progress " in line]
    assert progress and all(
        re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ progress \d+/8: ", line) for line in progress
    ), progress
    assert "Using selector" not in result.stderr


def test_log_format_json_writes_one_object_a_line_and_nothing_else(
    workspace: Workspace, shared_fake: FakeServer
) -> None:
    result = workspace.run(workspace.csv(IDS), shared_fake, "--log-format", "json")
    assert result.code == 1 and result.stdout == ""
    logged = [json.loads(line) for line in result.stderr.splitlines()]
    assert all({"time", "level", "event"} <= entry.keys() for entry in logged)
    events = [entry["event"] for entry in logged]
    assert events[-1] == "summary" and "progress" in events and "where" in events
    summary = logged[-1]
    assert summary["counts"] == {"pending": 0, "running": 0, "done": 6, "no_heatmap": 1,
                                 "failed": 1}  # fmt: skip
    assert summary["exit_code"] == 1
