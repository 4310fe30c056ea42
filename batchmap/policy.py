"""Pure decisions: what an HTTP answer means, whether a body is a PNG, how long to back off."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable, Mapping

import backoff

from batchmap.models import Verdict

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
BACKOFF_BASE = 1.0  # seconds before the first retry, before jitter
BACKOFF_CAP = 60.0  # no single backoff waits longer than this


def judge(status: int, body: bytes, content_type: str) -> tuple[Verdict, str | None]:
    """Map one answer to a verdict and, for anything but success, an error text."""
    if status == 200:
        problem = png_problem(body)
        if problem is None:
            return Verdict.DONE, None
        return Verdict.RETRY, f"200 but {problem} (content-type {content_type or 'missing'})"
    if status == 204:
        return Verdict.NO_HEATMAP, None
    if status in (401, 403):
        return Verdict.STOP, None
    if status == 429:
        return Verdict.RATE_LIMITED, None
    # 408 (request timeout) and 5xx are the server's trouble, not the identifier's.
    if status == 408 or status >= 500:
        return Verdict.RETRY, f"HTTP {status}{server_message(body)}"
    return Verdict.FAILED, f"HTTP {status}{server_message(body)}"


def png_problem(body: bytes) -> str | None:
    """None for a complete PNG; otherwise what is wrong with it.

    Walks the chunk list (PNG spec section 5.3) to IEND, checking each CRC, so a truncated or
    padded body cannot pass for a heatmap.
    """
    if not body.startswith(PNG_SIGNATURE):
        return "not a PNG (bad signature)"
    offset = len(PNG_SIGNATURE)
    while offset + 12 <= len(body):
        (length,) = struct.unpack_from(">I", body, offset)
        end = offset + 12 + length
        if end > len(body):
            return "a truncated PNG"
        kind = body[offset + 4 : offset + 8]
        (crc,) = struct.unpack_from(">I", body, end - 4)
        if zlib.crc32(body[offset + 4 : end - 4]) != crc:
            return f"a corrupt PNG (bad CRC in {kind.decode('latin-1')!r} chunk)"
        if kind == b"IEND":
            return None if end == len(body) else "a PNG with trailing bytes"
        offset = end
    return "a truncated PNG"


def server_message(body: bytes) -> str:
    """The server's own short message from a JSON or text error body, as ': message'."""
    text = body[:300].decode("utf-8", "replace").strip()
    if not text:
        return ""
    for key in ('"message"', '"error"'):
        start = text.find(key)
        if start >= 0:
            rest = text[start + len(key) :].lstrip(" :")
            if rest.startswith('"'):
                return ": " + rest[1:].split('"', 1)[0]
    return ": " + " ".join(text.split())[:120]


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds from a delta-seconds `Retry-After` (RFC 9110 section 10.2.3); None if absent."""
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value.strip()))
    except ValueError:
        return None  # an HTTP-date: identifAI (Laravel) sends seconds, so treat as absent


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
