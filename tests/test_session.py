"""Run-level rules: exit codes, the base URL, what a job remembers and refuses."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from batchmap.config import Output
from batchmap.context import Tally
from batchmap.errors import InputError
from batchmap.files import Layout
from batchmap.models import JobState
from batchmap.session import (
    RunResult,
    check_base_url,
    resolve_base_url,
    resolve_output,
    warn_if_plain_http,
)
from batchmap.store import Store


def result(
    *, interrupted: bool = False, failed_now: int = 0, limit: int | None = None, **counts: int
) -> RunResult:
    table = {state: counts.get(state.value, 0) for state in JobState}
    tally = Tally()
    tally.finished[JobState.FAILED] = failed_now
    return RunResult(
        counts=table, tally=tally, interrupted=interrupted, elapsed=1.0, retryable_failures=0,
        limit=limit,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("run", "code"),
    [
        (result(done=5, no_heatmap=2), 0),
        (result(done=5, failed=1, failed_now=1), 1),
        (result(done=5, failed=1), 0),  # failed in an earlier run: not this run's failure
        (result(done=5, pending=3, limit=5), 0),  # --limit leaves the rest pending on purpose
        (result(done=5, pending=3), 1),
        (result(done=5, pending=3, interrupted=True), 130),
        (result(done=5, failed=1, interrupted=True), 130),
    ],
)
def test_exit_codes_follow_the_contract(run: RunResult, code: int) -> None:
    assert run.exit_code == code


@pytest.mark.parametrize(
    ("url", "warned"),
    [
        ("http://api.example.com", True),
        ("http://10.0.0.5:8000", True),
        ("http://127.0.0.1:8000", False),
        ("http://localhost:8000", False),
        ("http://[::1]:8000", False),
        ("https://backend.identifai.net", False),
    ],
)
def test_plain_http_off_this_machine_is_warned_about(
    url: str, warned: bool, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="batchmap"):
        warn_if_plain_http(url)
    assert ("unencrypted" in caplog.text) is warned


@pytest.mark.parametrize(
    "url", ["backend.identifai.net", "ftp://backend.identifai.net", "https://", "http://[::1"]
)
def test_a_base_url_that_cannot_reach_an_api_is_refused(url: str) -> None:
    with pytest.raises(InputError, match="--base-url"):
        check_base_url(url)


def test_the_first_output_sticks_and_another_is_refused_with_how_to_move(tmp_path: Path) -> None:
    with Store(tmp_path / "jobs.db") as store:
        out, layout = resolve_output(store, Output(tmp_path / "a", Layout.FLAT))
        store.set_meta("out", str(out))
        store.set_meta("layout", layout.value)
        assert resolve_output(store, Output()) == (out, Layout.FLAT)
        with pytest.raises(InputError, match=r"mv .*update jobs set path"):
            resolve_output(store, Output(tmp_path / "b"))
        with pytest.raises(InputError, match="--layout sharded"):
            resolve_output(store, Output(layout=Layout.SHARDED))


def test_a_base_url_given_later_wins_with_a_notice(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with Store(tmp_path / "jobs.db") as store:
        assert resolve_base_url(store, None) == "https://backend.identifai.net"
        store.set_meta("base_url", "http://127.0.0.1:9/")
        assert resolve_base_url(store, None) == "http://127.0.0.1:9/"
        with caplog.at_level(logging.INFO, logger="batchmap"):
            assert resolve_base_url(store, "http://127.0.0.1:8/") == "http://127.0.0.1:8"
    assert "base URL changed from http://127.0.0.1:9/ to http://127.0.0.1:8" in caplog.text
