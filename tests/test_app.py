"""Operation-level rules: exit codes and the plain-http warning."""

from __future__ import annotations

import logging

import pytest

from batchmap.app import RunResult, check_base_url, warn_if_plain_http
from batchmap.errors import InputError
from batchmap.models import JobState
from batchmap.runner import Tally


def result(*, interrupted: bool = False, **counts: int) -> RunResult:
    table = {state: counts.get(state.value, 0) for state in JobState}
    return RunResult(tally=Tally(), counts=table, interrupted=interrupted, elapsed=1.0)


@pytest.mark.parametrize(
    ("run", "code"),
    [
        (result(done=5, no_heatmap=2), 0),
        (result(done=5, failed=1), 1),
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


def test_a_normal_base_url_passes() -> None:
    check_base_url("https://backend.identifai.net")
    check_base_url("http://127.0.0.1:8000/prefix")
