"""A local identifAI stand-in: the heatmap API, Laravel-style rate limits and fault injection.

The HTTP/1.1 server is hand-written on asyncio streams so that dropped connections and
truncated bodies happen exactly when asked, and so that it stays fast enough for benchmarks.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import hashlib
import json
import math
import random
import signal
import struct
import time
import zlib
from dataclasses import dataclass, field, replace
from http import HTTPStatus
from urllib.parse import unquote

HEATMAP_PREFIXES = ("/api/classification/heatmap/", "/api/classification_image/heatmap/")
STATS_PATH = "/_fake/stats"
RESET_PATH = "/_fake/reset"
SIZE = 64  # heatmaps are SIZE x SIZE RGB

Headers = tuple[tuple[str, str], ...]

_MAX_HEAD = 64 * 1024
_MAX_BODY = 1024 * 1024
_BACKLOG = 1024


# --------------------------------------------------------------------------- heatmaps

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_SIGMAS = (5, 7, 9, 11, 13, 15, 17, 19)
_PEAKS = (0.7, 0.8, 0.9, 1.0)
_CENTRE = SIZE - 1  # centre of a blob template, which is 2*SIZE - 1 pixels square


def _jet(level: int) -> bytes:
    """The classic blue-cyan-yellow-red heatmap colour of `level` in 0..255."""
    t = level / 255
    return bytes(round(255 * min(1.0, max(0.0, 1.5 - abs(4 * t - k)))) for k in (3, 2, 1))


_PALETTE = tuple(_jet(level) for level in range(256))


@functools.cache
def _blob_template(sigma: int, peak: float) -> tuple[bytes, ...]:
    """RGB rows of a centred Gaussian blob; every heatmap is a SIZE-square crop of one."""
    side = 2 * SIZE - 1
    rows = []
    for y in range(side):
        dy2 = (y - _CENTRE) ** 2
        levels = (
            round(255 * peak * math.exp(-((x - _CENTRE) ** 2 + dy2) / (2 * sigma * sigma)))
            for x in range(side)
        )
        rows.append(b"".join(_PALETTE[level] for level in levels))
    return tuple(rows)


def _scanlines(digest: bytes) -> bytes:
    """The filtered PNG scanlines of the heatmap whose blob size, peak and centre `digest` picks."""
    template = _blob_template(_SIGMAS[digest[2] % len(_SIGMAS)], _PEAKS[digest[5] % len(_PEAKS)])
    cx, cy = 8 + digest[3] % (SIZE - 16), 8 + digest[4] % (SIZE - 16)
    x0, y0 = 3 * (_CENTRE - cx), _CENTRE - cy
    # Each row starts with filter type 0 (None).
    return b"".join(b"\x00" + row[x0 : x0 + 3 * SIZE] for row in template[y0 : y0 + SIZE])


def _chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data and the CRC of type + data."""
    crc = zlib.crc32(kind + data)
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


@functools.lru_cache(maxsize=4096)
def heatmap_png(identifier: str) -> bytes:
    """The complete, deterministic 64x64 RGB heatmap PNG the fake serves for `identifier`."""
    digest = hashlib.sha256(identifier.encode()).digest()
    header = struct.pack(">IIBBBBB", SIZE, SIZE, 8, 2, 0, 0, 0)  # 8-bit RGB, not interlaced
    return b"".join(
        (
            _PNG_SIGNATURE,
            _chunk(b"IHDR", header),
            _chunk(b"IDAT", zlib.compress(_scanlines(digest), 6)),
            _chunk(b"IEND", b""),
        )
    )


def expected_status(identifier: str) -> int:
    """The fault-free answer for `identifier`: 1 in 16 is 204, 1 in 16 is 404, the rest 200."""
    bucket = hashlib.sha256(identifier.encode()).digest()[0] % 16
    return {0: 204, 1: 404}.get(bucket, 200)


# --------------------------------------------------------------------------- configuration


@dataclass
class FakeConfig:
    """Keys, rate limits and fault rates of a fake server; rates are probabilities per request."""

    valid_key: str = "demo-key"
    forbidden_key: str = "forbidden-key"
    limits: tuple[tuple[int, float], ...] = ((2, 1.0), (60, 60.0))  # (max requests, window s)
    rate_headers: bool = True
    leaky_rate: float | None = None
    leaky_burst: int = 1
    error_rate: float = 0.0
    latency: float = 0.0
    drop_rate: float = 0.0
    truncate_rate: float = 0.0
    not_png_rate: float = 0.0
    redirect_to: str | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        """Refuse settings that would make the fake misbehave in ways nobody asked for."""
        rates = (self.error_rate, self.drop_rate, self.truncate_rate, self.not_png_rate)
        if any(not 0.0 <= rate <= 1.0 for rate in rates):
            raise ValueError("fault rates must be between 0 and 1")
        if any(most < 1 or window <= 0 for most, window in self.limits):
            raise ValueError("each limit needs at least 1 request and a positive window")
        if self.leaky_rate is not None and (self.leaky_rate <= 0 or self.leaky_burst < 1):
            raise ValueError("leaky_rate must be positive and leaky_burst at least 1")
        if self.latency < 0:
            raise ValueError("latency must not be negative")


# --------------------------------------------------------------------------- rate limiting


@dataclass(slots=True)
class _FixedWindow:
    """One Laravel limit: a window opens at the first hit after the previous one ended."""

    max_attempts: int
    seconds: float
    hits: int = 0
    ends: float = -math.inf

    def used(self, now: float) -> int:
        """Hits counted in the window that `now` falls in."""
        return self.hits if now < self.ends else 0

    def hit(self, now: float) -> None:
        """Count one accepted request, opening a new window if the last one is over."""
        if now >= self.ends:
            self.hits, self.ends = 0, now + self.seconds
        self.hits += 1

    def refusal_headers(self, now: float, epoch: float) -> Headers:
        """Laravel's 429 headers for this limit; Retry-After and Reset are whole seconds."""
        wait = self.ends - now
        return (
            ("X-RateLimit-Limit", str(self.max_attempts)),
            ("X-RateLimit-Remaining", "0"),
            ("Retry-After", str(max(0, math.ceil(wait)))),
            ("X-RateLimit-Reset", str(math.ceil(epoch + wait))),
        )


@dataclass(slots=True)
class _LeakyBucket:
    """GCRA: on average one request per `interval` seconds, with `burst` allowed back to back."""

    interval: float
    tolerance: float
    due: float = -math.inf  # theoretical arrival time of the next request

    def wait(self, now: float) -> float:
        """Seconds until a request would conform; 0 if it conforms now."""
        return max(0.0, self.due - self.tolerance - now)

    def hit(self, now: float) -> None:
        """Count one accepted request."""
        self.due = max(self.due, now) + self.interval


@dataclass(frozen=True, slots=True)
class _Admission:
    """The limiter's decision and the rate headers the answer carries."""

    allowed: bool
    headers: Headers


class _RateLimiter:
    """Laravel ThrottleRequests over several fixed windows, plus an optional leaky bucket.

    Unlike Laravel, which hits earlier limits before a later one refuses, a refused request
    counts on no limit at all (the fake's contract).
    """

    def __init__(self, config: FakeConfig) -> None:
        self._windows = [_FixedWindow(most, float(window)) for most, window in config.limits]
        self._bucket: _LeakyBucket | None = None
        if config.leaky_rate is not None:
            interval = 1.0 / config.leaky_rate
            self._bucket = _LeakyBucket(interval, interval * (config.leaky_burst - 1))
        self._headers = config.rate_headers

    def admit(self, now: float, epoch: float) -> _Admission:
        """Accept and count the request, or refuse it with the headers of the limit that tripped."""
        for window in self._windows:
            if window.used(now) >= window.max_attempts:
                return self._refuse(window.refusal_headers(now, epoch))
        if self._bucket is not None and (wait := self._bucket.wait(now)) > 0:
            return self._refuse((("Retry-After", str(math.ceil(wait))),))
        for window in self._windows:
            window.hit(now)
        if self._bucket is not None:
            self._bucket.hit(now)
        return _Admission(True, self._success_headers())

    def _refuse(self, headers: Headers) -> _Admission:
        return _Admission(False, headers if self._headers else ())

    def _success_headers(self) -> Headers:
        """Laravel adds headers once per limit, so the last limit's are the ones seen."""
        if not self._headers or not self._windows:
            return ()
        last = self._windows[-1]
        return (
            ("X-RateLimit-Limit", str(last.max_attempts)),
            ("X-RateLimit-Remaining", str(max(0, last.max_attempts - last.hits))),
        )


# --------------------------------------------------------------------------- HTTP


@dataclass(frozen=True, slots=True)
class _Request:
    """A parsed request head; bodies are read and thrown away."""

    method: str
    target: str
    version: str
    headers: dict[str, str]  # names lower-cased

    @property
    def keep_alive(self) -> bool:
        """HTTP/1.1 keeps the connection unless told to close; HTTP/1.0 only if asked to keep it."""
        tokens = {token.strip().lower() for token in self.headers.get("connection", "").split(",")}
        if self.version == "HTTP/1.0":
            return "keep-alive" in tokens
        return "close" not in tokens


@dataclass(frozen=True, slots=True)
class _Reply:
    """What to answer, and how to misbehave while doing it."""

    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: Headers = ()
    delay: float = 0.0
    drop: bool = False  # close the connection without answering
    truncate: bool = False  # full Content-Length, half the body, then close


class _BadRequest(Exception):
    """A request the fake cannot parse; answered with `status`, then the connection closes."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


def _json(status: int, payload: object, *, headers: Headers = ()) -> _Reply:
    """A JSON answer, as Laravel sends them."""
    return _Reply(status, json.dumps(payload).encode(), "application/json", headers)


_PROXY_ERROR_PAGE = (
    b"<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head>\n"
    b"<body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body>"
    b"</html>\n"
)


def _encode_head(reply: _Reply, *, keep_alive: bool) -> bytes:
    """The status line and headers; a 204 carries no Content-Length (RFC 9110, 8.6)."""
    lines = [f"HTTP/1.1 {reply.status} {HTTPStatus(reply.status).phrase}"]
    if reply.content_type is not None:
        lines.append(f"Content-Type: {reply.content_type}")
    if reply.status != 204:
        lines.append(f"Content-Length: {len(reply.body)}")
    lines.extend(f"{name}: {value}" for name, value in reply.headers)
    if not keep_alive:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _parse_head(head: bytes) -> _Request:
    """Parse a request line and its headers; raises _BadRequest(400) on anything malformed."""
    lines = head.decode("latin-1").lstrip("\r\n").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise _BadRequest(400)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if line and not colon:
            raise _BadRequest(400)
        if line:
            headers[name.strip().lower()] = value.strip()
    return _Request(parts[0], parts[1], parts[2], headers)


async def _read_request(reader: asyncio.StreamReader) -> _Request | None:
    """The next request on the connection, or None once the client has gone away."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None  # closed between requests or mid-head: nothing to answer
    except asyncio.LimitOverrunError:
        raise _BadRequest(431) from None
    request = _parse_head(head)
    if "transfer-encoding" in request.headers:
        raise _BadRequest(411)  # no chunked bodies: a GET-only API has nothing to read
    length = request.headers.get("content-length", "0")
    if not length.isdigit() or int(length) > _MAX_BODY:
        raise _BadRequest(400)
    if int(length):
        await reader.readexactly(int(length))
    return request


def _path_of(target: str) -> str:
    """The raw (still percent-encoded) path of a request target, without query or fragment."""
    return target.partition("?")[0].partition("#")[0]


def _identifier_of(path: str) -> str | None:
    """The percent-decoded identifier of a heatmap path; dot segments are kept as they are."""
    for prefix in HEATMAP_PREFIXES:
        if path.startswith(prefix) and len(path) > len(prefix):
            return unquote(path[len(prefix) :])
    return None


# --------------------------------------------------------------------------- the server


@dataclass
class FakeStats:
    """What the fake has answered since it started or was last reset (control paths excluded)."""

    requests: int = 0
    by_status: dict[int, int] = field(default_factory=dict)
    per_identifier: collections.Counter[str] = field(default_factory=collections.Counter)
    dropped: int = 0  # connections closed without an answer; not in by_status

    def record(self, reply: _Reply) -> None:
        """Count one answered (or dropped) API request."""
        self.requests += 1
        if reply.drop:
            self.dropped += 1
        else:
            self.by_status[reply.status] = self.by_status.get(reply.status, 0) + 1

    def reset(self) -> None:
        """Zero everything in place, so references held by tests stay live."""
        self.requests = self.dropped = 0
        self.by_status.clear()
        self.per_identifier.clear()

    def as_json(self) -> dict[str, object]:
        """The body of GET /_fake/stats."""
        return {
            "requests": self.requests,
            "by_status": {str(status): n for status, n in sorted(self.by_status.items())},
            "per_identifier": dict(self.per_identifier),
            "dropped": self.dropped,
        }


_UNAUTHORIZED = _json(401, {"error": "Unauthorized"})
_FORBIDDEN = _json(403, {"error": "Forbidden"})
_NOT_FOUND_ROUTE = _json(404, {"error": "Not Found"})
_NOT_ALLOWED = _json(405, {"error": "Method Not Allowed"}, headers=(("Allow", "GET"),))
_NOT_ALLOWED_RESET = replace(_NOT_ALLOWED, headers=(("Allow", "GET, POST"),))


class FakeServer:
    """The identifAI heatmap API on a local socket, with limits and faults from a FakeConfig."""

    def __init__(self, config: FakeConfig) -> None:
        self.config = config
        self.stats = FakeStats()
        self._limiter = _RateLimiter(config)
        self._random = random.Random(config.seed)
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen on host:port (0 picks a free port) and return the bound port."""
        self._server = await asyncio.start_server(
            self._accept, host, port, limit=_MAX_HEAD, backlog=_BACKLOG
        )
        bound: int = self._server.sockets[0].getsockname()[1]
        return bound

    async def close(self) -> None:
        """Stop listening and end every open connection, including ones waiting on latency."""
        if self._server is None:
            return
        self._server.close()
        for task in self._connections:
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve a new connection in a task of our own, so close() can end it quietly.

        (A coroutine callback would run in asyncio's task, which logs a traceback when a
        cancelled connection is torn down, e.g. by asyncio.run at exit.)
        """
        task = asyncio.get_running_loop().create_task(self._serve_connection(reader, writer))
        self._connections.add(task)
        task.add_done_callback(self._connections.discard)

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Answer requests on one connection until either side closes it."""
        try:
            while await self._serve_one(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away mid-request or mid-answer: not the server's problem
        finally:
            writer.close()

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Read and answer one request; False when the connection should close."""
        try:
            request = await _read_request(reader)
        except _BadRequest as error:
            refusal = _json(error.status, {"error": HTTPStatus(error.status).phrase})
            writer.write(_encode_head(refusal, keep_alive=False) + refusal.body)
            await writer.drain()
            return False
        if request is None:
            return False
        return await _send(writer, self._answer(request), keep_alive=request.keep_alive)

    def _answer(self, request: _Request) -> _Reply:
        """Route a request: control paths, or the API with stats, latency and faults."""
        path = _path_of(request.target)
        if path in (STATS_PATH, RESET_PATH):
            return self._control(request.method, path)
        reply = self._api(request, path)
        self.stats.record(reply)
        if self.config.latency > 0:
            reply = replace(reply, delay=self.config.latency)
        return reply

    def _control(self, method: str, path: str) -> _Reply:
        """The unauthenticated, unlimited /_fake/ endpoints tests and benchmarks use."""
        if path == STATS_PATH:
            return _json(200, self.stats.as_json()) if method == "GET" else _NOT_ALLOWED
        if method not in ("GET", "POST"):
            return _NOT_ALLOWED_RESET
        self.stats.reset()
        return _json(200, {"reset": True})

    def _api(self, request: _Request, path: str) -> _Reply:
        """The heatmap endpoint: route, key, redirect, rate limit, then faults and the answer."""
        identifier = _identifier_of(path)
        if identifier is None:
            return _NOT_FOUND_ROUTE
        if request.method != "GET":
            return _NOT_ALLOWED
        key = request.headers.get("x-api-key")
        if key == self.config.valid_key:
            self.stats.per_identifier[identifier] += 1
        if self.config.redirect_to is not None:
            return _Reply(302, headers=(("Location", self.config.redirect_to + request.target),))
        if key != self.config.valid_key:
            return _FORBIDDEN if key == self.config.forbidden_key else _UNAUTHORIZED
        admission = self._limiter.admit(time.monotonic(), time.time())
        if not admission.allowed:
            return _json(429, {"message": "Too Many Attempts."}, headers=admission.headers)
        return replace(self._heatmap(identifier), headers=admission.headers)

    def _heatmap(self, identifier: str) -> _Reply:
        """The answer for an admitted request, unless a fault roll replaces or damages it."""
        if self._roll(self.config.drop_rate):
            return _Reply(0, drop=True)
        if self._roll(self.config.error_rate):
            return _json(503, {"message": "Service Unavailable"})
        if self._roll(self.config.not_png_rate):
            return _Reply(200, _PROXY_ERROR_PAGE, "text/html; charset=utf-8")
        status = expected_status(identifier)
        if status == 204:
            return _Reply(204)
        if status == 404:
            return _json(404, {"error": "Image not found"})
        png = heatmap_png(identifier)
        return _Reply(200, png, "image/png", truncate=self._roll(self.config.truncate_rate))

    def _roll(self, rate: float) -> bool:
        """True with probability `rate`; draws nothing when the fault is off."""
        return rate > 0 and self._random.random() < rate


async def _send(writer: asyncio.StreamWriter, reply: _Reply, *, keep_alive: bool) -> bool:
    """Write a reply (or misbehave as it says); True if the connection stays open."""
    if reply.delay > 0:
        await asyncio.sleep(reply.delay)
    if reply.drop:
        return False
    body = reply.body[: len(reply.body) // 2] if reply.truncate else reply.body
    writer.write(_encode_head(reply, keep_alive=keep_alive) + body)
    await writer.drain()
    return keep_alive and not reply.truncate


# --------------------------------------------------------------------------- blocking entry


def serve(config: FakeConfig, host: str = "127.0.0.1", port: int = 0) -> None:
    """Run the fake in the foreground until SIGINT or SIGTERM, then close it cleanly."""
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_until_signalled(config, host=host, port=port))


async def _serve_until_signalled(config: FakeConfig, *, host: str, port: int) -> None:
    """Start, announce the URL on one stdout line, and wait for a stop signal."""
    server = FakeServer(config)
    bound = await server.start(host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    for signum in signals:
        loop.add_signal_handler(signum, stop.set)
    shown = f"[{host}]" if ":" in host else host
    print(f"batchmap fake-server listening on http://{shown}:{bound}", flush=True)
    try:
        await stop.wait()
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)
        await server.close()
