"""Answer handling and backoff: pure functions, no I/O, no sleeping."""

from __future__ import annotations

import email.utils
import json
import math
import time
from datetime import UTC

import pytest
from hypothesis import given
from hypothesis import strategies as st

from batchmap.errors import InputError
from batchmap.models import Classification, Failure, Meaning
from batchmap.policy import (
    BACKOFF_CAP,
    MESSAGE_MAX,
    NAME_MAX,
    REDACTED,
    RETRY_AFTER_MAX,
    backoff_delay,
    check_api_key,
    failure_of,
    judge,
    png_problem,
    read_classifications,
    redact,
    retry_after,
    server_message,
)
from tests.pngs import tiny_png

PNG = tiny_png()


@pytest.mark.parametrize(
    ("status", "verdict"),
    [
        (200, Meaning.DONE),
        (204, Meaning.NO_HEATMAP),
        (401, Meaning.STOP),
        (403, Meaning.STOP),
        (404, Meaning.FAILED),
        (400, Meaning.FAILED),
        (410, Meaning.FAILED),
        (408, Meaning.RETRY),
        (429, Meaning.RATE_LIMITED),
        (500, Meaning.RETRY),
        (502, Meaning.RETRY),
        (503, Meaning.RETRY),
    ],
)
def test_every_status_maps_to_the_products_outcome(status: int, verdict: Meaning) -> None:
    body = PNG if status == 200 else b'{"error": "x"}'
    assert judge(status, body, "image/png")[0] is verdict


@pytest.mark.parametrize(
    ("status", "failure"), [(200, Failure.BODY), (408, Failure.SERVER), (503, Failure.SERVER)]
)
def test_a_retry_says_whose_trouble_it_was(status: int, failure: Failure) -> None:
    assert failure_of(status) is failure


def test_a_404_keeps_the_servers_message() -> None:
    verdict, error = judge(404, b'{"error": "Image not found"}', "application/json")
    assert verdict is Meaning.FAILED
    assert error == "HTTP 404: Image not found"


def test_a_200_that_is_an_html_page_is_retried_not_saved() -> None:
    verdict, error = judge(200, b"<html><body>Bad gateway</body></html>", "text/html")
    assert verdict is Meaning.RETRY
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


# --------------------------------------------------------------------------- Retry-After

NOW = 1_700_000_000.0  # a fixed wall clock for HTTP-dates


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("1.5", 1.5),
        ("007", 7.0),
        ("inf", None),
        ("Infinity", None),
        ("nan", None),
        ("1e400", None),
        ("1e3", None),  # not delta-seconds (RFC 9110 10.2.3: 1*DIGIT)
        ("-0", None),
        ("+5", None),
        ("", None),
        ("3 4", None),
        ("0x10", None),
        ("9" * 400, RETRY_AFTER_MAX),  # valid but absurd: capped, never a float overflow
        (str(10**9), RETRY_AFTER_MAX),
    ],
)
def test_retry_after_refuses_what_is_not_a_finite_wait(value: str, seconds: float | None) -> None:
    assert retry_after({"Retry-After": value}, now=NOW) == seconds


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (email.utils.formatdate(NOW + 120, usegmt=True), 120.0),  # IMF-fixdate
        (time.strftime("%A, %d-%b-%y %H:%M:%S GMT", time.gmtime(NOW + 60)), 60.0),  # RFC 850
        (time.strftime("%a %b %d %H:%M:%S %Y", time.gmtime(NOW + 30)), 30.0),  # asctime
        (email.utils.formatdate(NOW - 3600, usegmt=True), 0.0),  # in the past: now
        (email.utils.formatdate(NOW + 10**9, usegmt=True), RETRY_AFTER_MAX),
        ("Wed, 32 Oct 2015 07:28:00 GMT", None),
        ("Someday, soon", None),
    ],
)
def test_retry_after_reads_an_http_date_against_the_wall_clock(
    value: str, seconds: float | None
) -> None:
    assert retry_after({"retry-after": value}, now=NOW) == seconds


def test_retry_after_finds_the_header_in_any_case_and_by_default_against_time_time() -> None:
    assert retry_after({"RETRY-AFTER": "4"}) == 4.0
    later = email.utils.formatdate(time.time() + 100, usegmt=True)
    assert 95 <= (retry_after({"Retry-After": later}) or 0) <= 100


retry_after_values = st.one_of(
    st.text(max_size=40),
    st.from_regex(r"\s*-?[0-9]{0,30}(\.[0-9]{0,30})?([eE][-+]?[0-9]{1,4})?\s*", fullmatch=True),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.datetimes(timezones=st.just(UTC)).map(lambda d: email.utils.format_datetime(d, usegmt=True)),
    st.sampled_from(["inf", "-inf", "nan", "1e400", "-5", "Mon, 99 Xyz 99999 99:99:99 GMT"]),
)


@given(value=retry_after_values, now=st.floats(min_value=0, max_value=4e9))
def test_retry_after_never_raises_and_is_none_or_a_finite_wait(value: str, now: float) -> None:
    seconds = retry_after({"retry-after": value}, now=now)
    assert seconds is None or (math.isfinite(seconds) and 0 <= seconds <= RETRY_AFTER_MAX)


# --------------------------------------------------------------------------- the API key


def test_a_clean_key_passes_unchanged() -> None:
    assert check_api_key("abc-123_XYZ.=+/") == ("abc-123_XYZ.=+/", False)


@pytest.mark.parametrize("pasted", [" abc123", "abc123\n", "\tabc123\r\n", "\u00a0abc123 "])
def test_surrounding_whitespace_is_stripped_and_reported(pasted: str) -> None:
    assert check_api_key(pasted) == ("abc123", True)


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("", "empty"),
        (" \n ", "empty"),
        ("QWERTY UIOPAS", "whitespace"),
        ("QWERTY\tUIOPAS", "whitespace"),
        ("QWERTY\x00UIOPAS", "control character"),
        ("QWERTY\x7fUIOPAS", "control character"),
        ("QWERTY\x1b[31mUIOPAS", "control character"),
        ("QWERTYéUIOPAS", "non-ASCII"),
        ("QWERTY\u200bUIOPAS", "non-ASCII"),
    ],
)
def test_a_key_that_cannot_be_a_header_value_is_refused_without_echoing_it(
    key: str, reason: str
) -> None:
    with pytest.raises(InputError) as refused:
        check_api_key(key)
    message = str(refused.value)
    assert reason in message and "--api-key" in message
    assert refused.value.exit_code == 2
    for part in ("QWE", "WER", "RTY", "UIO", "OPA", "PAS"):
        assert part not in message


@given(st.text(max_size=30))
def test_any_text_is_either_a_valid_header_value_or_refused(key: str) -> None:
    try:
        cleaned, _ = check_api_key(key)
    except InputError:
        return
    cleaned.encode("ascii")
    assert cleaned and all(0x21 <= ord(c) <= 0x7E for c in cleaned)


# --------------------------------------------------------------------------- messages, the key


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"message": "Too Many Attempts."}', ": Too Many Attempts."),
        (b'{"error": "Image not found", "message": 3}', ": Image not found"),
        (b'{"message": "", "error": "Forbidden"}', ": Forbidden"),
        (b'{"note": "an \\"error\\": \\"decoy\\""}', ': {"note": "an \\"error\\": \\"decoy\\""}'),
        (b'{"message": "red\\u001b[31m\\nalert\\u202e!"}', ": red [31m alert !"),
        (b"<html>\n<b>502</b>\tBad\r\nGateway</html>", ": <html> <b>502</b> Bad Gateway</html>"),
        (b"\xff\xfe not utf-8", ": \ufffd\ufffd not utf-8"),
        (b"", ""),
        (b"   \n", ""),
    ],
)
def test_the_servers_message_is_parsed_cleaned_and_short(body: bytes, message: str) -> None:
    assert server_message(body) == message


def test_a_long_or_deeply_nested_error_body_gives_a_bounded_excerpt() -> None:
    long = server_message(json.dumps({"message": "x" * 10_000}).encode())
    assert len(long) <= MESSAGE_MAX + 2 and long.endswith("…")
    nested = server_message(b"[" * 100_000)
    assert nested.startswith(": [[[") and len(nested) <= 122
    huge = server_message(b'{"message": "ok", "pad": "' + b"x" * 200_000 + b'"}')
    assert len(huge) <= 122  # beyond the parsed prefix: an excerpt, never the whole body


def test_the_key_is_redacted_however_a_server_spells_it() -> None:
    key = "Ab/c+d9"
    text = f"k={key} json={key.replace('/', chr(92) + '/')} url=Ab%2Fc%2Bd9 upper={key.upper()}"
    assert redact(text, key) == f"k={REDACTED} json={REDACTED} url={REDACTED} upper={REDACTED}"
    assert redact("nothing here", key) == "nothing here"
    assert redact("text", None) == "text"


# --------------------------------------------------------------------------- classifications

ASKED = ["a" * 64, "b" * 64, "c" * 64]
DOCUMENTED = {
    "identifier": "a" * 64,
    "hash": "f" * 64,
    "name": "holiday.jpg",
    "ref_id": None,
    "c2pa": None,
    "has_heatmap": True,
    "verdict": {
        "heuristic": "h1",
        "confidence": 0.93,
        "classification": "artificial",
        "models": [],
    },
    "verdicts": [],
    "force_classification": None,
    "results": [{"model": "m", "unknown": False, "elapsed_time": 1.2, "classification": []}],
    "status": "done",
}


def classifications(items: object) -> tuple[tuple[Classification, ...], str | None]:
    return read_classifications(json.dumps(items).encode(), asked=ASKED)


def test_a_documented_answer_is_read_field_by_field() -> None:
    found, problem = classifications([DOCUMENTED, {"identifier": "b" * 64, "has_heatmap": False}])
    assert problem is None
    first, second = found
    assert first == Classification(
        identifier="a" * 64,
        has_heatmap=True,
        verdict="artificial",
        confidence=0.93,
        image_hash="f" * 64,
        image_name="holiday.jpg",
        status="done",
        raw=first.raw,
    )
    assert json.loads(first.raw) == DOCUMENTED
    assert second.has_heatmap is False and second.verdict is None and second.status is None


def test_only_asked_identifiers_count_and_each_once() -> None:
    other = dict(DOCUMENTED, identifier="z" * 64)
    again = dict(DOCUMENTED, name="second copy")
    found, problem = classifications([other, DOCUMENTED, again, 7, None, {"no": "identifier"}])
    assert problem is None
    assert [(c.identifier, c.image_name) for c in found] == [("a" * 64, "holiday.jpg")]
    assert classifications([]) == ((), None)  # none of them known: nothing decided


@pytest.mark.parametrize("value", [1, 0, "false", "true", None, [], {}])
def test_only_a_real_bool_says_whether_there_is_a_heatmap(value: object) -> None:
    found, _ = classifications([dict(DOCUMENTED, has_heatmap=value)])
    assert found[0].has_heatmap is None


@pytest.mark.parametrize(
    ("literal", "confidence"),
    [("0.5", 0.5), ("1", 1.0), ("NaN", None), ("Infinity", None), ("-Infinity", None),
     ("1e400", None), ('"0.9"', None), ("true", None), ("9" * 5000, None)],
)  # fmt: skip
def test_a_confidence_is_a_finite_number_or_none(literal: str, confidence: float | None) -> None:
    body = '[{"identifier": "' + "a" * 64 + '", "verdict": {"confidence": ' + literal + "}}]"
    found, problem = read_classifications(body.encode(), asked=ASKED)
    assert problem is None
    assert found[0].confidence == confidence
    json.loads(found[0].raw)  # what is stored is JSON, even from NaN or 1e400


def test_texts_are_bounded_and_safe_to_store() -> None:
    hostile = dict(
        DOCUMENTED,
        name="n\x1b[2J" + "x" * 5000,
        hash="\ud800" * 10,
        status="done\n",
        verdict={"classification": "artificial\u202e", "confidence": 0.5},
    )
    found, _ = classifications([hostile])
    first = found[0]
    assert first.image_name is not None and len(first.image_name) <= NAME_MAX
    assert "\x1b" not in first.image_name
    assert first.image_hash is None and first.status == "done"
    assert first.verdict == "artificial"
    first.raw.encode("utf-8")  # SQLite can store it: the lone surrogate is escaped


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"<html>Welcome to nginx</html>", "not JSON"),
        (b'{"data": []}', "not an array"),
        (b'"done"', "not an array"),
        (b"[1, 2, 3]", "other than classification objects"),
        (b'[{"id": "aaa"}]', "other than classification objects"),
        (b"[" * 100_000 + b"]" * 100_000, "not JSON"),
        (json.dumps([dict(DOCUMENTED, identifier="z" * 64)]).encode(), "identifiers[] ignored"),
    ],
)
def test_an_undocumented_shape_is_named(body: bytes, problem: str) -> None:
    found, seen = read_classifications(body, asked=ASKED)
    assert found == () and seen is not None and problem in seen


json_values = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)
classification_like = st.fixed_dictionaries(
    {"identifier": st.sampled_from([*ASKED, "z" * 64])},
    optional={"has_heatmap": json_values, "verdict": json_values, "hash": json_values,
              "name": json_values, "status": json_values, "extra": json_values},
)  # fmt: skip


@given(st.lists(classification_like | json_values, max_size=6))
def test_any_answer_is_read_without_raising_and_only_as_documented(items: list[object]) -> None:
    found, problem = read_classifications(json.dumps(items).encode(), asked=ASKED)
    assert problem is None or found == ()
    for item in found:
        assert item.identifier in ASKED
        assert item.has_heatmap in (True, False, None)
        assert item.confidence is None or math.isfinite(item.confidence)
        assert isinstance(json.loads(item.raw), dict)


@given(st.binary(max_size=300))
def test_any_error_body_gives_a_short_clean_message(body: bytes) -> None:
    message = server_message(body)
    assert len(message) <= MESSAGE_MAX + 2
    assert not any(c in message for c in "\x00\x1b\r\n\t\u202e")


@given(
    key=st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=8, max_size=30),
    before=st.text(max_size=20),
    after=st.text(max_size=20),
)
def test_a_key_inside_any_text_is_redacted(key: str, before: str, after: str) -> None:
    assert key.lower() not in redact(before + key + after, key).lower()
