"""One request against servers that misbehave on purpose, through real sockets on 127.0.0.1.

Each server here is a few lines of raw bytes (on the fake server's listener) written to attack
one guarantee: memory stays bounded whatever the body, server-sent waits are validated, the
key never leaks into an error or to another host, and every transient failure says what kind
it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import functools
import json
import resource
import socket
import struct
import time
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from batchmap.fakeserver.http import Request
from batchmap.fakeserver.listener import Listener
from batchmap.fetch import MAX_BODY_BYTES, fetch_heatmap, make_client
from batchmap.models import Failure, Meaning, Outcome
from batchmap.policy import retry_after

KEY = "hostile-KEY-t6Wq/Np3+Zr8"  # distinctive, with the characters PHP and URLs escape
MiB = 1024 * 1024
TWO_GIB = 2 * 1024 * MiB
SAFETY_VALVE = 256 * MiB  # the servers never send more than this, so an old client fails fast
PEAK_BUDGET = 2 * MAX_BODY_BYTES  # a body at the limit plus working space, at most
ZEROS = bytes(64 * 1024)


@dataclass
class Server:
    """A running misbehaving server."""

    url: str
    requests: list[Request] = field(default_factory=list)
    sent: int = 0  # body bytes written so far


Respond = Callable[[Request, asyncio.StreamWriter, Server], Awaitable[None]]


@contextlib.asynccontextmanager
async def serve(respond: Respond, *, host: str = "127.0.0.1") -> AsyncIterator[Server]:
    """Run `respond` for each request on a fresh port of `host`; one request per connection.

    The fake server's listener parses the request; `respond` writes raw bytes, or nothing.
    """
    server = Server(url="")

    async def once(request: Request, writer: asyncio.StreamWriter) -> bool:
        server.requests.append(request)
        await respond(request, writer, server)
        return False

    listener = Listener(once)
    server.url = f"http://{host}:{await listener.listen(host, 0)}"
    try:
        yield server
    finally:
        await listener.close()  # ends handlers still streaming or sleeping


async def send(writer: asyncio.StreamWriter, status: str, *headers: str, body: bytes = b"") -> None:
    lines = [f"HTTP/1.1 {status}", "Connection: close", *headers, "", ""]
    writer.write("\r\n".join(lines).encode("latin-1") + body)
    await writer.drain()


async def stream_zeros(writer: asyncio.StreamWriter, server: Server, *, chunked: bool) -> None:
    """Write zeros lazily, as fast as the client reads, up to the safety valve."""
    framed = b"%x\r\n%b\r\n" % (len(ZEROS), ZEROS) if chunked else ZEROS
    for _ in range(SAFETY_VALVE // len(ZEROS)):
        writer.write(framed)
        await writer.drain()
        server.sent += len(ZEROS)
    if chunked:
        await asyncio.sleep(3600)  # a body that never ends: no terminating chunk, ever


@dataclass
class Measured:
    outcome: Outcome
    peak: int  # peak bytes of Python allocations during the request (tracemalloc)
    seconds: float


def fetch(respond: Respond, *, timeout: float = 10.0) -> tuple[Measured, Server]:
    """Run one fetch_heatmap against a fresh misbehaving server, measuring memory and time."""

    async def go() -> tuple[Measured, Server]:
        async with serve(respond) as server:
            client = make_client(server.url, api_key=KEY, timeout=timeout, concurrency=1)
            async with client:
                tracemalloc.start()
                started = time.monotonic()
                try:
                    outcome = await fetch_heatmap(client, "abc", timeout=timeout)
                    _, peak = tracemalloc.get_traced_memory()
                finally:
                    tracemalloc.stop()
                return Measured(outcome, peak, time.monotonic() - started), server

    return asyncio.run(go())


def assert_bounded(measured: Measured) -> None:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    print(f"peak {measured.peak / MiB:.1f} MiB, {measured.seconds:.2f} s, ru_maxrss {rss:.0f} MiB")
    assert measured.peak < PEAK_BUDGET, f"peak {measured.peak / MiB:.0f} MiB"
    # The whole process's high-water mark stays far from the gigabytes sent.
    assert rss < 1024


# --------------------------------------------------------------------------- bodies


def test_a_2_gib_content_length_is_refused_before_reading_the_body() -> None:
    async def huge(request: Request, writer: asyncio.StreamWriter, server: Server) -> None:
        await send(writer, "200 OK", "Content-Type: image/png", f"Content-Length: {TWO_GIB}")
        await stream_zeros(writer, server, chunked=False)

    measured, server = fetch(huge)
    outcome = measured.outcome
    assert outcome.verdict is Meaning.RETRY and outcome.failure is Failure.BODY
    assert outcome.error == f"body over the 32 MiB limit (Content-Length {TWO_GIB})"
    assert outcome.http_status == 200
    assert server.sent < 32 * MiB  # what the socket buffers took before the client hung up
    assert_bounded(measured)


def test_a_chunked_body_that_never_ends_is_cut_off_at_the_limit() -> None:
    async def endless(request: Request, writer: asyncio.StreamWriter, server: Server) -> None:
        await send(writer, "200 OK", "Content-Type: image/png", "Transfer-Encoding: chunked")
        await stream_zeros(writer, server, chunked=True)

    measured, server = fetch(endless)
    outcome = measured.outcome
    assert outcome.verdict is Meaning.RETRY and outcome.failure is Failure.BODY
    assert outcome.error == "body over the 32 MiB limit (cut off after 32 MiB)"
    assert server.sent < 2 * MAX_BODY_BYTES
    assert measured.seconds < 8
    assert_bounded(measured)


@functools.cache
def gzip_bomb() -> bytes:
    """About 2 MB of gzip that inflates to 2 GiB of zeros, built in well under a second.

    After a full flush deflate forgets its history, so each flushed 16 MiB of zeros compresses
    to the same bytes: one block repeated, then an empty final block and the gzip trailer.
    """
    block = bytes(16 * MiB)
    squeeze = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    first = squeeze.compress(block) + squeeze.flush(zlib.Z_FULL_FLUSH)
    repeat = squeeze.compress(block) + squeeze.flush(zlib.Z_FULL_FLUSH)
    count = TWO_GIB // len(block)
    crc = 0
    for _ in range(count):
        crc = zlib.crc32(block, crc)
    final_empty_block = b"\x03\x00"
    trailer = struct.pack("<II", crc, TWO_GIB & 0xFFFFFFFF)
    return first + repeat * (count - 1) + final_empty_block + trailer


def test_a_gzip_bomb_is_never_inflated_past_the_limit() -> None:
    bomb = gzip_bomb()
    assert len(bomb) < 2_200_000

    async def bombing(request: Request, writer: asyncio.StreamWriter, server: Server) -> None:
        await send(
            writer,
            "200 OK",
            "Content-Type: image/png",
            "Content-Encoding: gzip",  # though the client asked for identity
            f"Content-Length: {len(bomb)}",
            body=bomb,
        )
        server.sent += len(bomb)

    measured, server = fetch(bombing)
    outcome = measured.outcome
    assert server.requests[0].headers["accept-encoding"] == "identity"
    assert outcome.verdict is Meaning.RETRY and outcome.failure is Failure.BODY
    assert outcome.error is not None
    assert outcome.error.startswith("body over the 32 MiB limit once decompressed (gzip")
    assert_bounded(measured)


def test_the_classifications_read_is_bounded_too() -> None:
    from batchmap.fetch import CLASSIFICATIONS_MAX_BYTES, fetch_classifications

    bomb = gzip_bomb()

    async def bombing(request: Request, writer: asyncio.StreamWriter, server: Server) -> None:
        fields = ("Content-Type: application/json", "Content-Encoding: gzip")
        await send(writer, "200 OK", *fields, f"Content-Length: {len(bomb)}", body=bomb)

    async def go() -> tuple[Outcome, str | None, int]:
        async with serve(bombing) as server:
            client = make_client(server.url, api_key=KEY, timeout=10, concurrency=1)
            async with client:
                tracemalloc.start()
                try:
                    answer = await fetch_classifications(client, ["a" * 64], timeout=10)
                    _, peak = tracemalloc.get_traced_memory()
                finally:
                    tracemalloc.stop()
        return answer.outcome, answer.unsupported, peak

    outcome, unsupported, peak = asyncio.run(go())
    assert outcome.verdict is Meaning.RETRY and outcome.failure is Failure.BODY
    assert (outcome.error or "").startswith("body over the 8 MiB limit once decompressed")
    assert unsupported is None  # a transient body trouble, not a missing endpoint
    assert peak < 2 * CLASSIFICATIONS_MAX_BYTES


# --------------------------------------------------------------------------- Retry-After


def http_date_in(seconds: float) -> str:
    return email.utils.formatdate(time.time() + seconds, usegmt=True)


@pytest.mark.parametrize("status", ["429 Too Many Requests", "503 Service Unavailable"])
@pytest.mark.parametrize(
    ("value", "low", "high"),
    [("inf", None, None), ("1e400", None, None), ("-5", None, None), ("in 120 s", 110, 121)],
)
def test_a_retry_after_is_validated_before_anyone_waits_for_it(
    status: str, value: str, low: float | None, high: float | None
) -> None:
    header = http_date_in(120) if value == "in 120 s" else value

    async def limited(request: Request, writer: asyncio.StreamWriter, server: Server) -> None:
        body = b'{"message": "Too Many Attempts."}'
        await send(writer, status, f"Retry-After: {header}", f"Content-Length: {len(body)}")
        writer.write(body)

    outcome = fetch(limited)[0].outcome
    # Both readers of the header agree: the runner (outcome) and the pacer (headers).
    for seconds in (outcome.retry_after, retry_after(outcome.headers)):
        if low is None:
            assert seconds is None
        else:
            assert seconds is not None and low <= seconds <= (high or 0)
    if status.startswith("503"):
        assert outcome.verdict is Meaning.RETRY and outcome.failure is Failure.SERVER
    else:
        assert outcome.verdict is Meaning.RATE_LIMITED


# --------------------------------------------------------------------------- the key


@pytest.mark.parametrize("status", ["404 Not Found", "500 Internal Server Error"])
def test_a_server_echoing_the_key_never_gets_it_into_the_error(status: str) -> None:
    async def echo(request: Request, writer: asyncio.StreamWriter, server: Server) -> None:
        key = request.headers["x-api-key"]
        # PHP's json_encode escapes "/" as "\/": the echo is not the key byte for byte.
        body = json.dumps({"error": f"Unknown image for key {key}"}).replace("/", "\\/").encode()
        await send(writer, status, f"Content-Length: {len(body)}", body=body)

    outcome = fetch(echo)[0].outcome
    assert outcome.error is not None
    assert "Unknown image for key" in outcome.error
    assert KEY not in outcome.error and KEY.replace("/", "\\/") not in outcome.error


def test_a_server_echoing_the_key_as_text_never_gets_it_into_the_error() -> None:
    async def echo(request: Request, writer: asyncio.StreamWriter, server: Server) -> None:
        body = f"<html>bad key {request.headers['x-api-key']}</html>".encode()
        await send(writer, "400 Bad Request", f"Content-Length: {len(body)}", body=body)

    error = fetch(echo)[0].outcome.error or ""
    assert "bad key" in error and KEY not in error


def second_loopback_host() -> str:
    """127.0.0.2 where all of 127/8 is loopback (Linux), else 127.0.0.1 (another port)."""
    try:
        with socket.socket() as probe:
            probe.bind(("127.0.0.2", 0))
    except OSError:
        return "127.0.0.1"
    return "127.0.0.2"


def test_a_redirect_to_another_host_sends_it_nothing_and_its_body_is_never_read() -> None:
    async def record(request: Request, writer: asyncio.StreamWriter, server: Server) -> None:
        await send(writer, "200 OK", "Content-Length: 0")

    async def go() -> tuple[Outcome, Server, Server]:
        async with serve(record, host=second_loopback_host()) as elsewhere:

            async def redirect(request: Request, writer: asyncio.StreamWriter, s: Server) -> None:
                location = f"Location: {elsewhere.url}/steal?from=batchmap"
                await send(writer, "302 Found", location, "Transfer-Encoding: chunked")
                await stream_zeros(writer, s, chunked=True)  # a redirect body that never ends

            async with serve(redirect) as server:
                client = make_client(server.url, api_key=KEY, timeout=5, concurrency=1)
                async with client:
                    outcome = await fetch_heatmap(client, "abc", timeout=5)
                await asyncio.sleep(0.05)  # a connection to `elsewhere` would have landed by now
                return outcome, server, elsewhere

    outcome, server, elsewhere = asyncio.run(go())
    assert outcome.verdict is Meaning.FAILED and outcome.http_status == 302
    assert outcome.error == (
        f"the API redirects to {elsewhere.url} (another origin, not followed): check --base-url"
    )
    assert elsewhere.requests == []
    assert server.sent < 32 * MiB


# --------------------------------------------------------------------------- failure kinds


def test_a_refused_connection_is_a_connect_failure() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nobody listens once the probe closes

    async def go() -> Outcome:
        client = make_client(f"http://127.0.0.1:{port}", api_key=KEY, timeout=5, concurrency=1)
        async with client:
            return await fetch_heatmap(client, "abc", timeout=5)

    outcome = asyncio.run(go())
    assert outcome.verdict is Meaning.RETRY and outcome.failure is Failure.CONNECT
    assert outcome.http_status is None


async def hang_up(request: Request, writer: asyncio.StreamWriter, server: Server) -> None:
    writer.transport.abort()  # a reset with no answer at all


async def cut_short(request: Request, writer: asyncio.StreamWriter, server: Server) -> None:
    await send(writer, "200 OK", "Content-Type: image/png", "Content-Length: 1000", body=b"x" * 10)


async def garbage(request: Request, writer: asyncio.StreamWriter, server: Server) -> None:
    writer.write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
    await writer.drain()


async def header_flood(request: Request, writer: asyncio.StreamWriter, server: Server) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\n")
    for _ in range(SAFETY_VALVE // 4096):  # headers that never end: h11 stops at 16 KiB
        writer.write(b"X-Junk: " + b"a" * 4086 + b"\r\n")
        await writer.drain()
        server.sent += 4096


async def lying_length(request: Request, writer: asyncio.StreamWriter, server: Server) -> None:
    await send(writer, "200 OK", "Content-Length: 10", "Content-Length: 99999999999")


async def silent(request: Request, writer: asyncio.StreamWriter, server: Server) -> None:
    await asyncio.sleep(3600)


async def trickle(request: Request, writer: asyncio.StreamWriter, server: Server) -> None:
    await send(writer, "200 OK", "Content-Type: image/png", "Content-Length: 1000")
    for _ in range(1000):  # a byte every 0.2 s: each read is quick, the whole is not
        writer.write(b"x")
        await writer.drain()
        await asyncio.sleep(0.2)


@pytest.mark.parametrize(
    ("respond", "failure"),
    [
        (hang_up, Failure.NETWORK),
        (cut_short, Failure.NETWORK),
        (garbage, Failure.NETWORK),
        (header_flood, Failure.NETWORK),
        (lying_length, Failure.NETWORK),
        (silent, Failure.SILENT),  # no status line: counted like a refused connection
        (trickle, Failure.TIMEOUT),  # cut at the total deadline; the server did answer
    ],
)
def test_every_transient_failure_says_what_kind_it_was(respond: Respond, failure: Failure) -> None:
    outcome = fetch(respond, timeout=0.5)[0].outcome
    assert outcome.verdict is Meaning.RETRY
    assert outcome.failure is failure
    assert outcome.error and KEY not in outcome.error
