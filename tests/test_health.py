"""Outage decisions as a table: who pays for a failure, when the pool pauses, when to give up."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from batchmap.health import PROBE_CAP, PROBE_FIRST, START_PROBES, STREAK, Health
from batchmap.models import Failure

C, T, S = Failure.CONNECT, Failure.SILENT, Failure.SERVER


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def health(clock: Clock, *, answered: bool = True, limit: float = 3600.0) -> Health:
    h = Health(outage_limit=limit, where="api.test:443", clock=clock, wall=lambda: 1.8e9)
    if answered:
        h.on_answer()
    return h


ANSWER = "answer"  # a step that is a good answer, not a failure


@dataclass(frozen=True)
class Step:
    row: int | str | None  # the rowid a request was about (None: classifications), or ANSWER
    failure: Failure = S
    charge: bool = False
    pause: bool = False
    refund: dict[int, int] | None = None  # rowid -> attempts given back (None: nothing)
    give_up: bool = False


@pytest.mark.parametrize(
    ("name", "steps"),
    [
        (
            "a broken row among good answers pays for each failure",
            [Step(1, charge=True), Step(ANSWER), Step(1, charge=True), Step(ANSWER)],
        ),
        (
            "STREAK rows failing for STREAK_SECONDS are an outage; what they paid is given back",
            [
                Step(1, charge=True),
                Step(2, charge=True),
                Step(3, pause=True, refund={1: 1, 2: 1}),  # 3 paid nothing: it revealed it
                Step(4, pause=True),  # during the outage nobody pays
                Step(ANSWER),
                Step(5, charge=True),  # over: a failure is the row's own again
            ],
        ),
        (
            "a row that paid twice in the streak gets both attempts back",
            [
                Step(1, charge=True),
                Step(1, charge=True),
                Step(2, charge=True),
                Step(3, pause=True, refund={1: 2, 2: 1}),
            ],
        ),
        (
            "what a row paid before a good answer is its own: not given back",
            [
                Step(1, charge=True),
                Step(ANSWER),
                Step(2, charge=True),
                Step(3, charge=True),
                Step(4, pause=True, refund={2: 1, 3: 1}),
            ],
        ),
        (
            "a classifications request counts in the streak, and no row is paid back for it",
            [
                Step(None, charge=True),
                Step(1, charge=True),
                Step(2, pause=True, refund={1: 1}),
            ],
        ),
        (
            "once refunded, an outage that ends leaves nothing more to give back",
            [
                Step(1, charge=True),
                Step(2, charge=True),
                Step(3, pause=True, refund={1: 1, 2: 1}),
                Step(ANSWER),
                Step(4, charge=True),
                Step(5, charge=True),
                Step(6, pause=True, refund={4: 1, 5: 1}),
            ],
        ),
        (
            "one row failing again and again is not an outage",
            [Step(1, charge=True), Step(1, charge=True), Step(1, charge=True)],
        ),
    ],
)
def test_who_pays_for_a_failure(name: str, steps: list[Step]) -> None:
    clock = Clock()
    h = health(clock)
    for step in steps:
        clock.now += 1
        if step.row == ANSWER:
            h.on_answer()
            continue
        assert not isinstance(step.row, str)
        call = h.on_failure(step.row, step.failure, "HTTP 503")
        assert call.charge is step.charge, (name, step)
        assert (call.pause_for > 0) is step.pause, (name, step)
        assert call.refund == (step.refund or {}), (name, step)
        assert (call.give_up is not None) is step.give_up, (name, step)


def test_outage_probes_back_off_to_a_cap_and_say_since_when() -> None:
    clock = Clock()
    h = health(clock)
    pauses = []
    for i in range(STREAK + 12):
        clock.now += 1  # failures over more than STREAK_SECONDS, with no good answer
        call = h.on_failure(i, T, "no answer within 30s")
        if call.pause_for:
            pauses.append(call.pause_for)
            clock.now += call.pause_for
    assert pauses[0] == PROBE_FIRST
    assert pauses == sorted(pauses) and max(pauses) == PROBE_CAP
    assert call.reason.startswith("API unreachable since ") and "no answer" in call.reason


def test_an_outage_longer_than_the_limit_gives_up_with_what_to_do() -> None:
    clock = Clock()
    h = health(clock, limit=600)
    for i in range(STREAK):
        clock.now += 1
        h.on_failure(i, C, "ConnectError: refused")
    clock.now += 597
    assert h.on_failure(10, C, "ConnectError: refused").give_up is None
    clock.now += 2
    message = h.on_failure(11, C, "ConnectError: refused").give_up
    assert message is not None and "--outage-limit" in message and "batchmap resume" in message


def test_an_address_that_never_answered_gives_up_after_a_few_probes_naming_it() -> None:
    clock = Clock()
    h = health(clock, answered=False)
    calls = [h.on_failure(1, C, "ConnectError: refused") for _ in range(START_PROBES)]
    assert all(not call.charge for call in calls)
    assert all(call.pause_for > 0 for call in calls[:-1])
    message = calls[-1].give_up
    assert message is not None and "api.test:443" in message and "--base-url" in message


def test_timeouts_before_the_first_answer_are_probed_not_given_up_on() -> None:
    clock = Clock()
    h = health(clock, answered=False)
    for _ in range(START_PROBES * 3):
        call = h.on_failure(1, T, "timed out")
        assert not call.charge and call.give_up is None and call.pause_for > 0


def test_an_ended_outage_reports_how_long_it_lasted() -> None:
    clock = Clock()
    h = health(clock)
    for i in range(STREAK):
        clock.now += 1
        h.on_failure(i, S, "HTTP 503")
    clock.now += 40
    assert h.in_outage
    lasted = h.on_answer()
    assert lasted is not None and lasted == pytest.approx(42)
    assert not h.in_outage


def test_a_flaky_server_that_answers_between_failures_is_never_an_outage() -> None:
    clock = Clock()
    h = health(clock)
    for i in range(200):  # every other request fails, 10 requests a second
        clock.now += 0.1
        if i % 2:
            h.on_answer()
            continue
        call = h.on_failure(i, S, "HTTP 503")
        assert call.charge and call.pause_for == 0


def test_failures_of_many_rows_within_a_moment_are_not_yet_an_outage() -> None:
    clock = Clock()
    h = health(clock)
    calls = [h.on_failure(i, C, "refused") for i in range(6)]  # all in one instant
    assert all(call.charge for call in calls) and not h.in_outage
    clock.now += 2.5
    assert h.on_failure(6, C, "refused").refund == dict.fromkeys(range(6), 1)


def test_the_outage_limit_is_checked_on_a_clock_not_only_when_a_request_ends() -> None:
    clock = Clock()
    h = health(clock, limit=10.0)
    for row in (1, 2, 3):
        clock.now += 1
        h.on_failure(row, S, "HTTP 503")
    assert h.in_outage and h.overdue() is None
    clock.now += 11  # no request ended meanwhile (a probe in flight for --timeout)
    said = h.overdue()
    assert said is not None and "--outage-limit" in said and "HTTP 503" in said


def test_rows_failing_on_their_own_never_make_an_outage() -> None:
    clock = Clock()
    h = health(clock)
    for row in (1, 2, 3):  # each fails while the API answers others: suspects from now on
        assert h.on_failure(row, S, "HTTP 500").charge
        h.on_answer()
    for _ in range(5):  # then only they are left, failing with no good answer between
        for row in (1, 2, 3):
            clock.now += 1
            call = h.on_failure(row, S, "HTTP 500")
            assert call.charge and not call.pause_for and not call.refund
    assert not h.in_outage


def test_a_body_that_trickles_past_the_timeout_is_the_rows_own() -> None:
    clock = Clock()
    h = health(clock)
    for row in range(6):
        clock.now += 1
        assert h.on_failure(row, Failure.TIMEOUT, "timed out after 30s").charge
    assert not h.in_outage


def test_silence_before_any_answer_gives_up_after_three_identifiers() -> None:
    clock = Clock()
    h = health(clock, answered=False)
    calls = [h.on_failure(row, T, "no answer within 30s") for row in (1, 1, 2)]
    assert all(call.give_up is None for call in calls)
    given_up = h.on_failure(3, T, "no answer within 30s").give_up
    assert given_up is not None and "never answers" in given_up and "api.test:443" in given_up
