"""One request, judged: encoding, redirects and the key, network errors (httpx.MockTransport)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
import pytest

from batchmap.fetch import fetch_heatmap, make_client
from batchmap.models import Outcome, Verdict
from tests.pngs import tiny_png

KEY = "secret-key-123"
Handler = Callable[[httpx.Request], httpx.Response]


def fetch(handler: Handler, identifier: str = "abc", *, base: str = "https://api.test") -> Outcome:
    async def go() -> Outcome:
        client = make_client(
            base, api_key=KEY, timeout=5, concurrency=1, transport=httpx.MockTransport(handler)
        )
        async with client:
            return await fetch_heatmap(client, identifier, timeout=5)

    return asyncio.run(go())


@pytest.mark.parametrize(
    ("identifier", "raw_path"),
    [
        ("abc", b"/api/classification/heatmap/abc"),
        ("..", b"/api/classification/heatmap/%2E%2E"),
        ("../../x", b"/api/classification/heatmap/%2E%2E%2F%2E%2E%2Fx"),
        ("a?b#c", b"/api/classification/heatmap/a%3Fb%23c"),
        ("100%", b"/api/classification/heatmap/100%25"),
        ("é x", b"/api/classification/heatmap/%C3%A9%20x"),
    ],
)
def test_the_identifier_stays_one_encoded_path_segment(identifier: str, raw_path: bytes) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204)

    assert fetch(handler, identifier).verdict is Verdict.NO_HEATMAP
    assert seen[0].url.raw_path == raw_path
    assert seen[0].headers["x-api-key"] == KEY


def test_a_base_url_with_a_path_prefix_is_kept() -> None:
    seen: list[httpx.URL] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url)
        return httpx.Response(204)

    fetch(handler, base="https://api.test/v2/")
    assert seen[0].raw_path == b"/v2/api/classification/heatmap/abc"


def test_a_same_origin_redirect_is_followed() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith("/api/"):
            return httpx.Response(302, headers={"location": "/moved/abc"})
        return httpx.Response(200, content=tiny_png(), headers={"content-type": "image/png"})

    outcome = fetch(handler)
    assert outcome.verdict is Verdict.DONE
    assert outcome.body == tiny_png()


@pytest.mark.parametrize(
    "location", ["https://evil.test/steal", "http://api.test/x", "https://api.test:8443/x"]
)
def test_the_key_never_follows_a_redirect_to_another_origin(location: str) -> None:
    hosts: list[tuple[str, str, int | None]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        hosts.append((request.url.scheme, request.url.host, request.url.port))
        return httpx.Response(301, headers={"location": location})

    outcome = fetch(handler)
    assert outcome.verdict is Verdict.FAILED
    assert outcome.error is not None and "another origin refused" in outcome.error
    assert KEY not in outcome.error
    assert hosts == [("https", "api.test", None)]


def test_a_redirect_loop_ends() -> None:
    outcome = fetch(lambda request: httpx.Response(302, headers={"location": "/again"}))
    assert outcome.verdict is Verdict.FAILED and "redirects" in (outcome.error or "")


@pytest.mark.parametrize(
    "error",
    [httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), httpx.RemoteProtocolError("")],
)
def test_network_trouble_is_transient(error: Exception) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise error

    outcome = fetch(handler)
    assert outcome.verdict is Verdict.RETRY
    assert outcome.http_status is None and outcome.error


def test_rate_limit_headers_reach_the_outcome() -> None:
    headers = {"retry-after": "3", "x-ratelimit-limit": "60", "x-ratelimit-remaining": "0"}
    outcome = fetch(lambda request: httpx.Response(429, headers=headers))
    assert outcome.verdict is Verdict.RATE_LIMITED
    assert outcome.headers["Retry-After"] == "3"


def test_a_server_that_never_finishes_is_cut_off_by_the_total_timeout() -> None:
    async def go() -> Outcome:
        async def stall(request: httpx.Request) -> httpx.Response:
            await asyncio.sleep(30)
            return httpx.Response(204)

        client = make_client(
            "https://api.test", api_key=KEY, timeout=5, concurrency=1,
            transport=httpx.MockTransport(stall),
        )  # fmt: skip
        async with client:
            return await fetch_heatmap(client, "abc", timeout=0.05)

    outcome = asyncio.run(go())
    assert outcome.verdict is Verdict.RETRY
    assert outcome.error == "timed out after 0.05s"
