"""The hostile test server misbehaves exactly as asked, and records what clients sent."""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import Awaitable, Callable
from typing import TypeVar

import httpx
import pytest

from batchmap.fakeserver import classification_of, expected_status, heatmap_png
from tests.conftest import API_KEY, Workspace, make_ids
from tests.hostile import (
    Drop,
    GiB,
    Handler,
    HostileServer,
    Reply,
    Request,
    Reset,
    fake_heatmaps,
    gzip_bomb,
    hostile_in_thread,
    http_date,
    huge_body,
    retry_after,
    storm_429,
    zero_limit,
)

T = TypeVar("T")
KEY = {"X-Api-Key": "demo-key"}


def against(
    handler: Handler, scenario: Callable[[HostileServer, httpx.AsyncClient], Awaitable[T]]
) -> T:
    """Run `scenario` against a hostile server with `handler`, with a client pointed at it."""

    async def main() -> T:
        async with (
            HostileServer(handler) as server,
            httpx.AsyncClient(base_url=server.url) as client,
        ):
            return await scenario(server, client)

    return asyncio.run(main())


def ok_id() -> str:
    return next(i for i in (f"id-{n}" for n in range(100)) if expected_status(i) == 200)


def test_replies_as_told_and_records_every_request() -> None:
    def handler(request: Request) -> Reply:
        return Reply(418, (("X-Seen", request.target),), b"teapot")

    async def scenario(server: HostileServer, client: httpx.AsyncClient) -> httpx.Response:
        await client.get("/a", headers=KEY)
        return await client.get("/b?x=1")

    server_requests: list[Request] = []

    async def record(server: HostileServer, client: httpx.AsyncClient) -> httpx.Response:
        response = await scenario(server, client)
        server_requests.extend(server.requests)
        return response

    response = against(handler, record)
    assert (response.status_code, response.content, response.headers["x-seen"]) == (
        418,
        b"teapot",
        "/b?x=1",
    )
    assert [(r.method, r.target, r.index) for r in server_requests] == [
        ("GET", "/a", 0),
        ("GET", "/b?x=1", 1),
    ]
    assert server_requests[0].headers["x-api-key"] == "demo-key"
    assert "x-api-key" not in server_requests[1].headers


def test_drop_reset_and_delay() -> None:
    async def scenario(_: HostileServer, client: httpx.AsyncClient) -> float:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get("/drop")
        with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
            await client.get("/reset")
        start = time.monotonic()
        await client.get("/late")
        return time.monotonic() - start

    def handler(request: Request) -> Drop | Reset | Reply:
        actions: dict[str, Drop | Reset | Reply] = {"/drop": Drop(), "/reset": Reset()}
        return actions.get(request.path, Reply(delay=0.2))

    assert against(handler, scenario) >= 0.2


def test_a_huge_body_declares_its_length_and_streams_only_what_is_read() -> None:
    async def scenario(_: HostileServer, client: httpx.AsyncClient) -> tuple[str, int]:
        async with client.stream("GET", "/") as response:
            read = 0
            async for chunk in response.aiter_raw():
                read += len(chunk)
                if read > 4 * 1024 * 1024:
                    break
            return response.headers["content-length"], read

    length, read = against(huge_body(), scenario)
    assert int(length) == 2 * GiB and read < 8 * 1024 * 1024


def test_a_gzip_bomb_is_small_on_the_wire_and_valid_gzip() -> None:
    async def scenario(_: HostileServer, client: httpx.AsyncClient) -> httpx.Response:
        async with client.stream("GET", "/") as response:
            await response.aread()
            return response

    small = against(gzip_bomb(inflated=8 * 1024 * 1024), scenario)
    # httpx inflated it (and zlib checked the CRC): 8 MiB of zeros from a few kB.
    assert small.content == bytes(8 * 1024 * 1024)
    assert int(small.headers["content-length"]) < 16 * 1024
    big = gzip_bomb()(Request("GET", "/", {}, 0.0, 0))
    assert isinstance(big, Reply) and big.length is not None and big.length < 3_000_000
    inflater = zlib.decompressobj(31)
    head = inflater.decompress(b"".join(asyncio.run(_first(big, 3))), 4 * 1024 * 1024)
    assert head == bytes(3 * 1024 * 1024)  # and so on, for 2 GiB


async def _first(reply: Reply, count: int) -> list[bytes]:
    chunks: list[bytes] = []
    assert not isinstance(reply.body, bytes)
    async for chunk in reply.body:
        chunks.append(chunk)
        if len(chunks) == count:
            break
    return chunks


def test_a_429_storm_has_no_rate_headers_then_answers_like_the_fake() -> None:
    identifier = ok_id()

    async def scenario(_: HostileServer, client: httpx.AsyncClient) -> list[httpx.Response]:
        during = await client.get(f"/api/classification/heatmap/{identifier}", headers=KEY)
        await asyncio.sleep(0.25)
        after = await client.get(f"/api/classification/heatmap/{identifier}", headers=KEY)
        return [during, after]

    during, after = against(storm_429(seconds=0.2), scenario)
    assert during.status_code == 429 and during.headers["retry-after"] == "3"
    assert not any(name.startswith("x-ratelimit") for name in during.headers)
    assert after.status_code == 200 and after.content == heatmap_png(identifier)


def test_retry_after_values_and_zero_limits_are_sent_verbatim() -> None:
    async def scenario(_: HostileServer, client: httpx.AsyncClient) -> list[httpx.Response]:
        return [
            await client.get(f"/api/classification/heatmap/{ok_id()}", headers=KEY)
            for _ in range(3)
        ]

    date = http_date(30)
    first, second, _ = against(retry_after(date, times=1), scenario)
    assert first.headers["retry-after"] == date and second.status_code == 200
    limited = against(zero_limit(per_second=1), scenario)
    assert [r.status_code for r in limited][:2] == [200, 429]
    assert all(r.headers["x-ratelimit-limit"] == "0" for r in limited)


def test_in_a_thread_the_port_can_refuse_for_a_while() -> None:
    server = HostileServer(lambda _: Reply(200, body=b"up"))
    with hostile_in_thread(server) as url, httpx.Client(base_url=url) as client:
        assert client.get("/").content == b"up"
        server.refuse_for(0.3)
        with pytest.raises(httpx.ConnectError):
            httpx.get(url + "/")
        time.sleep(0.4)
        assert httpx.get(url + "/").content == b"up"
    assert len(server.requests) == 2


def test_a_trickled_body_arrives_whole() -> None:
    async def scenario(_: HostileServer, client: httpx.AsyncClient) -> tuple[bytes, float]:
        start = time.monotonic()
        response = await client.get("/")
        return response.content, time.monotonic() - start

    body, took = against(lambda _: Reply(body=b"x" * 50, trickle=0.02, piece=10), scenario)
    assert body == b"x" * 50 and took >= 0.08


def test_a_cli_run_finishes_against_fake_heatmaps_in_a_thread(workspace: Workspace) -> None:
    ids = make_ids("hostile", ok=3, no_heatmap=1)
    server = HostileServer(fake_heatmaps(key=API_KEY))
    with hostile_in_thread(server) as url:
        result = workspace.cli(
            "run", workspace.csv(ids), "--db", workspace.db, "--out", workspace.out,
            "--base-url", url,
        )  # fmt: skip
    assert result.code == 0, result.output
    states = sorted(row["state"] for row in workspace.rows().values())
    assert states == ["done", "done", "done", "no_heatmap"]
    asked = [r for r in server.requests if "/heatmap/" in r.path]
    assert 3 <= len(asked) <= len(ids)  # a prefilter may spare the 204
    assert all(r.headers["x-api-key"] == API_KEY for r in server.requests)


def test_on_its_own_loop_the_port_can_refuse_for_a_while() -> None:
    async def scenario(server: HostileServer, client: httpx.AsyncClient) -> int:
        server.refuse_for(0.2)
        with pytest.raises(httpx.ConnectError):
            await client.get("/")
        await asyncio.sleep(0.3)
        return (await client.get("/")).status_code

    assert against(lambda _: Reply(204), scenario) == 204


def test_a_handler_that_raises_answers_500_and_keeps_the_error() -> None:
    def broken(_: Request) -> Reply:
        raise ValueError("oops")

    async def scenario(server: HostileServer, client: httpx.AsyncClient) -> int:
        status = (await client.get("/")).status_code
        assert [str(error) for error in server.errors] == ["oops"]
        return status

    assert against(broken, scenario) == 500


def test_fake_heatmaps_also_answers_classifications_unless_told_not_to() -> None:
    identifier = ok_id()

    async def scenario(_: HostileServer, client: httpx.AsyncClient) -> httpx.Response:
        params = {"identifiers[]": [identifier]}
        return await client.get("/api/classifications", params=params, headers=KEY)

    listed = against(fake_heatmaps(), scenario)
    assert listed.status_code == 200 and listed.json() == [classification_of(identifier)]
    assert against(fake_heatmaps(classifications=False), scenario).status_code == 404
