"""The fake identifAI server: PNGs, routing, keys, Laravel rate limits, faults and stats."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import math
import re
import signal
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TypeVar
from urllib.parse import quote

import httpx
import pytest

from batchmap.fakeserver import (
    FakeConfig,
    FakeServer,
    classification_of,
    expected_status,
    heatmap_png,
)
from batchmap.fakeserver.limits import RateLimiter

T = TypeVar("T")
KEY = {"X-Api-Key": "demo-key"}
API = "/api/classification/heatmap/"
NO_LIMITS = FakeConfig(limits=())
Scenario = Callable[[FakeServer, httpx.AsyncClient], Awaitable[T]]


def with_server(config: FakeConfig, scenario: Scenario[T]) -> T:
    """Run `scenario` against a fresh fake on a free port, with an httpx client pointed at it."""

    async def main() -> T:
        server = FakeServer(config)
        port = await server.start()
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                return await scenario(server, client)
        finally:
            await server.close()

    return asyncio.run(main())


def ids_with_status(status: int, count: int = 1) -> list[str]:
    """The first `count` identifiers of the form id-N whose fault-free answer is `status`."""
    found: list[str] = []
    n = 0
    while len(found) < count:
        if expected_status(f"id-{n}") == status:
            found.append(f"id-{n}")
        n += 1
    return found


def url_of(identifier: str) -> str:
    """The heatmap path for any identifier, dots included, so nothing normalises it away."""
    return API + quote(identifier, safe="").replace(".", "%2E")


async def exchange(port: int, request: bytes) -> bytes:
    """Send raw bytes and read everything the server sends until it closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    data = await asyncio.wait_for(reader.read(), timeout=5)
    writer.close()
    return data


def png_chunks(png: bytes) -> list[tuple[bytes, bytes]]:
    """Split a PNG into (type, data) chunks, checking the signature and every CRC."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, pos = [], 8
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        kind, data = png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", png[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + data), kind
        chunks.append((kind, data))
        pos += 12 + length
    assert pos == len(png)
    return chunks


# --------------------------------------------------------------------------- pure functions


def test_heatmap_png_is_a_complete_64x64_rgb_png_with_a_blob() -> None:
    chunks = png_chunks(heatmap_png("img-1"))
    assert [kind for kind, _ in chunks] == [b"IHDR", b"IDAT", b"IEND"]
    assert struct.unpack(">IIBBBBB", chunks[0][1]) == (64, 64, 8, 2, 0, 0, 0)
    raw = zlib.decompress(chunks[1][1])
    assert len(raw) == 64 * (1 + 64 * 3)
    rows = [raw[y * 193 : (y + 1) * 193] for y in range(64)]
    assert all(row[0] == 0 for row in rows)
    reds = [row[1 + 3 * x] for row in rows for x in range(64)]
    assert min(reds) == 0 and max(reds) > 100  # a hot spot on a cold background


def test_heatmap_png_is_deterministic_and_differs_per_identifier() -> None:
    first = heatmap_png("img-1")
    heatmap_png.cache_clear()
    assert heatmap_png("img-1") == first
    assert len({heatmap_png(f"img-{n}") for n in range(50)}) == 50


def test_expected_status_follows_the_first_sha256_byte() -> None:
    ids = [f"id-{n}" for n in range(4096)]
    for identifier in ids:
        bucket = hashlib.sha256(identifier.encode()).digest()[0] % 16
        assert expected_status(identifier) == {0: 204, 1: 404}.get(bucket, 200)
    counts = {status: sum(expected_status(i) == status for i in ids) for status in (204, 404)}
    assert all(150 < n < 400 for n in counts.values())


def test_config_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        FakeConfig(error_rate=1.5)
    with pytest.raises(ValueError):
        FakeConfig(limits=((0, 1.0),))
    with pytest.raises(ValueError):
        FakeConfig(leaky_rate=0.0)


# --------------------------------------------------------------------------- routing and keys


def test_both_paths_serve_the_deterministic_png() -> None:
    (identifier,) = ids_with_status(200)

    async def scenario(_: FakeServer, client: httpx.AsyncClient) -> list[httpx.Response]:
        return [
            await client.get(f"/api/classification/heatmap/{identifier}", headers=KEY),
            await client.get(f"/api/classification_image/heatmap/{identifier}", headers=KEY),
        ]

    for response in with_server(NO_LIMITS, scenario):
        assert response.status_code == 200
        assert response.headers["content-type"] == "image/png"
        assert response.content == heatmap_png(identifier)


def test_keys_missing_unknown_forbidden_and_valid() -> None:
    async def scenario(_: FakeServer, client: httpx.AsyncClient) -> list[httpx.Response]:
        path = url_of(ids_with_status(200)[0])
        return [
            await client.get(path),
            await client.get(path, headers={"X-Api-Key": "wrong"}),
            await client.get(path, headers={"X-Api-Key": "forbidden-key"}),
            await client.get(path, headers={"x-API-key": "demo-key"}),
        ]

    missing, unknown, forbidden, valid = with_server(NO_LIMITS, scenario)
    assert (missing.status_code, missing.json()) == (401, {"error": "Unauthorized"})
    assert (unknown.status_code, unknown.json()) == (401, {"error": "Unauthorized"})
    assert (forbidden.status_code, forbidden.json()) == (403, {"error": "Forbidden"})
    assert missing.headers["content-type"] == "application/json"
    assert valid.status_code == 200


def test_answers_follow_expected_status() -> None:
    ok, empty, unknown = ids_with_status(200)[0], ids_with_status(204)[0], ids_with_status(404)[0]

    async def scenario(_: FakeServer, client: httpx.AsyncClient) -> list[httpx.Response]:
        return [await client.get(url_of(i), headers=KEY) for i in (ok, empty, unknown)]

    got_ok, got_empty, got_unknown = with_server(NO_LIMITS, scenario)
    assert got_ok.status_code == 200 and got_ok.content == heatmap_png(ok)
    assert got_empty.status_code == 204 and got_empty.content == b""
    assert got_unknown.status_code == 404
    assert got_unknown.json() == {"error": "Image not found"}


def test_strict_ids_answers_404_for_identifiers_identifai_would_never_issue() -> None:
    hexes = [i for i in (hashlib.sha256(str(n).encode()).hexdigest() for n in range(40))
             if expected_status(i) == 200][:1]  # fmt: skip
    photo = next(i for i in (f"Photo {n:03}.jpg" for n in range(99)) if expected_status(i) == 200)

    async def scenario(_: FakeServer, client: httpx.AsyncClient) -> list[httpx.Response]:
        asked = await client.get(
            "/api/classifications", params={"identifiers[]": [hexes[0], photo]}, headers=KEY
        )
        return [await client.get(url_of(i), headers=KEY) for i in (hexes[0], photo)] + [asked]

    strict = dataclasses.replace(NO_LIMITS, strict_ids=True)
    got_hex, got_photo, asked = with_server(strict, scenario)
    assert got_hex.status_code == 200 and got_photo.status_code == 404
    assert [item["identifier"] for item in asked.json()] == [hexes[0]]
    _, lenient_photo, _ = with_server(NO_LIMITS, scenario)
    assert lenient_photo.status_code == 200  # by default any string has a heatmap


def test_unknown_paths_and_other_methods_are_refused() -> None:
    async def scenario(_: FakeServer, client: httpx.AsyncClient) -> list[httpx.Response]:
        return [
            await client.get("/api/classification/heatmap/", headers=KEY),
            await client.get("/nope", headers=KEY),
            await client.post(url_of("x"), headers=KEY, content=b"ignored"),
        ]

    empty_id, other, post = with_server(NO_LIMITS, scenario)
    assert (empty_id.status_code, other.status_code) == (404, 404)
    assert other.headers["content-type"] == "application/json"
    assert post.status_code == 405


@pytest.mark.parametrize(
    "identifier", ["a/b", "..", "../../etc/passwd", "what?x=1#frag", "ünï cødé", "100%", "%2F"]
)
def test_percent_encoded_identifiers_are_decoded_and_not_normalised(identifier: str) -> None:
    async def scenario(server: FakeServer, client: httpx.AsyncClient) -> httpx.Response:
        response = await client.get(url_of(identifier), headers=KEY)
        assert dict(server.stats.per_identifier) == {identifier: 1}
        return response

    response = with_server(NO_LIMITS, scenario)
    assert response.status_code == expected_status(identifier)
    if response.status_code == 200:
        assert response.content == heatmap_png(identifier)


def test_query_string_is_not_part_of_the_identifier() -> None:
    async def scenario(server: FakeServer, client: httpx.AsyncClient) -> None:
        await client.get(API + "abc?x=1", headers=KEY)
        assert dict(server.stats.per_identifier) == {"abc": 1}

    with_server(NO_LIMITS, scenario)


# --------------------------------------------------------------------------- rate limits


def admit(limiter: RateLimiter, now: float) -> tuple[bool, dict[str, str]]:
    admission = limiter.admit(now)
    return admission.allowed, dict(admission.headers)


def test_a_laravel_window_ends_on_the_whole_second_after_its_first_hit() -> None:
    limiter = RateLimiter(((2, 1.0),))
    assert admit(limiter, 100.48)[0] and admit(limiter, 100.6)[0]
    allowed, headers = admit(limiter, 100.9)
    assert not allowed
    # Laravel: timer = time() + 1 = 101; Retry-After = 101 - time(); Reset = time() + Retry-After.
    assert headers == {
        "X-RateLimit-Limit": "2",
        "X-RateLimit-Remaining": "0",
        "Retry-After": "1",
        "X-RateLimit-Reset": "101",
    }
    assert admit(limiter, 101.0)[0]  # 0.52 s after the first hit, not 1 s


def test_retry_after_counts_whole_seconds_to_the_windows_end() -> None:
    limiter = RateLimiter(((1, 60.0),))
    assert admit(limiter, 1000.9)[0]
    for now, wait in ((1001.1, "59"), (1059.99, "1")):
        allowed, headers = admit(limiter, now)
        assert not allowed
        assert (headers["Retry-After"], headers["X-RateLimit-Reset"]) == (wait, "1060")
    assert admit(limiter, 1060.0)[0]


def test_exact_windows_end_w_after_the_first_hit_but_retry_after_keeps_whole_seconds() -> None:
    redis = RateLimiter(((1, 1.0),), whole_seconds=False)
    assert admit(redis, 100.48)[0]
    allowed, headers = admit(redis, 101.2)
    # Refused until 101.48, yet Laravel's timer (time() + 1 = 101) says go now.
    assert not allowed and (headers["Retry-After"], headers["X-RateLimit-Reset"]) == ("0", "101")
    assert admit(redis, 101.48)[0]


def test_sub_second_windows_are_exact_and_round_the_wait_up() -> None:
    short = RateLimiter(((1, 0.25),))  # Laravel has no windows under a second
    assert admit(short, 100.9)[0]
    allowed, headers = admit(short, 101.1)
    assert not allowed and headers["Retry-After"] == "1"
    assert admit(short, 101.15)[0]


def test_a_refused_request_counts_on_the_limits_checked_before_the_one_that_refused() -> None:
    limiter = RateLimiter(((2, 1.0), (3, 60.0)))
    assert [admit(limiter, t)[0] for t in (0.1, 0.2, 1.1)] == [True, True, True]
    minute = admit(limiter, 2.1)[1]
    assert (minute["X-RateLimit-Limit"], minute["Retry-After"]) == ("3", "58")
    assert admit(limiter, 2.2)[1]["X-RateLimit-Limit"] == "3"
    # Both refusals were hits on the per-second limit (ThrottleRequests::handleRequest).
    second = admit(limiter, 2.3)[1]
    assert (second["X-RateLimit-Limit"], second["Retry-After"]) == ("2", "1")


def test_a_success_carries_the_limit_with_the_fewest_left_the_first_on_a_tie() -> None:
    limiter = RateLimiter(((3, 1.0), (4, 60.0)))
    shown = [admit(limiter, t)[1] for t in (0.1, 1.1, 2.1)]
    assert [(h["X-RateLimit-Limit"], h["X-RateLimit-Remaining"]) for h in shown] == [
        ("3", "2"),  # 2 left of 3 per second, 3 of 4 per minute
        ("3", "2"),  # a tie (2 and 2): the first limit's
        ("4", "1"),
    ]


def test_a_leaky_bucket_in_front_refuses_before_laravel_counts() -> None:
    limiter = RateLimiter(((2, 10.0),), leaky_rate=1.0)
    assert admit(limiter, 0.0)[0]
    allowed, headers = admit(limiter, 0.5)
    assert not allowed and headers == {"Retry-After": "1"}
    assert admit(limiter, 1.0)[1]["X-RateLimit-Remaining"] == "0"  # the refusal did not count


def test_a_request_refused_by_a_later_limit_counts_on_the_earlier_ones_over_the_wire() -> None:
    config = FakeConfig(limits=((2, 0.5), (3, 30.0)))

    async def scenario(_: FakeServer, client: httpx.AsyncClient) -> list[httpx.Response]:
        async def get() -> httpx.Response:
            return await client.get(url_of("x"), headers=KEY)

        first = [await get(), await get(), await get()]
        await asyncio.sleep(0.55)
        return [*first, await get(), await get(), await get()]

    ok1, ok2, short, ok3, long, short_again = with_server(config, scenario)
    statuses = [r.status_code for r in (ok1, ok2, short, ok3, long, short_again)]
    assert statuses == [200, 200, 429, 200, 429, 429]
    # Successes carry the limit with the fewest attempts left.
    assert [
        (r.headers["x-ratelimit-limit"], r.headers["x-ratelimit-remaining"])
        for r in (ok1, ok2, ok3)
    ] == [("2", "1"), ("2", "0"), ("3", "0")]
    assert short.json() == {"message": "Too Many Attempts."}
    assert short.headers["x-ratelimit-limit"] == "2"
    assert short.headers["x-ratelimit-remaining"] == "0"
    assert short.headers["retry-after"] == "1"
    assert long.headers["x-ratelimit-limit"] == "3"
    assert 29 <= int(long.headers["retry-after"]) <= 30
    assert 0 < int(long.headers["x-ratelimit-reset"]) - time.time() <= 31
    # The 30 s limit refused `long`, but the half-second one had counted it: now that one is full.
    assert short_again.headers["x-ratelimit-limit"] == "2"


def test_window_opens_again_after_it_ends() -> None:
    config = FakeConfig(limits=((3, 0.3),))

    async def scenario(_: FakeServer, client: httpx.AsyncClient) -> list[int]:
        statuses = [(await client.get(url_of("x"), headers=KEY)).status_code for _ in range(4)]
        await asyncio.sleep(0.35)
        statuses += [(await client.get(url_of("x"), headers=KEY)).status_code for _ in range(4)]
        return statuses

    assert with_server(config, scenario) == [200, 200, 200, 429] * 2


def test_whole_second_windows_over_the_wire_end_on_the_second_and_say_so() -> None:
    config = FakeConfig(limits=((1, 1.5),))

    async def scenario(_: FakeServer, client: httpx.AsyncClient) -> tuple[float, httpx.Response]:
        started = time.time()
        await client.get(url_of("x"), headers=KEY)
        return started, await client.get(url_of("x"), headers=KEY)

    started, refused = with_server(config, scenario)
    end = math.floor(started + 1.5)
    assert int(refused.headers["x-ratelimit-reset"]) in (end, end + 1)
    assert refused.headers["retry-after"] in ("1", "2")


def test_rate_headers_off_sends_none() -> None:
    config = FakeConfig(limits=((1, 10.0),), rate_headers=False)

    async def scenario(_: FakeServer, client: httpx.AsyncClient) -> list[httpx.Response]:
        return [await client.get(url_of("x"), headers=KEY) for _ in range(2)]

    for response in with_server(config, scenario):
        assert not {"retry-after", "x-ratelimit-limit", "x-ratelimit-remaining"} & set(
            response.headers.keys()
        )
    assert response.status_code == 429


@pytest.mark.parametrize("rate_headers", [True, False])
def test_leaky_bucket_allows_a_burst_then_one_per_interval(rate_headers: bool) -> None:
    config = FakeConfig(limits=(), leaky_rate=10.0, leaky_burst=2, rate_headers=rate_headers)

    async def scenario(_: FakeServer, client: httpx.AsyncClient) -> list[httpx.Response]:
        burst = [await client.get(url_of("x"), headers=KEY) for _ in range(3)]
        await asyncio.sleep(0.12)
        return [*burst, await client.get(url_of("x"), headers=KEY)]

    responses = with_server(config, scenario)
    assert [r.status_code for r in responses] == [200, 200, 429, 200]
    assert responses[2].headers.get("retry-after") == ("1" if rate_headers else None)


def test_stats_and_reset_are_neither_keyed_nor_limited() -> None:
    config = FakeConfig(limits=((1, 10.0),))

    async def scenario(server: FakeServer, client: httpx.AsyncClient) -> None:
        (identifier,) = ids_with_status(200)
        await client.get(url_of(identifier), headers=KEY)
        await client.get(url_of(identifier), headers=KEY)
        await client.get(url_of(identifier))
        for _ in range(3):
            stats = await client.get("/_fake/stats")
        assert stats.json() == {
            "requests": 3,
            "by_status": {"200": 1, "401": 1, "429": 1},
            "per_identifier": {identifier: 2},
            "dropped": 0,
            "classification_requests": 0,
            "classification_by_status": {},
            "classified_per_identifier": {},
        }
        assert (await client.post("/_fake/reset")).status_code == 200
        assert server.stats.requests == 0 and not server.stats.per_identifier
        assert (await client.get("/_fake/stats")).json()["by_status"] == {}

    with_server(config, scenario)


# --------------------------------------------------------------------------- faults


def test_drop_closes_without_an_answer() -> None:
    async def scenario(server: FakeServer, client: httpx.AsyncClient) -> None:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get(url_of("x"), headers=KEY)
        assert server.stats.dropped == 1 and server.stats.by_status == {}

    with_server(FakeConfig(limits=(), drop_rate=1.0), scenario)


def test_truncate_sends_full_length_then_half_the_png() -> None:
    (identifier,) = ids_with_status(200)
    png = heatmap_png(identifier)

    async def scenario(_: FakeServer, client: httpx.AsyncClient) -> bytes:
        port = client.base_url.port
        assert port is not None
        request = f"GET {url_of(identifier)} HTTP/1.1\r\nHost: x\r\nX-Api-Key: demo-key\r\n\r\n"
        return await exchange(port, request.encode())

    head, _, body = with_server(FakeConfig(limits=(), truncate_rate=1.0), scenario).partition(
        b"\r\n\r\n"
    )
    assert head.startswith(b"HTTP/1.1 200 ")
    assert f"Content-Length: {len(png)}".encode() in head
    assert body == png[: len(png) // 2]


def test_not_png_answers_200_html() -> None:
    async def scenario(_: FakeServer, client: httpx.AsyncClient) -> httpx.Response:
        return await client.get(url_of(ids_with_status(200)[0]), headers=KEY)

    response = with_server(FakeConfig(limits=(), not_png_rate=1.0), scenario)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert b"<html>" in response.content


def test_error_rate_answers_503_with_rate_headers() -> None:
    async def scenario(_: FakeServer, client: httpx.AsyncClient) -> httpx.Response:
        return await client.get(url_of("x"), headers=KEY)

    response = with_server(FakeConfig(limits=((5, 10.0),), error_rate=1.0), scenario)
    assert response.status_code == 503
    assert response.headers["x-ratelimit-remaining"] == "4"


def test_faults_are_reproducible_with_a_seed() -> None:
    config = FakeConfig(limits=(), error_rate=0.5, seed=7)

    async def scenario(_: FakeServer, client: httpx.AsyncClient) -> list[int]:
        path = url_of(ids_with_status(200)[0])
        return [(await client.get(path, headers=KEY)).status_code for _ in range(20)]

    first, second = with_server(config, scenario), with_server(config, scenario)
    assert first == second and {200, 503} == set(first)


def test_latency_delays_the_answer() -> None:
    async def scenario(_: FakeServer, client: httpx.AsyncClient) -> float:
        start = time.monotonic()
        await client.get(url_of("x"), headers=KEY)
        return time.monotonic() - start

    assert with_server(FakeConfig(limits=(), latency=0.2), scenario) >= 0.2


def test_redirect_points_elsewhere_with_the_original_path() -> None:
    config = FakeConfig(redirect_to="http://elsewhere.invalid")

    async def scenario(_: FakeServer, client: httpx.AsyncClient) -> httpx.Response:
        return await client.get(url_of("a/b"), headers=KEY)

    response = with_server(config, scenario)
    assert response.status_code == 302
    assert response.headers["location"] == "http://elsewhere.invalid" + url_of("a/b")


# --------------------------------------------------------------------------- HTTP plumbing


def test_keep_alive_pipelining_and_connection_close() -> None:
    async def scenario(_: FakeServer, client: httpx.AsyncClient) -> bytes:
        port = client.base_url.port
        assert port is not None
        one = "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n"
        two = "GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        return await exchange(port, (one + two).encode())

    data = with_server(NO_LIMITS, scenario)
    assert data.count(b"HTTP/1.1 404 Not Found\r\n") == 2
    assert data.count(b"Connection: close") == 1


def test_http_1_0_closes_and_garbage_gets_400() -> None:
    async def scenario(_: FakeServer, client: httpx.AsyncClient) -> list[bytes]:
        port = client.base_url.port
        assert port is not None
        return [
            await exchange(port, b"GET /nope HTTP/1.0\r\n\r\n"),
            await exchange(port, b"hello\r\n\r\n"),
        ]

    old, garbage = with_server(NO_LIMITS, scenario)
    assert old.startswith(b"HTTP/1.1 404 ") and b"Connection: close" in old
    assert garbage.startswith(b"HTTP/1.1 400 ")


def test_client_leaving_mid_request_is_quiet(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario(server: FakeServer, client: httpx.AsyncClient) -> httpx.Response:
        port = client.base_url.port
        assert port is not None
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /api/classification/heatmap/x HTTP/1.1\r\nX-Api")
        await writer.drain()
        writer.close()
        await asyncio.sleep(0.05)
        assert server.stats.requests == 0
        return await client.get(url_of("x"), headers=KEY)

    with caplog.at_level(logging.DEBUG, logger="asyncio"):
        assert with_server(NO_LIMITS, scenario).status_code == expected_status("x")
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_close_ends_connections_waiting_on_latency(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario(server: FakeServer, client: httpx.AsyncClient) -> None:
        pending = asyncio.create_task(client.get(url_of("x"), headers=KEY))
        await asyncio.sleep(0.05)
        await asyncio.wait_for(server.close(), timeout=2)
        with pytest.raises(httpx.TransportError):
            await pending

    with caplog.at_level(logging.DEBUG, logger="asyncio"):
        with_server(FakeConfig(limits=(), latency=30.0), scenario)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_serve_announces_its_url_and_stops_cleanly_on_a_signal(signum: int) -> None:
    code = "from batchmap.fakeserver import FakeConfig, serve; serve(FakeConfig())"
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.fullmatch(r"batchmap fake-server listening on (http://127\.0\.0\.1:\d+)\n", line)
        assert match, line
        keys = proc.stdout.readline()
        assert "'demo-key'" in keys and "'forbidden-key' gets 403" in keys  # what to pass
        # and the two lines to paste into the shell that rehearses against it
        assert proc.stdout.readline() == "to rehearse against it, paste in another shell:\n"
        assert proc.stdout.readline() == f"export IDENTIFAI_BASE_URL={match[1]}\n"
        assert proc.stdout.readline() == "export IDENTIFAI_API_KEY=demo-key\n"
        assert httpx.get(match[1] + "/_fake/stats").status_code == 200
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=10)
    finally:
        proc.kill()
    assert (proc.returncode, out, err) == (0, "", "")


# --------------------------------------------------------------------------- classifications

CLASSIFICATIONS = "/api/classifications"


def ask(identifiers: list[str]) -> dict[str, list[str]]:
    """Query parameters for the classifications endpoint, as PHP wants its arrays."""
    return {"identifiers[]": identifiers}


def test_classifications_answer_one_documented_object_per_known_identifier() -> None:
    ok, empty, unknown = ids_with_status(200)[0], ids_with_status(204)[0], ids_with_status(404)[0]

    async def scenario(_: FakeServer, client: httpx.AsyncClient) -> list[httpx.Response]:
        asked = ask([ok, unknown, empty, ok])
        return [
            await client.get(CLASSIFICATIONS, params=asked, headers=KEY),
            await client.get("/api/classifications_image", params=asked, headers=KEY),
        ]

    main, alias = with_server(NO_LIMITS, scenario)
    assert main.status_code == 200 and main.headers["content-type"] == "application/json"
    assert main.json() == alias.json()
    objects = main.json()
    assert [o["identifier"] for o in objects] == [ok, empty]  # unknown absent, no duplicate
    for answer in objects:
        assert answer == classification_of(answer["identifier"])
        assert re.fullmatch(r"[0-9a-f]{64}", answer["hash"])
        assert answer["c2pa"] is None and answer["force_classification"] is None
        assert answer["status"] == "done" and answer["api_version"]
        assert answer["verdict"]["classification"] in ("artificial", "human")
        assert 0.5 <= answer["verdict"]["confidence"] <= 1 and answer["verdict"]["models"] == []
        assert answer["verdicts"] and answer["results"]
    # has_heatmap agrees with the heatmap endpoint's 204s.
    assert [o["has_heatmap"] for o in objects] == [True, False]


def test_has_heatmap_is_false_exactly_for_the_identifiers_that_answer_204() -> None:
    for identifier in (f"id-{n}" for n in range(2000)):
        if expected_status(identifier) != 404:
            answer = classification_of(identifier)
            assert answer["has_heatmap"] == (expected_status(identifier) != 204)


def test_classifications_validate_like_laravel_and_spend_the_quota() -> None:
    config = FakeConfig(limits=((5, 60.0),))

    async def scenario(_: FakeServer, client: httpx.AsyncClient) -> list[httpx.Response]:
        return [
            await client.get(
                CLASSIFICATIONS, params=ask([f"i{n}" for n in range(101)]), headers=KEY
            ),
            await client.get(CLASSIFICATIONS, headers=KEY),
            await client.get(CLASSIFICATIONS, params={"identifiers": "x"}, headers=KEY),
            await client.get(
                CLASSIFICATIONS, params=ask([f"i{n}" for n in range(100)]), headers=KEY
            ),
        ]

    too_many, missing, not_array, hundred = with_server(config, scenario)
    assert too_many.status_code == 422
    message = "The identifiers field must not have more than 100 items."
    assert too_many.json() == {"message": message, "errors": {"identifiers": [message]}}
    assert too_many.headers["x-ratelimit-remaining"] == "4"  # throttled before validated
    assert missing.json()["message"] == "The identifiers field is required."
    assert not_array.json()["message"] == "The identifiers field must be an array."
    assert hundred.status_code == 200 and hundred.headers["x-ratelimit-remaining"] == "1"


def test_classifications_and_heatmaps_share_one_key_and_one_quota() -> None:
    config = FakeConfig(limits=((3, 60.0),))
    (identifier,) = ids_with_status(200)

    async def scenario(_: FakeServer, client: httpx.AsyncClient) -> list[int]:
        asked = ask([identifier])
        return [
            (await client.get(CLASSIFICATIONS, params=asked)).status_code,
            (
                await client.get(
                    CLASSIFICATIONS, params=asked, headers={"X-Api-Key": "forbidden-key"}
                )
            ).status_code,
            (await client.get(CLASSIFICATIONS, params=asked, headers=KEY)).status_code,
            (await client.get(url_of(identifier), headers=KEY)).status_code,
            (await client.get(CLASSIFICATIONS, params=asked, headers=KEY)).status_code,
            (await client.get(url_of(identifier), headers=KEY)).status_code,
        ]

    assert with_server(config, scenario) == [401, 403, 200, 200, 200, 429]


def test_unknown_identifiers_can_404_the_whole_request() -> None:
    config = replace(NO_LIMITS, unknown_classifications="404")
    known, unknown = ids_with_status(200)[0], ids_with_status(404)[0]

    async def scenario(_: FakeServer, client: httpx.AsyncClient) -> list[httpx.Response]:
        return [
            await client.get(CLASSIFICATIONS, params=ask([known, unknown]), headers=KEY),
            await client.get(CLASSIFICATIONS, params=ask([known]), headers=KEY),
        ]

    mixed, only_known = with_server(config, scenario)
    assert mixed.status_code == 404 and mixed.json() == {"error": "Image not found"}
    assert [o["identifier"] for o in only_known.json()] == [known]


def test_classifications_can_be_missing_or_oddly_shaped() -> None:
    (identifier,) = ids_with_status(200)

    async def scenario(_: FakeServer, client: httpx.AsyncClient) -> httpx.Response:
        return await client.get(CLASSIFICATIONS, params=ask([identifier]), headers=KEY)

    missing = with_server(replace(NO_LIMITS, classifications=False), scenario)
    assert (missing.status_code, missing.json()) == (404, {"error": "Not Found"})
    odd = with_server(replace(NO_LIMITS, classifications_shape="odd"), scenario)
    assert odd.status_code == 200 and odd.json() == {"data": [classification_of(identifier)]}


def test_pending_classifications_are_new_without_a_heatmap_and_deterministic() -> None:
    identifiers = [i for i in (f"id-{n}" for n in range(100)) if expected_status(i) == 200]

    async def scenario(_: FakeServer, client: httpx.AsyncClient) -> list[dict[str, object]]:
        response = await client.get(CLASSIFICATIONS, params=ask(identifiers), headers=KEY)
        objects: list[dict[str, object]] = response.json()
        return objects

    config = replace(NO_LIMITS, pending_rate=0.3)
    first, second = with_server(config, scenario), with_server(config, scenario)
    assert first == second
    pending = [o for o in first if o["status"] == "new"]
    assert 0.1 * len(first) < len(pending) < 0.5 * len(first)
    assert all(o["has_heatmap"] is False and o["verdict"] is None for o in pending)
    assert all(o["has_heatmap"] is True for o in first if o["status"] == "done")


def test_stats_count_classification_requests_apart_and_in_the_total() -> None:
    (identifier,) = ids_with_status(200)

    async def scenario(server: FakeServer, client: httpx.AsyncClient) -> dict[str, object]:
        await client.get(CLASSIFICATIONS, params=ask([identifier, "b"]), headers=KEY)
        await client.get("/api/classifications_image", params=ask(["b"]), headers=KEY)
        await client.get(url_of(identifier), headers=KEY)
        stats: dict[str, object] = (await client.get("/_fake/stats")).json()
        return stats

    stats = with_server(NO_LIMITS, scenario)
    assert stats["requests"] == 3 and stats["by_status"] == {"200": 3}
    assert stats["per_identifier"] == {identifier: 1}
    assert stats["classification_requests"] == 2
    assert stats["classification_by_status"] == {"200": 2}
    assert stats["classified_per_identifier"] == {identifier: 1, "b": 2}


# --------------------------------------------------------------------------- outages


def test_an_outage_answers_503_with_retry_after_then_ends() -> None:
    config = replace(NO_LIMITS, outage_retry_after=7)
    (identifier,) = ids_with_status(200)

    async def scenario(server: FakeServer, client: httpx.AsyncClient) -> list[httpx.Response]:
        before = await client.get(url_of(identifier), headers=KEY)
        await server.begin_outage("503")
        during = [
            await client.get(url_of(identifier), headers=KEY),
            await client.get(CLASSIFICATIONS, params=ask([identifier]), headers=KEY),
            await client.get("/_fake/stats"),
        ]
        await server.end_outage()
        return [before, *during, await client.get(url_of(identifier), headers=KEY)]

    before, heatmap, listed, stats, after = with_server(config, scenario)
    assert (before.status_code, after.status_code) == (200, 200)
    for down in (heatmap, listed):
        assert down.status_code == 503 and down.headers["retry-after"] == "7"
    assert stats.status_code == 200  # the control paths stay up


def test_a_refusing_outage_closes_connections_and_listens_again_on_the_same_port() -> None:
    async def scenario(server: FakeServer, client: httpx.AsyncClient) -> list[object]:
        port = client.base_url.port
        assert port is not None
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await server.begin_outage("refuse")
        closed = await asyncio.wait_for(reader.read(), timeout=2)  # EOF: closed by the fake
        writer.close()
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", port)
        await server.end_outage()
        return [closed, (await client.get(url_of("x"), headers=KEY)).status_code]

    assert with_server(NO_LIMITS, scenario) == [b"", expected_status("x")]


def test_the_configured_outage_begins_and_ends_on_schedule() -> None:
    config = replace(NO_LIMITS, outage_at=0.2, outage_for=0.2, outage_kind="503")

    async def scenario(server: FakeServer, _: httpx.AsyncClient) -> list[float]:
        started = time.monotonic()
        seen: list[float] = []
        for wanted in ("503", None):
            while server.outage != wanted:
                await asyncio.sleep(0.01)
            seen.append(time.monotonic() - started)
        return seen

    began, ended = with_server(config, scenario)
    assert began < 2 and 0.15 < ended - began < 2


def test_a_resetting_outage_resets_connections() -> None:
    async def scenario(server: FakeServer, client: httpx.AsyncClient) -> None:
        await server.begin_outage("reset")
        port = client.base_url.port
        assert port is not None
        with pytest.raises(ConnectionResetError):
            await exchange(port, b"GET /api/classification/heatmap/x HTTP/1.1\r\nHost: x\r\n\r\n")
        assert server.stats.dropped == 1

    with_server(NO_LIMITS, scenario)


def test_rate_limited_requests_can_get_nginx_503s() -> None:
    config = FakeConfig(limits=((1, 60.0),), rate_limit_status=503)

    async def scenario(_: FakeServer, client: httpx.AsyncClient) -> list[httpx.Response]:
        return [await client.get(url_of("x"), headers=KEY) for _ in range(2)]

    _, limited = with_server(config, scenario)
    assert limited.status_code == 503 and b"nginx" in limited.content
    assert limited.headers["x-ratelimit-limit"] == "1"


def test_cli_flags_reach_the_config(monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    import batchmap.fakeserver
    from batchmap import cli

    seen: list[FakeConfig] = []
    monkeypatch.setattr(batchmap.fakeserver, "serve", lambda config, **_: seen.append(config))
    args = [
        "fake-server", "--no-classifications", "--classifications-shape", "odd",
        "--unknown-classifications", "404", "--pending-rate", "0.2", "--outage-at", "5",
        "--outage-for", "60", "--outage-kind", "503", "--outage-retry-after", "9",
        "--rate-limit-status", "503", "--exact-windows",
    ]  # fmt: skip
    result = CliRunner().invoke(cli.cli, args)
    assert result.exit_code == 0, result.output
    (config,) = seen
    assert (config.classifications, config.classifications_shape) == (False, "odd")
    assert (config.unknown_classifications, config.pending_rate) == ("404", 0.2)
    assert (config.outage_at, config.outage_for, config.outage_kind) == (5.0, 60.0, "503")
    assert (config.outage_retry_after, config.rate_limit_status) == (9, 503)
    assert config.whole_seconds is False and config.limits == ((2, 1.0), (60, 60.0))
    bad = CliRunner().invoke(cli.cli, ["fake-server", "--outage-at", "5"])
    assert bad.exit_code == 2 and "outage" in bad.output
