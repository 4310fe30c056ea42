"""Answer handling and backoff: pure functions, no I/O, no sleeping."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from batchmap.models import Verdict
from batchmap.policy import BACKOFF_CAP, backoff_delay, judge, png_problem, retry_after
from tests.pngs import tiny_png

PNG = tiny_png()


@pytest.mark.parametrize(
    ("status", "verdict"),
    [
        (200, Verdict.DONE),
        (204, Verdict.NO_HEATMAP),
        (401, Verdict.STOP),
        (403, Verdict.STOP),
        (404, Verdict.FAILED),
        (400, Verdict.FAILED),
        (410, Verdict.FAILED),
        (408, Verdict.RETRY),
        (429, Verdict.RATE_LIMITED),
        (500, Verdict.RETRY),
        (502, Verdict.RETRY),
        (503, Verdict.RETRY),
    ],
)
def test_every_status_maps_to_the_products_outcome(status: int, verdict: Verdict) -> None:
    body = PNG if status == 200 else b'{"error": "x"}'
    assert judge(status, body, "image/png")[0] is verdict


def test_a_404_keeps_the_servers_message() -> None:
    verdict, error = judge(404, b'{"error": "Image not found"}', "application/json")
    assert verdict is Verdict.FAILED
    assert error == "HTTP 404: Image not found"


def test_a_200_that_is_an_html_page_is_retried_not_saved() -> None:
    verdict, error = judge(200, b"<html><body>Bad gateway</body></html>", "text/html")
    assert verdict is Verdict.RETRY
    assert error is not None and "not a PNG" in error and "text/html" in error


@pytest.mark.parametrize("cut", [9, 20, len(PNG) - 1])
def test_a_truncated_png_is_not_complete(cut: int) -> None:
    assert png_problem(PNG[:cut]) is not None


def test_a_complete_png_passes_and_trailing_or_corrupt_bytes_do_not() -> None:
    assert png_problem(PNG) is None
    assert png_problem(PNG + b"junk") == "a PNG with trailing bytes"
    corrupt = bytearray(PNG)
    corrupt[-20] ^= 0xFF
    assert "corrupt" in (png_problem(bytes(corrupt)) or "")


@given(st.binary(max_size=200))
def test_random_bytes_never_pass_for_a_png(data: bytes) -> None:
    assert png_problem(data) is not None or data == PNG


@given(
    attempt=st.integers(min_value=1, max_value=50),
    server_wait=st.one_of(st.none(), st.floats(min_value=0, max_value=3600)),
    share=st.floats(min_value=0, max_value=1),
)
def test_backoff_never_undercuts_retry_after_and_stays_capped(
    attempt: int, server_wait: float | None, share: float
) -> None:
    delay = backoff_delay(attempt, retry_after=server_wait, jitter=lambda ceiling: ceiling * share)
    assert delay >= (server_wait or 0.0)
    assert delay <= max(BACKOFF_CAP, server_wait or 0.0)


def test_backoff_grows_exponentially_before_jitter() -> None:
    ceilings = [backoff_delay(n, jitter=lambda c: c) for n in range(1, 9)]
    assert ceilings == [1, 2, 4, 8, 16, 32, 60, 60]


def test_full_jitter_by_default_stays_within_the_ceiling() -> None:
    assert all(0 <= backoff_delay(3) <= 4 for _ in range(200))


@pytest.mark.parametrize(
    ("value", "seconds"), [("7", 7.0), ("0", 0.0), (" 3 ", 3.0), ("soon", None), ("-5", None)]
)
def test_retry_after_parses_delta_seconds(value: str, seconds: float | None) -> None:
    assert retry_after({"retry-after": value}) == seconds
    assert retry_after({}) is None
