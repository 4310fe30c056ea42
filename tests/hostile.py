"""Servers that misbehave on purpose, for tests. Not batchmap's fake server, but on its wire.

A handler decides, per request, what to do: answer a `Reply` (status, headers, a body of bytes
or an async iterator of chunks, late or trickled), `Drop` the connection or `Reset` it. Every
request is recorded, so a test can check what a client sent. The HTTP itself (parsing,
writing, the accept loop and its shutdown) is batchmap/fakeserver's http.py and listener.py;
what is here is only what is hostile: the handlers below, and a port that refuses for a while.

    async with HostileServer(storm_429(seconds=10)) as server:
        ...  # server.url, server.requests

    server = HostileServer(fake_heatmaps())
    with hostile_in_thread(server) as url:  # for a CLI in a subprocess
        subprocess.run([..., "--base-url", url])
        server.refuse_for(5.0)  # the port refuses connections for 5 s
    assert not any("x-api-key" in r.headers for r in server.requests)
    assert not server.errors  # a handler that raised answered 500 and left its error here

Only 127.0.0.1 by default; nothing here talks to any other address.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import functools
import inspect
import json
import struct
import threading
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from urllib.parse import unquote

from batchmap.fakeserver import HEATMAP_PREFIXES, expected_status, heatmap_png
from batchmap.fakeserver import http as wire
from batchmap.fakeserver.classifications import (
    CLASSIFICATIONS_PATHS,
    ValidationFailed,
    answer_body,
    is_known,
    parse_identifiers,
    validation_body,
)
from batchmap.fakeserver.http import Action, Drop, Reply, Reset, json_reply, with_headers
from batchmap.fakeserver.listener import Listener

__all__ = ["Action", "Drop", "Reply", "Reset", "json_reply"]  # the wire's, re-exported

GiB = 1024**3
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TOO_MANY = json.dumps({"message": "Too Many Attempts."}).encode()
# Values a careless or hostile server sends as Retry-After; none of them is a usable wait.
GARBAGE_RETRY_AFTER = ("inf", "1e400", "-1", "nan", "soon", "", "Wed, 99 Foo 2026 25:61:00 GMT")


@dataclass(frozen=True)
class Request:
    """One request as it arrived: header names lower-cased, `at` on time.monotonic()."""

    method: str
    target: str
    headers: dict[str, str]
    at: float
    index: int  # 0 for the first request this server saw

    @property
    def path(self) -> str:
        """The raw path, without query."""
        return self.target.partition("?")[0]


Handler = Callable[[Request], Action | Awaitable[Action]]


@dataclass
class HostileServer:
    """Serves `handler` on host:port (0 picks a free port) until closed; records every request."""

    handler: Handler
    host: str = "127.0.0.1"
    port: int = 0
    requests: list[Request] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)  # raised by the handler
    _listener: Listener = field(init=False)
    _loop: asyncio.AbstractEventLoop | None = None
    _relisten: asyncio.TimerHandle | None = None
    _tasks: set[asyncio.Task[int]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._listener = Listener(self._respond)

    @property
    def url(self) -> str:
        """http://host:port, once started."""
        return f"http://{self.host}:{self.port}"

    async def __aenter__(self) -> HostileServer:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Listen, keeping the port for later restarts."""
        self._loop = asyncio.get_running_loop()
        self.port = await self._listener.listen(self.host, self.port)

    def refuse_for(self, seconds: float) -> None:
        """Refuse connections for `seconds`, then listen again; callable from any thread.

        Returns once the port refuses.
        """
        loop = self._loop
        assert loop is not None, "start the server first"

        def begin() -> None:
            self._listener.stop()
            self._relisten = loop.call_later(seconds, self._spawn_relisten)

        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None  # called from another thread, e.g. a test beside hostile_in_thread
        if running is loop:
            begin()
            return
        done = threading.Event()

        def begin_and_tell() -> None:
            begin()
            done.set()

        loop.call_soon_threadsafe(begin_and_tell)
        done.wait(10)

    def _spawn_relisten(self) -> None:
        task = asyncio.get_running_loop().create_task(self._listener.listen())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Stop listening and end every connection."""
        if self._relisten is not None:
            self._relisten.cancel()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._listener.close()

    async def _respond(self, head: wire.Request, writer: asyncio.StreamWriter) -> bool:
        """Record the request, ask the handler, carry its action out."""
        request = Request(
            head.method, head.target, head.headers, time.monotonic(), len(self.requests)
        )
        self.requests.append(request)
        return await wire.perform(writer, await self._act(request), keep_alive=head.keep_alive)

    async def _act(self, request: Request) -> Action:
        """The handler's action; a handler that raises gets a 500 and its error kept."""
        try:
            action = self.handler(request)
            return await action if inspect.isawaitable(action) else action
        except Exception as error:
            self.errors.append(error)
            return Reply(500, body=f"hostile handler failed: {error!r}".encode(), close=True)


@contextlib.contextmanager
def hostile_in_thread(handler: Handler | HostileServer) -> Iterator[str]:
    """Run a hostile server on a loop in a background thread; yields its URL.

    Pass a HostileServer (rather than a handler) to read its `requests` or call `refuse_for`.
    """
    server = handler if isinstance(handler, HostileServer) else HostileServer(handler)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="hostile-server", daemon=True)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(server.start(), loop).result(timeout=10)
        yield server.url
    finally:
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(server.close(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


# --------------------------------------------------------------------------- ready-made handlers


def fake_heatmaps(*, key: str = "demo-key", classifications: bool = True) -> Handler:
    """Answer as batchmap's fake does (no limits), so a CLI run can finish.

    Heatmaps, and the classifications endpoint unless `classifications` is False (then 404).
    """

    def handle(request: Request) -> Action:
        path = request.path
        listing = classifications and path in CLASSIFICATIONS_PATHS
        prefix = next((p for p in HEATMAP_PREFIXES if path.startswith(p)), None)
        if not listing and (prefix is None or len(path) == len(prefix)):
            return json_reply(404, {"error": "Not Found"})
        if request.headers.get("x-api-key") != key:
            return json_reply(401, {"error": "Unauthorized"})
        if listing:
            return _classifications(request)
        assert prefix is not None
        identifier = unquote(path[len(prefix) :])
        status = expected_status(identifier)
        if status == 200:
            return Reply(200, (("Content-Type", "image/png"),), heatmap_png(identifier))
        if status == 204:
            return Reply(204, length=0)
        return json_reply(404, {"error": "Image not found"})

    return handle


def _classifications(request: Request) -> Reply:
    """The fake's classifications answer: known identifiers only, all decided."""
    try:
        identifiers = parse_identifiers(request.target.partition("?")[2])
    except ValidationFailed as error:
        return json_reply(422, validation_body(str(error)))
    known = [i for i in identifiers if is_known(i)]
    body = answer_body(known, pending_rate=0.0, odd=False)
    return Reply(200, (("Content-Type", "application/json"),), body)


def storm(reply: Reply, *, seconds: float, then: Handler | None = None) -> Handler:
    """Answer `reply` from the first request on, for `seconds`; then hand over to `then`."""
    after = then or fake_heatmaps()
    started: list[float] = []

    def handle(request: Request) -> Action | Awaitable[Action]:
        if not started:
            started.append(request.at)
        return reply if request.at - started[0] < seconds else after(request)

    return handle


def storm_429(
    *, seconds: float = 10.0, retry_after: str = "3", then: Handler | None = None
) -> Handler:
    """429s with Retry-After and no rate headers, as a proxy or WAF sends them."""
    headers = (("Content-Type", "application/json"), ("Retry-After", retry_after))
    return storm(Reply(429, headers, TOO_MANY), seconds=seconds, then=then)


def storm_503(
    *, seconds: float = 10.0, retry_after: str | None = "5", then: Handler | None = None
) -> Handler:
    """503s (a deploy, an overloaded backend), with Retry-After unless it is None."""
    headers = () if retry_after is None else (("Retry-After", retry_after),)
    return storm(json_reply(503, {"message": "Service Unavailable"}, headers=headers),
                 seconds=seconds, then=then)  # fmt: skip


def retry_after(
    value: str | Callable[[], str],
    *,
    status: int = 429,
    times: int = 1,
    then: Handler | None = None,
) -> Handler:
    """The first `times` requests get `status` with `Retry-After: value`; then `then`.

    A callable `value` is asked at each of those requests (an HTTP-date counted from then).
    """
    after = then or fake_heatmaps()

    def handle(request: Request) -> Action | Awaitable[Action]:
        if request.index >= times:
            return after(request)
        header = value() if callable(value) else value
        headers = (("Retry-After", header), ("Content-Type", "application/json"))
        return Reply(status, headers, TOO_MANY)

    return handle


def http_date(seconds_from_now: float) -> str:
    """An HTTP-date (RFC 9110, 5.6.7) `seconds_from_now` seconds away, for Retry-After."""
    return email.utils.formatdate(time.time() + seconds_from_now, usegmt=True)


def zero_limit(*, limit: str = "0", per_second: int = 5, then: Handler | None = None) -> Handler:
    """A whole-second limit of `per_second` whose headers always claim X-RateLimit-Limit `limit`."""
    after = then or fake_heatmaps()
    counts: dict[int, int] = {}

    async def handle(request: Request) -> Action:
        second = int(request.at)
        counts[second] = counts.get(second, 0) + 1
        rate = (("X-RateLimit-Limit", limit), ("X-RateLimit-Remaining", "0"))
        if counts[second] > per_second:
            return Reply(429, (*rate, ("Retry-After", "1")), TOO_MANY)
        answer = after(request)
        if inspect.isawaitable(answer):
            answer = await answer
        return with_headers(answer, rate) if isinstance(answer, Reply) else answer

    return handle


def huge_body(
    *, size: int | None = 2 * GiB, declare_length: bool = True, content_type: str = "image/png"
) -> Handler:
    """A 200 whose body is `size` bytes (a PNG signature, then zeros); None: endless."""

    def handle(_: Request) -> Action:
        length = size if declare_length else None
        return Reply(200, (("Content-Type", content_type),), _zeros(size), length)

    return handle


async def _zeros(size: int | None) -> AsyncIterator[bytes]:
    block = bytes(256 * 1024)
    yield PNG_SIGNATURE
    left = None if size is None else size - len(PNG_SIGNATURE)
    while left is None or left > 0:
        chunk = block if left is None or left >= len(block) else block[:left]
        yield chunk
        if left is not None:
            left -= len(chunk)


_BOMB_BLOCK = 1024 * 1024


@functools.cache
def _bomb_parts() -> tuple[bytes, bytes, bytes]:
    """The gzip header + first block, each further block, and the final empty block."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = bytes(_BOMB_BLOCK)
    first = compressor.compress(zeros) + compressor.flush(zlib.Z_FULL_FLUSH)
    # A full flush forgets the history, so every later identical block compresses the same.
    repeat = compressor.compress(zeros) + compressor.flush(zlib.Z_FULL_FLUSH)
    final = zlib.compressobj(9, zlib.DEFLATED, -15).flush(zlib.Z_FINISH)
    return first, repeat, final


def gzip_bomb(*, inflated: int = 2 * GiB) -> Handler:
    """A 200 image/png, Content-Encoding gzip: about 2 MB that inflate to `inflated` zero bytes."""
    blocks = max(1, inflated // _BOMB_BLOCK)
    first, repeat, final = _bomb_parts()
    length = len(first) + (blocks - 1) * len(repeat) + len(final) + 8

    async def body() -> AsyncIterator[bytes]:
        zeros = bytes(_BOMB_BLOCK)
        crc = zlib.crc32(zeros)
        yield first
        for _ in range(blocks - 1):
            crc = zlib.crc32(zeros, crc)  # computed as it goes: a client that stops pays nothing
            yield repeat
        size = blocks * _BOMB_BLOCK
        yield final + struct.pack("<II", crc, size & 0xFFFFFFFF)

    def handle(_: Request) -> Action:
        headers = (("Content-Type", "image/png"), ("Content-Encoding", "gzip"))
        return Reply(200, headers, body(), length)

    return handle


_HTML = b"<!DOCTYPE html>\n<html><head><title>Welcome</title></head><body>Hello</body></html>\n"


def html_200() -> Handler:
    """A 200 text/html page for every request, as a captive portal or a misrouted proxy sends."""
    reply = Reply(200, (("Content-Type", "text/html; charset=utf-8"),), _HTML)
    return lambda _: reply


# --------------------------------------------------------------------- issue 17: nights that end


def redirect_all(*, scheme: str = "https", port: int | None = None) -> Handler:
    """301 for every request to the same host and path over `scheme` (an http -> https upgrade).

    `port` None keeps the request's own port (as Host names it).
    """

    def handle(request: Request) -> Action:
        host = request.headers.get("host", "127.0.0.1")
        name, _, own = host.rpartition(":") if ":" in host else (host, "", "")
        location = f"{scheme}://{name}:{port or own}{request.target}"
        return Reply(301, (("Location", location),), b"moved")

    return handle


def redirect_loop() -> Handler:
    """302 to itself, for ever."""
    return lambda request: Reply(302, (("Location", request.target),), b"")


def about(identifiers: Sequence[str], reply: Reply, *, then: Handler | None = None) -> Handler:
    """`reply` to every heatmap request about `identifiers`, always; the rest as `then`."""
    after = then or fake_heatmaps()
    chosen = frozenset(identifiers)

    def handle(request: Request) -> Action | Awaitable[Action]:
        if unquote(request.path.rpartition("/")[2]) in chosen:
            return reply
        return after(request)

    return handle


def stalling(
    identifiers: Sequence[str], *, every: float = 0.5, then: Handler | None = None
) -> Handler:
    """For `identifiers`: a 200 image/png whose 1000-byte body comes a byte every `every` s."""
    headers = (("Content-Type", "image/png"),)
    body = PNG_SIGNATURE + bytes(992)
    return about(identifiers, Reply(200, headers, body, trickle=every, piece=1), then=then)


def silent() -> Handler:
    """Accept every connection and request, and never answer."""

    async def handle(_: Request) -> Action:
        await asyncio.sleep(3600)
        return Drop()

    return handle


def slow_after(count: int, *, delay: float = 60.0, then: Handler | None = None) -> Handler:
    """The first `count` requests as `then`; every later one answers only after `delay` s."""
    after = then or fake_heatmaps()

    async def handle(request: Request) -> Action:
        if request.index >= count:
            await asyncio.sleep(delay)
        answer = after(request)
        return await answer if inspect.isawaitable(answer) else answer

    return handle


def huge_png(width: int, height: int) -> bytes:
    """A valid small PNG (CRCs right) whose IHDR declares `width` x `height` pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    pixels = zlib.compress(b"\x00" * 2)
    return PNG_SIGNATURE + chunk(b"IHDR", ihdr) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def huge_pngs(*, width: int = 60000, height: int = 60000) -> Handler:
    """A 200 image/png for every heatmap whose header claims `width` x `height` pixels."""
    reply = Reply(200, (("Content-Type", "image/png"),), huge_png(width, height))
    return lambda _: reply


def as_proxy(then: Handler | None = None) -> Handler:
    """A plain-http forward proxy that answers itself: strips `http://host` from the request
    target (absolute form) and hands the rest to `then`. Every request stays recorded."""
    after = then or fake_heatmaps()

    def handle(request: Request) -> Action | Awaitable[Action]:
        target = request.target
        if "://" in target:
            target = "/" + target.split("://", 1)[1].partition("/")[2]
        return after(Request(request.method, target, request.headers, request.at, request.index))

    return handle


def failing(
    identifiers: Sequence[str], *, status: int = 500, then: Handler | None = None
) -> Handler:
    """`status` for every request about `identifiers`, always; the rest as `then`."""
    return about(identifiers, json_reply(status, {"message": "Server Error"}), then=then)
