"""Issue 9's faults, end to end: the real CLI against a server that misbehaves on purpose.

Each test drives `batchmap run` through a real socket at tests/hostile.py's server (not
batchmap's own fake, which is shaped like our assumptions) and checks what a user relies on:
no row fails for the server's trouble, nothing waits for ever, every number stays finite.
"""

from __future__ import annotations

import json
import time

import pytest

from tests.conftest import API_KEY, Workspace, cli_env, make_ids
from tests.hostile import (
    HostileServer,
    fake_heatmaps,
    gzip_bomb,
    hostile_in_thread,
    http_date,
    retry_after,
    storm_429,
    storm_503,
    zero_limit,
)

IDS = make_ids("hostile", ok=24, no_heatmap=2, missing=2)
HEATMAP = "/api/classification/heatmap/"


def run(space: Workspace, url: str, *extra: str, timeout: float = 60.0) -> tuple[int, str]:
    result = space.cli(
        "run", space.csv(IDS).name, "--db", space.db, "--out", space.out, "--base-url", url,
        "--progress-every", "0.5", *extra, env=cli_env(IDENTIFAI_API_KEY=API_KEY), timeout=timeout,
    )  # fmt: skip
    assert "Traceback" not in result.output, result.output
    return result.code, result.output


def states(space: Workspace) -> dict[str, int]:
    counted: dict[str, int] = {}
    for row in space.rows().values():
        counted[row["state"]] = counted.get(row["state"], 0) + 1
    return counted


def heatmap_times(server: HostileServer) -> list[float]:
    return [r.at for r in server.requests if r.path.startswith(HEATMAP)]


def test_a_429_storm_without_rate_headers_does_not_collapse_the_pace(
    workspace: Workspace,
) -> None:
    # Finding 1: 10 s of 429s (Retry-After 3, no rate headers) once cut the pace to 0.05/s
    # for good, and saved it. Here: 4 s of storm, then an unlimited server.
    server = HostileServer(storm_429(seconds=4, retry_after="1", then=fake_heatmaps(key=API_KEY)))
    with hostile_in_thread(server) as url:
        started = time.monotonic()
        code, output = run(workspace, url)
        took = time.monotonic() - started
    assert code == 1, output  # the two unknown identifiers
    assert states(workspace) == {"done": 24, "no_heatmap": 2, "failed": 2}
    assert took < 25, f"the pace never recovered from the storm ({took:.0f} s)"
    saved = workspace.status()
    assert saved["pacer_rate"] is None or saved["pacer_rate"] > 0.5, saved["pacer_rate"]


def test_an_outage_of_refused_connections_fails_no_row_and_spends_no_attempt(
    workspace: Workspace,
) -> None:
    server = HostileServer(fake_heatmaps(key=API_KEY))
    slow = make_ids("outage", ok=30)
    with hostile_in_thread(server) as url:
        spawned = workspace.spawn(
            "run", workspace.csv(slow).name, "--db", workspace.db, "--out", workspace.out,
            "--base-url", url, "--max-rate", "10", "--max-attempts", "2", "--no-prefilter",
            env=cli_env(IDENTIFAI_API_KEY=API_KEY),
        )  # fmt: skip
        deadline = time.monotonic() + 20
        while len(server.requests) < 5 and time.monotonic() < deadline:
            time.sleep(0.02)
        server.refuse_for(4.0)
        result = spawned.finish(timeout=60)
    assert result.code == 0, result.output
    rows = workspace.rows().values()
    assert {row["state"] for row in rows} == {"done"}
    assert {row["attempts"] for row in rows} == {1}, "an outage spent a row's attempts"


def test_a_503_storm_with_retry_after_is_waited_out_as_asked(workspace: Workspace) -> None:
    server = HostileServer(storm_503(seconds=3, retry_after="2", then=fake_heatmaps(key=API_KEY)))
    with hostile_in_thread(server) as url:
        code, output = run(workspace, url, "--max-attempts", "2")
    assert code == 1, output
    assert states(workspace) == {"done": 24, "no_heatmap": 2, "failed": 2}
    storm_requests = [r for r in server.requests if r.at - server.requests[0].at < 3]
    assert len(storm_requests) <= 6, "Retry-After on a 503 was not honoured"


@pytest.mark.parametrize("value", ["inf", "1e400", "-5", "nan", "soon"])
def test_a_garbage_retry_after_is_ignored_and_status_stays_json(
    workspace: Workspace, value: str
) -> None:
    with hostile_in_thread(retry_after(value, times=3, then=fake_heatmaps(key=API_KEY))) as url:
        code, output = run(workspace, url)
    assert code == 1, output
    assert states(workspace) == {"done": 24, "no_heatmap": 2, "failed": 2}
    result = workspace.cli("status", "--db", workspace.db, "--json")
    facts = json.loads(result.stdout, parse_constant=lambda name: pytest.fail(name))
    assert facts["pause"] is None or facts["pause"]["seconds_left"] < 3600


def test_an_http_date_retry_after_is_honoured(workspace: Workspace) -> None:
    # The date counted from the first request, not from before the CLI started.
    server = HostileServer(retry_after(lambda: http_date(3), then=fake_heatmaps(key=API_KEY)))
    with hostile_in_thread(server) as url:
        code, output = run(workspace, url)
    assert code == 1, output
    times = [r.at for r in server.requests]
    assert times[1] - times[0] >= 1.5, "an HTTP-date Retry-After was treated as absent"


def test_a_wait_longer_than_max_wait_stops_with_exit_4_and_rows_pending(
    workspace: Workspace,
) -> None:
    with hostile_in_thread(retry_after("86400", times=1000)) as url:
        started = time.monotonic()
        code, output = run(workspace, url, "--max-wait", "60")
    assert code == 4, output
    assert time.monotonic() - started < 20
    assert "over --max-wait" in output
    assert states(workspace) == {"pending": len(IDS)}
    status = workspace.status()  # the time the server named, kept exactly (not capped at 1 h)
    assert 86000 < status["pause"]["seconds_left"] <= 86400


def test_a_zero_rate_limit_header_never_switches_pacing_off(workspace: Workspace) -> None:
    # Finding 5: X-RateLimit-Limit 0 once switched pacing off, --max-rate included.
    server = HostileServer(zero_limit(limit="0", per_second=50, then=fake_heatmaps(key=API_KEY)))
    with hostile_in_thread(server) as url:
        code, output = run(workspace, url, "--max-rate", "4", "--no-prefilter")
    assert code == 1, output
    times = heatmap_times(server)
    busiest = max(sum(1 for t in times if start <= t < start + 1) for start in times)
    assert busiest <= 6, f"{busiest} requests in one second under --max-rate 4"


def test_a_gzip_bomb_fails_its_row_naming_the_size_and_memory_stays_low(
    workspace: Workspace,
) -> None:
    with hostile_in_thread(gzip_bomb()) as url:
        code, output = run(workspace, url, "--max-attempts", "1", "--no-prefilter",
                           "--concurrency", "2")  # fmt: skip
    assert code == 1, output
    rows = workspace.rows().values()
    assert {row["state"] for row in rows} == {"failed"}
    assert all("32 MiB" in (row["error"] or "") for row in rows)
