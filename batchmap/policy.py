"""Pure decisions: what an HTTP answer means, whether a body is a PNG, how long to back off.

Every header and body the server sends is untrusted input: the functions here validate and
bound it before anything else sees it.
"""

from __future__ import annotations

import email.utils
import json
import math
import re
import struct
import time
import unicodedata
import zlib
from collections.abc import Callable, Collection, Mapping
from datetime import UTC
from urllib.parse import quote

import backoff

from batchmap.errors import InputError
from batchmap.models import Classification, Failure, Meaning
from batchmap.numeric import finite

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_MAX_SIDE = 16384  # pixels: a heatmap is far smaller; browsers refuse to draw much larger
BACKOFF_BASE = 1.0  # seconds before the first retry, before jitter
BACKOFF_CAP = 60.0  # no single backoff waits longer than this
# A finite ceiling for any server-requested wait, far above every sane limit: deciding what
# is too long (and stopping the run) is the runner's business, but nothing absurd gets past.
RETRY_AFTER_MAX = 7 * 24 * 3600.0
MESSAGE_MAX = 200  # characters of a server's message kept in an error text
JSON_PREFIX_MAX = 64 * 1024  # bytes of an error body parsed as JSON
REDACTED = "[api key]"
FIELD_MAX = 256  # characters kept of a classification's verdict, hash, status
NAME_MAX = 1024  # characters kept of an image's name

_DELTA_SECONDS = re.compile(r"\s*([0-9]+)(\.[0-9]+)?\s*")
_DROPPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Zl", "Zp"})


def judge(status: int, body: bytes, content_type: str) -> tuple[Meaning, str | None]:
    """Map one answer to a verdict and, for anything but success, an error text."""
    if status == 200:
        problem = png_problem(body)
        if problem is None:
            return Meaning.DONE, None
        shown = clean_text(content_type, limit=80) or "missing"
        return Meaning.RETRY, f"200 but {problem} (content-type {shown})"
    if status == 204:
        return Meaning.NO_HEATMAP, None
    if status in (401, 403):
        return Meaning.STOP, None
    if status == 429:
        return Meaning.RATE_LIMITED, None
    # 408 (request timeout) and 5xx are the server's trouble, not the identifier's.
    if status == 408 or status >= 500:
        return Meaning.RETRY, f"HTTP {status}{server_message(body)}"
    return Meaning.FAILED, f"HTTP {status}{server_message(body)}"


def failure_of(status: int) -> Failure:
    """Why an answer with this status, judged RETRY, is no usable answer."""
    return Failure.SERVER if status == 408 or status >= 500 else Failure.BODY


def png_problem(body: bytes) -> str | None:
    """None for a complete PNG; otherwise what is wrong with it.

    Walks the chunk list (PNG spec section 5.3) to IEND, checking each CRC, so a truncated or
    padded body cannot pass for a heatmap.
    """
    if not body.startswith(PNG_SIGNATURE):
        return "not a PNG (bad signature)"
    view = memoryview(body)  # CRCs over slices of a view: no copy of a big chunk
    offset = len(PNG_SIGNATURE)
    while offset + 12 <= len(body):
        (length,) = struct.unpack_from(">I", body, offset)
        end = offset + 12 + length
        if end > len(body):
            return "a truncated PNG"
        kind = body[offset + 4 : offset + 8]
        (crc,) = struct.unpack_from(">I", body, end - 4)
        if zlib.crc32(view[offset + 4 : end - 4]) != crc:
            return f"a corrupt PNG (bad CRC in {kind.decode('latin-1')!r} chunk)"
        if kind == b"IHDR" and length >= 8:
            width, height = struct.unpack_from(">II", body, offset + 8)
            if width > PNG_MAX_SIDE or height > PNG_MAX_SIDE:
                return (
                    f"a PNG declaring {width} x {height} pixels, over the "
                    f"{PNG_MAX_SIDE} x {PNG_MAX_SIDE} a heatmap may have"
                )
        if kind == b"IEND":
            return None if end == len(body) else "a PNG with trailing bytes"
        offset = end
    return "a truncated PNG"


def clean_text(text: str, *, limit: int) -> str:
    """`text` safe to show and store: control, format and surrogate characters gone, one line.

    Terminal escapes, bidi overrides and line breaks from a server never reach a screen, a
    log line or the job table.
    """
    kept = (" " if unicodedata.category(c) in _DROPPED_CATEGORIES else c for c in text)
    flat = " ".join("".join(kept).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def server_message(body: bytes) -> str:
    """The server's own short message from a JSON or text error body, as ': message'.

    JSON (identifAI's `{"error": ...}`, Laravel's `{"message": ...}`) is parsed properly
    from a bounded prefix; anything else gives a short excerpt of the text.
    """
    prefix = body[:JSON_PREFIX_MAX]
    try:
        data = json.loads(prefix)
    except (ValueError, RecursionError):
        data = None
    if isinstance(data, dict):
        for key in ("message", "error"):
            value = data.get(key)
            if isinstance(value, str) and value.strip():
                return ": " + clean_text(value, limit=MESSAGE_MAX)
    text = clean_text(prefix[:1024].decode("utf-8", "replace"), limit=120)
    return ": " + text if text else ""


def read_classifications(
    body: bytes, *, asked: Collection[str]
) -> tuple[tuple[Classification, ...], str | None]:
    """The classifications of asked identifiers in a 200 body, or what is wrong with its shape.

    The documented answer is a JSON array of objects with `identifier`. Objects about
    identifiers nobody asked for, or not objects at all, are skipped; a non-empty array with
    none of the asked identifiers means the server ignored `identifiers[]`. Only a real JSON
    bool counts as `has_heatmap`, only a finite number as a confidence.
    """
    try:
        data = json.loads(
            body, parse_constant=_no_constant, parse_float=finite, parse_int=_bounded_int
        )
    except (ValueError, RecursionError):
        return (), "a body that is not JSON"
    if not isinstance(data, list):
        return (), f"JSON that is not an array (a {type(data).__name__})"
    described = [
        item for item in data if isinstance(item, dict) and isinstance(item.get("identifier"), str)
    ]
    if data and not described:
        return (), "an array of something other than classification objects"
    wanted = set(asked)
    found: dict[str, Classification] = {}
    for item in described:
        identifier = item["identifier"]
        if identifier in wanted and identifier not in found:
            found[identifier] = _classification(identifier, item)
    if described and not found:
        return (), "classifications of other identifiers only (identifiers[] ignored?)"
    return tuple(found.values()), None


def _classification(identifier: str, item: dict[str, object]) -> Classification:
    verdict = item.get("verdict")
    main = verdict if isinstance(verdict, dict) else {}
    has_heatmap = item.get("has_heatmap")
    confidence = main.get("confidence")
    return Classification(
        identifier=identifier,
        has_heatmap=has_heatmap if isinstance(has_heatmap, bool) else None,
        verdict=_text(main, "classification"),
        confidence=float(confidence)
        if isinstance(confidence, int | float) and not isinstance(confidence, bool)
        else None,
        image_hash=_text(item, "hash"),
        image_name=_text(item, "name", limit=NAME_MAX),
        status=_text(item, "status"),
        raw=_json_text(item),
    )


def _text(item: dict[str, object], key: str, *, limit: int = FIELD_MAX) -> str | None:
    value = item.get(key)
    if not isinstance(value, str):
        return None
    return clean_text(value, limit=limit) or None


def _json_text(item: dict[str, object]) -> str:
    """`item` as JSON text that SQLite can store: lone surrogates escaped, never NaN."""
    text = json.dumps(item, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(item, allow_nan=False, separators=(",", ":"))
    return text


def _no_constant(name: str) -> None:
    return None  # NaN, Infinity, -Infinity: not JSON (RFC 8259), read as null


def _bounded_int(text: str) -> int | float | None:
    # int() of thousands of digits raises (or takes quadratic time): such a number is noise.
    return int(text) if len(text) <= 40 else None


def redact(text: str, secret: str | None) -> str:
    """`text` with every spelling of `secret` a server might echo replaced by a marker.

    Defence in depth: errors are built without header values, but a server can echo the key
    in a body, JSON-escaped (PHP escapes `/`) or percent-encoded.
    """
    if not secret:
        return text
    spellings = {secret, secret.replace("/", "\\/"), quote(secret, safe="")}
    pattern = "|".join(re.escape(s) for s in sorted(spellings, key=len, reverse=True))
    return re.sub(pattern, REDACTED, text, flags=re.IGNORECASE)


def retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds a `Retry-After` header asks for, validated; None when absent or unusable.

    RFC 9110 section 10.2.3: delta-seconds or an HTTP-date, the date relative to the wall
    clock `now` (time.time() by default). Like urllib3's `Retry.parse_retry_after`
    (src/urllib3/util/retry.py) a date in the past means 0 and huge values are capped (at
    RETRY_AFTER_MAX); unlike it, garbage, negative and non-finite values (`inf`, `nan`,
    `1e400`, `-5`) are treated as absent instead of raising. Always finite and >= 0.
    """
    value = _header(headers, "retry-after")
    if value is None:
        return None
    number = _DELTA_SECONDS.fullmatch(value)
    if number is not None:
        whole, fraction = number.groups()
        if len(whole.lstrip("0")) > 15:  # more digits than a float holds exactly: absurd
            return RETRY_AFTER_MAX
        return min(float(whole + (fraction or "")), RETRY_AFTER_MAX)
    try:
        when = email.utils.parsedate_to_datetime(value)
        if when.tzinfo is None:  # an HTTP-date is always GMT (RFC 9110 section 5.6.7)
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - (time.time() if now is None else now)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), RETRY_AFTER_MAX)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is not None:
        return value
    # A plain dict is case-sensitive where httpx.Headers is not.
    return next((v for k, v in headers.items() if k.lower() == name), None)


def until_text(until: float, *, now: float, span: bool = True) -> str:
    """'until 14:05 (24 h)': a wall-clock time, local, with how long from `now` (both epoch)."""
    shown = time.localtime(until)
    same_day = time.localtime(now)[:3] == shown[:3]
    at = time.strftime("%H:%M" if same_day else "%a %d %b %H:%M", shown)
    if not span:
        return f"until {at}"
    left = max(0.0, until - now)
    how_long = f"{left / 3600:.0f} h" if left >= 5400 else f"{max(1.0, left / 60):.0f} min"
    return f"until {at} ({how_long})"


def check_api_key(key: str) -> tuple[str, bool]:
    """The key ready for the `X-Api-Key` header, and whether surrounding whitespace was stripped.

    A key that cannot be a header value is refused here, before any request, so that it never
    turns into a per-row error. No message contains the key or any part of it.
    """
    cleaned = key.strip()
    where = "the API key (--api-key or IDENTIFAI_API_KEY)"
    if not cleaned:
        raise InputError(f"{where} is empty")
    if not cleaned.isascii():
        raise InputError(
            f"{where} contains a non-ASCII character: copy it again from identifAI's user menu"
        )
    if any(c.isspace() for c in cleaned):
        raise InputError(f"{where} contains whitespace inside it: copy it again as one word")
    if not all(0x21 <= ord(c) <= 0x7E for c in cleaned):
        raise InputError(f"{where} contains a control character: copy it again")
    return cleaned, cleaned != key


def backoff_delay(
    attempt: int,
    *,
    retry_after: float | None = None,
    base: float = BACKOFF_BASE,
    jitter: Callable[[float], float] = backoff.full_jitter,
) -> float:
    """Seconds to wait before retry number `attempt` (1-based) of a transient failure.

    Exponential with full jitter (backoff.expo + backoff.full_jitter), capped; a server's
    `Retry-After` is a floor the jitter can never undercut.
    """
    steps = backoff.expo(base=2, factor=base, max_value=BACKOFF_CAP)
    next(steps)  # the generator's priming value
    ceiling = BACKOFF_CAP
    for _ in range(max(1, attempt)):
        ceiling = next(steps)
    return max(jitter(ceiling), retry_after or 0.0)


def stop_message(status: int) -> str:
    """What to tell the user when the API refuses the key or the account."""
    if status == 401:
        return (
            "identifAI refused the API key (401 Unauthorized): check --api-key or "
            "IDENTIFAI_API_KEY; nothing was marked failed, rows stay pending"
        )
    return (
        "identifAI refused access (403 Forbidden): log in to identifAI, accept the terms of "
        "service and check that your account has API access; rows stay pending"
    )
